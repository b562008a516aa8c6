"""Dataset-wide analysis: metrics, DEP summaries, losses, duplicates, alerts.

:func:`analyze` reads a :class:`analysis.corpus.Corpus` and, optionally, the
:class:`analysis.dep.DepResult` of the model's probabilities: DEP's alignment of the gold spans
against the argmax decoding is the comparison every metric uses (without probabilities, the
tasks' stored predictions are aligned once instead).  Each section is a typed result
(:mod:`analysis.review.sections`); :meth:`Analysis.to_dict` is the ``--json`` object
``{"metrics": {...}, "alerts": [...], "tasks": [{"index", "id", "dep", "errors"}...]}``.

Model-side figures (P/R/F1, error kinds, confusion) are over the gold spans the corpus maps onto
tokens (a span covering no token, or sharing one with an earlier span, is left out and reported
as a malformed sample); annotation-side figures (counts, surface forms, edges) are over every
validated gold span.  Loss is the token cross-entropy ``-log p(gold tag)`` (natural log,
probabilities clipped at 1e-12) of annotated tokens.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import IO, TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.agreement import Agreement, agreement
from analysis.corpus import Corpus
from analysis.dep import DepResult, compute_dep
from analysis.dep.inputs import ProbsLike, as_corpus
from analysis.errors import CORRECT, GHOST, KINDS
from analysis.metrics import sample_count
from analysis.review import alerts as A
from analysis.review.comparison import Comparison, from_dep, from_stored
from analysis.review.duplicates import bad_edges, find_duplicates
from analysis.review.sections import (
    DuplicateSection,
    ErrorSection,
    Metrics,
    dep_section,
    error_section,
    high_dep_words,
    loss_section,
    split_section,
)
from analysis.tags import TagSet

if TYPE_CHECKING:  # pragma: no cover
    from analysis.dataset import Dataset

log = logging.getLogger(__name__)

__all__ = ["Analysis", "analyze", "analyze_dataset", "dataset_agreement"]


@dataclass(frozen=True, eq=False)
class Analysis:
    """Result of :func:`analyze`: the metrics, the alerts, and what they were computed from."""

    metrics: Metrics
    alerts: list[A.Alert]
    corpus: Corpus
    dep: DepResult | None = None
    comparison: Comparison | None = None
    is_conll: bool = False
    agreement: Agreement | None = None

    @property
    def ids(self) -> np.ndarray:
        return self.corpus.ids

    @property
    def task_dep(self) -> np.ndarray | None:
        return None if self.metrics.dep is None else self.metrics.dep.task_dep

    @property
    def task_errors(self) -> np.ndarray | None:
        """(n_tasks, 5) int64 counts of ``KINDS`` per task, or None without predictions."""
        return None if self.metrics.errors is None else self.metrics.errors.task_errors

    def tasks(self, start: int = 0, stop: int | None = None) -> list[dict[str, Any]]:
        """The per-task records ``{"index", "id", "dep", "errors"}`` of tasks ``start:stop``."""
        n = self.corpus.n_tasks
        stop = n if stop is None else min(stop, n)
        rng = range(start, stop)
        dep: list[float | None] = [None] * len(rng)
        if self.task_dep is not None:
            td = self.task_dep[start:stop]
            dep = [round(d, 6) if ok else None
                   for d, ok in zip(td.tolist(), np.isfinite(td).tolist())]
        errs: list[dict[str, int]] = [{} for _ in rng]
        if self.task_errors is not None and len(rng):
            errs = [dict(zip(KINDS, row)) for row in self.task_errors[start:stop].tolist()]
        ids: list[Any] = [None] * len(rng) if self.is_conll else self.ids[start:stop].tolist()
        return [{"index": i, "id": t, "dep": d, "errors": e}
                for i, t, d, e in zip(rng, ids, dep, errs)]

    def metrics_dict(self) -> dict[str, Any]:
        """The ``metrics`` object of :meth:`to_dict` (with ``agreement`` when computed)."""
        m = self.metrics.to_dict()
        if self.agreement is not None:
            m["agreement"] = self.agreement.to_dict()
        return m

    def to_dict(self) -> dict[str, Any]:
        """The ``--json`` object."""
        return {"metrics": self.metrics_dict(), "alerts": [a.to_dict() for a in self.alerts],
                "tasks": self.tasks()}

    def write_json(self, fh: IO[str], *, chunk: int = 50_000) -> None:
        """Write :meth:`to_dict` as JSON to ``fh``: the same text as ``json.dumps(...,
        ensure_ascii=False)``, with the task records (ints, floats and nulls only) formatted
        straight from the arrays, ``chunk`` at a time — a million task dicts run through the
        encoder would take ~7 s and ~1 GB."""
        head = json.dumps({"metrics": self.metrics_dict(),
                           "alerts": [a.to_dict() for a in self.alerts]}, ensure_ascii=False)
        fh.write(head[:-1] + ', "tasks": [')
        n = self.corpus.n_tasks
        errs = "" if self.task_errors is None else ", ".join(f'"{k}": %d' for k in KINDS)
        tmpl = '{"index": %d, "id": %s, "dep": %s, "errors": {' + errs + "}}"
        for a in range(0, n, chunk):
            b = min(n, a + chunk)
            ids = (["null"] * (b - a) if self.is_conll
                   else [str(i) for i in self.ids[a:b].tolist()])
            dep = ["null"] * (b - a)
            if self.task_dep is not None:
                td = self.task_dep[a:b]
                dep = [repr(round(d, 6)) if ok else "null"
                       for d, ok in zip(td.tolist(), np.isfinite(td).tolist())]
            rows = ([()] * (b - a) if self.task_errors is None
                    else self.task_errors[a:b].tolist())
            fh.write(("" if a == 0 else ", ") + ", ".join(
                [tmpl % (i, t, d, *e) for i, t, d, e in zip(range(a, b), ids, dep, rows)]))
        fh.write("]}")


def _problem_tasks(corpus: Corpus) -> np.ndarray:
    issues = [i.task for i in corpus.issues if i.which == "gold"]
    return np.union1d(corpus.load_problem_tasks, np.asarray(issues, dtype=np.int64))


def _class_alerts(ids: np.ndarray, errors: ErrorSection, comp: Comparison
                  ) -> tuple[A.Alert | None, A.Alert | None]:
    """Low-performing classes and overlapping (confused) class pairs."""
    al = comp.alignment
    rep = errors.prf.to_dict()
    f1 = {lab: float(v["f1-score"]) for lab, v in rep.items() if not lab.endswith(" avg")}
    sup = {lab: int(v["support"]) for lab, v in rep.items() if not lab.endswith(" avg")}
    err_rows = al.gold_kind != CORRECT
    ctr = {lab: np.unique(al.gold.task[err_rows & (al.gold.label == j)])
           for j, lab in enumerate(al.labels)}
    low = A.low_performing_classes(f1, sup, class_task_rows=ctr, ids=ids, min_support=3)
    pg, pp = al.pair_gold, al.pair_pred
    diff = al.gold.label[pg] != al.pred.label[pp]
    pair_df = pd.DataFrame({"g": al.gold.label[pg][diff], "p": al.pred.label[pp][diff],
                            "t": al.gold.task[pg][diff]})
    ptr = {(al.labels[int(g)], al.labels[int(p)]): grp["t"].to_numpy()
           for (g, p), grp in pair_df.groupby(["g", "p"])} if len(pair_df) else {}
    return low, A.overlapping_classes(errors.confusion.counts, list(al.labels),
                                      pair_task_rows=ptr, ids=ids)


def _annotation_alerts(corpus: Corpus, metrics: Metrics, task_dep: np.ndarray | None
                       ) -> tuple[A.Alert | None, A.Alert | None]:
    """Class imbalance and inconsistent surface forms (annotation side only)."""
    gold, ids = corpus.gold.chars, metrics.ids
    counts = {lab: int(v) for lab, v in zip(metrics.sample_count.labels,
                                             metrics.sample_count.spans)}
    imbalance = surface = None
    if counts:
        rare = {lab: np.unique(gold.task[gold.label == j]) for j, lab in enumerate(gold.labels)}
        imbalance = A.class_imbalance(counts, class_task_rows=rare, ids=ids)
    if len(gold):
        surface = A.inconsistent_surface_forms(
            gold.task, corpus.gold_text, np.asarray(corpus.labels, dtype=object)[gold.label],
            ids=ids, task_dep=task_dep)
    return imbalance, surface


def _agreement_alert(ag: Agreement | None) -> A.Alert | None:
    if ag is None or not ag.n_tasks:
        return None
    return A.annotators_disagree(ag.task_agreement, ag.task_ids,
                                 n_ties=[len(c.ties) for c in ag.task_consensus],
                                 overall_f1=ag.overall.f1_exact, alpha=ag.alpha)


def _alerts(corpus: Corpus, metrics: Metrics, comp: Comparison | None,
            dups: DuplicateSection) -> list[A.Alert]:
    """Every rule, in the order the report and the review views list them."""
    ids, errors, loss = metrics.ids, metrics.errors, metrics.loss
    task_dep = None if metrics.dep is None else metrics.dep.task_dep
    threshold = None if metrics.dep is None else metrics.dep.threshold
    model = errors is not None and comp is not None
    out: list[A.Alert | None] = []
    if model and task_dep is not None:
        assert errors is not None  # for mypy: implied by `model`
        out.append(A.likely_mislabeled(task_dep, errors.disagree_conf, ids=ids,
                                       dep_threshold=threshold))
    if loss is not None:
        ok = np.isfinite(loss.task_loss)
        out.append(A.hard_for_model(np.where(ok, loss.task_loss, 0.0),
                                    np.where(ok, loss.task_conf, 1.0), ids=ids, task_dep=task_dep))
    if model:
        assert errors is not None and comp is not None
        out.extend(_class_alerts(ids, errors, comp))
    out.extend(_annotation_alerts(corpus, metrics, task_dep))
    if model and task_dep is not None:
        assert errors is not None
        out.append(A.overlooked_spans(task_dep, errors.task_errors[:, GHOST], ids=ids,
                                      ghost_conf=errors.ghost_conf, dep_threshold=threshold))
    gold = corpus.gold.chars
    texts = corpus.texts
    text_len = np.where(np.fromiter(map(str.isspace, texts), dtype=bool, count=len(texts)), 0,
                        np.fromiter(map(len, texts), dtype=np.int64, count=len(texts)))
    out.append(A.malformed_samples(
        text_len, ids=ids, n_tokens=corpus.n_task_tokens, span_task=gold.task,
        span_start=gold.start, span_end=gold.end, span_bad_edge=bad_edges(list(corpus.gold_text)),
        problem_rows=_problem_tasks(corpus), task_dep=task_dep))
    if dups.groups:
        out.append(A.duplicates(dups.groups, ids=ids, threshold=dups.threshold,
                                method=dups.method))
    if errors is not None and corpus.annotator is not None:
        te = errors.task_errors
        ann = [a if (a is not None and corpus.annotated[i]) else None
               for i, a in enumerate(corpus.annotator.tolist())]
        out.append(A.annotator_error_rates(ann, te[:, 1:].sum(axis=1),
                                           te[:, :4].sum(axis=1) + te[:, GHOST], ids=ids,
                                           task_dep=task_dep))
    return [a for a in out if a is not None]


def analyze(
    corpus: Corpus,
    *,
    dep: DepResult | None = None,
    dep_source: str | None = None,
    task_vectors: np.ndarray | None = None,
    zero_diagonal: bool = False,
    top_k: int = 10,
    n_random: int = 20,
    n_top_loss: int = 20,
    dup_threshold: float = 0.95,
    near_dup_max: int = 50_000,
    seed: int = 0,
    agreement: Agreement | None = None,
) -> Analysis:
    """Metrics and alerts of ``corpus`` (see the module docstring).

    Parameters
    ----------
    corpus : the dataset's columns
    dep : DEP of the model's probabilities over the same corpus (its alignment, token view and
        task DEP are reused); without it the stored predictions, if any, are compared
    dep_source : how the probabilities were made (shown in the report)
    task_vectors : task embeddings for the near-duplicate search (default: TF-IDF)
    agreement : annotator agreement of the multi-annotated tasks (its alert is added)
    """
    ids = corpus.ids
    n = corpus.n_tasks
    comp = (from_dep(dep, dep.scored) if dep is not None and dep.scored is not None
            else from_stored(corpus))
    errors = error_section(comp, n, zero_diagonal=zero_diagonal, top_k=top_k) \
        if comp is not None else None
    dsec = None
    if dep is not None:
        dsec = dep_section(dep.task_dep, dep.thresholds.mislabeled, dep.gold_span_dep,
                           dep_source or "analysis.dep.compute_dep (error model over all signals)")
    groups, method = find_duplicates(corpus.texts, threshold=dup_threshold, vectors=task_vectors,
                                     near_dup_max=near_dup_max, seed=seed)
    dups = DuplicateSection(method, dup_threshold, groups)
    rng = np.random.default_rng(seed)
    metrics = Metrics(
        n_tasks=n, n_annotated=int(corpus.annotated.sum()), n_gold_spans=len(corpus.gold),
        n_pred_spans=None if comp is None else comp.n_pred_spans, labels=corpus.labels,
        sample_count=sample_count(corpus.gold.chars), ids=ids, errors=errors,
        loss=loss_section(comp, corpus, ids, n_top=n_top_loss) if comp is not None else None,
        dep=dsec, high_dep_words=high_dep_words(corpus, dsec) if dsec is not None else None,
        random_samples=[int(x) for x in np.sort(rng.choice(ids, min(n_random, n),
                                                            replace=False))] if n else [],
        duplicates=dups, splits=split_section(corpus, errors, comp,
                                              None if dsec is None else dsec.task_dep),
    )
    alerts = _alerts(corpus, metrics, comp, dups)
    disagree = _agreement_alert(agreement)
    if disagree is not None:
        alerts.append(disagree)
    flagged = len({t for a in alerts for t in a.task_ids})
    metrics = dataclasses.replace(metrics, n_flagged_tasks=flagged)
    return Analysis(metrics, alerts, corpus, dep, comp, is_conll=not bool(corpus.has_id.any()),
                    agreement=agreement)


def dataset_agreement(ds: Corpus | Dataset) -> Agreement | None:
    """Annotator agreement of a dataset's multi-annotated tasks (None when it has none)."""
    sets = getattr(ds, "annotation_sets", ())
    return agreement(sets, as_corpus(ds).labels) if sets else None


