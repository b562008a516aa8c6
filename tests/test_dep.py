"""DEP from probabilities, consistency signals, thresholds (analysis.dep, analysis.dep.signals)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis.dataset import Dataset, Task
from analysis.dep import (
    aggregate_units,
    compute_dep,
    fit_thresholds,
    token_margins,
    validate_probs,
)
from analysis.dep.signals import (
    calibrate,
    combine,
    model_disagreement,
    neighbour_disagreement,
    type_disagreement,
)
from analysis.dep.surface import surface_consistency
from analysis.probs import load_probs
from analysis.spans import Span, from_tokens
from analysis.tags import tag_names

LABELS = ("LOC", "PER")
TAGS = tag_names(LABELS)  # O, B-LOC, I-LOC, B-PER, I-PER
O, BL, IL, BP, IP = range(5)
MARGIN_ONLY = {"margin": 1.0, "disagreement": 0.0, "surface": 0.0, "neighbour": 0.0, "type": 0.0,
               "outside": 0.0}
IDENTITY: dict[str, tuple[float, float]] = {}  # no per-unit-type calibration


def make_task(index: int, tokens: str, spans: list[tuple[int, int, str]], *, tid: int | None = None,
              annotated: bool = True) -> Task:
    """A task from space-separated tokens and token spans ``(start, end, label)`` (half-open)."""
    tt = from_tokens(tokens.split())
    gold = tuple(Span(int(tt.starts[a]), int(tt.ends[b - 1]), lab) for a, b, lab in spans)
    return Task(index=index, id=tid, text=tt.text, tokens=tt, gold=gold if annotated else None)


def onehot(cols: list[int], p: float = 0.9, n_tags: int = len(TAGS)) -> np.ndarray:
    a = np.full((len(cols), n_tags), (1 - p) / (n_tags - 1), dtype=np.float32)
    a[np.arange(len(cols)), cols] = p
    return a


@pytest.fixture
def small() -> tuple[Dataset, list[np.ndarray]]:
    tasks = [
        make_task(0, "John lives in Paris .", [(0, 1, "PER"), (3, 4, "LOC")], tid=10),
        make_task(1, "Mary visited New York yesterday", [(0, 1, "PER"), (2, 4, "LOC")], tid=11),
        make_task(2, "Paris is nice", [(0, 1, "PER")], tid=12),  # wrong tag: model says LOC
        make_task(3, "He went to Rome", [], tid=13),  # missed: model says LOC
        make_task(4, "Anna sings", [(0, 1, "PER")], tid=14),
    ]
    # as confident as a trained model is on clear cases (the error model is fitted on those)
    probs = [
        onehot([BP, O, O, BL, O], p=0.999),
        onehot([BP, O, BL, IL, O], p=0.999),
        onehot([BL, O, O], p=0.999),
        onehot([O, O, O, BL], p=0.999),
        onehot([BP, O], p=0.999),
    ]
    return Dataset(tasks, LABELS), probs


# ------------------------------------------------------------------------------- margins


def test_token_dep_is_half_one_minus_margin() -> None:
    # gold O with p = (0.7, 0.2, 0.1, 0, 0): margin 0.5 -> DEP 0.25 (computed by hand)
    ds = Dataset([make_task(0, "x", [])], LABELS)
    p = np.array([[0.7, 0.2, 0.1, 0.0, 0.0]], dtype=np.float32)
    r = compute_dep(ds, [p], tags=TAGS, weights=MARGIN_ONLY, calibration=IDENTITY)
    assert r.token_margin_dep[0] == pytest.approx(0.25)
    assert r.task_dep[0] == pytest.approx(0.25)
    # argmax disagrees with gold -> DEP above 0.5: gold B-PER, p(B-PER)=0.1, max other 0.7
    ds2 = Dataset([make_task(0, "x", [(0, 1, "PER")])], LABELS)
    p2 = np.array([[0.7, 0.1, 0.0, 0.1, 0.1]], dtype=np.float32)
    r2 = compute_dep(ds2, [p2], tags=TAGS, weights=MARGIN_ONLY, calibration=IDENTITY)
    assert r2.task_dep[0] == pytest.approx((1 - (0.1 - 0.7)) / 2)


def test_token_margins_hand_values() -> None:
    p = np.array([[0.5, 0.3, 0.2], [0.2, 0.2, 0.6]])
    assert token_margins(p, np.array([0, 0])) == pytest.approx([0.2, -0.4])


def test_epochs_average_margins_aum() -> None:
    ds = Dataset([make_task(0, "a b", [(0, 1, "LOC")])], LABELS)
    e1 = [np.array([[0.1, 0.9, 0, 0, 0], [0.8, 0, 0.2, 0, 0]], dtype=np.float32)]
    e2 = [np.array([[0.6, 0.4, 0, 0, 0], [1.0, 0, 0, 0, 0]], dtype=np.float32)]
    r = compute_dep(ds, e2, tags=TAGS, epochs_probs=[e1, e2], weights=MARGIN_ONLY)
    # token 0 gold B-LOC: margins 0.8 and -0.2 -> mean 0.3 -> DEP 0.35
    # token 1 gold O: margins 0.6 and 1.0 -> mean 0.8 -> DEP 0.1
    assert r.token_margin_dep == pytest.approx([0.35, 0.1])
    # the final set alone would give 0.6 for token 0
    alone = compute_dep(ds, e2, tags=TAGS, weights=MARGIN_ONLY)
    assert alone.token_margin_dep[0] == pytest.approx(0.6)


# --------------------------------------------------------------------------- end to end


def test_error_kinds_and_ranking(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    r = compute_dep(ds, probs, tags=TAGS)
    top2 = set(r.ranking()[:2].tolist())
    assert top2 == {2, 3}  # the wrong tag and the missed entity
    sp = r.spans
    wrong = sp[(sp.task == 2)].iloc[0]
    assert (wrong.kind, wrong.gold_label, wrong.pred_label, wrong.text) == (
        "wrong_tag", "PER", "LOC", "Paris")
    ghost = sp[(sp.task == 3)].iloc[0]
    assert (ghost.kind, ghost.gold_label, ghost.pred_label, ghost.text) == (
        "ghost", None, "LOC", "Rome")
    assert ghost.dep > 0.5 and wrong.dep > 0.5
    assert sp[sp.task.isin([0, 1, 4])].dep.max() < 0.1
    assert wrong.suspect == "wrong_tag"  # the error model's most likely error class
    assert set(sp[sp.task.isin([0, 1, 4])].kind) == {"correct"}
    assert list(sp.task_id[sp.task == 2]) == [12]
    # character offsets are half-open and point at the text
    for _, row in sp.iterrows():
        assert ds.tasks[row.task].text[row.start:row.end] == row.text
    assert r.task_errors[2].tolist() == [0, 1, 0, 0, 0]
    assert r.task_errors[3].tolist() == [0, 0, 0, 0, 1]


def test_records_json_ready(small: tuple[Dataset, list[np.ndarray]]) -> None:
    import json

    ds, probs = small
    r = compute_dep(ds, probs, tags=TAGS)
    recs = r.task_records(ds.tasks)
    assert [x["id"] for x in recs] == [10, 11, 12, 13, 14]
    json.dumps(recs)  # serialisable
    assert recs[2]["category"] == "mislabeled"
    assert recs[2]["errors"]["wrong_tag"] == 1
    assert recs[2]["spans"][0]["kind"] == "wrong_tag"
    assert recs[2]["spans"] == r.task_spans(2)


@pytest.mark.parametrize("scorer", ["model", "signals"])
def test_missed_gold_span_kind(scorer: str) -> None:
    ds = Dataset([make_task(0, "Rome is old", [(0, 1, "LOC")])], LABELS)
    r = compute_dep(ds, [onehot([O, O, O], p=0.9999)], tags=TAGS, scorer=scorer)  # type: ignore
    assert r.spans.kind.tolist() == ["missed"]
    assert r.spans.pred_label.tolist() == [None]
    assert r.task_dep[0] > 0.5
    assert r.scorer == scorer


@pytest.mark.parametrize("scorer", ["model", "signals"])
@pytest.mark.parametrize("entity_p", [0.6, 0.8])
def test_errors_rank_first_at_moderate_confidence(small: tuple[Dataset, list[np.ndarray]],
                                                  scorer: str, entity_p: float) -> None:
    """A model sure of O but only 0.6-0.8 sure of its entities (as a trained tagger often is):
    the wrong tag (task 2) and the missed entity (task 3) still have the two highest DEP."""
    ds, _ = small
    cols = ([BP, O, O, BL, O], [BP, O, BL, IL, O], [BL, O, O], [O, O, O, BL], [BP, O])
    probs = []
    for c in cols:
        a = onehot(list(c), p=0.999)
        ent = np.asarray(c) != O
        a[ent] = onehot([x for x in c if x != O], p=entity_p)
        probs.append(a)
    r = compute_dep(ds, probs, tags=TAGS, scorer=scorer)  # type: ignore[arg-type]
    assert set(np.argsort(-r.task_dep)[:2].tolist()) == {2, 3}
    assert r.spans.kind.tolist().count("wrong_tag") == 1


def test_dep_grows_with_model_confidence(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, _ = small
    cols = ([BP, O, O, BL, O], [BP, O, BL, IL, O], [BL, O, O], [O, O, O, BL], [BP, O])
    deps = [compute_dep(ds, [onehot(c, p=p) for c in cols], tags=TAGS).task_dep[[2, 3]]
            for p in (0.9, 0.99, 0.999)]
    assert (np.diff(np.array(deps), axis=0) > 0).all()


def test_unannotated_tasks_are_not_scored() -> None:
    tasks = [make_task(0, "a b", [(0, 1, "PER")]), make_task(1, "c d", [], annotated=False),
             make_task(2, "e", [])]
    ds = Dataset(tasks, LABELS)
    per_task = [onehot([BP, O]), onehot([O, O]), onehot([O])]
    r = compute_dep(ds, per_task, tags=TAGS)
    assert np.isnan(r.task_dep[1]) and not np.isnan(r.task_dep[[0, 2]]).any()
    assert r.category[1] is None
    # one array per annotated task, and None for an unannotated task (crossfit layout)
    r2 = compute_dep(ds, [per_task[0], per_task[2]], tags=TAGS)
    r3 = compute_dep(ds, [per_task[0], None, per_task[2]], tags=TAGS)
    np.testing.assert_allclose(r2.task_dep, r.task_dep)
    np.testing.assert_allclose(r3.task_dep, r.task_dep)
    assert r.token_offsets.tolist() == [0, 2, 2, 3]


def test_empty_task_and_no_spans() -> None:
    ds = Dataset([make_task(0, "a", [])], LABELS)
    r = compute_dep(ds, [onehot([O], p=1.0)], tags=TAGS)
    assert r.task_dep[0] == pytest.approx(0.0, abs=1e-6)
    assert len(r.spans) == 0


def test_misaligned_span_warns() -> None:
    tt = from_tokens(["Johnson", "said"])
    task = Task(index=0, id=None, text=tt.text, tokens=tt, gold=(Span(0, 4, "PER"),))
    with pytest.warns(UserWarning, match="do not line up"):
        r = compute_dep(Dataset([task], LABELS), [onehot([BP, O])], tags=TAGS)
    assert r.spans.kind.tolist() == ["correct"]


def _random_dataset(seed: int, n: int = 12) -> tuple[Dataset, list[np.ndarray]]:
    rng = np.random.default_rng(seed)
    words = ["paris", "john", "rome", "the", "is", "big", "mary", "new", "york"]
    tasks, probs = [], []
    for i in range(n):
        k = int(rng.integers(1, 7))
        toks = " ".join(rng.choice(words, k))
        spans, pos = [], 0
        while pos < k:
            if rng.random() < 0.4:
                e = min(k, pos + int(rng.integers(1, 3)))
                spans.append((pos, e, str(rng.choice(LABELS))))
                pos = e + 1
            else:
                pos += 1
        tasks.append(make_task(i, toks, spans, tid=100 + i))
        probs.append(rng.dirichlet(np.ones(len(TAGS)) * 0.5, size=k).astype(np.float32))
    return Dataset(tasks, LABELS), probs


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_scores_in_unit_interval(seed: int) -> None:
    ds, probs = _random_dataset(seed)
    emb = np.random.default_rng(seed).normal(size=(ds.n_spans(), 8))
    r = compute_dep(ds, probs, tags=TAGS, span_embeddings=emb)
    for arr in (r.task_dep, r.token_dep, r.token_margin_dep, r.spans.dep.to_numpy()):
        assert np.all((arr >= 0) & (arr <= 1))
    assert r.token_dep.shape == (sum(len(t.tokens) for t in ds.tasks),)


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 10_000))
def test_does_not_depend_on_task_order(seed: int) -> None:
    import dataclasses

    ds, probs = _random_dataset(seed)
    perm = np.random.default_rng(seed + 1).permutation(len(ds.tasks))
    tasks = [dataclasses.replace(ds.tasks[i], index=j) for j, i in enumerate(perm.tolist())]
    r1 = compute_dep(ds, probs, tags=TAGS)
    r2 = compute_dep(Dataset(tasks, LABELS), [probs[i] for i in perm], tags=TAGS)
    np.testing.assert_allclose(r2.task_dep, r1.task_dep[perm], rtol=1e-6, atol=1e-7)


# ---------------------------------------------------------------------------- validation

BAD_CASES = [
    ("row-sum", lambda p: [p[0], p[1] * 0.5], "task 11: token 0 probabilities sum to 0.5"),
    ("too-few-rows", lambda p: [p[0], p[1][:-1]], "task 11: 1 probability rows for 2 tokens"),
    ("columns", lambda p: [p[0][:, :3], p[1][:, :3]], "task 10: 3 probability columns but 5"),
    ("nan", lambda p: [p[0], np.where(p[1] > 0.5, np.nan, p[1])], "task 11: token 0 has NaN"),
    ("negative", lambda p: [p[0], p[1] - np.array([[0.5, 0.5, 0, 0, -1.0]] * 2)],
     "task 11: token 0 has NaN, infinite or negative"),
    ("count", lambda p: [p[0]], "got 1 probability arrays for 2 tasks"),
    ("one-d", lambda p: [p[0], p[1][0]], "task 11: probabilities must be 2-D"),
    ("none-annotated", lambda p: [p[0], None], "task 11: annotated task has no probabilities"),
]


@pytest.mark.parametrize("name,mutate,msg", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_probabilities_name_the_task(name: str, mutate, msg: str) -> None:
    ds = Dataset([make_task(0, "John runs", [(0, 1, "PER")], tid=10),
                  make_task(1, "Paris x", [(0, 1, "LOC")], tid=11)], LABELS)
    probs = [onehot([BP, O]), onehot([BL, O])]
    with pytest.raises(ValueError, match=msg.replace("(", r"\(").replace(")", r"\)")):
        validate_probs(ds, mutate(probs), TAGS)
    with pytest.raises(ValueError):
        compute_dep(ds, mutate(probs), tags=TAGS)


BAD_TAGS = [
    ("no-O", ("B-LOC", "I-LOC", "B-PER", "I-PER", "X-Y"), "prefix|no 'O'"),
    ("bioes", ("O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"), "IOB2"),
    ("missing-I", ("O", "B-LOC", "I-LOC", "B-PER"), "has PER tags but no I-PER"),
    ("unknown-type", ("O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"), "not dataset labels"),
    ("duplicate", ("O", "B-LOC", "I-LOC", "B-LOC", "I-PER"), "duplicates"),
]


@pytest.mark.parametrize("name,tags,msg", BAD_TAGS, ids=[c[0] for c in BAD_TAGS])
def test_bad_tag_lists(name: str, tags: tuple[str, ...], msg: str) -> None:
    ds = Dataset([make_task(0, "John runs", [(0, 1, "PER")])], LABELS)
    with pytest.raises(ValueError, match=msg):
        validate_probs(ds, [onehot([BP, O])], tags)


def test_gold_label_without_tag_columns() -> None:
    ds = Dataset([make_task(0, "a", []), make_task(1, "John", [(0, 1, "PER")], tid=5)], LABELS)
    tags = ("O", "B-LOC", "I-LOC")
    with pytest.raises(ValueError, match=r"task 5: gold label 'PER' has no column"):
        compute_dep(ds, [onehot([O], n_tags=3), onehot([O], n_tags=3)], tags=tags)


def test_load_probs_round_trip(tmp_path) -> None:
    arrays = [onehot([O, BL]), onehot([BP])]
    np.savez(tmp_path / "p.npz", *arrays)
    got = load_probs(tmp_path / "p.npz")
    assert len(got) == 2 and all(g.dtype == np.float32 for g in got)
    np.testing.assert_array_equal(got[1], arrays[1])
    np.savez(tmp_path / "bad.npz", probs=arrays[0])
    with pytest.raises(ValueError, match="unexpected array 'probs'"):
        load_probs(tmp_path / "bad.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable"):
        load_probs(tmp_path / "junk.npz")
    with pytest.raises(FileNotFoundError):
        load_probs(tmp_path / "missing.npz")


def test_load_probs_annotated_mask(tmp_path) -> None:
    """``ner-quality train --folds`` writes an ``annotated`` mask: unannotated tasks -> None."""
    arrays = [onehot([O, BL]), np.full((1, len(TAGS)), np.nan, dtype=np.float32), onehot([BP])]
    np.savez(tmp_path / "oof.npz", *arrays, annotated=np.array([True, False, True]))
    got = load_probs(tmp_path / "oof.npz")
    assert got[1] is None and got[0] is not None and got[2] is not None
    np.testing.assert_array_equal(got[2], arrays[2])
    np.savez(tmp_path / "short.npz", *arrays, annotated=np.array([True, False]))
    with pytest.raises(ValueError, match="'annotated' mask has 2 entries for 3 arrays"):
        load_probs(tmp_path / "short.npz")


# ---------------------------------------------------------------------- aggregation, thresholds


@pytest.mark.parametrize(
    "method,expected",
    [
        ("max", [0.6, 0.1]),
        ("mean", [1.0 / 3.0, 0.1]),
        ("noisy_or", [1 - 0.8 * 0.4 * 0.8, 0.1]),
        ("top2", [0.4, 0.1]),
        ("length_weighted", [(0.2 * 1 + 0.6 * 2 + 0.2 * 1) / 4, 0.1]),
    ],
    ids=["max", "mean", "noisy_or", "top2", "length_weighted"],
)
def test_aggregations(method: str, expected: list[float]) -> None:
    task = np.array([0, 0, 0, 1])
    score = np.array([0.2, 0.6, 0.2, 0.1])
    out = aggregate_units(task, score, 2, method=method, unit_weight=np.array([1, 2, 1, 1]))
    assert out == pytest.approx(expected)


def test_unknown_aggregate() -> None:
    with pytest.raises(ValueError, match="aggregate must be one of"):
        aggregate_units(np.array([0]), np.array([0.1]), 1,
                        method="median")  # type: ignore[arg-type]


def test_thresholds_from_disagreement() -> None:
    dep = np.array([0.05, 0.1, 0.2, 0.3, 0.35, 0.8, 0.9, np.nan])
    dis = np.array([0, 0, 0, 0, 0, 1, 1, 0], dtype=bool)
    th = fit_thresholds(dep, dis)
    assert th.method == "youden"
    assert 0.35 < th.mislabeled < 0.8
    assert th.easy == pytest.approx(0.2)  # median of the agreeing tasks
    cats = th.categorize(dep)
    assert cats.tolist() == ["easy", "easy", "hard", "hard", "hard", "mislabeled", "mislabeled",
                             None]


def test_thresholds_fallback_when_model_agrees_everywhere() -> None:
    dep = np.linspace(0, 1, 11)
    th = fit_thresholds(dep, np.zeros(11, dtype=bool))
    assert th.method == "quantile"
    assert th.mislabeled == pytest.approx(0.9) and th.easy == pytest.approx(0.5)


def test_thresholds_are_per_dataset(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    r1 = compute_dep(ds, probs, tags=TAGS)
    sharp = [onehot(np.argmax(p, 1).tolist(), p=0.99) for p in probs]
    r2 = compute_dep(ds, sharp, tags=TAGS)
    assert r1.thresholds.mislabeled != r2.thresholds.mislabeled


# ------------------------------------------------------------------------------- signals


def test_model_disagreement() -> None:
    p = np.array([[0.6, 0.4], [0.3, 0.7]])
    assert model_disagreement(p, np.array([0, 0])) == pytest.approx([0.0, 0.7])


def test_surface_consistency_counts() -> None:
    # "paris" is LOC twice, PER once, and left O once: n(f) = 4
    toks = ["Paris", "a", "paris", "b", "PARIS", "c", "Paris"]
    task = np.array([0, 0, 1, 1, 2, 2, 3])
    is_o = np.array([0, 1, 0, 1, 0, 1, 1], dtype=bool)
    s0, s1 = np.array([0, 2, 4]), np.array([1, 3, 5])
    lab = np.array([0, 0, 1])
    span, tok = surface_consistency(toks, task, is_o, s0, s1, lab)
    assert span == pytest.approx([2 / 4, 2 / 4, 3 / 4])
    assert tok[6] == pytest.approx(3 / 4)  # labelled 3 of 4 times, O here
    assert tok[[1, 3, 5]] == pytest.approx([0, 0, 0])


def test_surface_consistency_multi_token_forms_stay_in_task() -> None:
    # "new york" labelled once; "new" | "york" across a task boundary is not an occurrence
    toks = ["New", "York", "x", "new", "york", "new", "york"]
    task = np.array([0, 0, 0, 1, 1, 2, 3])
    is_o = np.array([0, 0, 1, 1, 1, 1, 1], dtype=bool)
    span, tok = surface_consistency(toks, task, is_o, np.array([0]), np.array([2]), np.array([0]))
    assert span == pytest.approx([1 / 2])
    assert tok.tolist() == pytest.approx([0, 0, 0, 0.5, 0.5, 0, 0])


def test_neighbour_disagreement() -> None:
    rng = np.random.default_rng(0)
    centre = np.array([[5.0, 0, 0], [0, 5.0, 0]])
    emb = np.concatenate([centre[0] + rng.normal(size=(6, 3)) * 0.1,
                          centre[1] + rng.normal(size=(6, 3)) * 0.1])
    labels = np.array(["LOC"] * 6 + ["PER"] * 6)
    labels[2] = "PER"  # an outlier label inside the LOC cluster
    s = neighbour_disagreement(emb, labels, k=4)
    assert s[2] == pytest.approx(1.0)
    assert np.argmax(s) == 2
    assert s[7:].max() == pytest.approx(0.0)
    with pytest.raises(ValueError, match="labels for"):
        neighbour_disagreement(emb, labels[:3])


def test_combine_noisy_or() -> None:
    out = combine({"margin": np.array([0.5]), "surface": np.array([0.5])},
                  {"margin": 1.0, "surface": 1.0})
    assert out == pytest.approx([0.75])
    with pytest.raises(ValueError, match="weight"):
        combine({"margin": np.array([0.5])}, {"margin": 2.0})


def test_signals_change_the_score(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    base = compute_dep(ds, probs, tags=TAGS, weights=MARGIN_ONLY)
    surf = compute_dep(ds, probs, tags=TAGS, weights={**MARGIN_ONLY, "surface": 1.0})
    # "Paris" (task 0, LOC) disagrees with "Paris" (task 2, PER): surface raises task 0
    assert surf.task_dep[0] > base.task_dep[0]
    assert surf.task_dep[4] == pytest.approx(base.task_dep[4])  # "Anna" is consistent
    emb = np.eye(ds.n_spans())
    with pytest.raises(ValueError, match="one row per gold span"):
        compute_dep(ds, probs, tags=TAGS, span_embeddings=emb[:-1])


def test_type_disagreement_ignores_boundary_doubt() -> None:
    # span of 2 tokens, gold PER: the model is sure it is PER but unsure B vs I -> low type DEP
    # (while the token margin of token 1 is high); a span the model reads as LOC -> high
    p = np.array([[0.0, 0.0, 0.0, 0.5, 0.5], [0.0, 0.0, 0.0, 0.6, 0.4],
                  [0.05, 0.8, 0.05, 0.1, 0.0]])
    b, i = np.array([BL, BP]), np.array([IL, IP])
    out = type_disagreement(p, np.array([0, 2]), np.array([2, 3]), np.array([1, 1]), b, i)
    # span 0: PER type prob 1.0, LOC 0 -> margin 1 -> 0; span 1: PER 0.1, LOC 0.85 -> 0.875
    assert out == pytest.approx([0.0, 0.875])
    assert token_margins(p[:2], np.array([BP, IP]))[1] < 0  # the token margin calls it wrong
    assert type_disagreement(p, np.array([], int), np.array([], int), np.array([], int),
                             b, i).shape == (0,)


def test_calibrate_monotone_identity_and_errors() -> None:
    x = np.linspace(0.01, 0.99, 50)
    np.testing.assert_allclose(calibrate(x, "o", {"o": (0.0, 1.0)}), x, rtol=1e-6)
    np.testing.assert_allclose(calibrate(x, "o", {"span": (2.0, 2.0)}), x, rtol=1e-6)
    y = calibrate(x, "o", {"o": (-1.0, 2.0)})
    assert np.all(np.diff(y) > 0) and np.all((y >= 0) & (y <= 1))
    # sigma(-1 + 2 logit 0.5) = sigma(-1)
    assert calibrate(np.array([0.5]), "o", {"o": (-1.0, 2.0)})[0] == pytest.approx(
        1 / (1 + np.e), rel=1e-5)
    with pytest.raises(ValueError, match="b > 0"):
        calibrate(x, "o", {"o": (0.0, 0.0)})
    with pytest.raises(ValueError, match="unit type must be one of"):
        calibrate(x, "token", {})
    with pytest.raises(TypeError, match="pair"):
        calibrate(x, "o", {"o": 1.0})  # type: ignore[dict-item]


def test_calibration_applies_per_unit_type() -> None:
    # "a John b c": gold PER on John; tokens 0 and 2 are boundary O tokens, 3 is a plain O
    ds = Dataset([make_task(0, "a John b c", [(1, 2, "PER")])], LABELS)
    p = onehot([O, BP, O, O], p=0.7)
    base = compute_dep(ds, [p], tags=TAGS, weights=MARGIN_ONLY, calibration=IDENTITY)
    up = compute_dep(ds, [p], tags=TAGS, weights=MARGIN_ONLY,
                     calibration={"o_boundary": (2.0, 1.0)})
    raised = up.token_dep > base.token_dep + 1e-6
    assert raised.tolist() == [True, False, True, False]
    np.testing.assert_allclose(up.token_margin_dep, base.token_margin_dep)
    assert up.task_dep[0] == pytest.approx(up.token_dep.max())
    sp = compute_dep(ds, [p], tags=TAGS, weights=MARGIN_ONLY, calibration={"span": (2.0, 1.0)})
    assert (sp.token_dep > base.token_dep + 1e-6).tolist() == [False, True, False, False]


def _surface_reference(tokens, task, is_o, s0, s1, lab, max_len=6):
    """Surface consistency by brute force over token tuples (the module docstring's rules)."""
    low = [t.lower() for t in tokens]
    form = [tuple(low[a:b]) for a, b in zip(s0, s1)]
    n_fl: dict = {}
    for f, lb in zip(form, lab):
        n_fl[(f, lb)] = n_fl.get((f, lb), 0) + 1
    n_lab: dict = {}
    for (f, _), c in n_fl.items():
        n_lab[f] = n_lab.get(f, 0) + c
    occ = []  # all-O occurrences of labelled forms, within one task
    for f in n_lab:
        L = len(f)
        if L > max_len:
            continue
        for p in range(len(tokens) - L + 1):
            if tuple(low[p:p + L]) == f and len(set(task[p:p + L])) == 1 and all(is_o[p:p + L]):
                occ.append((p, L, f))
    n_o: dict = {}
    for _, _, f in occ:
        n_o[f] = n_o.get(f, 0) + 1
    span = [(n_lab[f] + n_o.get(f, 0) - n_fl[(f, lb)]) / (n_lab[f] + n_o.get(f, 0))
            for f, lb in zip(form, lab)]
    tok = [0.0] * len(tokens)
    for p, L, f in occ:
        sc = n_lab[f] / (n_lab[f] + n_o[f])
        for q in range(p, p + L):
            tok[q] = max(tok[q], sc)
    return np.array(span), np.array(tok)


@pytest.mark.parametrize("seed", range(20))
def test_surface_consistency_equals_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    vocab = ["Paris", "paris", "New", "York", "new", "the", "EU", "eu", "in", "."]
    n = int(rng.integers(5, 60))
    tokens = [vocab[i] for i in rng.integers(0, len(vocab), n)]
    task = np.sort(rng.integers(0, 4, n))
    is_o = np.ones(n, dtype=bool)
    s0, s1, lab = [], [], []
    p = 0
    while p < n:  # non-overlapping spans inside one task each
        if rng.random() < 0.3:
            L = int(rng.integers(1, 4))
            if p + L <= n and len(set(task[p:p + L])) == 1:
                s0.append(p), s1.append(p + L), lab.append(int(rng.integers(0, 3)))
                is_o[p:p + L] = False
                p += L
                continue
        p += 1
    ref_span, ref_tok = _surface_reference(tokens, task, is_o, s0, s1, lab, max_len=2)
    span, tok = surface_consistency(tokens, task, is_o, np.array(s0, dtype=np.int64),
                                    np.array(s1, dtype=np.int64), np.array(lab), max_len=2)
    assert span == pytest.approx(ref_span, abs=1e-6)
    assert tok == pytest.approx(ref_tok, abs=1e-6)
