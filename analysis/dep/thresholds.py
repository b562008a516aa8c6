"""Task-level DEP: aggregating unit scores, and the per-dataset thresholds that categorise tasks.

``aggregate_units`` turns unit scores (gold spans, gold-``O`` tokens) into one score per task;
``fit_thresholds`` places the *easy* and *likely mislabeled* cuts on one dataset's task DEPs
(:class:`Thresholds`); ``easy`` < t_easy <= ``hard`` < t_mislabeled <= ``mislabeled``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

__all__ = ["Aggregate", "AGGREGATES", "CATEGORIES", "Thresholds", "aggregate_units",
           "fit_thresholds"]

Aggregate = Literal["max", "mean", "noisy_or", "top2", "length_weighted"]
AGGREGATES: tuple[str, ...] = ("max", "mean", "noisy_or", "top2", "length_weighted")
CATEGORIES: tuple[str, ...] = ("easy", "hard", "mislabeled")


def aggregate_units(
    unit_task: np.ndarray,
    unit_score: np.ndarray,
    n_tasks: int,
    *,
    method: Aggregate = "max",
    unit_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Aggregate unit scores (spans, ``O`` tokens) into one score per task.

    Parameters
    ----------
    unit_task : (U,) int, task index of each unit
    unit_score : (U,) float in [0, 1]
    n_tasks : length of the output
    method : ``"max"``; ``"mean"``; ``"noisy_or"`` (``1 − Π(1 − s)``); ``"top2"`` (mean of the
        two highest); ``"length_weighted"`` (mean weighted by ``unit_weight``, e.g. tokens per
        unit)
    unit_weight : (U,) float, only for ``"length_weighted"`` (default 1)

    Returns
    -------
    (n_tasks,) float64; NaN for tasks without units.

    >>> aggregate_units(np.array([0, 0, 2]), np.array([0.2, 0.6, 0.1]), 3).tolist()
    [0.6, nan, 0.1]
    """
    if method not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {method!r}")
    task = np.asarray(unit_task, dtype=np.int64)
    s = np.clip(np.asarray(unit_score, dtype=np.float64), 0.0, 1.0)
    out = np.full(n_tasks, np.nan)
    if task.size == 0:
        return out
    cnt = np.bincount(task, minlength=n_tasks)
    has = cnt > 0
    if method == "max":
        if np.all(task[1:] >= task[:-1]):  # grouped by task (the usual case): one reduceat
            starts = np.flatnonzero(np.r_[True, task[1:] != task[:-1]])
            out[task[starts]] = np.fmax.reduceat(s, starts)
        else:
            np.fmax.at(out, task, s)
    elif method == "mean":
        out[has] = np.bincount(task, weights=s, minlength=n_tasks)[has] / cnt[has]
    elif method == "noisy_or":
        logkeep = np.bincount(task, weights=np.log1p(-np.minimum(s, 1 - 1e-12)), minlength=n_tasks)
        out[has] = -np.expm1(logkeep[has])
    elif method == "top2":
        order = np.lexsort((-s, task))
        ts, ss = task[order], s[order]
        first = np.r_[True, ts[1:] != ts[:-1]]
        grp_start = np.maximum.accumulate(np.where(first, np.arange(len(ts)), 0))
        rank = np.arange(len(ts)) - grp_start
        top = rank < 2
        num = np.bincount(ts[top], weights=ss[top], minlength=n_tasks)
        den = np.bincount(ts[top], minlength=n_tasks)
        out[has] = num[has] / den[has]
    else:  # length_weighted
        w = np.ones_like(s) if unit_weight is None else np.asarray(unit_weight, dtype=np.float64)
        num = np.bincount(task, weights=w * s, minlength=n_tasks)
        den = np.bincount(task, weights=w, minlength=n_tasks)
        out[has] = num[has] / np.where(den[has] > 0, den[has], 1.0)
    return out



