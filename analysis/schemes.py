"""Tagging schemes (IOB1, IOB2/BIO, BIOES/IOBES, BILOU) declared as data.

Tags look like ``O`` or ``<prefix>-<TYPE>``.  A new span always starts at ``B-``, ``S-`` or
``U-`` (and, in IOB1 only, at an ``I-`` that does not continue a span of the same type), so
adjacent same-type entities stay separate: ``B-PER O B-PER`` and ``B-PER B-PER`` are two spans.

Strict decoding raises ``ValueError`` naming the sentence (``where``) and token position of the
first invalid tag.  Lenient decoding repairs and *counts* every problem:

``repair="begin"``
    an orphan continuation tag (``I-X`` with no open ``X`` span, ``E-X``/``L-X`` likewise)
    starts a new span, and a BIOES/BILOU span left without its end tag ends where it stops
    (what conlleval and seqeval's default mode do);
``repair="drop"``
    orphan runs and unterminated spans are dropped — what seqeval's ``mode="strict"`` does for
    IOB2, BIOES and BILOU (equal on every sequence of up to four tags, ``tests/test_schemes.py``).
    For IOB1 the two differ: here a ``B-X`` always begins a span (it marks a start, valid or
    not), while seqeval's strict IOB1 drops a ``B-X`` that does not follow an ``X`` span and
    even cuts ``B-X I-X`` down to its ``I-X`` part; ours is the reading that keeps the
    annotator's span.

Token spans returned are half-open ``[start, end)`` token indices.

>>> decode(["B-PER", "O", "B-PER", "I-PER"], "iob2").spans
(TokenSpan(start=0, end=1, label='PER'), TokenSpan(start=2, end=4, label='PER'))
>>> encode(4, [TokenSpan(0, 1, "PER"), TokenSpan(1, 3, "PER")], "bioes")
['S-PER', 'B-PER', 'E-PER', 'O']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

from .spans import TokenSpan

__all__ = [
    "Scheme",
    "SCHEMES",
    "SchemeName",
    "TagProblem",
    "Decoded",
    "decode",
    "encode",
    "convert",
    "detect_scheme",
    "scheme_from_evidence",
    "get_scheme",
    "split_tag",
]

SchemeName = Literal["iob1", "iob2", "bioes", "bilou"]
Repair = Literal["begin", "drop"]


@dataclass(frozen=True)
class Scheme:
    """A tagging scheme as data.

    Attributes
    ----------
    name : canonical name
    begin : prefix of the first token of a multi-token span (``None`` for IOB1, where ``I``
        begins spans and ``B`` only separates adjacent same-type spans)
    inside : prefix of middle tokens (and of the first token in IOB1)
    end : prefix of the last token of a multi-token span, or ``None``
    single : prefix of a one-token span, or ``None``
    """

    name: str
    begin: str | None
    inside: str
    end: str | None
    single: str | None

    @property
    def prefixes(self) -> frozenset[str]:
        return frozenset(p for p in ("B", self.inside, self.end, self.single) if p)


SCHEMES: dict[str, Scheme] = {
    "iob1": Scheme("iob1", None, "I", None, None),
    "iob2": Scheme("iob2", "B", "I", None, None),
    "bioes": Scheme("bioes", "B", "I", "E", "S"),
    "bilou": Scheme("bilou", "B", "I", "L", "U"),
}
_ALIASES = {"bio": "iob2", "iobes": "bioes", "iob": "iob2", "bmes": "bioes"}


def get_scheme(name: str | Scheme) -> Scheme:
    """Look a scheme up by name (case-insensitive; ``bio``/``iobes`` are aliases)."""
    if isinstance(name, Scheme):
        return name
    key = _ALIASES.get(name.lower(), name.lower())
    try:
        return SCHEMES[key]
    except KeyError:
        raise ValueError(
            f"unknown tagging scheme {name!r}; use one of {sorted(SCHEMES) + sorted(_ALIASES)}"
        ) from None


def split_tag(tag: str) -> tuple[str, str]:
    """Split ``"B-PER"`` into ``("B", "PER")``; ``"O"`` gives ``("O", "")``.

    Raises ``ValueError`` for a tag that is neither ``O`` nor ``<prefix>-<type>``.
    """
    if tag == "O":
        return "O", ""
    prefix, sep, typ = tag.partition("-")
    if not sep or not typ or len(prefix) != 1:
        raise ValueError(f"tag {tag!r} is not 'O' or '<prefix>-<TYPE>'")
    return prefix, typ


@dataclass(frozen=True)
class TagProblem:
    """One invalid tag found (and repaired) by lenient decoding."""

    position: int
    tag: str
    message: str


@dataclass(frozen=True)
class Decoded:
    """Result of :func:`decode`: spans plus the repairs made (empty in strict mode)."""

    spans: tuple[TokenSpan, ...]
    problems: tuple[TagProblem, ...] = ()


def decode(
    tags: Sequence[str],
    scheme: str | Scheme = "iob2",
    *,
    strict: bool = True,
    repair: Repair = "begin",
    where: str = "sentence",
) -> Decoded:
    """Turn a tag sequence into half-open token spans.

    Parameters
    ----------
    tags : per-token tags (``O`` or ``<prefix>-<TYPE>``)
    scheme : ``iob1``, ``iob2``, ``bioes`` or ``bilou``
    strict : raise on the first invalid tag (default) instead of repairing
    repair : how lenient mode repairs, see the module docstring
    where : names the sentence in error messages (``"sentence 17"``, ``"task 42"``)
    """
    sc = get_scheme(scheme)
    spans: list[TokenSpan] = []
    problems: list[TagProblem] = []
    # open span state
    cur_type = ""  # "" when no span is open
    cur_start = 0
    cur_valid = True  # False: an orphan run being dropped (repair="drop")
    cur_needs_end = False  # BIOES/BILOU span opened with B, waiting for E/L
    cur_orphan = False  # span opened by an orphan continuation tag (already reported)

    def problem(i: int, tag: str, msg: str) -> None:
        if strict:
            raise ValueError(f"{where}: invalid {sc.name.upper()} tag {tag!r} at token {i}: {msg}")
        problems.append(TagProblem(i, tag, msg))

    def close(i: int) -> None:
        nonlocal cur_type
        if cur_type:
            if cur_needs_end and not cur_orphan:
                problem(i - 1, tags[i - 1], f"span of type {cur_type} opened with B- has no end tag")
                if cur_valid and repair == "begin":
                    spans.append(TokenSpan(cur_start, i, cur_type))
            elif cur_valid:
                spans.append(TokenSpan(cur_start, i, cur_type))
        cur_type = ""

    def open_(
        i: int, typ: str, *, valid: bool = True, needs_end: bool = False, orphan: bool = False
    ) -> None:
        nonlocal cur_type, cur_start, cur_valid, cur_needs_end, cur_orphan
        cur_type, cur_start, cur_valid, cur_needs_end = typ, i, valid, needs_end
        cur_orphan = orphan

    for i, tag in enumerate(tags):
        try:
            prefix, typ = split_tag(tag)
        except ValueError as exc:
            close(i)
            problem(i, tag, str(exc) + "; treated as O")
            continue
        if prefix == "O":
            close(i)
            continue
        if prefix not in sc.prefixes:
            close(i)
            problem(i, tag, f"prefix {prefix!r} is not part of {sc.name.upper()}; treated as O")
            continue
        continues = cur_type == typ
        if sc.name == "iob1":
            if prefix == "I":
                if not continues:
                    close(i)
                    open_(i, typ)
            else:  # B: only valid right after a span of the same type
                if not continues:
                    close(i)
                    problem(i, tag, f"B-{typ} does not follow a {typ} span (IOB1 uses I- to begin)")
                    open_(i, typ)  # both repairs keep it: B always marks a start
                else:
                    close(i)
                    open_(i, typ)
            continue
        if prefix == "B":
            close(i)
            open_(i, typ, needs_end=sc.end is not None)
        elif sc.single is not None and prefix == sc.single:
            close(i)
            spans.append(TokenSpan(i, i + 1, typ))
        else:  # I or E/L: continuation
            is_end = prefix == sc.end
            if continues and (cur_needs_end or sc.end is None or cur_orphan):
                if is_end:
                    cur_needs_end = False
                    close(i + 1)
            else:
                close(i)
                problem(i, tag, f"{tag} does not continue an open {typ} span")
                open_(i, typ, valid=(repair == "begin"), orphan=True)
                if is_end:
                    close(i + 1)
    close(len(tags))
    return Decoded(tuple(spans), tuple(problems))


def encode(n_tokens: int, spans: Iterable[TokenSpan], scheme: str | Scheme = "iob2") -> list[str]:
    """Turn half-open token spans into ``n_tokens`` tags of ``scheme``.

    Raises ``ValueError`` for spans out of range, empty, or overlapping each other.
    """
    sc = get_scheme(scheme)
    tags = ["O"] * n_tokens
    prev_end, prev_type = -1, ""
    for s in sorted(spans, key=lambda s: (s.start, s.end)):
        if not (0 <= s.start < s.end <= n_tokens):
            raise ValueError(f"token span [{s.start}, {s.end}) out of range for {n_tokens} tokens")
        if s.start < prev_end:
            raise ValueError(f"token span [{s.start}, {s.end}) overlaps the previous span")
        if not s.label:
            raise ValueError(f"token span [{s.start}, {s.end}) has an empty label")
        t = s.label
        length = s.end - s.start
        if sc.name == "iob1":
            first = "B" if (prev_end == s.start and prev_type == t) else "I"
            tags[s.start] = f"{first}-{t}"
            for k in range(s.start + 1, s.end):
                tags[k] = f"I-{t}"
        elif length == 1 and sc.single is not None:
            tags[s.start] = f"{sc.single}-{t}"
        else:
            tags[s.start] = f"B-{t}"
            for k in range(s.start + 1, s.end):
                tags[k] = f"I-{t}"
            if sc.end is not None:
                tags[s.end - 1] = f"{sc.end}-{t}"
        prev_end, prev_type = s.end, t
    return tags


def convert(
    tags: Sequence[str],
    source: str | Scheme,
    target: str | Scheme,
    *,
    strict: bool = True,
    repair: Repair = "begin",
    where: str = "sentence",
) -> list[str]:
    """Convert a tag sequence between schemes (decode with ``source``, encode with ``target``)."""
    dec = decode(tags, source, strict=strict, repair=repair, where=where)
    return encode(len(tags), dec.spans, target)


def detect_scheme(sentences: Iterable[Sequence[str]]) -> str:
    """Guess the scheme of tagged sentences.

    ``E-``/``S-`` → ``bioes``; ``L-``/``U-`` → ``bilou``; an ``I-X`` that begins a span
    (sentence start, after ``O`` or another type) and no ``B-X`` after a non-``X`` token →
    ``iob1``; otherwise ``iob2`` (also when the data cannot tell IOB1 and IOB2 apart).
    Raises ``ValueError`` when the evidence contradicts itself (``E-`` and ``L-`` together).
    """
    seen: set[str] = set()
    i_begins = False
    b_after_other = False
    for tags in sentences:
        prev_type = ""
        for tag in tags:
            prefix, typ = split_tag(tag)
            seen.add(prefix)
            if prefix == "I" and typ != prev_type:
                i_begins = True
            if prefix == "B" and typ != prev_type:
                b_after_other = True
            prev_type = typ
    return scheme_from_evidence(seen, i_begins=i_begins, b_after_other=b_after_other)


def scheme_from_evidence(prefixes: Iterable[str], *, i_begins: bool, b_after_other: bool) -> str:
    """The scheme that the prefixes seen and the two IOB clues imply (see :func:`detect_scheme`).

    >>> scheme_from_evidence({"B", "I"}, i_begins=True, b_after_other=False)
    'iob1'
    """
    from .exceptions import DataError

    seen = set(prefixes) - {"O"}
    if seen & {"E", "S"} and seen & {"L", "U"}:
        raise DataError(f"tags mix BIOES (E-/S-) and BILOU (L-/U-) prefixes: {sorted(seen)}")
    if seen & {"E", "S"}:
        return "bioes"
    if seen & {"L", "U"}:
        return "bilou"
    unknown = seen - {"B", "I"}
    if unknown:
        raise DataError(f"unknown tag prefixes {sorted(unknown)}; expected B, I, E, S, L or U")
    return "iob1" if i_begins and not b_after_other else "iob2"
