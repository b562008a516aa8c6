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
from itertools import chain
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["find_duplicates", "bad_edges", "normalise_texts", "fold_texts", "char_ngram_tfidf"]

_LEAD = re.compile(r"[\s.,;:!?\"'()\[\]{}\-]")
_TRAIL_ANY = re.compile(r"[\s,;:!?\"'(\[{\-]")
_TRAIL_AFTER_SPACE = re.compile(r"[.)\]}]")
_SPACE = re.compile(r"\s")
_M64 = np.uint64(0xFFFFFFFFFFFFFFFF)
_NOT_WORD = re.compile(r"[^\w\s]")
_WORD = re.compile(r"\w")
#: ASCII whitespace -> " " (a bytes.translate table); the ASCII non-word non-space characters
_ASCII_SPACE = bytes(32 if chr(i).isspace() else i for i in range(256))
_ASCII_PUNCT = bytes(i for i in range(1, 128)
                     if not chr(i).isspace() and not _WORD.match(chr(i)))


def bad_edges(texts: Sequence[str]) -> np.ndarray:
    """(n,) bool: the span text starts with whitespace/punctuation or ends with whitespace or
    punctuation (a ``.`` or closing bracket only counts after whitespace, so abbreviations such
    as ``U.S.`` stay fine).  Only the first and last two characters are looked at, each distinct
    one classified once.

    >>> bad_edges([" Paris", "U.S.", "Paris,", "Avalon Rail .", "UK)", ""]).tolist()
    [True, False, True, True, False, False]
    """
    texts = list(texts)
    if not texts:
        return np.zeros(0, dtype=bool)
    lead = _char_class([t[:1] for t in texts], _LEAD)
    trail = _char_class([t[-1:] for t in texts], _TRAIL_ANY)
    after_space = _char_class([t[-1:] for t in texts], _TRAIL_AFTER_SPACE)
    if after_space.any():
        rows = np.flatnonzero(after_space)
        before = _char_class([texts[i][-2:-1] for i in rows.tolist()], _SPACE)
        trail[rows[before]] = True
    return lead | trail


def _char_class(chars: list[str], pattern: re.Pattern[str]) -> np.ndarray:
    """(n,) bool: ``pattern`` matches the (one-character or empty) string."""
    codes, uniq = pd.factorize(np.asarray(chars, dtype=object))
    hit = np.array([bool(pattern.fullmatch(c)) for c in uniq] + [False], dtype=bool)
    return hit[codes]  # code -1 (none) -> the final False


def normalise_texts(texts: Sequence[str]) -> pd.Series:
    r"""Case-folded, punctuation removed, whitespace collapsed and stripped (a ``string`` Series):
    what ``re.sub(r"\s+", " ", re.sub(r"[^\w\s]", "", t.casefold())).strip()`` gives.

    >>> normalise_texts(["  Hello,  World! ", "U.S. (2)"]).tolist()
    ['hello world', 'us 2']
    """
    return pd.Series(fold_texts(texts, drop_punctuation=True), dtype="string")


def fold_texts(texts: Sequence[str] | np.ndarray, *, drop_punctuation: bool = False) -> list[str]:
    """Case-folded, whitespace collapsed and stripped (``" ".join(t.casefold().split())``),
    and without the characters that are neither word nor whitespace if ``drop_punctuation``.

    >>> fold_texts(["  New\tYORK ", "U.S."]), fold_texts(["U.S."], drop_punctuation=True)
    (['new york', 'u.s.'], ['us'])
    """
    texts = list(texts)
    if not texts:
        return []
    big = "\x00".join(texts)
    if big.count("\x00") != len(texts) - 1:  # a text holds the separator: per text
        if drop_punctuation:
            return [" ".join(_NOT_WORD.sub("", t.casefold()).split()) for t in texts]
        return [" ".join(t.casefold().split()) for t in texts]
    if big.isascii():  # the common case: bytes methods, with fixed tables
        b = big.encode("ascii").lower().translate(_ASCII_SPACE,
                                                  _ASCII_PUNCT if drop_punctuation else b"")
        a = _collapse_spaces(np.frombuffer(b, dtype=np.uint8))
        return a.tobytes().decode("ascii").split("\x00")
    # all texts at once, in C (casefold has no context): each distinct character is classified
    # once -- whitespace becomes " ", the rest of the non-word ones go if drop_punctuation --,
    # then runs of spaces are collapsed and the spaces at each text's ends removed
    big = big.casefold()
    present = np.flatnonzero(np.bincount(np.frombuffer(big.encode("utf-32-le"), dtype=np.uint32)))
    table: dict[int, str | None] = {}
    for c in present.tolist():
        ch = chr(c)
        if ch.isspace():
            if ch != " ":
                table[c] = " "
        elif c and drop_punctuation and not _WORD.match(ch):
            table[c] = None
    if table:
        big = big.translate(table)
    a = _collapse_spaces(np.frombuffer(big.encode("utf-32-le"), dtype=np.uint32))
    return a.tobytes().decode("utf-32-le").split("\x00")


