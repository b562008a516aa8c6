"""Alignment of gold and predicted spans and the four span error types.

Every gold span gets exactly one kind:

``correct``
    a predicted span has exactly the same boundaries and the same label;
``wrong_tag``
    a predicted span has exactly the same boundaries but another label;
``span_shift``
    no exact-boundary prediction, but at least one predicted span overlaps it (the labels may
    differ as well: see ``Alignment.gold_label_differs`` and the per-pair flags);
``missed``
    no predicted span overlaps it.

Every predicted span that overlaps no gold span is a ``ghost``.  A predicted span that overlaps
gold spans takes the kind of the gold side (``correct`` / ``wrong_tag`` for an exact match,
``span_shift`` otherwise); ``per_task`` counts gold kinds plus ghosts, so nothing is counted twice.

Overlap rule
------------
ONE rule everywhere (the same as :meth:`analysis.spans.Span.overlaps`): half-open spans
``[a.start, a.end)`` and ``[b.start, b.end)`` overlap iff ``a.start < b.end and b.start < a.end``.
Touching spans (``[0, 5)`` and ``[5, 9)``) do **not** overlap.  (The reference implementation
people usually copy, nervaluate, mixes conventions: its loaders produce *inclusive* ends and its
overlap test is written for inclusive ends, while most callers feed it exclusive character
offsets, which makes touching spans "overlap".  Nothing here is inclusive.)

Spans inside one table and task must not overlap each other (validated, with an error naming the
task); therefore an exact-boundary prediction is the *only* prediction overlapping that gold span.

Everything is vectorised over the whole dataset: spans of all tasks are put on one number line
with composite keys ``task * K + offset`` (``K`` larger than every offset), where the sorted,
non-overlapping spans have sorted starts *and* sorted ends, so the predictions overlapping a gold
span form one contiguous range found with two ``np.searchsorted`` calls.

>>> from analysis.spans import Span, SpanTable
>>> gold = SpanTable.from_spans([[Span(0, 5, "PER"), Span(10, 15, "LOC")], [Span(0, 3, "ORG")]])
>>> pred = SpanTable.from_spans([[Span(0, 5, "PER"), Span(10, 13, "LOC"), Span(20, 22, "PER")], []])
>>> al = align(gold, pred)
>>> [KINDS[k] for k in al.gold_kind], [KINDS[k] for k in al.pred_kind]
(['correct', 'span_shift', 'missed'], ['correct', 'span_shift', 'ghost'])
>>> al.counts()
{'correct': 1, 'wrong_tag': 0, 'span_shift': 1, 'missed': 1, 'ghost': 1}
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.exceptions import DataError

from .spans import SpanTable, union_labels

__all__ = [
    "KINDS",
    "CORRECT",
    "WRONG_TAG",
    "SPAN_SHIFT",
    "MISSED",
    "GHOST",
    "Alignment",
    "align",
    "task_errors",
    "check_table",
]

logger = logging.getLogger(__name__)

KINDS: tuple[str, ...] = ("correct", "wrong_tag", "span_shift", "missed", "ghost")
CORRECT, WRONG_TAG, SPAN_SHIFT, MISSED, GHOST = range(5)


def check_table(table: SpanTable, *, name: str = "spans") -> SpanTable:
    """Validate a span table and return it sorted by ``(task, start, end)``.

    Raises ``ValueError`` naming the task for a negative task index or offset, an empty or
    reversed span, a label index outside the vocabulary, or two spans of one task that overlap.
    All checks are vectorised.

    Parameters
    ----------
    table : SpanTable
    name : names the table in error messages (``"gold"``, ``"pred"``)
    """
    if not isinstance(table, SpanTable):
        raise TypeError(f"{name}: expected a SpanTable, got {type(table).__name__}")
    n = len(table)
    if not (table.start.shape == table.end.shape == table.label.shape == (n,)):
        raise DataError(f"{name}: task, start, end and label arrays must have equal length")
    if n == 0:
        return table
    task, start, end = table.task, table.start, table.end
    key_sorted = bool(
        np.all(
            (task[1:] > task[:-1])
            | ((task[1:] == task[:-1]) & (start[1:] > start[:-1]))
            | ((task[1:] == task[:-1]) & (start[1:] == start[:-1]) & (end[1:] >= end[:-1]))
        )
    )
    if not key_sorted:
        table = SpanTable.from_arrays(task, start, end, table.label, table.labels)
        task, start, end = table.task, table.start, table.end
    bad = np.flatnonzero(task < 0)
    if bad.size:
        raise DataError(f"{name}: negative task index {int(task[bad[0]])}")
    bad = np.flatnonzero((start < 0) | (start >= end))
    if bad.size:
        i = int(bad[0])
        what = "a negative start" if start[i] < 0 else "empty or reversed (start >= end)"
        raise DataError(
            f"{name}: task {int(task[i])}: span [{int(start[i])}, {int(end[i])}) is {what}"
        )
    lab = table.label
    bad = np.flatnonzero((lab < 0) | (lab >= len(table.labels)))
    if bad.size:
        i = int(bad[0])
        raise DataError(
            f"{name}: task {int(task[i])}: span [{int(start[i])}, {int(end[i])}) has label index "
            f"{int(lab[i])}, outside the {len(table.labels)} labels {list(table.labels)}"
        )
    # sorted by (task, start): two spans of a task overlap iff some consecutive pair does
    bad = np.flatnonzero((task[1:] == task[:-1]) & (start[1:] < end[:-1]))
    if bad.size:
        i = int(bad[0])
        a, b = i, i + 1
        raise DataError(
            f"{name}: task {int(task[a])}: spans [{int(start[a])}, {int(end[a])}) "
            f"{table.labels[lab[a]]!r} and [{int(start[b])}, {int(end[b])}) "
            f"{table.labels[lab[b]]!r} overlap (spans within one annotation must not overlap)"
        )
    return table


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align`.

    Attributes
    ----------
    gold, pred : SpanTable
        The validated, sorted tables on the shared label vocabulary ``labels``; every index
        below refers to their rows.  Input tables already sorted by ``(task, start, end)`` (as
        ``SpanTable.from_arrays`` / ``from_spans`` build them) keep their row order, so the
        indices are also valid for the caller's tables; only ``label`` is re-indexed.
    labels : tuple[str, ...]
        Sorted union of both label sets.
    n_tasks : int
    gold_kind : (n_gold,) int8
        ``CORRECT``, ``WRONG_TAG``, ``SPAN_SHIFT`` or ``MISSED`` (indices into ``KINDS``).
    pred_kind : (n_pred,) int8
        ``CORRECT``, ``WRONG_TAG``, ``SPAN_SHIFT`` (overlaps a gold span) or ``GHOST``.
    gold_label_differs : (n_gold,) bool
        True when the gold span is overlapped but no overlapping prediction carries its label
        (always True for ``wrong_tag``; for ``span_shift``: the type is wrong too).
    pair_gold, pair_pred : (n_pairs,) int64
        Every overlapping (gold row, pred row) pair, sorted by gold row then pred row.
    pair_label_differs, pair_same_boundaries : (n_pairs,) bool
    per_task : (n_tasks, 5) int64
        Per task: gold spans of each gold kind, and ghost predictions in column ``GHOST``.
    """

    gold: SpanTable
    pred: SpanTable
    labels: tuple[str, ...]
    n_tasks: int
    gold_kind: np.ndarray
    pred_kind: np.ndarray
    gold_label_differs: np.ndarray
    pair_gold: np.ndarray
    pair_pred: np.ndarray
    pair_label_differs: np.ndarray
    pair_same_boundaries: np.ndarray
    per_task: np.ndarray

    @property
    def n_pairs(self) -> int:
        return int(self.pair_gold.shape[0])

    def counts(self) -> dict[str, int]:
        """Dataset-wide counts: gold kinds plus ghost predictions."""
        c = np.bincount(self.gold_kind, minlength=5)
        c[GHOST] = int(np.count_nonzero(self.pred_kind == GHOST))
        return {k: int(v) for k, v in zip(KINDS, c)}

    def task_error_counts(self) -> np.ndarray:
        """(n_tasks,) int64: wrong_tag + span_shift + missed + ghost per task."""
        return self.per_task[:, 1:].sum(axis=1)


