"""Array helpers of :func:`ls_backend.runtime.infer.predict` that need no model: caller-given
token spans as global word ranges, the CPU softmax, per-item confidence and entropy for all items
at once.

>>> softmax64(np.array([[0.0, 0.0]])).tolist()
[[0.5, 0.5]]
>>> [a.tolist() for a in task_scores(np.array([[0.9, 0.1], [0.6, 0.4]]), np.array([0.9, 0.6]),
...                                  np.array([0, 2, 2]))][0]
[0.6, 1.0]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from analysis.spans import TokenizedText, TokenSpan

__all__ = ["Given", "concat_int", "given_spans", "softmax64", "task_scores"]


@dataclass
class Given:
    """Caller-given token spans of a chunk: global word ranges, grouped by item."""

    w0: np.ndarray  # (n,) int64 global first word
    w1: np.ndarray  # (n,) int64 global end word (exclusive)
    off: np.ndarray  # (n_items + 1,) item i owns rows [off[i], off[i+1])


def given_spans(tts: Sequence[TokenizedText], spans: Sequence[Sequence[TokenSpan]],
                 word_off: np.ndarray, first: int) -> Given:
    """Validated caller-given token spans (``first``: position of ``tts[0]`` in the request,
    for messages)."""
    counts = np.fromiter(map(len, spans), dtype=np.int64, count=len(spans))
    n = int(counts.sum())
    a = np.fromiter((s.start for sp in spans for s in sp), dtype=np.int64, count=n)
    b = np.fromiter((s.end for sp in spans for s in sp), dtype=np.int64, count=n)
    item = np.repeat(np.arange(len(spans), dtype=np.int64), counts)
    n_words = (word_off[1:] - word_off[:-1])[item]
    bad = (a < 0) | (a >= b) | (b > n_words)
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"item {first + int(item[r])}: token span [{a[r]}, {b[r]}) is empty or out of range "
            f"for {n_words[r]} tokens"
        )
    off = np.zeros(len(spans) + 1, dtype=np.int64)
    np.cumsum(counts, out=off[1:])
    return Given(a + word_off[item], b + word_off[item], off)


def concat_int(parts: list[np.ndarray]) -> np.ndarray:
    """The parts concatenated as int64 (an empty int64 array for no parts)."""
    return np.concatenate(parts).astype(np.int64, copy=False) if parts else np.zeros(0, np.int64)


def softmax64(x: np.ndarray) -> np.ndarray:
    """Row softmax in float64 (the CPU path's historical precision)."""
    x = x.astype(np.float64, copy=False)
    x = x - x.max(axis=-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(axis=-1, keepdims=True)


def task_scores(probs: np.ndarray, conf: np.ndarray, off: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Per item (rows ``[off[i], off[i+1])``): :func:`analysis.tags.task_confidence` and
    :func:`analysis.tags.task_entropy`, for all items at once."""
    n_items = len(off) - 1
    n = off[1:] - off[:-1]
    score = np.ones(n_items, dtype=np.float64)
    entropy = np.zeros(n_items, dtype=np.float64)
    nz = np.flatnonzero(n)
    if not len(nz):
        return score, entropy
    starts = off[:-1][nz]
    score[nz] = np.minimum.reduceat(conf, starts)
    if probs.shape[1] >= 2:
        p = np.clip(probs.astype(np.float64), 1e-12, 1.0)
        ent = -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])
        entropy[nz] = np.clip(np.add.reduceat(ent, starts) / n[nz], 0.0, 1.0)
    return score, entropy
