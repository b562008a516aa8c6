"""Spans, tokenized texts and the columnar span table.

Every offset in ner-quality is **half-open**: a character span ``[start, end)`` covers
``text[start:end]`` exactly like a Python slice and like Label Studio's ``value.start`` /
``value.end``; a token span ``[start, end)`` covers tokens ``start .. end-1``.

Two spans *overlap* iff ``a.start < b.end and b.start < a.end`` (touching spans such as
``[0, 5)`` and ``[5, 9)`` do not overlap).  This single rule is used by validation, alignment
and every error type.

>>> s = Span(0, 5, "PER")
>>> "Obama met Biden"[s.start:s.end]
'Obama'
>>> s.overlaps(Span(4, 9, "LOC")), s.overlaps(Span(5, 9, "LOC"))
(True, False)
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from itertools import chain

import numpy as np

__all__ = [
    "Span",
    "TokenSpan",
    "TokenizedText",
    "SpanTable",
    "AlignmentReport",
    "tokenize",
    "tokenize_many",
    "from_tokens",
    "char_to_token_spans",
    "token_ranges",
    "token_to_char_spans",
    "validate_spans",
    "check_spans",
    "span_problem",
]


@dataclass(frozen=True, slots=True, order=True)
class Span:
    """A labelled character span ``[start, end)`` (half-open)."""

    start: int
    end: int
    label: str

    def overlaps(self, other: Span) -> bool:
        """True iff the two half-open spans share at least one character."""
        return self.start < other.end and other.start < self.end

    def text(self, text: str) -> str:
        return text[self.start : self.end]


@dataclass(frozen=True, slots=True, order=True)
class TokenSpan:
    """A labelled token span ``[start, end)`` (half-open token indices)."""

    start: int
    end: int
    label: str


# A token is a run of word characters, or a single non-space, non-word character.
# ``\w`` is unicode-aware, so CJK and accented letters stay inside words; emoji and
# punctuation become one token each.  Zero-width characters (U+200B, U+FEFF, ...) are not
# whitespace for ``str.isspace`` and not ``\w``, so they become single-character tokens
# rather than disappearing: offsets are never silently shifted.
_TOKEN_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)


@dataclass(frozen=True)
class TokenizedText:
    """A text with per-token character offsets.

    Attributes
    ----------
    text : str
    tokens : tuple[str, ...]
        ``tokens[i] == text[starts[i]:ends[i]]`` for every ``i``.
    starts, ends : (n_tokens,) int64
        Half-open character offsets of each token, strictly increasing, non-overlapping.
    """

    text: str
    tokens: tuple[str, ...]
    starts: np.ndarray = field(repr=False)
    ends: np.ndarray = field(repr=False)

    def __len__(self) -> int:
        return len(self.tokens)


def tokenize(text: str) -> TokenizedText:
    """Split ``text`` into word and punctuation tokens, keeping character offsets.

    >>> tt = tokenize("Obama met Biden.")
    >>> tt.tokens
    ('Obama', 'met', 'Biden', '.')
    >>> [int(x) for x in tt.starts], [int(x) for x in tt.ends]
    ([0, 6, 10, 15], [5, 9, 15, 16])
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be str, got {type(text).__name__}")
    matches = list(_TOKEN_RE.finditer(text))
    starts = np.fromiter((m.start() for m in matches), dtype=np.int64, count=len(matches))
    ends = np.fromiter((m.end() for m in matches), dtype=np.int64, count=len(matches))
    return TokenizedText(text, tuple(m.group() for m in matches), starts, ends)


def tokenize_many(texts: Sequence[str]) -> list[TokenizedText]:
    """:func:`tokenize` of every text (the same tokens and offsets), in one regex pass.

    The texts are joined by ``"\\n"``, which no token can contain, so no token crosses from one
    text into the next; offsets are mapped back to each text with one vectorised subtraction.

    >>> [tt.tokens for tt in tokenize_many(["Obama met Biden.", "", "Hi"])]
    [('Obama', 'met', 'Biden', '.'), (), ('Hi',)]
    """
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"item {i}: text must be str, got {type(t).__name__}")
    matches = list(_TOKEN_RE.finditer("\n".join(texts)))
    n = len(matches)
    off = np.fromiter(chain.from_iterable(map(re.Match.span, matches)), dtype=np.int64,
                      count=2 * n).reshape(n, 2)
    toks = list(map(re.Match.group, matches))
    lens = np.fromiter(map(len, texts), dtype=np.int64, count=len(texts))
    base = np.zeros(len(texts) + 1, dtype=np.int64)
    np.cumsum(lens + 1, out=base[1:])
    bounds = np.searchsorted(off[:, 0], base).tolist()
    text_of = np.searchsorted(base, off[:, 0], side="right") - 1
    starts = off[:, 0] - base[text_of]
    ends = off[:, 1] - base[text_of]
    return [TokenizedText(t, tuple(toks[lo:hi]), starts[lo:hi], ends[lo:hi])
            for t, lo, hi in zip(texts, bounds[:-1], bounds[1:])]


