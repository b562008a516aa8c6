"""Label-error signals beyond the margin, and how they combine into one score.

All functions are pure and vectorised over the flattened tokens of a whole dataset (``N``
tokens, every task's tokens one after the other) and over its gold spans (``n`` spans, given
as *global* half-open token ranges ``[start, end)`` into that flat array).  Every signal is a
score in ``[0, 1]``, higher = more likely mislabeled:

``margin``
    ``(1 − margin) / 2`` with ``margin = p(gold tag) − max p(other tag)`` (AUM-style: the margin
    is averaged over training epochs when several probability sets exist): :func:`token_margins`.
``disagreement``
    :func:`model_disagreement`: the model's argmax tag differs from the gold tag, weighted by the
    model's confidence in its argmax (0 where they agree).
``surface``
    :func:`analysis.dep.surface.surface_consistency`: the same lower-cased token string is labelled differently
    elsewhere in the dataset, or is labelled in one place and left ``O`` in another.
``neighbour``
    :func:`neighbour_disagreement`: a span's ``k`` most similar spans by embedding (cosine)
    carry another gold label.
``type``
    :func:`type_disagreement` (gold spans only): ``(1 − type margin) / 2``, where the type margin
    is the span's mean ``p(B-T) + p(I-T)`` of its gold type minus that of the best other type.
    Unlike the token margin it ignores *where* the model puts B/I/O inside the span, so a span
    whose boundaries the model doubts is not mistaken for a relabelled one.
``outside``
    (gold spans only): the highest ``p(O)`` over the span's tokens — the model reads part (or
    all) of the span as no entity at all: a span stretched over a neighbouring word, or a
    spurious span.  Type confusion inside the span does not raise it.

:func:`combine` merges them with a weighted noisy-OR, ``1 − Π_s (1 − w_s · x_s)``: it stays in
``[0, 1]``, is monotone in every signal, equals the margin score alone when the other signals
are 0, and lets one strong independent signal raise the score without averaging it away.  The
weights in :data:`DEFAULT_WEIGHTS` come from the ablation in ``bench/bench_detection.py``
(documented in ``bench/README.md``), not from intuition.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

__all__ = [
    "SIGNALS",
    "DEFAULT_WEIGHTS",
    "model_disagreement",
    "type_disagreement",
    "surface_consistency",
    "token_margins",
    "neighbour_disagreement",
    "combine",
    "UNIT_TYPES",
    "DEFAULT_CALIBRATION",
    "calibrate",
]

from analysis.dep.rows import argmax_conf, gold_and_other
from analysis.dep.surface import surface_consistency
from analysis.tags import range_positions

logger = logging.getLogger(__name__)

SIGNALS: tuple[str, ...] = ("margin", "disagreement", "surface", "neighbour", "type", "outside")

#: Weights of :func:`combine`, chosen with the detection bench ablation (see bench/README.md).
DEFAULT_WEIGHTS: Mapping[str, float] = {
    "margin": 1.0,
    "disagreement": 0.0,
    "surface": 1.0,
    "neighbour": 0.5,
    "type": 1.0,
    "outside": 0.0,
}

#: Unit types of :func:`calibrate`: gold spans, gold-``O`` tokens right next to a gold span (in
#: the same task), all other gold-``O`` tokens.
UNIT_TYPES: tuple[str, ...] = ("span", "o_boundary", "o")

#: ``(a, b)`` per unit type for :func:`calibrate`, chosen with the detection bench (see
#: bench/README.md); a missing type is left unchanged.
DEFAULT_CALIBRATION: Mapping[str, tuple[float, float]] = {
    "span": (0.0, 1.0),
    "o_boundary": (-1.5, 3.0),
    "o": (1.0, 2.0),
}

def token_margins(probs: np.ndarray, gold: np.ndarray) -> np.ndarray:
    """``p(gold) − max p(other)`` per token.

    Parameters
    ----------
    probs : (N, n_tags) float
    gold : (N,) int, gold tag column

    Returns
    -------
    (N,) float32 in [-1, 1]

    >>> token_margins(np.array([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]]), np.array([0, 1])).round(2)
    array([ 0.5, -0.3], dtype=float32)
    """
    probs = np.asarray(probs)
    if probs.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    pg, other = gold_and_other(probs, np.asarray(gold))
    return (pg - other).astype(np.float32)


def model_disagreement(probs: np.ndarray, gold: np.ndarray, *,
                       best: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Confidence of the model's argmax where it differs from the gold tag.

    Parameters
    ----------
    probs : (N, n_tags) float
    gold : (N,) int, gold tag column of each token
    best : the rows' ``(argmax, p(argmax))`` when already known (:func:`argmax_conf`)

    Returns
    -------
    (N,) float32: ``p(argmax)`` where ``argmax != gold``, else 0.
    """
    probs = np.asarray(probs)
    gold = np.asarray(gold)
    if probs.shape[0] == 0:
        return np.zeros(0, dtype=np.float32)
    am, conf = argmax_conf(probs) if best is None else best
    return np.where(am != gold, conf, 0.0).astype(np.float32)


