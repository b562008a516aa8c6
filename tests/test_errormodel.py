"""The learned error model (analysis/dep/errormodel.py) and its use by compute_dep."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from analysis.dataset import Dataset
from analysis.dep import compute_dep
from analysis.dep.errormodel import (
    SPAN_CLASSES,
    SPAN_FEATURES,
    TOKEN_CLASSES,
    TOKEN_FEATURES,
    UNIT_TYPES,
    ErrorModel,
    default_error_model,
    fit_error_model,
)
from analysis.tags import tag_names
from tests.test_dep import BL, BP, IL, IP, LABELS, TAGS, O, make_task, onehot


def synthetic_units(seed: int = 0, n: int = 2000) -> tuple[dict[str, np.ndarray],
                                                           dict[str, np.ndarray]]:
    """Units whose error class is written in one feature column (plus noise)."""
    rng = np.random.default_rng(seed)
    feats, labs = {}, {}
    for u in UNIT_TYPES:
        names = SPAN_FEATURES if u == "span" else TOKEN_FEATURES
        classes = SPAN_CLASSES if u == "span" else TOKEN_CLASSES
        y = rng.choice(len(classes), size=n, p=[0.85] + [0.15 / (len(classes) - 1)] *
                       (len(classes) - 1))
        x = rng.normal(size=(n, len(names)))
        for c in range(1, len(classes)):  # class c raises column c
            x[y == c, c] += 4.0
        feats[u] = x
        labs[u] = np.asarray(classes, dtype=object)[y]
    return feats, labs


def test_fit_separates_classes_and_names_the_kind() -> None:
    feats, labs = synthetic_units()
    em = fit_error_model(feats, labs)
    test_x, test_y = synthetic_units(seed=1)
    for u in UNIT_TYPES:
        z = em.error_log_odds(u, test_x[u])
        err = test_y[u] != "clean"
        # errors score above clean units (AUROC well above chance)
        from sklearn.metrics import roc_auc_score

        assert roc_auc_score(err, z) > 0.95
        sus = em.suspected(u, test_x[u][err])
        assert (sus == test_y[u][err]).mean() > 0.8
        assert "clean" not in set(sus.tolist())


def test_save_load_roundtrip(tmp_path: Path) -> None:
    feats, labs = synthetic_units()
    em = fit_error_model(feats, labs, meta={"note": "synthetic"})
    path = tmp_path / "em.json"
    em.save(path)
    back = ErrorModel.load(path)
    assert back.meta == {"note": "synthetic"}
    for u in UNIT_TYPES:
        np.testing.assert_allclose(back.error_log_odds(u, feats[u]), em.error_log_odds(u, feats[u]))


def test_missing_feature_is_imputed_with_the_training_mean() -> None:
    feats, labs = synthetic_units()
    em = fit_error_model(feats, labs)
    x = feats["span"][:5].copy()
    j = SPAN_FEATURES.index("neighbour")
    at_mean = x.copy()
    at_mean[:, j] = em.units["span"].mean[j]
    x[:, j] = np.nan
    np.testing.assert_allclose(em.error_log_odds("span", x), em.error_log_odds("span", at_mean))


def test_untrained_model_scores_all_units_alike() -> None:
    em = ErrorModel.untrained()
    feats, _ = synthetic_units(n=50)
    z = em.error_log_odds("o", feats["o"])
    assert np.allclose(z, z[0])


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other"), "not an error model file"),
        (lambda d: d["units"].pop("o"), "no model for unit type"),
        (lambda d: d["units"]["span"]["coef"].pop(), "coef must have shape"),
        (lambda d: d["units"]["o"]["features"].reverse(), "do not match"),
        (lambda d: d["units"]["o"].pop("mean"), "missing key"),
        (lambda d: d["units"]["o"]["scale"].__setitem__(0, 0.0), "scale must be > 0"),
    ],
    ids=["format", "missing-unit-type", "bad-shape", "feature-order", "missing-key",
         "zero-scale"],
)
def test_bad_model_files_raise_clear_errors(tmp_path: Path, mutate, message: str) -> None:
    d = default_error_model().to_dict()
    d = json.loads(json.dumps(d))
    mutate(d)
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(d))
    with pytest.raises(ValueError, match=message) as exc:
        ErrorModel.load(path)
    assert str(path) in str(exc.value)


def test_load_rejects_non_json_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="not a JSON error model"):
        ErrorModel.load(bad)
    with pytest.raises(ValueError, match="not found"):
        ErrorModel.load(tmp_path / "missing.json")


@pytest.mark.parametrize(
    "case, message",
    [
        ("no-errors", "needs clean units and errors"),
        ("unknown-class", "unknown classes"),
        ("shape", "features must be"),
        ("missing-type", "no training units"),
    ],
)
def test_fit_rejects_bad_training_data(case: str, message: str) -> None:
    feats, labs = synthetic_units(n=200)
    if case == "no-errors":
        labs["o"] = np.full(200, "clean", dtype=object)
    elif case == "unknown-class":
        labs["span"] = labs["span"].copy()
        labs["span"][0] = "typo"
    elif case == "shape":
        feats["o_boundary"] = feats["o_boundary"][:, :3]
    else:
        del feats["o"]
    with pytest.raises(ValueError, match=message):
        fit_error_model(feats, labs)


def test_default_model_ships_with_provenance() -> None:
    em = default_error_model()
    assert set(em.units) == set(UNIT_TYPES)
    assert em.meta.get("fitted_on", "").startswith("bench/")
    assert em.meta["runs"] and all(em.meta["noise"][r]["n"] > 0 for r in em.meta["runs"])


def noisy_toy() -> tuple[Dataset, list[np.ndarray]]:
    tasks = [
        make_task(0, "John lives in Paris .", [(0, 1, "PER"), (3, 4, "LOC")]),
        make_task(1, "Paris is nice", [(0, 1, "PER")]),  # wrong tag
        make_task(2, "He went to Rome", []),  # missed
        make_task(3, "Mary visited New York", [(0, 1, "PER"), (2, 3, "LOC")]),  # shift
    ]
    probs = [onehot(c, p=0.999) for c in
             ([BP, O, O, BL, O], [BL, O, O], [O, O, O, BL], [BP, O, BL, IL])]
    return Dataset(tasks, LABELS), probs


def test_compute_dep_units_and_custom_model_agree() -> None:
    ds, probs = noisy_toy()
    base = compute_dep(ds, probs, tags=TAGS, error_model=ErrorModel.untrained(),
                       return_units=True)
    units = base.units
    assert units is not None
    n_o = sum(len(t.tokens) for t in ds.tasks) - sum(
        b - a for t in ds.tasks for a, b in
        [(int(np.searchsorted(t.tokens.starts, s.start)),
          int(np.searchsorted(t.tokens.ends, s.end)) + 1) for s in t.gold or ()])
    assert units["span"]["x"].shape == (5, len(SPAN_FEATURES))
    assert len(units["o"]["task"]) + len(units["o_boundary"]["task"]) == n_o
    # task DEP with a given model = sigmoid(max unit log-odds): recompute by hand
    feats, labs = synthetic_units()
    em = fit_error_model(feats, labs)
    r = compute_dep(ds, probs, tags=TAGS, error_model=em)
    best = np.full(len(ds.tasks), -np.inf)
    for u, d in units.items():
        np.maximum.at(best, d["task"], em.error_log_odds(u, d["x"]))
    np.testing.assert_allclose(r.task_dep, 1.0 / (1.0 + np.exp(-best)), rtol=1e-12)
    assert r.scorer == "model" and r.thresholds.method == "expected_fbeta"


def test_default_model_ranks_the_planted_errors_first() -> None:
    ds, probs = noisy_toy()
    r = compute_dep(ds, probs, tags=TAGS)
    assert set(r.ranking()[:3].tolist()) == {1, 2, 3}
    assert r.task_dep[0] < min(r.task_dep[1:])


def test_scorer_options_are_checked() -> None:
    ds, probs = noisy_toy()
    with pytest.raises(ValueError, match="scorer must be one of"):
        compute_dep(ds, probs, tags=TAGS, scorer="magic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="belong to scorer='signals'"):
        compute_dep(ds, probs, tags=TAGS, scorer="model", weights={"margin": 1.0})
    with pytest.raises(TypeError, match="error_model must be"):
        compute_dep(ds, probs, tags=TAGS, error_model={"span": 1})  # type: ignore[arg-type]
    # weights alone select the signals scorer (backwards compatible)
    assert compute_dep(ds, probs, tags=TAGS, weights={"margin": 1.0}).scorer == "signals"


def test_tag_names_match_fixture() -> None:
    """The fixture's hand-written column constants are the canonical IOB2 columns."""
    assert LABELS == ("LOC", "PER")
    assert [tag_names(LABELS)[c] for c in (O, BL, IL, BP, IP)] == [
        "O", "B-LOC", "I-LOC", "B-PER", "I-PER"]