def from_tokens(tokens: Sequence[str], *, sep: str = " ") -> TokenizedText:
    """Build a text from pre-tokenized input (CoNLL), joining tokens with ``sep``.

    The original tokenization is kept exactly: the token offsets point at the joined text.

    >>> tt = from_tokens(["New", "York", "."])
    >>> tt.text, [int(x) for x in tt.starts]
    ('New York .', [0, 4, 9])
    """
    toks = tuple(tokens)
    for i, tok in enumerate(toks):
        if not tok:
            raise ValueError(f"token {i} is empty; pre-tokenized input needs non-empty tokens")
    lengths = np.fromiter((len(t) for t in toks), dtype=np.int64, count=len(toks))
    starts = np.zeros(len(toks), dtype=np.int64)
    if len(toks) > 1:
        starts[1:] = np.cumsum(lengths[:-1] + len(sep))
    ends = starts + lengths
    return TokenizedText(sep.join(toks), toks, starts, ends)


def span_problem(span: Span, text_length: int, allowed: set[str] | None, *, where: str,
                 what: str = "span", label_source: str = "label set") -> str | None:
    """What is wrong with one span on its own (None: nothing): a negative start, an empty or
    reversed range, an end past the text, or a label outside ``allowed``."""
    r = f"{where}: {what} [{span.start}, {span.end})"
    if span.start < 0:
        return f"{r} {span.label!r} has a negative start"
    if span.start >= span.end:
        return f"{r} {span.label!r} is empty or reversed (start >= end)"
    if span.end > text_length:
        return f"{r} {span.label!r} ends past text length {text_length}"
    if allowed is not None and span.label not in allowed:
        return f"{r} has label {span.label!r} which is not in the {label_source} {sorted(allowed)}"
    return None


def check_spans(
    spans: Sequence[Span],
    text_length: int,
    *,
    where: str = "task",
    labels: Iterable[str] | None = None,
    strict: bool = True,
    what: str = "span",
    label_source: str = "label set",
) -> tuple[list[Span], list[tuple[Span, str]]]:
    """Validate spans against a text: the one span validation of the project.

    Checks each span (:func:`span_problem`), then — sorted by ``(start, end)`` — that no two
    overlap (the overlap rule of this module).  ``strict`` raises
    :class:`analysis.exceptions.DataError` naming ``where`` and the span for the first problem;
    otherwise the offending spans are dropped and returned with their messages.

    Returns
    -------
    kept : the valid spans, sorted by ``(start, end, label)``
    dropped : ``(span, message)`` of every span left out
    """
    from analysis.exceptions import DataError

    allowed = None if labels is None else set(labels)
    kept: list[Span] = []
    dropped: list[tuple[Span, str]] = []

    def bad(span: Span, msg: str) -> None:
        if strict:
            raise DataError(msg)
        dropped.append((span, msg))

    ok = []
    for sp in spans:
        msg = span_problem(sp, text_length, allowed, where=where, what=what,
                           label_source=label_source)
        if msg is None:
            ok.append(sp)
        else:
            bad(sp, msg)
    for sp in sorted(ok, key=lambda x: (x.start, x.end, x.label)):
        if kept and kept[-1].end > sp.start:  # sorted by start: overlap iff prev.end > start
            p = kept[-1]
            bad(sp, f"{where}: {what}s [{p.start}, {p.end}) {p.label!r} and [{sp.start}, "
                    f"{sp.end}) {sp.label!r} overlap")
            continue
        kept.append(sp)
    return kept, dropped


