"""Per-row statistics of a probability matrix, computed once per scored view and in chunks.

A 1 M-task corpus has ~15 M token rows: a full-size temporary of the probabilities is ~0.5 GB,
so the row statistics here walk the matrix in blocks of :data:`CHUNK` rows and only their
(N,) results are allocated.
"""

from __future__ import annotations

import numpy as np

__all__ = ["CHUNK", "argmax_conf", "gold_and_other"]

#: rows per block (a few MB of float32 per block at the usual 5–20 tags)
CHUNK = 1 << 17


def argmax_conf(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(argmax, p(argmax))`` of every row: (N,) intp and (N,) of the matrix's dtype.

    >>> b, c = argmax_conf(np.array([[0.2, 0.8], [0.6, 0.4]], dtype=np.float32))
    >>> b.tolist(), c.tolist()
    ([1, 0], [0.800000011920929, 0.6000000238418579])
    """
    n = probs.shape[0]
    best = np.empty(n, dtype=np.intp)
    conf = np.empty(n, dtype=probs.dtype)
    for a in range(0, n, CHUNK):
        blk = probs[a:a + CHUNK]
        b = blk.argmax(axis=1)
        best[a:a + CHUNK] = b
        conf[a:a + CHUNK] = blk[np.arange(blk.shape[0]), b]
    return best, conf


def gold_and_other(probs: np.ndarray, gold: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(p(gold), max p(other))`` of every row, float32 (``-inf`` for a one-column matrix).

    >>> g, o = gold_and_other(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), np.array([0, 1]))
    >>> g.astype(float).round(2).tolist(), o.astype(float).round(2).tolist()
    ([0.7, 0.3], [0.2, 0.6])
    """
    n = probs.shape[0]
    pg = np.empty(n, dtype=np.float32)
    other = np.empty(n, dtype=np.float32)
    for a in range(0, n, CHUNK):
        blk = np.array(probs[a:a + CHUNK], dtype=np.float32)  # a copy: the gold cell is masked
        r = np.arange(blk.shape[0])
        g = gold[a:a + CHUNK]
        pg[a:a + CHUNK] = blk[r, g]
        blk[r, g] = -np.inf
        other[a:a + CHUNK] = blk.max(axis=1)
    return pg, other
