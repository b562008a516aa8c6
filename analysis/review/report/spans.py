"""Gold and predicted spans of the flagged tasks, with their error kinds, as the report draws
them.

:func:`task_spans` aligns, for the given tasks only, the gold character spans
(``corpus.gold.chars``) with the model's (``comparison.pred_chars``) through
:func:`analysis.errors.align` — the one alignment of the library, in character units — and
returns plain lists for the page: each gold span with its kind and, when the model disagrees,
what it proposes; each predicted span with its kind (``ghost``: an entity the annotation lacks).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.errors import KINDS, SPAN_SHIFT, WRONG_TAG, align
from analysis.spans import SpanTable

__all__ = ["task_spans"]


def _subset(table: SpanTable, rows: np.ndarray) -> SpanTable:
    keep = np.isin(table.task, rows)
    return SpanTable(table.task[keep], table.start[keep], table.end[keep], table.label[keep],
                     table.labels)


def task_spans(corpus: Any, comparison: Any, rows: Sequence[int]) -> dict[int, dict[str, Any]]:
    """Per task row (0-based index) in ``rows``: ``{"gold": [[start, end, label, kind,
    proposal]], "pred": [[start, end, label, kind]]}``, character offsets half-open.

    ``kind`` is a name of :data:`analysis.errors.KINDS`; ``proposal`` is None for a correct
    gold span, else what the model has instead: ``[start, end, label]`` of the overlapping
    prediction (wrong type, boundary) or None (``missed``: the model has nothing there).
    ``comparison`` None (no model output): gold spans only, kind None.
    """
    sel = np.unique(np.asarray(list(rows), dtype=np.int64))
    out: dict[int, dict[str, Any]] = {int(r): {"gold": [], "pred": []} for r in sel.tolist()}
    gold = _subset(corpus.gold.chars, sel)
    if comparison is None:
        for t, s, e, lab in zip(gold.task.tolist(), gold.start.tolist(), gold.end.tolist(),
                                gold.label.tolist()):
            out[t]["gold"].append([s, e, gold.labels[lab], None, None])
        return out
    pred = _subset(comparison.pred_chars, sel)
    al = align(gold, pred, n_tasks=corpus.n_tasks)
    g, p, labels = al.gold, al.pred, al.labels
    first_pair: dict[int, int] = {}
    for gi, pj in zip(al.pair_gold.tolist(), al.pair_pred.tolist()):
        first_pair.setdefault(gi, pj)
    for i, (t, s, e, lab, kind) in enumerate(zip(g.task.tolist(), g.start.tolist(),
                                                  g.end.tolist(), g.label.tolist(),
                                                  al.gold_kind.tolist())):
        proposal = None
        if kind in (WRONG_TAG, SPAN_SHIFT) and i in first_pair:
            j = first_pair[i]
            proposal = [int(p.start[j]), int(p.end[j]), labels[int(p.label[j])]]
        out[t]["gold"].append([s, e, labels[lab], KINDS[kind], proposal])
    for t, s, e, lab, kind in zip(p.task.tolist(), p.start.tolist(), p.end.tolist(),
                                  p.label.tolist(), al.pred_kind.tolist()):
        out[t]["pred"].append([s, e, labels[lab], KINDS[kind]])
    return out
