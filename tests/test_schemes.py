"""Tag schemes: truth tables for decode / encode / detect, strict errors, lenient repairs,
and the spans -> tags -> spans identity as a property."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.schemes import SCHEMES, convert, decode, detect_scheme, encode, get_scheme, split_tag
from analysis.spans import TokenSpan, token_to_char_spans, tokenize

P, L, O_ = "PER", "LOC", "ORG"


def ts(*triples: tuple[int, int, str]) -> tuple[TokenSpan, ...]:
    return tuple(TokenSpan(s, e, lab) for s, e, lab in triples)


# (scheme, tags, expected half-open token spans) -- written by hand from the scheme rules
DECODE_TABLE = [
    ("iob2", [], ()),
    ("iob2", ["O", "O"], ()),
    ("iob2", ["B-PER", "I-PER", "O"], ts((0, 2, P))),
    ("iob2", ["B-PER", "B-PER"], ts((0, 1, P), (1, 2, P))),
    ("iob2", ["B-PER", "O", "B-PER"], ts((0, 1, P), (2, 3, P))),
    ("iob2", ["B-PER", "I-PER", "B-LOC"], ts((0, 2, P), (2, 3, L))),
    ("iob2", ["O", "B-LOC", "I-LOC", "I-LOC"], ts((1, 4, L))),
    ("iob1", ["I-PER", "I-PER", "O"], ts((0, 2, P))),
    ("iob1", ["I-PER", "B-PER"], ts((0, 1, P), (1, 2, P))),
    ("iob1", ["I-PER", "I-LOC"], ts((0, 1, P), (1, 2, L))),
    ("iob1", ["O", "I-ORG"], ts((1, 2, O_))),
    ("iob1", ["I-PER", "B-PER", "I-PER"], ts((0, 1, P), (1, 3, P))),
    ("bioes", ["S-PER", "B-PER", "E-PER"], ts((0, 1, P), (1, 3, P))),
    ("bioes", ["B-LOC", "I-LOC", "E-LOC"], ts((0, 3, L))),
    ("bioes", ["S-PER", "S-PER"], ts((0, 1, P), (1, 2, P))),
    ("bioes", ["O", "S-ORG", "O"], ts((1, 2, O_))),
    ("bilou", ["U-PER", "B-ORG", "L-ORG"], ts((0, 1, P), (1, 3, O_))),
    ("bilou", ["B-LOC", "I-LOC", "I-LOC", "L-LOC"], ts((0, 4, L))),
    ("bilou", ["U-PER", "U-PER"], ts((0, 1, P), (1, 2, P))),
]


@pytest.mark.parametrize(
    "scheme,tags,expected",
    DECODE_TABLE,
    ids=[f"{s}:{' '.join(t) or 'empty'}" for s, t, _ in DECODE_TABLE],
)
def test_decode_truth_table(scheme: str, tags: list[str], expected: tuple[TokenSpan, ...]) -> None:
    dec = decode(tags, scheme)
    assert dec.spans == expected
    assert dec.problems == ()


# (scheme, n_tokens, spans, expected tags)
ENCODE_TABLE = [
    ("iob2", 4, ts((0, 1, P), (1, 3, P)), ["B-PER", "B-PER", "I-PER", "O"]),
    ("iob1", 4, ts((0, 1, P), (1, 3, P)), ["I-PER", "B-PER", "I-PER", "O"]),
    ("iob1", 3, ts((0, 1, P), (2, 3, P)), ["I-PER", "O", "I-PER"]),
    ("iob1", 2, ts((0, 1, P), (1, 2, L)), ["I-PER", "I-LOC"]),
    ("bioes", 4, ts((0, 1, P), (1, 3, P)), ["S-PER", "B-PER", "E-PER", "O"]),
    ("bioes", 3, ts((0, 3, L)), ["B-LOC", "I-LOC", "E-LOC"]),
    ("bilou", 4, ts((0, 1, P), (1, 3, P)), ["U-PER", "B-PER", "L-PER", "O"]),
    ("bilou", 2, (), ["O", "O"]),
]


@pytest.mark.parametrize(
    "scheme,n,spans,expected",
    ENCODE_TABLE,
    ids=[f"{s}:{' '.join(t)}" for s, _, _, t in ENCODE_TABLE],
)
def test_encode_truth_table(
    scheme: str, n: int, spans: tuple[TokenSpan, ...], expected: list[str]
) -> None:
    assert encode(n, spans, scheme) == expected


def test_obama_met_biden_is_two_person_spans() -> None:
    """Label Studio's example groups by type and merges these; we must not."""
    tt = tokenize("Obama met Biden")
    dec = decode(["B-PER", "O", "B-PER"], "iob2")
    chars = token_to_char_spans(tt, dec.spans)
    assert [(s.start, s.end, s.label) for s in chars] == [(0, 5, "PER"), (10, 15, "PER")]
    # adjacent without a gap: still two
    assert len(decode(["B-PER", "B-PER"], "iob2").spans) == 2


