"""Per-task span records of ``meta["ner_quality"]``, from the one alignment of gold and model.

:func:`task_span_records` walks the alignment of :class:`analysis.review.comparison.Comparison`
(or of a :class:`analysis.dep.DepResult`) once and returns, per task, the records of
:func:`analysis.labelstudio.fields.task_meta`: every gold span with its error type, DEP, suspected
error class and overlapping predictions, and the model's extra spans (ghosts).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np

from analysis.corpus import Corpus
from analysis.errors import GHOST, KINDS, Alignment
from analysis.spans import SpanTable

__all__ = ["task_span_records", "keep_similar"]


def _round(x: float) -> float | None:
    return None if x != x else round(float(x), 6)


def task_span_records(
    corpus: Corpus,
    alignment: Alignment,
    pred_chars: SpanTable,
    *,
    gold_dep: np.ndarray | None = None,
    gold_suspect: np.ndarray | None = None,
    pred_dep: np.ndarray | None = None,
    tasks: Iterable[int] | None = None,
) -> dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]]:
    """``task -> (span records, ghost records)`` for ``tasks`` (default: every annotated task).

    ``gold_dep`` / ``gold_suspect`` are indexed by rows of ``corpus.gold.chars`` (as in
    :class:`analysis.dep.DepResult`), ``pred_dep`` by predicted span.  ``similar`` is left
    empty: the backend fills it from its span index.
    """
    gold_rows = corpus.gold.kept_rows  # alignment.gold row i is corpus gold row gold_rows[i]
    ch = corpus.gold.chars
    al_labels = alignment.labels
    texts = corpus.texts
    g_task, p_task = alignment.gold.task, alignment.pred.task
    pairs = alignment.pair_gold
    pred_label = alignment.pred.label.tolist()
    wanted = np.flatnonzero(corpus.annotated) if tasks is None else np.asarray(list(tasks))
    g_lo, g_hi = np.searchsorted(g_task, wanted), np.searchsorted(g_task, wanted + 1)
    p_lo, p_hi = np.searchsorted(p_task, wanted), np.searchsorted(p_task, wanted + 1)
    out: dict[int, tuple[list[dict[str, Any]], list[dict[str, Any]]]] = {}
    for t, a, b, c, d in zip(wanted.tolist(), g_lo.tolist(), g_hi.tolist(), p_lo.tolist(),
                             p_hi.tolist()):
        text = texts[t]
        spans = []
        q0, q1 = np.searchsorted(pairs, [a, b])
        by_gold: dict[int, list[int]] = {}
        for g, p in zip(pairs[q0:q1].tolist(), alignment.pair_pred[q0:q1].tolist()):
            by_gold.setdefault(g, []).append(p)
        for g in range(a, b):
            r = int(gold_rows[g])
            s, e = int(ch.start[r]), int(ch.end[r])
            spans.append({
                "start": s, "end": e, "text": text[s:e], "label": ch.labels[int(ch.label[r])],
                "dep": None if gold_dep is None else _round(gold_dep[r]),
                "suspect": None if gold_suspect is None or gold_suspect[r] is None
                else str(gold_suspect[r]),
                "error": KINDS[int(alignment.gold_kind[g])],
                "predicted": [_pred(pred_chars, p, text, al_labels[pred_label[p]])
                              for p in by_gold.get(g, [])],
                "similar": [],
            })
        ghosts = []
        for p in range(c, d):
            if alignment.pred_kind[p] == GHOST:
                rec = _pred(pred_chars, p, text, al_labels[pred_label[p]])
                rec["dep"] = None if pred_dep is None else _round(pred_dep[p])
                ghosts.append(rec)
        out[t] = (spans, ghosts)
    return out


def _pred(table: SpanTable, i: int, text: str, label: str) -> dict[str, Any]:
    s, e = int(table.start[i]), int(table.end[i])
    return {"start": s, "end": e, "text": text[s:e], "label": label}


def keep_similar(new_spans: list[dict[str, Any]], old: Mapping[str, Any] | None
                 ) -> list[dict[str, Any]]:
    """``new_spans`` with the ``similar`` lists of an earlier write kept for unchanged spans.

    Similar spans come from the backend's span index; ``push`` has none and must not erase them.
    """
    if not old:
        return new_spans
    prev = {(s.get("start"), s.get("end"), s.get("label")): s.get("similar") or []
            for s in old.get("spans") or () if isinstance(s, Mapping)}
    return [{**s, "similar": s["similar"] or prev.get((s["start"], s["end"], s["label"]), [])}
            for s in new_spans]
