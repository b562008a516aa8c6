"""Span metrics: P/R/F1 (== seqeval strict mode), confusion with ``none``, error distribution.

A predicted span is a true positive iff a gold span of the same task has exactly the same
boundaries (half-open ``[start, end)``) and the same label, which is what
``seqeval.metrics.classification_report(..., mode="strict", scheme=IOB2)`` counts.  The numbers
are computed with the same float64 formulas in the same order as seqeval, so they agree to the
last bit on the same data:

- per class: ``precision = tp / n_pred``, ``recall = tp / support``, 0 where the denominator
  is 0; ``f1 = 2 * p * r / (p + r)``, 0 where ``p + r == 0``;
- ``micro avg``: the same on summed counts; ``macro avg``: unweighted mean over the classes;
  ``weighted avg``: mean weighted by support (all 0 when there is no gold span);
- classes listed are those with at least one gold or predicted span, sorted by name.

One deliberate difference: with no spans at all seqeval returns ``nan`` for the macro average
(mean of an empty array); here it is ``0.0`` so the report stays valid JSON.

>>> from analysis.spans import Span, SpanTable
>>> gold = SpanTable.from_spans([[Span(0, 5, "PER"), Span(6, 9, "LOC")]])
>>> pred = SpanTable.from_spans([[Span(0, 5, "PER"), Span(6, 8, "LOC")]])
>>> r = span_prf(gold, pred)
>>> r.labels, r.micro["f1-score"]
(('LOC', 'PER'), 0.5)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from .errors import GHOST, KINDS, MISSED, Alignment, align, check_table
from .spans import SpanTable, union_labels

__all__ = [
    "Report",
    "span_prf",
    "Confusion",
    "confusion",
    "top_confusions",
    "ErrorDistribution",
    "error_distribution",
    "SampleCount",
    "sample_count",
]

logger = logging.getLogger(__name__)

NONE = "none"
_AVERAGES = ("micro avg", "macro avg", "weighted avg")


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` in float64 with 0 where ``den == 0`` (seqeval's ``zero_division=0``)."""
    num = np.asarray(num, dtype=np.float64)
    den = np.asarray(den, dtype=np.float64)
    safe = np.where(den == 0, 1.0, den)
    out = num / safe
    out[den == 0] = 0.0
    return out


def _f1(p: np.ndarray, r: np.ndarray) -> np.ndarray:
    # same expression order as seqeval: (1 + beta2) * p * r / (beta2 * p + r), beta2 = 1
    denom = 1.0 * p + r
    denom = np.where(denom == 0.0, 1.0, denom)
    return (1 + 1.0) * p * r / denom


@dataclass(frozen=True)
class Report:
    """Per-class and averaged span precision / recall / F1.

    Attributes
    ----------
    labels : tuple[str, ...]   classes with at least one gold or predicted span, sorted
    tp, n_pred, support : (n_labels,) int64   true positives, predicted spans, gold spans
    precision, recall, f1 : (n_labels,) float64
    micro, macro, weighted : dict with ``precision``, ``recall``, ``f1-score``, ``support``
    """

    labels: tuple[str, ...]
    tp: np.ndarray
    n_pred: np.ndarray
    support: np.ndarray
    precision: np.ndarray
    recall: np.ndarray
    f1: np.ndarray
    micro: dict[str, Any]
    macro: dict[str, Any]
    weighted: dict[str, Any]

    def to_dict(self) -> dict[str, dict[str, float | int]]:
        """Shaped like seqeval's ``classification_report(..., output_dict=True)``.

        ``{label: {"precision", "recall", "f1-score", "support"}, ..., "micro avg": ...,
        "macro avg": ..., "weighted avg": ...}`` with plain Python floats and ints.
        """
        out: dict[str, dict[str, float | int]] = {}
        for i, lab in enumerate(self.labels):
            out[lab] = {
                "precision": float(self.precision[i]),
                "recall": float(self.recall[i]),
                "f1-score": float(self.f1[i]),
                "support": int(self.support[i]),
            }
        for name, d in zip(_AVERAGES, (self.micro, self.macro, self.weighted)):
            out[name] = {
                "precision": float(d["precision"]),
                "recall": float(d["recall"]),
                "f1-score": float(d["f1-score"]),
                "support": int(d["support"]),
            }
        return out

    def to_text(self, *, digits: int = 4) -> str:
        """A text table like seqeval's report, plus the predicted-span count per class."""
        names = list(self.labels) + list(_AVERAGES)
        width = max([len(n) for n in names] + [digits, len("weighted avg")])
        head = f"{'':>{width}s}  {'precision':>9} {'recall':>9} {'f1-score':>9} {'support':>9}"
        head += f" {'predicted':>9}"
        row = "{:>{w}s}  {:>9.{d}f} {:>9.{d}f} {:>9.{d}f} {:>9} {:>9}"
        lines = [head, ""]
        for i, lab in enumerate(self.labels):
            lines.append(
                row.format(
                    lab,
                    self.precision[i],
                    self.recall[i],
                    self.f1[i],
                    int(self.support[i]),
                    int(self.n_pred[i]),
                    w=width,
                    d=digits,
                )
            )
        lines.append("")
        total_pred = int(self.n_pred.sum())
        for name, d in zip(_AVERAGES, (self.micro, self.macro, self.weighted)):
            lines.append(
                row.format(
                    name,
                    d["precision"],
                    d["recall"],
                    d["f1-score"],
                    int(d["support"]),
                    total_pred,
                    w=width,
                    d=digits,
                )
            )
        return "\n".join(lines) + "\n"