def test_expected_fbeta_threshold_by_hand() -> None:
    from analysis.dep import fit_thresholds

    dep = np.array([0.9, 0.8, 0.1, 0.05])
    agree = np.array([False, False, True, True])
    # expected errors 1.85; F2 of flagging the top k: k=1 0.536, k=2 0.904, k=3 0.865, k=4 0.811
    th = fit_thresholds(dep, ~agree, method="expected_fbeta")
    assert th.method == "expected_fbeta" and th.mislabeled == pytest.approx(0.45)
    assert th.easy == pytest.approx(0.075)
    with pytest.raises(ValueError, match="beta must be > 0"):
        fit_thresholds(dep, ~agree, method="expected_fbeta", beta=0.0)
    with pytest.raises(ValueError, match="method must be"):
        fit_thresholds(dep, ~agree, method="f1")  # type: ignore[arg-type]


def test_bench_unit_labels_match_the_injected_noise() -> None:
    """The error model's training labels (bench_detection.unit_labels) follow the corruptions."""
    from bench.bench_detection import unit_labels
    from bench.noise import inject_noise

    rng = np.random.default_rng(3)
    names = ["Paris", "Rome", "John", "Mary", "Berlin", "Anna", "Oslo", "Peter"]
    tasks = []
    for i in range(80):
        a, b = rng.choice(names, 2, replace=False)
        tasks.append(make_task(i, f"{a} met {b} Smith in the old town",
                               [(0, 1, "PER"), (2, 4, "PER")]))
    ds = Dataset(tasks, LABELS)
    noisy, corr = inject_noise(ds, rate=0.2, seed=6)
    probs = [onehot([BP, O, BP, IP, O, O, O, O], p=0.999) for _ in noisy.tasks]
    units = compute_dep(noisy, probs, tags=TAGS, error_model=ErrorModel.untrained(),
                        return_units=True).units
    assert units is not None
    labels = unit_labels(noisy, corr, units)
    kinds = [c.kind for c in corr]
    span_pos = labels["span"][labels["span"] != "clean"]
    for k in ("wrong_tag", "span_shift", "ghost"):
        assert (span_pos == k).sum() == kinds.count(k) > 0
    tok = np.concatenate([labels["o"], labels["o_boundary"]])

    def n_tokens(c: object) -> int:
        tt = noisy.tasks[c.task].tokens  # type: ignore[attr-defined]
        s = c.before  # type: ignore[attr-defined]
        return int(((tt.starts >= s.start) & (tt.ends <= s.end)).sum())

    assert (tok == "missed").sum() == sum(n_tokens(c) for c in corr if c.kind == "missed") > 0
    shrunk = sum(1 for c in corr if c.kind == "span_shift"
                 and (c.after.end - c.after.start) < (c.before.end - c.before.start))
    assert (tok == "span_shift").sum() == shrunk > 0  # one freed token per shrunk span
