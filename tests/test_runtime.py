"""Model runtime: loading, tag mapping, batched word-aligned inference, windows, embeddings.

A tiny model is fine-tuned once per module from the packaged MiniLM backbone on five
hand-made sentences (it memorises them in a few epochs); CPU only, no downloads.
"""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysis.dataset import Dataset, Task  # noqa: E402
from analysis.spans import Span, TokenSpan, from_tokens, tokenize  # noqa: E402
from analysis.tags import decode_probs, tag_names  # noqa: E402
from ls_backend.runtime import NerModel, TaskPrediction, default_model_path, train  # noqa: E402
from ls_backend.runtime.infer import make_windows, prepare  # noqa: E402

pytestmark = pytest.mark.model

LABELS = ("PER", "LOC")
TAGS = tag_names(LABELS)
# (space-separated tokens, gold token spans)
RAW = [
    ("Obama met Biden in Paris .", [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC")]),
    ("Obama Biden spoke .", [(0, 1, "PER"), (1, 2, "PER")]),  # adjacent same-type entities
    ("Merkel visited New York yesterday .", [(0, 1, "PER"), (2, 4, "LOC")]),
    ("Berlin and Rome are cities .", [(0, 1, "LOC"), (2, 3, "LOC")]),
    ("Nothing to see here .", []),
]


def make_dataset(raw=RAW, *, unannotated: int = 0) -> Dataset:
    tasks = []
    for i, (sent, gold) in enumerate(raw):
        tt = from_tokens(sent.split())
        spans = tuple(Span(int(tt.starts[a]), int(tt.ends[b - 1]), lab) for a, b, lab in gold)
        tasks.append(Task(i, None, tt.text, tt, spans))
    for k in range(unannotated):
        tt = tokenize(f"Unlabelled sentence number {k} about Rome .")
        tasks.append(Task(len(tasks), None, tt.text, tt, None))
    return Dataset(tasks, LABELS)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    out = tmp_path_factory.mktemp("tiny_model")
    res = train(make_dataset(), out, epochs=5, batch_size=2, lr=1e-3, max_length=32,
                progress=False, record_dynamics=False)
    return res.model_dir


@pytest.fixture(scope="module")
def model(model_dir: str) -> NerModel:
    return NerModel.load(model_dir, device="cpu", max_length=512)


def manual_forward(m: NerModel, words: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Independent path: HF tokenizer with special tokens, one sequence, no batching.

    Returns word_ids (n_sub_with_specials,), logits (n_sub, n_native), last hidden (n_sub, H).
    """
    enc = m.tokenizer(words, is_split_into_words=True, return_tensors="pt")
    with torch.inference_mode():
        out = m.hf_model(**enc, output_hidden_states=True)
    wid = np.array([-1 if w is None else w for w in enc.word_ids()])
    return wid, out.logits[0].numpy(), out.hidden_states[-1][0].numpy()


def softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ---------------------------------------------------------------------------------- basics


def test_default_model_path_is_packaged_backbone() -> None:
    cfg = json.loads(open(f"{default_model_path()}/config.json").read())
    assert cfg["hidden_size"] == 384 and cfg["model_type"] == "bert"


def test_loaded_model_attributes(model: NerModel) -> None:
    assert model.labels == LABELS
    assert model.tags == TAGS
    assert model.scheme == "iob2"
    assert model.trained is True
    assert model.version.startswith("nerq-")
    assert model.device == "cpu"
    assert model.embedding_dim == 384


def test_probs_shape_and_normalisation(model: NerModel) -> None:
    texts = ["Obama met Biden in Paris .", "A much longer sentence with many words in it ."]
    preds = model.predict(texts)
    assert len(preds) == 2 and all(isinstance(p, TaskPrediction) for p in preds)
    for text, p in zip(texts, preds):
        n = len(tokenize(text))
        assert p.probs.shape == (n, len(TAGS)) and p.probs.dtype == np.float32
        np.testing.assert_allclose(p.probs.sum(axis=1), 1.0, atol=1e-5)
        assert (p.probs >= 0).all()
        assert 0.0 <= p.score <= 1.0 and 0.0 <= p.entropy <= 1.0
        assert p.span_scores.shape == (len(p.spans),)
        assert p.span_embeddings is None and p.extra_embeddings is None


def test_word_probs_are_softmax_of_first_subtoken(model: NerModel) -> None:
    words = ["Merkel", "visited", "Washingtonville", "yesterday", "."]  # multi-subtoken word
    p = model.predict([from_tokens(words)])[0]
    wid, logits, _ = manual_forward(model, words)
    first = np.array([int(np.flatnonzero(wid == w)[0]) for w in range(len(words))])
    assert (np.bincount(wid[wid >= 0]) > 1).any()  # the test really has a split word
    np.testing.assert_allclose(p.probs, softmax(logits[first]), atol=1e-5)


def test_memorised_training_sentences_and_exact_offsets(model: NerModel) -> None:
    ds = make_dataset()
    preds = model.predict([t.tokens for t in ds.tasks])
    for t, p in zip(ds.tasks, preds):
        assert p.spans == t.gold
        for s in p.spans:
            assert t.text[s.start : s.end] == t.text[s.start : s.end].strip()
            assert s.start in t.tokens.starts and s.end in t.tokens.ends


def test_adjacent_same_type_entities_stay_separate(model: NerModel) -> None:
    text = "Obama Biden spoke ."
    (p,) = model.predict([text])
    assert [(text[s.start : s.end], s.label) for s in p.spans] == [("Obama", "PER"),
                                                                    ("Biden", "PER")]
    tok_spans, scores = decode_probs(p.probs, model.tags)
    assert len(tok_spans) == 2
    np.testing.assert_allclose(p.span_scores, scores)


@pytest.mark.parametrize(
    "text",
    ["  Obama   met\tBiden\n in  Paris .  ", "Café Zürich: München—Paris!", "北京 Obama 😀 Biden"],
    ids=["odd-whitespace", "unicode-punct", "cjk-emoji"],
)
def test_char_offsets_follow_str_tokenization(model: NerModel, text: str) -> None:
    (p,) = model.predict([text])
    tt = tokenize(text)
    assert p.probs.shape[0] == len(tt)
    tok_spans, _ = decode_probs(p.probs, model.tags)
    expect = tuple(Span(int(tt.starts[s.start]), int(tt.ends[s.end - 1]), s.label)
                   for s in tok_spans)
    assert p.spans == expect


def test_str_and_tokenized_inputs_agree(model: NerModel) -> None:
    text = "Berlin and Rome are cities ."
    a, b = model.predict([text, tokenize(text)])
    np.testing.assert_array_equal(a.probs, b.probs)
    assert a.spans == b.spans


def test_empty_text_gives_empty_prediction(model: NerModel) -> None:
    preds = model.predict(["", "Obama met Biden .", "   "], return_embeddings=True)
    for k in (0, 2):
        p = preds[k]
        assert p.probs.shape == (0, len(TAGS))
        assert p.spans == () and p.span_scores.shape == (0,)
        assert p.score == 1.0 and p.entropy == 0.0
        assert p.span_embeddings.shape == (0, 384)
    assert preds[1].probs.shape[0] == 4
    assert model.predict([]) == []


def test_word_without_subtokens_keeps_alignment(model: NerModel) -> None:
    # U+200B is its own token for analysis.spans.tokenize but BERT drops it
    text = "Obama \u200b met Biden ."
    (p,) = model.predict([text])
    tt = tokenize(text)
    assert "\u200b" in tt.tokens
    assert p.probs.shape == (len(tt), len(TAGS))
    # the dropped word is fed as the unknown token, so every other row stays in place
    (q,) = model.predict([from_tokens(["Obama", "[UNK]", "met", "Biden", "."])])
    np.testing.assert_allclose(p.probs, q.probs, atol=1e-5)


def test_bad_items_raise(model: NerModel) -> None:
    with pytest.raises(TypeError, match="item 1"):
        model.predict(["ok", 42])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"item 0: token span \[2, 9\)"):
        model.predict(["a b c"], spans=[[TokenSpan(2, 9, "PER")]])
    with pytest.raises(ValueError, match="2 entries"):
        model.predict(["a", "b", "c"], spans=[[], []])


# ---------------------------------------------------------------------------------- windows


@pytest.mark.parametrize("n_sub,size,stride", [(1, 4, 2), (4, 4, 2), (5, 4, 2), (37, 6, 3),
                                               (100, 10, 0), (23, 7, 100)],
                         ids=["single", "exact", "one-over", "many", "no-overlap", "big-stride"])
def test_make_windows_cover_and_owner_is_most_central(n_sub: int, size: int, stride: int) -> None:
    windows, owner = make_windows(n_sub, size, stride)
    assert windows[0, 0] == 0 and windows[-1, 1] == n_sub
    assert ((windows[:, 1] - windows[:, 0]) <= size).all()
    assert (windows[1:, 0] <= windows[:-1, 1]).all()  # no gaps
    for p in range(n_sub):
        a, b = windows[owner[p]]
        assert a <= p < b
        cent = [min(p - x, y - 1 - p) for x, y in windows if x <= p < y]
        assert min(p - a, b - 1 - p) == max(cent)


def test_long_text_windows_merge_from_owning_window(model_dir: str) -> None:
    m = NerModel.load(model_dir, device="cpu", max_length=9, stride=4)
    words = ("Merkel visited New York yesterday . Obama met Biden in Paris .").split() * 2
    tt = from_tokens(words)
    (p,) = m.predict([tt], batch_tokens=64)
    prep = prepare(m.tokenizer, [tt], window=m.window, stride=m.stride)[0]
    assert len(prep.windows) > 3
    assert p.probs.shape == (len(words), len(TAGS))
    for w in range(len(words)):
        f = prep.word_first[w]
        a, b = prep.windows[prep.owner[f]]
        ids = [*m.prefix_ids, *prep.ids[a:b].tolist(), *m.suffix_ids]
        with torch.inference_mode():
            logits = m.hf_model(input_ids=torch.tensor([ids])).logits[0].numpy()
        np.testing.assert_allclose(p.probs[w], softmax(logits[len(m.prefix_ids) + f - a]),
                                   atol=1e-5)


def test_span_split_across_windows_is_one_span(model_dir: str) -> None:
    words = ("Merkel visited New York yesterday . " * 3).split()
    tt = from_tokens(words)
    m = NerModel.load(model_dir, device="cpu")
    found = False
    for ml in range(5, 14):
        m.max_length, m.stride = ml, ml // 2
        prep = prepare(m.tokenizer, [tt], window=m.window, stride=m.stride)[0]
        wf = prep.word_first
        split = [k for k in range(3) if prep.owner[wf[2 + 6 * k]] != prep.owner[wf[3 + 6 * k]]]
        if not split:
            continue
        found = True
        (p,) = m.predict([tt])
        got = [(tt.text[s.start : s.end], s.label) for s in p.spans]
        assert got == [("Merkel", "PER"), ("New York", "LOC")] * 3, (ml, split)
    assert found, "no window size split 'New York' between windows"


def test_text_longer_than_model_max_length(model: NerModel) -> None:
    words = ("Obama met Biden in Paris .".split()) * 120  # 720 words > 512 subtokens
    tt = from_tokens(words)
    (p,) = model.predict([tt])
    assert model.max_length == 512
    assert p.probs.shape == (720, len(TAGS))
    np.testing.assert_allclose(p.probs.sum(1), 1.0, atol=1e-5)
    labels = [s.label for s in p.spans]
    assert labels == ["PER", "PER", "LOC"] * 120


def test_batching_does_not_change_results(model: NerModel) -> None:
    texts = [" ".join(["word"] * k) + " Obama in Paris ." for k in range(1, 14, 2)]
    a = model.predict(texts, batch_tokens=40)
    b = model.predict(texts, batch_tokens=100_000)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.probs, y.probs, atol=1e-5)
        assert x.spans == y.spans


# ---------------------------------------------------------------------------------- embeddings


def test_span_embeddings_are_mean_of_subtoken_states(model: NerModel) -> None:
    words = ["Merkel", "visited", "New", "Yorkshireville", "yesterday", "."]
    tt = from_tokens(words)
    given = [TokenSpan(2, 4, "LOC"), TokenSpan(0, 1, "PER"), TokenSpan(1, 6, "X")]
    (p,) = model.predict([tt], spans=[given], return_embeddings=True)
    wid, _, hidden = manual_forward(model, words)
    assert p.extra_embeddings.shape == (3, 384) and p.extra_embeddings.dtype == np.float32
    for k, s in enumerate(given):
        rows = (wid >= s.start) & (wid < s.end)
        np.testing.assert_allclose(p.extra_embeddings[k], hidden[rows].mean(0), atol=1e-4)
    assert p.span_embeddings.shape == (len(p.spans), 384)
    for k, s in enumerate(p.spans):
        w0 = int(np.searchsorted(tt.starts, s.start))
        w1 = int(np.searchsorted(tt.ends, s.end)) + 1
        rows = (wid >= w0) & (wid < w1)
        np.testing.assert_allclose(p.span_embeddings[k], hidden[rows].mean(0), atol=1e-4)


def test_embeddings_across_windows_match_owning_windows(model_dir: str) -> None:
    m = NerModel.load(model_dir, device="cpu", max_length=6, stride=2)
    words = "Merkel visited New Yorkshireville yesterday and Obama met Biden .".split()
    tt = from_tokens(words)
    (p,) = m.predict([tt], spans=[[TokenSpan(0, len(words), "ALL")]])
    prep = prepare(m.tokenizer, [tt], window=m.window, stride=m.stride)[0]
    states = np.zeros((len(prep.ids), 384), dtype=np.float32)
    for w, (a, b) in enumerate(prep.windows):
        ids = [*m.prefix_ids, *prep.ids[a:b].tolist(), *m.suffix_ids]
        with torch.inference_mode():
            h = m.hf_model(input_ids=torch.tensor([ids]),
                           output_hidden_states=True).hidden_states[-1][0].numpy()
        own = np.flatnonzero(prep.owner[a:b] == w)
        states[a + own] = h[len(m.prefix_ids) + own]
    np.testing.assert_allclose(p.extra_embeddings[0], states.mean(0), atol=1e-4)


# ---------------------------------------------------------------------------------- save / load


def test_save_load_round_trip_identical(model: NerModel, tmp_path) -> None:
    texts = ["Obama met Biden in Paris .", "Berlin and Rome are cities ."]
    before = model.predict(texts, return_embeddings=True)
    model.save(tmp_path / "copy")
    again = NerModel.load(tmp_path / "copy", device="cpu")
    after = again.predict(texts, return_embeddings=True)
    assert again.version == model.version and again.labels == model.labels
    for x, y in zip(before, after):
        np.testing.assert_array_equal(x.probs, y.probs)
        np.testing.assert_array_equal(x.span_embeddings, y.span_embeddings)
        assert x.spans == y.spans


def test_backbone_gets_fresh_seeded_head() -> None:
    a = NerModel.load(labels=["PER", "LOC"], device="cpu", seed=3)
    b = NerModel.load(labels=["PER", "LOC"], device="cpu", seed=3)
    c = NerModel.load(labels=["PER", "LOC"], device="cpu", seed=4)
    assert a.trained is False and a.tags == TAGS
    pa, pb, pc = (m.predict(["Obama met Biden ."])[0].probs for m in (a, b, c))
    np.testing.assert_array_equal(pa, pb)
    assert not np.allclose(pa, pc)
    with pytest.raises(ValueError, match="pass labels"):
        NerModel.load(device="cpu")


def test_missing_model_is_not_downloaded(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="downloads are disabled"):
        NerModel.load(tmp_path / "nothing-here", labels=["PER"])
    with pytest.raises(FileNotFoundError):
        NerModel.load("nerq-test/definitely-not-cached-model", labels=["PER"])


# ---------------------------------------------------------------------------------- tag mapping


def _save_hf_model(path, tags: list[str]) -> str:
    """A foreign token-classification model with its own tag set (random head)."""
    from transformers import AutoModelForTokenClassification, AutoTokenizer

    torch.manual_seed(0)
    hf = AutoModelForTokenClassification.from_pretrained(
        default_model_path(), num_labels=len(tags), id2label=dict(enumerate(tags)),
        label2id={t: i for i, t in enumerate(tags)}, local_files_only=True)
    hf.save_pretrained(path)
    AutoTokenizer.from_pretrained(default_model_path(), local_files_only=True).save_pretrained(path)
    return str(path)


BIOES = ["S-loc", "O", "B-per", "I-per", "E-per", "S-per", "B-loc", "I-loc", "E-loc"]


@pytest.fixture(scope="module")
def bioes_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    return _save_hf_model(tmp_path_factory.mktemp("bioes"), BIOES)


def test_foreign_bioes_model_is_folded_onto_iob2(bioes_dir: str) -> None:
    m = NerModel.load(bioes_dir, labels=["PER", "LOC"], device="cpu")
    assert m.native_scheme == "bioes" and m.scheme == "iob2" and m.tags == TAGS
    assert m.version.startswith("hf-")
    words = ["Obama", "met", "Biden", "in", "Paris", "."]
    (p,) = m.predict([from_tokens(words)])
    wid, logits, _ = manual_forward(m, words)
    first = np.array([int(np.flatnonzero(wid == w)[0]) for w in range(len(words))])
    nat = softmax(logits[first])
    col = {t: i for i, t in enumerate(BIOES)}
    expect = np.stack([
        nat[:, col["O"]],
        nat[:, col["B-per"]] + nat[:, col["S-per"]],
        nat[:, col["I-per"]] + nat[:, col["E-per"]],
        nat[:, col["B-loc"]] + nat[:, col["S-loc"]],
        nat[:, col["I-loc"]] + nat[:, col["E-loc"]],
    ], axis=1)
    np.testing.assert_allclose(p.probs, expect, atol=1e-5)
    # without labels the model's own (mapped) types are used
    own = NerModel.load(bioes_dir, device="cpu")
    assert own.labels == ("loc", "per")


def test_label_mismatch_lists_both_sides(bioes_dir: str) -> None:
    with pytest.raises(ValueError) as exc:
        NerModel.load(bioes_dir, labels=["PERSON", "LOCATION"], device="cpu")
    msg = str(exc.value)
    for name in ("per", "loc", "PERSON", "LOCATION", "label_map"):
        assert name in msg


def test_label_map_renames_and_drops(bioes_dir: str) -> None:
    ref = NerModel.load(bioes_dir, labels=["PER", "LOC"], device="cpu")
    m = NerModel.load(bioes_dir, labels=["PERSON", "LOCATION"],
                      label_map={"per": "PERSON", "loc": "LOCATION"}, device="cpu")
    assert m.tags == tag_names(["PERSON", "LOCATION"])
    text = ["Obama met Biden in Paris ."]
    np.testing.assert_array_equal(m.predict(text)[0].probs, ref.predict(text)[0].probs)
    d = NerModel.load(bioes_dir, labels=["PER"], label_map={"loc": "O"}, device="cpu")
    pr, pd = ref.predict(text)[0].probs, d.predict(text)[0].probs
    assert d.tags == ("O", "B-PER", "I-PER")
    np.testing.assert_allclose(pd[:, 0], pr[:, 0] + pr[:, 3] + pr[:, 4], atol=1e-6)
    np.testing.assert_allclose(pd[:, 1:], pr[:, 1:3], atol=1e-6)


def test_foreign_iob1_model_keeps_its_tags(tmp_path) -> None:
    path = _save_hf_model(tmp_path / "iob1", ["O", "I-PER", "I-LOC", "B-PER"])
    m = NerModel.load(path, device="cpu")
    assert m.scheme == "iob1" and set(m.tags) == {"O", "I-PER", "I-LOC", "B-PER"}
    (p,) = m.predict(["Obama met Biden ."])
    assert p.probs.shape == (4, 4)
    np.testing.assert_allclose(p.probs.sum(1), 1.0, atol=1e-5)


# ----------------------------------------------------------------- attention kernel, compile
TEXTS = ["John lives in Paris .",
         "A longer sentence about Angela Merkel , Berlin and the United Nations in New York ."]


def test_attention_eager_gives_the_sdpa_results(model_dir: str) -> None:
    auto = NerModel.load(model_dir, device="cpu")
    eager = NerModel.load(model_dir, device="cpu", attention="eager")
    assert auto.hf_model.config._attn_implementation == "sdpa"
    assert eager.hf_model.config._attn_implementation == "eager"
    pa = auto.predict(TEXTS, return_embeddings=True)
    pe = eager.predict(TEXTS, return_embeddings=True)
    for a, e in zip(pa, pe):
        assert a.spans == e.spans
        np.testing.assert_allclose(a.probs, e.probs, atol=1e-5)
        np.testing.assert_allclose(a.span_embeddings, e.span_embeddings, atol=1e-4)


def test_attention_choice_is_checked(model_dir: str) -> None:
    with pytest.raises(ValueError, match="attention must be one of auto, sdpa, eager"):
        NerModel.load(model_dir, device="cpu", attention="flash")


def test_settings_pass_attention_and_compile_to_serving_models() -> None:
    from ls_backend.settings import Settings

    s = Settings.from_env({"ATTENTION": "Eager", "TORCH_COMPILE": "1", "DEVICE": "cpu"})
    assert s.serving_model_options == {"device": "cpu", "attention": "eager", "compile": True}
    assert Settings.from_env({}).serving_model_options["compile"] is False
    with pytest.raises(ValueError, match="ATTENTION: 'flash'"):
        Settings.from_env({"ATTENTION": "flash"})
    with pytest.raises(ValueError, match="TORCH_COMPILE"):
        Settings.from_env({"TORCH_COMPILE": "maybe"})


@pytest.mark.skipif(shutil.which(os.environ.get("CXX", "g++")) is None,
                    reason="torch.compile on CPU needs a C++ compiler")
def test_compiled_model_gives_the_eager_results(model_dir: str) -> None:
    plain = NerModel.load(model_dir, device="cpu")
    comp = NerModel.load(model_dir, device="cpu", compile=True)
    assert comp.compiled and not plain.compiled
    pp = plain.predict(TEXTS, return_embeddings=True)
    pc = comp.predict(TEXTS, return_embeddings=True)  # hidden states without the hook
    for a, c in zip(pp, pc):
        assert a.spans == c.spans
        np.testing.assert_allclose(a.probs, c.probs, atol=1e-5)
        np.testing.assert_allclose(a.span_embeddings, c.span_embeddings, atol=1e-4)
