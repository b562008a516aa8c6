"""Dataset-wide analysis: metrics, DEP summaries, losses, duplicates, alerts.

Two layers:

:func:`columns_from_dataset`
    turns a :class:`analysis.dataset.Dataset` (+ per-task probabilities, or predictions from the
    runtime, or the tasks' stored predictions) into flat columnar arrays (:class:`Columns`),
    computing DEP with :func:`analysis.dep.compute_dep` when probabilities are given.
:func:`analyze_columns`
    everything else, vectorised over all tasks / spans / tokens at once (``bench/
    bench_analysis.py`` runs it on 1 M synthetic tasks).  When ``Columns.task_dep`` is not
    given but probabilities are, the task DEP is the margin-only DEP
    (:func:`analysis.dep.token_margins` aggregated by max) — the columnar fast path.

:func:`analyze_dataset` chains the two.  :meth:`Analysis.to_dict` is the ``--json`` object
``{"metrics": {...}, "alerts": [...], "tasks": [{"index", "id", "dep", "errors"}...]}``.

Loss is the token cross-entropy ``-log p(gold tag)`` (natural log, probabilities clipped at
1e-12) of annotated tokens.  Near-duplicate tasks: normalised-text hashing (exact) plus, up to
``near_dup_max`` tasks, character 3-5-gram TF-IDF vectors reduced by a sparse random projection
(128-d, O(nnz)), searched
with faiss (:class:`analysis.similarity.SpanIndex`, top-``k``), each candidate pair confirmed
with the exact sparse TF-IDF cosine (``>= dup_threshold``); or the caller's task embeddings.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import pandas as pd

from analysis.review import alerts as A
from analysis.errors import CORRECT, GHOST, KINDS, Alignment, align
from analysis.metrics import confusion, error_distribution, sample_count, span_prf, top_confusions
from analysis.spans import SpanTable

log = logging.getLogger(__name__)

__all__ = [
    "Columns",
    "Analysis",
    "columns_from_dataset",
    "analyze_columns",
    "analyze_dataset",
    "find_duplicates",
    "bad_edges",
]


@dataclass
class Columns:
    """A dataset as flat arrays.

    Attributes
    ----------
    ids : (n,) int64   Label Studio task id, or the 0-based index for CoNLL input
    text_len : (n,) int64   characters (0 for empty / whitespace-only text)
    n_tokens : (n,) int64
    annotated : (n,) bool
    gold : SpanTable   gold character spans, ``task`` = row
    gold_text : (n_gold,) object   span surface forms
    pred : SpanTable or None   predicted spans on the same label vocabulary
    pred_conf : (n_pred,) float or None   model confidence of each predicted span
    split, annotator : (n,) object or None
    texts : task texts (duplicates) or None
    token_task : (N,) int64, token_text : (N,) object (lower-cased), token_gold : (N,) int64
        gold tag column (``tags``) of each annotated token
    probs : (N, n_tags) float32 or None, rows aligned with ``token_task``
    tags : tag columns of ``probs``
    task_dep : (n,) float (NaN: not scored) or None;  dep_threshold : float or None
    span_dep : (n_gold,) float or None   DEP of each gold span
    problem_rows : task rows with spans the loader dropped or could not align
    dep_source : how DEP was computed (shown in the report)
    """

    ids: np.ndarray
    text_len: np.ndarray
    n_tokens: np.ndarray
    annotated: np.ndarray
    gold: SpanTable
    gold_text: np.ndarray
    pred: SpanTable | None = None
    pred_conf: np.ndarray | None = None
    split: np.ndarray | None = None
    annotator: np.ndarray | None = None
    texts: Sequence[str] | None = None
    token_task: np.ndarray | None = None
    token_text: np.ndarray | None = None
    token_gold: np.ndarray | None = None
    probs: np.ndarray | None = None
    tags: tuple[str, ...] = ()
    task_dep: np.ndarray | None = None
    dep_threshold: float | None = None
    span_dep: np.ndarray | None = None
    problem_rows: np.ndarray | None = None
    dep_source: str | None = None
    task_vectors: np.ndarray | None = None

    @property
    def n(self) -> int:
        return int(self.ids.shape[0])


@dataclass
class Analysis:
    """Result of :func:`analyze_columns`."""

    metrics: dict[str, Any]
    alerts: list[A.Alert]
    ids: np.ndarray
    task_dep: np.ndarray | None
    task_errors: np.ndarray | None  # (n, 5) int64 counts of KINDS
    is_conll: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def tasks(self) -> list[dict[str, Any]]:
        n = self.ids.shape[0]
        dep = (
            [None] * n
            if self.task_dep is None
            else [None if not np.isfinite(d) else round(float(d), 6) for d in self.task_dep]
        )
        if self.task_errors is None:
            errs: list[dict[str, int]] = [{} for _ in range(n)]
        else:
            cols = self.task_errors.T.tolist()
            errs = [dict(zip(KINDS, row)) for row in zip(*cols)] if n else []
        ids = self.ids.tolist()
        return [
            {"index": i, "id": None if self.is_conll else ids[i], "dep": dep[i], "errors": errs[i]}
            for i in range(n)
        ]

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        return {
            "metrics": A._jsonable(self.metrics),
            "alerts": [a.to_dict() for a in self.alerts],
            "tasks": self.tasks(),
        }


# ------------------------------------------------------------------------------ helpers

_LEAD = re.compile(r"^[\s.,;:!?\"'()\[\]{}\-]")
_TRAIL = re.compile(r"(?:[\s,;:!?\"'(\[{\-]|\s[.)\]}])$")


def bad_edges(texts: Sequence[str]) -> np.ndarray:
    """(n,) bool: the span text starts with whitespace/punctuation or ends with whitespace or
    punctuation (a ``.`` or closing bracket only counts after whitespace, so abbreviations such
    as ``U.S.`` stay fine).

    >>> bad_edges([" Paris", "U.S.", "Paris,", "Avalon Rail .", "UK)"]).tolist()
    [True, False, True, True, False]
    """
    s = pd.Series(list(texts), dtype="string")
    if s.empty:
        return np.zeros(0, dtype=bool)
    lead = s.str.contains(_LEAD.pattern, regex=True).fillna(False).to_numpy(dtype=bool)
    trail = s.str.contains(_TRAIL.pattern, regex=True).fillna(False).to_numpy(dtype=bool)
    return lead | trail


def _filter_table(t: SpanTable, mask_rows: np.ndarray) -> SpanTable:
    keep = mask_rows[t.task] if len(t) else np.zeros(0, dtype=bool)
    return SpanTable(t.task[keep], t.start[keep], t.end[keep], t.label[keep], t.labels)


def _stats(values: np.ndarray, groups: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """count / mean / median of ``values`` per group code (vectorised with pandas)."""
    if values.size == 0:
        return {}
    df = pd.DataFrame({"g": groups, "v": values})
    agg = df.groupby("g")["v"].agg(["count", "mean", "median"])
    return {
        str(names[int(g)]): {"count": int(r["count"]), "mean": float(r["mean"]),
                             "median": float(r["median"])}
        for g, r in agg.iterrows()
    }


def find_duplicates(
    texts: Sequence[str],
    *,
    threshold: float = 0.95,
    vectors: np.ndarray | None = None,
    k: int = 6,
    near_dup_max: int = 50_000,
    exact_max: int = 5_000,
    seed: int = 0,
) -> tuple[list[list[int]], str]:
    """Groups of task rows whose texts are (near-)duplicates.

    Exact duplicates after normalisation (case-folded, punctuation removed, whitespace
    collapsed) always; near duplicates (cosine ``>= threshold``) with faiss top-``k`` search
    over ``vectors`` (task embeddings) or TF-IDF character n-grams when ``len(texts) <=
    near_dup_max``; exact faiss search up to ``exact_max`` tasks, IVF above.  Returns ``(groups, method)``.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(texts)
    if n < 2:
        return [], "hash"
    norm = (
        pd.Series(list(texts), dtype="string")
        .str.casefold()
        .str.replace(r"[^\w\s]", "", regex=True)
        .str.replace(r"\s+", " ", regex=True)
        .str.strip()
    )
    code = norm.factorize()[0]
    nonempty = (norm.str.len() > 0).to_numpy()
    # edges: each row -> first row with the same normalised text
    first = pd.Series(np.arange(n)).groupby(code).transform("min").to_numpy()
    e_src = [np.flatnonzero((first != np.arange(n)) & nonempty)]
    e_dst = [first[e_src[0]]]
    method = "hash"
    if vectors is not None or n <= near_dup_max:
        from analysis.similarity import SpanIndex

        exact_sim = None
        cand_margin = 0.02
        if vectors is None:
            from sklearn.feature_extraction.text import TfidfVectorizer
            from sklearn.random_projection import SparseRandomProjection

            try:
                X = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), min_df=1,
                                    sublinear_tf=True, dtype=np.float32).fit_transform(norm.fillna(""))
            except ValueError:  # empty vocabulary
                X = None
            if X is not None and X.shape[1] > 2:
                # O(nnz) random projection for candidate search; exact cosine confirms below
                dim = int(min(128, X.shape[1]))
                vecs = SparseRandomProjection(dim, dense_output=True, random_state=seed
                                              ).fit_transform(X).astype(np.float32)
                exact_sim = X  # rows are L2-normalised by TfidfVectorizer
                method = "tfidf"
                cand_margin = 0.25  # projected cosines are noisy; candidates only
            else:
                vecs = None
        else:
            vecs = np.asarray(vectors, dtype=np.float32)
            method = "cosine"
        if vecs is not None and np.isfinite(vecs).all():
            norms = np.linalg.norm(vecs, axis=1)
            ok = (norms > 0) & nonempty
            rows = np.flatnonzero(ok)
            if rows.size >= 2:
                idx = SpanIndex.build(vecs[rows], seed=seed, exact_max=exact_max)
                sim, nb = idx.search(vecs[rows], min(k, rows.size))
                src = np.repeat(rows, nb.shape[1])
                nb_flat = nb.ravel()
                good = nb_flat >= 0
                dst = np.full(nb_flat.shape, -1, dtype=np.int64)
                dst[good] = rows[nb_flat[good]]
                keep = good & (dst != src) & (sim.ravel() >= threshold - cand_margin)
                src, dst = src[keep], dst[keep]
                if exact_sim is not None and src.size:
                    cos = np.asarray(exact_sim[src].multiply(exact_sim[dst]).sum(axis=1)).ravel()
                    sel = cos >= threshold
                else:
                    sel = sim.ravel()[keep] >= threshold
                e_src.append(src[sel])
                e_dst.append(dst[sel])
    src = np.concatenate(e_src)
    dst = np.concatenate(e_dst)
    if src.size == 0:
        return [], method
    g = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    sizes = np.bincount(comp)
    multi = np.flatnonzero(sizes >= 2)
    member = np.isin(comp, multi)
    rows_ = np.flatnonzero(member)
    order = np.argsort(comp[rows_], kind="stable")
    rows_, comps = rows_[order], comp[rows_][order]
    cuts = np.flatnonzero(np.r_[True, comps[1:] != comps[:-1]])
    groups = [arr.tolist() for arr in np.split(rows_, cuts[1:])]
    groups.sort(key=lambda x: x[0])
    return groups, method