def _exact_matches(gold: SpanTable, pred: SpanTable) -> np.ndarray:
    """(n_gold,) bool: gold rows with a predicted span of identical task, boundaries, label."""
    n_gold = len(gold)
    if n_gold == 0 or len(pred) == 0:
        return np.zeros(n_gold, dtype=bool)
    k = 1 + max(int(gold.end.max()), int(pred.end.max()))
    gs = gold.task * k + gold.start
    ps = pred.task * k + pred.start
    # starts are unique per table (spans of a task do not overlap), so one lookup suffices
    idx = np.searchsorted(ps, gs)
    idx_c = np.minimum(idx, len(pred) - 1)
    return (
        (idx < len(pred))
        & (ps[idx_c] == gs)
        & (pred.end[idx_c] == gold.end)
        & (pred.label[idx_c] == gold.label)
    )


def span_prf(gold: SpanTable, pred: SpanTable, *, alignment: Alignment | None = None) -> Report:
    """Span precision / recall / F1 per class and averaged (exact boundaries + label).

    Parameters
    ----------
    gold, pred : SpanTable
        Spans of the same tasks (task indices must mean the same documents).
    alignment : an :func:`analysis.errors.align` result of the same tables, to reuse its
        validated tables (optional).

    Returns
    -------
    Report
    """
    if alignment is not None:
        gold, pred = alignment.gold, alignment.pred
    else:
        gold, pred = union_labels(check_table(gold, name="gold"), check_table(pred, name="pred"))
    n_lab = len(gold.labels)
    tp_mask = _exact_matches(gold, pred)
    support_all = np.bincount(gold.label, minlength=n_lab).astype(np.int64)
    npred_all = np.bincount(pred.label, minlength=n_lab).astype(np.int64)
    tp_all = np.bincount(gold.label[tp_mask], minlength=n_lab).astype(np.int64)
    present = np.flatnonzero((support_all + npred_all) > 0)
    # seqeval orders classes by sorted(); the unified vocabulary is sorted() already, but be
    # explicit in case a caller passes tables with an unsorted vocabulary via ``alignment``
    names = [gold.labels[i] for i in present]
    order = sorted(range(len(names)), key=lambda j: names[j])
    present = present[order] if len(order) else present
    labels = tuple(gold.labels[i] for i in present)
    tp, npred, support = tp_all[present], npred_all[present], support_all[present]

    precision = _div(tp, npred)
    recall = _div(tp, support)
    f1 = _f1(precision, recall)

    mp = _div(np.array([tp.sum()]), np.array([npred.sum()]))
    mr = _div(np.array([tp.sum()]), np.array([support.sum()]))
    mf = _f1(mp, mr)
    micro = {
        "precision": float(mp[0]),
        "recall": float(mr[0]),
        "f1-score": float(mf[0]),
        "support": int(support.sum()),
    }
    if len(labels):
        macro = {
            "precision": float(np.average(precision)),
            "recall": float(np.average(recall)),
            "f1-score": float(np.average(f1)),
            "support": int(support.sum()),
        }
    else:
        macro = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    if support.sum() == 0:
        weighted = {"precision": 0.0, "recall": 0.0, "f1-score": 0.0, "support": 0}
    else:
        weighted = {
            "precision": float(np.average(precision, weights=support)),
            "recall": float(np.average(recall, weights=support)),
            "f1-score": float(np.average(f1, weights=support)),
            "support": int(support.sum()),
        }
    return Report(labels, tp, npred, support, precision, recall, f1, micro, macro, weighted)


