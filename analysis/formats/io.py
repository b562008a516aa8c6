"""Reading and writing NER datasets: CoNLL (2- and 4-column), Label Studio JSON, JSON-MIN.

All readers return an :class:`analysis.dataset.Dataset`; offsets are half-open character
offsets in Python code points (``text[start:end]``), which is what Label Studio stores.

CoNLL
    ``token<TAB>tag`` (or space separated ``token POS chunk NER`` as in CoNLL-2003), one token
    per line, a blank line after each sentence.  ``-DOCSTART-`` lines separate documents: they
    create no task; the line is kept in the next task's ``data["conll_docstart"]`` and written
    back.  Extra middle columns are kept in ``data["conll_extra"]`` (one list per token).  The
    tag scheme is detected (:func:`analysis.schemes.detect_scheme`) unless given.  Strict mode
    raises on the first invalid tag, naming the sentence, line and token; lenient mode repairs
    (an orphan ``I-X`` begins a span) and counts every repair in ``Dataset.problems``.
    A leading UTF-8 BOM is dropped and ``\\r\\n`` line ends are read as ``\\n``.
Label Studio JSON
    A full export (list of tasks with ``data``, ``annotations``, ``predictions``) or JSON-MIN
    (flat rows ``{"id", "text", "label": [{start, end, text, labels}], "annotator", ...}``),
    detected from the content.  One annotation per task is chosen
    (:func:`analysis.dataset.choose_annotation`) and one prediction
    (:func:`analysis.dataset.choose_prediction`).
CoNLL -> LS JSON -> CoNLL is byte-identical
    CoNLL tasks store their tokens in ``data["tokens"]`` and ``data["text"]`` is the tokens
    joined by one space; when ``data["tokens"]`` is present it must match the text, otherwise
    the text is tokenized with :func:`analysis.spans.tokenize`.

Spans that do not line up with token boundaries are reported (warning + count in
``Dataset.problems`` / ``WriteReport.problems``), never silently moved.
"""

from __future__ import annotations

import contextlib
import gc
import json
import logging
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from analysis.dataset import (
    Dataset,
    Problem,
    Problems,
    Task,
    annotator_of,
    check_alignment,
    choose_annotation,
    choose_prediction,
    task_name,
)
from analysis.formats.label_config import LabelConfig, as_label_config
from analysis.schemes import decode, detect_scheme, encode, get_scheme, split_tag
from analysis.spans import (
    Span,
    TokenizedText,
    TokenSpan,
    char_to_token_spans,
    from_tokens,
    token_to_char_spans,
    tokenize,
)

__all__ = [
    "load",
    "save",
    "read_conll",
    "write_conll",
    "from_ls_tasks",
    "to_ls_tasks",
    "detect_format",
    "WriteReport",
]

logger = logging.getLogger(__name__)

Format = Literal["auto", "conll", "ls-json", "json-min"]
_FORMATS = ("auto", "conll", "ls-json", "json-min")
DOCSTART = "-DOCSTART-"
# JSON-MIN row keys that are annotation bookkeeping, not task data
_MIN_META_KEYS = frozenset(
    {
        "id",
        "annotator",
        "annotation_id",
        "created_at",
        "updated_at",
        "lead_time",
        "drafts",
        "predictions",
        "meta",
    }
)


@dataclass
class WriteReport:
    """What a writer did.

    Attributes
    ----------
    format : the format written
    text : the written text (CoNLL) or ``None``
    n_tasks : tasks written
    n_spans : spans written
    skipped : ``(task index, reason)`` for tasks left out (unannotated, no tokens)
    problems : misaligned / dropped spans (reported, not moved)
    """

    format: str
    text: str | None = None
    n_tasks: int = 0
    n_spans: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def misaligned(self) -> int:
        return sum(1 for p in self.problems if p.kind in ("misaligned", "no_token"))


# ---------------------------------------------------------------------------------------------
# reading files


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ValueError(
            f"{path}: not valid UTF-8 at byte {exc.start} (line {line}): {exc.reason}; "
            "re-encode the file as UTF-8"
        ) from None
    if not text.strip():
        raise ValueError(f"{path}: file is empty")
    return text


def detect_format(text: str) -> Literal["conll", "json"]:
    """``"json"`` when the content starts with ``[`` or ``{``, else ``"conll"``."""
    head = text.lstrip()[:1]
    return "json" if head in ("[", "{") else "conll"


