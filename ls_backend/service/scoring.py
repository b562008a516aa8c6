"""Turn Label Studio tasks plus model output into predictions and quality scores.

This module is glue: span logic, DEP, error types and the similar-span search all live in
:mod:`analysis` and are *called* here (``analysis.formats.from_ls_tasks``, ``analysis.dataset``,
``analysis.errors.align``, ``analysis.dep.compute_dep``, ``analysis.similarity.SpanIndex``,
``analysis.labelstudio.fields``).  What it adds is the Label Studio shape of things:

* :func:`prepare_tasks` validates each task of a request on its own (a bad task yields a
  per-task error naming it; the others are still served);
* :func:`prediction_results` builds the ``/predict`` reply, one item per request task, in order:
  ``{"result": [regions], "score": confidence, "model_version": v}``.  Regions carry the config's
  ``from_name``/``to_name``, exact half-open character offsets ``[start, end)`` (Python code
  points, as Label Studio counts), the covered text, the label and a per-region score.  A task that
  failed validation gets ``{"error": ..., "model_version": v}`` without ``result``: Label Studio
  stores no prediction for it, so a later retrieval tries again.
* :func:`score_tasks` scores annotated tasks against the model (task DEP, per-span DEP, error
  type vs the model's argmax prediction, top-k similar spans from other tasks whose gold label
  differs) and returns the overlay to write: sortable numbers in ``data.nerq_*``, details in
  ``meta["ner_quality"]``.  Unannotated tasks get their uncertainty (``nerq_uncertainty``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analysis.spans import Span, SpanTable, TokenSpan, char_to_token_spans

logger = logging.getLogger(__name__)

__all__ = [
    "Prepared",
    "TaskError",
    "prepare_tasks",
    "run_model",
    "empty_results",
    "prediction_results",
    "regions",
    "score_tasks",
    "update_index",
    "remove_tasks",
    "save_index",
]

from analysis.labelstudio.fields import UNCERTAINTY  # noqa: E402  (re-exported for callers)

# faiss indexes are not safe for concurrent add + search: every index operation holds this.
_INDEX_LOCK = threading.RLock()


class TaskError(ValueError):
    """Every task of a request is invalid (HTTP 422); the message names each task."""


@dataclass
class Prepared:
    """Valid tasks of a request as a :class:`analysis.dataset.Dataset`, plus per-task errors.

    Attributes
    ----------
    dataset : the valid tasks, ``dataset.tasks[k].index == k``
    positions : (n_valid,) request position of each dataset task
    errors : request position -> message naming the task and the problem
    n : number of tasks in the request
    token_spans : per dataset task, the gold spans as token spans (``[]`` when unannotated)
    gold_spans : per dataset task, the gold character spans matching ``token_spans`` one to one
    """

    dataset: Any
    positions: list[int]
    errors: dict[int, str]
    n: int
    token_spans: list[list[TokenSpan]] = field(default_factory=list)
    gold_spans: list[list[Span]] = field(default_factory=list)


def _task_name(i: int, task: Any) -> str:
    tid = task.get("id") if isinstance(task, dict) else None
    return f"task {tid}" if isinstance(tid, int) and not isinstance(tid, bool) else f"task #{i}"


def _check_task(i: int, task: Any, value_key: str, max_chars: int) -> str | None:
    name = _task_name(i, task)
    if not isinstance(task, dict):
        return f"{name}: expected a JSON object, got {type(task).__name__}"
    tid = task.get("id")
    if tid is not None and (not isinstance(tid, int) or isinstance(tid, bool)):
        return f"{name}: 'id' must be an integer, got {tid!r}"
    data = task.get("data")
    if not isinstance(data, dict):
        return f"{name}: 'data' is missing or not an object"
    if value_key not in data:
        return (f"{name}: no {value_key!r} in data (the label config reads ${value_key}; data "
                f"keys: {sorted(data)[:10]})")
    text = data[value_key]
    if not isinstance(text, str):
        return f"{name}: data[{value_key!r}] must be a string, got {type(text).__name__}"
    if len(text) > max_chars:
        return (f"{name}: text has {len(text)} characters, more than MAX_TEXT_CHARS={max_chars}")
    for key in ("annotations",):
        if key in task and task[key] is not None and not isinstance(task[key], list):
            return f"{name}: {key!r} must be a list"
    return None


def _strip(task: dict[str, Any]) -> dict[str, Any]:
    # Predictions (possibly from an older label config) and drafts play no part in scoring.
    return {k: v for k, v in task.items() if k not in ("predictions", "drafts")}


def prepare_tasks(tasks: Sequence[Any], config: Any, *, max_text_chars: int) -> Prepared:
    """Validate request tasks one by one and convert the valid ones with ``from_ls_tasks``."""
    from analysis.dataset import Dataset
    from analysis.formats import from_ls_tasks

    errors: dict[int, str] = {}
    good: list[tuple[int, dict[str, Any]]] = []
    for i, t in enumerate(tasks):
        err = _check_task(i, t, config.value_key, max_text_chars)
        if err is None:
            good.append((i, _strip(t)))
        else:
            errors[i] = err
    ds = None
    if good:
        try:
            ds = from_ls_tasks([t for _, t in good], label_config=config)
        except (ValueError, TypeError, KeyError):
            # isolate the offending task(s), then convert the rest in one pass
            keep = []
            for i, t in good:
                try:
                    from_ls_tasks([t], label_config=config)
                    keep.append((i, t))
                except (ValueError, TypeError, KeyError) as exc:
                    msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    name = _task_name(i, t)
                    errors[i] = msg if name in msg else f"{name}: {msg}"
            good = keep
            ds = from_ls_tasks([t for _, t in good], label_config=config) if good else None
    if ds is None:
        ds = Dataset(tasks=[], labels=tuple(config.labels), from_name=config.from_name,
                     to_name=config.to_name)
    tok_spans: list[list[TokenSpan]] = []
    gold_spans: list[list[Span]] = []
    for t in ds.tasks:
        if not t.gold:
            tok_spans.append([])
            gold_spans.append([])
            continue
        ts, report = char_to_token_spans(t.tokens, t.gold, where=t.name, warn=False)
        if report.count:
            logger.warning("%s: %d gold span(s) do not line up with token boundaries",
                           t.name, report.count)
        empty = set(report.empty)
        tok_spans.append(ts)
        gold_spans.append([s for s in t.gold if s not in empty])
    return Prepared(ds, [i for i, _ in good], errors, len(tasks), tok_spans, gold_spans)


def run_model(model: Any, prepared: Prepared, *, batch_tokens: int = 4096) -> list[Any]:
    """One batched model pass over every valid task (gold span embeddings when annotated)."""
    ds = prepared.dataset
    if not ds.tasks:
        return []
    any_gold = any(prepared.token_spans)
    t0 = time.perf_counter()
    preds = model.predict(
        [t.tokens for t in ds.tasks],
        spans=prepared.token_spans if any_gold else None,
        return_embeddings=any_gold,
        batch_tokens=batch_tokens,
    )
    logger.debug("model pass over %d task(s) in %.3f s", len(ds.tasks), time.perf_counter() - t0)
    return list(preds)


def regions(text: str, spans: Sequence[Span], scores: Any, config: Any) -> list[dict[str, Any]]:
    """Label Studio ``labels`` regions for character spans ``[start, end)`` of ``text``."""
    sc = np.asarray(scores, dtype=np.float64).reshape(-1) if len(spans) else np.zeros(0)
    out = []
    for k, s in enumerate(spans):
        out.append({
            "id": f"nerq{k}",
            "from_name": config.from_name,
            "to_name": config.to_name,
            "type": "labels",
            "value": {"start": int(s.start), "end": int(s.end), "text": text[s.start:s.end],
                      "labels": [s.label]},
            "score": round(float(sc[k]), 6) if k < sc.shape[0] else None,
        })
    return out


def empty_results(prepared: Prepared, version: str) -> list[dict[str, Any]]:
    """Replies without regions (untrained project); invalid tasks get their error."""
    out: list[dict[str, Any]] = []
    for i in range(prepared.n):
        if i in prepared.errors:
            out.append({"model_version": version, "error": prepared.errors[i]})
        else:
            out.append({"result": [], "model_version": version})
    return out


def prediction_results(
    prepared: Prepared, preds: Sequence[Any], config: Any, version: str
) -> list[dict[str, Any]]:
    """The ``/predict`` ``results`` list: one item per request task, in request order."""
    out: list[dict[str, Any] | None] = [None] * prepared.n
    for i, msg in prepared.errors.items():
        out[i] = {"model_version": version, "error": msg}
    for task, pos, pred in zip(prepared.dataset.tasks, prepared.positions, preds):
        out[pos] = {
            "result": regions(task.text, pred.spans, pred.span_scores, config),
            "score": round(float(pred.score), 6),
            "model_version": version,
        }
    return [o for o in out if o is not None]


# -- similar-span index --------------------------------------------------------------------


def _gold_rows(prepared: Prepared, preds: Sequence[Any]) -> tuple[np.ndarray | None, dict]:
    vecs: list[np.ndarray] = []
    meta: dict[str, list[Any]] = {
        "task": [], "task_id": [], "start": [], "end": [], "text": [], "label": []
    }
    for t, spans, pred in zip(prepared.dataset.tasks, prepared.gold_spans, preds):
        emb = getattr(pred, "extra_embeddings", None)
        if t.id is None or not spans or emb is None or len(emb) != len(spans):
            continue
        vecs.append(np.asarray(emb, dtype=np.float32))
        for s in spans:
            meta["task"].append(t.id)
            meta["task_id"].append(t.id)
            meta["start"].append(s.start)
            meta["end"].append(s.end)
            meta["text"].append(t.text[s.start:s.end])
            meta["label"].append(s.label)
    if not vecs:
        return None, meta
    return np.concatenate(vecs, axis=0), meta


def remove_tasks(index: Any, task_ids: Sequence[int]) -> int:
    """Remove every span of ``task_ids`` from ``index``; returns the number removed."""
    if index is None or len(index) == 0 or not task_ids:
        return 0
    with _INDEX_LOCK:
        meta = index.meta
        ids = meta.index[meta["task_id"].isin(list(task_ids))].to_numpy(dtype=np.int64)
        return int(index.remove(ids))


def update_index(index: Any, prepared: Prepared, preds: Sequence[Any]) -> Any:
    """Replace the gold spans of the prepared annotated tasks in ``index`` (``None``: build one).

    Returns the index (a new one when ``index`` was ``None`` and there are spans, else
    ``index`` unchanged).
    """
    from analysis.similarity import SpanIndex

    vecs, meta = _gold_rows(prepared, preds)
    tids = [t.id for t, g in zip(prepared.dataset.tasks, prepared.gold_spans)
            if t.id is not None and t.gold is not None]
    with _INDEX_LOCK:
        if index is None:
            if vecs is None:
                return None
            return SpanIndex.build(vecs, meta)
        remove_tasks(index, tids)
        if vecs is not None:
            index.add(vecs, meta)
        return index


def save_index(index: Any, directory: Path) -> None:
    """Persist ``index`` atomically enough: write a sibling dir, then swap it in."""
    if index is None:
        return
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    with _INDEX_LOCK:
        index.save(tmp)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            _rmtree(old)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        _rmtree(old)


def _rmtree(p: Path) -> None:
    import shutil

    shutil.rmtree(p, ignore_errors=True)


def _similar(index: Any, vecs: np.ndarray, task_id: int | None, labels: Sequence[str],
             k: int) -> list[list[dict[str, Any]]]:
    if index is None or k <= 0 or len(index) == 0 or vecs.shape[0] == 0:
        return [[] for _ in range(vecs.shape[0])]
    with _INDEX_LOCK:
        hits = index.query(vecs, k, exclude_task=task_id, label_differs_from=list(labels))
    out: list[list[dict[str, Any]]] = [[] for _ in range(vecs.shape[0])]
    for row in hits.itertuples(index=False):
        out[int(row.query)].append({
            "task_id": None if row.task_id is None else int(row.task_id),
            "start": int(row.start), "end": int(row.end), "text": row.text,
            "label": row.label, "similarity": round(float(row.similarity), 4),
        })
    return out


# -- scoring -------------------------------------------------------------------------------


def score_tasks(
    prepared: Prepared,
    preds: Sequence[Any],
    *,
    model: Any,
    version: str,
    index: Any,
    similar_k: int,
) -> dict[int, dict[str, Any]]:
    """Overlays ``{"data": {...}, "meta": {...}}`` to write, keyed by Label Studio task id.

    Annotated tasks: task DEP, per-span DEP and error type, error counts vs the model's
    prediction, similar spans with another gold label.  Unannotated tasks: the model's
    uncertainty (normalised entropy) and confidence.  Tasks without an id are skipped.
    """
    from analysis.labelstudio import fields as lsfields

    ds = prepared.dataset
    out: dict[int, dict[str, Any]] = {}
    ann = [k for k, t in enumerate(ds.tasks) if t.gold is not None and t.id is not None]
    now = time.time()
    for k, t in enumerate(ds.tasks):
        if t.id is None or t.gold is not None:
            continue
        p = preds[k]
        out[t.id] = {"data": {
            UNCERTAINTY: round(float(p.entropy), 6),
            lsfields.MODEL_VERSION: version,
        }}
    if not ann:
        return out
    details = _score_annotated(ds, ann, preds, model=model, index=index, similar_k=similar_k,
                               gold_spans=prepared.gold_spans)
    for k, d in zip(ann, details):
        t = ds.tasks[k]
        if not np.isfinite(d["dep"]):  # nothing to score (e.g. an annotated empty text)
            d["dep"] = 0.0
        data = dict(lsfields.task_fields(d["dep"], d["counts"], version))
        data[UNCERTAINTY] = round(float(preds[k].entropy), 6)
        meta = {**d, "model_version": version, "scored_at": now,
                "annotation_id": t.annotation_id,
                "uncertainty": round(float(preds[k].entropy), 6),
                "confidence": round(float(preds[k].score), 6)}
        out[t.id] = {"data": data, "meta": {lsfields.META_KEY: meta}}
    return out


def _score_annotated(ds: Any, ann: list[int], preds: Sequence[Any], *, model: Any, index: Any,
                     similar_k: int, gold_spans: list[list[Span]]) -> list[dict[str, Any]]:
    """DEP, error types and similar spans of the annotated tasks ``ann`` of ``ds``."""
    from analysis.dataset import Dataset
    from analysis.dep import compute_dep
    from analysis.errors import KINDS, align

    sub = Dataset(tasks=[_reindex(ds.tasks[k], j) for j, k in enumerate(ann)], labels=ds.labels,
                  from_name=ds.from_name, to_name=ds.to_name)
    probs = [np.asarray(preds[k].probs, dtype=np.float32) for k in ann]
    dep = compute_dep(sub, probs, tags=list(model.tags))
    gold = sub.gold_table()
    pred = SpanTable.from_spans([list(preds[k].spans) for k in ann], labels=sub.labels)
    al = align(gold, pred, n_tasks=len(ann))
    kinds = np.asarray(KINDS)
    pred_of: dict[int, list[int]] = {}  # gold row -> overlapping pred rows (built once)
    for g, p in zip(al.pair_gold.tolist(), al.pair_pred.tolist()):
        pred_of.setdefault(g, []).append(p)
    gold_dep = _gold_span_deps(dep)
    out = []
    g_task = gold.task
    p_task = pred.task
    for j, k in enumerate(ann):
        t = sub.tasks[j]
        gi = np.flatnonzero(g_task == j)
        pi = np.flatnonzero(p_task == j)
        counts = {kind: int(c) for kind, c in zip(KINDS, al.per_task[j])}
        span_dep = [gold_dep.get((j, int(gold.start[g]), int(gold.end[g])), (None, None))
                    for g in gi]
        # similar spans: embeddings follow prepared.gold_spans order == sorted gold order
        emb = getattr(preds[k], "extra_embeddings", None)
        gs = gold_spans[k]
        sims: list[list[dict[str, Any]]] = [[] for _ in gi]
        if emb is not None and len(emb) == len(gs) and len(gs):
            pos = {(s.start, s.end): r for r, s in enumerate(gs)}
            rows = [pos.get((int(gold.start[g]), int(gold.end[g]))) for g in gi]
            have = [r for r in rows if r is not None]
            found = _similar(index, np.asarray(emb, dtype=np.float32)[have], t.id,
                             [gs[r].label for r in have], similar_k)
            it = iter(found)
            sims = [next(it) if r is not None else [] for r in rows]
        spans = []
        for n, g in enumerate(gi):
            s, e = int(gold.start[g]), int(gold.end[g])
            spans.append({
                "start": s, "end": e, "text": t.text[s:e], "label": gold.labels[gold.label[g]],
                "dep": span_dep[n][0], "suspect": span_dep[n][1],
                "error": str(kinds[al.gold_kind[g]]),
                "predicted": [_span_json(pred, p, t.text) for p in pred_of.get(int(g), [])],
                "similar": sims[n],
            })
        ghosts = [_span_json(pred, p, t.text) for p in pi if KINDS[al.pred_kind[p]] == "ghost"]
        out.append({"dep": float(_task_dep(dep, j)), "counts": counts, "spans": spans,
                    "ghosts": ghosts})
    return out


def _span_json(table: SpanTable, i: int, text: str) -> dict[str, Any]:
    s, e = int(table.start[i]), int(table.end[i])
    return {"start": s, "end": e, "text": text[s:e], "label": table.labels[table.label[i]]}


def _reindex(task: Any, j: int) -> Any:
    import dataclasses

    return dataclasses.replace(task, index=j)


def _task_dep(dep: Any, j: int) -> float:
    return float(np.asarray(dep.task_dep)[j])


def _gold_span_deps(dep: Any) -> dict[tuple[int, int, int], tuple[float | None, str | None]]:
    """``(task, start, end) -> (DEP, suspected error class)`` of every gold span (one pass)."""
    df = dep.spans
    rows = df[df["gold_label"].notna()]
    sus = rows["suspect"].tolist() if "suspect" in rows else [None] * len(rows)
    return {
        (int(t), int(s), int(e)): (None if d != d else round(float(d), 6),
                                   None if su is None else str(su))
        for t, s, e, d, su in zip(rows["task"].tolist(), rows["start"].tolist(),
                                  rows["end"].tolist(), rows["dep"].tolist(), sus)
    }
