"""What ``ner-quality push`` writes to Label Studio — computed, not sent.

:func:`plan_push` turns an :class:`analysis.review.analyze.Analysis` into a :class:`PushPlan`:

* per task, the ``task.data`` fields of :mod:`analysis.labelstudio.fields` (``nerq_dep``,
  ``nerq_errors``, ``nerq_wrong_tag``, ``nerq_span_shift``, ``nerq_missed``, ``nerq_ghost``,
  ``nerq_model_version``) and ``task.meta["ner_quality"]`` (DEP, error counts, the alerts that
  flagged the task, version);
* one Data Manager view per alert, titled ``"Review: <alert name>"``, showing exactly the
  flagged tasks ordered by DEP (descending);
* optionally (``suggest``) one prediction per flagged task with the model's alternative
  labelling under its own ``model_version``.

:func:`pending_updates` keeps only the task updates that would change something given the
tasks as they are now (a second push of the same analysis writes nothing: no timestamps are
compared).  The HTTP calls are made by ``ls_backend.commands.push`` through
``analysis.labelstudio`` — the only module that talks to Label Studio.  Human annotations are never
part of a plan.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = [
    "TaskUpdate",
    "ViewPlan",
    "PredictionPlan",
    "PushPlan",
    "plan_push",
    "pending_updates",
    "META_KEY",
    "DEP_ORDERING",
]

from analysis.labelstudio import fields as _lsf

META_KEY: str = _lsf.META_KEY
F_DEP = _lsf.DEP
F_ERRORS = _lsf.ERRORS
F_KIND = _lsf.KIND_FIELDS
F_VERSION = _lsf.MODEL_VERSION
#: Data Manager ordering of the review views: highest DEP first
DEP_ORDERING: tuple[str, ...] = tuple(_lsf.DEP_ORDERING)
#: meta keys that change on every write and are ignored when comparing
VOLATILE_META = frozenset({"time", "analyzed_at"})


@dataclass(frozen=True)
class TaskUpdate:
    """Fields to merge into one task (``data`` and ``meta[META_KEY]``)."""

    task_id: int
    data: dict[str, Any]
    meta: dict[str, Any]


@dataclass(frozen=True)
class ViewPlan:
    title: str
    task_ids: tuple[int, ...]
    ordering: tuple[str, ...] = DEP_ORDERING
    alert: str = ""


@dataclass(frozen=True)
class PredictionPlan:
    task_id: int
    result: list[dict[str, Any]]
    score: float | None
    model_version: str


@dataclass
class PushPlan:
    updates: list[TaskUpdate] = field(default_factory=list)
    views: list[ViewPlan] = field(default_factory=list)
    predictions: list[PredictionPlan] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "updates": [{"task_id": u.task_id, "data": u.data, "meta": {META_KEY: u.meta}}
                        for u in self.updates],
            "views": [{"title": v.title, "task_ids": list(v.task_ids), "ordering": list(v.ordering)}
                      for v in self.views],
            "predictions": [{"task_id": p.task_id, "model_version": p.model_version,
                             "n_regions": len(p.result), "score": p.score}
                            for p in self.predictions],
        }


def _data_fields(dep: float | None, counts: dict[str, int] | None, version: str) -> dict[str, Any]:
    """The ``task.data`` fields, from :func:`analysis.labelstudio.fields.task_fields` (same as the backend)."""
    if dep is not None and counts is not None:
        return dict(_lsf.task_fields(dep, counts, version))
    data: dict[str, Any] = {F_VERSION: version}
    if dep is not None:
        data[F_DEP] = dep
    if counts is not None:
        data[F_ERRORS] = int(sum(v for k, v in counts.items() if k != "correct"))
        for k, f in F_KIND.items():
            data[f] = int(counts.get(k, 0))
    return data


def _round(x: float | None) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), 4)


def plan_push(
    analysis: Any,
    *,
    model_version: str,
    dataset: Any | None = None,
    suggest: bool = False,
    suggest_version: str | None = None,
) -> PushPlan:
    """Build the plan (see the module docstring).

    Parameters
    ----------
    analysis : analysis.review.analyze.Analysis over Label Studio tasks (ids are task ids)
    model_version : written to ``nerq_model_version`` and the meta
    dataset : the analysed Dataset; needed for ``suggest`` (from_name / to_name / texts)
    suggest : add the model's labelling of each flagged task as a prediction
    suggest_version : its ``model_version`` (default ``"<model_version>-suggest"``)
    """
    if getattr(analysis, "is_conll", False):
        raise ValueError("push needs Label Studio tasks (task ids); this analysis is of a CoNLL file")
    ids = np.asarray(analysis.ids, dtype=np.int64)
    n = ids.shape[0]
    dep = analysis.task_dep
    errs = analysis.task_errors
    from analysis.errors import KINDS

    flagged_by: dict[int, list[str]] = {}
    for a in analysis.alerts:
        for t in a.task_ids:
            flagged_by.setdefault(int(t), []).append(a.name)
    plan = PushPlan()
    for i in range(n):
        tid = int(ids[i])
        meta: dict[str, Any] = {"version": model_version, "alerts": sorted(flagged_by.get(tid, []))}
        d = None if dep is None else _round(dep[i])
        row = None if errs is None else {k: int(v) for k, v in zip(KINDS, errs[i].tolist())}
        data = _data_fields(d, row, model_version)
        if d is not None:
            meta["dep"] = d
        if row is not None:
            meta["errors"] = row
        plan.updates.append(TaskUpdate(tid, data, meta))
    pos = {int(t): i for i, t in enumerate(ids.tolist())}
    for a in analysis.alerts:
        if not a.task_ids:
            continue
        order = list(a.task_ids)
        if dep is not None:
            order.sort(key=lambda t: (-(np.nan_to_num(dep[pos[t]], nan=-1.0) if t in pos else -1.0), t))
        plan.views.append(ViewPlan(a.view_title, tuple(int(t) for t in order), alert=a.name))
    if suggest:
        cols = analysis.extra.get("columns") if hasattr(analysis, "extra") else None
        if cols is None or cols.pred is None or dataset is None:
            raise ValueError("--suggest needs model predictions (--probs or --model)")
        version = suggest_version or f"{model_version}-suggest"
        pred = cols.pred
        conf = cols.pred_conf if cols.pred_conf is not None else np.full(len(pred), np.nan)
        bounds = np.searchsorted(pred.task, np.arange(n + 1))
        for tid in sorted(flagged_by):
            if tid not in pos:
                continue
            i = pos[tid]
            text = dataset.tasks[i].text
            rows = range(int(bounds[i]), int(bounds[i + 1]))
            result = [
                {
                    "id": f"nerq{tid}_{k}",
                    "from_name": dataset.from_name,
                    "to_name": dataset.to_name,
                    "type": "labels",
                    "value": {"start": int(pred.start[r]), "end": int(pred.end[r]),
                              "text": text[int(pred.start[r]):int(pred.end[r])],
                              "labels": [pred.labels[int(pred.label[r])]]},
                    **({"score": float(conf[r])} if np.isfinite(conf[r]) else {}),
                }
                for k, r in enumerate(rows)
            ]
            sc = [float(conf[r]) for r in rows if np.isfinite(conf[r])]
            plan.predictions.append(
                PredictionPlan(tid, result, float(min(sc)) if sc else None, version))
    return plan


def _strip_volatile(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (meta or {}).items() if k not in VOLATILE_META}


def pending_updates(
    plan: PushPlan, current: Mapping[int, Mapping[str, Any]] | Iterable[Mapping[str, Any]]
) -> list[TaskUpdate]:
    """Updates that would change a task, given the tasks' current ``data`` and ``meta``.

    ``current`` maps task id → task dict (or is a list of task dicts with ``id``).  A task
    missing from ``current`` is reported as a change.
    """
    if not isinstance(current, Mapping):
        current = {int(t["id"]): t for t in current}
    out = []
    for u in plan.updates:
        t = current.get(u.task_id)
        if t is None:
            out.append(u)
            continue
        data = t.get("data") or {}
        meta = (t.get("meta") or {}).get(META_KEY)
        same_data = all(data.get(k) == v for k, v in u.data.items())
        # only our own keys count: the backend keeps its per-span details in the same dict
        have = meta or {}
        same_meta = all(have.get(k) == v for k, v in _strip_volatile(u.meta).items())
        if not (same_data and same_meta):
            out.append(u)
    return out


def view_changes(
    plan_views: Sequence[ViewPlan], current_views: Mapping[str, Sequence[int]]
) -> list[ViewPlan]:
    """Views that are new or whose task list differs (``current_views``: title → task ids)."""
    return [v for v in plan_views
            if v.title not in current_views or list(current_views[v.title]) != list(v.task_ids)]
