"""Turn Label Studio tasks plus model output into predictions and quality scores.

This module is glue: span logic, DEP, error types and the similar-span search live in
:mod:`analysis` and are *called* here.  What it adds is the Label Studio shape of things:

* :func:`prepare_tasks` reads the tasks of a request once (``analysis.formats.from_ls_tasks``
  with per-task rejection: a bad task yields an error naming it; the others are still served);
* :func:`prediction_results` builds the ``/predict`` reply, one item per request task, in
  order: ``{"result": [regions], "score": confidence, "model_version": v}`` with the regions of
  :func:`analysis.formats.regions`.  A task that failed validation gets ``{"error": ...,
  "model_version": v}`` without ``result``: Label Studio stores no prediction for it, so a later
  retrieval tries again.
* :func:`score_tasks` scores annotated tasks against the model — one
  :func:`analysis.dep.compute_dep` over the request's corpus with the model's tag set *and
  scheme*, whose alignment gives the error types — and returns the overlay to write: sortable
  numbers in ``data.nerq_*``, details in ``meta["ner_quality"]``
  (:func:`analysis.labelstudio.fields.task_meta`).  Unannotated tasks get their uncertainty.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from analysis.dataset import Dataset
from analysis.errors import KINDS
from analysis.formats.label_config import LabelConfig
from analysis.labelstudio import fields as lsf
from analysis.spans import TokenSpan

logger = logging.getLogger(__name__)

__all__ = ["Prepared", "prepare_tasks", "run_model", "empty_results",
           "prediction_results", "score_tasks", "Scores", "tagset_of", "provenance"]


@dataclass
class Prepared:
    """Valid tasks of a request as a :class:`analysis.dataset.Dataset`, plus per-task errors.

    Attributes
    ----------
    dataset : the valid tasks, ``dataset.tasks[k].index == k``
    positions : (n_valid,) request position of each dataset task
    errors : request position -> message naming the task and the problem
    n : number of tasks in the request
    """

    dataset: Dataset
    positions: list[int]
    errors: dict[int, str]
    n: int


def _name(i: int, task: Any) -> str:
    tid = task.get("id") if isinstance(task, dict) else None
    return f"task {tid}" if isinstance(tid, int) and not isinstance(tid, bool) else f"task #{i}"


def _check_task(i: int, task: Any, value_key: str, max_chars: int) -> str | None:
    """Request-level checks before reading (shape, id, text size)."""
    name = _name(i, task)
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
        return f"{name}: text has {len(text)} characters, more than MAX_TEXT_CHARS={max_chars}"
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:  # a lone surrogate: no tokenizer can take it
        return (f"{name}: text is not valid Unicode (lone surrogate "
                f"U+{ord(text[exc.start]):04X} at character {exc.start})")
    if task.get("annotations") is not None and not isinstance(task["annotations"], list):
        return f"{name}: 'annotations' must be a list"
    return None


def prepare_tasks(tasks: Sequence[Any], config: LabelConfig, *, max_text_chars: int) -> Prepared:
    """Validate request tasks and read the valid ones, each once (``from_ls_tasks``)."""
    from analysis.formats import from_ls_tasks

    errors: dict[int, str] = {}
    good: list[tuple[int, dict[str, Any]]] = []
    for i, t in enumerate(tasks):
        err = _check_task(i, t, config.value_key, max_text_chars)
        if err is None:
            # predictions (possibly of an older config) and drafts play no part here
            good.append((i, {k: v for k, v in t.items() if k not in ("predictions", "drafts")}))
        else:
            errors[i] = err
    rejected: dict[int, str] = {}
    ds = from_ls_tasks([t for _, t in good], label_config=config, warn=False, rejected=rejected)
    for k, msg in rejected.items():
        i = good[k][0]
        errors[i] = msg.replace(f"task #{k}", _name(i, tasks[i]), 1)
    positions = [i for k, (i, _) in enumerate(good) if k not in rejected]
    if ds.corpus.issues:
        logger.warning("%d gold span(s) do not line up with token boundaries; first: %s",
                       len(ds.corpus.issues), ds.corpus.issues[0].message)
    return Prepared(ds, positions, errors, len(tasks))


def _gold_token_spans(prepared: Prepared) -> list[list[TokenSpan]]:
    """Per task, its kept gold spans as token spans (the corpus's one mapping), in corpus order."""
    corpus = prepared.dataset.corpus
    tok = corpus.gold_tokens
    out: list[list[TokenSpan]] = [[] for _ in range(corpus.n_tasks)]
    for t, a, b, lab in zip(tok.task.tolist(), tok.start.tolist(), tok.end.tolist(),
                            tok.label.tolist()):
        out[t].append(TokenSpan(a, b, tok.labels[lab]))
    return out


def run_model(model: Any, prepared: Prepared, *, batch_tokens: int = 4096) -> list[Any]:
    """One batched model pass over every valid task (gold span embeddings when annotated)."""
    ds = prepared.dataset
    if not len(ds.tasks):
        return []
    spans = _gold_token_spans(prepared)
    any_gold = any(spans)
    t0 = time.perf_counter()
    preds = model.predict([t.tokens for t in ds.tasks], spans=spans if any_gold else None,
                          return_embeddings=any_gold, batch_tokens=batch_tokens)
    logger.debug("model pass over %d task(s) in %.3f s", len(ds.tasks), time.perf_counter() - t0)
    return list(preds)


def empty_results(prepared: Prepared, version: str) -> list[dict[str, Any]]:
    """Replies without regions (untrained project); invalid tasks get their error."""
    return [{"model_version": version, "error": prepared.errors[i]} if i in prepared.errors
            else {"result": [], "model_version": version} for i in range(prepared.n)]


def prediction_results(prepared: Prepared, preds: Sequence[Any], config: LabelConfig,
                       version: str) -> list[dict[str, Any]]:
    """The ``/predict`` ``results`` list: one item per request task, in request order."""
    from analysis.formats import regions

    out: list[dict[str, Any] | None] = [None] * prepared.n
    for i, msg in prepared.errors.items():
        out[i] = {"model_version": version, "error": msg}
    for task, pos, pred in zip(prepared.dataset.tasks, prepared.positions, preds):
        out[pos] = {
            "result": regions(task.text, pred.spans, from_name=config.from_name,
                              to_name=config.to_name, scores=pred.span_scores, id_prefix="nerq"),
            "score": round(float(pred.score), 6),
            "model_version": version,
        }
    return [o for o in out if o is not None]


def tagset_of(model: Any) -> Any:
    """The tag set of a runtime model's probabilities: its tags *and* scheme."""
    from analysis.tags import TagSet

    return TagSet(tuple(model.tags), getattr(model, "scheme", "iob2"))


def provenance(fp: Any, prepared: Prepared, *, crossfit: bool,
               last_source: Callable[[int], str | None] | None = None,
               ) -> tuple[np.ndarray | None, str | list[str]]:
    """``(skip, dep_source)`` for :func:`score_tasks` with a model whose training tasks are
    ``fp`` (:class:`analysis.fingerprint.Fingerprints`, None when unknown).

    A task the model trained on *with these very labels* is skipped when the project
    cross-fits (its cross-fitted DEP stands) — unless ``last_source(task_id)`` says the score
    last written on it came from elsewhere (its labels were changed and then changed back:
    that score is stale, the task is scored again); a task whose text it trained on (the
    labels have changed since, or cross-fitting is off) is scored and marked ``in-sample``;
    any other task is ``unseen``.
    """
    if fp is None:
        return None, lsf.DEP_UNSEEN
    from analysis import fingerprint

    corpus = prepared.dataset.corpus
    text = fingerprint.seen(fp, corpus)
    src = [lsf.DEP_IN_SAMPLE if x else lsf.DEP_UNSEEN for x in text.tolist()]
    if not crossfit:
        return None, src
    skip = fingerprint.seen(fp, corpus, labels=True)
    if last_source is not None:
        for i in np.flatnonzero(skip):
            tid = prepared.dataset.tasks[i].id
            last = None if tid is None else last_source(tid)
            if last is not None and last != lsf.DEP_CROSSFIT:
                skip[i] = False
    return skip, src


@dataclass
class Scores:
    """What :func:`score_tasks` computed: the overlays to write (keyed by Label Studio task id)
    and the DEP thresholds of this call's tasks (``None`` without annotated tasks)."""

    overlays: dict[int, dict[str, Any]]
    thresholds: Any | None = None


def score_tasks(
    prepared: Prepared,
    preds: Sequence[Any],
    *,
    model: Any,
    version: str,
    index: Any,
    similar_k: int,
    thresholds: Mapping[str, Any] | None | Literal["fit"] = None,
    dep_probs: Sequence[np.ndarray | None] | None = None,
    dep_source: str | Sequence[str] = lsf.DEP_UNSEEN,
    annotated_only: bool = False,
    skip: np.ndarray | None = None,
) -> Scores:
    """Overlays ``{"data": {...}, "meta": {...}}`` to write, keyed by Label Studio task id.

    Annotated tasks: task DEP, per-span DEP, suspected error and error type, error counts vs
    the model's prediction, similar spans with another gold label.  Unannotated tasks: the
    model's uncertainty (normalised entropy).  Tasks without an id are skipped.

    ``thresholds`` decides the ``category`` written: ``"fit"`` — the thresholds fitted on these
    tasks (a whole project after a training); a mapping ``{"easy", "mislabeled"}`` — the
    project's stored thresholds (live scoring); ``None`` — no category.

    ``dep_probs``: per task, the probabilities DEP (and the error types) are computed from
    instead of ``preds[k].probs`` — the out-of-fold probabilities of a cross-fit, so no
    annotated task is scored by a model that trained on it; ``dep_source`` names where they
    came from (written to the meta; one value, or one per task).  ``annotated_only``: no
    overlays for unannotated tasks.  ``skip``: (n_tasks,) bool, annotated tasks to leave
    alone (the serving model trained on them as they are: their cross-fitted DEP stands).
    """
    from analysis.dep import compute_dep
    from analysis.labelstudio.records import task_span_records
    from analysis.probs import ModelOutput

    from .index import similar_spans

    ds = prepared.dataset
    corpus = ds.corpus
    out: dict[int, dict[str, Any]] = {}
    for k, t in enumerate(ds.tasks):
        if t.id is not None and t.gold is None and not annotated_only:
            out[t.id] = {"data": {lsf.UNCERTAINTY: round(float(preds[k].entropy), 6),
                                  lsf.MODEL_VERSION: version}}
    ann = [k for k, t in enumerate(ds.tasks) if t.gold is not None and t.id is not None
           and (skip is None or not skip[k])]
    if not ann:
        return Scores(out)
    if dep_probs is not None and len(dep_probs) != len(preds):
        raise ValueError(f"dep_probs has {len(dep_probs)} entries for {len(preds)} tasks")
    probs = [np.asarray(p.probs if dep_probs is None or dep_probs[k] is None else dep_probs[k],
                        dtype=np.float32) for k, p in enumerate(preds)]
    output = ModelOutput.from_arrays(probs, tagset_of(model))
    dep = compute_dep(corpus, output)
    assert dep.alignment is not None and dep.pred_chars is not None  # set by compute_dep
    records = task_span_records(corpus, dep.alignment, dep.pred_chars,
                                gold_dep=dep.gold_span_dep, gold_suspect=dep.gold_span_suspect,
                                pred_dep=dep.pred_dep, tasks=ann)
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    if thresholds == "fit":
        cats = dep.thresholds.categorize(dep.task_dep)
    elif thresholds is not None:
        from analysis.dep import Thresholds

        cats = Thresholds(float(thresholds["easy"]), float(thresholds["mislabeled"]),
                          str(thresholds.get("method", "project"))).categorize(dep.task_dep)
    else:
        cats = np.full(len(ds.tasks), None, dtype=object)
    for k in ann:
        t, p = ds.tasks[k], preds[k]
        assert t.id is not None  # ann holds tasks with ids only
        spans, ghosts = records[k]
        similar_spans(index, spans, getattr(p, "extra_embeddings", None), t.id, similar_k)
        d = float(dep.task_dep[k]) if np.isfinite(dep.task_dep[k]) else 0.0
        counts = {kind: int(c) for kind, c in zip(KINDS, dep.task_errors[k].tolist())}
        data = dict(lsf.task_fields(d, counts, version))
        data[lsf.UNCERTAINTY] = round(float(p.entropy), 6)
        meta = lsf.task_meta(
            source="backend", model_version=version, dep=round(d, 6),
            dep_source=dep_source if isinstance(dep_source, str) else dep_source[k],
            category=cats[k],
            errors=counts, spans=spans,
            ghosts=ghosts, alerts=None, annotation_id=t.annotation_id,
            uncertainty=round(float(p.entropy), 6), confidence=round(float(p.score), 6),
            written_at=now)
        out[t.id] = {"data": data, "meta": {lsf.META_KEY: meta}}
    return Scores(out, dep.thresholds)
