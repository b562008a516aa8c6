"""faiss span index (analysis.similarity) against numpy brute force."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.similarity import SpanIndex, default_nlist


def _normed(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def brute_topk(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    sim = _normed(queries) @ _normed(base).T
    idx = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(sim, idx, axis=1), idx


def clustered(n: int, dim: int, seed: int, n_centres: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_centres, dim))
    return (centres[rng.integers(0, n_centres, n)] + 0.5 * rng.normal(size=(n, dim))).astype(
        np.float32
    )


def meta(n: int, seed: int = 0) -> dict[str, list]:
    rng = np.random.default_rng(seed)
    return {
        "task": (np.arange(n) % 37).tolist(),
        "task_id": (1000 + np.arange(n) % 37).tolist(),
        "start": [0] * n,
        "end": [3] * n,
        "text": [f"s{i}" for i in range(n)],
        "label": rng.choice(["PER", "LOC", "ORG"], n).tolist(),
        "dep": rng.random(n).round(3).tolist(),
    }


def test_exact_index_equals_brute_force() -> None:
    rng = np.random.default_rng(0)
    base = rng.normal(size=(3000, 48))
    q = rng.normal(size=(50, 48))
    idx = SpanIndex.build(base, meta(3000))
    assert idx.kind == "flat"
    sim, ids = idx.search(q, 10)
    bsim, bids = brute_topk(base, q, 10)
    np.testing.assert_array_equal(ids, bids)
    np.testing.assert_allclose(sim, bsim, atol=1e-5)
    # query() returns the same neighbours with metadata
    hits = idx.query(q[:2], 10)
    assert hits[hits["query"] == 1]["id"].tolist() == bids[1].tolist()
    assert hits[hits["query"] == 1]["text"].tolist() == [f"s{i}" for i in bids[1]]
    assert set(hits.columns) >= {"query", "rank", "id", "similarity", "task", "task_id", "start",
                                 "end", "text", "label", "dep"}


def test_ivf_recall_at_10() -> None:
    base = clustered(20_000, 32, seed=1)
    q = clustered(200, 32, seed=2)
    idx = SpanIndex.build(base, exact_max=5_000, seed=0)
    assert idx.kind == "ivf" and idx.nlist == default_nlist(20_000)
    _, ids = idx.search(q, 10)
    _, bids = brute_topk(base, q, 10)
    recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(ids, bids)])
    assert recall >= 0.9


def test_filters_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    base = rng.normal(size=(500, 16))
    m = meta(500, seed=3)
    idx = SpanIndex.build(base, m)
    q = rng.normal(size=(4, 16))
    hits = idx.query(q, 5, exclude_task=[0, 1, 2, 3], label_differs_from="PER")
    task = np.array(m["task"])
    label = np.array(m["label"])
    sim = _normed(q) @ _normed(base).T
    for r in range(4):
        ok = (task != r) & (label != "PER")
        expect = np.flatnonzero(ok)[np.argsort(-sim[r, ok], kind="stable")[:5]]
        got = hits[hits["query"] == r]
        assert got["id"].tolist() == expect.tolist()
        assert got["rank"].tolist() == list(range(5))
        assert (got["label"] != "PER").all() and (got["task"] != r).all()


def test_add_remove_incremental() -> None:
    rng = np.random.default_rng(4)
    a = rng.normal(size=(100, 8))
    idx = SpanIndex(8)
    ids_a = idx.add(a, {"text": [f"a{i}" for i in range(100)]})
    assert ids_a.tolist() == list(range(100)) and len(idx) == 100
    b = rng.normal(size=(20, 8))
    ids_b = idx.add(b, {"text": [f"b{i}" for i in range(20)]})
    assert ids_b.tolist() == list(range(100, 120))
    # a vector finds itself first
    hits = idx.query(b[3], 1)
    assert hits["id"].tolist() == [103] and hits["text"].tolist() == ["b3"]
    assert idx.remove([103, 5, 99999]) == 2
    assert len(idx) == 118 and len(idx.meta) == 118
    hits = idx.query(np.concatenate([b[3:4], a[5:6]]), 3)
    assert 103 not in hits["id"].tolist() and 5 not in hits["id"].tolist()
    # explicit ids, clashes rejected
    idx.add(rng.normal(size=(2, 8)), ids=[500, 501])
    with pytest.raises(ValueError, match="already in the index"):
        idx.add(rng.normal(size=(1, 8)), ids=[500])
    with pytest.raises(ValueError, match="duplicates"):
        idx.add(rng.normal(size=(2, 8)), ids=[7000, 7000])
    with pytest.raises(ValueError, match="metadata has 1 rows for 2 vectors"):
        idx.add(rng.normal(size=(2, 8)), {"text": ["x"]})
    assert idx.add(rng.normal(size=(1, 8))).tolist() == [502]


def test_ivf_remove() -> None:
    base = clustered(3000, 16, seed=5)
    idx = SpanIndex.build(base, exact_max=1000, nprobe=64)
    assert idx.kind == "ivf"
    assert idx.remove(np.arange(10)) == 10
    _, ids = idx.search(base[:10], 5)
    assert not np.isin(ids, np.arange(10)).any()


@pytest.mark.parametrize("exact_max", [10_000, 500], ids=["flat", "ivf"])
def test_persistence_round_trip(tmp_path, exact_max: int) -> None:
    base = clustered(2000, 12, seed=6)
    idx = SpanIndex.build(base, meta(2000), exact_max=exact_max)
    idx.remove([1, 2, 3])
    idx.save(tmp_path / "m")
    back = SpanIndex.load(tmp_path / "m")
    assert (back.kind, back.nlist, back.nprobe, len(back)) == (idx.kind, idx.nlist, idx.nprobe,
                                                               len(idx))
    q = base[10:20]
    a = idx.query(q, 5)
    b = back.query(q, 5)
    assert a["id"].tolist() == b["id"].tolist()
    assert a["text"].tolist() == b["text"].tolist()
    assert a["label"].tolist() == b["label"].tolist()
    np.testing.assert_allclose(a["dep"].astype(float), b["dep"].astype(float))
    # new ids continue after the saved ones
    assert back.add(base[:1]).tolist() == [2000]


def test_empty_index_and_k_larger_than_n(tmp_path) -> None:
    idx = SpanIndex(4)
    hits = idx.query(np.ones((2, 4)), 3)
    assert len(hits) == 0
    sim, ids = idx.search(np.ones((2, 4)), 3)
    assert (ids == -1).all()
    idx.save(tmp_path / "e")
    assert len(SpanIndex.load(tmp_path / "e")) == 0
    idx.add(np.eye(4)[:2])
    hits = idx.query(np.ones(4), 10)  # -1 padding dropped
    assert sorted(hits["id"].tolist()) == [0, 1]


def test_input_errors(tmp_path) -> None:
    idx = SpanIndex(4)
    with pytest.raises(ValueError, match="dimension 3, the index has dimension 4"):
        idx.add(np.ones((2, 3)))
    with pytest.raises(ValueError, match="dimension 5"):
        idx.query(np.ones((1, 5)), 2)
    with pytest.raises(ValueError, match="NaN"):
        idx.add(np.array([[1.0, np.nan, 0, 0]]))
    with pytest.raises(ValueError, match="k must be positive"):
        idx.search(np.ones(4), 0)
    with pytest.raises(ValueError, match="dim must be a positive int"):
        SpanIndex(0)
    with pytest.raises(FileNotFoundError):
        SpanIndex.load(tmp_path / "nothing")
