"""Dataset-wide alerts: rules over plain arrays that flag tasks for review.

This package: :mod:`.base` (the :class:`Alert` type and the shared helpers), :mod:`.task_rules`
(per-task rules) and :mod:`.class_rules` (per-class, per-form and per-annotator rules).

Every alert function takes columnar numpy arrays (one row per task, or one row per span with a
``span_task`` column holding the 0-based task row) and returns an :class:`Alert` when its rule
fires, ``None`` otherwise.  An alert carries

``name``
    a short stable name, used for the Label Studio review view ``"Review: <name>"``;
``rule``
    the rule that fired in words, *with the thresholds actually used*;
``numbers``
    the figures behind it (counts, rates, thresholds), JSON-serialisable;
``task_ids``
    the flagged tasks (Label Studio ids, or 0-based indices for CoNLL input), ordered by
    descending DEP when a DEP is known (the order the review queue uses).

Thresholds are derived from the data where that is meaningful and always reported:

* *upper fence* ``Q3 + k * IQR`` (Tukey) for "unusually high" per-task quantities (DEP, loss,
  text length), with a floor so that a clean dataset whose values are all tiny does not fire;
* classes are "well below" the mean F1 when ``F1 < mean - max(0.10, std)`` over classes;
* a class is "rare" when its count is below ``imbalance_ratio`` (default 1/10) of the largest
  class count;
* per-annotator error rates are compared with the pooled rate using a one-sided binomial
  z-score (``z >= 3``) so that a handful of errors on a small annotator does not fire.

No Python loop runs over tasks or spans in these functions except where noted (the surface
form rule groups with pandas).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["Alert", "ALERT_NAMES", "VIEW_PREFIX", "upper_fence", "jsonable"]

ALERT_NAMES = (
    "likely mislabeled",
    "hard for the model",
    "low-performing classes",
    "class imbalance",
    "overlapping classes",
    "inconsistent surface forms",
    "overlooked spans",
    "malformed samples",
    "duplicates",
    "annotator error rates",
    "annotators disagree",
)


#: every review view ner-quality manages is titled ``VIEW_PREFIX + alert name``
VIEW_PREFIX = "Review: "


@dataclass(frozen=True)
class Alert:
    """One fired rule.  See the module docstring for the fields."""

    name: str
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)
    task_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rule": self.rule,
            "numbers": jsonable(self.numbers),
            "task_ids": [int(t) for t in self.task_ids],
        }

    @property
    def view_title(self) -> str:
        """Title of the Label Studio Data Manager view for this alert."""
        return f"{VIEW_PREFIX}{self.name}"

def jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return round(v, 6) if np.isfinite(v) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _as1d(x: Any, name: str, dtype: Any = None, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n} (one per task)")
    return arr


def _ids(ids: Any, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    return _as1d(ids, "ids", np.int64, n)


def _n_rows(ids: Any, n_tasks: int | None, rows: np.ndarray) -> int:
    if ids is not None:
        return int(np.asarray(ids).shape[0])
    if n_tasks is not None:
        return int(n_tasks)
    return int(rows.max()) + 1 if rows.size else 0


def _order(ids: np.ndarray, rows: np.ndarray, dep: np.ndarray | None) -> tuple[int, ...]:
    """Task ids of ``rows``, by descending DEP (ties and no DEP: ascending id)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        return ()
    if dep is None:
        return tuple(int(i) for i in np.sort(ids[rows]))
    order = np.lexsort((ids[rows], -np.nan_to_num(dep[rows], nan=-1.0)))
    return tuple(int(i) for i in ids[rows][order])


def upper_fence(x: np.ndarray, *, k: float = 1.5, floor: float | None = None) -> float:
    """Tukey's upper fence ``Q3 + k * IQR`` of the finite values of ``x``, at least ``floor``.

    >>> upper_fence(np.array([1.0, 2, 3, 4, 5]), k=1.5)
    7.0
    >>> upper_fence(np.array([0.0, 0, 0, 0]), floor=0.5)
    0.5
    """
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("inf") if floor is None else float(floor)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    t = float(q3 + k * (q3 - q1))
    return t if floor is None else max(t, float(floor))
