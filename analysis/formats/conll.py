"""CoNLL files: read into a corpus (vectorised), write from a dataset.

``token<TAB>tag`` (or space separated ``token POS chunk NER`` as in CoNLL-2003), one token per
line, a blank line after each sentence.  ``-DOCSTART-`` lines separate documents: they create no
task; the line is kept in the next task's ``data["conll_docstart"]`` and written back.  Extra
middle columns are kept in ``data["conll_extra"]`` (one list per token).  The tag scheme is
detected once for the file (:func:`detect_scheme_columns`) unless given.  Strict mode raises on
the first invalid tag, naming the sentence, line and token; lenient mode repairs (an orphan
``I-X`` begins a span) and counts every repair in ``Dataset.problems``.  Whitespace around a tag
(``B-ORG␠``) is removed and counted as a repair.  A leading UTF-8 BOM is dropped and ``\\r\\n``
line ends are read as ``\\n``.

Reading builds the :class:`analysis.corpus.Corpus` directly from the file's columns
(:mod:`analysis.formats.conll_lines`); :class:`analysis.dataset.Task` objects are made only when
a caller asks for them.  :func:`read_conll` takes a path, :func:`parse_conll` CoNLL text.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from analysis.corpus import Corpus, SpanColumns
from analysis.dataset import Dataset, Problem, Problems, Task
from analysis.exceptions import DataError
from analysis.formats.conll_lines import Lines, split_lines
from analysis.formats.label_config import LabelConfig, as_label_config
from analysis.schemes import decode, get_scheme, scheme_from_evidence, split_tag
from analysis.spans import Span, SpanTable

__all__ = ["read_conll", "parse_conll", "TagColumns", "SchemeEvidence", "scheme_evidence",
           "scheme_of", "detect_scheme_columns", "file_scheme_evidence", "read_bytes"]

_PREFIXES = "OBIESLU"


def read_bytes(path: str | Path) -> bytes:
    """The file's bytes, checked to be non-empty UTF-8 (the BOM removed)."""
    return read_text(path)[0]


def read_text(path: str | Path) -> tuple[bytes, str]:
    """The file's bytes and text, checked to be non-empty UTF-8 (the BOM removed)."""
    p = Path(path)
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not a file")
    data = p.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(f"{p}: not valid UTF-8 at byte {exc.start} (line {line}): {exc.reason}; "
                        "re-encode the file as UTF-8") from None
    if not text or text.isspace():
        raise DataError(f"{p}: file is empty")
    return (data[3:] if data.startswith(b"\xef\xbb\xbf") else data), text


@dataclass(frozen=True, eq=False)
class TagColumns:
    """The tags of a file as columns: per distinct tag its prefix and type, per token the code.

    ``prefix`` is one of ``O B I E S L U`` (``?`` for a malformed tag), ``type`` the entity type
    ("" for ``O``); ``stripped`` marks distinct tags written with surrounding whitespace.
    """

    codes: np.ndarray
    vocab: list[str]
    prefix: np.ndarray  # (n_distinct,) <U1
    type_id: np.ndarray  # (n_distinct,) int64 index into types, -1 for O / malformed
    types: list[str]
    malformed: np.ndarray  # (n_distinct,) bool
    stripped: np.ndarray  # (n_distinct,) bool

    @classmethod
    def build(cls, codes: np.ndarray, vocab: list[str]) -> TagColumns:
        clean = [v.strip() for v in vocab]
        prefix, type_id, bad, types = [], [], [], {}  # type: ignore[var-annotated]
        for v in clean:
            try:
                p, typ = split_tag(v)
            except ValueError:
                p, typ = "?", ""
            prefix.append(p)
            bad.append(p == "?")
            type_id.append(-1 if p in ("O", "?") else types.setdefault(typ, len(types)))
        return cls(codes, clean, np.array(prefix, dtype="<U1"), np.array(type_id, np.int64),
                   list(types), np.array(bad, bool),
                   np.array([v != c for v, c in zip(vocab, clean)], bool))

    @cached_property
    def token_prefix(self) -> np.ndarray:
        """(N,) int8 index into :data:`PREFIX_CODES` of every token's prefix (once)."""
        code = np.array([PREFIX_CODES.index(p) for p in self.prefix.tolist()], dtype=np.int8)
        return code[self.codes]

    @cached_property
    def token_type(self) -> np.ndarray:
        """(N,) int64 type id of every token (-1: ``O`` or malformed)."""
        return self.type_id[self.codes]


