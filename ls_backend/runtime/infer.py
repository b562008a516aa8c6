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

Steps 1–3 live in :mod:`ls_backend.runtime.windows` (re-exported here); this module runs the
forward passes and builds the :class:`TaskPrediction` of every item.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from analysis.spans import Span, TokenizedText, TokenSpan, token_to_char_spans
from analysis.tags import decode_probs, task_confidence, task_entropy

# the windowing helpers moved to .windows; all of them stay importable from here
from .windows import (  # noqa: F401 (make_windows, special_affixes: re-exported)
    Prepared,
    as_tokenized,
    build_inputs,
    iter_batches,
    make_windows,
    prepare,
    special_affixes,
)

log = logging.getLogger(__name__)

__all__ = ["TaskPrediction", "InferenceModel", "Prepared", "prepare", "iter_batches", "predict"]


class InferenceModel(Protocol):
    """What :func:`predict` needs of a model (:class:`ls_backend.runtime.NerModel` has it)."""

    hf_model: Any
    tokenizer: Any
    device: str
    tags: tuple[str, ...]
    scheme: str
    native_tags: tuple[str, ...]
    prefix_ids: list[int]
    suffix_ids: list[int]
    pad_id: int
    stride: int

    @property
    def window(self) -> int: ...

    @property
    def embedding_dim(self) -> int: ...

    def map_probs(self, native: np.ndarray) -> np.ndarray: ...


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



def _given_spans(
    tts: Sequence[TokenizedText], spans: Sequence[Sequence[TokenSpan]] | None
) -> list[np.ndarray] | None:
    """Caller-given token spans as ``(n, 2)`` int64 arrays per item (validated), or None."""
    if spans is None:
        return None
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
    return given


def _finish_item(
    model: InferenceModel,
    p: Prepared,
    logits: np.ndarray,
    states: np.ndarray | None,
    *,
    return_embeddings: bool,
    given: np.ndarray | None,
) -> TaskPrediction:
    """One item's prediction from its per-word logits (and per-subtoken hidden states)."""
    probs = model.map_probs(_softmax(logits))
    tok_spans, scores = decode_probs(probs, model.tags, scheme=model.scheme)
    char_spans = tuple(token_to_char_spans(p.tt, tok_spans))
    span_emb: np.ndarray | None = None
    extra: np.ndarray | None = None
    if states is not None:
        wf = p.word_first
        if return_embeddings:
            tr = np.array([(s.start, s.end) for s in tok_spans], dtype=np.int64).reshape(-1, 2)
            span_emb = _segment_means(states, wf[tr])
        if given is not None:
            extra = _segment_means(states, wf[given])
    return TaskPrediction(
        probs=probs,
        spans=char_spans,
        span_scores=scores.astype(np.float32),
        score=task_confidence(probs),
        entropy=task_entropy(probs),
        span_embeddings=span_emb,
        extra_embeddings=extra,
    )


class _ItemBuffers:
    """Per-item logits ``(n_words, n_native)`` and hidden states ``(n_sub, hidden)``, filled
    window by window from the subtokens each window owns."""

    def __init__(
        self, preps: Sequence[Prepared], *, n_native: int, hidden: int, want_emb: bool, n_pre: int
    ) -> None:
        self.preps = preps
        self.n_native = n_native
        self.hidden = hidden
        self.want_emb = want_emb
        self.n_pre = n_pre
        self.logits: dict[int, np.ndarray] = {}
        self.states: dict[int, np.ndarray] = {}

    def add(
        self, i: int, w: int, logits_np: np.ndarray, states_np: np.ndarray | None, r: int
    ) -> None:
        """Copy row ``r`` of a batch output (window ``w`` of item ``i``) into the buffers."""
        p = self.preps[i]
        a, b = int(p.windows[w, 0]), int(p.windows[w, 1])
        if i not in self.logits:
            self.logits[i] = np.zeros((p.n_words, self.n_native), dtype=np.float32)
            if self.want_emb:
                self.states[i] = np.zeros((len(p.ids), self.hidden), dtype=np.float32)
        firsts = p.word_first[:-1]
        words = np.flatnonzero((firsts >= a) & (firsts < b) & (p.owner[firsts] == w))
        self.logits[i][words] = logits_np[r, self.n_pre + firsts[words] - a]
        if states_np is not None:
            owned = a + np.flatnonzero(p.owner[a:b] == w)
            self.states[i][owned] = states_np[r, self.n_pre + owned - a]

    def take(self, i: int) -> tuple[np.ndarray, np.ndarray | None]:
        """Remove and return item ``i``'s logits and states (empty for an item with no windows)."""
        logits = self.logits.pop(i, np.zeros((0, self.n_native), dtype=np.float32))
        states = None
        if self.want_emb:
            states = self.states.pop(i, np.zeros((0, self.hidden), dtype=np.float32))
        return logits, states


