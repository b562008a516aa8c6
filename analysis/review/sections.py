"""The sections of a dataset analysis as typed results, each computed from the corpus once.

Every section is a frozen dataclass with the figures *and* what a later step needs (task rows,
per-task arrays); :class:`Metrics` collects them and renders the ``metrics`` JSON object in one
place (:meth:`Metrics.to_dict`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from analysis.corpus import Corpus
from analysis.errors import CORRECT, GHOST, KINDS, Alignment
from analysis.metrics import (
    Confusion,
    ErrorDistribution,
    Report,
    SampleCount,
    confusion,
    error_distribution,
    span_prf,
    top_confusions,
)
from analysis.review.alerts import jsonable
from analysis.review.comparison import Comparison
from analysis.spans import SpanTable
from analysis.tags import types_of_tags

__all__ = ["ErrorSection", "LossSection", "DepSection", "DuplicateSection", "Metrics",
           "error_section", "loss_section", "dep_section", "high_dep_words", "split_section",
           "rows_of"]


_WORDS = re.compile(r"\w+")


def rows_of(table: SpanTable, mask_rows: np.ndarray) -> SpanTable:
    """The spans of the tasks where ``mask_rows`` (per task) is True."""
    keep = mask_rows[table.task] if len(table) else np.zeros(0, dtype=bool)
    return SpanTable(table.task[keep], table.start[keep], table.end[keep], table.label[keep],
                     table.labels)


def _stats(values: np.ndarray, groups: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """count / mean / median of ``values`` per group code, for the few codes of ``names``."""
    if values.size == 0:
        return {}
    out = {}
    for g in np.unique(groups).tolist():
        v = values[groups == g]
        out[str(names[int(g)])] = {"count": int(v.size), "mean": float(v.mean()),
                                   "median": float(np.median(v))}
    return out


# ------------------------------------------------------------------------------ errors


@dataclass(frozen=True, eq=False)
class ErrorSection:
    """Gold against the predictions: P/R/F1, error kinds, confusion, per-task counts."""

    prf: Report
    distribution: ErrorDistribution
    totals: dict[str, int]
    confusion: Confusion
    zero_diagonal: bool
    top: list[tuple[str, str, int]]
    task_errors: np.ndarray  # (n_tasks, 5) counts of KINDS
    disagree_conf: np.ndarray  # (n_tasks,) highest confidence of a disagreeing prediction
    ghost_conf: np.ndarray  # (n_tasks,) highest confidence of a ghost prediction

    def to_dict(self) -> dict[str, Any]:
        return {
            "prf": self.prf.to_dict(),
            "error_distribution": self.distribution.to_dict(),
            "error_totals": self.totals,
            "confusion": {
                "labels": list(self.confusion.labels), "raw": self.confusion.counts.tolist(),
                "normalized": self.confusion.normalized(zero_diagonal=self.zero_diagonal)
                .round(4).tolist(),
                "zero_diagonal": self.zero_diagonal},
            "top_confusions": [{"gold": g, "pred": p, "count": c} for g, p, c in self.top],
        }


def error_section(comp: Comparison, n_tasks: int, *, zero_diagonal: bool,
                  top_k: int) -> ErrorSection:
    al = comp.alignment
    gold, pred = al.gold, al.pred
    cf = confusion(gold, pred, al)
    conf = comp.pred_conf
    disagree = np.zeros(n_tasks)
    ghost = np.zeros(n_tasks)
    bad = al.pred_kind != CORRECT
    np.maximum.at(disagree, al.pred.task[bad], conf[bad])
    gh = al.pred_kind == GHOST
    np.maximum.at(ghost, al.pred.task[gh], conf[gh])
    if comp.scored is not None:  # a missed gold span: the model confidently says O there
        sc = comp.scored
        wrong = sc.best != sc.gold
        np.maximum.at(disagree, sc.tok_task[wrong], sc.best_prob[wrong].astype(np.float64))
    return ErrorSection(span_prf(gold, pred, alignment=al), error_distribution(gold, pred, al),
                        al.counts(), cf, zero_diagonal, top_confusions(cf, k=top_k),
                        al.per_task.astype(np.int64), disagree, ghost)


# ------------------------------------------------------------------------------ loss


@dataclass(frozen=True, eq=False)
class LossSection:
    """Token cross-entropy ``-log p(gold)`` of the annotated tokens, by label and by token."""

    by_label: dict[str, Any]
    by_token: list[dict[str, Any]]
    overall: dict[str, Any]
    task_loss: np.ndarray  # (n_tasks,) mean token loss, NaN without probabilities
    task_conf: np.ndarray  # (n_tasks,) lowest per-token argmax probability
    samples: list[dict[str, Any]]

    def to_dict(self) -> dict[str, Any]:
        return {"loss": {"by_label": self.by_label, "by_token": self.by_token,
                         "overall": self.overall},
                "samples_by_loss": self.samples}


def _loss_by_token(corpus: Corpus, rows: np.ndarray, loss: np.ndarray, *, top: int = 30,
                   min_count: int = 3) -> list[dict[str, Any]]:
    """The ``top`` (lower-cased) tokens seen ``>= min_count`` times with the highest mean loss:
    counts and means with ``bincount`` over the corpus's token ids, medians for those only."""
    code = corpus.lower_codes[rows] if rows.size != corpus.n_tokens else corpus.lower_codes
    if not code.size:
        return []
    n_codes = int(code.max()) + 1
    cnt = np.bincount(code, minlength=n_codes)
    mean = np.bincount(code, weights=loss, minlength=n_codes) / np.maximum(cnt, 1)
    first = np.full(n_codes, -1, dtype=np.int64)
    first[code[::-1]] = np.arange(code.size - 1, -1, -1)
    seen = np.flatnonzero(cnt >= min_count)
    seen = seen[np.argsort(first[seen], kind="stable")]  # first-seen order, as a groupby
    frame = pd.DataFrame({"count": cnt[seen], "mean": mean[seen]}, index=seen)
    best = frame.sort_values("mean", ascending=False).head(top)
    keys = best.index.to_numpy(dtype=np.int64)
    pick = np.isin(code, keys)  # the rows of those tokens only, for their medians
    sub_code, sub_loss = code[pick], loss[pick]
    out = []
    for k, c, m in zip(keys.tolist(), best["count"].tolist(), best["mean"].tolist()):
        out.append({"token": str(corpus.tokens[rows[first[k]]]).lower(), "count": int(c),
                    "mean": float(m), "median": float(np.median(sub_loss[sub_code == k]))})
    return out


