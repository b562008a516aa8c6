"""A Label Studio export file read one task at a time.

``json.loads`` of a 1 M-task export builds every task's dicts, lists and strings at once (~6 GB
for CoNLL-03 x71 with tokens); here the top-level array is decoded element by element
(``json.JSONDecoder.raw_decode``), each task goes straight into the corpus columns
(:class:`analysis.formats.ls_columns.Reader`) and is dropped; a task is decoded again, from its
stretch of the text, only when a caller asks for its :class:`analysis.dataset.Task`.  Same
result as :func:`analysis.formats.ls_json.from_ls_tasks` on the parsed list; files of another
shape (JSON-MIN, one task object, JSON Lines, no ``data.text``) take that path instead.
"""

from __future__ import annotations

import dataclasses
import json
import json.scanner
import re
import warnings
from collections.abc import Iterator, Mapping
from typing import Any

from analysis.corpus import task_name
from analysis.dataset import Dataset, Problems, Task, choose_annotation, choose_prediction
from analysis.exceptions import DataError
from analysis.formats.label_config import LabelConfig
from analysis.formats.ls_columns import Reader
from analysis.formats.ls_json import _Ctx, _task, finish
from analysis.formats.ls_multi import annotation_sets, is_multi

__all__ = ["iter_json_array", "read_ls_array"]

_WS = re.compile(r"[ \t\n\r]*")
_WS_CHARS = frozenset(" \t\n\r")


def iter_json_array(text: str, where: str) -> Iterator[tuple[int, int, Any]]:
    """``(start, end, value)`` of every element of the JSON array ``text``, decoded one by one.

    >>> [v for _, _, v in iter_json_array(' [1, {"a": [2]} ] ', "x")]
    [1, {'a': [2]}]
    """
    # the C scanner, without JSONDecoder.raw_decode's per-call wrapper
    scan = json.scanner.make_scanner(json.JSONDecoder())  # type: ignore[arg-type]
    ws = _WS.match
    i = ws(text, 0).end()  # type: ignore[union-attr]
    if text[i:i + 1] != "[":
        raise DataError(f"{where}: not a JSON array")
    i = _WS.match(text, i + 1).end()  # type: ignore[union-attr]
    if text[i:i + 1] == "]":
        end = i + 1
    else:
        while True:
            try:
                value, j = scan(text, i)
            except StopIteration as exc:
                err = json.JSONDecodeError("Expecting value", text, exc.value)
                raise DataError(f"{where}: not valid JSON: {err}") from None
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON: {exc}") from None
            except RecursionError:
                raise DataError(f"{where}: JSON is nested too deeply") from None
            yield i, j, value
            c = text[j:j + 1]
            if c != "," and c != "]":
                j = ws(text, j).end()  # type: ignore[union-attr]
                c = text[j:j + 1]
            if c == "]":
                end = j + 1
                break
            if c != ",":
                raise DataError(f"{where}: not valid JSON: expected ',' or ']' at char {j}")
            i = j + 1
            if text[i:i + 1] in _WS_CHARS:
                i = ws(text, i).end()  # type: ignore[union-attr]
    if _WS.match(text, end).end() != len(text):  # type: ignore[union-attr]
        raise DataError(f"{where}: not valid JSON: extra data after the array at char {end}")


def _choose(it: Mapping[str, Any], annotator: str | int | None, model_version: str | None
            ) -> tuple[Any, Any, bool]:
    anns = it.get("annotations")
    if anns is None:
        anns = it.get("completions")  # pre-1.0 exports
    preds: Any = it.get("predictions")
    id_only = bool(preds) and not all(isinstance(p, Mapping) for p in preds)
    if id_only:
        preds = [p for p in preds if isinstance(p, Mapping)]
    return (choose_annotation(anns, annotator=annotator),
            choose_prediction(preds, model_version=model_version), id_only)


