"""Dataset analysis assembly, duplicates, and the push plan (pure parts)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from analysis.dataset import Dataset, Task
from analysis.dep import compute_dep
from analysis.labelstudio.push import pending_updates, plan_push
from analysis.review.analyze import analyze, analyze_dataset
from analysis.review.duplicates import bad_edges, find_duplicates
from analysis.spans import Span, tokenize
from analysis.tags import tag_names

LABELS = ("PER", "LOC")
TAGS = tag_names(LABELS)


def _task(i: int, text: str, spans: list[tuple[int, int, str]], **kw: object) -> Task:
    return Task(index=i, id=10 + i, text=text, tokens=tokenize(text),
                gold=tuple(Span(s, e, lab) for s, e, lab in spans), **kw)  # type: ignore[arg-type]


def _probs_for(task: Task, spans: list[tuple[int, int, str]], conf: float = 0.9) -> np.ndarray:
    tt = task.tokens
    p = np.full((len(tt), len(TAGS)), (1 - conf) / (len(TAGS) - 1), dtype=np.float32)
    p[:, 0] = conf
    for s, e, lab in spans:
        toks = [k for k in range(len(tt)) if tt.starts[k] >= s and tt.ends[k] <= e]
        p[toks, 0] = (1 - conf) / (len(TAGS) - 1)
        p[toks[0], TAGS.index(f"B-{lab}")] = conf
        for k in toks[1:]:
            p[k, TAGS.index(f"I-{lab}")] = conf
    return p


@pytest.fixture
def small() -> tuple[Dataset, list[np.ndarray]]:
    texts = [
        ("Ann lives in Rome .", [(0, 3, "PER"), (13, 17, "LOC")], None),
        ("Bob left Oslo today .", [(0, 3, "PER"), (9, 13, "LOC")], None),
        # planted wrong tag: "Paris" annotated PER, the model is sure it is LOC
        ("Carl saw Paris again .", [(0, 4, "PER"), (9, 14, "PER")], [(0, 4, "PER"), (9, 14, "LOC")]),
        ("Dana met Eve in Rome .", [(0, 4, "PER"), (9, 12, "PER"), (16, 20, "LOC")], None),
        ("Ann lives in Rome .", [(0, 3, "PER"), (13, 17, "LOC")], None),  # exact duplicate of 0
        ("   ", [], None),  # empty text
    ]
    tasks, probs = [], []
    for i, (text, spans, model) in enumerate(texts):
        t = _task(i, text, spans, split="train" if i < 3 else "test")
        tasks.append(t)
        probs.append(_probs_for(t, model if model is not None else spans))
    return Dataset(tasks=tasks, labels=LABELS), probs


def test_metrics_and_alerts_on_planted_error(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    res = analyze_dataset(ds, probs=probs, tags=TAGS)
    m = res.to_dict()["metrics"]
    assert m["n_tasks"] == 6 and m["n_gold_spans"] == 11
    assert m["error_totals"]["wrong_tag"] == 1 and m["error_totals"]["correct"] == 10
    assert m["top_confusions"][0] == {"gold": "PER", "pred": "LOC", "count": 1}
    cl = m["confusion"]["labels"]
    raw = np.array(m["confusion"]["raw"])
    assert raw[cl.index("PER"), cl.index("LOC")] == 1
    assert set(m["splits"]) == {"train", "test"}
    assert m["splits"]["train"]["n_tasks"] == 3
    # DEP highest on the planted task
    assert int(np.nanargmax(res.task_dep)) == 2
    names = {a.name: a for a in res.alerts}
    assert names["likely mislabeled"].task_ids == (12,)
    assert names["duplicates"].task_ids == (10, 14)
    assert 15 in names["malformed samples"].task_ids
    d = res.to_dict()
    row = d["tasks"][2]
    assert {k: v for k, v in row.items() if k != "dep"} == {
        "index": 2, "id": 12,
        "errors": {"correct": 1, "wrong_tag": 1, "span_shift": 0, "missed": 0, "ghost": 0}}
    # the JSON DEP is the planted task's DEP (rounded), above every other task's
    assert row["dep"] == round(float(res.task_dep[2]), 6)
    assert all(t["dep"] is None or t["dep"] < row["dep"] for t in d["tasks"] if t["index"] != 2)


def test_loss_matches_manual_cross_entropy(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    res = analyze_dataset(ds, probs=probs, tags=TAGS)
    # the cross-entropy of every annotated token, straight from the inputs
    gold = []
    for t in ds.tasks:
        g = np.zeros(len(t.tokens), dtype=np.int64)
        for s in t.gold or ():
            toks = [k for k in range(len(t.tokens)) if t.tokens.starts[k] >= s.start
                    and t.tokens.ends[k] <= s.end]
            g[toks[0]] = TAGS.index(f"B-{s.label}")
            g[toks[1:]] = TAGS.index(f"I-{s.label}")
        gold.append(g)
    manual = -np.log(np.concatenate([p[np.arange(len(g)), g] for p, g in zip(probs, gold)])
                     .astype(np.float64))
    m = res.to_dict()["metrics"]
    assert m["loss"]["overall"]["mean"] == pytest.approx(manual.mean(), abs=1e-6)
    per = m["loss"]["by_label"]
    assert sum(v["count"] for v in per.values()) == manual.size


def test_without_model_output_only_annotation_side(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, _ = small
    res = analyze_dataset(ds)
    m = res.to_dict()["metrics"]
    assert "prf" not in m and "dep" not in m
    assert res.task_dep is None
    assert {a.name for a in res.alerts} >= {"duplicates", "malformed samples"}


def test_order_of_tasks_does_not_change_flags(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    perm = [5, 3, 1, 0, 2, 4]
    tasks = [dataclasses.replace(ds.tasks[k], index=j) for j, k in enumerate(perm)]
    ds2 = Dataset(tasks=tasks, labels=LABELS)
    a = analyze_dataset(ds, probs=probs, tags=TAGS)
    b = analyze_dataset(ds2, probs=[probs[k] for k in perm], tags=TAGS)
    fa = {x.name: set(x.task_ids) for x in a.alerts}
    fb = {x.name: set(x.task_ids) for x in b.alerts}
    assert fa == fb


def test_margin_only_dep_through_the_analysis() -> None:
    """An all-O model: tokens whose gold tag is not O get margin DEP 1, the rest 0."""
    tasks = [_task(i, text, spans) for i, (text, spans) in enumerate(
        [("A b", [(0, 1, "PER")]), ("c d", []), ("E f", [(0, 1, "LOC")]), ("g h", [])])]
    ds = Dataset(tasks=tasks, labels=LABELS)
    probs = [np.tile(np.eye(len(TAGS), dtype=np.float32)[0], (2, 1)) for _ in tasks]
    dep = compute_dep(ds, probs, tags=TAGS, weights={"margin": 1.0},
                      calibration={})
    res = analyze(ds.corpus, dep=dep, dep_source="margin only")
    assert res.task_dep.tolist() == [1.0, 0.0, 1.0, 0.0]
    d = res.to_dict()["metrics"]["dep"]
    assert d["scored"] == 4 and d["source"] == "margin only"
    assert res.to_dict()["metrics"]["error_totals"]["missed"] == 2


def test_find_duplicates_matches_brute_force() -> None:
    from sklearn.feature_extraction.text import TfidfVectorizer

    rng = np.random.default_rng(3)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    texts = [" ".join(rng.choice(words, 6)) for _ in range(60)]
    texts += [texts[4] + " x", texts[9].upper(), texts[20].replace(" ", "  ")]
    groups, method = find_duplicates(texts, threshold=0.95, k=len(texts))
    assert method == "tfidf"
    X = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True).fit_transform(
        [" ".join(t.lower().split()) for t in texts])
    sim = (X @ X.T).toarray()
    np.fill_diagonal(sim, 0)
    pairs = {tuple(sorted(p)) for p in zip(*np.nonzero(sim >= 0.95))}
    found = {tuple(sorted((a, b))) for g in groups for a in g for b in g if a < b}
    assert pairs <= found
    assert {(4, 60), (9, 61), (20, 62)} <= found


def test_bad_edges() -> None:
    assert bad_edges(["Rome", " Rome", "Rome ,", "U.S.", "Rome ."]).tolist() == [
        False, True, True, False, True]


def test_push_plan_is_idempotent(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    res = analyze_dataset(ds, probs=probs, tags=TAGS)
    plan = plan_push(res, model_version="v1", dataset=ds, suggest=True)
    assert len(plan.updates) == len(ds.tasks)
    u = next(x for x in plan.updates if x.task_id == 12)
    assert u.data["nerq_wrong_tag"] == 1 and u.data["nerq_errors"] == 1
    view = next(v for v in plan.views if v.title == "Review: likely mislabeled")
    assert view.task_ids == (12,)
    pred = next(p for p in plan.predictions if p.task_id == 12)
    assert [r["value"]["labels"] for r in pred.result] == [["PER"], ["LOC"]]
    # tasks as Label Studio would hold them after the push: nothing left to write
    current = {x.task_id: {"id": x.task_id, "data": {"text": "t", **x.data},
                           "meta": {"ner_quality": {**x.meta, "written_at": "later"}}}
               for x in plan.updates}
    assert pending_updates(plan, current) == []
    current[12]["data"]["nerq_dep"] = 0.0
    assert [x.task_id for x in pending_updates(plan, current)] == [12]


def test_push_refuses_conll(small: tuple[Dataset, list[np.ndarray]]) -> None:
    ds, probs = small
    tasks = [dataclasses.replace(t, id=None) for t in ds.tasks]
    res = analyze_dataset(Dataset(tasks=tasks, labels=LABELS), probs=probs, tags=TAGS)
    assert res.to_dict()["tasks"][0]["id"] is None
    with pytest.raises(ValueError, match="CoNLL"):
        plan_push(res, model_version="v")


@pytest.mark.parametrize("alphabet", [" .,!aZ_-1\n\t\x1c\x7f()", " .,!aZß\u00a0\t\u2028éİΣς_-1\n😀"])
def test_text_folding_equals_the_per_text_regexes(alphabet: str) -> None:
    import random
    import re

    from analysis.review.duplicates import fold_texts, normalise_texts

    rng = random.Random(0)
    for _ in range(2000):
        texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
                 for _ in range(rng.randint(1, 5))]
        norm = [re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", t.casefold())).strip() for t in texts]
        assert normalise_texts(texts).tolist() == norm
        assert fold_texts(texts) == [re.sub(r"\s+", " ", t.casefold()).strip() for t in texts]
    assert fold_texts(["a\x00b", " X "]) == ["a\x00b", "x"]  # the separator inside a text


def test_bad_edges_equals_its_regexes() -> None:
    import random
    import re

    lead = re.compile(r"^[\s.,;:!?\"'()\[\]{}\-]")
    trail = re.compile(r"(?:[\s,;:!?\"'(\[{\-]|\s[.)\]}])$")
    rng = random.Random(1)
    alphabet = " .,;:!?\"'()[]{}-aZ\u00a0\t\n"
    texts = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 5)))
             for _ in range(5000)]
    expected = [bool(lead.search(t)) or bool(trail.search(t)) for t in texts]
    assert bad_edges(texts).tolist() == expected