def analyze_dataset(
    ds: Corpus | Dataset,
    *,
    probs: ProbsLike | None = None,
    tags: Sequence[str] | TagSet | None = None,
    predictions: Sequence[Any] | None = None,
    span_embeddings: np.ndarray | None = None,
    task_vectors: np.ndarray | None = None,
    dep_source: str | None = None,
    **kwargs: Any,
) -> Analysis:
    """DEP (when probabilities are given), annotator agreement (a :class:`Dataset` whose
    tasks several annotators labelled) then :func:`analyze`.

    ``predictions`` are runtime ``TaskPrediction`` objects (one per task): their probabilities
    are used.  ``tags`` default to the probabilities' own tag set, else the canonical IOB2 tags
    of the dataset's labels.
    """
    corpus = as_corpus(ds)
    if predictions is not None:
        if len(predictions) != corpus.n_tasks:
            raise ValueError(f"got {len(predictions)} predictions for {corpus.n_tasks} tasks")
        probs = [np.asarray(p.probs, dtype=np.float32) for p in predictions]
    dep = None
    if probs is not None and corpus.annotated.any():
        from analysis.probs import ModelOutput

        if tags is None and not (isinstance(probs, ModelOutput) and probs.tagset is not None):
            tags = TagSet.for_labels(corpus.labels)
        dep = compute_dep(corpus, probs, tags=tags, span_embeddings=span_embeddings)
    if "agreement" not in kwargs:
        kwargs["agreement"] = dataset_agreement(ds)
    return analyze(corpus, dep=dep, dep_source=dep_source, task_vectors=task_vectors, **kwargs)
