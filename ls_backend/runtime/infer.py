"""Batched, word-aligned inference: text in, per-word probabilities, spans and embeddings out.

The pipeline, for a list of items (``TokenizedText`` or ``str``; a ``str`` is split with
:func:`analysis.spans.tokenize`):

1. **Pre-tokenization.**  The item's words go to the fast tokenizer in one call with
   ``is_split_into_words=True``; ``word_ids()`` maps every subtoken back to its word.  A word
   that yields no subtoken at all (e.g. a lone zero-width space, which BERT tokenizers drop) is
   replaced by the tokenizer's unknown token, so every word owns at least one subtoken and
   per-word outputs never shift.
2. **Windows.**  A text longer than the model's maximum length is cut into overlapping windows
   (``stride`` subtokens of overlap).  Every subtoken is *owned* by the window in which it is
   most central (largest distance to the window's nearer edge); its logits and hidden state are
   taken from that window only.  Windows are independent sequences for the model.
3. **Batches.**  All windows of all items are sorted by length and packed greedily so that
   ``n_windows * longest_window <= batch_tokens``.
4. **Forward.**  ``torch.inference_mode()``; bf16 (fp16 where bf16 is unsupported) autocast on
   CUDA, fp32 on CPU.
5. **Per word.**  A word's probabilities are the softmax of its **first subtoken's** logits
   (the same subtoken training labels; the other subtokens are ignored, as in the BERT paper).
   When the model's tag set is mapped onto the canonical IOB2 set, probabilities are summed
   per canonical tag (``S-X`` into ``B-X``, ``E-X`` into ``I-X``, dropped types into ``O``).
6. **Decoding.**  :func:`analysis.tags.decode_probs` (argmax, a new span at every ``B-``),
   then token spans → character spans through the item's own token offsets.

Embeddings: a span's embedding is the mean of the last-layer hidden states of all subtokens of
its words (special tokens excluded).  Items finish as soon as their last window is processed,
so memory stays bounded by the longest item, not the dataset.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from analysis.tags import decode_probs, task_confidence, task_entropy
from analysis.spans import Span, TokenizedText, TokenSpan, token_to_char_spans, tokenize

if TYPE_CHECKING:  # pragma: no cover
    from .loading import NerModel

log = logging.getLogger(__name__)

__all__ = ["TaskPrediction", "Prepared", "prepare", "iter_batches", "predict"]


@dataclass
class TaskPrediction:
    """Model output for one item.

    Attributes
    ----------
    probs : (n_tokens, n_tags) float32
        Per **word** (the item's tokens) probability of every tag in ``NerModel.tags``; rows sum
        to 1.  A word's row is the softmax of its first subtoken's logits.
    spans : tuple[Span, ...]
        Argmax-decoded character spans (half-open), a new span at every ``B-``.
    span_scores : (n_spans,) float32
        Mean argmax probability over each span's tokens.
    score : float
        :func:`analysis.tags.task_confidence` (least-confident token).
    entropy : float
        :func:`analysis.tags.task_entropy` in ``[0, 1]``.
    span_embeddings : (n_spans, hidden) float32 or None
        Mean last-layer hidden state of each predicted span's subtokens (``return_embeddings``).
    extra_embeddings : (n_given_spans, hidden) float32 or None
        The same for the caller-given token spans (``predict(..., spans=...)``).
    """

    probs: np.ndarray
    spans: tuple[Span, ...]
    span_scores: np.ndarray
    score: float
    entropy: float
    span_embeddings: np.ndarray | None = None
    extra_embeddings: np.ndarray | None = None


@dataclass
class Prepared:
    """One item after subword tokenization and windowing.

    Attributes
    ----------
    tt : the item's words with character offsets
    ids : (n_sub,) int64 subtoken ids without special tokens
    word_first : (n_words + 1,) int64; word ``w`` owns subtokens ``[word_first[w], word_first[w+1])``
    windows : (n_windows, 2) int64 half-open subtoken ranges ``[a, b)``
    owner : (n_sub,) int64 index of the window that owns each subtoken
    """

    tt: TokenizedText
    ids: np.ndarray
    word_first: np.ndarray
    windows: np.ndarray
    owner: np.ndarray

    @property
    def n_words(self) -> int:
        return len(self.tt)


def special_affixes(tokenizer: Any) -> tuple[list[int], list[int]]:
    """Special-token ids the tokenizer puts before and after a single sequence."""
    enc = tokenizer(["a"], is_split_into_words=True, add_special_tokens=True)
    ids = list(enc["input_ids"])
    wid = enc.word_ids()
    content = [i for i, w in enumerate(wid) if w is not None]
    if not content:  # pragma: no cover - every tokenizer maps "a" to something
        raise ValueError("tokenizer produced no subtoken for the word 'a'")
    return ids[: content[0]], ids[content[-1] + 1 :]


def make_windows(n_sub: int, size: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """Overlapping windows over ``n_sub`` subtokens and the owning window of each subtoken.

    Parameters
    ----------
    n_sub : number of subtokens (> 0)
    size : maximum window length (content only, no special tokens)
    stride : overlap between consecutive windows, clipped to ``[0, size // 2]``

    Returns
    -------
    windows : (n_windows, 2) int64 half-open ranges covering ``[0, n_sub)``
    owner : (n_sub,) int64 window in which each subtoken is most central
    """
    if size < 1:
        raise ValueError(f"window size must be >= 1, got {size}")
    if n_sub <= size:
        return np.array([[0, n_sub]], dtype=np.int64), np.zeros(n_sub, dtype=np.int64)
    overlap = int(min(max(stride, 0), size // 2))
    step = size - overlap
    starts: np.ndarray = np.arange(0, n_sub - size, step, dtype=np.int64)
    starts = np.append(starts, n_sub - size)
    windows = np.stack([starts, starts + size], axis=1)
    pos = np.arange(n_sub, dtype=np.int64)
    # centrality of each position in each window; -1 outside the window
    left = pos[None, :] - windows[:, :1]
    right = windows[:, 1:] - 1 - pos[None, :]
    cent = np.minimum(left, right)
    cent[(left < 0) | (right < 0)] = -1
    owner = cent.argmax(axis=0).astype(np.int64)
    return windows, owner


def as_tokenized(items: Sequence[TokenizedText | str]) -> list[TokenizedText]:
    out = []
    for i, it in enumerate(items):
        if isinstance(it, TokenizedText):
            out.append(it)
        elif isinstance(it, str):
            out.append(tokenize(it))
        else:
            raise TypeError(f"item {i}: expected TokenizedText or str, got {type(it).__name__}")
    return out


def prepare(
    tokenizer: Any,
    tts: Sequence[TokenizedText],
    *,
    window: int,
    stride: int,
) -> list[Prepared]:
    """Subword-tokenize items (one fast-tokenizer call) and cut them into windows.

    ``window`` is the content length of a window (model max length minus special tokens).
    """
    nonempty = [k for k, tt in enumerate(tts) if len(tt)]
    words: list[list[str]] = [list(tts[k].tokens) for k in nonempty]
    enc = _encode(tokenizer, words)
    # words that produced no subtoken -> unknown token, re-encode just those items
    ids_all = [np.asarray(enc["input_ids"][j], dtype=np.int64) for j in range(len(words))]
    wid_all = [np.asarray(enc.word_ids(j), dtype=np.int64) for j in range(len(words))]
    fix: list[int] = []
    for j in range(len(words)):
        counts = np.bincount(wid_all[j], minlength=len(words[j]))
        if (counts == 0).any():
            unk = tokenizer.unk_token or "[UNK]"
            words[j] = [w if c else unk for w, c in zip(words[j], counts.tolist())]
            fix.append(j)
    if fix:
        enc2 = _encode(tokenizer, [words[j] for j in fix])
        for n, j in enumerate(fix):
            ids_all[j] = np.asarray(enc2["input_ids"][n], dtype=np.int64)
            wid_all[j] = np.asarray(enc2.word_ids(n), dtype=np.int64)
    out: list[Prepared] = []
    empty = np.zeros(0, dtype=np.int64)
    prepared: dict[int, Prepared] = {}
    for j, k in enumerate(nonempty):
        ids, wid = ids_all[j], wid_all[j]
        n_words = len(words[j])
        counts = np.bincount(wid, minlength=n_words)
        if (counts == 0).any():
            bad = int(np.flatnonzero(counts == 0)[0])
            raise ValueError(
                f"item {k}: token {bad} {tts[k].tokens[bad]!r} produces no subtoken even as the "
                "unknown token; the tokenizer cannot represent it"
            )
        word_first = np.zeros(n_words + 1, dtype=np.int64)
        np.cumsum(counts, out=word_first[1:])
        windows, owner = make_windows(len(ids), window, stride)
        prepared[k] = Prepared(tts[k], ids, word_first, windows, owner)
    for k, tt in enumerate(tts):
        out.append(
            prepared.get(k)
            or Prepared(tt, empty, np.zeros(1, dtype=np.int64), np.zeros((0, 2), np.int64), empty)
        )
    return out


def _encode(tokenizer: Any, words: list[list[str]]) -> Any:
    if not words:
        return None
    return tokenizer(
        words,
        is_split_into_words=True,
        add_special_tokens=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        truncation=False,
        verbose=False,
    )


def iter_batches(
    preps: Sequence[Prepared], *, batch_tokens: int, n_special: int
) -> Iterator[list[tuple[int, int]]]:
    """Windows ``(item, window)`` sorted by length, packed so ``rows * longest <= batch_tokens``."""
    refs = [(i, w) for i, p in enumerate(preps) for w in range(len(p.windows))]
    if not refs:
        return
    lengths = np.fromiter(
        (int(preps[i].windows[w, 1] - preps[i].windows[w, 0]) + n_special for i, w in refs),
        dtype=np.int64,
        count=len(refs),
    )
    order = np.argsort(lengths, kind="stable")
    batch: list[tuple[int, int]] = []
    for o in order.tolist():
        length = int(lengths[o])
        if batch and (len(batch) + 1) * length > batch_tokens:
            yield batch
            batch = []
        batch.append(refs[o])
    if batch:
        yield batch


def build_inputs(
    preps: Sequence[Prepared],
    batch: Sequence[tuple[int, int]],
    *,
    prefix: Sequence[int],
    suffix: Sequence[int],
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """Padded ``input_ids`` and ``attention_mask``, both (n_rows, max_len) int64."""
    n_special = len(prefix) + len(suffix)
    lens = [int(preps[i].windows[w, 1] - preps[i].windows[w, 0]) + n_special for i, w in batch]
    width = max(lens)
    ids = np.full((len(batch), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(batch), width), dtype=np.int64)
    pre = np.asarray(prefix, dtype=np.int64)
    suf = np.asarray(suffix, dtype=np.int64)
    for r, (i, w) in enumerate(batch):
        a, b = preps[i].windows[w]
        row = np.concatenate([pre, preps[i].ids[a:b], suf])
        ids[r, : len(row)] = row
        mask[r, : len(row)] = 1
    return ids, mask


def autocast_context(device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 (or fp16) autocast on CUDA, nothing on CPU."""
    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


def _softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64, copy=False)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def _segment_means(states: np.ndarray, sub_ranges: np.ndarray) -> np.ndarray:
    """Mean of ``states[a:b]`` for every row ``(a, b)`` of ``sub_ranges``, via one cumsum."""
    if len(sub_ranges) == 0:
        return np.zeros((0, states.shape[1]), dtype=np.float32)
    csum = np.zeros((states.shape[0] + 1, states.shape[1]), dtype=np.float64)
    np.cumsum(states, axis=0, dtype=np.float64, out=csum[1:])
    a, b = sub_ranges[:, 0], sub_ranges[:, 1]
    return ((csum[b] - csum[a]) / (b - a)[:, None]).astype(np.float32)


def predict(
    model: NerModel,
    items: Sequence[TokenizedText | str],
    *,
    spans: Sequence[Sequence[TokenSpan]] | None = None,
    return_embeddings: bool = False,
    batch_tokens: int = 4096,
    progress: bool = False,
) -> list[TaskPrediction]:
    """Implementation of :meth:`NerModel.predict` (see there)."""
    import torch

    tts = as_tokenized(items)
    if spans is not None and len(spans) != len(tts):
        raise ValueError(f"spans has {len(spans)} entries but there are {len(tts)} items")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    given: list[np.ndarray] | None = None
    if spans is not None:
        given = []
        for i, (tt, sp) in enumerate(zip(tts, spans)):
            arr = np.array([(s.start, s.end) for s in sp], dtype=np.int64).reshape(-1, 2)
            bad = (arr[:, 0] < 0) | (arr[:, 0] >= arr[:, 1]) | (arr[:, 1] > len(tt))
            if bad.any():
                s = arr[int(np.flatnonzero(bad)[0])]
                raise ValueError(
                    f"item {i}: token span [{s[0]}, {s[1]}) is empty or out of range for "
                    f"{len(tt)} tokens"
                )
            given.append(arr)
    want_emb = return_embeddings or given is not None
    preps = prepare(model.tokenizer, tts, window=model.window, stride=model.stride)
    n_special = len(model.prefix_ids) + len(model.suffix_ids)
    hidden = model.embedding_dim
    n_native = len(model.native_tags)

    results: list[TaskPrediction | None] = [None] * len(tts)
    logits_buf: dict[int, np.ndarray] = {}
    state_buf: dict[int, np.ndarray] = {}
    remaining = np.array([len(p.windows) for p in preps], dtype=np.int64)

    def finish(i: int) -> None:
        p = preps[i]
        logits = logits_buf.pop(i, np.zeros((0, n_native), dtype=np.float32))
        probs = model.map_probs(_softmax(logits))
        tok_spans, scores = decode_probs(probs, model.tags, scheme=model.scheme)
        char_spans = tuple(token_to_char_spans(p.tt, tok_spans))
        span_emb = extra = None
        if want_emb:
            states = state_buf.pop(i, np.zeros((0, hidden), dtype=np.float32))
            wf = p.word_first
            if return_embeddings:
                tr = np.array([(s.start, s.end) for s in tok_spans], dtype=np.int64).reshape(-1, 2)
                span_emb = _segment_means(states, wf[tr])
            if given is not None:
                extra = _segment_means(states, wf[given[i]])
        results[i] = TaskPrediction(
            probs=probs,
            spans=char_spans,
            span_scores=scores.astype(np.float32),
            score=task_confidence(probs),
            entropy=task_entropy(probs),
            span_embeddings=span_emb,
            extra_embeddings=extra,
        )

    for i, p in enumerate(preps):
        if remaining[i] == 0:
            finish(i)

    hf = model.hf_model
    hf.eval()
    dev = torch.device(model.device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(remaining.sum()), desc="predict", unit="win", leave=False)
    n_pre = len(model.prefix_ids)
    with torch.inference_mode(), autocast_context(model.device):
        for batch in iter_batches(preps, batch_tokens=batch_tokens, n_special=n_special):
            ids, mask = build_inputs(
                preps, batch, prefix=model.prefix_ids, suffix=model.suffix_ids,
                pad_id=model.pad_id,
            )
            out = hf(
                input_ids=torch.from_numpy(ids).to(dev),
                attention_mask=torch.from_numpy(mask).to(dev),
                output_hidden_states=want_emb,
            )
            logits_np = out.logits.float().cpu().numpy()
            states_np = out.hidden_states[-1].float().cpu().numpy() if want_emb else None
            for r, (i, w) in enumerate(batch):
                p = preps[i]
                a, b = int(p.windows[w, 0]), int(p.windows[w, 1])
                if i not in logits_buf:
                    logits_buf[i] = np.zeros((p.n_words, n_native), dtype=np.float32)
                    if want_emb:
                        state_buf[i] = np.zeros((len(p.ids), hidden), dtype=np.float32)
                firsts = p.word_first[:-1]
                words = np.flatnonzero((firsts >= a) & (firsts < b) & (p.owner[firsts] == w))
                logits_buf[i][words] = logits_np[r, n_pre + firsts[words] - a]
                if states_np is not None:
                    owned = a + np.flatnonzero(p.owner[a:b] == w)
                    state_buf[i][owned] = states_np[r, n_pre + owned - a]
                remaining[i] -= 1
                if remaining[i] == 0:
                    finish(i)
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()
    return [r for r in results if r is not None]
