"""Batched, word-aligned inference: text in, per-word probabilities, spans and embeddings out.

The pipeline, for a list of items (``TokenizedText`` or ``str``; a ``str`` is split with
:func:`analysis.spans.tokenize`):

1. **Pre-tokenization.**  The items' words go to the fast tokenizer in one call with
   ``is_split_into_words=True``; the word id of every subtoken maps it back to its word.  A word
   that yields no subtoken at all (e.g. a lone zero-width space, which BERT tokenizers drop) is
   replaced by the tokenizer's unknown token, so every word owns at least one subtoken and
   per-word outputs never shift.
2. **Windows.**  A text longer than the model's maximum length is cut into overlapping windows
   (``stride`` subtokens of overlap).  Every subtoken is *owned* by the window in which it is
   most central (largest distance to the window's nearer edge); its logits and hidden state are
   taken from that window only.  Windows are independent sequences for the model.
3. **Batches.**  All windows of a chunk of items are sorted by length and packed greedily so
   that ``n_windows * longest_window <= batch_tokens``.
4. **Forward.**  ``torch.inference_mode()``; bf16 (fp16 where bf16 is unsupported) autocast on
   CUDA, fp32 on CPU.  Only the last hidden state is kept, and only when embeddings are asked
   for (read at the input of the model's ``classifier`` when that is the last hidden state,
   checked once per model; else ``output_hidden_states``).
5. **Per word.**  A word's probabilities are the softmax of its **first subtoken's** logits
   (the same subtoken training labels; the other subtokens are ignored, as in the BERT paper).
   Only those rows leave the device: on CUDA they are gathered and soft-maxed there (fp32); on
   the CPU the softmax is float64, as it always was, so CPU results are bit-identical to the
   per-item implementation this replaced.  When the model's tag set is mapped onto the
   canonical IOB2 set, probabilities are summed per canonical tag (``S-X`` into ``B-X``,
   ``E-X`` into ``I-X``, dropped types into ``O``).
6. **Decoding.**  :func:`analysis.tags.decode_columns` (argmax, a new span at every ``B-``) over
   all items a batch completes at once, then token spans → character spans through the items'
   token offsets.

Everything after the tokenizer works on flat arrays over all items of a batch
(:class:`ls_backend.runtime.windows.Columns`); the only per-item Python work left is building
the result objects.  Items are processed in chunks of ``CHUNK_ITEMS``; the next chunk is
tokenized in a background thread while the current one runs through the model (the Rust
tokenizer releases the GIL), and one batch is in flight: batch i's forward is queued before the
host finishes batch i-1 (on CUDA its word probabilities come back through pinned memory).
Model-free array helpers live in :mod:`ls_backend.runtime.batched`.  Embeddings: a span's embedding is the mean of the last-layer
hidden states of all subtokens of its words (special tokens excluded).  An item finishes as
soon as its last window is processed, so hidden states are held per batch (plus the items
whose windows span several batches), not per dataset.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from analysis.spans import Span, TokenizedText, TokenSpan
from analysis.tags import TagSet, decode_columns

from .batched import Given, concat_int, given_spans, softmax64, task_scores
from .forward import Forward, autocast_context, gather  # noqa: F401 (autocast re-exported)

# the windowing helpers live in .windows; these stay importable from here
from .windows import (  # noqa: F401 (re-exported)
    Columns,
    Prepared,
    as_tokenized,
    build_batch,
    build_inputs,
    iter_batches,
    make_windows,
    prepare,
    prepare_columns,
    ranges,
    special_affixes,
    window_batches,
)

log = logging.getLogger(__name__)

__all__ = ["TaskPrediction", "InferenceModel", "Prepared", "prepare", "iter_batches", "predict",
           "STAGES"]

CHUNK_ITEMS = 8192
"""Items tokenized and batched together (length sorting happens within a chunk)."""

STAGES = ("words", "tokenize", "batch", "transfer", "forward", "post")
"""Stage names of :func:`predict`'s ``timings`` (seconds): text → words, subword tokenization,
batch building, host↔device copies, model forward, post-processing (softmax, decoding, spans,
embeddings, result objects)."""


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
    extra_embeddings : (ngiven_spans, hidden) float32 or None
        The same for the caller-given token spans (``predict(..., spans=...)``).
    """

    probs: np.ndarray
    spans: tuple[Span, ...]
    span_scores: np.ndarray
    score: float
    entropy: float
    span_embeddings: np.ndarray | None = None
    extra_embeddings: np.ndarray | None = None


