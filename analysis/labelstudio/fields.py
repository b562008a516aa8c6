"""Names of the Label Studio task fields ner-quality writes (shared by the backend and ``push``).

``task.data`` holds what a data lead must filter or sort on in the Data Manager (it has no
``meta`` column; ``meta`` is only substring-searchable), every key prefixed ``nerq_`` so that
ner-quality never touches an imported field.  ``task.meta["ner_quality"]`` holds the details
in one versioned schema (:func:`task_meta`, :data:`META_FIELDS`): DEP and its category, error
counts, every gold span with its DEP, suspected error, error type, the overlapping predictions
and similar spans, the model's extra spans (ghosts), the alerts that flagged the task, who wrote
it and when.  Human annotations are never written.

Both writers — the ML backend's live scoring and ``ner-quality push`` — build the ``data``
overlay with :func:`task_fields` and the meta with :func:`task_meta`, so a task scored by the
backend and the same task pushed carry the same keys.

>>> fields = task_fields(0.8, {"correct": 3, "wrong_tag": 1, "ghost": 2}, "v1")
>>> fields[DEP], fields[ERRORS], fields[WRONG_TAG], fields[MISSED], fields[MODEL_VERSION]
(0.8, 3, 1, 0, 'v1')
>>> sorted(fields) == sorted(DATA_FIELDS)
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

__all__ = [
    "DATA_PREFIX",
    "DEP",
    "ERRORS",
    "WRONG_TAG",
    "SPAN_SHIFT",
    "MISSED",
    "GHOST",
    "MODEL_VERSION",
    "AGREEMENT",
    "CONSENSUS_VERSION",
    "META_KEY",
    "ERROR_KINDS",
    "KIND_FIELDS",
    "DATA_FIELDS",
    "DEP_ORDERING",
    "task_fields",
    "check_data_keys",
    "check_meta_keys",
    "META_SCHEMA",
    "META_FIELDS",
    "DEP_CROSSFIT",
    "DEP_UNSEEN",
    "DEP_IN_SAMPLE",
    "VOLATILE_META",
    "task_meta",
]

#: every ``task.data`` key ner-quality writes starts with this
DATA_PREFIX = "nerq_"
#: task-level DEP (float in [0, 1]; higher = more likely mislabelled)
DEP = "nerq_dep"
#: number of disagreements (wrong_tag + span_shift + missed + ghost)
ERRORS = "nerq_errors"
WRONG_TAG = "nerq_wrong_tag"
SPAN_SHIFT = "nerq_span_shift"
MISSED = "nerq_missed"
GHOST = "nerq_ghost"
#: model version that produced the fields (str)
MODEL_VERSION = "nerq_model_version"
#: normalised entropy of the model's prediction (0 = certain, 1 = uniform), unannotated tasks
UNCERTAINTY = "nerq_uncertainty"
#: mean pairwise exact span F1 of the task's annotators (tasks labelled by two or more,
#: :mod:`analysis.agreement`); lower = more disagreement
AGREEMENT = "nerq_agreement"
#: ``model_version`` of the consensus labelling offered as a prediction on disagreeing tasks
CONSENSUS_VERSION = "nerq-consensus"
#: the one ``task.meta`` key ner-quality writes (details live under it)
META_KEY = "ner_quality"

#: error kinds counted in the data fields (``analysis.errors.KINDS`` minus ``"correct"``)
ERROR_KINDS: tuple[str, ...] = ("wrong_tag", "span_shift", "missed", "ghost")
#: error kind -> its ``task.data`` field
KIND_FIELDS: Mapping[str, str] = {
    "wrong_tag": WRONG_TAG,
    "span_shift": SPAN_SHIFT,
    "missed": MISSED,
    "ghost": GHOST,
}
#: the fields :func:`task_fields` writes, in this order
DATA_FIELDS: tuple[str, ...] = (DEP, ERRORS, WRONG_TAG, SPAN_SHIFT, MISSED, GHOST, MODEL_VERSION)
#: Data Manager ordering of review views: highest DEP first
DEP_ORDERING: tuple[str, ...] = (f"-tasks:data.{DEP}",)

_KNOWN_COUNT_KEYS = frozenset(ERROR_KINDS) | {"correct"}


def task_fields(dep: float, counts: Mapping[str, int], model_version: str) -> dict[str, Any]:
    """The ``task.data`` overlay for one scored task.

    Parameters
    ----------
    dep : task DEP, a finite number in [0, 1] (numpy scalars accepted)
    counts : error kind -> count; keys from ``("correct", "wrong_tag", "span_shift", "missed",
        "ghost")`` (``"correct"`` is ignored, missing kinds count 0), values non-negative ints
    model_version : non-empty version string of the model that scored the task

    Returns
    -------
    dict with exactly the keys :data:`DATA_FIELDS` (plain ``float`` / ``int`` / ``str`` values,
    JSON-ready).

    Raises
    ------
    ValueError, TypeError : on an out-of-range DEP, an unknown kind, a negative or non-integer
        count, or an empty version.
    """
    try:
        d = float(dep)
    except (TypeError, ValueError):
        raise TypeError(f"dep must be a number, got {type(dep).__name__}: {dep!r}") from None
    if not math.isfinite(d) or not 0.0 <= d <= 1.0:
        raise ValueError(f"dep must be a finite number in [0, 1], got {dep!r}")
    if not isinstance(counts, Mapping):
        raise TypeError(f"counts must be a mapping kind -> int, got {type(counts).__name__}")
    unknown = sorted(set(counts) - _KNOWN_COUNT_KEYS)
    if unknown:
        raise ValueError(
            f"counts has unknown error kind(s) {unknown}; allowed: {sorted(_KNOWN_COUNT_KEYS)}"
        )
    out_counts: dict[str, int] = {}
    for kind in ERROR_KINDS:
        v = counts.get(kind, 0)
        if isinstance(v, bool) or not hasattr(v, "__index__"):
            raise TypeError(f"counts[{kind!r}] must be an int, got {type(v).__name__}: {v!r}")
        n = int(v)
        if n < 0:
            raise ValueError(f"counts[{kind!r}] must be >= 0, got {n}")
        out_counts[kind] = n
    if not isinstance(model_version, str) or not model_version:
        raise ValueError(f"model_version must be a non-empty string, got {model_version!r}")
    fields: dict[str, Any] = {DEP: d, ERRORS: sum(out_counts.values())}
    for kind in ERROR_KINDS:
        fields[KIND_FIELDS[kind]] = out_counts[kind]
    fields[MODEL_VERSION] = model_version
    return fields


def check_data_keys(data: Mapping[str, Any], *, where: str = "") -> None:
    """Raise ``ValueError`` unless every key of a ``task.data`` overlay starts with ``nerq_``.

    >>> check_data_keys({"nerq_dep": 0.1})
    >>> check_data_keys({"text": "x"}, where="task 3")
    Traceback (most recent call last):
    ...
    ValueError: task 3: data key 'text' is not ner-quality's (must start with 'nerq_'); ...
    """
    if not isinstance(data, Mapping):
        pre = f"{where}: " if where else ""
        raise TypeError(f"{pre}data must be a dict, got {type(data).__name__}")
    for key in data:
        if not isinstance(key, str) or not key.startswith(DATA_PREFIX) or key == DATA_PREFIX:
            raise ValueError(
                f"{where + ': ' if where else ''}data key {key!r} is not ner-quality's (must start "
                f"with {DATA_PREFIX!r}); refusing to overwrite an imported field"
            )


def check_meta_keys(meta: Mapping[str, Any], *, where: str = "") -> None:
    """Raise ``ValueError`` unless a ``task.meta`` overlay is ``{"ner_quality": ...}`` only.

    >>> check_meta_keys({"ner_quality": {"dep": 0.5}})
    >>> check_meta_keys({"split": "dev"})
    Traceback (most recent call last):
    ...
    ValueError: meta key 'split' is not ner-quality's (only 'ner_quality' may be written)
    """
    if not isinstance(meta, Mapping):
        pre = f"{where}: " if where else ""
        raise TypeError(f"{pre}meta must be a dict, got {type(meta).__name__}")
    for key in meta:
        if key != META_KEY:
            raise ValueError(
                f"{where + ': ' if where else ''}meta key {key!r} is not ner-quality's "
                f"(only {META_KEY!r} may be written)"
            )


#: version of the ``meta["ner_quality"]`` schema (:func:`task_meta`)
META_SCHEMA = 3
#: the keys of ``meta["ner_quality"]``, in this order (None where a writer cannot know a value)
META_FIELDS: tuple[str, ...] = (
    "schema", "source", "model_version", "dep", "dep_source", "category", "errors", "spans",
    "ghosts",
    "alerts", "annotation_id", "uncertainty", "confidence", "written_at",
)
#: ``dep_source`` values of the backend (:func:`task_meta`)
DEP_CROSSFIT, DEP_UNSEEN, DEP_IN_SAMPLE = "cross-fit", "unseen", "in-sample"
#: meta keys that change on every write (ignored when deciding whether a write is needed)
VOLATILE_META = frozenset({"written_at"})


def task_meta(
    *,
    source: str,
    model_version: str,
    dep: float | None,
    dep_source: str | None,
    category: str | None,
    errors: Mapping[str, int] | None,
    spans: list[dict[str, Any]],
    ghosts: list[dict[str, Any]],
    alerts: list[str] | None,
    annotation_id: int | None,
    uncertainty: float | None,
    confidence: float | None,
    written_at: str,
) -> dict[str, Any]:
    """The ``task.meta["ner_quality"]`` value (schema :data:`META_SCHEMA`).

    Parameters
    ----------
    source : ``"backend"`` (live scoring) or ``"push"`` (``ner-quality push``)
    model_version : the model whose probabilities scored the task
    dep, category : task DEP and its category (``easy`` / ``hard`` / ``mislabeled``)
    dep_source : what the DEP probabilities came from: :data:`DEP_CROSSFIT` (a fold model
        that did not train on the task), :data:`DEP_UNSEEN` (the serving model, trained before
        this annotation), :data:`DEP_IN_SAMPLE` (a model trained on these labels:
        ``TRAIN_FOLDS=0``), or the analysis's own description (``push``)
    errors : counts of every kind of :data:`analysis.errors.KINDS` against the model
    spans : one record per gold span: ``start, end, text, label, dep, suspect, error,
        predicted`` (overlapping predicted spans) and ``similar`` (spans of other tasks with
        another label; empty when no span index was available)
    ghosts : the model's spans that overlap no gold span: ``start, end, text, label, dep``
    alerts : names of the dataset alerts that flagged the task (None: not analysed)
    annotation_id : the scored annotation
    uncertainty, confidence : normalised entropy / least-confident token of the prediction
    written_at : UTC time of the write (ISO 8601)
    """
    if source not in ("backend", "push"):
        raise ValueError(f"source must be 'backend' or 'push', got {source!r}")
    values = {"schema": META_SCHEMA, "source": source, "model_version": model_version,
              "dep": dep, "dep_source": dep_source, "category": category,
              "errors": None if errors is None else {k: int(v) for k, v in errors.items()},
              "spans": spans, "ghosts": ghosts, "alerts": alerts, "annotation_id": annotation_id,
              "uncertainty": uncertainty, "confidence": confidence, "written_at": written_at}
    return {k: values[k] for k in META_FIELDS}