#: the prefix codes of :attr:`TagColumns.token_prefix`
PREFIX_CODES = ("O", "B", "I", "E", "S", "L", "U", "?")
_O, _B, _I, _BAD = 0, 1, 2, 7


def sentence_starts(sentence: np.ndarray) -> np.ndarray:
    """(N,) bool: the token begins its sentence (``sentence`` non-decreasing per token)."""
    first = np.ones(sentence.shape[0], dtype=bool)
    if sentence.shape[0] > 1:
        np.not_equal(sentence[1:], sentence[:-1], out=first[1:])
    return first


def _prev_type(typ: np.ndarray, first: np.ndarray) -> np.ndarray:
    """The type of the previous token of the same sentence (-1 at a sentence start)."""
    prev = np.empty_like(typ)
    prev[1:] = typ[:-1]
    prev[first] = -1
    return prev


@dataclass(frozen=True)
class SchemeEvidence:
    """What a file's tags say about their scheme (:func:`scheme_of`)."""

    prefixes: frozenset[str]
    i_begins: bool  # an I-X begins a span (after O, another type or a sentence start)
    b_after_other: bool  # a B-X follows a token of another type


def scheme_evidence(tags: TagColumns, sentence: np.ndarray, *,
                    first: np.ndarray | None = None) -> SchemeEvidence:
    """The evidence of one file's tags (malformed tags count as ``O``); ``first``: the
    :func:`sentence_starts` of ``sentence`` when already known."""
    ok = ~tags.malformed
    pre = tags.token_prefix
    typ = tags.token_type
    new_type = typ != _prev_type(typ, sentence_starts(sentence) if first is None else first)
    return SchemeEvidence(frozenset(tags.prefix[ok].tolist()) - {"O"},
                          bool(np.any((pre == _I) & new_type)),
                          bool(np.any((pre == _B) & new_type)))


def scheme_of(*evidence: SchemeEvidence) -> str:
    """:func:`analysis.schemes.detect_scheme` over the evidence of one or more files together.

    ``E-``/``S-`` → ``bioes``; ``L-``/``U-`` → ``bilou``; an ``I-X`` that begins a span and no
    ``B-X`` after a non-``X`` token → ``iob1``; otherwise ``iob2``.
    """
    return scheme_from_evidence(frozenset().union(*(e.prefixes for e in evidence)),
                                i_begins=any(e.i_begins for e in evidence),
                                b_after_other=any(e.b_after_other for e in evidence))


def detect_scheme_columns(tags: TagColumns, sentence: np.ndarray) -> str:
    """The scheme of one file's tags (:func:`scheme_of` of its :func:`scheme_evidence`)."""
    return scheme_of(scheme_evidence(tags, sentence))


def file_scheme_evidence(path: str | Path) -> SchemeEvidence:
    """The scheme evidence of a CoNLL file (to detect one scheme for several files)."""
    lines = split_lines(read_bytes(path))
    return scheme_evidence(TagColumns.build(lines.tag_codes, lines.tag_vocab), lines.sentence)


@dataclass(frozen=True, eq=False)
class _Decoded:
    t0: np.ndarray  # global token ranges
    t1: np.ndarray
    type_id: np.ndarray
    problems: list[tuple[int, str, str]]  # (token row, tag, message)