def loss_section(comp: Comparison, corpus: Corpus, ids: np.ndarray, *, n_top: int
                 ) -> LossSection | None:
    sc = comp.scored
    if sc is None:
        return None
    n = corpus.n_tasks
    loss = -np.log(np.clip(sc.gold_prob.astype(np.float64), 1e-12, 1.0))
    tt = sc.tok_task
    cnt = np.bincount(tt, minlength=n)
    has = cnt > 0
    task_loss = np.full(n, np.nan)
    task_loss[has] = np.bincount(tt, weights=loss, minlength=n)[has] / cnt[has]
    task_conf = np.full(n, np.nan)
    if sc.n_tokens:  # rows are grouped by task: one reduceat over the non-empty tasks
        start = sc.offsets[:-1][has]
        task_conf[has] = np.fmin.reduceat(sc.best_prob.astype(np.float64), start)
    tags = sc.tagset.tags
    lab_names = ["O", *types_of_tags(tags)]
    lab_code = np.array([lab_names.index(t.split("-", 1)[1] if t != "O" else "O") for t in tags],
                        dtype=np.int64)
    # loss by (lower-cased) token: the corpus's token ids, one name per id
    by_token = _loss_by_token(corpus, sc.rows, loss)
    overall = {"count": int(loss.size), "mean": float(loss.mean()) if loss.size else 0.0,
               "median": float(np.median(loss)) if loss.size else 0.0}
    sel = np.flatnonzero(np.isfinite(task_loss))
    top = sel[np.argsort(-task_loss[sel], kind="stable")[:n_top]]
    return LossSection(_stats(loss, lab_code[sc.gold], lab_names), by_token, overall, task_loss,
                       task_conf, [{"id": int(ids[i]), "loss": float(task_loss[i])} for i in top])


# ------------------------------------------------------------------------------ DEP


@dataclass(frozen=True, eq=False)
class DepSection:
    source: str | None
    threshold: float | None
    task_dep: np.ndarray
    span_dep: np.ndarray | None  # (n_gold,) per row of corpus.gold.chars

    def to_dict(self) -> dict[str, Any]:
        d = self.task_dep[np.isfinite(self.task_dep)]
        counts, edges = np.histogram(d, bins=20, range=(0.0, 1.0))
        t = self.threshold
        return {"source": self.source, "threshold": t, "scored": int(d.size),
                "mean": float(d.mean()) if d.size else None,
                "median": float(np.median(d)) if d.size else None,
                "n_above_threshold": int((d >= t).sum()) if t is not None else None,
                "histogram": {"edges": edges.round(4).tolist(), "counts": counts.tolist()}}


def dep_section(task_dep: np.ndarray, threshold: float | None, span_dep: np.ndarray | None,
                source: str | None) -> DepSection:
    t = None if threshold is None or not np.isfinite(threshold) else float(threshold)
    return DepSection(source, t, np.asarray(task_dep, dtype=np.float64), span_dep)