@dataclass(frozen=True)
class Confusion:
    """Span confusion matrix including a ``none`` class.

    Attributes
    ----------
    labels : tuple[str, ...]   the label vocabulary followed by ``"none"``
    counts : (n_labels + 1, n_labels + 1) int64
        Rows gold, columns predicted.  Every overlapping (gold, pred) pair counts once at
        ``[gold label, pred label]``; a missed gold span counts at ``[gold label, none]``; a
        ghost prediction at ``[none, pred label]``.  ``[none, none]`` is always 0.
    """

    labels: tuple[str, ...]
    counts: np.ndarray

    def normalized(self, *, zero_diagonal: bool = False) -> np.ndarray:
        """(n+1, n+1) float64, each row divided by its sum (all-zero rows stay 0).

        ``zero_diagonal=True`` removes the diagonal (agreement) before normalising, so each row
        gives the distribution of that class's *errors*.
        """
        c = self.counts.astype(np.float64)
        if zero_diagonal:
            np.fill_diagonal(c, 0.0)
        rows = c.sum(axis=1, keepdims=True)
        return _div(c, np.broadcast_to(rows, c.shape))

    def without_diagonal(self) -> np.ndarray:
        """(n+1, n+1) int64 counts with the diagonal set to 0."""
        c = self.counts.copy()
        np.fill_diagonal(c, 0)
        return c

    def to_dict(self) -> dict[str, dict[str, int]]:
        """``{gold label: {pred label: count}}`` including ``none``."""
        return {
            g: {p: int(self.counts[i, j]) for j, p in enumerate(self.labels)}
            for i, g in enumerate(self.labels)
        }


def _alignment(gold: SpanTable, pred: SpanTable, alignment: Alignment | None) -> Alignment:
    return align(gold, pred) if alignment is None else alignment


def confusion(
    gold: SpanTable,
    pred: SpanTable,
    alignment: Alignment | None = None,
    *,
    zero_diagonal: bool = False,
) -> Confusion:
    """Confusion of gold and predicted labels over overlapping spans (see :class:`Confusion`).

    Parameters
    ----------
    gold, pred : SpanTable
    alignment : the :func:`analysis.errors.align` result of ``gold`` and ``pred``; computed when
        omitted.
    zero_diagonal : set agreeing cells (same label) to 0 in ``counts``.

    >>> from analysis.spans import Span, SpanTable
    >>> c = confusion(SpanTable.from_spans([[Span(0, 5, "PER"), Span(9, 12, "LOC")]]),
    ...               SpanTable.from_spans([[Span(0, 5, "LOC"), Span(20, 22, "LOC")]]))
    >>> c.labels, c.counts.tolist()
    (('LOC', 'PER', 'none'), [[0, 0, 1], [1, 0, 0], [1, 0, 0]])
    """
    al = _alignment(gold, pred, alignment)
    n = len(al.labels)
    none = n
    g_lab = al.gold.label.astype(np.int64)
    p_lab = al.pred.label.astype(np.int64)
    rows = [g_lab[al.pair_gold], g_lab[al.gold_kind == MISSED], np.full(0, none, np.int64)]
    cols = [p_lab[al.pair_pred], np.full(int((al.gold_kind == MISSED).sum()), none, np.int64)]
    ghost_lab = p_lab[al.pred_kind == GHOST]
    rows[2] = np.full(ghost_lab.shape[0], none, np.int64)
    cols.append(ghost_lab)
    r = np.concatenate(rows)
    c = np.concatenate(cols)
    counts = np.bincount(r * (n + 1) + c, minlength=(n + 1) ** 2).reshape(n + 1, n + 1)
    counts = counts.astype(np.int64)
    if zero_diagonal:
        np.fill_diagonal(counts, 0)
    return Confusion(tuple(al.labels) + (NONE,), counts)