def validate_spans(
    spans: Sequence[Span],
    text_length: int,
    *,
    where: str = "task",
    labels: Iterable[str] | None = None,
) -> list[Span]:
    """Check spans against a text and return them sorted by ``(start, end)`` (strict
    :func:`check_spans`)."""
    return check_spans(spans, text_length, where=where, labels=labels)[0]


@dataclass(frozen=True)
class AlignmentReport:
    """Character spans that did not line up with token boundaries.

    ``misaligned`` holds the spans whose start is not a token start or whose end is not a
    token end; they are *reported*, never silently moved.  ``empty`` holds spans that
    cover no token at all (e.g. only whitespace).
    """

    misaligned: tuple[Span, ...] = ()
    empty: tuple[Span, ...] = ()

    @property
    def count(self) -> int:
        return len(self.misaligned) + len(self.empty)


def token_ranges(
    tok_start: np.ndarray,
    tok_end: np.ndarray,
    start: np.ndarray,
    end: np.ndarray,
    *,
    lo: np.ndarray | None = None,
    hi: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The token range of character spans: the one character -> token rule of the project.

    A span covers every token it overlaps (half-open overlap rule): its first token is the first
    that ends after the span starts, its end the first token that starts at or after the span
    ends.  ``lo`` / ``hi`` clip each range to its task's tokens when many tasks share one number
    line (:func:`analysis.corpus.map_to_tokens`).

    Parameters
    ----------
    tok_start, tok_end : (N,) int, sorted half-open token offsets
    start, end : (n,) int, half-open span offsets
    lo, hi : (n,) int, optional token bounds of each span's task

    Returns
    -------
    t0, t1 : (n,) int64 half-open token ranges (``t0 == t1``: the span covers no token)
    misaligned : (n,) bool, the span covers tokens but a boundary falls inside one

    >>> tt = tokenize("Obama met Biden")
    >>> [a.tolist() for a in token_ranges(tt.starts, tt.ends, np.array([0, 1]), np.array([5, 9]))]
    [[0, 0], [1, 2], [False, True]]
    """
    tok_start = np.asarray(tok_start, dtype=np.int64)
    tok_end = np.asarray(tok_end, dtype=np.int64)
    start = np.asarray(start, dtype=np.int64)
    end = np.asarray(end, dtype=np.int64)
    t0 = np.searchsorted(tok_end, start, side="right").astype(np.int64)
    t1 = np.searchsorted(tok_start, end, side="left").astype(np.int64)
    if lo is not None:
        t0 = np.maximum(t0, lo)
    if hi is not None:
        t1 = np.minimum(t1, hi)
    has = t1 > t0
    t1 = np.where(has, t1, t0)
    n = tok_start.shape[0]
    if not n:
        return t0, t1, np.zeros(len(start), dtype=bool)
    a = np.minimum(t0, n - 1)
    b = np.maximum(t1 - 1, 0)
    mis = has & ((tok_start[a] != start) | (tok_end[b] != end))
    return t0, t1, mis


def char_to_token_spans(
    tt: TokenizedText,
    spans: Sequence[Span],
    *,
    where: str = "task",
    warn: bool = True,
) -> tuple[list[TokenSpan], AlignmentReport]:
    """Map one text's character spans onto token spans (:func:`token_ranges`).

    A span whose boundaries fall inside a token, or that covers no token, is listed in the
    returned report and a warning is issued (``warn=True``).  Misaligned spans are still mapped
    to the tokens they touch, so callers that accept the caveat can use them; spans covering no
    token are dropped from the token list (and counted in ``report.empty``).  Input order is
    kept.
    """
    spans = list(spans)
    t0, t1, mis = token_ranges(tt.starts, tt.ends, np.fromiter((s.start for s in spans),
                                                              np.int64, len(spans)),
                               np.fromiter((s.end for s in spans), np.int64, len(spans)))
    has = t1 > t0
    out = [TokenSpan(int(a), int(b), s.label)
           for s, a, b, h in zip(spans, t0.tolist(), t1.tolist(), has.tolist()) if h]
    report = AlignmentReport(tuple(s for s, m in zip(spans, mis.tolist()) if m),
                             tuple(s for s, h in zip(spans, has.tolist()) if not h))
    if warn and report.count:
        bad = list(report.misaligned) + list(report.empty)
        warnings.warn(
            f"{where}: {len(report.misaligned)} span(s) do not line up with token boundaries and "
            f"{len(report.empty)} cover no token: "
            + ", ".join(f"[{s.start}, {s.end}) {s.label!r}" for s in bad[:5]),
            stacklevel=2,
        )
    return out, report


def token_to_char_spans(tt: TokenizedText, spans: Iterable[TokenSpan]) -> list[Span]:
    """Map token spans back to character spans (from first token start to last token end)."""
    n = len(tt)
    out = []
    for s in spans:
        if not (0 <= s.start < s.end <= n):
            raise ValueError(f"token span [{s.start}, {s.end}) out of range for {n} tokens")
        out.append(Span(int(tt.starts[s.start]), int(tt.ends[s.end - 1]), s.label))
    return out


@dataclass(frozen=True)
class SpanTable:
    """All spans of a dataset as parallel arrays (the columnar form the fast paths use).

    Attributes
    ----------
    task : (n,) int64   0-based task index of each span
    start, end : (n,) int64   half-open character (or token) offsets
    label : (n,) int32   index into ``labels``
    labels : tuple[str, ...]   label vocabulary shared by gold and prediction tables

    Rows are sorted by ``(task, start, end)``; spans of one task do not overlap.
    """

    task: np.ndarray
    start: np.ndarray
    end: np.ndarray
    label: np.ndarray
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return int(self.task.shape[0])

    @classmethod
    def from_arrays(
        cls,
        task: np.ndarray,
        start: np.ndarray,
        end: np.ndarray,
        label: np.ndarray,
        labels: Sequence[str],
    ) -> SpanTable:
        """Build a table from unsorted arrays, sorting rows by ``(task, start, end)``."""
        task = np.asarray(task, dtype=np.int64)
        start = np.asarray(start, dtype=np.int64)
        end = np.asarray(end, dtype=np.int64)
        label = np.asarray(label, dtype=np.int32)
        if not (task.shape == start.shape == end.shape == label.shape) or task.ndim != 1:
            raise ValueError("task, start, end and label must be 1-D arrays of equal length")
        order = np.lexsort((end, start, task))
        return cls(task[order], start[order], end[order], label[order], tuple(labels))

    @classmethod
    def from_spans(
        cls, per_task: Sequence[Sequence[Span]], labels: Sequence[str] | None = None
    ) -> SpanTable:
        """Build a table from one span list per task (task index = list position)."""
        if labels is None:
            labels = sorted({s.label for spans in per_task for s in spans})
        lab_id = {lab: i for i, lab in enumerate(labels)}
        n = sum(len(s) for s in per_task)
        task = np.empty(n, dtype=np.int64)
        start = np.empty(n, dtype=np.int64)
        end = np.empty(n, dtype=np.int64)
        label = np.empty(n, dtype=np.int32)
        k = 0
        for t, spans in enumerate(per_task):
            for s in spans:
                if s.label not in lab_id:
                    raise ValueError(
                        f"task {t}: label {s.label!r} is not in the label set {list(labels)}"
                    )
                task[k], start[k], end[k], label[k] = t, s.start, s.end, lab_id[s.label]
                k += 1
        return cls.from_arrays(task, start, end, label, labels)

    def with_labels(self, labels: Sequence[str]) -> SpanTable:
        """Re-index labels onto a (super-)set vocabulary ``labels``."""
        labels = tuple(labels)
        if labels == self.labels:
            return self
        pos = {lab: i for i, lab in enumerate(labels)}
        missing = [lab for lab in self.labels if lab not in pos]
        if missing:
            raise ValueError(f"labels {missing} are not in the target label set {list(labels)}")
        remap = np.array([pos[lab] for lab in self.labels], dtype=np.int32)
        new = remap[self.label] if len(self) else self.label
        return SpanTable(self.task, self.start, self.end, new, labels)

    def to_spans(self, n_tasks: int) -> list[list[Span]]:
        """Back to one ``Span`` list per task."""
        out: list[list[Span]] = [[] for _ in range(n_tasks)]
        for t, s, e, lab in zip(
            self.task.tolist(), self.start.tolist(), self.end.tolist(), self.label.tolist()
        ):
            out[t].append(Span(s, e, self.labels[lab]))
        return out


def union_labels(*tables: SpanTable) -> tuple[SpanTable, ...]:
    """Re-index several tables onto the sorted union of their label sets."""
    labels = tuple(sorted({lab for t in tables for lab in t.labels}))
    return tuple(t.with_labels(labels) for t in tables)
