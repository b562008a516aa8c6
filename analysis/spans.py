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

import numpy as np

__all__ = [
    "Span",
    "TokenSpan",
    "TokenizedText",
    "SpanTable",
    "AlignmentReport",
    "tokenize",
    "from_tokens",
    "char_to_token_spans",
    "token_to_char_spans",
    "validate_spans",
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


def validate_spans(
    spans: Sequence[Span],
    text_length: int,
    *,
    where: str = "task",
    labels: Iterable[str] | None = None,
) -> list[Span]:
    """Check spans against a text and return them sorted by ``(start, end)``.

    Raises ``ValueError`` naming ``where`` and the offending span for: negative offsets,
    ``start >= end``, ``end`` past ``text_length``, overlapping spans, or a label not in
    ``labels`` (when given).
    """
    allowed = None if labels is None else set(labels)
    out = sorted(spans, key=lambda s: (s.start, s.end, s.label))
    prev: Span | None = None
    for s in out:
        if s.start < 0:
            raise ValueError(f"{where}: span [{s.start}, {s.end}) {s.label!r} has a negative start")
        if s.start >= s.end:
            raise ValueError(
                f"{where}: span [{s.start}, {s.end}) {s.label!r} is empty or reversed (start >= end)"
            )
        if s.end > text_length:
            raise ValueError(
                f"{where}: span [{s.start}, {s.end}) {s.label!r} ends past text length {text_length}"
            )
        if allowed is not None and s.label not in allowed:
            raise ValueError(
                f"{where}: span [{s.start}, {s.end}) has label {s.label!r} which is not in the "
                f"label set {sorted(allowed)}"
            )
        if prev is not None and prev.overlaps(s):
            raise ValueError(
                f"{where}: spans [{prev.start}, {prev.end}) {prev.label!r} and "
                f"[{s.start}, {s.end}) {s.label!r} overlap"
            )
        prev = s
    return out


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


def char_to_token_spans(
    tt: TokenizedText,
    spans: Sequence[Span],
    *,
    where: str = "task",
    warn: bool = True,
) -> tuple[list[TokenSpan], AlignmentReport]:
    """Map character spans onto token spans.

    A span covers every token it overlaps (half-open overlap rule).  A span whose boundaries
    fall inside a token, or that covers no token, is listed in the returned report and a
    warning is issued (``warn=True``).  Misaligned spans are still mapped to the tokens they
    touch, so callers that accept the caveat can use them; spans covering no token are dropped
    from the token list (and counted in ``report.empty``).
    """
    out: list[TokenSpan] = []
    mis: list[Span] = []
    empty: list[Span] = []
    starts, ends = tt.starts, tt.ends
    for s in spans:
        # first token that ends after span start; first token that starts at/after span end
        t0 = int(np.searchsorted(ends, s.start, side="right"))
        t1 = int(np.searchsorted(starts, s.end, side="left"))
        if t1 <= t0:
            empty.append(s)
            continue
        if starts[t0] != s.start or ends[t1 - 1] != s.end:
            mis.append(s)
        out.append(TokenSpan(t0, t1, s.label))
    report = AlignmentReport(tuple(mis), tuple(empty))
    if warn and report.count:
        warnings.warn(
            f"{where}: {len(mis)} span(s) do not line up with token boundaries and "
            f"{len(empty)} cover no token: "
            + ", ".join(f"[{s.start}, {s.end}) {s.label!r}" for s in (mis + empty)[:5]),
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
