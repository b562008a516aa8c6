"""What ``ner-quality push`` writes to Label Studio — computed, not sent.

:func:`plan_push` turns an :class:`analysis.review.Analysis` into a :class:`PushPlan`:

* per task, the ``task.data`` fields of :mod:`analysis.labelstudio.fields` (``nerq_dep``,
  ``nerq_errors``, ``nerq_wrong_tag``, ``nerq_span_shift``, ``nerq_missed``, ``nerq_ghost``,
  ``nerq_model_version``) and ``task.meta["ner_quality"]`` in the schema the ML backend writes
  too (:func:`analysis.labelstudio.fields.task_meta`: DEP, category, error counts, span records,
  ghosts, the alerts that flagged the task);
* one Data Manager view per alert, titled ``"Review: <alert name>"``, showing exactly the
  flagged tasks ordered by DEP (descending);
* optionally (``suggest``) one prediction per flagged task with the model's labelling under its
  own ``model_version``;
* with annotator agreement (tasks labelled by two or more annotators): ``nerq_agreement`` on
  each such task, the "Review: annotators disagree" view ordered by agreement (lowest first),
  and on each disagreeing task the majority-vote consensus as a prediction
  (``model_version`` ``nerq-consensus``, score = the task's agreement) that a reviewer can
  accept; ties are left out of it and counted in the view's alert.

:func:`pending_updates` keeps only the task updates that would change something given the
tasks as they are now (a second push of the same analysis writes nothing; the write time is
ignored).  The HTTP calls are made by ``ls_backend.commands.push`` through
:mod:`analysis.labelstudio` — the only package that talks to Label Studio.  Human annotations
are never part of a plan.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.errors import KINDS
from analysis.formats.ls_json import regions
from analysis.labelstudio import fields as lsf
from analysis.labelstudio.records import task_span_records

__all__ = ["TaskUpdate", "ViewPlan", "PredictionPlan", "PushPlan", "plan_push", "pending_updates",
           "view_changes", "META_KEY", "DEP_ORDERING"]

META_KEY: str = lsf.META_KEY
#: Data Manager ordering of the review views: highest DEP first
DEP_ORDERING: tuple[str, ...] = tuple(lsf.DEP_ORDERING)


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
            "views": [{"title": v.title, "task_ids": list(v.task_ids),
                       "ordering": list(v.ordering)} for v in self.views],
            "predictions": [{"task_id": p.task_id, "model_version": p.model_version,
                             "n_regions": len(p.result), "score": p.score}
                            for p in self.predictions],
        }


def _data_fields(dep: float | None, counts: dict[str, int] | None, version: str) -> dict[str, Any]:
    """The ``task.data`` fields (:func:`analysis.labelstudio.fields.task_fields` when complete)."""
    if dep is not None and counts is not None:
        return dict(lsf.task_fields(dep, counts, version))
    data: dict[str, Any] = {lsf.MODEL_VERSION: version}
    if dep is not None:
        data[lsf.DEP] = dep
    if counts is not None:
        data[lsf.ERRORS] = int(sum(v for k, v in counts.items() if k != "correct"))
        for k, f in lsf.KIND_FIELDS.items():
            data[f] = int(counts.get(k, 0))
    return data


def _round(x: float | None) -> float | None:
    if x is None or not math.isfinite(float(x)):
        return None
    return round(float(x), 4)


def _updates(analysis: Any, model_version: str, flagged_by: Mapping[int, list[str]]
             ) -> list[TaskUpdate]:
    corpus, comp, dep = analysis.corpus, analysis.comparison, analysis.dep
    ids = np.asarray(analysis.ids, dtype=np.int64)
    task_dep = analysis.task_dep
    errs = analysis.task_errors
    records = task_span_records(
        corpus, comp.alignment, comp.pred_chars,
        gold_dep=None if dep is None else dep.gold_span_dep,
        gold_suspect=None if dep is None else dep.gold_span_suspect,
        pred_dep=None if dep is None else dep.pred_dep) if comp is not None else {}
    category = None if dep is None else dep.category
    dep_source = None if analysis.metrics.dep is None else analysis.metrics.dep.source
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    out = []
    ag = analysis.agreement
    agree = {} if ag is None else {int(t): _round(v) for t, v in
                                   zip(ag.task_ids, ag.task_agreement.tolist()) if t is not None}
    for i in range(corpus.n_tasks):
        tid = int(ids[i])
        d = None if task_dep is None else _round(task_dep[i])
        row = None if errs is None else {k: int(v) for k, v in zip(KINDS, errs[i].tolist())}
        spans, ghosts = records.get(i, ([], []))
        meta = lsf.task_meta(
            source="push", model_version=model_version, dep=d, dep_source=dep_source,
            category=None if category is None else category[i], errors=row, spans=spans,
            ghosts=ghosts, alerts=sorted(flagged_by.get(tid, [])), annotation_id=None,
            uncertainty=None, confidence=None, written_at=now)
        data = _data_fields(d, row, model_version)
        if agree.get(tid) is not None:
            data[lsf.AGREEMENT] = agree[tid]
        out.append(TaskUpdate(tid, data, meta))
    return out


def _consensus_predictions(analysis: Any, dataset: Any, disagreeing: Iterable[int]
                           ) -> list[PredictionPlan]:
    """The majority-vote labelling of each disagreeing task (:mod:`analysis.agreement`)."""
    ag = analysis.agreement
    want = set(disagreeing)
    from_name = getattr(dataset, "from_name", "label")
    to_name = getattr(dataset, "to_name", "text")
    texts = {int(t): i for i, t in enumerate(np.asarray(analysis.ids).tolist())}
    out = []
    for tid, value, cons in zip(ag.task_ids, ag.task_agreement.tolist(), ag.task_consensus):
        if tid is None or int(tid) not in want or int(tid) not in texts:
            continue
        text = analysis.corpus.texts[texts[int(tid)]]
        result = regions(text, list(cons.spans), from_name=from_name, to_name=to_name,
                         id_prefix=f"nerqc{tid}_")
        out.append(PredictionPlan(int(tid), result, _round(value), lsf.CONSENSUS_VERSION))
    return out


def _suggestions(analysis: Any, dataset: Any, flagged: Iterable[int], version: str
                 ) -> list[PredictionPlan]:
    comp = analysis.comparison
    if comp is None or comp.source != "model" or dataset is None:
        raise ValueError("--suggest needs model predictions (--probs or --model)")
    pos = {int(t): i for i, t in enumerate(np.asarray(analysis.ids).tolist())}
    al, chars, conf = comp.alignment, comp.pred_chars, comp.pred_conf
    bounds = np.searchsorted(al.pred.task, np.arange(analysis.corpus.n_tasks + 1))
    from analysis.spans import Span

    out = []
    for tid in sorted(flagged):
        if tid not in pos:
            continue
        i = pos[tid]
        rows = list(range(int(bounds[i]), int(bounds[i + 1])))
        spans = [Span(int(chars.start[r]), int(chars.end[r]), al.labels[int(al.pred.label[r])])
                 for r in rows]
        sc = [float(conf[r]) for r in rows]
        result = regions(analysis.corpus.texts[i], spans, from_name=dataset.from_name,
                         to_name=dataset.to_name, scores=sc, id_prefix=f"nerq{tid}_")
        finite = [x for x in sc if math.isfinite(x)]
        out.append(PredictionPlan(tid, result, float(min(finite)) if finite else None, version))
    return out


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
    analysis : analysis.review.Analysis over Label Studio tasks (ids are task ids)
    model_version : written to ``nerq_model_version`` and the meta
    dataset : the analysed Dataset; needed for ``suggest`` (from_name / to_name)
    suggest : add the model's labelling of each flagged task as a prediction
    suggest_version : its ``model_version`` (default ``"<model_version>-suggest"``)
    """
    if getattr(analysis, "is_conll", False):
        raise ValueError("push needs Label Studio tasks (task ids); this analysis is of a CoNLL "
                         "file")
    flagged_by: dict[int, list[str]] = {}
    for a in analysis.alerts:
        for t in a.task_ids:
            flagged_by.setdefault(int(t), []).append(a.name)
    plan = PushPlan(updates=_updates(analysis, model_version, flagged_by))
    dep = analysis.task_dep
    pos = {int(t): i for i, t in enumerate(np.asarray(analysis.ids).tolist())}
    for a in analysis.alerts:
        if not a.task_ids:
            continue
        order = list(a.task_ids)
        if a.name == "annotators disagree":  # already ordered by agreement, lowest first
            plan.views.append(ViewPlan(a.view_title, tuple(order), ordering=(
                f"tasks:data.{lsf.AGREEMENT}",), alert=a.name))
            plan.predictions.extend(_consensus_predictions(analysis, dataset, order))
            continue
        if dep is not None:
            order.sort(key=lambda t: (-(np.nan_to_num(dep[pos[t]], nan=-1.0) if t in pos
                                        else -1.0), t))
        plan.views.append(ViewPlan(a.view_title, tuple(int(t) for t in order), alert=a.name))
    if suggest:
        plan.predictions.extend(_suggestions(analysis, dataset, flagged_by,
                                             suggest_version or f"{model_version}-suggest"))
    return plan


def _strip_volatile(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    return {k: v for k, v in (meta or {}).items() if k not in lsf.VOLATILE_META}


def _same_meta(have: Mapping[str, Any] | None, want: Mapping[str, Any]) -> bool:
    """Whether a write of ``want`` would change ``have`` (similar spans an earlier write
    found are kept, see :func:`analysis.labelstudio.records.keep_similar`)."""
    from analysis.labelstudio.records import keep_similar

    want = {**want, "spans": keep_similar(list(want.get("spans") or []), have)}
    return _strip_volatile(have) == _strip_volatile(want)


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
        if not (same_data and _same_meta(meta, u.meta)):
            out.append(u)
    return out


def view_changes(
    plan_views: Sequence[ViewPlan], current_views: Mapping[str, Sequence[int]]
) -> list[ViewPlan]:
    """Views that are new or whose task list differs (``current_views``: title → task ids)."""
    return [v for v in plan_views
            if v.title not in current_views or list(current_views[v.title]) != list(v.task_ids)]
