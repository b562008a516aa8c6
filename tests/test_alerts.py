"""Each alert: a planted case fires (flagging exactly the planted tasks), a clean case does not."""

from __future__ import annotations

import json

import numpy as np
import pytest

from analysis.review import alerts as A

RNG = np.random.default_rng(0)


def _clean_dep(n: int = 200) -> np.ndarray:
    return RNG.uniform(0.0, 0.15, n)


def test_upper_fence_matches_tukey() -> None:
    x = RNG.normal(size=101)
    q1, q3 = np.quantile(x, [0.25, 0.75])
    assert A.upper_fence(x) == pytest.approx(q3 + 1.5 * (q3 - q1))
    assert A.upper_fence(np.zeros(5), floor=0.5) == 0.5
    assert A.upper_fence(np.array([np.nan, np.nan]), floor=0.2) == 0.2


class TestLikelyMislabeled:
    def test_planted_fires_with_threshold_in_rule(self) -> None:
        dep = _clean_dep()
        conf = RNG.uniform(0, 0.5, dep.size)
        dep[[5, 50]] = [0.95, 0.85]
        conf[[5, 50]] = 0.99
        ids = np.arange(dep.size) + 1000
        a = A.likely_mislabeled(dep, conf, ids=ids)
        assert a is not None
        assert a.task_ids == (1005, 1050)  # ordered by descending DEP
        assert str(round(a.numbers["dep_threshold"], 3)) in a.rule
        assert a.numbers["n_flagged"] == 2

    def test_high_dep_but_unsure_model_does_not_fire(self) -> None:
        dep = _clean_dep()
        dep[3] = 0.9
        conf = np.full(dep.size, 0.4)
        assert A.likely_mislabeled(dep, conf) is None

    def test_clean(self) -> None:
        dep = _clean_dep()
        assert A.likely_mislabeled(dep, np.full(dep.size, 0.99)) is None

    def test_length_mismatch_is_value_error(self) -> None:
        with pytest.raises(ValueError, match="one per task"):
            A.likely_mislabeled(np.zeros(3), np.zeros(4))


class TestHardForModel:
    def test_planted_fires(self) -> None:
        loss = RNG.uniform(0.0, 0.1, 100)
        conf = RNG.uniform(0.9, 1.0, 100)
        loss[7], conf[7] = 2.0, 0.3  # hard: high loss, unsure
        loss[8], conf[8] = 2.0, 0.99  # confident disagreement: not "hard"
        a = A.hard_for_model(loss, conf)
        assert a is not None and a.task_ids == (7,)

    def test_clean(self) -> None:
        assert A.hard_for_model(RNG.uniform(0, 0.1, 50), RNG.uniform(0.2, 0.5, 50)) is None


class TestOverlooked:
    def test_planted_fires(self) -> None:
        dep = _clean_dep(50)
        ghosts = np.zeros(50, dtype=int)
        ghosts[[1, 2]] = 1  # task 1 ghost with low DEP: not flagged
        dep[2] = 0.9
        dep[4] = 0.9  # high DEP but no ghost: not this alert
        a = A.overlooked_spans(dep, ghosts)
        assert a is not None and a.task_ids == (2,)

    def test_clean(self) -> None:
        assert A.overlooked_spans(_clean_dep(50), np.ones(50, dtype=int)) is None


class TestMalformed:
    @pytest.mark.parametrize(
        "case",
        ["empty", "long_tokens", "overlap", "bad_edge"],
        ids=["empty-text", "too-many-tokens", "overlapping-spans", "punct-edge"],
    )
    def test_planted_fires(self, case: str) -> None:
        n = 20
        tl = np.full(n, 60)
        ntok = np.full(n, 12)
        st = np.array([0, 1, 2, 2])
        s0 = np.array([0, 0, 0, 10])
        s1 = np.array([5, 5, 5, 15])
        edge = np.zeros(4, dtype=bool)
        if case == "empty":
            tl[9] = 0
            want = 9
        elif case == "long_tokens":
            ntok[9] = 600
            want = 9
        elif case == "overlap":
            st = np.r_[st, 9, 9]
            s0 = np.r_[s0, 0, 3]
            s1 = np.r_[s1, 20, 5]  # [3, 5) lies inside [0, 20)
            edge = np.r_[edge, False, False]
            want = 9
        else:
            edge[3] = True
            want = 2
        a = A.malformed_samples(
            tl, n_tokens=ntok, span_task=st, span_start=s0, span_end=s1, span_bad_edge=edge
        )
        assert a is not None and a.task_ids == (want,)

    def test_touching_spans_are_not_overlaps(self) -> None:
        a = A.malformed_samples(
            np.full(3, 30),
            span_task=np.array([1, 1, 1]),
            span_start=np.array([0, 5, 9]),
            span_end=np.array([5, 9, 12]),
        )
        assert a is None

    def test_very_long_text_by_chars(self) -> None:
        tl = RNG.integers(40, 120, 300)
        tl[17] = 50_000
        a = A.malformed_samples(tl)
        assert a is not None and a.task_ids == (17,)


