"""The raw model view and the FFN-activation NMF components (ExplaiNER-style report views).

The packaged MiniLM backbone with a fresh head is enough: neither view reads the head.  CPU
only, no downloads; skips when the backbone package is not installed.
"""

from __future__ import annotations

import json
from itertools import pairwise
from types import SimpleNamespace

import numpy as np
import pytest

pytest.importorskip("torch")
pytest.importorskip("sklearn")

import torch

from analysis.spans import from_tokens
from ls_backend.runtime import NerModel, default_model_path
from ls_backend.runtime.activations import (
    SHOWN_TASKS,
    _ffn_modules,
    _sample,
    _word_activations,
    activation_components,
    model_view,
)
from ls_backend.runtime.windows import prepare_columns

pytestmark = pytest.mark.model

LABELS = ["PER", "LOC"]
SENT = ["Obama", "visited", "Strasbourg", "unbelievably", "early", "."]
WORDS = [
    SENT,
    ["Merkel", "met", "Macron", "in", "Berlin", "."],
    ["Nothing", "to", "see", "here", "."],
    [],
    ["Google", "opened", "an", "office", "in", "London", "."],
    ["Putin", "flew", "to", "Moscow", "."],
]


def _load(**kw: object) -> NerModel:
    try:
        default_model_path()
    except FileNotFoundError as exc:
        pytest.skip(str(exc))
    return NerModel.load(None, labels=LABELS, device="cpu", seed=0, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def model() -> NerModel:
    return _load()


@pytest.fixture(scope="module")
def small_window() -> NerModel:
    """Windows of 16 subtokens (14 content), overlap 4: a short text needs several."""
    return _load(max_length=16, stride=4)


def _strip(piece: str) -> str:
    return piece.removeprefix("##")


# ------------------------------------------------------------------ model view


def test_model_view_subwords_join_back_to_words(model: NerModel) -> None:
    view = model_view(model, WORDS, rows=[0])[0]
    sub, wid = view["subwords"], view["word_ids"]
    assert len(sub) == len(wid)
    specials = set(model.tokenizer.all_special_tokens)
    assert [s for s, w in zip(sub, wid) if w is None] == ["[CLS]", "[SEP]"]
    assert wid[0] is None and wid[-1] is None
    assert all(s in specials for s, w in zip(sub, wid) if w is None)
    content = [w for w in wid if w is not None]
    assert content == sorted(content) and sorted(set(content)) == list(range(len(SENT)))
    for i, word in enumerate(SENT):  # the MiniLM tokenizer is uncased
        pieces = [s for s, w in zip(sub, wid) if w == i]
        assert "".join(map(_strip, pieces)) == word.lower()
    assert max(content.count(i) for i in range(len(SENT))) > 1  # some word really splits
    # the same tokens and word ids as the tokenizer's own call on the sentence
    enc = model.tokenizer(SENT, is_split_into_words=True)
    assert sub == enc.tokens() and wid == enc.word_ids()
    assert view["windows"] == [[1, len(sub) - 1]]


def test_model_view_rows_and_empty_task(model: NerModel) -> None:
    out = model_view(model, WORDS, rows=[3, 1, 1])
    assert list(out) == [3, 1]
    assert out[3] == {"subwords": [], "word_ids": [], "windows": []}
    json.dumps(out)
    with pytest.raises(ValueError, match=r"row 6 out of range.*0\.\.5"):
        model_view(model, WORDS, rows=[6])


def test_model_view_windows_cover_a_long_text(small_window: NerModel) -> None:
    long = (SENT + ["Paris"]) * 6  # ~60 subtokens >> the 14-subtoken window
    view = model_view(small_window, [long], rows=[0])[0]
    n_pre = len(small_window.prefix_ids)
    n_content = len(view["subwords"]) - n_pre - len(small_window.suffix_ids)
    wins = view["windows"]
    assert n_content > small_window.window and len(wins) > 2
    covered = np.zeros(len(view["subwords"]), dtype=int)
    for a, b in wins:
        assert 0 < b - a <= small_window.window
        covered[a:b] += 1
    assert (covered[n_pre:n_pre + n_content] >= 1).all()
    assert (covered[:n_pre] == 0).all() and (covered[n_pre + n_content:] == 0).all()
    assert all(a2 < b1 for (_, b1), (a2, _) in pairwise(wins))  # consecutive ones overlap
    assert wins[0][0] == n_pre and wins[-1][1] == n_pre + n_content


# ------------------------------------------------------------------ activations


def _manual_first_subword_acts(model: NerModel, words: list[str], layer: int) -> np.ndarray:
    """Independent path: one full sequence, a hook on ``encoder.layer[layer].intermediate``."""
    enc = model.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    seen: list[torch.Tensor] = []
    mod = model.hf_model.bert.encoder.layer[layer].intermediate
    h = mod.register_forward_hook(lambda _m, _a, out: seen.append(out))
    try:
        with torch.no_grad():
            model.hf_model(**enc)
    finally:
        h.remove()
    wid = enc.word_ids()
    first = [wid.index(i) for i in range(len(words))]
    return seen[0][0, first].numpy()


def test_word_activations_match_a_plain_forward(model: NerModel) -> None:
    ffns = _ffn_modules(model.hf_model)
    assert len(ffns) == model.hf_model.config.num_hidden_layers == 6
    cols = prepare_columns(model.tokenizer, [from_tokens(w) for w in WORDS], window=model.window,
                           stride=model.stride)
    got = _word_activations(model, cols, ffns[2])
    assert got.shape == (sum(map(len, WORDS)), model.hf_model.config.intermediate_size)
    for k, words in enumerate(WORDS):
        if words:
            lo, hi = cols.word_off[k], cols.word_off[k + 1]
            ref = _manual_first_subword_acts(model, words, 2)
            np.testing.assert_allclose(got[lo:hi], ref, rtol=1e-4, atol=1e-4)


def test_components_shapes(model: NerModel) -> None:
    rows = [0, 1, 2, 3, 4]
    res = activation_components(model, WORDS, rows=rows, n_components=3, top_k=4)
    assert res["n_layers"] == 6 and res["layer"] == 3  # the middle layer
    assert res["n_words"] == sum(len(WORDS[r]) for r in rows)
    assert len(res["components"]) == 3
    vocab = {w for r in rows for w in WORDS[r]}
    for comp in res["components"]:
        tw = comp["top_words"]
        assert 0 < len(tw) <= 4
        assert len({w for w, _ in tw}) == len(tw) and {w for w, _ in tw} <= vocab
        weights = [x for _, x in tw]
        assert weights == sorted(weights, reverse=True) and min(weights) > 0
    assert list(res["tasks"]) == rows
    for r in rows:
        per_word = np.asarray(res["tasks"][r]).reshape(-1, 3)
        assert len(per_word) == len(WORDS[r])
        if len(per_word):
            assert (per_word >= 0).all() and np.allclose(per_word.max(axis=1), 1.0)
    json.dumps(res)


def test_components_are_deterministic_and_capped(model: NerModel) -> None:
    many = [list(w) for _ in range(5) for w in WORDS]  # 30 tasks, 145 words
    rows = list(range(len(many)))
    a = activation_components(model, many, rows=rows, layer=1, n_components=2, max_tokens=40,
                              top_k=3, seed=7)
    b = activation_components(model, many, rows=rows, layer=1, n_components=2, max_tokens=40,
                              top_k=3, seed=7)
    assert a == b
    assert a["layer"] == 1 and a["n_words"] == 40
    assert list(a["tasks"]) == rows[:SHOWN_TASKS]


def test_components_on_a_windowed_text(small_window: NerModel) -> None:
    long = (SENT + ["Paris"]) * 6
    res = activation_components(small_window, [long, SENT], rows=[0, 1], n_components=2)
    assert len(res["tasks"][0]) == len(long) and len(res["tasks"][1]) == len(SENT)


@pytest.mark.parametrize("layer", [6, -1, 100], ids=["one-past", "negative", "far"])
def test_bad_layer_names_the_range(model: NerModel, layer: int) -> None:
    with pytest.raises(ValueError, match=r"allowed 0\.\.5"):
        activation_components(model, WORDS, rows=[0], layer=layer)


def test_bad_options(model: NerModel) -> None:
    with pytest.raises(ValueError, match="n_components must be >= 1, got 0"):
        activation_components(model, WORDS, rows=[0], n_components=0)
    with pytest.raises(ValueError, match=r"n_components=8 needs at least as many words"):
        activation_components(model, WORDS, rows=[0, 3])
    with pytest.raises(ValueError, match=r"row -1 out of range"):
        activation_components(model, WORDS, rows=[-1])


def test_model_without_ffn_is_refused() -> None:
    class Toy(torch.nn.Module):
        config = SimpleNamespace(model_type="toy-mlp")

        def __init__(self) -> None:
            super().__init__()
            self.layers = torch.nn.ModuleList([torch.nn.Linear(2, 2)])

    with pytest.raises(ValueError, match="model type 'toy-mlp' has no FFN intermediate"):
        activation_components(SimpleNamespace(hf_model=Toy()), WORDS,  # type: ignore[arg-type]
                              rows=[0])


def test_distilbert_ffn_is_found() -> None:
    from transformers import DistilBertConfig, DistilBertModel

    cfg = DistilBertConfig(vocab_size=50, n_layers=3, dim=16, hidden_dim=24, n_heads=2,
                           max_position_embeddings=32)
    ffns = _ffn_modules(DistilBertModel(cfg).eval())
    assert len(ffns) == 3
    hf = DistilBertModel(cfg).eval()
    seen: list[torch.Tensor] = []
    h = _ffn_modules(hf)[1].register_forward_hook(lambda _m, _a, out: seen.append(out))
    with torch.no_grad():
        hf(input_ids=torch.tensor([[1, 2, 3]]))
    h.remove()
    assert seen[0].shape == (1, 3, 24)  # the FFN's inner width, post-activation


def test_sample_is_seeded_and_capped() -> None:
    lens = np.array([5, 0, 7, 3, 9, 4])
    tasks, keep = _sample(lens, 10, 3)
    again = _sample(lens, 10, 3)
    assert np.array_equal(tasks, again[0]) and np.array_equal(keep, again[1])
    assert keep.sum() == 10 and len(keep) == lens[tasks].sum()
    assert np.array_equal(tasks, np.sort(tasks))
    everything = _sample(lens, 1000, 3)
    assert everything[1].all() and len(everything[0]) == len(lens)
