"""The units DEP scores — every kept gold span and every gold-``O`` token — and their signals.

:func:`unit_signals` computes, once, every signal of :mod:`analysis.dep.signals` for the units of
a :class:`analysis.dep.inputs.Scored` view; :func:`span_features` / :func:`token_features` turn
them into the feature rows of the error model (:data:`analysis.dep.errormodel.SPAN_FEATURES`,
:data:`~analysis.dep.errormodel.TOKEN_FEATURES`).  Ranges are global half-open token ranges into
the flat rows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from analysis.dep.errormodel import SPAN_FEATURES, TOKEN_FEATURES, logit
from analysis.dep.inputs import Scored
from analysis.dep.signals import (
    model_disagreement,
    neighbour_disagreement,
    surface_consistency,
    type_disagreement,
)
from analysis.exceptions import DataError
from analysis.tags import range_positions

__all__ = ["Units", "unit_signals", "span_features", "token_features", "range_max",
           "range_mean"]


def _packed(values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The values inside the ranges, packed in order (float64), and where each range starts."""
    pos, _ = range_positions(t0, t1)
    length = np.asarray(t1, dtype=np.int64) - np.asarray(t0, dtype=np.int64)
    return np.asarray(np.asarray(values)[pos], dtype=np.float64), np.cumsum(length) - length