def _forward(
    hf: Any,
    dev: Any,
    model: InferenceModel,
    preps: Sequence[Prepared],
    batch: Sequence[tuple[int, int]],
    *,
    want_emb: bool,
) -> tuple[np.ndarray, np.ndarray | None]:
    """One forward pass: fp32 logits and (``want_emb``) last-layer hidden states, on the CPU."""
    import torch

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
    return logits_np, states_np


def _run_batches(
    model: InferenceModel,
    preps: Sequence[Prepared],
    finish: Callable[[int, np.ndarray, np.ndarray | None], None],
    *,
    batch_tokens: int,
    want_emb: bool,
    progress: bool,
) -> None:
    """Forward all windows in batches; ``finish(i, logits, states)`` as soon as item ``i`` is
    complete (items without windows first)."""
    import torch

    n_special = len(model.prefix_ids) + len(model.suffix_ids)
    buf = _ItemBuffers(
        preps, n_native=len(model.native_tags), hidden=model.embedding_dim, want_emb=want_emb,
        n_pre=len(model.prefix_ids),
    )
    remaining = np.array([len(p.windows) for p in preps], dtype=np.int64)
    for i, p in enumerate(preps):
        if remaining[i] == 0:
            finish(i, *buf.take(i))

    hf = model.hf_model
    hf.eval()
    dev = torch.device(model.device)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=int(remaining.sum()), desc="predict", unit="win", leave=False)
    with torch.inference_mode(), autocast_context(model.device):
        for batch in iter_batches(preps, batch_tokens=batch_tokens, n_special=n_special):
            logits_np, states_np = _forward(hf, dev, model, preps, batch, want_emb=want_emb)
            for r, (i, w) in enumerate(batch):
                buf.add(i, w, logits_np, states_np, r)
                remaining[i] -= 1
                if remaining[i] == 0:
                    finish(i, *buf.take(i))
            if bar is not None:
                bar.update(len(batch))
    if bar is not None:
        bar.close()


def predict(
    model: InferenceModel,
    items: Sequence[TokenizedText | str],
    *,
    spans: Sequence[Sequence[TokenSpan]] | None = None,
    return_embeddings: bool = False,
    batch_tokens: int = 4096,
    progress: bool = False,
) -> list[TaskPrediction]:
    """Implementation of :meth:`NerModel.predict` (see there)."""
    tts = as_tokenized(items)
    if spans is not None and len(spans) != len(tts):
        raise ValueError(f"spans has {len(spans)} entries but there are {len(tts)} items")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    given = _given_spans(tts, spans)
    want_emb = return_embeddings or given is not None
    preps = prepare(model.tokenizer, tts, window=model.window, stride=model.stride)
    results: list[TaskPrediction | None] = [None] * len(tts)

    def finish(i: int, logits: np.ndarray, states: np.ndarray | None) -> None:
        results[i] = _finish_item(
            model, preps[i], logits, states, return_embeddings=return_embeddings,
            given=None if given is None else given[i],
        )

    _run_batches(
        model, preps, finish, batch_tokens=batch_tokens, want_emb=want_emb, progress=progress
    )
    return [r for r in results if r is not None]
