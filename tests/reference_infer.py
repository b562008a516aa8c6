"""The per-item inference post-processing as it was before the columnar rewrite (issue 12).

A frozen reference, not product code: ``tests/test_infer_columnar.py`` pins that the columnar
path in :mod:`ls_backend.runtime.infer` gives the same spans, scores and probabilities, and
``bench/bench_inference.py --null-model`` times it as the "before" row.  It uses the unchanged
per-item ``windows.prepare`` / ``iter_batches`` / ``build_inputs``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from analysis.spans import TokenizedText, TokenSpan, token_to_char_spans
from analysis.tags import decode_probs, task_confidence, task_entropy
from ls_backend.runtime.infer import TaskPrediction, autocast_context
from ls_backend.runtime.windows import Prepared, as_tokenized, build_inputs, iter_batches, prepare

InferenceModel = Any


class _Clock:
    """Seconds per stage (the bench's "before" row); a no-op without a dict."""

    timings: dict[str, float] | None = None
    t = 0.0

    @classmethod
    def tick(cls, stage: str) -> None:
        import time

        if cls.timings is not None:
            now = time.perf_counter()
            cls.timings[stage] = cls.timings.get(stage, 0.0) + now - cls.t
            cls.t = now


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
    _Clock.tick("batch")
    ids_t, mask_t = torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev)
    _Clock.tick("transfer")
    out = hf(input_ids=ids_t, attention_mask=mask_t, output_hidden_states=want_emb)
    _Clock.tick("forward")
    logits_np = out.logits.float().cpu().numpy()
    states_np = out.hidden_states[-1].float().cpu().numpy() if want_emb else None
    _Clock.tick("transfer")
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
    _Clock.tick("post")

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
            _Clock.tick("post")
    if bar is not None:
        bar.close()


def reference_predict(
    model: InferenceModel,
    items: Sequence[TokenizedText | str],
    *,
    spans: Sequence[Sequence[TokenSpan]] | None = None,
    return_embeddings: bool = False,
    batch_tokens: int = 4096,
    progress: bool = False,
    timings: dict[str, float] | None = None,
) -> list[TaskPrediction]:
    """``NerModel.predict`` as it was (``timings``: seconds per stage added into it)."""
    import time

    _Clock.timings, _Clock.t = timings, time.perf_counter()
    tts = as_tokenized(items)
    _Clock.tick("words")
    if spans is not None and len(spans) != len(tts):
        raise ValueError(f"spans has {len(spans)} entries but there are {len(tts)} items")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    given = _given_spans(tts, spans)
    want_emb = return_embeddings or given is not None
    preps = prepare(model.tokenizer, tts, window=model.window, stride=model.stride)
    _Clock.tick("tokenize")
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