def read_ls_array(text: str, where: str, *, cfg: LabelConfig | None,
                  annotator: str | int | None, model_version: str | None, strict: bool,
                  warn: bool) -> Dataset | None:
    """The dataset of a full export (a JSON array of tasks with ``data``), read task by task;
    None when ``text`` is not such an array (the caller parses it whole)."""
    head = text.lstrip()[:1]
    if head != "[":
        return None
    elements = iter_json_array(text, where)
    first = next(elements, None)
    if first is None:
        return None
    data0 = first[2].get("data") if isinstance(first[2], Mapping) else None
    if not isinstance(data0, Mapping) or (cfg is None and "text" not in data0):
        return None
    value_key = cfg.value_key if cfg is not None else "text"
    ctx = _Ctx(cfg.from_name if cfg is not None else "label", value_key, cfg,
               None if cfg is None else set(cfg.labels), strict, Problems())
    reader = Reader(value_key, cfg.from_name if cfg is not None else None,
                    None if cfg is None else cfg.canonical, ctx.allowed, ctx.problems,
                    lambda k, w, it, ann, pr, problems: _task(
                        k, w, it, ann, pr, dataclasses.replace(
                            ctx, from_name=_from_name(reader.pairs, ctx), problems=problems)),
                    None)
    spans: list[tuple[int, int]] = []
    multi: list[tuple[int, Mapping[str, Any], Mapping[str, Any] | None]] = []  # kept for agreement (usually few)
    id_only = 0
    for idx, (a, b, it) in enumerate(_chain(first, elements)):
        if not isinstance(it, Mapping):
            raise TypeError(f"task #{idx}: expected a JSON object, got {type(it).__name__}")
        if not isinstance(it.get("data"), Mapping):
            raise DataError(f"task #{idx}: has no 'data' object while other tasks do (mixed "
                            "full export and JSON-MIN)")
        ann, pr, ids = _choose(it, annotator, model_version)
        id_only += ids
        n_before = len(reader.cols.texts)
        reader.add(idx, it, ann, pr)
        if len(reader.cols.texts) > n_before:
            spans.append((a, b))
            if is_multi(it):
                multi.append((n_before, it, ann))
    if len(reader.pairs) > 1:
        raise DataError(f"regions use several (from_name, to_name) pairs "
                        f"{sorted(reader.pairs)}; pass a label config to choose one")
    if id_only and warn:
        warnings.warn(
            f"{id_only} task(s) list predictions as ids only; those were ignored (export with "
            'serialization_options={"predictions": {"only_id": False}})', stacklevel=3)
    from_name, to_name = (cfg.from_name, cfg.to_name) if cfg is not None else \
        next(iter(reader.pairs), ("label", "text"))
    final = dataclasses.replace(ctx, from_name=from_name)

    def make(k: int) -> Task:  # the task decoded again from its stretch of the file
        idx = reader.cols.items[k]
        a, b = spans[k]
        it = json.loads(text[a:b])
        ann, pr, _ = _choose(it, annotator, model_version)
        return _task(k, task_name(it.get("id"), idx), it, ann, pr,
                     dataclasses.replace(final, problems=Problems()))

    ds = finish(reader.cols, cfg, ctx.problems, make, from_name=from_name, to_name=to_name,
                value_key=value_key, warn=warn)
    ds.annotation_sets = annotation_sets(multi, ds.corpus, dataclasses.replace(
        final, problems=ctx.problems))
    return ds


def _from_name(pairs: set[tuple[str, str]], ctx: _Ctx) -> str:
    """The control the regions name so far (the label config's when there is one)."""
    if ctx.cfg is not None:
        return ctx.cfg.from_name
    return next(iter(pairs))[0] if pairs else "label"


def _chain(first: tuple[int, int, Any], rest: Iterator[tuple[int, int, Any]]
           ) -> Iterator[tuple[int, int, Any]]:
    yield first
    yield from rest