def _decode_iob(tags: TagColumns, first: np.ndarray, scheme: str) -> _Decoded:
    """Lenient decoding of IOB1 / IOB2 tags over all sentences at once (``first``: the
    sentence starts), with the problems :func:`analysis.schemes.decode` reports."""
    pre = tags.token_prefix
    typ = tags.token_type
    bad_pre = (pre > _I) & (pre != _BAD)  # E- S- L- U-
    if bad_pre.any():
        typ = typ.copy()
        typ[bad_pre] = -1
    prev = _prev_type(typ, first)
    start = (typ >= 0) & ((pre == _B) | first | (prev != typ))
    brk = (typ < 0) | start | first
    starts = np.flatnonzero(start)
    brk_pos = np.flatnonzero(brk)
    nxt = np.searchsorted(brk_pos, starts, side="right")
    ends = np.where(nxt < brk_pos.size, brk_pos[np.minimum(nxt, max(brk_pos.size - 1, 0))],
                    len(typ))
    if scheme == "iob2":
        issue = (pre == _I) & (typ >= 0) & (prev != typ)
    else:
        issue = (pre == _B) & (typ >= 0) & (prev != typ)
    rows = np.flatnonzero(issue | (pre == _BAD) | bad_pre)
    problems = []
    for r in rows.tolist():
        tag = tags.vocab[int(tags.codes[r])]
        if pre[r] == _BAD:
            try:
                split_tag(tag)
            except ValueError as exc:
                problems.append((r, tag, f"{exc}; treated as O"))
        elif bad_pre[r]:
            problems.append((r, tag, f"prefix {PREFIX_CODES[pre[r]]!r} is not part of "
                                     f"{scheme.upper()}; treated as O"))
        elif scheme == "iob2":
            problems.append((r, tag, f"{tag} does not continue an open {tag[2:]} span"))
        else:
            problems.append((r, tag, f"B-{tag[2:]} does not follow a {tag[2:]} span (IOB1 uses "
                                     "I- to begin)"))
    return _Decoded(starts.astype(np.int64), ends.astype(np.int64), typ[starts], problems)


def _decode_per_sentence(tags: TagColumns, offsets: np.ndarray, scheme: str) -> _Decoded:
    """BIOES / BILOU: the scheme decoder of :mod:`analysis.schemes` sentence by sentence."""
    vocab = tags.vocab
    all_tags = [vocab[c] for c in tags.codes.tolist()]
    t0: list[int] = []
    t1: list[int] = []
    tid: list[int] = []
    problems: list[tuple[int, str, str]] = []
    types = {t: i for i, t in enumerate(tags.types)}
    for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
        dec = decode(all_tags[a:b], scheme, strict=False, repair="begin")
        for s in dec.spans:
            t0.append(a + s.start)
            t1.append(a + s.end)
            tid.append(types[s.label])
        problems.extend((a + p.position, p.tag, p.message) for p in dec.problems)
    return _Decoded(np.asarray(t0, np.int64), np.asarray(t1, np.int64), np.asarray(tid, np.int64),
                    problems)


def _scheme(tags: TagColumns, lines: Lines, scheme: str | None, strict: bool,
            first: np.ndarray) -> str:
    if scheme is not None:
        return get_scheme(scheme).name
    bad = np.flatnonzero(tags.malformed[tags.codes])
    if bad.size and strict:
        r = int(bad[0])
        k = int(lines.sentence[r])
        raise DataError(f"sentence {k + 1} (line {lines.line[r]}): invalid tag "
                        f"{tags.vocab[int(tags.codes[r])]!r} at token "
                        f"{r - int(lines.sentence_offsets[k])}: expected 'O' or '<prefix>-<TYPE>'")
    return scheme_of(scheme_evidence(tags, lines.sentence, first=first))


def _check_problems(dec: _Decoded, lines: Lines, scheme: str, strict: bool) -> list[Problem]:
    out: list[Problem] = []
    for r, tag, msg in sorted(dec.problems, key=lambda p: p[0]):
        k = int(lines.sentence[r])
        pos = r - int(lines.sentence_offsets[k])
        text = (f"sentence {k + 1} (line {lines.line[r]}): invalid {scheme.upper()} tag {tag!r} "
                f"at token {pos}: {msg}")
        if strict:
            raise DataError(text)
        out.append(Problem("tag_repair", k, "gold", None, text))
    return out