def _collapse_spaces(a: np.ndarray) -> np.ndarray:
    """Character codes ``a`` (texts separated by NUL) with runs of spaces collapsed to one and
    the spaces at each text's ends removed."""
    if not a.size:
        return a
    sp = a == 32
    run = np.zeros(a.size, dtype=bool)
    np.logical_and(sp[1:], sp[:-1], out=run[1:])  # a space right after a space
    a = a[~run]
    sp = a == 32
    edge = np.zeros(a.size + 2, dtype=bool)  # NUL or the ends, padded on both sides
    edge[0] = edge[-1] = True
    edge[1:-1] = a == 0
    out: np.ndarray = a[~(sp & (edge[:-2] | edge[2:]))]
    return out


def _mix(h: np.ndarray) -> np.ndarray:
    """splitmix64 finaliser (uint64 in, uint64 out)."""
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def char_ngram_tfidf(texts: Sequence[str], *, ngram_range: tuple[int, int] = (3, 5),
                     copies: np.ndarray | None = None) -> Any:
    """(n_texts, n_features) CSR float64 TF-IDF matrix of space-padded word n-grams.

    Equal (up to hash collisions) to scikit-learn's ``char_wb`` vectoriser with
    ``sublinear_tf=True`` on the same texts; features are hashed n-grams, in no particular order.
    ``copies`` (n_texts,) counts each text that many times in the document frequencies (the
    rows of distinct texts then equal those of the full corpus).  The n-grams are hashed once
    per distinct word; the (text, n-gram) counts are the sparse product
    (texts x words) @ (words x n-grams).
    """
    from scipy.sparse import csr_matrix

    n_docs = len(texts)
    split = [t.split() for t in texts]
    per_doc = np.fromiter(map(len, split), dtype=np.int64, count=n_docs)
    if not per_doc.sum():
        return csr_matrix((n_docs, 0))
    wid, vocab = pd.factorize(np.fromiter(chain.from_iterable(split), dtype=object,
                                          count=int(per_doc.sum())))
    doc_word = csr_matrix((np.ones(wid.size), (np.repeat(np.arange(n_docs), per_doc), wid)),
                          shape=(n_docs, len(vocab)))
    word, feat_hash = _word_ngrams(list(vocab), ngram_range)
    fid, uniq = pd.factorize(feat_hash)
    word_feat = csr_matrix((np.ones(fid.size), (word, fid)), shape=(len(vocab), len(uniq)))
    X = (doc_word @ word_feat).tocsr()
    d = np.repeat(np.arange(n_docs), np.diff(X.indptr))
    if copies is None:
        df = np.bincount(X.indices, minlength=len(uniq))
        n_corpus = n_docs
    else:
        df = np.bincount(X.indices, weights=np.asarray(copies, dtype=np.float64)[d],
                         minlength=len(uniq))
        n_corpus = int(np.sum(copies))
    idf = np.log((1.0 + n_corpus) / (1.0 + df)) + 1.0
    w = (1.0 + np.log(X.data)) * idf[X.indices]
    norms = np.sqrt(np.bincount(d, weights=w * w, minlength=n_docs))
    X.data = w / np.where(norms > 0, norms, 1.0)[d]
    X.uniq_hash = uniq  # the feature hashes, for the sketch below
    return X