class _Clock:
    """Seconds per stage, added into ``timings`` (a no-op without one)."""

    def __init__(self, timings: dict[str, float] | None) -> None:
        self.timings = timings
        self.t = time.perf_counter()

    def tick(self, stage: str) -> None:
        if self.timings is not None:
            now = time.perf_counter()
            self.timings[stage] = self.timings.get(stage, 0.0) + now - self.t
            self.t = now


# ------------------------------------------------------------------ one chunk


class _Chunk:
    """Runs one chunk of items (:class:`Columns`) through the model, batch by batch, and
    builds the :class:`TaskPrediction` of every item as soon as its last window is done."""

    def __init__(self, model: InferenceModel, cols: Columns, fwd: Forward,
                 given: Given | None, *, return_embeddings: bool, clock: _Clock,
                 bar: Any = None) -> None:
        self.bar = bar
        self.model = model
        self.cols = cols
        self.fwd = fwd
        self.given = given
        self.return_embeddings = return_embeddings
        self.want_emb = fwd.want_emb
        self.clock = clock
        self.ts = TagSet(tuple(model.tags), model.scheme)
        self.n_pre = len(model.prefix_ids)
        n_win = len(cols.windows)
        first_sub = cols.word_first[:-1]
        self.first_sub = first_sub
        word_win = cols.owner[first_sub]
        grid = np.arange(n_win + 1, dtype=np.int64)
        self.win_words = np.searchsorted(word_win, grid)  # window w owns words [ww[w], ww[w+1])
        self.win_subs = np.searchsorted(cols.owner, grid)  # ... and subtokens [ws[w], ws[w+1])
        self.probs = np.zeros((int(cols.word_off[-1]), len(model.tags)), dtype=np.float32)
        self.remaining = cols.win_off[1:] - cols.win_off[:-1]
        self.multi_states: dict[int, np.ndarray] = {}  # items with windows in several batches
        self.item_row = np.full(cols.n_items, -1, dtype=np.int64)  # batch row, 1-window items
        self.tok_start = concat_int([tt.starts for tt in cols.tts])
        self.tok_end = concat_int([tt.ends for tt in cols.tts])
        self.results: list[TaskPrediction | None] = [None] * cols.n_items

    # -------------------------------------------------------------- batches
    def run(self, batch_tokens: int) -> list[TaskPrediction]:
        m = self.model
        n_special = len(m.prefix_ids) + len(m.suffix_ids)
        self._finish(np.flatnonzero(self.remaining == 0), None)  # items without windows
        self.clock.tick("post")
        # one batch in flight: batch i's forward is queued on the device (asynchronous on CUDA)
        # before the host finishes batch i-1, so the host's work overlaps the forward
        prev: tuple[np.ndarray, Any, Any] | None = None
        for wins in window_batches(self.cols, batch_tokens=batch_tokens, n_special=n_special):
            ids, mask = build_batch(self.cols, wins, prefix=m.prefix_ids, suffix=m.suffix_ids,
                                    pad_id=m.pad_id)
            self.clock.tick("batch")
            ids_t, mask_t = self.fwd.to_device(ids), self.fwd.to_device(mask)
            self.clock.tick("transfer")
            logits, states = self.fwd(ids_t, mask_t)
            if self.fwd.cuda and self.clock.timings is not None:
                import torch

                torch.cuda.synchronize()
            self.clock.tick("forward")
            probs = self._word_probs(wins, logits)
            if prev is not None:
                self._batch(*prev)
            prev = (wins, probs, states)
        if prev is not None:
            self._batch(*prev)
        return [r for r in self.results if r is not None]

    def _word_probs(self, wins: np.ndarray, logits: Any) -> tuple[np.ndarray, Any]:
        """The words the batch's windows own, and their native-tag probabilities (softmax of
        each word's first subtoken): a numpy array on CPU; on CUDA a copy into pinned memory
        that is under way (finished by :meth:`_batch`), so nothing here waits for the device."""
        cols = self.cols
        a = cols.windows[wins, 0]
        words, row = ranges(self.win_words[wins], self.win_words[wins + 1] - self.win_words[wins])
        col = self.n_pre + self.first_sub[words] - a[row]
        if not self.fwd.cuda:
            return words, softmax64(logits.float().numpy()[row, col])
        import torch

        to_dev = self.fwd.to_device
        sel = torch.softmax(logits[to_dev(row), to_dev(col)].float(), dim=-1)
        host = torch.empty(sel.shape, dtype=torch.float32, pin_memory=True)
        host.copy_(sel, non_blocking=True)
        done = torch.cuda.Event()
        done.record()
        return words, (host, done)

    def _batch(self, wins: np.ndarray, probs: tuple[np.ndarray, Any], states: Any) -> None:
        """Store the per-word probabilities of a batch (from :meth:`_word_probs`); the items
        it completes are finished."""
        cols = self.cols
        words, native = probs
        if self.fwd.cuda:
            host, ready = native
            ready.synchronize()
            native = host.numpy()
        self.clock.tick("transfer")
        self.probs[words] = self.model.map_probs(native)
        items = cols.win_item[wins]
        np.subtract.at(self.remaining, items, 1)
        done = np.unique(items)
        done = done[self.remaining[done] == 0]
        if states is not None:
            n_win = cols.win_off[items + 1] - cols.win_off[items]
            multi = np.flatnonzero(n_win > 1)
            if len(multi):  # items with windows in several batches keep their states
                self._collect(wins[multi], multi, states)
            single = np.flatnonzero(n_win == 1)
            self.item_row[items[single]] = single
        self._finish(done, states)
        self.clock.tick("post")

    def _collect(self, wins: np.ndarray, rows: np.ndarray, states: Any) -> None:
        """Keep the states of the subtokens that batch rows ``rows`` (windows ``wins`` of items
        with several windows) own, until their item is complete."""
        cols = self.cols
        subs, r = ranges(self.win_subs[wins], self.win_subs[wins + 1] - self.win_subs[wins])
        got = gather(states, rows[r], self.n_pre + subs - cols.windows[wins, 0][r])
        for j, w in enumerate(wins.tolist()):
            k = int(cols.win_item[w])
            buf = self.multi_states.get(k)
            if buf is None:
                n = int(cols.sub_off[k + 1] - cols.sub_off[k])
                buf = self.multi_states[k] = np.zeros((n, got.shape[1]), dtype=np.float32)
            sel = r == j
            buf[subs[sel] - cols.sub_off[k]] = got[sel]

    # -------------------------------------------------------------- results
    def _finish(self, items: np.ndarray, states: Any) -> None:
        """Decode the completed ``items`` together and store their predictions."""
        if not len(items):
            return
        cols = self.cols
        w_lo, w_hi = cols.word_off[items], cols.word_off[items + 1]
        words, _ = ranges(w_lo, w_hi - w_lo)
        probs = self.probs[words]
        off = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(w_hi - w_lo, out=off[1:])
        best = probs.argmax(axis=1) if len(words) else np.zeros(0, dtype=np.int64)
        conf = probs[np.arange(len(best)), best]
        t0, t1, lab = decode_columns(best, off, self.ts)
        csum = np.concatenate([[0.0], np.cumsum(conf, dtype=np.float64)])
        span_scores = ((csum[t1] - csum[t0]) / (t1 - t0)).astype(np.float32)
        span_item = np.searchsorted(off, t0, side="right") - 1
        per_item = np.bincount(span_item, minlength=len(items))
        span_off = np.zeros(len(items) + 1, dtype=np.int64)
        np.cumsum(per_item, out=span_off[1:])
        g0, g1 = words[t0], words[t1 - 1] + 1  # global word ranges of the spans
        labels = self.ts.types
        all_spans = [Span(s, e, labels[k]) for s, e, k in zip(
            self.tok_start[g0].tolist(), self.tok_end[g1 - 1].tolist(), lab.tolist())]
        score, entropy = task_scores(probs, conf, off)
        span_emb = extra = None
        if states is not None:
            item_of_span = items[span_item]
            if self.return_embeddings:
                span_emb = self._means(g0, g1, item_of_span, states)
            if self.given is not None:
                gv = self.given
                g_lo, g_hi = gv.off[items], gv.off[items + 1]
                grows, gitem = ranges(g_lo, g_hi - g_lo)
                extra = self._means(gv.w0[grows], gv.w1[grows], items[gitem], states)
                extra_off = np.zeros(len(items) + 1, dtype=np.int64)
                np.cumsum(g_hi - g_lo, out=extra_off[1:])
        hidden = self.model.embedding_dim
        for j, k in enumerate(items.tolist()):
            sa, sb = int(span_off[j]), int(span_off[j + 1])
            pred = TaskPrediction(
                probs=self.probs[cols.word_off[k]:cols.word_off[k + 1]],
                spans=tuple(all_spans[sa:sb]),
                span_scores=span_scores[sa:sb],
                score=float(score[j]),
                entropy=float(entropy[j]),
            )
            if self.want_emb:
                if span_emb is not None:
                    pred.span_embeddings = span_emb[sa:sb]
                elif self.return_embeddings:
                    pred.span_embeddings = np.zeros((sb - sa, hidden), dtype=np.float32)
                if extra is not None:
                    pred.extra_embeddings = extra[extra_off[j]:extra_off[j + 1]]
                elif self.given is not None:
                    pred.extra_embeddings = np.zeros(
                        (int(self.given.off[k + 1] - self.given.off[k]), hidden), np.float32)
            self.results[k] = pred
            self.multi_states.pop(k, None)
        if self.bar is not None:
            self.bar.update(len(items))

    def _means(self, w0: np.ndarray, w1: np.ndarray, item: np.ndarray, states: Any
               ) -> np.ndarray:
        """Mean last hidden state over the subtokens of words ``[w0, w1)`` (global) of
        ``item``: gathered from this batch's ``states`` and summed where they are (on the
        device), only the means leave it."""
        import torch

        cols = self.cols
        s0, s1 = cols.word_first[w0], cols.word_first[w1]
        out = np.zeros((len(w0), self.model.embedding_dim), dtype=np.float32)
        single = np.flatnonzero(self.item_row[item] >= 0)
        if len(single):
            subs, sp = ranges(s0[single], s1[single] - s0[single])
            k = item[single][sp]
            rows, cols_ = self.item_row[k], self.n_pre + subs - cols.sub_off[k]
            dev = states.device
            to_dev = self.fwd.to_device
            got = states[to_dev(rows), to_dev(cols_)]
            got = got.float() if self.fwd.cuda else got.double()
            sums = torch.zeros((len(single), got.shape[1]), dtype=got.dtype, device=dev)
            sums.index_add_(0, to_dev(sp), got)
            n = to_dev(s1[single] - s0[single]).to(got.dtype)
            out[single] = (sums / n[:, None]).float().cpu().numpy()
        for r in np.flatnonzero(self.item_row[item] < 0).tolist():  # several windows (rare)
            k = int(item[r])
            lo = int(cols.sub_off[k])
            out[r] = self.multi_states[k][s0[r] - lo:s1[r] - lo].mean(axis=0, dtype=np.float64)
        return out