def _whitespace_problems(tags: TagColumns, lines: Lines) -> list[Problem]:
    rows = np.flatnonzero(tags.stripped[tags.codes])
    out = []
    for r in rows.tolist():
        k = int(lines.sentence[r])
        out.append(Problem("tag_whitespace", k, "gold", None,
                           f"sentence {k + 1} (line {lines.line[r]}): whitespace around tag "
                           f"{tags.vocab[int(tags.codes[r])]!r} removed"))
    return out


@dataclass(frozen=True, eq=False)
class _Columns:
    """Tokens and gold spans of the whole file, ready for the corpus."""

    tokens: np.ndarray
    texts: list[str]
    start: np.ndarray
    end: np.ndarray
    span_task: np.ndarray
    t0: np.ndarray
    t1: np.ndarray
    span_label: np.ndarray
    labels: tuple[str, ...]
    token_codes: np.ndarray
    token_vocab: list[str]


def _columns(lines: Lines, dec: _Decoded, tags: TagColumns, cfg: LabelConfig | None) -> _Columns:
    vocab = np.empty(len(lines.token_vocab), dtype=object)
    vocab[:] = lines.token_vocab
    tokens = vocab[lines.token_codes]
    vlen = np.fromiter((len(v) for v in lines.token_vocab), dtype=np.int64,
                       count=len(lines.token_vocab))
    length = vlen[lines.token_codes]
    off = lines.sentence_offsets
    csum = np.cumsum(length + 1)  # tokens joined by one space
    before = csum - length - 1  # chars before each token in the whole file
    base = before[off[:-1]] if len(off) > 1 else np.zeros(0, dtype=np.int64)
    start = before - np.repeat(base, np.diff(off))
    # the whole file's tokens joined by one space, once; each sentence is a slice of it
    big = " ".join(tokens.tolist())
    lo = before[off[:-1]] if len(off) > 1 else np.zeros(0, dtype=np.int64)
    hi = np.append(before[off[1:-1]] - 1, len(big)) if len(off) > 1 else lo
    hi = np.where(np.diff(off) > 0, hi, lo)
    texts = [big[a:b] for a, b in zip(lo.tolist(), hi.tolist())]
    span_task = lines.sentence[dec.t0] if dec.t0.size else np.zeros(0, dtype=np.int64)
    types = tags.types
    if cfg is not None:
        used = sorted({types[i] for i in np.unique(dec.type_id).tolist()})
        unknown = sorted(set(used) - set(cfg.labels))
        if unknown:
            bad = np.flatnonzero(np.isin(dec.type_id, [types.index(u) for u in unknown]))
            k = int(span_task[bad[0]])
            raise DataError(f"sentence {k + 1}: labels {unknown} are not in the label config "
                            f"labels {list(cfg.labels)}")
        labels = tuple(cfg.labels)
    else:
        labels = tuple(sorted({types[i] for i in np.unique(dec.type_id).tolist()}))
    pos = {lab: j for j, lab in enumerate(labels)}
    remap = np.array([pos.get(t, -1) for t in types], dtype=np.int64)
    label = remap[dec.type_id] if dec.t0.size else np.zeros(0, dtype=np.int64)
    return _Columns(tokens, texts, start, start + length, span_task.astype(np.int64), dec.t0,
                    dec.t1, label, labels, lines.token_codes, lines.token_vocab)


def _corpus(c: _Columns, offsets: np.ndarray, problem_tasks: Sequence[int]) -> Corpus:
    n = len(c.texts)
    t0, t1 = c.t0, c.t1
    chars = SpanTable(c.span_task, c.start[t0] if t0.size else t0,
                      c.end[t1 - 1] if t1.size else t1, c.span_label.astype(np.int32), c.labels)
    ones = np.ones(len(t0), dtype=bool)
    gold = SpanColumns(chars, t0, t1, ones, ~ones)
    return Corpus(labels=c.labels, texts=c.texts, task_ids=np.full(n, -1, dtype=np.int64),
                  has_id=np.zeros(n, dtype=bool), annotated=np.ones(n, dtype=bool),
                  token_offsets=offsets, token_start=c.start, token_end=c.end, tokens=c.tokens,
                  _token_factors=(c.token_codes, c.token_vocab),
                  gold=gold, split=np.full(n, None, dtype=object),
                  annotator=np.full(n, None, dtype=object),
                  load_problem_tasks=np.asarray(sorted(set(problem_tasks)), dtype=np.int64))


