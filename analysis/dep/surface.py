"""Surface-form consistency of gold labels across a dataset (the ``surface`` DEP signal).

A surface form is the lower-cased token sequence of a span.  For a form ``f`` let ``n(f, l)`` be
how often it is a gold span with label ``l`` and ``n_O(f)`` how often it occurs with every token
gold ``O``; ``n(f) = Σ_l n(f, l) + n_O(f)``.

* a gold span with form ``f`` and label ``l`` scores ``(n(f) − n(f, l)) / n(f)``: the share of
  the form's occurrences that disagree with this one (0 for a form seen once);
* an all-``O`` occurrence of a labelled form scores ``Σ_l n(f, l) / n(f)`` on each of its tokens
  (max over the occurrences covering a token): the form is labelled elsewhere but left ``O`` here
  (a missed span).

Forms are integer ids, never joined strings: tokens are factorised once, and an ``L``-token form
is the pair (its ``L−1``-token prefix id, its last token id), factorised again.  Only positions
that can still become a labelled form are carried from one length to the next (an all-``O`` run
whose prefix is the prefix of some gold span), so the work is about one pass over the tokens
whatever the corpus size.  Forms longer than ``max_len`` tokens are matched as spans but not
searched among ``O`` tokens.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from analysis.corpus import lower_codes
from analysis.tags import range_positions

__all__ = ["surface_consistency"]


def _pair_ids(a: np.ndarray, b: np.ndarray, width: int) -> np.ndarray:
    """Dense ids of the pairs ``(a_i, b_i)`` (``0 <= b < width``)."""
    if a.size == 0:
        return np.zeros(0, dtype=np.int64)
    ids, _ = pd.factorize(a.astype(np.int64) * np.int64(width) + b.astype(np.int64))
    return np.asarray(ids, dtype=np.int64)


def _table(ids: np.ndarray, size: int) -> np.ndarray:
    """``(size,)`` bool, True at ``ids`` (all ``0 <= ids < size``)."""
    t = np.zeros(size, dtype=bool)
    t[ids] = True
    return t


def surface_consistency(
    token_text: Any,
    token_task: np.ndarray,
    token_is_o: np.ndarray,
    span_start: np.ndarray,
    span_end: np.ndarray,
    span_label: np.ndarray,
    *,
    max_len: int = 6,
    codes: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Surface-form consistency scores (see the module docstring).

    Parameters
    ----------
    token_text : (N,) str, tokens of all tasks, flattened (ignored when ``codes`` is given)
    token_task : (N,) int, task of each token (non-decreasing)
    token_is_o : (N,) bool, gold tag is ``O``
    span_start, span_end : (n,) int, global half-open token range of each gold span
    span_label : (n,) int, label id of each gold span
    codes : (N,) int, precomputed :func:`lower_codes` of the tokens

    Returns
    -------
    span_score : (n,) float32
    token_score : (N,) float32, 0 on tokens inside gold spans
    """
    task = np.asarray(token_task, dtype=np.int64)
    is_o = np.asarray(token_is_o, dtype=bool)
    s0 = np.asarray(span_start, dtype=np.int64)
    s1 = np.asarray(span_end, dtype=np.int64)
    lab = np.asarray(span_label, dtype=np.int64)
    n_tok, n_span = task.shape[0], s0.shape[0]
    span_score = np.zeros(n_span, dtype=np.float32)
    token_score = np.zeros(n_tok, dtype=np.float32)
    if n_span == 0 or n_tok == 0:
        return span_score, token_score
    code = lower_codes(token_text) if codes is None else np.asarray(codes, dtype=np.int64)
    width = int(code.max()) + 1
    lengths = s1 - s0
    span_form, occ = _forms(code, task, is_o, s0, lengths, width, max_len)

    # spans: n(f, l), n_lab(f) = Σ_l n(f, l); O occurrences: n_O(f)
    n_forms = int(span_form.max()) + 1
    n_lab = np.bincount(span_form, minlength=n_forms).astype(np.float64)
    fl = pd.factorize(span_form * np.int64(max(int(lab.max()) + 1, 1)) + lab)[0]
    n_fl = np.bincount(fl)[fl].astype(np.float64)
    occ_pos, occ_len, occ_form = occ
    n_o = np.bincount(occ_form, minlength=n_forms).astype(np.float64)
    n_f = n_lab[span_form] + n_o[span_form]
    span_score[:] = ((n_f - n_fl) / n_f).astype(np.float32)
    if occ_pos.size:
        lab_o = n_lab[occ_form]
        occ_score = (lab_o / (lab_o + n_o[occ_form])).astype(np.float32)
        tok_idx, owner = range_positions(occ_pos, occ_pos + occ_len)
        np.maximum.at(token_score, tok_idx, occ_score[owner])
    return span_score, token_score


def _forms(code: np.ndarray, task: np.ndarray, is_o: np.ndarray, s0: np.ndarray,
           lengths: np.ndarray, width: int, max_len: int
           ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Form id of every span, and the all-``O`` occurrences ``(position, length, form id)`` of
    labelled forms up to ``max_len`` tokens."""
    n_tok = code.shape[0]
    n_span = s0.shape[0]
    span_form = np.full(n_span, -1, dtype=np.int64)
    next_form = 0
    # length 1: a span's prefix id is its first token's code; candidates are O tokens whose
    # code starts some span.  Ids are dense (codes, then factorised pairs) below ``size``, so
    # membership and lookup are one gather through a table of ``size`` entries (no sorting).
    size = width
    sp = np.flatnonzero(lengths >= 1)
    sp_id = code[s0[sp]]
    cand = np.flatnonzero(is_o & _table(sp_id, size)[code])
    cand_id = code[cand]
    occ_pos: list[np.ndarray] = []
    occ_len: list[np.ndarray] = []
    occ_form: list[np.ndarray] = []
    length = 1
    while sp.size:
        # spans that end at this length get their final form id; O candidates with the same id
        # are occurrences of that form
        done = lengths[sp] == length
        ids_done = sp_id[done]
        uniq, inv = np.unique(ids_done, return_inverse=True)
        span_form[sp[done]] = next_form + inv
        if cand.size and uniq.size and length <= max_len:
            rank = np.full(size, -1, dtype=np.int64)
            rank[uniq] = np.arange(uniq.size, dtype=np.int64)
            k = rank[cand_id]
            hit = k >= 0
            occ_pos.append(cand[hit])
            occ_len.append(np.full(int(hit.sum()), length, dtype=np.int64))
            occ_form.append(next_form + k[hit])
        next_form += int(uniq.size)
        # extend the survivors by one token
        sp, sp_id = sp[~done], sp_id[~done]
        if not sp.size:
            break
        if length < max_len and cand.size:
            keep = _table(sp_id, size)[cand_id]
            cand, cand_id = cand[keep], cand_id[keep]
            nxt = cand + length
            ok = nxt < n_tok
            ok[ok] = (task[nxt[ok]] == task[cand[ok]]) & is_o[nxt[ok]]
            cand, cand_id, nxt = cand[ok], cand_id[ok], nxt[ok]
        else:
            cand = cand_id = nxt = np.zeros(0, dtype=np.int64)
        both = _pair_ids(np.concatenate([sp_id, cand_id]),
                         np.concatenate([code[s0[sp] + length], code[nxt]]), width)
        sp_id, cand_id = both[: sp.size], both[sp.size:]
        size = int(both.max()) + 1
        length += 1
    if occ_pos:
        return span_form, (np.concatenate(occ_pos), np.concatenate(occ_len),
                           np.concatenate(occ_form))
    z = np.zeros(0, dtype=np.int64)
    return span_form, (z, z, z)