# ------------------------------------------------------------------ entry point


def _chunks(n: int, size: int) -> Iterator[tuple[int, int]]:
    for lo in range(0, n, size):
        yield lo, min(lo + size, n)


def predict(
    model: InferenceModel,
    items: Sequence[TokenizedText | str],
    *,
    spans: Sequence[Sequence[TokenSpan]] | None = None,
    return_embeddings: bool = False,
    batch_tokens: int = 4096,
    progress: bool = False,
    timings: dict[str, float] | None = None,
) -> list[TaskPrediction]:
    """Implementation of :meth:`NerModel.predict` (see there)."""
    import torch

    clock = _Clock(timings)
    tts = as_tokenized(items)
    clock.tick("words")
    if spans is not None and len(spans) != len(tts):
        raise ValueError(f"spans has {len(spans)} entries but there are {len(tts)} items")
    if batch_tokens < 1:
        raise ValueError(f"batch_tokens must be >= 1, got {batch_tokens}")
    want_emb = return_embeddings or spans is not None
    fwd = Forward(model, want_emb=want_emb)
    bounds = list(_chunks(len(tts), CHUNK_ITEMS))

    def tokenize(lo: int, hi: int) -> Columns:
        return prepare_columns(model.tokenizer, tts[lo:hi], window=model.window,
                               stride=model.stride)

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(tts), desc="predict", unit="task", leave=False)
    out: list[TaskPrediction] = []
    with contextlib.ExitStack() as stack:
        # the next chunk is tokenized in the background while this one runs
        pool = stack.enter_context(ThreadPoolExecutor(max_workers=1)) if len(bounds) > 1 \
            else None
        stack.enter_context(torch.inference_mode())
        stack.enter_context(autocast_context(model.device))
        stack.enter_context(fwd)
        nxt = pool.submit(tokenize, *bounds[0]) if pool is not None else None
        for c, (lo, hi) in enumerate(bounds):
            cols = nxt.result() if nxt is not None else tokenize(lo, hi)
            nxt = pool.submit(tokenize, *bounds[c + 1]) if pool is not None and \
                c + 1 < len(bounds) else None
            clock.tick("tokenize")
            given = None
            if spans is not None:
                given = given_spans(tts[lo:hi], spans[lo:hi], cols.word_off, lo)
            chunk = _Chunk(model, cols, fwd, given, return_embeddings=return_embeddings,
                           clock=clock, bar=bar)
            out.extend(chunk.run(batch_tokens))
    if bar is not None:
        bar.close()
    return out