def type_disagreement(
    probs: np.ndarray,
    span_start: np.ndarray,
    span_end: np.ndarray,
    span_label: np.ndarray,
    b_cols: np.ndarray,
    i_cols: np.ndarray,
) -> np.ndarray:
    """``(1 − type margin) / 2`` of each gold span.

    The type probability of entity type ``T`` on a token is ``p(B-T) + p(I-T)``; a span's is the
    mean over its tokens; the type margin is the gold type's minus the best other type's.

    Parameters
    ----------
    probs : (N, n_tags) float
    span_start, span_end : (n,) int, sorted, non-overlapping, non-empty global token ranges
    span_label : (n,) int, index into the label list
    b_cols, i_cols : (n_labels,) int, column of ``B-``/``I-`` of each label (-1: no column; such
        a label is never a gold span's label)

    Returns
    -------
    (n,) float32 in [0, 1]; > 0.5 exactly when another type is more probable on the span.

    >>> p = np.array([[0.1, 0.1, 0.0, 0.8, 0.0], [0.1, 0.0, 0.2, 0.0, 0.7]])
    >>> type_disagreement(p, np.array([0]), np.array([2]), np.array([0]),
    ...                   np.array([1, 3]), np.array([2, 4])).astype(float).round(3).tolist()
    [0.8]
    """
    s0 = np.asarray(span_start, dtype=np.int64)
    s1 = np.asarray(span_end, dtype=np.int64)
    lab = np.asarray(span_label, dtype=np.int64)
    n = s0.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    b = np.asarray(b_cols, dtype=np.int64)
    i = np.asarray(i_cols, dtype=np.int64)
    has = (b >= 0) & (i >= 0)
    # only the spans' own tokens, packed in order: the sums run over the same values in the
    # same order as over the full array
    pos, _ = range_positions(s0, s1)
    length = s1 - s0
    p = np.asarray(np.asarray(probs)[pos], dtype=np.float64)
    typ = np.zeros((pos.size, len(b)), dtype=np.float64)
    typ[:, has] = p[:, b[has]] + p[:, i[has]]
    mean = np.add.reduceat(typ, np.cumsum(length) - length, axis=0) / length[:, None]
    rows = np.arange(n)
    gold = mean[rows, lab]
    mean[rows, lab] = -np.inf
    mean[:, ~has] = -np.inf
    other = mean.max(axis=1) if mean.shape[1] > 1 else np.zeros(n)
    other = np.where(np.isfinite(other), other, 0.0)
    return np.clip((1.0 - (gold - other)) / 2.0, 0.0, 1.0).astype(np.float32)


def neighbour_disagreement(
    embeddings: np.ndarray,
    labels: np.ndarray,
    *,
    k: int = 10,
    exact_max: int | None = None,
) -> np.ndarray:
    """Share of a span's ``k`` nearest spans (cosine) that carry another gold label.

    Each neighbour is weighted by its (non-negative) cosine similarity; the span itself is
    excluded.  Uses :class:`analysis.similarity.SpanIndex` (exact below its size threshold).

    Parameters
    ----------
    embeddings : (n, dim) float, one row per gold span
    labels : (n,) int or str, gold label of each span

    Returns
    -------
    (n,) float32 in [0, 1]; 0 when there are fewer than 2 spans.
    """
    from analysis.similarity import EXACT_MAX, SpanIndex

    emb = np.asarray(embeddings)
    lab = np.asarray(labels)
    n = emb.shape[0] if emb.ndim == 2 else 0
    if emb.ndim != 2:
        raise ValueError(f"embeddings must be (n_spans, dim), got shape {emb.shape}")
    if lab.shape[0] != n:
        raise ValueError(f"got {lab.shape[0]} labels for {n} span embeddings")
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    kk = min(k + 1, n)
    index = SpanIndex.build(emb, exact_max=EXACT_MAX if exact_max is None else exact_max)
    sim, ids = index.search(emb, kk)
    self_hit = ids == np.arange(n)[:, None]
    ok = (ids >= 0) & ~self_hit
    # keep the first k non-self neighbours of each row
    ok &= np.cumsum(ok, axis=1) <= k
    w = np.where(ok, np.clip(sim, 0.0, None), 0.0)
    other = np.where(ok, lab[np.where(ids >= 0, ids, 0)] != lab[:, None], False)
    tot = w.sum(axis=1)
    out = np.divide((w * other).sum(axis=1), tot, out=np.zeros(n), where=tot > 0)
    return out.astype(np.float32)


