"""The columnar inference path gives what the per-item path it replaced gave (issue 12).

The reference is ``tests/reference_infer.py`` (the old post-processing, frozen).  On the CPU the
spans, probabilities, span scores and task confidences are bit-identical; entropies agree to
1e-12 (summation order) and embeddings to float32 rounding.
"""

from __future__ import annotations

import os
import random
from pathlib import Path

import numpy as np
import pytest

from analysis.spans import TokenSpan, tokenize, tokenize_many
from reference_infer import reference_predict

DATA = Path(os.environ.get("NERQ_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared"
                           / "data"))


@pytest.fixture(scope="module")
def model():
    from ls_backend.runtime import NerModel

    return NerModel.load(None, labels=["PER", "LOC", "ORG", "MISC"], device="cpu", seed=0)


def _same(a, b, *, emb: bool) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.spans == y.spans
        assert np.array_equal(x.probs, y.probs)
        assert np.array_equal(x.span_scores, y.span_scores)
        assert x.score == y.score
        assert abs(x.entropy - y.entropy) <= 1e-12
        if emb:
            assert x.span_embeddings.shape == y.span_embeddings.shape
            np.testing.assert_allclose(x.span_embeddings, y.span_embeddings, atol=2e-5)
            np.testing.assert_allclose(x.extra_embeddings, y.extra_embeddings, atol=2e-5)


def _messy_texts(n: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    words = ["EU", "rejects", "German", "call", ",", "Peter", "Blackburn", ".", "New", "York",
             "Zürich", "\u200b", "東京", "naïve", "O'Neil", "3.5", "--", "😀"]
    out = []
    for _ in range(n):
        k = rng.choice([0, 1, 3, 12, 40, 150])  # empty, short, and longer than a small window
        out.append(" ".join(rng.choice(words) for _ in range(k)))
    return out


@pytest.mark.parametrize("max_length", [None, 24])
def test_columnar_path_equals_the_per_item_path(model, max_length) -> None:
    texts = _messy_texts(120, seed=3)
    m = model
    old_len, old_stride = m.max_length, m.stride
    try:
        if max_length:  # many items span several windows (and several batches)
            m.max_length, m.stride = max_length, max_length // 4
        tts = [tokenize(t) for t in texts]
        rng = random.Random(5)
        given = []
        for tt in tts:
            sp = []
            for _ in range(rng.randint(0, 3) if len(tt) else 0):
                a = rng.randrange(len(tt))
                sp.append(TokenSpan(a, rng.randint(a + 1, len(tt)), "PER"))
            given.append(sp)
        for bt in (4096, 64):
            ref = reference_predict(m, tts, spans=given, return_embeddings=True, batch_tokens=bt)
            new = m.predict(texts, spans=given, return_embeddings=True, batch_tokens=bt)
            _same(new, ref, emb=True)
            _same(m.predict(tts, batch_tokens=bt), reference_predict(m, tts, batch_tokens=bt),
                  emb=False)
    finally:
        m.max_length, m.stride = old_len, old_stride


def test_given_span_out_of_range_names_the_item(model) -> None:
    with pytest.raises(ValueError, match=r"item 1: token span \[0, 9\)"):
        model.predict(["Ann met Bo", "Hi there"], spans=[[], [TokenSpan(0, 9, "PER")]])


def test_tokenize_many_equals_tokenize() -> None:
    texts = _messy_texts(300, seed=9) + ["", " ", "a\nb", "x\n\ny  z"]
    for a, b in zip(tokenize_many(texts), [tokenize(t) for t in texts]):
        assert a.text == b.text and a.tokens == b.tokens
        assert np.array_equal(a.starts, b.starts) and np.array_equal(a.ends, b.ends)
    with pytest.raises(TypeError, match="item 1"):
        tokenize_many(["a", 3])  # type: ignore[list-item]


@pytest.mark.skipif(not (DATA / "conll2003" / "test.conll").is_file(),
                    reason="shared CoNLL-03 data not present")
def test_same_as_before_on_conll03_test(model) -> None:
    from analysis.formats import load

    ds = load(DATA / "conll2003" / "test.conll", format="conll")
    tts = [t.tokens for t in ds.tasks]
    new = model.predict(tts)
    _same(new, reference_predict(model, tts), emb=False)
    assert sum(len(p.spans) for p in new) > 1000  # a fresh head predicts plenty of spans