def _parse_json(text: str, where: str) -> list[Any]:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        # JSON Lines: one task object per line
        lines = [ln for ln in text.splitlines() if ln.strip()]
        if len(lines) > 1 and all(ln.lstrip().startswith("{") for ln in lines[:2]):
            out = []
            for k, ln in enumerate(lines, 1):
                try:
                    out.append(json.loads(ln))
                except json.JSONDecodeError as exc2:
                    raise ValueError(f"{where}: line {k} is not valid JSON: {exc2}") from None
            return out
        raise ValueError(f"{where}: not valid JSON: {exc}") from None
    if isinstance(obj, Mapping):
        if "data" in obj or "text" in obj:
            return [obj]
        raise ValueError(
            f"{where}: JSON top level is an object without 'data'; expected a list of tasks"
        )
    if not isinstance(obj, list):
        raise ValueError(
            f"{where}: JSON top level is {type(obj).__name__}; expected a list of tasks"
        )
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
    ValueError
        the file is empty, not UTF-8, not parseable, or holds invalid data; the message names
        the file and the task / sentence and line.
    """
    if format not in _FORMATS:
        raise ValueError(f"unknown format {format!r}; use one of {list(_FORMATS)}")
    path = Path(path)
    text = _read_text(path)
    kind = detect_format(text) if format == "auto" else ("conll" if format == "conll" else "json")
    try:
        with _gc_paused():
            ds = _load_text(text, path, kind, format, label_config, annotator, model_version,
                            scheme, strict)
    except (ValueError, TypeError) as exc:
        msg = str(exc)
        if msg.startswith(str(path)):
            raise
        raise (ValueError if isinstance(exc, ValueError) else TypeError)(f"{path}: {msg}") from None
    if not ds.tasks:
        raise ValueError(f"{path}: contains no tasks")
    logger.info(
        "loaded %s: %d tasks, %d gold spans, %d predicted spans, problems %s",
        path,
        len(ds.tasks),
        ds.n_spans("gold"),
        ds.n_spans("pred"),
        ds.problems.counts(),
    )
    return ds


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector while bulk-building acyclic objects.

    Parsing an export allocates millions of dicts, lists, spans and arrays; each allocation
    burst triggers a collection that walks every live object again — half the load time of
    CoNLL-03 train as LS JSON (0.78 s -> 0.39 s, ``bench/bench_core.py``).  Nothing built here
    forms reference cycles, so collecting afterwards loses nothing.
    """
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()


def _load_text(
    text: str,
    path: Path,
    kind: str,
    format: Format,
    label_config: str | Path | LabelConfig | None,
    annotator: str | int | None,
    model_version: str | None,
    scheme: str | None,
    strict: bool,
) -> Dataset:
    """Parse already-read file ``text`` of ``kind`` (``"conll"`` or ``"json"``)."""
    if kind == "conll":
        return _parse_conll(text, scheme=scheme, strict=strict, label_config=label_config)
    tasks = _parse_json(text, str(path))
    if not tasks:
        raise ValueError("contains no tasks")
    return from_ls_tasks(
        tasks,
        format="auto" if format == "auto" else format,
        label_config=label_config,
        annotator=annotator,
        model_version=model_version,
        strict=strict,
    )


# ---------------------------------------------------------------------------------------------
# CoNLL


def _split_columns(line: str) -> list[str]:
    if "\t" in line:
        return line.split("\t")
    return [c for c in line.split(" ") if c]


def read_conll(
    source: str | Path,
    *,
    scheme: str | None = None,
    strict: bool = True,
    label_config: str | Path | LabelConfig | None = None,
) -> Dataset:
    """Parse CoNLL text (or a file path) into a Dataset, one task per sentence.

    ``source`` is treated as CoNLL text when it is a ``str`` containing a newline or a tab,
    else as a path.  Tokens keep their exact form (``data["tokens"]``); ``Task.text`` is the
    tokens joined by one space; ``Task.gold`` the decoded spans.  See the module docstring
    for columns, ``-DOCSTART-`` and strictness.
    """
    if isinstance(source, Path) or ("\n" not in source and "\t" not in source):
        path = Path(source)
        try:
            return _parse_conll(
                _read_text(path), scheme=scheme, strict=strict, label_config=label_config
            )
        except (ValueError, TypeError) as exc:
            raise (ValueError if isinstance(exc, ValueError) else TypeError)(
                f"{path}: {exc}"
            ) from None
    return _parse_conll(source, scheme=scheme, strict=strict, label_config=label_config)