# ------------------------------------------------------------------------------ dataset → columns


def columns_from_dataset(
    ds: Any,
    *,
    probs: Sequence[np.ndarray] | None = None,
    tags: Sequence[str] | None = None,
    predictions: Sequence[Any] | None = None,
    compute_dep: bool = True,
    dep_source: str | None = None,
    task_vectors: np.ndarray | None = None,
) -> Columns:
    """Flatten a Dataset (see the module docstring).

    Parameters
    ----------
    ds : analysis.dataset.Dataset
    probs : one (n_tokens, n_tags) float array per task (or per annotated task), task order
    tags : columns of ``probs`` (default ``analysis.tags.tag_names(ds.labels)``)
    predictions : runtime ``TaskPrediction`` objects (``probs``, ``spans``, ``span_scores``),
        one per task: the probabilities and spans are taken from them
    """
    from analysis.dataset import token_spans
    from analysis.tags import decode_probs, tag_names
    from analysis.schemes import encode
    from analysis.spans import token_to_char_spans

    tasks = ds.tasks
    n = len(tasks)
    labels = tuple(ds.labels)
    tags = tuple(tags) if tags is not None else tag_names(labels)
    ids = np.array([t.id if t.id is not None else t.index for t in tasks], dtype=np.int64)
    texts = [t.text for t in tasks]
    text_len = np.array([len(x) if x.strip() else 0 for x in texts], dtype=np.int64)
    n_tokens = np.array([len(t.tokens) for t in tasks], dtype=np.int64)
    annotated = np.array([t.gold is not None for t in tasks], dtype=bool)
    gold = ds.gold_table()
    gold_text = np.array(
        [texts[t][s:e] for t, s, e in zip(gold.task.tolist(), gold.start.tolist(), gold.end.tolist())],
        dtype=object,
    )
    split = np.array([t.split for t in tasks], dtype=object)
    annotator = np.array([t.annotator for t in tasks], dtype=object)
    problem_rows = np.array(
        sorted({p.task for p in cast(Any, getattr(ds, "problems", ())).items if p.which == "gold"}),
        dtype=np.int64,
    ) if getattr(ds, "problems", None) is not None else None

    if predictions is not None:
        if len(predictions) != n:
            raise ValueError(f"got {len(predictions)} predictions for {n} tasks")
        probs = [np.asarray(p.probs, dtype=np.float32) for p in predictions]
    per_task: list[np.ndarray | None] | None = None
    if probs is not None:
        if len(probs) == n:
            per_task = list(probs)
        elif len(probs) == int(annotated.sum()):
            it = iter(probs)
            per_task = [next(it) if a else None for a in annotated]
        else:
            raise ValueError(
                f"got {len(probs)} probability arrays for {n} tasks ({int(annotated.sum())} "
                "annotated); give one per task or one per annotated task, in task order"
            )
        for i, (t, p) in enumerate(zip(tasks, per_task)):
            if p is None:
                continue
            p = np.asarray(p)
            if p.ndim != 2 or p.shape != (len(t.tokens), len(tags)):
                raise ValueError(
                    f"{t.name}: probabilities have shape {p.shape}, expected "
                    f"({len(t.tokens)}, {len(tags)}) (tokens x tags {list(tags)})"
                )

    # predicted spans
    pred: SpanTable | None = None
    pred_conf: np.ndarray | None = None
    if predictions is not None or per_task is not None:
        spans_all: list[list[Any]] = []
        confs: list[np.ndarray] = []
        for i, t in enumerate(tasks):
            if predictions is not None:
                sp = list(predictions[i].spans)
                sc = np.asarray(predictions[i].span_scores, dtype=np.float32)
            elif per_task is not None and per_task[i] is not None:
                tok_spans, sc = decode_probs(cast(np.ndarray, per_task[i]), tags)
                sp = token_to_char_spans(t.tokens, tok_spans)
            else:
                sp, sc = [], np.zeros(0, np.float32)
            order = np.argsort([s.start for s in sp], kind="stable") if sp else np.zeros(0, int)
            spans_all.append([sp[j] for j in order])
            confs.append(sc[order] if len(sp) else np.zeros(0, np.float32))
        pred = SpanTable.from_spans(spans_all, labels=labels)
        # from_spans sorts by (task, start, end): per-task lists are start-sorted already
        pred_conf = np.concatenate(confs) if confs else np.zeros(0, np.float32)
    elif any(t.pred is not None for t in tasks):
        pred = ds.pred_table()
        score = np.array([np.nan if t.pred_score is None else t.pred_score for t in tasks])
        pred_conf = score[pred.task] if len(pred) else np.zeros(0)

    token_task = token_text = token_gold = flat = None
    task_dep = span_dep = None
    dep_threshold = None
    if per_task is not None:
        tag_id = {tg: j for j, tg in enumerate(tags)}
        tt_l, tx_l, tg_l, pr_l = [], [], [], []
        for i, t in enumerate(tasks):
            p = per_task[i]
            if p is None or t.gold is None or len(t.tokens) == 0:
                continue
            enc = encode(len(t.tokens), token_spans(t, "gold", warn=False), "iob2")
            try:
                tg_l.append(np.fromiter((tag_id[x] for x in enc), dtype=np.int64, count=len(enc)))
            except KeyError as exc:
                raise ValueError(f"{t.name}: gold tag {exc.args[0]!r} is not one of the tags "
                                 f"{list(tags)}") from None
            tt_l.append(np.full(len(t.tokens), i, dtype=np.int64))
            tx_l.append(np.asarray([w.lower() for w in t.tokens.tokens], dtype=object))
            pr_l.append(np.asarray(p, dtype=np.float32))
        if tt_l:
            token_task = np.concatenate(tt_l)
            token_text = np.concatenate(tx_l)
            token_gold = np.concatenate(tg_l)
            flat = np.concatenate(pr_l)
        if compute_dep and annotated.any():
            from analysis.dep import compute_dep as _dep

            ann_probs = [per_task[i] for i in np.flatnonzero(annotated)]
            if any(p is None for p in ann_probs):
                raise ValueError("every annotated task needs probabilities to compute DEP")
            res = _dep(ds, ann_probs, tags=tags)
            task_dep = np.asarray(res.task_dep, dtype=np.float64)
            dep_threshold = float(res.thresholds.mislabeled)
            sp = res.spans
            gold_rows = sp[sp["kind"] != "ghost"]
            if len(gold_rows) == len(gold):
                span_dep = gold_rows["dep"].to_numpy(dtype=np.float64)
            dep_source = dep_source or "analysis.dep.compute_dep (error model over all signals)"
    return Columns(
        ids=ids, text_len=text_len, n_tokens=n_tokens, annotated=annotated, gold=gold,
        gold_text=gold_text, pred=pred, pred_conf=pred_conf, split=split, annotator=annotator,
        texts=texts, token_task=token_task, token_text=token_text, token_gold=token_gold,
        probs=flat, tags=tags, task_dep=task_dep, dep_threshold=dep_threshold, span_dep=span_dep,
        problem_rows=problem_rows, dep_source=dep_source, task_vectors=task_vectors,
    )