def combine(
    signals: Mapping[str, np.ndarray],
    weights: Mapping[str, float] | None = None,
) -> np.ndarray:
    """Weighted noisy-OR of signals: ``1 − Π_s (1 − w_s · x_s)``.

    Parameters
    ----------
    signals : name → (m,) scores in [0, 1] (NaN counts as 0: signal not available)
    weights : name → weight in [0, 1]; default :data:`DEFAULT_WEIGHTS`; signals without a
        weight are ignored

    >>> combine({"margin": np.array([0.2, 0.9]), "surface": np.array([0.5, 0.0])},
    ...         {"margin": 1.0, "surface": 0.5}).astype(float).round(3).tolist()
    [0.4, 0.9]
    """
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    for name, val in w.items():
        if not 0.0 <= float(val) <= 1.0:
            raise ValueError(f"weight of signal {name!r} must be in [0, 1], got {val}")
    out: np.ndarray | None = None
    for name, x in signals.items():
        wt = float(w.get(name, 0.0))
        arr = np.nan_to_num(np.asarray(x, dtype=np.float64), nan=0.0)
        if out is None:
            out = np.ones_like(arr)
        if wt == 0.0:
            continue
        out = out * (1.0 - wt * np.clip(arr, 0.0, 1.0))
    if out is None:
        return np.zeros(0, dtype=np.float32)
    return np.clip(1.0 - out, 0.0, 1.0).astype(np.float32)


def calibrate(
    score: np.ndarray,
    unit_type: str,
    calibration: Mapping[str, tuple[float, float]],
    *,
    eps: float = 1e-6,
) -> np.ndarray:
    """Map one unit type's scores onto the common DEP scale: ``σ(a + b · logit(s))``.

    Monotone (``b > 0``) within a unit type, so it only changes how units of different types
    rank against each other — what the task ``max`` compares.  ``(a, b) = (0, 1)`` and a type
    missing from ``calibration`` leave the scores unchanged.

    Parameters
    ----------
    score : (m,) float in [0, 1]
    unit_type : one of :data:`UNIT_TYPES`
    calibration : unit type → ``(a, b)`` with ``b > 0``

    Returns
    -------
    (m,) float32 in [0, 1]

    >>> calibrate(np.array([0.5, 0.9]), "o", {"o": (-1.0, 1.0)}).astype(float).round(3).tolist()
    [0.269, 0.768]
    """
    if unit_type not in UNIT_TYPES:
        raise ValueError(f"unit type must be one of {UNIT_TYPES}, got {unit_type!r}")
    s = np.asarray(score, dtype=np.float64)
    if unit_type not in calibration:
        return s.astype(np.float32)
    try:
        a, b = (float(v) for v in calibration[unit_type])
    except (TypeError, ValueError):
        raise TypeError(
            f"calibration of {unit_type!r} must be a pair (a, b) of numbers, "
            f"got {calibration[unit_type]!r}"
        ) from None
    if not b > 0 or not np.isfinite(a) or not np.isfinite(b):
        raise ValueError(f"calibration of {unit_type!r} needs finite a and b > 0, got ({a}, {b})")
    if a == 0.0 and b == 1.0:
        return s.astype(np.float32)
    p = np.clip(s, eps, 1.0 - eps)
    z = a + b * (np.log(p) - np.log1p(-p))
    return (1.0 / (1.0 + np.exp(-z))).astype(np.float32)