def _composite(table: SpanTable, k: int) -> tuple[np.ndarray, np.ndarray]:
    base = table.task * np.int64(k)
    return base + table.start, base + table.end


def align(gold: SpanTable, pred: SpanTable, *, n_tasks: int | None = None) -> Alignment:
    """Align predicted spans to gold spans over a whole dataset and classify them.

    Parameters
    ----------
    gold, pred : SpanTable
        Character (or token) spans; ``task`` is the 0-based task index.  The two tables need
        not share a label vocabulary (they are re-indexed onto the sorted union).
    n_tasks : number of tasks (rows of ``per_task``); default: ``1 + max task index`` seen.
        Tasks without spans simply get zero counts.

    Returns
    -------
    Alignment

    Raises
    ------
    ValueError
        Overlapping spans within one table and task, invalid offsets, or a task index
        ``>= n_tasks``.
    """
    gold = check_table(gold, name="gold")
    pred = check_table(pred, name="pred")
    gold, pred = union_labels(gold, pred)
    labels = gold.labels
    max_task = max(
        int(gold.task[-1]) if len(gold) else -1, int(pred.task[-1]) if len(pred) else -1
    )
    if n_tasks is None:
        n_tasks = max_task + 1
    elif n_tasks < 0:
        raise DataError(f"n_tasks must be >= 0, got {n_tasks}")
    elif max_task >= n_tasks:
        raise DataError(f"task {max_task} has spans but n_tasks is {n_tasks}")
    n_gold, n_pred = len(gold), len(pred)

    k = 1 + max(int(gold.end.max()) if n_gold else 0, int(pred.end.max()) if n_pred else 0)
    if max_task >= 0 and (max_task + 1) > np.iinfo(np.int64).max // max(k, 1):
        raise DataError(f"offsets too large to align ({max_task + 1} tasks x {k} offsets)")
    gs, ge = _composite(gold, k)
    ps, pe = _composite(pred, k)

    # preds overlapping gold g: p.end > g.start and p.start < g.end -> contiguous range [lo, hi)
    lo = np.searchsorted(pe, gs, side="right")
    hi = np.searchsorted(ps, ge, side="left")
    cnt = np.maximum(hi - lo, 0)
    n_pairs = int(cnt.sum())
    pair_gold = np.repeat(np.arange(n_gold, dtype=np.int64), cnt)
    first = np.cumsum(cnt) - cnt  # position of each gold's first pair
    pair_pred = (np.repeat(lo - first, cnt) + np.arange(n_pairs, dtype=np.int64)).astype(np.int64)

    pair_same = (gs[pair_gold] == ps[pair_pred]) & (ge[pair_gold] == pe[pair_pred])
    pair_ldiff = gold.label[pair_gold] != pred.label[pair_pred]

    exact_g = np.zeros(n_gold, dtype=bool)
    exact_g[pair_gold[pair_same]] = True
    same_label_g = np.zeros(n_gold, dtype=bool)
    same_label_g[pair_gold[~pair_ldiff]] = True
    overlapped_g = cnt > 0

    gold_kind = np.full(n_gold, MISSED, dtype=np.int8)
    gold_kind[overlapped_g] = SPAN_SHIFT
    gold_kind[exact_g & same_label_g] = CORRECT
    gold_kind[exact_g & ~same_label_g] = WRONG_TAG
    gold_label_differs = overlapped_g & ~same_label_g

    pred_kind = np.full(n_pred, GHOST, dtype=np.int8)
    pred_kind[pair_pred] = SPAN_SHIFT
    ex_pairs = np.flatnonzero(pair_same)
    pred_kind[pair_pred[ex_pairs]] = np.where(pair_ldiff[ex_pairs], WRONG_TAG, CORRECT)

    ghost = pred_kind == GHOST
    flat = np.concatenate(
        [gold.task * 5 + gold_kind.astype(np.int64), pred.task[ghost] * 5 + GHOST]
    )
    per_task = np.bincount(flat, minlength=n_tasks * 5).reshape(n_tasks, 5).astype(np.int64)

    logger.debug(
        "aligned %d gold and %d predicted spans in %d tasks: %d overlapping pairs",
        n_gold,
        n_pred,
        n_tasks,
        n_pairs,
    )
    return Alignment(
        gold=gold,
        pred=pred,
        labels=labels,
        n_tasks=n_tasks,
        gold_kind=gold_kind,
        pred_kind=pred_kind,
        gold_label_differs=gold_label_differs,
        pair_gold=pair_gold,
        pair_pred=pair_pred,
        pair_label_differs=pair_ldiff,
        pair_same_boundaries=pair_same,
        per_task=per_task,
    )


