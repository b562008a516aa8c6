"""Label Studio JSON: full exports and JSON-MIN rows to a Dataset and back, and the one builder
of Label Studio ``labels`` regions.

A full export is a list of tasks with ``data``, ``annotations``, ``predictions``; JSON-MIN are flat
rows ``{"id", "text", "label": [{start, end, text, labels}], "annotator", ...}``, detected from
the content.  One annotation per task is chosen (:func:`analysis.dataset.choose_annotation`) and
one prediction (:func:`analysis.dataset.choose_prediction`).  CoNLL tasks store their tokens in
``data["tokens"]`` and ``data["text"]`` is the tokens joined by one space; when
``data["tokens"]`` is present it must match the text, otherwise the text is tokenized with
:func:`analysis.spans.tokenize` — so CoNLL -> LS JSON -> CoNLL is byte-identical.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from analysis.corpus import task_name
from analysis.dataset import (
    Dataset,
    Problem,
    Problems,
    Task,
    annotator_of,
    choose_annotation,
    choose_prediction,
)
from analysis.exceptions import DataError
from analysis.formats.json_min import min_row, min_to_full
from analysis.formats.label_config import LabelConfig, as_label_config
from analysis.formats.ls_columns import Reader, TaskColumns, is_labels_region
from analysis.formats.ls_multi import annotation_sets
from analysis.spans import Span, TokenizedText, check_spans, tokenize

__all__ = ["Format", "from_ls_tasks", "to_ls_tasks", "regions", "gc_paused"]

Format = Literal["auto", "conll", "ls-json", "json-min"]
_FORMATS = ("auto", "conll", "ls-json", "json-min")
@contextlib.contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while bulk-building acyclic objects.

    Parsing an export allocates millions of dicts, lists, spans and arrays; each allocation
    burst triggers a collection that walks every live object again — half the load time of
    CoNLL-03 train as LS JSON (``bench/bench_core.py``).  Nothing built here forms reference
    cycles, so collecting afterwards loses nothing.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _full_items(tasks: Sequence[Mapping[str, Any]], format: Format, cfg: LabelConfig | None
                ) -> list[Mapping[str, Any]]:
    """Full-export-shaped tasks (JSON-MIN rows converted), after checking the shape."""
    if format not in _FORMATS or format == "conll":
        raise DataError(f"format must be 'auto', 'ls-json' or 'json-min', got {format!r}")
    if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks must be a list of task dicts, got {type(tasks).__name__}")
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping):
            raise TypeError(f"task #{i}: expected a JSON object, got {type(t).__name__}")
    full = [isinstance(t.get("data"), Mapping) for t in tasks]
    kind = format
    if format == "auto":
        if any(full) and not all(full):
            i = full.index(False)
            raise DataError(f"task #{i}: has no 'data' object while other tasks do (mixed full "
                            "export and JSON-MIN)")
        kind = "ls-json" if all(full) and tasks else "json-min"
    elif format == "ls-json" and not all(full):
        i = full.index(False)
        raise DataError(f"task #{i}: has no 'data' object; is this JSON-MIN? "
                        "(format='json-min')")
    elif format == "json-min" and any(full):
        raise DataError("tasks have a 'data' object: this is a full export, not JSON-MIN")
    if kind == "json-min":
        return list(min_to_full(tasks, cfg)[0])
    return list(tasks)


def _choose(items: Sequence[Mapping[str, Any]], annotator: str | int | None,
            model_version: str | None, warn: bool
            ) -> tuple[list[Mapping[str, Any] | None], list[Mapping[str, Any] | None]]:
    """The annotation and the prediction to use of every task."""
    chosen_ann: list[Mapping[str, Any] | None] = []
    chosen_pred: list[Mapping[str, Any] | None] = []
    id_only = 0
    for it in items:
        anns = it.get("annotations")
        if anns is None:
            anns = it.get("completions")  # pre-1.0 exports
        chosen_ann.append(choose_annotation(anns, annotator=annotator))
        preds = it.get("predictions")
        if preds and not all(isinstance(p, Mapping) for p in preds):
            id_only += 1
            preds = [p for p in preds if isinstance(p, Mapping)]
        chosen_pred.append(choose_prediction(preds, model_version=model_version))
    if id_only and warn:
        warnings.warn(
            f"{id_only} task(s) list predictions as ids only; those were ignored (export with "
            'serialization_options={"predictions": {"only_id": False}})', stacklevel=3)
    return chosen_ann, chosen_pred


def _names(items: Sequence[Mapping[str, Any]], cfg: LabelConfig | None,
           chosen: Sequence[Mapping[str, Any] | None]) -> tuple[str, str, str]:
    """``from_name``, ``to_name`` and the text key: the config's, else read off the regions."""
    if cfg is not None:
        return cfg.from_name, cfg.to_name, cfg.value_key
    pairs: set[tuple[str, str]] = set()
    for src in chosen:
        result = (src or {}).get("result")
        for reg in result if isinstance(result, list) else ():
            if is_labels_region(reg):
                pairs.add((str(reg.get("from_name")), str(reg.get("to_name"))))
    if len(pairs) > 1:
        raise DataError(f"regions use several (from_name, to_name) pairs {sorted(pairs)}; pass a "
                        "label config to choose one")
    from_name, to_name = next(iter(pairs)) if pairs else ("label", "text")
    value_key = "text"
    if items:
        d0 = items[0]["data"]
        if to_name in d0 and "text" not in d0:
            value_key = to_name
    return from_name, to_name, value_key


