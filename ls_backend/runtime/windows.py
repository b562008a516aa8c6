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
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.spans import TokenizedText, tokenize

__all__ = [
    "Prepared",
    "as_tokenized",
    "build_inputs",
    "iter_batches",
    "make_windows",
    "prepare",
    "special_affixes",
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
    """Items as ``TokenizedText``; a ``str`` is split with :func:`analysis.spans.tokenize`."""
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