def _parse_conll(
    source: str,
    *,
    scheme: str | None,
    strict: bool,
    label_config: str | Path | LabelConfig | None,
) -> Dataset:
    cfg = as_label_config(label_config)
    text = source[1:] if source.startswith("\ufeff") else source

    # ---- pass 1: lines -> sentences
    sents_tokens: list[list[str]] = []
    sents_tags: list[list[str]] = []
    sents_extra: list[list[list[str]] | None] = []
    sents_line: list[int] = []
    sents_doc: list[str | None] = []
    toks: list[str] = []
    tags: list[str] = []
    extra: list[list[str]] = []
    start_line = 0
    ncols = 0
    ncols_line = 0
    pending_doc: str | None = None

    def flush() -> None:
        nonlocal toks, tags, extra, pending_doc
        if toks:
            sents_tokens.append(toks)
            sents_tags.append(tags)
            sents_extra.append(extra if ncols > 2 else None)
            sents_line.append(start_line)
            sents_doc.append(pending_doc)
            pending_doc = None
            toks, tags, extra = [], [], []

    for lineno, line in enumerate(text.split("\n"), 1):
        if line.endswith("\r"):
            line = line[:-1]
        if not line.strip():
            flush()
            continue
        cols = _split_columns(line)
        if cols[0] == DOCSTART:
            flush()
            if pending_doc is not None:
                logger.info("line %d: empty document before this -DOCSTART-", lineno)
            pending_doc = line
            continue
        if len(cols) < 2:
            raise ValueError(
                f"line {lineno}: expected 'token<TAB>tag' (or 'token POS chunk tag'), got {line!r}"
            )
        if ncols == 0:
            ncols, ncols_line = len(cols), lineno
        elif len(cols) != ncols:
            raise ValueError(
                f"line {lineno}: {len(cols)} columns, but line {ncols_line} has {ncols}: {line!r}"
            )
        if not cols[0]:
            raise ValueError(f"line {lineno}: empty token in {line!r}")
        if not toks:
            start_line = lineno
        toks.append(cols[0])
        tags.append(cols[-1])
        if ncols > 2:
            extra.append(cols[1:-1])
    flush()
    if pending_doc is not None:
        logger.info("trailing -DOCSTART- line with no sentence after it was dropped")

    # ---- scheme
    if scheme is None:
        try:
            scheme = detect_scheme(sents_tags)
        except ValueError as exc:
            bad = _first_malformed(sents_tags, sents_line)
            if bad is None:
                raise ValueError(f"cannot detect the tag scheme: {exc}") from None
            k, pos, tag, bad_line = bad
            if strict:
                raise ValueError(
                    f"sentence {k + 1} (line {bad_line}): invalid tag {tag!r} at token {pos}: "
                    "expected 'O' or '<prefix>-<TYPE>'"
                ) from None
            cleaned = [[t if _well_formed(t) else "O" for t in s] for s in sents_tags]
            scheme = detect_scheme(cleaned)
    sc = get_scheme(scheme)

    # ---- pass 2: decode and build tasks
    problems = Problems()
    tasks: list[Task] = []
    seen_labels: set[str] = set()
    for k, (tk, tg) in enumerate(zip(sents_tokens, sents_tags)):
        if all(t == "O" for t in tg):
            spans_tok: tuple[TokenSpan, ...] = ()
        else:
            dec = decode(tg, sc, strict=False, repair="begin", where=f"sentence {k + 1}")
            spans_tok = dec.spans
            if dec.problems:
                for p in dec.problems:
                    msg = (
                        f"sentence {k + 1} (line {sents_line[k] + p.position}): invalid "
                        f"{sc.name.upper()} tag {p.tag!r} at token {p.position}: {p.message}"
                    )
                    if strict:
                        raise ValueError(msg)
                    problems.add(Problem("tag_repair", k, "gold", None, msg))
        tt = from_tokens(tk)
        spans = token_to_char_spans(tt, spans_tok)
        for s in spans:
            seen_labels.add(s.label)
        data: dict[str, Any] = {"text": tt.text, "tokens": tk}
        if sents_extra[k] is not None:
            data["conll_extra"] = sents_extra[k]
        if sents_doc[k] is not None:
            data["conll_docstart"] = sents_doc[k]
        tasks.append(Task(k, None, tt.text, tt, gold=tuple(spans), data=data))

    if cfg is not None:
        unknown = seen_labels - set(cfg.labels)
        if unknown:
            first = next(t for t in tasks if t.gold and any(s.label in unknown for s in t.gold))
            raise ValueError(
                f"sentence {first.index + 1}: labels {sorted(unknown)} are not in the label "
                f"config labels {list(cfg.labels)}"
            )
        labels = cfg.labels
        from_name, to_name, value_key = cfg.from_name, cfg.to_name, cfg.value_key
        if value_key != "text":
            for t in tasks:
                t.data[value_key] = t.data.pop("text")
    else:
        labels = tuple(sorted(seen_labels))
        from_name, to_name, value_key = "label", "text", "text"
    if problems.items:
        warnings.warn(
            f"{len(problems)} tag(s) repaired while reading CoNLL ({sc.name}); first: "
            + problems.items[0].message,
            stacklevel=2,
        )
    return Dataset(tasks, labels, from_name, to_name, value_key, sc.name, problems)


