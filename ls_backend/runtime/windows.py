"""Subword tokenization, windowing and batching: from words to padded model inputs.

Steps 1–3 of the inference pipeline described in :mod:`ls_backend.runtime.infer` (training cuts
its windows the same way): :func:`prepare` subword-tokenizes items into :class:`Prepared`
(ids, word → subtoken ranges, windows and the owning window of every subtoken, see
:func:`make_windows`); :func:`iter_batches` packs windows into length-sorted batches and
:func:`build_inputs` pads one batch.  Importing this module imports neither torch nor
transformers.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from itertools import chain
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.spans import TokenizedText, tokenize_many

__all__ = [
    "Columns",
    "Prepared",
    "as_tokenized",
    "build_inputs",
    "iter_batches",
    "make_windows",
    "prepare",
    "prepare_columns",
    "ranges",
    "special_affixes",
    "window_batches",
]


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
    """Items as ``TokenizedText``; every ``str`` is split with :func:`analysis.spans.tokenize`
    (all of them in one pass, :func:`analysis.spans.tokenize_many`)."""
    out: list[TokenizedText | None] = []
    strs: list[int] = []
    for i, it in enumerate(items):
        if isinstance(it, TokenizedText):
            out.append(it)
        elif isinstance(it, str):
            out.append(None)
            strs.append(i)
        else:
            raise TypeError(f"item {i}: expected TokenizedText or str, got {type(it).__name__}")
    if strs:
        for i, tt in zip(strs, tokenize_many([items[i] for i in strs])):  # type: ignore[misc]
            out[i] = tt
    return out  # type: ignore[return-value]


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


def _encode(tokenizer: Any, words: Sequence[Sequence[str]]) -> Any:
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


# ------------------------------------------------------------------ columnar (inference)


@dataclass
class Columns:
    """Every item after subword tokenization and windowing, as flat arrays (the form inference
    works on: no per-item Python objects past the tokenizer).

    Global indices run over all items in order: item ``i`` owns words
    ``[word_off[i], word_off[i+1])``, subtokens ``[sub_off[i], sub_off[i+1])`` and windows
    ``[win_off[i], win_off[i+1])``.

    Attributes
    ----------
    tts : the items' words with character offsets
    ids : (n_sub,) int64 subtoken ids of all items, no special tokens
    sub_off, word_off, win_off : (n_items + 1,) int64 offsets
    word_first : (n_words + 1,) int64; word ``w`` owns subtokens
        ``[word_first[w], word_first[w+1])`` (global subtoken indices)
    windows : (n_windows, 2) int64 half-open global subtoken ranges ``[a, b)``
    win_item : (n_windows,) int64 the item of each window
    owner : (n_sub,) int64 the window that owns each subtoken (:func:`make_windows`); it never
        decreases along the subtokens, so each window owns one contiguous run
    """

    tts: list[TokenizedText]
    ids: np.ndarray
    sub_off: np.ndarray
    word_off: np.ndarray
    win_off: np.ndarray
    word_first: np.ndarray
    windows: np.ndarray
    win_item: np.ndarray
    owner: np.ndarray

    @property
    def n_items(self) -> int:
        return len(self.tts)


def ranges(starts: np.ndarray, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The concatenation of ``arange(s, s + c)`` for every ``(s, c)``, and the row of each.

    >>> [a.tolist() for a in ranges(np.array([5, 0]), np.array([2, 3]))]
    [[5, 6, 0, 1, 2], [0, 0, 1, 1, 1]]
    """
    counts = np.asarray(counts, dtype=np.int64)
    total = int(counts.sum())
    row = np.repeat(np.arange(len(counts), dtype=np.int64), counts)
    first = np.zeros(len(counts), dtype=np.int64)
    if len(counts) > 1:
        np.cumsum(counts[:-1], out=first[1:])
    return np.asarray(starts, dtype=np.int64)[row] + (np.arange(total, dtype=np.int64) - first[row]), row


def _encode_words(tokenizer: Any, words: list[Sequence[str]]) -> tuple[list[Any], list[Any]]:
    """Subtoken ids and word ids of every word list, as the tokenizer's own
    ``tokenizer(words, is_split_into_words=True, add_special_tokens=False)`` gives them.

    A fast tokenizer is called through its Rust backend (``encode_batch``), skipping the
    conversion of every encoding into Python dicts; a one-item call through the tokenizer first
    puts the backend into the state that call would (no truncation, no padding, special-token
    splitting as configured).  Slow tokenizers take the ordinary call.
    """
    backend: Any = getattr(tokenizer, "_tokenizer", None)
    if getattr(tokenizer, "is_fast", False) and hasattr(backend, "encode_batch"):
        _encode(tokenizer, words[:1])
        encs = backend.encode_batch(words, add_special_tokens=False, is_pretokenized=True)
        return [e.ids for e in encs], [e.word_ids for e in encs]
    enc = _encode(tokenizer, [list(w) for w in words])
    return list(enc["input_ids"]), [enc.word_ids(j) for j in range(len(words))]