@dataclass(frozen=True)
class _Ctx:
    from_name: str
    value_key: str
    cfg: LabelConfig | None
    allowed: set[str] | None
    strict: bool
    problems: Problems


def _task(index: int, where: str, it: Mapping[str, Any], ann: Mapping[str, Any] | None,
          pr: Mapping[str, Any] | None, c: _Ctx) -> Task:
    """One task: text, tokens, the chosen annotation's and prediction's spans."""
    data = dict(it["data"])
    meta_raw = it.get("meta")
    meta = dict(meta_raw) if isinstance(meta_raw, Mapping) else {}
    if c.value_key not in data:
        raise DataError(f"{where}: data has no {c.value_key!r} field (fields: "
                        f"{sorted(data)[:10]})")
    text = data[c.value_key]
    if not isinstance(text, str):
        raise TypeError(f"{where}: data[{c.value_key!r}] must be a string, got "
                        f"{type(text).__name__}")
    toks = data.get("tokens")
    tt = _pretokenized(toks, text, where) if toks is not None else tokenize(text)
    gold = annotator_name = ann_id = None
    if ann is not None:
        gold = _parse_regions(ann.get("result") or [], text, where, "gold", index, c)
        uid, email = annotator_of(ann)
        annotator_name = email or uid
        ann_id = ann.get("id") if isinstance(ann.get("id"), int) else None
    pred = pred_score = mv = None
    if pr is not None:
        pred = _parse_regions(pr.get("result") or [], text, where, "pred", index, c)
        sc = pr.get("score")
        pred_score = float(sc) if isinstance(sc, (int, float)) and not isinstance(sc, bool) \
            else None
        mv = None if pr.get("model_version") is None else str(pr.get("model_version"))
    split = data.get("split", meta.get("split"))
    return Task(index, it.get("id"), text, tt, gold=gold, pred=pred, pred_score=pred_score,
                annotator=annotator_name, split=None if split is None else str(split), data=data,
                meta=meta, annotation_id=ann_id, model_version=mv)


@gc_paused()
def from_ls_tasks(
    tasks: Sequence[Mapping[str, Any]],
    *,
    format: Format = "auto",
    label_config: str | Path | LabelConfig | None = None,
    annotator: str | int | None = None,
    model_version: str | None = None,
    strict: bool = True,
    warn: bool = True,
    rejected: dict[int, str] | None = None,
) -> Dataset:
    """Build a Dataset from Label Studio tasks given as Python dicts.

    Parameters
    ----------
    tasks : full-export tasks (``{"id", "data", "annotations", "predictions", "meta"}``, as
        the ML backend receives them) or JSON-MIN rows
    format : ``"ls-json"``, ``"json-min"`` or ``"auto"`` (full when any task has ``data``)
    label_config : fixes labels, ``from_name``/``to_name`` and the text key; without it they
        are inferred from the regions (an error when regions use several ``from_name``)
    annotator, model_version : choose the annotation / prediction (default: latest)
    strict : raise on the first invalid span; ``False`` drops invalid spans (out of range,
        empty, overlapping, unknown label) and counts them in ``Dataset.problems``.
        A region ``value.text`` that differs from ``text[start:end]`` is always an error.
    rejected : when given, a task that cannot be read is left out instead of raising and its
        message (naming the task) is stored under its input position; the dataset holds the
        other tasks in input order, each read once
    """
    cfg = as_label_config(label_config)
    items = _full_items(tasks, format, cfg)
    chosen_ann, chosen_pred = _choose(items, annotator, model_version, warn)
    from_name, to_name, value_key = _names(items, cfg, chosen_ann + chosen_pred)
    allowed = None if cfg is None else set(cfg.labels)
    ctx = _Ctx(from_name, value_key, cfg, allowed, strict, Problems())

    def read_task(k: int, where: str, it: Mapping[str, Any], ann: Any, pr: Any,
                  problems: Problems) -> Task:
        return _task(k, where, it, ann, pr, dataclasses.replace(ctx, problems=problems))

    reader = Reader(value_key, from_name, None if cfg is None else cfg.canonical, allowed,
                    ctx.problems, read_task, rejected)
    for idx, it in enumerate(items):
        reader.add(idx, it, chosen_ann[idx], chosen_pred[idx])
    cols = reader.cols

    def make(k: int) -> Task:  # the reference reader on one task (its problems counted once)
        idx = cols.items[k]
        return read_task(k, task_name(items[idx].get("id"), idx), items[idx], chosen_ann[idx],
                         chosen_pred[idx], Problems())

    ds = finish(cols, cfg, ctx.problems, make, from_name=from_name, to_name=to_name,
                value_key=value_key, warn=warn)
    ds.annotation_sets = annotation_sets(
        ((k, items[i], chosen_ann[i]) for k, i in enumerate(cols.items)), ds.corpus, ctx)
    return ds


