"""Near-duplicate tasks, and span texts with bad edges.

:func:`find_duplicates` groups tasks whose texts are duplicates: exact duplicates after
normalisation (case-folded, punctuation removed, whitespace collapsed) always; near duplicates
(cosine of character 3-5-gram TF-IDF vectors ``>= threshold``) up to ``near_dup_max`` tasks, or
by cosine over the caller's task embeddings.

The TF-IDF vectors are those of scikit-learn's
``TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 5), sublinear_tf=True)`` (smooth idf, L2
rows), computed in numpy: every n-gram of every space-padded word is a 64-bit polynomial hash of
its code points (a collision between two of the corpus's n-grams has probability ~1e-7), so no
Python code runs per n-gram.  Candidates come from a faiss top-``k`` search over a 64-d count-sketch
projection of those vectors (:class:`analysis.similarity.SpanIndex`; IVF with ``sqrt(n)`` lists
above ``exact_max`` tasks — a near duplicate's projection lies within ~(1 − cosine) of the
original, so it lands in the same or a neighbouring list); every candidate pair is confirmed
with the exact sparse cosine.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["find_duplicates", "bad_edges", "normalise_texts", "char_ngram_tfidf"]

_LEAD = re.compile(r"^[\s.,;:!?\"'()\[\]{}\-]")
_TRAIL = re.compile(r"(?:[\s,;:!?\"'(\[{\-]|\s[.)\]}])$")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def bad_edges(texts: Sequence[str]) -> np.ndarray:
    """(n,) bool: the span text starts with whitespace/punctuation or ends with whitespace or
    punctuation (a ``.`` or closing bracket only counts after whitespace, so abbreviations such
    as ``U.S.`` stay fine).

    >>> bad_edges([" Paris", "U.S.", "Paris,", "Avalon Rail .", "UK)"]).tolist()
    [True, False, True, True, False]
    """
    s = pd.Series(list(texts), dtype="string")
    if s.empty:
        return np.zeros(0, dtype=bool)
    lead = s.str.contains(_LEAD.pattern, regex=True).fillna(False).to_numpy(dtype=bool)
    trail = s.str.contains(_TRAIL.pattern, regex=True).fillna(False).to_numpy(dtype=bool)
    return lead | trail


def normalise_texts(texts: Sequence[str]) -> pd.Series:
    """Case-folded, punctuation removed, whitespace collapsed and stripped (a ``string`` Series)."""
    return (pd.Series(list(texts), dtype="string").str.casefold()
            .str.replace(r"[^\w\s]", "", regex=True).str.replace(r"\s+", " ", regex=True)
            .str.strip())


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def char_ngram_tfidf(texts: Sequence[str], *, ngram_range: tuple[int, int] = (3, 5)) -> Any:
    """(n_texts, n_features) CSR float64 TF-IDF matrix of space-padded word n-grams.

    Equal (up to hash collisions) to scikit-learn's ``char_wb`` vectoriser with
    ``sublinear_tf=True`` on the same texts; features are hashed n-grams, in no particular order.
    """
    from scipy.sparse import csr_matrix

    n_docs = len(texts)
    words = [w for t in texts for w in t.split()]
    per_doc = np.fromiter((len(t.split()) for t in texts), dtype=np.int64, count=n_docs)
    if not words:
        return csr_matrix((n_docs, 0))
    big = "".join(f" {w} " for w in words)
    code = np.frombuffer(big.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    wlen = np.fromiter((len(w) + 2 for w in words), dtype=np.int64, count=len(words))
    wstart = np.zeros(len(words), dtype=np.int64)
    np.cumsum(wlen[:-1], out=wstart[1:])
    wdoc = np.repeat(np.arange(n_docs), per_doc)
    hashes, docs = [], []
    lo, hi = ngram_range
    for n in range(lo, hi + 1):
        # every padded word has length >= 3, so each has n-grams for n <= its length, and the
        # short-word rule of char_wb (one gram, the whole word) never applies for n >= 3 = lo
        ok = wlen >= n
        cnt = np.where(ok, wlen - n + 1, 0)
        if not cnt.sum():
            continue
        start = np.repeat(wstart, cnt) + (np.arange(int(cnt.sum())) - np.repeat(np.cumsum(cnt)
                                                                                 - cnt, cnt))
        h = np.full(start.shape[0], np.uint64(n), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                h = h * np.uint64(0x100000001B3) + code[start + j]
        hashes.append(_mix(h))
        docs.append(np.repeat(wdoc, cnt))
    return _tfidf(np.concatenate(docs), np.concatenate(hashes), n_docs)


def _tfidf(doc: np.ndarray, feat_hash: np.ndarray, n_docs: int) -> Any:
    from scipy.sparse import csr_matrix

    fid, uniq = pd.factorize(feat_hash)
    n_feat = len(uniq)
    key, count = np.unique(doc * np.int64(n_feat) + fid, return_counts=True)
    d, f = key // n_feat, key % n_feat
    df = np.bincount(f, minlength=n_feat)
    idf = np.log((1.0 + n_docs) / (1.0 + df)) + 1.0
    w = (1.0 + np.log(count)) * idf[f]
    norms = np.sqrt(np.bincount(d, weights=w * w, minlength=n_docs))
    w = w / np.where(norms > 0, norms, 1.0)[d]
    X = csr_matrix((w, (d, f)), shape=(n_docs, n_feat))
    X.uniq_hash = uniq  # the feature hashes, for the sketch below
    return X


def _sketch(X: Any, dim: int, *, repeats: int = 2, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 count-sketch of the rows of ``X`` (inner products kept in expectation)."""
    coo = X.tocoo()
    n = X.shape[0]
    out = np.zeros(n * dim, dtype=np.float64)
    base = np.asarray(getattr(X, "uniq_hash", np.arange(X.shape[1], dtype=np.uint64)),
                      dtype=np.uint64)[coo.col]
    row = coo.row.astype(np.int64) * dim
    for r in range(repeats):
        h = _mix(base ^ np.uint64((seed * 7919 + r + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))
        col = (h % np.uint64(dim)).astype(np.int64)
        sign = np.where((h >> np.uint64(63)) == 1, 1.0, -1.0)
        out += np.bincount(row + col, weights=sign * coo.data, minlength=n * dim)
    return (out.reshape(n, dim) / np.sqrt(repeats)).astype(np.float32)


def _near_pairs(vecs: np.ndarray, ok: np.ndarray, *, k: int, floor: float, seed: int,
                exact_max: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Top-``k`` neighbour pairs with similarity ``>= floor`` among rows ``ok``."""
    from analysis.similarity import SpanIndex

    rows = np.flatnonzero(ok)
    z = np.zeros(0, dtype=np.int64)
    if rows.size < 2:
        return z, z, np.zeros(0)
    if rows.size <= exact_max:
        idx = SpanIndex.build(vecs[rows], seed=seed, exact_max=exact_max)
    else:  # near duplicates sit in the same or a neighbouring cell: few, coarse lists suffice
        nlist = max(1, int(np.sqrt(rows.size)))
        idx = SpanIndex.build(vecs[rows], seed=seed, nlist=nlist, nprobe=min(nlist, 8))
    sim, nb = idx.search(vecs[rows], min(k, rows.size))
    src = np.repeat(rows, nb.shape[1])
    nb_flat = nb.ravel()
    good = nb_flat >= 0
    dst = np.full(nb_flat.shape, -1, dtype=np.int64)
    dst[good] = rows[nb_flat[good]]
    keep = good & (dst != src) & (sim.ravel() >= floor)
    return src[keep], dst[keep], sim.ravel()[keep]


def _groups(n: int, src: np.ndarray, dst: np.ndarray) -> list[list[int]]:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if src.size == 0:
        return []
    g = coo_matrix((np.ones(src.size, dtype=np.int8), (src, dst)), shape=(n, n))
    _, comp = connected_components(g, directed=False)
    sizes = np.bincount(comp)
    member = np.isin(comp, np.flatnonzero(sizes >= 2))
    rows = np.flatnonzero(member)
    order = np.argsort(comp[rows], kind="stable")
    rows, comps = rows[order], comp[rows][order]
    cuts = np.flatnonzero(np.r_[True, comps[1:] != comps[:-1]])
    groups = [arr.tolist() for arr in np.split(rows, cuts[1:])]
    groups.sort(key=lambda x: x[0])
    return groups


def find_duplicates(
    texts: Sequence[str],
    *,
    threshold: float = 0.95,
    vectors: np.ndarray | None = None,
    k: int = 6,
    near_dup_max: int = 50_000,
    exact_max: int = 5_000,
    seed: int = 0,
) -> tuple[list[list[int]], str]:
    """Groups of task rows whose texts are (near-)duplicates (see the module docstring).

    Returns ``(groups, method)``: groups of at least two rows, sorted by first row; ``method``
    is ``"hash"`` (exact after normalisation only), ``"tfidf"`` or ``"cosine"`` (``vectors``).
    """
    n = len(texts)
    if n < 2:
        return [], "hash"
    norm = normalise_texts(texts)
    code = norm.factorize()[0]
    nonempty = (norm.str.len() > 0).to_numpy()
    first = pd.Series(np.arange(n)).groupby(code).transform("min").to_numpy()
    e_src = [np.flatnonzero((first != np.arange(n)) & nonempty)]
    e_dst = [first[e_src[0]]]
    method = "hash"
    if vectors is not None:
        vecs = np.asarray(vectors, dtype=np.float32)
        if np.isfinite(vecs).all():
            ok = (np.linalg.norm(vecs, axis=1) > 0) & nonempty
            src, dst, sim = _near_pairs(vecs, ok, k=k, floor=threshold - 0.02, seed=seed,
                                        exact_max=exact_max)
            sel = sim >= threshold
            e_src.append(src[sel])
            e_dst.append(dst[sel])
            method = "cosine"
    elif n <= near_dup_max:
        X = char_ngram_tfidf(norm.fillna("").tolist())
        if X.shape[1] > 2:
            method = "tfidf"
            sketch = _sketch(X, int(min(64, X.shape[1])), seed=seed)
            ok = (np.linalg.norm(sketch, axis=1) > 0) & nonempty
            # projected cosines are noisy: candidates only, the exact cosine decides
            src, dst, _ = _near_pairs(sketch, ok, k=k, floor=threshold - 0.25, seed=seed,
                                      exact_max=exact_max)
            if src.size:
                cos = np.asarray(X[src].multiply(X[dst]).sum(axis=1)).ravel()
                sel = cos >= threshold
                e_src.append(src[sel])
                e_dst.append(dst[sel])
    return _groups(n, np.concatenate(e_src), np.concatenate(e_dst)), method
