"""Reading and writing NER dataset files: the format dispatch (CoNLL, Label Studio JSON).

All readers return an :class:`analysis.dataset.Dataset`; offsets are half-open character
offsets in Python code points (``text[start:end]``), which is what Label Studio stores.
:func:`load` detects the format from the content (``[`` / ``{``: Label Studio JSON, full export,
JSON-MIN or JSON Lines; anything else: CoNLL, :mod:`analysis.formats.conll`), :func:`save`
from the file suffix.  Label Studio JSON is :mod:`analysis.formats.ls_json`.

Spans that do not line up with token boundaries are reported (warning + count in
``Dataset.problems`` / ``WriteReport.problems``), never silently moved.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from analysis.dataset import Dataset
from analysis.exceptions import DataError
from analysis.formats.conll import _parse as _parse_conll
from analysis.formats.conll import read_text
from analysis.formats.conll_write import WriteReport, write_conll
from analysis.formats.label_config import LabelConfig, as_label_config
from analysis.formats.ls_stream import read_ls_array
from analysis.formats.ls_json import Format, from_ls_tasks, gc_paused, to_ls_tasks

__all__ = ["load", "save", "detect_format", "parse_json"]

logger = logging.getLogger(__name__)

_FORMATS = ("auto", "conll", "ls-json", "json-min")


def detect_format(text: str) -> Literal["conll", "json"]:
    """``"json"`` when the content starts with ``[`` or ``{``, else ``"conll"``."""
    head = text.lstrip()[:1]
    return "json" if head in ("[", "{") else "conll"


def _json_loads(text: str, where: str) -> Any:
    try:
        return json.loads(text)
    except RecursionError:
        raise DataError(f"{where}: JSON is nested too deeply") from None


def parse_json(text: str, where: str) -> list[Any]:
    """Label Studio tasks from JSON text: a list, one task object, or JSON Lines.

    JSON nested too deeply for the parser (its recursion guard) is a :class:`DataError`."""
    try:
        obj = _json_loads(text, where)
    except json.JSONDecodeError as exc:
        # JSON Lines: one task object per line
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1 and all(ln.lstrip().startswith("{") for ln in lines[:2]):
            out = []
            for k, ln in enumerate(lines, 1):
                try:
                    out.append(_json_loads(ln, f"{where}: line {k}"))
                except json.JSONDecodeError as exc2:
                    raise DataError(f"{where}: line {k} is not valid JSON: {exc2}") from None
            return out
        raise DataError(f"{where}: not valid JSON: {exc}") from None
    if isinstance(obj, Mapping):
        if "data" in obj or "text" in obj:
            obj = [obj]
        else:
            raise DataError(
                f"{where}: JSON top level is an object without 'data'; expected a list of tasks")
    if not isinstance(obj, list):
        raise DataError(
            f"{where}: JSON top level is {type(obj).__name__}; expected a list of tasks")
    return obj


def load(
    path: str | Path,
    *,
    format: Format = "auto",
    label_config: str | Path | LabelConfig | None = None,
    annotator: str | int | None = None,
    model_version: str | None = None,
    scheme: str | None = None,
    strict: bool = True,
) -> Dataset:
    """Load a dataset file.

    Parameters
    ----------
    path : CoNLL or Label Studio JSON (full export, JSON-MIN or JSON Lines) file, UTF-8
    format : ``"auto"`` detects JSON vs CoNLL from the content
    label_config : labeling config (XML text, path, or :class:`LabelConfig`); gives labels,
        ``from_name``/``to_name`` and the text key, and rejects unknown labels
    annotator : use this annotator's annotation (user id or email) instead of the latest
    model_version : use the prediction of this model version instead of the latest
    scheme : CoNLL tag scheme (``iob1``/``iob2``/``bioes``/``bilou``); detected when ``None``
    strict : raise on the first invalid tag / span; ``False`` repairs and counts them

    Raises
    ------
    analysis.exceptions.DataError
        the file is empty, not UTF-8, not parseable, or holds invalid data; the message names
        the file and the task / sentence and line.
    """
    if format not in _FORMATS:
        raise DataError(f"unknown format {format!r}; use one of {list(_FORMATS)}")
    path = Path(path)
    raw, text = read_text(path)
    kind = ("conll" if format == "conll" else "json") if format != "auto" else \
        detect_format(raw[:4096].decode("utf-8", errors="ignore") or " ")
    try:
        if kind == "conll":
            ds = _parse_conll(raw, scheme=scheme, strict=strict, label_config=label_config)
        else:
            del raw  # the text is what JSON needs; the bytes are as large again
            with gc_paused():
                streamed = None
                if format in ("auto", "ls-json"):  # a full export: task by task
                    streamed = read_ls_array(text, str(path), cfg=as_label_config(label_config),
                                             annotator=annotator, model_version=model_version,
                                             strict=strict, warn=True)
                if streamed is not None:
                    ds = streamed
                else:
                    tasks = parse_json(text, str(path))
                    if not tasks:
                        raise DataError("contains no tasks")
                    ds = from_ls_tasks(tasks, format=format, label_config=label_config,
                                       annotator=annotator, model_version=model_version,
                                       strict=strict)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if msg.startswith(str(path)):
            raise
        raise (DataError if isinstance(exc, ValueError) else TypeError)(f"{path}: {msg}") from None
    if not len(ds.tasks):
        raise DataError(f"{path}: contains no tasks")
    logger.info("loaded %s: %d tasks, %d gold spans, problems %s", path, len(ds.tasks),
                len(ds.corpus.gold), ds.problems.counts())
    return ds


_SUFFIX_FORMAT = {
    ".json": "ls-json",
    ".jsonl": "ls-json",
    ".conll": "conll",
    ".txt": "conll",
    ".tsv": "conll",
    ".bio": "conll",
    ".iob": "conll",
}


def save(
    ds: Dataset,
    path: str | Path,
    *,
    format: Literal["auto", "conll", "ls-json", "json-min"],
    scheme: str = "iob2",
    which: Literal["gold", "pred"] = "gold",
) -> WriteReport:
    """Write ``ds`` to ``path`` as CoNLL (``which`` spans, tags in ``scheme``), a Label Studio
    full export (``ls-json``) or JSON-MIN.  ``format="auto"`` picks by file suffix.

    Returns a :class:`WriteReport` (tasks and spans written, skipped tasks, span problems).
    """
    path = Path(path)
    if format == "auto":
        fmt = _SUFFIX_FORMAT.get(path.suffix.lower())
        if fmt is None:
            raise DataError(f"cannot tell the output format from {path.name!r}; pass format=")
        format = fmt  # type: ignore[assignment]
    if format == "conll":
        return write_conll(ds, path, scheme=scheme, which=which)
    if format not in ("ls-json", "json-min"):
        raise DataError(f"unknown output format {format!r}; use conll, ls-json or json-min")
    tasks = to_ls_tasks(ds, format=format)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(tasks, fh, ensure_ascii=False)
    rep = WriteReport(format)
    rep.n_tasks = len(tasks)
    rep.n_spans = ds.n_spans("gold") + (ds.n_spans("pred") if format == "ls-json" else 0)
    return rep