def _task_factory(corpus: Corpus, lines: Lines, value_key: str) -> Any:
    """Builds task ``k`` on demand (the dataset's tasks are made lazily); keeps only the
    per-sentence extras of ``lines``, not its per-token arrays."""
    gold = corpus.gold.chars
    extra, docstarts = lines.extra, lines.docstart

    def make(k: int) -> Task:
        tt = corpus.task_tokens(k)
        a, b = np.searchsorted(gold.task, [k, k + 1])
        spans = tuple(Span(int(s), int(e), gold.labels[int(lab)]) for s, e, lab in
                      zip(gold.start[a:b].tolist(), gold.end[a:b].tolist(),
                          gold.label[a:b].tolist()))
        data: dict[str, Any] = {"text": tt.text, "tokens": list(tt.tokens)}
        if extra is not None:
            data["conll_extra"] = extra[k]
        if docstarts[k] is not None:
            data["conll_docstart"] = docstarts[k]
        if value_key != "text":
            data[value_key] = data.pop("text")
        return Task(k, None, tt.text, tt, gold=spans, data=data)

    return make


def _parse(raw: bytes, *, scheme: str | None, strict: bool,
           label_config: str | Path | LabelConfig | None) -> Dataset:
    cfg = as_label_config(label_config)
    lines = split_lines(raw)
    tags = TagColumns.build(lines.tag_codes, lines.tag_vocab)
    first = sentence_starts(lines.sentence)
    try:
        sc = _scheme(tags, lines, scheme, strict, first)
    except DataError as exc:
        if str(exc).startswith("sentence"):
            raise
        raise DataError(f"cannot detect the tag scheme: {exc}") from None
    dec = (_decode_iob(tags, first, sc) if sc in ("iob1", "iob2")
           else _decode_per_sentence(tags, lines.sentence_offsets, sc))
    problems = Problems(checked=int((tags.token_prefix != _O).sum()))
    problems.extend(_check_problems(dec, lines, sc, strict))
    problems.extend(_whitespace_problems(tags, lines))
    cols = _columns(lines, dec, tags, cfg)
    corpus = _corpus(cols, lines.sentence_offsets,
                     [p.task for p in problems.items if p.kind == "tag_repair"])
    value_key = cfg.value_key if cfg is not None else "text"
    ds = Dataset.from_corpus(
        corpus, _task_factory(corpus, lines, value_key),
        from_name=cfg.from_name if cfg is not None else "label",
        to_name=cfg.to_name if cfg is not None else "text", value_key=value_key, scheme=sc,
        problems=problems)
    if problems.items:
        warnings.warn(f"{len(problems)} tag(s) repaired while reading CoNLL ({sc}); first: "
                      + problems.items[0].message, stacklevel=3)
    return ds


def read_conll(
    path: str | Path,
    *,
    scheme: str | None = None,
    strict: bool = True,
    label_config: str | Path | LabelConfig | None = None,
) -> Dataset:
    """Read a CoNLL file into a Dataset, one task per sentence (see the module docstring).

    Tokens keep their exact form (``data["tokens"]``); ``Task.text`` is the tokens joined by one
    space; ``Task.gold`` the decoded spans.  Errors name the file, sentence and line.
    """
    p = Path(path)
    raw = read_bytes(p)
    try:
        return _parse(raw, scheme=scheme, strict=strict, label_config=label_config)
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None


def parse_conll(
    text: str,
    *,
    scheme: str | None = None,
    strict: bool = True,
    label_config: str | Path | LabelConfig | None = None,
) -> Dataset:
    """Parse CoNLL *text* (not a path: see :func:`read_conll`) into a Dataset."""
    if not isinstance(text, str):
        raise TypeError(f"parse_conll takes CoNLL text (str), got {type(text).__name__}; use "
                        "read_conll(path) for a file")
    raw = text.encode("utf-8")
    if raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    if not text.strip():
        raise DataError("CoNLL text is empty")
    return _parse(raw, scheme=scheme, strict=strict, label_config=label_config)