def finish(cols: TaskColumns, cfg: LabelConfig | None, problems: Problems,
           make: Callable[[int], Task], *, from_name: str, to_name: str, value_key: str,
           warn: bool) -> Dataset:
    """The dataset of the columns read: labels, corpus, alignment issues, warnings."""
    labels = cfg.labels if cfg is not None else tuple(sorted(set(cols.gold.label)
                                                             | set(cols.pred.label)))
    corpus = cols.corpus(labels, [p.task for p in problems.items if p.which == "gold"])

    def task(k: int) -> Task:
        t = cols.made.get(k)
        return make(k) if t is None else t

    dropped = problems.of("dropped_span")
    ds = Dataset.from_corpus(corpus, task, from_name=from_name, to_name=to_name,
                             value_key=value_key, scheme=None, problems=problems)
    ds.problems.extend([Problem(i.kind, i.task, i.which, i.span, i.message)
                        for i in corpus.issues])
    if warn:
        corpus.warn_issues(stacklevel=4)
    if dropped and warn:
        warnings.warn(
            f"{len(dropped)} invalid span(s) dropped (strict=False); first: {dropped[0].message}",
            stacklevel=3,
        )
    return ds


def _pretokenized(toks: Any, text: str, where: str) -> TokenizedText:
    """``TokenizedText`` for ``data["tokens"]``, checked against the text (fast path of
    :func:`analysis.spans.from_tokens`: C-level ``join``/``map`` instead of per-token Python)."""
    try:
        joined = " ".join(toks) if isinstance(toks, list) else None
    except TypeError:
        joined = None
    if joined is None or "" in toks:
        raise DataError(f"{where}: data['tokens'] must be a list of non-empty strings")
    if joined != text:
        raise DataError(
            f"{where}: data['tokens'] joined by single spaces does not equal the text "
            f"({len(toks)} tokens, text length {len(text)})"
        )
    lengths = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    starts = np.zeros(len(toks), dtype=np.int64)
    if len(toks) > 1:
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
    return TokenizedText(text, tuple(toks), starts, starts + lengths)


def _region_span(reg: Any, where: str, which: str, c: _Ctx
                 ) -> tuple[Span | None, str | None, Any]:
    """The span of one ``labels`` region of the control ``c.from_name`` (None for other
    controls), or the message why it has none; and the region's ``value``."""
    if type(reg) is dict and reg.get("type") == "labels":  # the common shape, checked fast
        if reg.get("from_name", c.from_name) != c.from_name:
            return None, None, None
    elif not is_labels_region(reg) or reg.get("from_name", c.from_name) != c.from_name:
        return None, None, None  # other controls (choices, relations, ...) are not NER spans
    val = reg["value"]
    start, end = val.get("start"), val.get("end")
    if type(start) is not int or type(end) is not int:  # bool and float are refused too
        if not (isinstance(start, int) and isinstance(end, int)
                and not isinstance(start, bool) and not isinstance(end, bool)):
            raise TypeError(f"{where}: {which} region {reg.get('id', '?')!r} has non-integer "
                            f"offsets start={start!r} end={end!r}")
    labs = val.get("labels")
    if type(labs) is not list or len(labs) != 1 or type(labs[0]) is not str:
        if not isinstance(labs, list) or not labs or not all(isinstance(x, str) for x in labs):
            return None, f"{where}: {which} region [{start}, {end}) has no label (labels={labs!r})", val
        if len(labs) > 1:
            return None, (f"{where}: {which} region [{start}, {end}) has several labels {labs}; "
                          "NER needs one"), val
    label = c.cfg.canonical(labs[0]) if c.cfg is not None else labs[0]
    return Span(start, end, label), None, val