@dataclass(frozen=True)
class Thresholds:
    """Per-dataset DEP thresholds: ``dep < easy`` easy, ``dep >= mislabeled`` likely
    mislabeled, hard in between.  ``method`` says how they were derived."""

    easy: float
    mislabeled: float
    method: str

    def categorize(self, dep: np.ndarray) -> np.ndarray:
        """(n,) object array of ``"easy"`` / ``"hard"`` / ``"mislabeled"`` (None for NaN)."""
        d = np.asarray(dep, dtype=np.float64)
        out = np.where(d >= self.mislabeled, "mislabeled", np.where(d < self.easy, "easy", "hard"))
        out = out.astype(object)
        out[np.isnan(d)] = None
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"easy": float(self.easy), "mislabeled": float(self.mislabeled),
                "method": self.method}


def fit_thresholds(task_dep: np.ndarray, disagrees: np.ndarray, *,
                   method: Literal["youden", "expected_fbeta"] = "youden",
                   beta: float = 2.0) -> Thresholds:
    """Derive easy / mislabeled-likely thresholds from one dataset's task DEPs.

    Parameters
    ----------
    task_dep : (n,) float, NaN entries are ignored
    disagrees : (n,) bool, the model's argmax decoding disagrees with the task's gold spans
    method : how ``mislabeled`` is placed (``easy`` is the same for both)
    beta : the F-beta of ``"expected_fbeta"`` (2: recall weighs twice as much as precision —
        a review queue should rather show a few clean tasks than hide errors)

    ``"youden"``: ``mislabeled`` is the cut maximising Youden's J (TPR − FPR) for predicting
    ``disagrees`` from DEP, placed midway between the two neighbouring DEP values — for DEPs
    that are scores, not probabilities (``scorer="signals"``).
    ``"expected_fbeta"``: DEPs are error probabilities (``scorer="model"``); the cut maximises
    the *expected* F-beta of flagging, ``(1 + β²) · Σ_{flagged} dep / (n_flagged + β² · Σ_all
    dep)`` — the dataset's own expected number of errors decides how many tasks are worth
    flagging.
    ``easy`` is the median DEP of the tasks the model agrees with (capped at ``mislabeled``).
    When every scored task agrees, or every one disagrees, the 0.9 and 0.5 quantiles of the DEP
    distribution are used instead.

    >>> th = fit_thresholds(np.array([0.1, 0.2, 0.3, 0.7, 0.9]), np.array([0, 0, 0, 1, 1], bool))
    >>> round(th.mislabeled, 2), round(th.easy, 2), th.method
    (0.5, 0.2, 'youden')
    """
    d = np.asarray(task_dep, dtype=np.float64)
    y = np.asarray(disagrees, dtype=bool)
    ok = ~np.isnan(d)
    d, y = d[ok], y[ok]
    if d.size == 0:
        return Thresholds(float("nan"), float("nan"), "empty")
    if method not in ("youden", "expected_fbeta"):
        raise ValueError(f"method must be 'youden' or 'expected_fbeta', got {method!r}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        t_mis = float(np.quantile(d, 0.9))
        t_easy = float(np.quantile(d, 0.5))
        return Thresholds(min(t_easy, t_mis), t_mis, "quantile")
    order = np.argsort(-d, kind="stable")
    ds, ys = d[order], y[order]
    # a cut is only valid between distinct values
    valid = np.r_[ds[1:] < ds[:-1], True]
    if method == "youden":
        tpr = np.cumsum(ys) / n_pos
        fpr = np.cumsum(~ys) / n_neg
        j = np.where(valid, tpr - fpr, -np.inf)
    else:
        p = np.clip(ds, 0.0, 1.0)
        b2 = beta * beta
        j = np.where(valid, (1.0 + b2) * np.cumsum(p) / (np.arange(1, len(p) + 1) + b2 * p.sum()),
                     -np.inf)
    best = int(np.argmax(j))
    t_mis = float((ds[best] + ds[best + 1]) / 2) if best + 1 < len(ds) else float(ds[best])
    t_easy = float(np.median(d[~y]))
    return Thresholds(min(t_easy, t_mis), t_mis, method)