def _span_dict(table: SpanTable, i: int) -> dict[str, Any]:
    return {
        "start": int(table.start[i]),
        "end": int(table.end[i]),
        "label": table.labels[int(table.label[i])],
    }


def task_errors(
    alignment: Alignment, task_index: int, *, include_correct: bool = False
) -> dict[str, Any]:
    """The exact span pairs of one task, as plain JSON-ready data.

    Returns
    -------
    dict
        ``{"task": i, "counts": {kind: n, ...}, "n_errors": n, "items": [...]}`` where each item
        is ``{"kind": k, "gold": span | None, "pred": [span, ...], "label_differs": bool}`` and a
        span is ``{"start", "end", "label"}``.  Gold items come first in offset order (each with
        every prediction overlapping it), then ghosts.  ``correct`` items are left out unless
        ``include_correct``.

    >>> from analysis.spans import Span, SpanTable
    >>> al = align(SpanTable.from_spans([[Span(0, 5, "PER")]]),
    ...            SpanTable.from_spans([[Span(0, 5, "LOC")]]))
    >>> task_errors(al, 0)["items"][0]["kind"]
    'wrong_tag'
    """
    if not 0 <= task_index < alignment.n_tasks:
        raise DataError(f"task {task_index} is out of range for {alignment.n_tasks} tasks")
    gold, pred = alignment.gold, alignment.pred
    g0, g1 = np.searchsorted(gold.task, [task_index, task_index + 1])
    p0, p1 = np.searchsorted(pred.task, [task_index, task_index + 1])
    q0, q1 = np.searchsorted(alignment.pair_gold, [g0, g1])
    pairs_g = alignment.pair_gold[q0:q1].tolist()
    pairs_p = alignment.pair_pred[q0:q1].tolist()
    by_gold: dict[int, list[int]] = {}
    for g, p in zip(pairs_g, pairs_p):
        by_gold.setdefault(g, []).append(p)
    items: list[dict[str, Any]] = []
    for g in range(int(g0), int(g1)):
        kind = int(alignment.gold_kind[g])
        if kind == CORRECT and not include_correct:
            continue
        items.append(
            {
                "kind": KINDS[kind],
                "gold": _span_dict(gold, g),
                "pred": [_span_dict(pred, p) for p in by_gold.get(g, [])],
                "label_differs": bool(alignment.gold_label_differs[g]),
            }
        )
    for p in range(int(p0), int(p1)):
        if alignment.pred_kind[p] == GHOST:
            items.append(
                {"kind": "ghost", "gold": None, "pred": [_span_dict(pred, p)], "label_differs": False}
            )
    row = alignment.per_task[task_index]
    return {
        "task": int(task_index),
        "counts": {k: int(v) for k, v in zip(KINDS, row)},
        "n_errors": int(row[1:].sum()),
        "items": items,
    }