def _well_formed(tag: str) -> bool:
    try:
        split_tag(tag)
    except ValueError:
        return False
    return True


def _first_malformed(
    sents: Sequence[Sequence[str]], lines: Sequence[int]
) -> tuple[int, int, str, int] | None:
    for k, tags in enumerate(sents):
        for i, tag in enumerate(tags):
            if not _well_formed(tag):
                return k, i, tag, lines[k] + i
    return None


def write_conll(
    ds: Dataset,
    path: str | Path | None = None,
    *,
    scheme: str = "iob2",
    which: Literal["gold", "pred"] = "gold",
    warn: bool = True,
) -> WriteReport:
    """Write ``ds`` as CoNLL (``token<TAB>tag``; space separated with the extra CoNLL-2003
    columns when every task has ``data["conll_extra"]``).

    Tokens are ``Task.tokens``.  Tasks without ``which`` spans (unannotated / no prediction)
    and tasks without tokens are skipped and listed in ``report.skipped``.  Character spans
    that do not line up with tokens are written over the tokens they touch and reported in
    ``report.problems`` (``"misaligned"``); spans covering no token, or that would overlap an
    earlier span after that mapping, are left out and reported (``"no_token"``,
    ``"dropped_span"``).

    Returns
    -------
    WriteReport with ``text`` = the CoNLL text (also written to ``path`` when given).
    """
    if which not in ("gold", "pred"):
        raise ValueError(f"which must be 'gold' or 'pred', got {which!r}")
    sc = get_scheme(scheme)
    rep = WriteReport("conll")
    with_extra = bool(ds.tasks) and all(
        isinstance(t.data.get("conll_extra"), list) and len(t.data["conll_extra"]) == len(t.tokens)
        for t in ds.tasks
    )
    sep = " " if with_extra else "\t"
    out: list[str] = []
    for t in ds.tasks:
        spans = t.gold if which == "gold" else t.pred
        if spans is None:
            rep.skipped.append((t.index, "unannotated" if which == "gold" else "no prediction"))
            continue
        n = len(t.tokens)
        if n == 0:
            rep.skipped.append((t.index, "no tokens"))
            continue
        tspans, arep = char_to_token_spans(t.tokens, spans, where=t.name, warn=False)
        for s in arep.misaligned:
            rep.problems.append(
                Problem(
                    "misaligned",
                    t.index,
                    which,
                    s,
                    f"{t.name}: span [{s.start}, {s.end}) {s.label!r} does not line up with "
                    "token boundaries; written over the tokens it touches",
                )
            )
        for s in arep.empty:
            rep.problems.append(
                Problem(
                    "no_token",
                    t.index,
                    which,
                    s,
                    f"{t.name}: span [{s.start}, {s.end}) {s.label!r} covers no token; left out",
                )
            )
        if arep.count:
            kept: list[TokenSpan] = []
            for ts in sorted(tspans):
                if kept and ts.start < kept[-1].end:
                    rep.problems.append(
                        Problem(
                            "dropped_span",
                            t.index,
                            which,
                            None,
                            f"{t.name}: token span [{ts.start}, {ts.end}) {ts.label!r} overlaps "
                            "another span after mapping to tokens; left out",
                        )
                    )
                    continue
                kept.append(ts)
            tspans = kept
        tags = encode(n, tspans, sc)
        toks = t.tokens.tokens
        bad = [tok for tok in toks if "\n" in tok or "\r" in tok or sep in tok]
        if bad:
            raise ValueError(
                f"{t.name}: token {bad[0]!r} contains a line break or the column separator "
                f"{sep!r}; it cannot be written as CoNLL"
            )
        doc = t.data.get("conll_docstart")
        if isinstance(doc, str) and doc:
            out.append(doc + "\n\n")
        if with_extra:
            extra = t.data["conll_extra"]
            rows = [sep.join([tok, *ex, tag]) for tok, ex, tag in zip(toks, extra, tags)]
        else:
            rows = [f"{tok}\t{tag}" for tok, tag in zip(toks, tags)]
        out.append("\n".join(rows))
        out.append("\n\n")
        rep.n_tasks += 1
        rep.n_spans += len(tspans)
    rep.text = "".join(out)
    if warn and (rep.problems or rep.skipped):
        warnings.warn(
            f"CoNLL output: {len(rep.skipped)} task(s) skipped, {len(rep.problems)} span "
            "problem(s)" + (f"; first: {rep.problems[0].message}" if rep.problems else ""),
            stacklevel=2,
        )
    if path is not None:
        Path(path).write_text(rep.text, encoding="utf-8", newline="")
    return rep


