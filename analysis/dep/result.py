"""What :func:`analysis.dep.compute_dep` returns: :class:`DepResult`, and its JSON records."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

from analysis.dep.thresholds import CATEGORIES, Thresholds
from analysis.errors import KINDS, Alignment
from analysis.spans import SpanTable
from analysis.tags import TagSet

__all__ = ["DepResult", "SPAN_RECORD_COLUMNS"]

#: columns of :attr:`DepResult.spans` that the per-task JSON records carry
SPAN_RECORD_COLUMNS: tuple[str, ...] = ("start", "end", "text", "gold_label", "pred_label",
                                        "kind", "dep", "suspect")


@dataclass(frozen=True)
class DepResult:
    """Everything :func:`analysis.dep.compute_dep` found.

    Attributes
    ----------
    task_dep : (n_tasks,) float64 in [0, 1]; NaN for unannotated tasks
    category : (n_tasks,) object, ``"easy"`` / ``"hard"`` / ``"mislabeled"`` (None: NaN DEP)
    thresholds : Thresholds
    token_dep : (N,) float32, unit DEP of every token of the scored tasks, flattened (a token
        inside a gold span carries its span's DEP)
    token_margin_dep : (N,) float32, ``(1 − margin) / 2`` per token (no other signal)
    token_offsets : (n_tasks + 1,) int64, task ``i``'s tokens are
        ``token_dep[token_offsets[i]:token_offsets[i + 1]]`` (empty for unscored tasks)
    spans : DataFrame (built on first access), one row per gold span and per ghost prediction, sorted by task and
        offset: ``task, task_id, start, end`` (char, half-open), ``token_start, token_end``,
        ``text, gold_label`` (None for ghosts), ``pred_label`` (overlapping argmax prediction,
        None if none), ``kind`` (error type vs the argmax prediction, one of
        :data:`analysis.errors.KINDS`), ``dep``, ``suspect`` and one ``sig_<name>`` column per
        signal
    task_errors : (n_tasks, 5) int64, per task counts of ``KINDS`` (gold kinds + ghosts)
    signals : DataFrame (n_tasks rows, built on first access), per-task max of each signal
    tags : tag columns of the probabilities (``tagset.tags``)
    aggregate : how unit scores became task scores
    weights : signal weights used by :func:`analysis.dep.signals.combine` (``scorer="signals"``)
    scorer : ``"model"`` (the learned error model) or ``"signals"``
    units : with ``return_units=True`` and ``scorer="model"``: per unit type the feature matrix
        ``x`` and where each unit is (``task``; ``token_start``/``token_end`` for spans, ``token``
        for O tokens, task-local token indices) — what fitting an error model needs
    alignment : the gold spans against the model's argmax decoding, in task-local *token* units
        (:func:`analysis.errors.align`; gold rows are the corpus's kept gold spans in order) —
        the one alignment that the metrics, alerts and write-back reuse
    pred_chars : the argmax-decoded spans of ``alignment.pred`` in character offsets (same rows)
    pred_conf : (n_pred,) float32, mean argmax probability over each predicted span's tokens
    gold_span_dep : (n_gold,) float64, DEP of every row of the corpus's gold span table (NaN for
        spans left out of the token view)
    gold_span_suspect : (n_gold,) object, the suspected error class of the same rows (None)
    pred_dep : (n_pred,) float64, DEP of each predicted span that is a ghost (NaN otherwise)
    tagset : the tag set of the probabilities
    task_ids : (n_tasks,) object, Label Studio ids (None for tasks without one)
    scored : the validated per-token view DEP worked on (:class:`analysis.dep.inputs.Scored`:
        flat probabilities and gold tags of the scored tasks), for the analysis to reuse
    """

    task_dep: np.ndarray
    category: np.ndarray
    thresholds: Thresholds
    token_dep: np.ndarray
    token_margin_dep: np.ndarray
    token_offsets: np.ndarray
    _spans: pd.DataFrame | Callable[[], pd.DataFrame] = field(repr=False, compare=False)
    task_errors: np.ndarray
    _signals: pd.DataFrame | Callable[[], pd.DataFrame] = field(repr=False, compare=False)
    tags: tuple[str, ...]
    aggregate: str
    weights: Mapping[str, float] = field(default_factory=dict)
    scorer: str = "signals"
    units: Mapping[str, Any] | None = None
    alignment: Alignment | None = None
    pred_chars: SpanTable | None = None
    pred_conf: np.ndarray | None = None
    gold_span_dep: np.ndarray | None = None
    gold_span_suspect: np.ndarray | None = None
    pred_dep: np.ndarray | None = None
    tagset: TagSet | None = None
    task_ids: Sequence[int | None] = ()
    scored: Any = field(default=None, repr=False, compare=False)

    @cached_property
    def spans(self) -> pd.DataFrame:
        """The span table (see the class docstring), built on first use."""
        s = self._spans
        return s() if callable(s) else s

    @cached_property
    def signals(self) -> pd.DataFrame:
        """Per-task maxima of the signals, built on first use."""
        s = self._signals
        return s() if callable(s) else s

    def task_spans(self, i: int) -> list[dict[str, Any]]:
        """Span records of task ``i`` as plain dicts (JSON-ready)."""
        rows = self.spans[self.spans["task"] == i]
        return self.span_records_by_task(rows).get(i, [])

    def span_records_by_task(self, rows: pd.DataFrame | None = None
                             ) -> dict[int, list[dict[str, Any]]]:
        """``task -> [span record, ...]`` for every task with spans (one pass over ``spans``)."""
        sp = self.spans if rows is None else rows
        cols = [sp[c].tolist() for c in ("task",) + SPAN_RECORD_COLUMNS]
        out: dict[int, list[dict[str, Any]]] = {}
        for t, s, e, tx, gl, pl, kd, d, su in zip(*cols):
            out.setdefault(int(t), []).append(
                {"start": int(s), "end": int(e), "text": tx, "gold_label": gl, "pred_label": pl,
                 "kind": kd, "dep": round(float(d), 6), "suspect": su})
        return out

    def task_records(self, tasks: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per task: ``index, id, dep, category, errors, spans``.

        Ids come from ``task_ids`` (or from ``tasks[i].id`` when given).
        """
        per_task = self.span_records_by_task()
        ids: Sequence[Any] = [t.id for t in tasks] if tasks is not None else self.task_ids
        dep = self.task_dep.tolist()
        cat = self.category.tolist()
        err = self.task_errors[:, 1:].tolist()
        kinds = KINDS[1:]
        return [
            {"index": i, "id": ids[i] if i < len(ids) else None,
             "dep": None if d != d else round(d, 6), "category": cat[i],
             "errors": dict(zip(kinds, err[i])), "spans": per_task.get(i, [])}
            for i, d in enumerate(dep)
        ]

    def ranking(self) -> np.ndarray:
        """Scored task indices, most suspicious first (ties keep task order)."""
        d = self.task_dep
        idx = np.flatnonzero(~np.isnan(d))
        return idx[np.argsort(-d[idx], kind="stable")]

    def summary(self) -> dict[str, Any]:
        d = self.task_dep[~np.isnan(self.task_dep)]
        cats = pd.Series(self.category).value_counts()
        err = self.task_errors.sum(axis=0) if self.task_errors.size else np.zeros(5, int)
        return {
            "tasks": int(self.task_dep.shape[0]),
            "scored": int(d.size),
            "spans": int((self.spans["kind"] != "ghost").sum()),
            "mean_dep": float(d.mean()) if d.size else None,
            "median_dep": float(np.median(d)) if d.size else None,
            "categories": {c: int(cats.get(c, 0)) for c in CATEGORIES},
            "errors_vs_model": {k: int(v) for k, v in zip(KINDS, err)},
            "aggregate": self.aggregate,
            "scorer": self.scorer,
            "weights": {k: float(v) for k, v in self.weights.items()},
        }
