"""Alignment and the four error types (analysis.errors): hand-made cases, properties, nervaluate."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from analysis.errors import (
    CORRECT,
    GHOST,
    KINDS,
    MISSED,
    SPAN_SHIFT,
    WRONG_TAG,
    align,
    task_errors,
)
from analysis.schemes import encode
from analysis.spans import Span, SpanTable, TokenSpan

LABELS = ("LOC", "MISC", "ORG", "PER")


def table(per_task: list[list[tuple[int, int, str]]], labels=None) -> SpanTable:
    return SpanTable.from_spans([[Span(*s) for s in spans] for spans in per_task], labels)


def kinds(arr: np.ndarray) -> list[str]:
    return [KINDS[int(k)] for k in arr]


# (gold spans, pred spans, expected gold kinds, expected pred kinds), one task each
CASES = [
    ([(0, 5, "PER")], [(0, 5, "PER")], ["correct"], ["correct"]),
    ([(0, 5, "PER")], [(0, 5, "LOC")], ["wrong_tag"], ["wrong_tag"]),
    ([(0, 5, "PER")], [(0, 4, "PER")], ["span_shift"], ["span_shift"]),
    ([(0, 5, "PER")], [(1, 7, "LOC")], ["span_shift"], ["span_shift"]),
    ([(0, 5, "PER")], [], ["missed"], []),
    ([], [(0, 5, "PER")], [], ["ghost"]),
    # half-open: touching spans do not overlap
    ([(0, 5, "PER")], [(5, 9, "PER")], ["missed"], ["ghost"]),
    ([(5, 9, "PER")], [(0, 5, "PER")], ["missed"], ["ghost"]),
    # one-character overlap at either edge
    ([(0, 5, "PER")], [(4, 9, "PER")], ["span_shift"], ["span_shift"]),
    ([(4, 9, "PER")], [(0, 5, "PER")], ["span_shift"], ["span_shift"]),
    # nested both ways
    ([(0, 10, "ORG")], [(2, 6, "ORG")], ["span_shift"], ["span_shift"]),
    ([(2, 6, "ORG")], [(0, 10, "ORG")], ["span_shift"], ["span_shift"]),
    # same start, different end and vice versa
    ([(0, 10, "ORG")], [(0, 6, "ORG")], ["span_shift"], ["span_shift"]),
    ([(0, 10, "ORG")], [(3, 10, "ORG")], ["span_shift"], ["span_shift"]),
    # one pred overlapping two golds (a merge)
    ([(0, 4, "LOC"), (5, 9, "LOC")], [(0, 9, "LOC")], ["span_shift", "span_shift"], ["span_shift"]),
    # one gold overlapped by two preds (a split)
    ([(0, 9, "ORG")], [(0, 4, "ORG"), (5, 9, "PER")], ["span_shift"], ["span_shift", "span_shift"]),
    # exact match next to a ghost and a missed span
    (
        [(0, 5, "PER"), (10, 15, "LOC")],
        [(0, 5, "PER"), (20, 25, "ORG")],
        ["correct", "missed"],
        ["correct", "ghost"],
    ),
    # exact boundaries win over a neighbouring shifted pred of another gold
    (
        [(0, 5, "PER"), (6, 10, "LOC")],
        [(0, 5, "ORG"), (7, 12, "LOC")],
        ["wrong_tag", "span_shift"],
        ["wrong_tag", "span_shift"],
    ),
    ([], [], [], []),
]
CASE_IDS = [
    "correct",
    "wrong_tag",
    "shift_shorter",
    "shift_and_label",
    "missed",
    "ghost",
    "touching_right_no_overlap",
    "touching_left_no_overlap",
    "overlap_one_char_right",
    "overlap_one_char_left",
    "pred_nested_in_gold",
    "gold_nested_in_pred",
    "same_start",
    "same_end",
    "one_pred_two_golds",
    "two_preds_one_gold",
    "correct_missed_ghost",
    "wrong_tag_beside_shift",
    "empty",
]


@pytest.mark.parametrize("g, p, exp_gold, exp_pred", CASES, ids=CASE_IDS)
def test_hand_made_cases(g, p, exp_gold, exp_pred):
    al = align(table([g]), table([p]), n_tasks=1)
    assert kinds(al.gold_kind) == exp_gold
    assert kinds(al.pred_kind) == exp_pred
    # per-task counts: gold kinds plus ghosts
    expected = [exp_gold.count(k) for k in KINDS[:4]] + [exp_pred.count("ghost")]
    assert al.per_task.tolist() == [expected]
    assert al.gold_kind.dtype == np.int8 and al.pred_kind.dtype == np.int8


def test_pairs_and_flags_for_shift_with_label_change():
    al = align(table([[(0, 9, "ORG")]]), table([[(0, 4, "ORG"), (5, 9, "PER")]]))
    assert al.pair_gold.tolist() == [0, 0]
    assert al.pair_pred.tolist() == [0, 1]
    assert al.pair_label_differs.tolist() == [False, True]
    assert al.pair_same_boundaries.tolist() == [False, False]
    # one overlapping pred carries the gold label -> the type is not also wrong
    assert al.gold_label_differs.tolist() == [False]
    al2 = align(table([[(0, 5, "PER")]]), table([[(1, 7, "LOC")]]))
    assert al2.gold_label_differs.tolist() == [True]
    assert al2.pair_label_differs.tolist() == [True]


def test_task_with_no_spans_and_n_tasks():
    gold = table([[(0, 5, "PER")], [], [(0, 3, "LOC")]])
    pred = table([[(0, 5, "PER")], [(1, 2, "ORG")], []])
    al = align(gold, pred, n_tasks=5)
    assert al.per_task.shape == (5, 5)
    assert al.per_task[3].tolist() == [0] * 5 and al.per_task[4].tolist() == [0] * 5
    assert al.per_task[1].tolist() == [0, 0, 0, 0, 1]
    assert al.per_task[2].tolist() == [0, 0, 0, 1, 0]
    assert al.task_error_counts().tolist() == [0, 1, 1, 0, 0]
    with pytest.raises(ValueError, match="task 2 has spans but n_tasks is 2"):
        align(gold, pred, n_tasks=2)


def test_spans_do_not_match_across_tasks():
    # same offsets, different task: never overlap
    al = align(table([[(0, 5, "PER")], []]), table([[], [(0, 5, "PER")]]))
    assert kinds(al.gold_kind) == ["missed"] and kinds(al.pred_kind) == ["ghost"]


def test_labels_are_unified():
    gold = SpanTable.from_spans([[Span(0, 5, "PER")]], ["PER"])
    pred = SpanTable.from_spans([[Span(0, 5, "PER"), Span(6, 8, "ZZZ")]], ["ZZZ", "PER"])
    al = align(gold, pred)
    assert al.labels == ("PER", "ZZZ")
    assert kinds(al.gold_kind) == ["correct"]
    assert [al.labels[i] for i in al.pred.label] == ["PER", "ZZZ"]


@pytest.mark.parametrize(
    "which, spans, message",
    [
        ("gold", [(0, 5, "PER"), (3, 8, "LOC")], r"gold: task 0: spans \[0, 5\) 'PER' and \[3, 8\)"),
        ("pred", [(2, 6, "PER"), (2, 4, "PER")], r"pred: task 0: spans \[2, 4\) 'PER' and \[2, 6\)"),
        ("gold", [(5, 5, "PER")], r"gold: task 0: span \[5, 5\) is empty"),
        ("pred", [(-1, 2, "PER")], r"pred: task 0: span \[-1, 2\) is a negative start"),
    ],
    ids=["gold_overlap", "pred_same_start", "empty_span", "negative_start"],
)
def test_invalid_tables_name_the_task(which, spans, message):
    bad = SpanTable.from_arrays(
        np.zeros(len(spans)),
        np.array([s[0] for s in spans]),
        np.array([s[1] for s in spans]),
        np.zeros(len(spans)),
        ["PER"],
    )
    ok = table([[]], ["PER"])
    with pytest.raises(ValueError, match=message):
        align(bad, ok) if which == "gold" else align(ok, bad)


def test_overlap_error_names_the_right_task():
    bad = table([[(0, 2, "PER")], [], [(0, 2, "PER")]])
    extra = SpanTable.from_arrays(
        np.array([0, 2, 2, 7]), np.array([0, 0, 1, 0]), np.array([2, 2, 3, 1]), np.zeros(4), ["PER"]
    )
    with pytest.raises(ValueError, match="gold: task 2: spans"):
        align(extra, bad)


def test_unsorted_table_is_sorted_before_alignment():
    raw = SpanTable(
        np.array([1, 0]), np.array([0, 0]), np.array([5, 5]), np.array([0, 0], np.int32), ("PER",)
    )
    al = align(raw, table([[(0, 5, "PER")], [(0, 5, "PER")]]))
    assert kinds(al.gold_kind) == ["correct", "correct"]


def test_task_errors_reports_exact_pairs():
    gold = table([[(0, 5, "PER"), (6, 10, "LOC"), (12, 15, "ORG")], [(0, 2, "PER")]])
    pred = table([[(0, 5, "PER"), (6, 8, "LOC"), (8, 10, "ORG"), (20, 22, "MISC")], []])
    al = align(gold, pred)
    out = task_errors(al, 0)
    assert out["task"] == 0
    assert out["counts"] == {"correct": 1, "wrong_tag": 0, "span_shift": 1, "missed": 1, "ghost": 1}
    assert out["n_errors"] == 3
    assert out["items"] == [
        {
            "kind": "span_shift",
            "gold": {"start": 6, "end": 10, "label": "LOC"},
            "pred": [
                {"start": 6, "end": 8, "label": "LOC"},
                {"start": 8, "end": 10, "label": "ORG"},
            ],
            "label_differs": False,
        },
        {"kind": "missed", "gold": {"start": 12, "end": 15, "label": "ORG"}, "pred": [],
         "label_differs": False},
        {"kind": "ghost", "gold": None, "pred": [{"start": 20, "end": 22, "label": "MISC"}],
         "label_differs": False},
    ]
    assert task_errors(al, 0, include_correct=True)["items"][0]["kind"] == "correct"
    assert task_errors(al, 1)["items"] == [
        {"kind": "missed", "gold": {"start": 0, "end": 2, "label": "PER"}, "pred": [],
         "label_differs": False}
    ]
    with pytest.raises(ValueError, match="task 2 is out of range"):
        task_errors(al, 2)


# ---------------------------------------------------------------- property tests


@st.composite
def span_list(draw, n_tokens: int) -> list[TokenSpan]:
    """Non-overlapping token spans over ``n_tokens`` tokens."""
    spans: list[TokenSpan] = []
    pos = 0
    while pos < n_tokens:
        start = pos + draw(st.integers(0, 3))
        if start >= n_tokens:
            break
        length = draw(st.integers(1, min(4, n_tokens - start)))
        if draw(st.booleans()):
            spans.append(TokenSpan(start, start + length, draw(st.sampled_from(LABELS))))
        pos = start + length
    return spans


@st.composite
def mutated(draw, gold: list[TokenSpan], n_tokens: int) -> list[TokenSpan]:
    """A prediction derived from ``gold``: kept, relabelled, shifted, dropped, plus ghosts."""
    cand: list[TokenSpan] = []
    for s in gold:
        action = draw(st.sampled_from(["keep", "keep", "relabel", "drop", "shrink", "grow"]))
        if action == "keep":
            cand.append(s)
        elif action == "relabel":
            cand.append(TokenSpan(s.start, s.end, draw(st.sampled_from(LABELS))))
        elif action == "shrink" and s.end - s.start > 1:
            cut = draw(st.integers(0, 1)) if s.end - s.start > 2 else 0
            cand.append(TokenSpan(s.start + cut, s.end - 1, s.label))
        elif action == "grow":
            cand.append(TokenSpan(max(0, s.start - 1), min(n_tokens, s.end + 1), s.label))
    cand.extend(draw(span_list(n_tokens)))
    # keep a non-overlapping subset (first come, first kept)
    kept: list[TokenSpan] = []
    for s in cand:
        if all(not (s.start < k.end and k.start < s.end) for k in kept):
            kept.append(s)
    return sorted(kept)


@st.composite
def corpus(draw, max_tasks: int = 8):
    n = draw(st.integers(0, max_tasks))
    lengths, golds, preds = [], [], []
    for _ in range(n):
        n_tok = draw(st.integers(0, 14))
        g = draw(span_list(n_tok))
        p = draw(st.one_of(mutated(g, n_tok), span_list(n_tok)))
        lengths.append(n_tok)
        golds.append(g)
        preds.append(p)
    return lengths, golds, preds


def to_table(per_task: list[list[TokenSpan]]) -> SpanTable:
    return SpanTable.from_spans(
        [[Span(s.start, s.end, s.label) for s in spans] for spans in per_task], LABELS
    )


def brute_force(golds, preds):
    """Per-span kinds straight from the definitions, with Python loops."""
    gk, pk = [], []
    for g_spans, p_spans in zip(golds, preds):
        for g in g_spans:
            over = [p for p in p_spans if p.start < g.end and g.start < p.end]
            exact = [p for p in over if (p.start, p.end) == (g.start, g.end)]
            if exact:
                gk.append("correct" if exact[0].label == g.label else "wrong_tag")
            elif over:
                gk.append("span_shift")
            else:
                gk.append("missed")
        for p in p_spans:
            over = [g for g in g_spans if p.start < g.end and g.start < p.end]
            exact = [g for g in over if (p.start, p.end) == (g.start, g.end)]
            if exact:
                pk.append("correct" if exact[0].label == p.label else "wrong_tag")
            elif over:
                pk.append("span_shift")
            else:
                pk.append("ghost")
    return gk, pk


SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(corpus())
def test_matches_brute_force_and_counts_are_consistent(data):
    lengths, golds, preds = data
    al = align(to_table(golds), to_table(preds), n_tasks=len(lengths))
    gk, pk = brute_force(golds, preds)
    assert kinds(al.gold_kind) == gk
    assert kinds(al.pred_kind) == pk
    n_gold, n_pred = sum(map(len, golds)), sum(map(len, preds))
    assert al.per_task[:, :4].sum() == n_gold == len(al.gold_kind)
    assert len(al.pred_kind) == n_pred
    assert al.per_task[:, GHOST].sum() == pk.count("ghost")
    c = al.counts()
    assert sum(c[k] for k in KINDS[:4]) == n_gold
    # exact matches pair up one to one
    assert c["correct"] == pk.count("correct") and c["wrong_tag"] == pk.count("wrong_tag")
    # every pair really overlaps, and every overlap is a pair
    g, p = al.gold, al.pred
    assert np.all(g.task[al.pair_gold] == p.task[al.pair_pred])
    assert np.all(g.start[al.pair_gold] < p.end[al.pair_pred])
    assert np.all(p.start[al.pair_pred] < g.end[al.pair_gold])
    n_over = sum(
        1
        for gs, ps in zip(golds, preds)
        for a in gs
        for b in ps
        if a.start < b.end and b.start < a.end
    )
    assert al.n_pairs == n_over


@SETTINGS
@given(corpus(), st.randoms(use_true_random=False))
def test_independent_of_task_order(data, rnd):
    lengths, golds, preds = data
    perm = list(range(len(lengths)))
    rnd.shuffle(perm)
    al = align(to_table(golds), to_table(preds), n_tasks=len(lengths))
    al2 = align(
        to_table([golds[i] for i in perm]), to_table([preds[i] for i in perm]), n_tasks=len(perm)
    )
    assert al.counts() == al2.counts()
    # new task j is old task perm[j]
    assert np.array_equal(al2.per_task, al.per_task[perm])
    for j, i in enumerate(perm):
        assert task_errors(al2, j)["items"] == task_errors(al, i)["items"]


def _one_to_one(golds, preds) -> bool:
    for gs, ps in zip(golds, preds):
        for a in gs:
            if sum(1 for b in ps if a.start < b.end and b.start < a.end) > 1:
                return False
        for b in ps:
            if sum(1 for a in gs if a.start < b.end and b.start < a.end) > 1:
                return False
    return True


@SETTINGS
@given(corpus())
def test_agrees_with_nervaluate(data):
    """nervaluate 1.x COR/INC/MIS/SPU versus ours.

    nervaluate assigns each prediction greedily to at most one gold span; we keep every
    overlapping pair.  Always (with non-overlapping spans per table):
      strict COR == correct; COR + INC + MIS == n_gold; COR + INC + SPU == n_pred;
      SPU >= ghost; MIS >= missed.
    Where both define the same thing, i.e. every gold overlaps at most one prediction and vice
    versa (one-to-one):
      strict  INC == wrong_tag + span_shift, MIS == missed, SPU == ghost;
      ent_type COR == correct + span_shift with the same label,
               INC == wrong_tag + span_shift with another label.
    nervaluate's list loader gives inclusive token ends; its overlap test is written for
    inclusive ends, so token spans from IOB2 tags are compared consistently there.
    """
    from nervaluate import Evaluator

    lengths, golds, preds = data
    true_tags = [encode(n, g, "iob2") for n, g in zip(lengths, golds)]
    pred_tags = [encode(n, p, "iob2") for n, p in zip(lengths, preds)]
    al = align(to_table(golds), to_table(preds), n_tasks=len(lengths))
    c = al.counts()
    n_gold, n_pred = len(al.gold_kind), len(al.pred_kind)
    if not lengths:
        return
    res = Evaluator(true_tags, pred_tags, tags=list(LABELS), loader="list").evaluate()
    strict, ent_type = res["overall"]["strict"], res["overall"]["ent_type"]
    assert strict.correct == c["correct"]
    assert strict.correct + strict.incorrect + strict.missed == n_gold
    assert strict.correct + strict.incorrect + strict.spurious == n_pred
    assert strict.spurious >= c["ghost"]
    assert strict.missed >= c["missed"]
    if _one_to_one(golds, preds):
        shift = al.gold_kind == SPAN_SHIFT
        shift_same = int(np.count_nonzero(shift & ~al.gold_label_differs))
        shift_diff = int(np.count_nonzero(shift & al.gold_label_differs))
        assert strict.incorrect == c["wrong_tag"] + c["span_shift"]
        assert strict.missed == c["missed"]
        assert strict.spurious == c["ghost"]
        assert ent_type.correct == c["correct"] + shift_same
        assert ent_type.incorrect == c["wrong_tag"] + shift_diff


def test_kind_constants():
    assert KINDS == ("correct", "wrong_tag", "span_shift", "missed", "ghost")
    assert (CORRECT, WRONG_TAG, SPAN_SHIFT, MISSED, GHOST) == (0, 1, 2, 3, 4)


def test_row_order_of_sorted_inputs_is_kept():
    gold = table([[(6, 9, "PER"), (0, 5, "LOC")], [(0, 2, "ORG")]])
    pred = SpanTable.from_spans([[Span(0, 5, "LOC")]], ["LOC"])
    al = align(gold, pred)
    for col in ("task", "start", "end"):
        assert np.array_equal(getattr(al.gold, col), getattr(gold, col))
    # labels re-indexed onto the union, same names per row
    assert [al.labels[i] for i in al.gold.label] == [gold.labels[i] for i in gold.label]