def high_dep_words(corpus: Corpus, dep: DepSection, *, top: int = 30
                   ) -> list[dict[str, Any]] | None:
    """Words of gold spans whose DEP is at or above the threshold, with their share (None when
    there are no gold spans or no threshold)."""
    gold = corpus.gold.chars
    if not len(gold) or dep.threshold is None:
        return None
    span_dep = dep.span_dep if dep.span_dep is not None else dep.task_dep[gold.task]
    hi = np.nan_to_num(span_dep, nan=0.0) >= dep.threshold
    # each distinct span text is split once; counts are weighted by how often it occurs
    code, forms = pd.factorize(np.asarray(corpus.gold_text, dtype=object))
    words = [_WORDS.findall(str(f).lower()) for f in forms]
    n_all = np.bincount(code, minlength=len(forms))
    n_hi = np.bincount(code[hi], minlength=len(forms))
    allw: dict[str, int] = {}
    for f in np.flatnonzero(n_all).tolist():
        for w in words[f]:
            allw[w] = allw.get(w, 0) + int(n_all[f])
    hw: dict[str, int] = {}  # in first-seen order over the high-DEP spans, as value_counts
    for f in pd.unique(code[hi]).tolist():
        for w in words[f]:
            hw[w] = hw.get(w, 0) + int(n_hi[f])
    ranked = pd.Series(hw, dtype=np.int64).sort_values(ascending=False, kind="stable")
    return [{"word": str(w), "count": int(c), "share": float(c / allw.get(w, c))}
            for w, c in ranked.head(top).items()]


# ------------------------------------------------------------------------------ splits


def split_section(corpus: Corpus, errors: ErrorSection | None, comp: Comparison | None,
                  task_dep: np.ndarray | None) -> dict[str, Any] | None:
    """Per split (``data.split`` / ``meta.split`` / the file a task came from): counts, F1,
    error totals and mean DEP."""
    if corpus.split is None:
        return None
    sp = pd.Series(corpus.split, dtype=object)
    vals = [v for v in pd.unique(sp.dropna()) if v not in ("", None)]
    if not vals:
        return None
    gold = corpus.gold.chars
    per: dict[str, Any] = {}
    for v in vals:
        mask = (sp == v).to_numpy()
        entry: dict[str, Any] = {"n_tasks": int(mask.sum()),
                                 "n_gold_spans": int(mask[gold.task].sum()) if len(gold) else 0}
        if errors is not None and comp is not None:
            al: Alignment = comp.alignment
            r2 = span_prf(rows_of(al.gold, mask), rows_of(al.pred, mask))
            entry["prf"] = {"micro avg": r2.micro, "macro avg": r2.macro,
                            **{lab: {"f1-score": float(f)} for lab, f in zip(r2.labels, r2.f1)}}
            entry["error_totals"] = {k: int(c) for k, c in
                                     zip(KINDS, errors.task_errors[mask].sum(axis=0))}
        if task_dep is not None:
            dd = task_dep[mask]
            dd = dd[np.isfinite(dd)]
            entry["mean_dep"] = float(dd.mean()) if dd.size else None
        per[str(v)] = entry
    return per


# ------------------------------------------------------------------------------ all of it


@dataclass(frozen=True, eq=False)
class DuplicateSection:
    method: str
    threshold: float
    groups: list[list[int]]  # task rows

    def to_dict(self, ids: np.ndarray) -> dict[str, Any]:
        return {"method": self.method, "threshold": self.threshold, "n_groups": len(self.groups),
                "groups": [[int(ids[i]) for i in g] for g in self.groups[:200]]}


@dataclass(frozen=True, eq=False)
class Metrics:
    """Every section of an analysis; :meth:`to_dict` is the ``metrics`` JSON object."""

    n_tasks: int
    n_annotated: int
    n_gold_spans: int
    n_pred_spans: int | None
    labels: tuple[str, ...]
    sample_count: SampleCount
    ids: np.ndarray
    errors: ErrorSection | None = None
    loss: LossSection | None = None
    dep: DepSection | None = None
    high_dep_words: list[dict[str, Any]] | None = None
    random_samples: list[int] = field(default_factory=list)
    duplicates: DuplicateSection | None = None
    splits: Mapping[str, Any] | None = None
    n_flagged_tasks: int = 0

    def to_dict(self) -> dict[str, Any]:
        m: dict[str, Any] = {"n_tasks": self.n_tasks, "n_annotated": self.n_annotated,
                             "n_gold_spans": self.n_gold_spans, "n_pred_spans": self.n_pred_spans,
                             "labels": list(self.labels),
                             "sample_count": self.sample_count.to_dict()}
        if self.errors is not None:
            m.update(self.errors.to_dict())
        if self.loss is not None:
            m.update(self.loss.to_dict())
        if self.dep is not None:
            m["dep"] = self.dep.to_dict()
            if self.high_dep_words is not None:
                m["high_dep_words"] = self.high_dep_words
        m["random_samples"] = self.random_samples
        if self.duplicates is not None:
            m["duplicates"] = self.duplicates.to_dict(self.ids)
        if self.splits is not None:
            m["splits"] = self.splits
        m["n_flagged_tasks"] = self.n_flagged_tasks
        out: dict[str, Any] = jsonable(m)
        return out