def top_confusions(
    conf: np.ndarray | Confusion, labels: tuple[str, ...] | list[str] | None = None, k: int = 10
) -> list[tuple[str, str, int]]:
    """The ``k`` largest off-diagonal cells as ``(gold label, pred label, count)``.

    Sorted by count descending, ties by (gold, pred) position; zero cells are left out.
    ``labels`` names the rows/columns (taken from ``conf`` when it is a :class:`Confusion`).

    >>> top_confusions(np.array([[5, 2], [3, 0]]), ["A", "none"], 5)
    [('none', 'A', 3), ('A', 'none', 2)]
    """
    if isinstance(conf, Confusion):
        labels = conf.labels if labels is None else labels
        conf = conf.counts
    conf = np.asarray(conf)
    if conf.ndim != 2 or conf.shape[0] != conf.shape[1]:
        raise ValueError(f"confusion matrix must be square, got shape {conf.shape}")
    if labels is None or len(labels) != conf.shape[0]:
        raise ValueError(
            f"need {conf.shape[0]} labels for a {conf.shape[0]}x{conf.shape[1]} matrix, got "
            f"{None if labels is None else len(labels)}"
        )
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    off = conf.astype(np.int64).copy()
    np.fill_diagonal(off, 0)
    flat = off.ravel()
    nz = np.flatnonzero(flat > 0)
    order = nz[np.lexsort((nz, -flat[nz]))][:k]
    n = conf.shape[0]
    return [(labels[i // n], labels[i % n], int(flat[i])) for i in order.tolist()]


@dataclass(frozen=True)
class ErrorDistribution:
    """Counts per class per error kind.

    Attributes
    ----------
    labels : tuple[str, ...]
    kinds : tuple[str, ...]   ``KINDS``
    counts : (n_labels, 5) int64
        Gold kinds counted under the gold span's label; ghosts under the predicted label.
    """

    labels: tuple[str, ...]
    kinds: tuple[str, ...]
    counts: np.ndarray

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            lab: {k: int(v) for k, v in zip(self.kinds, self.counts[i])}
            for i, lab in enumerate(self.labels)
        }


def error_distribution(
    gold: SpanTable, pred: SpanTable, alignment: Alignment | None = None
) -> ErrorDistribution:
    """Error kinds per class (see :class:`ErrorDistribution`)."""
    al = _alignment(gold, pred, alignment)
    n = len(al.labels)
    ghost = al.pred_kind == GHOST
    flat = np.concatenate(
        [
            al.gold.label.astype(np.int64) * 5 + al.gold_kind.astype(np.int64),
            al.pred.label[ghost].astype(np.int64) * 5 + GHOST,
        ]
    )
    counts = np.bincount(flat, minlength=n * 5).reshape(n, 5).astype(np.int64)
    return ErrorDistribution(tuple(al.labels), KINDS, counts)


@dataclass(frozen=True)
class SampleCount:
    """Spans and tasks per class.

    Attributes
    ----------
    labels : tuple[str, ...]
    spans : (n_labels,) int64   spans of each class
    tasks : (n_labels,) int64   tasks containing at least one span of each class
    """

    labels: tuple[str, ...]
    spans: np.ndarray
    tasks: np.ndarray

    def to_dict(self) -> dict[str, dict[str, int]]:
        return {
            lab: {"spans": int(self.spans[i]), "tasks": int(self.tasks[i])}
            for i, lab in enumerate(self.labels)
        }


def sample_count(gold: SpanTable) -> SampleCount:
    """Spans per class and tasks per class of one table.

    >>> from analysis.spans import Span, SpanTable
    >>> sc = sample_count(SpanTable.from_spans([[Span(0, 1, "A"), Span(2, 3, "A")], [Span(0, 1, "A")]]))
    >>> sc.to_dict()
    {'A': {'spans': 3, 'tasks': 2}}
    """
    n = len(gold.labels)
    lab = gold.label.astype(np.int64)
    spans = np.bincount(lab, minlength=n).astype(np.int64)
    pair = np.unique(gold.task * max(n, 1) + lab)
    tasks = np.bincount(pair % max(n, 1), minlength=n).astype(np.int64) if n else np.zeros(0, np.int64)
    return SampleCount(tuple(gold.labels), spans, tasks)