def _word_ngrams(words: list[str], ngram_range: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(word index, 64-bit n-gram hash) of every n-gram of every space-padded word."""
    big = "".join(f" {w} " for w in words)
    code = np.frombuffer(big.encode("utf-32-le"), dtype=np.uint32).astype(np.uint64)
    wlen = np.fromiter((len(w) + 2 for w in words), dtype=np.int64, count=len(words))
    wstart = np.zeros(len(words), dtype=np.int64)
    np.cumsum(wlen[:-1], out=wstart[1:])
    hashes, owner = [], []
    lo, hi = ngram_range
    for n in range(lo, hi + 1):
        # every padded word has length >= 3, so each has n-grams for n <= its length, and the
        # short-word rule of char_wb (one gram, the whole word) never applies for n >= 3 = lo
        cnt = np.where(wlen >= n, wlen - n + 1, 0)
        total = int(cnt.sum())
        if not total:
            continue
        start = np.repeat(wstart, cnt) + (np.arange(total) - np.repeat(np.cumsum(cnt) - cnt, cnt))
        h = np.full(total, np.uint64(n), dtype=np.uint64)
        with np.errstate(over="ignore"):
            for j in range(n):
                h = h * np.uint64(0x100000001B3) + code[start + j]
        hashes.append(_mix(h))
        owner.append(np.repeat(np.arange(len(words)), cnt))
    return np.concatenate(owner), np.concatenate(hashes)


def _sketch(X: Any, dim: int, *, repeats: int = 2, seed: int = 0) -> np.ndarray:
    """(n, dim) float32 count-sketch of the rows of ``X`` (inner products kept in expectation):
    ``X @ S`` with ``S`` the sparse (features x dim) matrix of ``repeats`` signed hashes per
    feature, each ``±1/sqrt(repeats)``."""
    from scipy.sparse import csr_matrix

    n_feat = X.shape[1]
    base = np.asarray(getattr(X, "uniq_hash", np.arange(n_feat, dtype=np.uint64)),
                      dtype=np.uint64)
    cols, signs = [], []
    for r in range(repeats):
        h = _mix(base ^ np.uint64((seed * 7919 + r + 1) * 0x9E3779B97F4A7C15 & 0xFFFFFFFFFFFFFFFF))
        cols.append((h % np.uint64(dim)).astype(np.int64))
        signs.append(np.where((h >> np.uint64(63)) == 1, 1.0, -1.0))
    S = csr_matrix((np.concatenate(signs) / np.sqrt(repeats),
                    (np.tile(np.arange(n_feat), repeats), np.concatenate(cols))),
                   shape=(n_feat, dim))
    return np.asarray((X @ S).toarray(), dtype=np.float32)


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
    norm = fold_texts(texts, drop_punctuation=True)
    code, uniq = pd.factorize(np.asarray(norm, dtype=object))
    first = np.full(len(uniq), -1, dtype=np.int64)  # first row of each distinct text
    first[code[::-1]] = np.arange(n - 1, -1, -1)
    u_nonempty = np.fromiter(map(len, uniq), dtype=np.int64, count=len(uniq)) > 0
    nonempty = u_nonempty[code]
    rep = first[code]
    e_src = [np.flatnonzero((rep != np.arange(n)) & nonempty)]
    e_dst = [rep[e_src[0]]]
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
        # one vector per distinct text (its copies are already linked above, and would only
        # fill each other's top-k)
        X = char_ngram_tfidf(list(uniq), copies=np.bincount(code, minlength=len(uniq)))
        if X.shape[1] > 2:
            method = "tfidf"
            sketch = _sketch(X, int(min(64, X.shape[1])), seed=seed)
            ok = (np.linalg.norm(sketch, axis=1) > 0) & u_nonempty
            # projected cosines are noisy: candidates only, the exact cosine decides
            src, dst, _ = _near_pairs(sketch, ok, k=k, floor=threshold - 0.25, seed=seed,
                                      exact_max=exact_max)
            if src.size:
                cos = np.asarray(X[src].multiply(X[dst]).sum(axis=1)).ravel()
                sel = cos >= threshold
                e_src.append(first[src[sel]])
                e_dst.append(first[dst[sel]])
    return _groups(n, np.concatenate(e_src), np.concatenate(e_dst)), method