# ---------------------------------------------------------------------------------------------
# Label Studio JSON


def _is_region_list(val: Any) -> bool:
    if isinstance(val, Mapping):
        val = [val]
    return (
        isinstance(val, list)
        and bool(val)
        and all(
            isinstance(r, Mapping) and "start" in r and "end" in r and "labels" in r for r in val
        )
    )


def _min_to_full(
    rows: Sequence[Mapping[str, Any]], cfg: LabelConfig | None
) -> tuple[list[dict[str, Any]], str]:
    """Turn JSON-MIN rows into full-export-shaped tasks (rows of one id merged)."""
    keys: set[str] = set()
    for r in rows:
        keys.update(k for k, v in r.items() if k not in _MIN_META_KEYS and _is_region_list(v))
    if cfg is not None:
        key = cfg.from_name
        if key not in keys and keys:
            raise ValueError(
                f"JSON-MIN rows hold regions under {sorted(keys)}, but the label config's "
                f"Labels name is {key!r}"
            )
    elif len(keys) > 1:
        raise ValueError(
            f"JSON-MIN rows hold regions under several keys {sorted(keys)}; pass a label config "
            "to choose one"
        )
    else:
        key = next(iter(keys)) if keys else "label"
    to_name = cfg.to_name if cfg is not None else "text"
    out: list[dict[str, Any]] = []
    by_id: dict[Any, dict[str, Any]] = {}
    for r in rows:
        data = {k: v for k, v in r.items() if k not in _MIN_META_KEYS and k != key}
        annotated = key in r or "annotator" in r or "annotation_id" in r
        task: dict[str, Any] = {"data": data, "meta": r.get("meta") or {}, "annotations": []}
        if r.get("id") is not None:
            task["id"] = r["id"]
        if annotated:
            regs = r.get(key)
            if isinstance(regs, Mapping):
                regs = [regs]
            result = [
                {"from_name": key, "to_name": to_name, "type": "labels", "value": reg}
                for reg in (regs or [])
            ]
            ann: dict[str, Any] = {"result": result}
            if r.get("annotation_id") is not None:
                ann["id"] = r["annotation_id"]
            annotator = r.get("annotator")
            if annotator is not None:
                ann["completed_by"] = (
                    {"email": annotator}
                    if isinstance(annotator, str) and "@" in annotator
                    else {"id": annotator}
                )
            for k in ("created_at", "updated_at"):
                if k in r:
                    ann[k] = r[k]
            task["annotations"].append(ann)
        tid = r.get("id")
        if tid is not None and tid in by_id:
            by_id[tid]["annotations"].extend(task["annotations"])
            continue
        if tid is not None:
            by_id[tid] = task
        out.append(task)
    return out, key