def prepare_columns(
    tokenizer: Any,
    tts: Sequence[TokenizedText],
    *,
    window: int,
    stride: int,
) -> Columns:
    """:func:`prepare` for all items at once, as :class:`Columns` (same ids, same windows).

    One tokenizer call; a word that yields no subtoken is replaced by the unknown token and its
    item encoded again (as :func:`prepare` does).
    """
    tts = list(tts)
    n_items = len(tts)
    n_words = np.fromiter(map(len, tts), dtype=np.int64, count=n_items)
    nonempty = np.flatnonzero(n_words)
    words: list[Sequence[str]] = [tts[k].tokens for k in nonempty.tolist()]
    ids_l, wid_l = _encode_words(tokenizer, words) if words else ([], [])
    word_off = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(n_words, out=word_off[1:])

    def flat(ids_l: list[Any], wid_l: list[Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        lens = np.fromiter(map(len, ids_l), dtype=np.int64, count=len(ids_l))
        ids = np.fromiter(chain.from_iterable(ids_l), dtype=np.int64, count=int(lens.sum()))
        wid = np.fromiter(chain.from_iterable(wid_l), dtype=np.int64, count=int(lens.sum()))
        return ids, wid, lens

    ids, wid, lens = flat(ids_l, wid_l)
    counts = np.bincount(wid + np.repeat(word_off[nonempty], lens), minlength=int(word_off[-1]))
    if (counts == 0).any():  # words without a subtoken -> the unknown token, items re-encoded
        unk = tokenizer.unk_token or "[UNK]"
        item_of_word = np.repeat(np.arange(n_items, dtype=np.int64), n_words)
        fix = np.unique(item_of_word[counts == 0])
        j_of_item = np.full(n_items, -1, dtype=np.int64)
        j_of_item[nonempty] = np.arange(len(nonempty))
        for k in fix.tolist():
            c = counts[word_off[k]:word_off[k + 1]].tolist()
            words[j_of_item[k]] = [w if n else unk for w, n in zip(tts[k].tokens, c)]
        js = j_of_item[fix].tolist()
        ids2, wid2 = _encode_words(tokenizer, [words[j] for j in js])
        for n, j in enumerate(js):
            ids_l[j], wid_l[j] = ids2[n], wid2[n]
        ids, wid, lens = flat(ids_l, wid_l)
        counts = np.bincount(wid + np.repeat(word_off[nonempty], lens),
                             minlength=int(word_off[-1]))
        if (counts == 0).any():
            w = int(np.flatnonzero(counts == 0)[0])
            k = int(np.searchsorted(word_off, w, side="right") - 1)
            bad = w - int(word_off[k])
            raise ValueError(
                f"item {k}: token {bad} {tts[k].tokens[bad]!r} produces no subtoken even as the "
                "unknown token; the tokenizer cannot represent it"
            )
    sub_len = np.zeros(n_items, dtype=np.int64)
    sub_len[nonempty] = lens
    sub_off = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(sub_len, out=sub_off[1:])
    word_first = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=word_first[1:])
    # one window per item, except the (rare) items longer than a window
    n_win = (sub_len > 0).astype(np.int64)
    long_items = np.flatnonzero(sub_len > window).tolist()
    cut = {k: make_windows(int(sub_len[k]), window, stride) for k in long_items}
    for k, (kw, _) in cut.items():
        n_win[k] = len(kw)
    win_off = np.zeros(n_items + 1, dtype=np.int64)
    np.cumsum(n_win, out=win_off[1:])
    win_item = np.repeat(np.arange(n_items, dtype=np.int64), n_win)
    windows = np.stack([sub_off[:-1][win_item], sub_off[1:][win_item]], axis=1)
    owner = np.repeat(win_off[:-1], sub_len)
    for k, (kw, o) in cut.items():
        windows[win_off[k]:win_off[k + 1]] = kw + sub_off[k]
        owner[sub_off[k]:sub_off[k + 1]] += o
    return Columns(tts, ids, sub_off, word_off, win_off, word_first, windows, win_item, owner)


def window_batches(cols: Columns, *, batch_tokens: int, n_special: int) -> Iterator[np.ndarray]:
    """Window indices in batches: :func:`iter_batches`'s order and packing, as arrays."""
    lengths = cols.windows[:, 1] - cols.windows[:, 0] + n_special
    if not len(lengths):
        return
    order = np.argsort(lengths, kind="stable")
    lens = lengths[order].tolist()
    begin = 0
    for j, length in enumerate(lens):
        if j > begin and (j - begin + 1) * length > batch_tokens:
            yield order[begin:j]
            begin = j
    yield order[begin:]


def build_batch(
    cols: Columns,
    wins: np.ndarray,
    *,
    prefix: Sequence[int],
    suffix: Sequence[int],
    pad_id: int,
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`build_inputs` for windows ``wins`` of :class:`Columns`: padded ``input_ids`` and
    ``attention_mask``, both (n_rows, max_len) int64."""
    n_pre, n_suf = len(prefix), len(suffix)
    a = cols.windows[wins, 0]
    lens = cols.windows[wins, 1] - a
    width = int(lens.max()) + n_pre + n_suf
    rows = len(wins)
    ids = np.full((rows, width), pad_id, dtype=np.int64)
    src, row = ranges(a, lens)
    ids[row, n_pre + (src - a[row])] = cols.ids[src]
    if n_pre:
        ids[:, :n_pre] = np.asarray(prefix, dtype=np.int64)
    if n_suf:
        r = np.repeat(np.arange(rows, dtype=np.int64), n_suf)
        c = np.repeat(lens + n_pre, n_suf) + np.tile(np.arange(n_suf, dtype=np.int64), rows)
        ids[r, c] = np.tile(np.asarray(suffix, dtype=np.int64), rows)
    mask = (np.arange(width, dtype=np.int64)[None, :] < (lens + n_pre + n_suf)[:, None])
    return ids, mask.astype(np.int64)
