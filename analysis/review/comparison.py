"""Gold spans against one set of predictions, aligned once, with the per-token model view.

A :class:`Comparison` is what the metrics and alerts of :mod:`analysis.review` read about the
model: the alignment (task-local token units, gold rows = the corpus's kept gold spans), the
predicted spans in characters with a confidence each, and — when probabilities exist — the
per-token view of the scored tasks (:class:`analysis.dep.inputs.Scored`).  It comes either from
a :class:`analysis.dep.DepResult` (the model's argmax decoding, aligned by DEP) or from the tasks'
stored predictions (:func:`from_stored`); nothing aligns twice.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from analysis.corpus import Corpus
from analysis.dep import DepResult
from analysis.dep.inputs import Scored
from analysis.errors import Alignment, align
from analysis.spans import SpanTable

__all__ = ["Comparison", "from_dep", "from_stored"]


@dataclass(frozen=True, eq=False)
class Comparison:
    """See the module docstring.

    Attributes
    ----------
    alignment : gold (kept spans of annotated tasks) against predictions of annotated tasks
    pred_chars : (n_pred,) the predicted spans of ``alignment.pred`` in character offsets
    pred_conf : (n_pred,) float64 confidence of each predicted span (1.0 when unknown)
    scored : the per-token view (probabilities, gold tags) or None without probabilities
    source : ``"model"`` or ``"stored predictions"``
    n_pred_spans : predicted spans before keeping only annotated tasks
    """

    alignment: Alignment
    pred_chars: SpanTable
    pred_conf: np.ndarray
    scored: Scored | None
    source: str
    n_pred_spans: int


def from_dep(dep: DepResult, scored: Scored) -> Comparison:
    """The comparison DEP already made (gold against the argmax decoding)."""
    assert dep.alignment is not None and dep.pred_chars is not None  # internal: compute_dep sets them
    conf = np.asarray(dep.pred_conf, dtype=np.float64) if dep.pred_conf is not None else \
        np.ones(len(dep.pred_chars))
    return Comparison(dep.alignment, dep.pred_chars, conf, scored, "model", len(dep.pred_chars))


def _rows(table: SpanTable, keep: np.ndarray) -> SpanTable:
    return SpanTable(table.task[keep], table.start[keep], table.end[keep], table.label[keep],
                     table.labels)


def from_stored(corpus: Corpus) -> Comparison | None:
    """Gold against the tasks' stored predictions (None when no task has one)."""
    if corpus.pred is None:
        return None
    pred = corpus.pred
    kept = pred.kept_rows
    ann = corpus.annotated[pred.chars.task[kept]]
    rows = kept[ann]  # predictions of unannotated tasks do not count
    tok = pred.token_table(corpus.token_offsets)
    tok = _rows(tok, ann)
    al = align(corpus.gold_tokens, tok, n_tasks=corpus.n_tasks)
    score = corpus.pred_score if corpus.pred_score is not None else np.full(corpus.n_tasks,
                                                                           np.nan)
    conf = np.nan_to_num(score[pred.chars.task[rows]], nan=1.0)
    return Comparison(al, _rows(pred.chars, rows), conf, None, "stored predictions", len(pred))
