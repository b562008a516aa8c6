"""Spans: half-open convention, tokenizer offsets, char <-> token mapping, SpanTable."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.spans import (
    Span,
    SpanTable,
    TokenSpan,
    char_to_token_spans,
    from_tokens,
    token_to_char_spans,
    tokenize,
    union_labels,
    validate_spans,
)


@pytest.mark.parametrize(
    "a,b,overlap",
    [
        ((0, 5), (5, 9), False),
        ((0, 5), (4, 9), True),
        ((3, 4), (0, 10), True),
        ((0, 1), (1, 2), False),
        ((2, 6), (2, 6), True),
    ],
    ids=["touching", "one-char", "nested", "adjacent-single", "identical"],
)
def test_half_open_overlap(a: tuple[int, int], b: tuple[int, int], overlap: bool) -> None:
    sa, sb = Span(*a, "X"), Span(*b, "Y")
    assert sa.overlaps(sb) is overlap
    assert sb.overlaps(sa) is overlap


def test_span_text_is_a_slice() -> None:
    assert Span(10, 15, "PER").text("Obama met Biden") == "Biden"


@pytest.mark.parametrize(
    "text,tokens",
    [
        ("Obama met Biden.", ["Obama", "met", "Biden", "."]),
        ("I \u2764 Paris \U0001f600!", ["I", "\u2764", "Paris", "\U0001f600", "!"]),
        (
            "\u6771\u4eac\u30bf\u30ef\u30fc is tall",
            ["\u6771\u4eac\u30bf\u30ef\u30fc", "is", "tall"],
        ),
        ("a\u200bb", ["a", "\u200b", "b"]),
        ("\ufeffhello", ["\ufeff", "hello"]),
        ("   ", []),
        ("", []),
        ("U.S.-based", ["U", ".", "S", ".", "-", "based"]),
    ],
    ids=["ascii", "emoji", "cjk", "zero-width-space", "bom", "whitespace", "empty", "punct"],
)
def test_tokenize_cases(text: str, tokens: list[str]) -> None:
    tt = tokenize(text)
    assert list(tt.tokens) == tokens
    for tok, s, e in zip(tt.tokens, tt.starts.tolist(), tt.ends.tolist()):
        assert text[s:e] == tok


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_tokenize_offsets_invariant(text: str) -> None:
    tt = tokenize(text)
    starts, ends = tt.starts.tolist(), tt.ends.tolist()
    for tok, s, e in zip(tt.tokens, starts, ends):
        assert text[s:e] == tok and s < e
    assert all(e <= s2 for e, s2 in zip(ends, starts[1:]))  # increasing, no overlap
    # nothing but whitespace is left out
    assert "".join(tt.tokens) == "".join(ch for ch in text if not ch.isspace())


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=1, max_size=8), max_size=15))
def test_from_tokens_invariant(tokens: list[str]) -> None:
    tt = from_tokens(tokens)
    assert tt.text == " ".join(tokens)
    assert list(tt.tokens) == tokens
    for tok, s, e in zip(tokens, tt.starts.tolist(), tt.ends.tolist()):
        assert tt.text[s:e] == tok


def test_from_tokens_rejects_empty_token() -> None:
    with pytest.raises(ValueError, match="token 1 is empty"):
        from_tokens(["a", "", "b"])


def test_validate_spans_sorts_and_rejects() -> None:
    out = validate_spans([Span(6, 9, "B"), Span(0, 5, "A")], 10, where="task 3")
    assert out == [Span(0, 5, "A"), Span(6, 9, "B")]
    with pytest.raises(ValueError, match=r"task 3: span \[8, 12\) 'A' ends past text length 10"):
        validate_spans([Span(8, 12, "A")], 10, where="task 3")
    with pytest.raises(ValueError, match=r"task 3: .*overlap"):
        validate_spans([Span(0, 5, "A"), Span(4, 6, "B")], 10, where="task 3")
    with pytest.raises(ValueError, match="start >= end"):
        validate_spans([Span(4, 4, "A")], 10, where="task 3")
    with pytest.raises(ValueError, match="not in the label set"):
        validate_spans([Span(0, 1, "Z")], 10, labels=["A"])


def test_char_to_token_spans_aligned_misaligned_empty() -> None:
    text = "New York  is big"
    tt = tokenize(text)  # New York is big ; two spaces at 8-9
    spans = [Span(0, 8, "LOC"), Span(1, 6, "LOC"), Span(8, 10, "X")]
    with pytest.warns(UserWarning, match="do not line up"):
        out, rep = char_to_token_spans(tt, spans, where="task 1")
    assert out == [TokenSpan(0, 2, "LOC"), TokenSpan(0, 2, "LOC")]
    assert rep.misaligned == (Span(1, 6, "LOC"),)
    assert rep.empty == (Span(8, 10, "X"),)
    assert rep.count == 2


def test_token_to_char_spans_roundtrip_and_range() -> None:
    tt = tokenize("Obama met Biden in New York")
    chars = token_to_char_spans(tt, [TokenSpan(4, 6, "LOC")])
    assert chars == [Span(19, 27, "LOC")]
    back, rep = char_to_token_spans(tt, chars)
    assert back == [TokenSpan(4, 6, "LOC")] and rep.count == 0
    with pytest.raises(ValueError, match="out of range"):
        token_to_char_spans(tt, [TokenSpan(5, 7, "LOC")])


def test_span_table_from_and_to_spans() -> None:
    per_task = [[Span(6, 9, "B"), Span(0, 2, "A")], [], [Span(1, 3, "B")]]
    tab = SpanTable.from_spans(per_task, labels=["A", "B"])
    assert len(tab) == 3
    assert tab.task.tolist() == [0, 0, 2]
    assert tab.start.tolist() == [0, 6, 1]
    assert tab.label.tolist() == [0, 1, 1]
    assert tab.to_spans(3) == [[Span(0, 2, "A"), Span(6, 9, "B")], [], [Span(1, 3, "B")]]
    with pytest.raises(ValueError, match="task 0: label 'A'"):
        SpanTable.from_spans(per_task, labels=["B"])


def test_span_table_relabel_and_union() -> None:
    a = SpanTable.from_spans([[Span(0, 1, "PER")]], labels=["PER"])
    b = SpanTable.from_spans([[Span(0, 1, "LOC")]], labels=["LOC"])
    ua, ub = union_labels(a, b)
    assert ua.labels == ub.labels == ("LOC", "PER")
    assert ua.labels[int(ua.label[0])] == "PER" and ub.labels[int(ub.label[0])] == "LOC"
    with pytest.raises(ValueError, match="not in the target label set"):
        a.with_labels(["LOC"])
    empty = SpanTable.from_spans([[]], labels=["X"])
    assert len(empty) == 0 and empty.task.dtype == np.int64