DETECT_TABLE = [
    ([["B-PER", "I-PER", "O"]], "iob2"),
    ([["O", "O"]], "iob2"),
    ([["I-PER", "I-PER", "O"]], "iob1"),
    ([["I-PER", "B-PER"]], "iob1"),
    ([["B-PER"], ["I-LOC"]], "iob2"),
    ([["S-PER"], ["B-LOC", "E-LOC"]], "bioes"),
    ([["U-PER"], ["B-LOC", "L-LOC"]], "bilou"),
]


@pytest.mark.parametrize(
    "sentences,expected", DETECT_TABLE, ids=[e + ":" + str(s) for s, e in DETECT_TABLE]
)
def test_detect_scheme(sentences: list[list[str]], expected: str) -> None:
    assert detect_scheme(sentences) == expected


@pytest.mark.parametrize(
    "sentences,needle",
    [([["E-PER"], ["L-PER"]], "mix"), ([["X-PER"]], "unknown tag prefixes"), ([["PER"]], "PER")],
    ids=["bioes+bilou", "unknown-prefix", "malformed"],
)
def test_detect_scheme_errors(sentences: list[list[str]], needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        detect_scheme(sentences)


STRICT_ERRORS = [
    ("iob2", ["O", "I-PER"], 1),
    ("iob2", ["B-PER", "I-LOC"], 1),
    ("iob1", ["B-PER"], 0),
    ("bioes", ["B-PER", "O"], 0),
    ("bioes", ["I-PER"], 0),
    ("bioes", ["O", "E-PER"], 1),
    ("bilou", ["B-PER", "I-PER"], 1),
    ("bilou", ["O", "O", "L-ORG"], 2),
    ("iob2", ["O", "B-PER", "Q-PER"], 2),
    ("iob2", ["PER"], 0),
]


@pytest.mark.parametrize(
    "scheme,tags,pos", STRICT_ERRORS, ids=[f"{s}:{' '.join(t)}" for s, t, _ in STRICT_ERRORS]
)
def test_strict_decode_names_position(scheme: str, tags: list[str], pos: int) -> None:
    with pytest.raises(ValueError, match=rf"sentence 7: .* at token {pos}\b"):
        decode(tags, scheme, where="sentence 7")


def test_lenient_begin_repairs_and_counts() -> None:
    dec = decode(["I-PER", "I-PER", "O", "I-LOC"], "iob2", strict=False, repair="begin")
    assert dec.spans == ts((0, 2, P), (3, 4, L))
    assert [p.position for p in dec.problems] == [0, 3]


def test_lenient_drop_repairs_and_counts() -> None:
    dec = decode(["I-PER", "I-PER", "O", "B-LOC"], "iob2", strict=False, repair="drop")
    assert dec.spans == ts((3, 4, L))
    assert len(dec.problems) == 1


def test_lenient_unterminated_bioes_span() -> None:
    begin = decode(["B-PER", "I-PER"], "bioes", strict=False, repair="begin")
    assert begin.spans == ts((0, 2, P)) and len(begin.problems) == 1
    drop = decode(["B-PER", "I-PER"], "bioes", strict=False, repair="drop")
    assert drop.spans == () and len(drop.problems) == 1


def test_lenient_malformed_tag_treated_as_o() -> None:
    dec = decode(["B-PER", "PER", "B-LOC"], "iob2", strict=False)
    assert dec.spans == ts((0, 1, P), (2, 3, L))
    assert len(dec.problems) == 1 and dec.problems[0].tag == "PER"


def test_convert_iob1_to_iob2_and_bioes() -> None:
    tags = ["I-PER", "B-PER", "O", "I-LOC", "I-LOC"]
    assert convert(tags, "iob1", "iob2") == ["B-PER", "B-PER", "O", "B-LOC", "I-LOC"]
    assert convert(tags, "iob1", "bioes") == ["S-PER", "S-PER", "O", "B-LOC", "E-LOC"]


def test_encode_rejects_bad_spans() -> None:
    with pytest.raises(ValueError, match="out of range"):
        encode(2, ts((1, 3, P)))
    with pytest.raises(ValueError, match="overlaps"):
        encode(4, ts((0, 2, P), (1, 3, L)))
    with pytest.raises(ValueError, match="out of range"):
        encode(4, ts((2, 2, P)))


def test_scheme_names_and_split_tag() -> None:
    assert get_scheme("BIO").name == "iob2" and get_scheme("iobes").name == "bioes"
    with pytest.raises(ValueError, match="unknown tagging scheme"):
        get_scheme("xyz")
    assert split_tag("B-creative-work") == ("B", "creative-work")
    assert split_tag("O") == ("O", "")


@st.composite
def span_layouts(draw: st.DrawFn) -> tuple[int, list[TokenSpan]]:
    """A token count and non-overlapping token spans with labels from a small set."""
    n = draw(st.integers(min_value=0, max_value=25))
    spans: list[TokenSpan] = []
    i = 0
    while i < n:
        gap = draw(st.integers(min_value=0, max_value=2))
        i += gap
        if i >= n:
            break
        length = draw(st.integers(min_value=1, max_value=min(4, n - i)))
        spans.append(TokenSpan(i, i + length, draw(st.sampled_from(["PER", "LOC", "B", "x-y"]))))
        i += length
    return n, spans


@pytest.mark.parametrize("scheme", sorted(SCHEMES))
@settings(max_examples=150, deadline=None)
@given(layout=span_layouts())
def test_spans_tags_spans_identity(scheme: str, layout: tuple[int, list[TokenSpan]]) -> None:
    n, spans = layout
    tags = encode(n, spans, scheme)
    assert len(tags) == n
    dec = decode(tags, scheme)  # strict: encode must produce valid tags
    assert list(dec.spans) == spans


@pytest.mark.parametrize("source", sorted(SCHEMES))
@pytest.mark.parametrize("target", sorted(SCHEMES))
@settings(max_examples=40, deadline=None)
@given(layout=span_layouts())
def test_convert_preserves_spans(
    source: str, target: str, layout: tuple[int, list[TokenSpan]]
) -> None:
    n, spans = layout
    out = convert(encode(n, spans, source), source, target)
    assert list(decode(out, target).spans) == spans


SEQEVAL_SCHEMES = [("iob2", "BI"), ("bioes", "BIES"), ("bilou", "BILU")]


@pytest.mark.parametrize("name,prefixes", SEQEVAL_SCHEMES, ids=[n for n, _ in SEQEVAL_SCHEMES])
def test_drop_equals_seqeval_strict(name: str, prefixes: str) -> None:
    """``repair="drop"`` gives seqeval's strict-mode entities on every sequence of <= 4 tags."""
    import itertools
    import warnings

    from seqeval.scheme import BILOU, IOB2, IOBES, Entities

    sch = {"iob2": IOB2, "bioes": IOBES, "bilou": BILOU}[name]
    tags = ["O"] + [f"{p}-{t}" for p in prefixes for t in "XY"]
    n_max = 4 if len(tags) < 8 else 3
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for n in range(1, n_max + 1):
            for seq in itertools.product(tags, repeat=n):
                ours = sorted((x.start, x.end, x.label)
                              for x in decode(list(seq), name, strict=False, repair="drop").spans)
                theirs = sorted((e.start, e.end, e.tag)
                                for e in Entities([list(seq)], sch, suffix=False).entities[0])
                assert ours == theirs, seq


IOB1_DIFFERENCES = [
    (["B-X"], [(0, 1, "X")], []),
    (["B-X", "I-X"], [(0, 2, "X")], [(1, 2, "X")]),
    (["O", "B-X", "O"], [(1, 2, "X")], []),
]


@pytest.mark.parametrize("seq,ours,seqeval_strict", IOB1_DIFFERENCES,
                         ids=["lone-B", "B-then-I", "B-after-O"])
def test_iob1_drop_keeps_a_b_start_unlike_seqeval(seq: list[str], ours: list[tuple[int, int, str]],
                                                   seqeval_strict: list[tuple[int, int, str]]
                                                   ) -> None:
    """IOB1: a B-X always begins a span here; seqeval's strict IOB1 drops or cuts it."""
    import warnings

    from seqeval.scheme import IOB1, Entities

    got = [(x.start, x.end, x.label) for x in decode(seq, "iob1", strict=False,
                                                     repair="drop").spans]
    assert got == ours
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ents = Entities([seq], IOB1, suffix=False).entities[0]
    assert sorted((e.start, e.end, e.tag) for e in ents) == seqeval_strict