# ------------------------------------------------------------------------------ the analysis


def analyze_columns(
    cols: Columns,
    *,
    zero_diagonal: bool = False,
    top_k: int = 10,
    n_random: int = 20,
    n_top_loss: int = 20,
    dup_threshold: float = 0.95,
    near_dup_max: int = 50_000,
    seed: int = 0,
    is_conll: bool = False,
) -> Analysis:
    """Dataset metrics and alerts from columnar data (see the module docstring)."""
    n = cols.n
    ids = cols.ids
    gold = cols.gold
    labels = tuple(gold.labels)
    m: dict[str, Any] = {
        "n_tasks": n,
        "n_annotated": int(cols.annotated.sum()),
        "n_gold_spans": len(gold),
        "n_pred_spans": None if cols.pred is None else len(cols.pred),
        "labels": list(labels),
    }
    sc = sample_count(gold)
    m["sample_count"] = sc.to_dict()
    counts = {lab: int(v) for lab, v in zip(sc.labels, sc.spans)}

    # ---- errors against the predictions
    al: Alignment | None = None
    task_errors = None
    disagree_conf: np.ndarray | None
    ghost_conf: np.ndarray | None
    ann_rows = cols.annotated
    if cols.pred is not None:
        pred = cols.pred
        if pred.labels != gold.labels:
            pred = pred.with_labels(gold.labels)
        pred_ann = _filter_table(pred, ann_rows)  # unannotated tasks do not count
        al = align(gold, pred_ann, n_tasks=n)
        task_errors = al.per_task.astype(np.int64)
        rep = span_prf(gold, pred_ann, alignment=al)
        m["prf"] = rep.to_dict()
        ed = error_distribution(gold, pred_ann, alignment=al)
        m["error_distribution"] = ed.to_dict()
        m["error_totals"] = al.counts()
        cf = confusion(gold, pred_ann, alignment=al)
        m["confusion"] = {
            "labels": list(cf.labels),
            "raw": cf.counts.tolist(),
            "normalized": cf.normalized(zero_diagonal=zero_diagonal).round(4).tolist(),
            "zero_diagonal": zero_diagonal,
        }
        m["top_confusions"] = [
            {"gold": g, "pred": p, "count": c} for g, p, c in top_confusions(cf, k=top_k)
        ]
        conf_by_pred = (
            np.nan_to_num(np.asarray(cols.pred_conf, dtype=np.float64), nan=1.0)
            if cols.pred_conf is not None and len(cols.pred_conf) == len(pred)
            else np.ones(len(pred))
        )
        conf_ann = conf_by_pred[ann_rows[pred.task]] if len(pred) else conf_by_pred
        disagree_conf = np.zeros(n)
        ghost_conf = np.zeros(n)
        bad = al.pred_kind != CORRECT
        np.maximum.at(disagree_conf, al.pred.task[bad], conf_ann[bad])
        gh = al.pred_kind == GHOST
        np.maximum.at(ghost_conf, al.pred.task[gh], conf_ann[gh])
        # a missed gold span is a disagreement too; its confidence is the model's O-confidence,
        # unknown here: count it with the task's token confidence below when probabilities exist
    else:
        disagree_conf = ghost_conf = None

    # ---- token-level: loss and margin DEP
    task_dep = None if cols.task_dep is None else np.asarray(cols.task_dep, dtype=np.float64)
    dep_threshold = cols.dep_threshold
    task_loss = task_conf = None
    if cols.probs is not None and cols.token_gold is not None and cols.token_task is not None:
        P = cols.probs
        tt = cols.token_task
        tg = cols.token_gold
        rows = np.arange(P.shape[0])
        pg = P[rows, tg].astype(np.float64)
        loss = -np.log(np.clip(pg, 1e-12, 1.0))
        cnt = np.bincount(tt, minlength=n)
        has = cnt > 0
        task_loss = np.full(n, np.nan)
        task_loss[has] = np.bincount(tt, weights=loss, minlength=n)[has] / cnt[has]
        amax = P.max(axis=1)
        task_conf = np.full(n, np.nan)
        np.fmin.at(task_conf, tt, amax.astype(np.float64))
        from analysis.tags import types_of_tags
        from analysis.schemes import split_tag

        tag_label = [split_tag(t)[1] or "O" for t in cols.tags]
        lab_names = ["O", *types_of_tags(cols.tags)]
        lab_code = np.array([lab_names.index(x) for x in tag_label], dtype=np.int64)
        m["loss"] = {"by_label": _stats(loss, lab_code[tg], lab_names)}
        if cols.token_text is not None:
            df = pd.DataFrame({"tok": cols.token_text, "loss": loss})
            agg = df.groupby("tok", sort=False)["loss"].agg(["count", "mean", "median"])
            agg = agg[agg["count"] >= 3].sort_values("mean", ascending=False).head(30)
            m["loss"]["by_token"] = [
                {"token": str(k), "count": int(r["count"]), "mean": float(r["mean"]),
                 "median": float(r["median"])}
                for k, r in agg.iterrows()
            ]
        m["loss"]["overall"] = {"count": int(loss.size), "mean": float(loss.mean()) if loss.size else 0.0,
                                "median": float(np.median(loss)) if loss.size else 0.0}
        sel = np.flatnonzero(np.isfinite(task_loss))
        top = sel[np.argsort(-task_loss[sel], kind="stable")[:n_top_loss]]
        m["samples_by_loss"] = [{"id": int(ids[i]), "loss": float(task_loss[i])} for i in top]
        if task_dep is None:
            from analysis.dep import aggregate_units, fit_thresholds, token_margins

            mdep = (1.0 - token_margins(P, tg)) / 2.0
            task_dep = aggregate_units(tt, mdep, n, method="max")
            disagrees = (task_errors[:, 1:].sum(axis=1) > 0) if task_errors is not None else (
                np.zeros(n, dtype=bool))
            th = fit_thresholds(task_dep, disagrees)
            dep_threshold = float(th.mislabeled) if np.isfinite(th.mislabeled) else None
            cols.dep_source = cols.dep_source or "margin DEP (columnar fast path)"
        if disagree_conf is not None:
            # missed spans: the model confidently says O where gold has an entity
            wrong_tok = P.argmax(axis=1) != tg
            np.maximum.at(disagree_conf, tt[wrong_tok], amax[wrong_tok].astype(np.float64))

    # ---- DEP summaries
    if task_dep is not None:
        d = task_dep[np.isfinite(task_dep)]
        counts_h, edges = np.histogram(d, bins=20, range=(0.0, 1.0))
        m["dep"] = {
            "source": cols.dep_source,
            "threshold": dep_threshold,
            "scored": int(d.size),
            "mean": float(d.mean()) if d.size else None,
            "median": float(np.median(d)) if d.size else None,
            "n_above_threshold": int((d >= dep_threshold).sum()) if dep_threshold is not None else None,
            "histogram": {"edges": edges.round(4).tolist(), "counts": counts_h.tolist()},
        }
        # high-DEP words: words of gold spans whose DEP is above the threshold
        span_dep = cols.span_dep
        if span_dep is None and len(gold):
            span_dep = task_dep[gold.task]
        if span_dep is not None and len(gold) and dep_threshold is not None:
            hi = np.nan_to_num(span_dep, nan=0.0) >= dep_threshold
            words_all = pd.Series(cols.gold_text, dtype="string").str.lower().str.findall(r"\w+")
            hw = words_all[hi].explode().dropna().value_counts()
            allw = words_all.explode().dropna().value_counts()
            m["high_dep_words"] = [
                {"word": str(w), "count": int(c), "share": float(c / allw.get(w, c))}
                for w, c in hw.head(30).items()
            ]
    rng = np.random.default_rng(seed)
    m["random_samples"] = [int(x) for x in np.sort(rng.choice(ids, min(n_random, n), replace=False))] if n else []

    # ---- duplicates
    groups: list[list[int]] = []
    if cols.texts is not None:
        groups, method = find_duplicates(
            cols.texts, threshold=dup_threshold, vectors=cols.task_vectors, near_dup_max=near_dup_max,
            seed=seed,
        )
        m["duplicates"] = {
            "method": method,
            "threshold": dup_threshold,
            "n_groups": len(groups),
            "groups": [[int(ids[i]) for i in g] for g in groups[:200]],
        }

    # ---- splits
    if cols.split is not None:
        sp = pd.Series(cols.split, dtype=object)
        vals = [v for v in pd.unique(sp.dropna()) if v not in ("", None)]
        if vals:
            per: dict[str, Any] = {}
            for v in vals:
                mask = (sp == v).to_numpy()
                entry: dict[str, Any] = {"n_tasks": int(mask.sum()),
                                         "n_gold_spans": int(mask[gold.task].sum()) if len(gold) else 0}
                if al is not None and cols.pred is not None:
                    g2 = _filter_table(gold, mask)
                    p2 = _filter_table(al.pred, mask)
                    r2 = span_prf(g2, p2)
                    entry["prf"] = {"micro avg": r2.micro, "macro avg": r2.macro,
                                    **{lab: {"f1-score": float(f)} for lab, f in zip(r2.labels, r2.f1)}}
                    errs = cast(np.ndarray, task_errors)  # set whenever cols.pred is
                    entry["error_totals"] = {k: int(c) for k, c in zip(KINDS, errs[mask].sum(axis=0))}
                if task_dep is not None:
                    dd = task_dep[mask]
                    dd = dd[np.isfinite(dd)]
                    entry["mean_dep"] = float(dd.mean()) if dd.size else None
                per[str(v)] = entry
            m["splits"] = per

    # ---- alerts
    out: list[A.Alert | None] = []
    if task_dep is not None and disagree_conf is not None:
        out.append(A.likely_mislabeled(task_dep, disagree_conf, ids=ids, dep_threshold=dep_threshold))
    if task_loss is not None and task_conf is not None:
        ok = np.isfinite(task_loss)
        tl = np.where(ok, task_loss, 0.0)
        tc = np.where(ok, task_conf, 1.0)
        out.append(A.hard_for_model(tl, tc, ids=ids, task_dep=task_dep))
    if al is not None:
        rep_d = m["prf"]
        f1 = {lab: float(v["f1-score"]) for lab, v in rep_d.items() if not lab.endswith(" avg")}
        sup = {lab: int(v["support"]) for lab, v in rep_d.items() if not lab.endswith(" avg")}
        err_rows = al.gold_kind != CORRECT
        g_lab = al.gold.label
        ctr = {lab: np.unique(al.gold.task[err_rows & (g_lab == j)]) for j, lab in enumerate(al.labels)}
        out.append(A.low_performing_classes(f1, sup, class_task_rows=ctr, ids=ids, min_support=3))
        cf_raw = np.asarray(m["confusion"]["raw"])
        pg, pp = al.pair_gold, al.pair_pred
        diff = al.gold.label[pg] != al.pred.label[pp]
        pair_df = pd.DataFrame({"g": al.gold.label[pg][diff], "p": al.pred.label[pp][diff],
                                "t": al.gold.task[pg][diff]})
        ptr = {(al.labels[int(g)], al.labels[int(p)]): grp["t"].to_numpy()
               for (g, p), grp in pair_df.groupby(["g", "p"])} if len(pair_df) else {}
        out.append(A.overlapping_classes(cf_raw, list(al.labels), pair_task_rows=ptr, ids=ids))
    if counts:
        rare_rows = {lab: np.unique(gold.task[gold.label == j]) for j, lab in enumerate(gold.labels)}
        out.append(A.class_imbalance(counts, class_task_rows=rare_rows, ids=ids))
    if len(gold):
        out.append(A.inconsistent_surface_forms(
            gold.task, list(cols.gold_text), [labels[j] for j in gold.label.tolist()], ids=ids,
            task_dep=task_dep))
    if task_dep is not None and task_errors is not None:
        out.append(A.overlooked_spans(task_dep, task_errors[:, GHOST], ids=ids, ghost_conf=ghost_conf,
                                      dep_threshold=dep_threshold))
    out.append(A.malformed_samples(
        cols.text_len, ids=ids, n_tokens=cols.n_tokens, span_task=gold.task,
        span_start=gold.start, span_end=gold.end, span_bad_edge=bad_edges(list(cols.gold_text)),
        problem_rows=cols.problem_rows, task_dep=task_dep))
    if groups:
        out.append(A.duplicates(groups, ids=ids, threshold=dup_threshold,
                                method=m["duplicates"]["method"]))
    if task_errors is not None and cols.annotator is not None:
        n_err = task_errors[:, 1:].sum(axis=1)
        n_sp = task_errors[:, :4].sum(axis=1) + task_errors[:, GHOST]
        ann = [a if (a is not None and ann_rows[i]) else None for i, a in enumerate(cols.annotator.tolist())]
        out.append(A.annotator_error_rates(ann, n_err, n_sp, ids=ids, task_dep=task_dep))
    alerts = [a for a in out if a is not None]
    m["n_flagged_tasks"] = len({t for a in alerts for t in a.task_ids})
    return Analysis(m, alerts, ids, task_dep, task_errors, is_conll=is_conll)


def analyze_dataset(
    ds: Any,
    *,
    probs: Sequence[np.ndarray] | None = None,
    tags: Sequence[str] | None = None,
    predictions: Sequence[Any] | None = None,
    task_vectors: np.ndarray | None = None,
    dep_source: str | None = None,
    **kwargs: Any,
) -> Analysis:
    """:func:`columns_from_dataset` then :func:`analyze_columns`."""
    cols = columns_from_dataset(ds, probs=probs, tags=tags, predictions=predictions,
                                task_vectors=task_vectors, dep_source=dep_source)
    is_conll = all(t.id is None for t in ds.tasks)
    res = analyze_columns(cols, is_conll=is_conll, **kwargs)
    res.extra["columns"] = cols
    return res