def _parse_regions(
    result: Any, text: str, where: str, which: str, index: int, c: _Ctx
) -> tuple[Span, ...]:
    """Spans of one annotation / prediction result, validated (:func:`analysis.spans.check_spans`)
    and sorted by ``(start, end)``."""
    if not isinstance(result, list):
        raise DataError(f"{where}: {which} result must be a list, got {type(result).__name__}")
    n = len(text)
    spans: list[Span] = []
    for reg in result:
        span, msg, val = _region_span(reg, where, which, c)
        if msg is not None:
            c.problems.checked += 1
            if c.strict:
                raise DataError(msg)
            c.problems.add(Problem("dropped_span", index, which, None, msg))
            continue
        if span is None:
            continue
        vt = val.get("text")
        if vt is not None and 0 <= span.start < span.end <= n and vt != text[span.start:span.end]:
            raise DataError(
                f"{where}: {which} span [{span.start}, {span.end}) {span.label!r} has value.text "
                f"{vt!r} but the task text there is {text[span.start:span.end]!r} (offsets must "
                "be code points)")
        spans.append(span)
    c.problems.checked += len(spans)
    kept, dropped = check_spans(spans, n, where=where, labels=c.allowed, strict=c.strict,
                                what=f"{which} span", label_source="label config labels")
    for sp, msg in dropped:
        c.problems.add(Problem("dropped_span", index, which, sp, msg))
    return tuple(kept)


def regions(
    text: str,
    spans: Sequence[Span],
    *,
    from_name: str,
    to_name: str,
    scores: Sequence[float] | np.ndarray | None = None,
    id_prefix: str = "r",
) -> list[dict[str, Any]]:
    """Label Studio ``labels`` regions for character spans ``[start, end)`` of ``text``.

    The one region builder of the project (exports, ``/predict`` replies, suggested labellings):
    each region carries the config's ``from_name`` / ``to_name``, the exact half-open offsets, the
    covered text, the label and — when ``scores`` gives a finite one — a per-region ``score``.

    >>> regions("Ann met Bo", [Span(0, 3, "PER")], from_name="label", to_name="text")[0]["value"]
    {'start': 0, 'end': 3, 'text': 'Ann', 'labels': ['PER']}
    """
    sc = np.asarray(scores, dtype=np.float64).reshape(-1) if scores is not None else None
    out = []
    for k, s in enumerate(spans):
        reg: dict[str, Any] = {
            "id": f"{id_prefix}{k}", "from_name": from_name, "to_name": to_name,
            "type": "labels",
            "value": {"start": int(s.start), "end": int(s.end), "text": text[s.start:s.end],
                      "labels": [s.label]},
        }
        if sc is not None and k < sc.shape[0] and np.isfinite(sc[k]):
            reg["score"] = round(float(sc[k]), 6)
        out.append(reg)
    return out


def to_ls_tasks(
    ds: Dataset, *, format: Literal["ls-json", "json-min"] = "ls-json"
) -> list[dict[str, Any]]:
    """Label Studio tasks (dicts) for ``ds``.

    ``ls-json`` writes the importable full format: ``data`` (original fields, the text under
    ``ds.value_key``, ``tokens`` when the task came from CoNLL), the chosen annotation as the
    only annotation and the chosen prediction as the only prediction (other annotations and
    predictions of the input are not kept).  ``json-min`` writes flat rows with the gold
    regions under ``ds.from_name`` (predictions are not part of JSON-MIN).
    """
    if format not in ("ls-json", "json-min"):
        raise DataError(f"format must be 'ls-json' or 'json-min', got {format!r}")
    out: list[dict[str, Any]] = []
    for t in ds.tasks:
        data = dict(t.data)
        data[ds.value_key] = t.text
        if format == "json-min":
            out.append(min_row(t, data, ds.from_name))
            continue
        task: dict[str, Any] = {}
        if t.id is not None:
            task["id"] = t.id
        task["data"] = data
        if t.meta:
            task["meta"] = t.meta
        anns: list[dict[str, Any]] = []
        if t.gold is not None:
            ann: dict[str, Any] = {
                "result": regions(t.text, t.gold, from_name=ds.from_name,
                                  to_name=ds.to_name, id_prefix="g"),
                "was_cancelled": False,
                "ground_truth": False,
            }
            if t.annotation_id is not None:
                ann["id"] = t.annotation_id
            anns.append(ann)
        task["annotations"] = anns
        preds: list[dict[str, Any]] = []
        if t.pred is not None:
            pred: dict[str, Any] = {"result": regions(t.text, t.pred, from_name=ds.from_name,
                                                      to_name=ds.to_name, id_prefix="p")}
            if t.pred_score is not None:
                pred["score"] = t.pred_score
            if t.model_version is not None:
                pred["model_version"] = t.model_version
            preds.append(pred)
        task["predictions"] = preds
        out.append(task)
    return out