@_gc_paused()
def from_ls_tasks(
    tasks: Sequence[Mapping[str, Any]],
    *,
    format: Format = "auto",
    label_config: str | Path | LabelConfig | None = None,
    annotator: str | int | None = None,
    model_version: str | None = None,
    strict: bool = True,
    warn: bool = True,
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
    """
    if format not in _FORMATS or format == "conll":
        raise ValueError(f"format must be 'auto', 'ls-json' or 'json-min', got {format!r}")
    if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
        raise TypeError(f"tasks must be a list of task dicts, got {type(tasks).__name__}")
    for i, t in enumerate(tasks):
        if not isinstance(t, Mapping):
            raise TypeError(f"task #{i}: expected a JSON object, got {type(t).__name__}")
    cfg = as_label_config(label_config)
    full = [isinstance(t.get("data"), Mapping) for t in tasks]
    kind = format
    if format == "auto":
        if any(full) and not all(full):
            i = full.index(False)
            raise ValueError(
                f"task #{i}: has no 'data' object while other tasks do (mixed full export and "
                "JSON-MIN)"
            )
        kind = "ls-json" if all(full) and tasks else "json-min"
    elif format == "ls-json" and not all(full):
        i = full.index(False)
        raise ValueError(f"task #{i}: has no 'data' object; is this JSON-MIN? (format='json-min')")
    elif format == "json-min" and any(full):
        raise ValueError("tasks have a 'data' object: this is a full export, not JSON-MIN")

    items: Sequence[Mapping[str, Any]]
    if kind == "json-min":
        items, _ = _min_to_full(tasks, cfg)
    else:
        items = list(tasks)

    # ---- choose annotation / prediction per task
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
            'serialization_options={"predictions": {"only_id": False}})',
            stacklevel=2,
        )

    # ---- from_name / to_name
    if cfg is not None:
        from_name, to_name, value_key = cfg.from_name, cfg.to_name, cfg.value_key
    else:
        pairs: set[tuple[str, str]] = set()
        for src in chosen_ann + chosen_pred:
            result = (src or {}).get("result")
            for reg in result if isinstance(result, list) else ():
                if _is_labels_region(reg):
                    pairs.add((str(reg.get("from_name")), str(reg.get("to_name"))))
        if len(pairs) > 1:
            raise ValueError(
                "regions use several (from_name, to_name) pairs "
                f"{sorted(pairs)}; pass a label config to choose one"
            )
        from_name, to_name = next(iter(pairs)) if pairs else ("label", "text")
        value_key = "text"
        if items:
            d0 = items[0]["data"]
            if to_name in d0 and "text" not in d0:
                value_key = to_name

    allowed = None if cfg is None else set(cfg.labels)
    problems = Problems()
    out: list[Task] = []
    seen: set[str] = set()
    for idx, it in enumerate(items):
        tid = it.get("id")
        where = task_name(tid, idx)
        data = dict(it["data"])
        meta_raw = it.get("meta")
        meta = dict(meta_raw) if isinstance(meta_raw, Mapping) else {}
        if value_key not in data:
            raise ValueError(
                f"{where}: data has no {value_key!r} field (fields: {sorted(data)[:10]})"
            )
        text = data[value_key]
        if not isinstance(text, str):
            raise TypeError(
                f"{where}: data[{value_key!r}] must be a string, got {type(text).__name__}"
            )
        toks = data.get("tokens")
        if toks is not None:
            tt = _pretokenized(toks, text, where)
        else:
            tt = tokenize(text)
        ann = chosen_ann[idx]
        gold = None
        annotator_name = None
        ann_id = None
        if ann is not None:
            gold = _parse_regions(ann.get("result") or [], text, where, "gold", idx,
                                   from_name, cfg, allowed, strict, problems)
            uid, email = annotator_of(ann)
            annotator_name = email or uid
            ann_id = ann.get("id") if isinstance(ann.get("id"), int) else None
        pr = chosen_pred[idx]
        pred = None
        pred_score = None
        mv = None
        if pr is not None:
            pred = _parse_regions(pr.get("result") or [], text, where, "pred", idx,
                                   from_name, cfg, allowed, strict, problems)
            sc = pr.get("score")
            pred_score = (
                float(sc) if isinstance(sc, (int, float)) and not isinstance(sc, bool) else None
            )
            mv = None if pr.get("model_version") is None else str(pr.get("model_version"))
        for spans in (gold, pred):
            if spans:
                seen.update(s.label for s in spans)
        split = data.get("split", meta.get("split"))
        out.append(
            Task(
                idx,
                tid,
                text,
                tt,
                gold=gold,
                pred=pred,
                pred_score=pred_score,
                annotator=annotator_name,
                split=None if split is None else str(split),
                data=data,
                meta=meta,
                annotation_id=ann_id,
                model_version=mv,
            )
        )
    labels = cfg.labels if cfg is not None else tuple(sorted(seen))
    problems.extend(check_alignment(out, warn=warn))
    dropped = problems.of("dropped_span")
    if dropped and warn:
        warnings.warn(
            f"{len(dropped)} invalid span(s) dropped (strict=False); first: {dropped[0].message}",
            stacklevel=2,
        )
    return Dataset(out, labels, from_name, to_name, value_key, None, problems)


def _pretokenized(toks: Any, text: str, where: str) -> TokenizedText:
    """``TokenizedText`` for ``data["tokens"]``, checked against the text (fast path of
    :func:`analysis.spans.from_tokens`: C-level ``join``/``map`` instead of per-token Python)."""
    try:
        joined = " ".join(toks) if isinstance(toks, list) else None
    except TypeError:
        joined = None
    if joined is None or "" in toks:
        raise ValueError(f"{where}: data['tokens'] must be a list of non-empty strings")
    if joined != text:
        raise ValueError(
            f"{where}: data['tokens'] joined by single spaces does not equal the text "
            f"({len(toks)} tokens, text length {len(text)})"
        )
    lengths = np.fromiter(map(len, toks), dtype=np.int64, count=len(toks))
    starts = np.zeros(len(toks), dtype=np.int64)
    if len(toks) > 1:
        np.cumsum(lengths[:-1] + 1, out=starts[1:])
    return TokenizedText(text, tuple(toks), starts, starts + lengths)


def _span_key(s: Span) -> tuple[int, int, str]:
    return (s.start, s.end, s.label)


def _is_labels_region(reg: Any) -> bool:
    if type(reg) is not dict and not isinstance(reg, Mapping):  # dict first: ABC checks are slow
        return False
    typ = reg.get("type")
    if typ is not None:
        return typ == "labels"
    val = reg.get("value")
    return isinstance(val, Mapping) and "labels" in val and "start" in val


def _parse_regions(
    result: Any,
    text: str,
    where: str,
    which: str,
    index: int,
    from_name: str,
    cfg: LabelConfig | None,
    allowed: set[str] | None,
    strict: bool,
    problems: Problems,
) -> tuple[Span, ...]:
    """Spans of one annotation / prediction result, validated and sorted by (start, end)."""
    if not isinstance(result, list):
        raise ValueError(f"{where}: {which} result must be a list, got {type(result).__name__}")
    n = len(text)
    spans: list[Span] = []

    def bad(msg: str, span: Span | None) -> None:
        if strict:
            raise ValueError(msg)
        problems.add(Problem("dropped_span", index, which, span, msg))

    for reg in result:
        # fast path for the common shape (a dict region of type "labels"); anything else goes
        # through the general check
        if type(reg) is dict and reg.get("type") == "labels":
            if reg.get("from_name", from_name) != from_name:
                continue
        elif not _is_labels_region(reg) or reg.get("from_name", from_name) != from_name:
            continue  # other controls (choices, relations, ...) are not NER spans
        val = reg["value"]
        start, end = val.get("start"), val.get("end")
        if type(start) is not int or type(end) is not int:  # bool and float are refused too
            if not (
                isinstance(start, int) and isinstance(end, int)
                and not isinstance(start, bool) and not isinstance(end, bool)
            ):
                raise TypeError(
                    f"{where}: {which} region {reg.get('id', '?')!r} has non-integer offsets "
                    f"start={start!r} end={end!r}"
                )
        labs = val.get("labels")
        if type(labs) is not list or len(labs) != 1 or type(labs[0]) is not str:
            if not isinstance(labs, list) or not labs or not all(isinstance(x, str) for x in labs):
                bad(f"{where}: {which} region [{start}, {end}) has no label (labels={labs!r})",
                    None)
                continue
            if len(labs) > 1:
                bad(
                    f"{where}: {which} region [{start}, {end}) has several labels {labs}; "
                    "NER needs one",
                    None,
                )
                continue
        label = cfg.canonical(labs[0]) if cfg is not None else labs[0]
        span = Span(start, end, label)
        if start < 0:
            bad(f"{where}: {which} span [{start}, {end}) {label!r} has a negative start", span)
            continue
        if start >= end:
            bad(
                f"{where}: {which} span [{start}, {end}) {label!r} is empty or reversed "
                "(start >= end)",
                span,
            )
            continue
        if end > n:
            bad(f"{where}: {which} span [{start}, {end}) {label!r} ends past text length {n}", span)
            continue
        vt = val.get("text")
        if vt is not None and vt != text[start:end]:
            raise ValueError(
                f"{where}: {which} span [{start}, {end}) {label!r} has value.text {vt!r} but the "
                f"task text there is {text[start:end]!r} (offsets must be code points)"
            )
        if allowed is not None and label not in allowed:
            bad(
                f"{where}: {which} span [{start}, {end}) has label {label!r} which is not in the "
                f"label config labels {sorted(allowed)}",
                span,
            )
            continue
        spans.append(span)
    if len(spans) > 1:
        spans.sort(key=_span_key)
    kept: list[Span] = []
    for s in spans:
        if kept and kept[-1].end > s.start:  # sorted by start: overlap iff prev.end > start
            p = kept[-1]
            bad(
                f"{where}: {which} spans [{p.start}, {p.end}) {p.label!r} and [{s.start}, {s.end}) "
                f"{s.label!r} overlap",
                s,
            )
            continue
        kept.append(s)
    return tuple(kept)


def _regions(spans: Sequence[Span], text: str, ds: Dataset, prefix: str) -> list[dict[str, Any]]:
    return [
        {
            "id": f"{prefix}{k}",
            "from_name": ds.from_name,
            "to_name": ds.to_name,
            "type": "labels",
            "value": {
                "start": s.start,
                "end": s.end,
                "text": text[s.start : s.end],
                "labels": [s.label],
            },
        }
        for k, s in enumerate(spans)
    ]


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
        raise ValueError(f"format must be 'ls-json' or 'json-min', got {format!r}")
    out: list[dict[str, Any]] = []
    for t in ds.tasks:
        data = dict(t.data)
        data[ds.value_key] = t.text
        if format == "json-min":
            row: dict[str, Any] = {}
            if t.id is not None:
                row["id"] = t.id
            row.update(data)
            if t.gold is not None:
                row[ds.from_name] = [
                    {
                        "start": s.start,
                        "end": s.end,
                        "text": t.text[s.start : s.end],
                        "labels": [s.label],
                    }
                    for s in t.gold
                ]
                if t.annotator is not None:
                    row["annotator"] = t.annotator
                if t.annotation_id is not None:
                    row["annotation_id"] = t.annotation_id
            out.append(row)
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
                "result": _regions(t.gold, t.text, ds, "g"),
                "was_cancelled": False,
                "ground_truth": False,
            }
            if t.annotation_id is not None:
                ann["id"] = t.annotation_id
            anns.append(ann)
        task["annotations"] = anns
        preds: list[dict[str, Any]] = []
        if t.pred is not None:
            pred: dict[str, Any] = {"result": _regions(t.pred, t.text, ds, "p")}
            if t.pred_score is not None:
                pred["score"] = t.pred_score
            if t.model_version is not None:
                pred["model_version"] = t.model_version
            preds.append(pred)
        task["predictions"] = preds
        out.append(task)
    return out


# ---------------------------------------------------------------------------------------------
# saving


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
            raise ValueError(f"cannot tell the output format from {path.name!r}; pass format=")
        format = fmt  # type: ignore[assignment]
    if format == "conll":
        return write_conll(ds, path, scheme=scheme, which=which)
    if format not in ("ls-json", "json-min"):
        raise ValueError(f"unknown output format {format!r}; use conll, ls-json or json-min")
    tasks = to_ls_tasks(ds, format=format)
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(tasks, fh, ensure_ascii=False)
    rep = WriteReport(format)
    rep.n_tasks = len(tasks)
    rep.n_spans = ds.n_spans("gold") + (ds.n_spans("pred") if format == "ls-json" else 0)
    return rep