def range_max(values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Max of ``values`` over sorted, non-overlapping, non-empty ranges ``[t0_i, t1_i)``.

    >>> range_max(np.array([1.0, 5, 2, 0, 3]), np.array([0, 3]), np.array([2, 5])).tolist()
    [5.0, 3.0]
    """
    if len(t0) == 0:
        return np.zeros(0, dtype=np.float64)
    v, start = _packed(values, t0, t1)
    out: np.ndarray = np.maximum.reduceat(v, start)
    return out


def range_mean(values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over sorted, non-overlapping, non-empty ranges ``[t0_i, t1_i)``.

    >>> range_mean(np.array([1.0, 5, 2, 0, 3]), np.array([0, 3]), np.array([2, 5])).tolist()
    [3.0, 1.5]
    """
    if len(t0) == 0:
        return np.zeros(0, dtype=np.float64)
    v, start = _packed(values, t0, t1)
    out: np.ndarray = np.add.reduceat(v, start) / (np.asarray(t1) - np.asarray(t0))
    return out


@dataclass(frozen=True, eq=False)
class Units:
    """Signals of the units of one scored view.

    ``span`` / ``tok``: signal name -> per gold span / per flat token values; ``inside`` marks
    tokens in a gold span, ``boundary`` gold-``O`` tokens right next to one (same task),
    ``o_tok`` the flat rows of the gold-``O`` tokens; ``margin_dep`` is ``(1 − margin) / 2`` per
    token (AUM when several epochs were given).
    """

    span: Mapping[str, np.ndarray]
    tok: Mapping[str, np.ndarray]
    margin_dep: np.ndarray
    inside: np.ndarray
    boundary: np.ndarray
    o_tok: np.ndarray
    span_tok: np.ndarray
    span_owner: np.ndarray


def _neighbour(sc: Scored, span_embeddings: np.ndarray | None, k: int) -> np.ndarray:
    n_span = len(sc.span_t0)
    if span_embeddings is None:
        return np.full(n_span, np.nan, dtype=np.float32)
    emb = np.asarray(span_embeddings)
    n_gold = len(sc.corpus.gold)
    if emb.ndim != 2 or emb.shape[0] != n_gold:
        raise DataError(f"span_embeddings must have one row per gold span ({n_gold}), got shape "
                        f"{emb.shape}")
    return neighbour_disagreement(emb[sc.span_rows], sc.span_label, k=k)


def _boundary(sc: Scored, inside: np.ndarray) -> np.ndarray:
    n_tok = sc.n_tokens
    boundary = np.zeros(n_tok, dtype=bool)
    if len(sc.span_t0):
        before = sc.span_t0 - 1
        ok = (before >= 0) & (sc.tok_task[np.maximum(before, 0)] == sc.span_task)
        boundary[before[ok]] = True
        after = sc.span_t1
        ok = (after < n_tok) & (sc.tok_task[np.minimum(after, max(n_tok - 1, 0))] == sc.span_task)
        boundary[after[ok]] = True
    return boundary & ~inside


def unit_signals(sc: Scored, margin_dep: np.ndarray, *, span_embeddings: np.ndarray | None,
                 neighbours: int) -> Units:
    """Every signal of every unit (see :class:`Units`)."""
    corpus, ts = sc.corpus, sc.tagset
    t0, t1 = sc.span_t0, sc.span_t1
    n_tok = sc.n_tokens
    disagree = model_disagreement(sc.probs, sc.gold, best=(sc.best, sc.best_prob))
    codes = sc.take(corpus.lower_codes) if n_tok else np.zeros(0, dtype=np.int64)
    surf_span, surf_tok = surface_consistency(None, sc.tok_task, sc.gold == ts.o, t0, t1,
                                              sc.span_label, codes=codes)
    inside = np.zeros(n_tok, dtype=bool)
    span_tok, span_owner = range_positions(t0, t1)
    inside[span_tok] = True
    labels = corpus.labels
    b_cols = np.array([ts.column(f"B-{lab}") for lab in labels], dtype=np.int64)
    i_cols = np.array([ts.column(f"I-{lab}") for lab in labels], dtype=np.int64)
    span = {
        "margin": range_max(margin_dep, t0, t1),
        "disagreement": range_max(disagree, t0, t1),
        "surface": surf_span,
        "neighbour": _neighbour(sc, span_embeddings, neighbours),
        "type": type_disagreement(sc.probs, t0, t1, sc.span_label, b_cols, i_cols),
        "outside": range_max(sc.probs[:, ts.o], t0, t1),
    }
    zeros = np.zeros(n_tok, dtype=np.float32)
    tok = {"margin": margin_dep, "disagreement": disagree, "surface": surf_tok,
           "neighbour": zeros, "type": zeros, "outside": zeros}
    return Units(span, tok, margin_dep, inside, _boundary(sc, inside), np.flatnonzero(~inside),
                 span_tok, span_owner)


def log_margins(gold_prob: np.ndarray, other_prob: np.ndarray) -> np.ndarray:
    """(N,) float64 ``log max p(other) − log p(gold)`` from the float32 row statistics
    (:attr:`Scored.gold_prob`, :attr:`Scored.other_prob`; float32 is ample for the max)."""
    out: np.ndarray = (np.log(np.maximum(np.asarray(other_prob, dtype=np.float64), 1e-12))
                       - np.log(np.maximum(np.asarray(gold_prob, dtype=np.float64), 1e-12)))
    return out


def span_features(u: Units, log_margin: np.ndarray, t0: np.ndarray, t1: np.ndarray,
                  kind: np.ndarray) -> np.ndarray:
    """(n_spans, len(SPAN_FEATURES)) feature rows of the gold spans."""
    sig = u.span
    kind = np.asarray(kind, dtype=object)
    cols = {
        "margin": logit(sig["margin"]),
        "log_margin_max": range_max(log_margin, t0, t1),
        "log_margin_mean": range_mean(log_margin, t0, t1),
        "type": logit(sig["type"]),
        "surface": np.asarray(sig["surface"], dtype=np.float64),
        "neighbour": np.asarray(sig["neighbour"], dtype=np.float64),  # NaN: no embeddings
        "outside": np.asarray(sig["outside"], dtype=np.float64),
        "disagreement": np.asarray(sig["disagreement"], dtype=np.float64),
        "log_length": np.log(np.maximum(np.asarray(t1) - np.asarray(t0), 1)),
        "pred_correct": kind == "correct",
        "pred_wrong_tag": kind == "wrong_tag",
        "pred_span_shift": kind == "span_shift",
        "pred_missed": kind == "missed",
    }
    if not cols["margin"].size:
        return np.zeros((0, len(SPAN_FEATURES)), dtype=np.float64)
    return np.column_stack([np.asarray(cols[f], dtype=np.float64) for f in SPAN_FEATURES])


def token_features(u: Units, log_margin: np.ndarray, sc: Scored,
                   rows: np.ndarray | None = None) -> np.ndarray:
    """(n_rows, len(TOKEN_FEATURES)) feature rows of the flat tokens ``rows`` (default: every
    gold-``O`` token, ``u.o_tok``)."""
    rows = u.o_tok if rows is None else np.asarray(rows, dtype=np.int64)
    x = np.empty((rows.size, len(TOKEN_FEATURES)), dtype=np.float64)
    if rows.size == 0:
        return x
    sig = u.tok
    off = sc.offsets
    cols = {
        "margin": lambda: logit(np.asarray(sig["margin"][rows], dtype=np.float64)),
        "log_margin": lambda: log_margin[rows],
        "surface": lambda: sig["surface"][rows],
        "disagreement": lambda: sig["disagreement"][rows],
        "capitalized": lambda: sc.corpus.capitalized[sc.rows[rows]],
        "sentence_initial": lambda: (off[sc.tok_task[rows]] == rows),  # first row of its task
        "entity": lambda: logit(1.0 - np.asarray(sc.probs[rows, sc.tagset.o], dtype=np.float64)),
    }
    for j, f in enumerate(TOKEN_FEATURES):
        x[:, j] = cols[f]()
    return x