class TestDuplicates:
    def test_fires(self) -> None:
        a = A.duplicates([[3, 8], [1, 4, 6]], ids=np.arange(10) * 10, threshold=0.95)
        assert a is not None
        assert a.task_ids == (10, 30, 40, 60, 80)
        assert a.numbers["n_groups"] == 2 and "0.95" in a.rule

    def test_no_groups(self) -> None:
        assert A.duplicates([], n_tasks=5) is None
        assert A.duplicates([[1]], n_tasks=5) is None


class TestClassRules:
    def test_low_performing(self) -> None:
        f1 = {"PER": 0.92, "LOC": 0.9, "ORG": 0.88, "MISC": 0.4}
        sup = {k: 50 for k in f1}
        a = A.low_performing_classes(f1, sup, class_task_rows={"MISC": np.array([4, 2])})
        assert a is not None and set(a.numbers["classes"]) == {"MISC"}
        assert a.task_ids == (2, 4)

    def test_low_performing_clean(self) -> None:
        assert A.low_performing_classes({"A": 0.9, "B": 0.85, "C": 0.88}, {"A": 5, "B": 5, "C": 5}) is None

    def test_imbalance(self) -> None:
        a = A.class_imbalance({"PER": 500, "LOC": 300, "EVENT": 4})
        assert a is not None and a.numbers["rare_classes"] == ["EVENT"]
        assert A.class_imbalance({"PER": 500, "LOC": 300, "ORG": 120}) is None

    def test_overlapping_classes(self) -> None:
        labels = ["PER", "LOC", "ORG"]
        cm = np.array([[90, 1, 0, 2], [0, 70, 20, 1], [0, 2, 80, 3], [1, 1, 1, 0]])
        a = A.overlapping_classes(
            cm, labels, pair_task_rows={("LOC", "ORG"): np.array([5, 6])}
        )
        assert a is not None
        assert [(p["gold"], p["pred"]) for p in a.numbers["pairs"]] == [("LOC", "ORG")]
        assert a.task_ids == (5, 6)
        clean = np.diag([90, 70, 80])
        assert A.overlapping_classes(clean, labels) is None


class TestSurfaceForms:
    def test_minority_label_flagged(self) -> None:
        st = np.arange(8)
        forms = ["Paris"] * 5 + ["paris"] + ["Obama", "Obama"]
        labs = ["LOC"] * 5 + ["PER"] + ["PER", "PER"]
        a = A.inconsistent_surface_forms(st, forms, labs, ids=np.arange(8) + 100)
        assert a is not None and a.task_ids == (105,)
        assert a.numbers["forms"] == {"paris": {"LOC": 5, "PER": 1}}

    def test_consistent(self) -> None:
        st = np.arange(6)
        assert A.inconsistent_surface_forms(st, ["Paris"] * 6, ["LOC"] * 6) is None

    def test_genuinely_ambiguous_not_flagged(self) -> None:
        st = np.arange(6)
        labs = ["PER", "LOC"] * 3
        assert A.inconsistent_surface_forms(st, ["Washington"] * 6, labs) is None


class TestAnnotators:
    def test_sloppy_annotator_fires(self) -> None:
        n = 300
        ann = np.array(["alice", "bob", "carol"])[np.arange(n) % 3].tolist()
        spans = np.full(n, 4)
        errs = (RNG.uniform(size=n) < 0.05).astype(int)
        carol = np.arange(n) % 3 == 2
        errs[carol] = 2  # carol gets half her spans wrong
        a = A.annotator_error_rates(ann, errs, spans)
        assert a is not None and a.numbers["flagged_annotators"] == ["carol"]
        assert set(a.task_ids) == set(np.flatnonzero(carol).tolist())

    def test_single_annotator_never_fires(self) -> None:
        n = 30
        assert A.annotator_error_rates(["a"] * n, np.ones(n, int), np.full(n, 2)) is None

    def test_equal_rates_do_not_fire(self) -> None:
        n = 300
        ann = np.array(["a", "b"])[np.arange(n) % 2].tolist()
        errs = ((np.arange(n) // 2) % 10 == 0).astype(int)  # same rate for a and b
        assert A.annotator_error_rates(ann, errs, np.full(n, 3)) is None


def test_to_dict_is_json_with_required_keys() -> None:
    a = A.duplicates([[0, 1]], n_tasks=2, threshold=0.9)
    assert a is not None
    d = json.loads(json.dumps(a.to_dict()))
    assert set(d) == {"name", "rule", "numbers", "task_ids"}
    assert d["task_ids"] == [0, 1]
    assert a.view_title == "Review: duplicates"
