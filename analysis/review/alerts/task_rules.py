"""Per-task alert rules: likely mislabeled, hard for the model, overlooked spans, malformed
samples, duplicates, annotators disagree (see :mod:`analysis.review.alerts`)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from analysis.review.alerts.base import Alert, _as1d, _ids, _n_rows, _order, upper_fence

__all__ = ["likely_mislabeled", "hard_for_model", "overlooked_spans", "malformed_samples", "duplicates",
           "annotators_disagree"]

def likely_mislabeled(
    task_dep: np.ndarray,
    disagree_conf: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    dep_threshold: float | None = None,
    conf_threshold: float = 0.8,
) -> Alert | None:
    """High DEP *and* a confident model that disagrees with the annotation.

    Parameters
    ----------
    task_dep : (n_tasks,) float in [0, 1], NaN for tasks without annotation/probabilities
    disagree_conf : (n_tasks,) float, the highest model confidence among the task's predicted
        spans that disagree with the gold annotation (0 when the model agrees everywhere)
    dep_threshold : DEP above which a task counts as suspicious; default the upper fence of
        ``task_dep`` with a floor of 0.5
    conf_threshold : minimum model confidence of the disagreeing prediction
    """
    dep = _as1d(task_dep, "task_dep", np.float64)
    n = dep.shape[0]
    conf = _as1d(disagree_conf, "disagree_conf", np.float64, n)
    ids_ = _ids(ids, n)
    t = upper_fence(dep, floor=0.5) if dep_threshold is None else float(dep_threshold)
    hit = np.flatnonzero((dep >= t) & (conf >= conf_threshold))
    if hit.size == 0:
        return None
    return Alert(
        "likely mislabeled",
        f"task DEP >= {t:.3f} and the model disagrees with confidence >= {conf_threshold:.2f}",
        {
            "dep_threshold": t,
            "conf_threshold": conf_threshold,
            "n_flagged": int(hit.size),
            "n_tasks": int(n),
            "mean_dep_flagged": float(np.nanmean(dep[hit])),
        },
        _order(ids_, hit, dep),
    )


def hard_for_model(
    task_loss: np.ndarray,
    task_conf: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    task_dep: np.ndarray | None = None,
    loss_threshold: float | None = None,
    conf_threshold: float = 0.6,
) -> Alert | None:
    """High loss with an *unsure* model: hard or ambiguous samples rather than label errors.

    Parameters
    ----------
    task_loss : (n_tasks,) mean token cross-entropy of the gold tags under the model
    task_conf : (n_tasks,) model confidence of the task (lowest per-token argmax probability)
    loss_threshold : default the upper fence (``Q3 + 1.5 IQR``) of ``task_loss``, floor 0.5
        nats (about ``p(gold) < 0.6`` on average)
    """
    loss = _as1d(task_loss, "task_loss", np.float64)
    n = loss.shape[0]
    conf = _as1d(task_conf, "task_conf", np.float64, n)
    ids_ = _ids(ids, n)
    dep = None if task_dep is None else _as1d(task_dep, "task_dep", np.float64, n)
    t = upper_fence(loss, floor=0.5) if loss_threshold is None else float(loss_threshold)
    hit = np.flatnonzero((loss >= t) & (conf < conf_threshold))
    if hit.size == 0:
        return None
    return Alert(
        "hard for the model",
        f"mean token loss >= {t:.3f} nats while the model's confidence < {conf_threshold:.2f}",
        {
            "loss_threshold": t,
            "conf_threshold": conf_threshold,
            "n_flagged": int(hit.size),
            "mean_loss_flagged": float(np.nanmean(loss[hit])),
        },
        _order(ids_, hit, dep),
    )


def overlooked_spans(
    task_dep: np.ndarray,
    ghost_count: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    ghost_conf: np.ndarray | None = None,
    dep_threshold: float | None = None,
    conf_threshold: float = 0.7,
) -> Alert | None:
    """Spans annotators probably overlooked: ghost predictions on high-DEP tasks.

    Parameters
    ----------
    task_dep : (n_tasks,) float
    ghost_count : (n_tasks,) int, predicted spans overlapping no gold span
    ghost_conf : (n_tasks,) float, optional, highest model confidence among those ghosts
    dep_threshold : default the upper fence of ``task_dep``, floor 0.5
    """
    dep = _as1d(task_dep, "task_dep", np.float64)
    n = dep.shape[0]
    ghosts = _as1d(ghost_count, "ghost_count", np.int64, n)
    ids_ = _ids(ids, n)
    t = upper_fence(dep, floor=0.5) if dep_threshold is None else float(dep_threshold)
    mask = (dep >= t) & (ghosts > 0)
    if ghost_conf is not None:
        mask &= _as1d(ghost_conf, "ghost_conf", np.float64, n) >= conf_threshold
    hit = np.flatnonzero(mask)
    if hit.size == 0:
        return None
    rule = f"task DEP >= {t:.3f} and the model finds an entity the annotation lacks"
    if ghost_conf is not None:
        rule += f" with confidence >= {conf_threshold:.2f}"
    return Alert(
        "overlooked spans",
        rule,
        {"dep_threshold": t, "n_flagged": int(hit.size), "n_ghost_spans": int(ghosts[hit].sum())},
        _order(ids_, hit, dep),
    )


def malformed_samples(
    text_len: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    n_tokens: np.ndarray | None = None,
    span_task: np.ndarray | None = None,
    span_start: np.ndarray | None = None,
    span_end: np.ndarray | None = None,
    span_bad_edge: np.ndarray | None = None,
    problem_rows: np.ndarray | None = None,
    max_tokens: int = 512,
    long_k: float = 3.0,
    task_dep: np.ndarray | None = None,
) -> Alert | None:
    """Empty or very long texts, overlapping spans, spans with whitespace/punctuation edges.

    Parameters
    ----------
    text_len : (n_tasks,) int, characters (after stripping whitespace counts as empty when 0)
    n_tokens : (n_tasks,) int, optional; a task longer than ``max_tokens`` is "very long"
    span_task, span_start, span_end : (n_spans,) raw annotated spans (task row, half-open
        character offsets), *before* validation, so overlaps can be seen
    span_bad_edge : (n_spans,) bool, the span text starts or ends with whitespace/punctuation
    problem_rows : task rows with spans the loader had to drop or could not align to tokens
        (overlapping, out of range, boundary inside a token, covering only whitespace)
    long_k : a text is also very long when longer than ``Q3 + long_k * IQR`` of text lengths
        and longer than 1000 characters
    """
    tl = _as1d(text_len, "text_len", np.int64)
    n = tl.shape[0]
    ids_ = _ids(ids, n)
    dep = None if task_dep is None else _as1d(task_dep, "task_dep", np.float64, n)
    empty = tl <= 0
    long_t = upper_fence(tl, k=long_k, floor=1000.0)
    long_ = tl > long_t
    if n_tokens is not None:
        long_ |= _as1d(n_tokens, "n_tokens", np.int64, n) > max_tokens
    overl = np.zeros(n, dtype=bool)
    edge = np.zeros(n, dtype=bool)
    if span_task is not None:
        st = _as1d(span_task, "span_task", np.int64)
        m = st.shape[0]
        if m and (st.min() < 0 or st.max() >= n):
            raise ValueError(f"span_task holds a task row outside [0, {n})")
        if span_start is not None and span_end is not None and m:
            s0 = _as1d(span_start, "span_start", np.int64, m)
            s1 = _as1d(span_end, "span_end", np.int64, m)
            import pandas as pd

            order = np.lexsort((s1, s0, st))
            st_o, s0_o, s1_o = st[order], s0[order], s1[order]
            # sorted by start inside each task, a span overlaps an earlier one iff its start
            # is before the largest end among the earlier spans of the same task
            prev_max = (
                pd.Series(s1_o).groupby(st_o).cummax().groupby(st_o).shift(1).to_numpy()
            )
            bad = np.isfinite(prev_max) & (s0_o < np.nan_to_num(prev_max, nan=-1.0))
            overl[st_o[bad]] = True
        if span_bad_edge is not None and m:
            be = _as1d(span_bad_edge, "span_bad_edge", bool, m)
            edge[st[be]] = True
    invalid = np.zeros(n, dtype=bool)
    if problem_rows is not None:
        pr = np.asarray(problem_rows, dtype=np.int64)
        invalid[pr[(pr >= 0) & (pr < n)]] = True
    mask = empty | long_ | overl | edge | invalid
    hit = np.flatnonzero(mask)
    if hit.size == 0:
        return None
    return Alert(
        "malformed samples",
        f"empty text, text longer than {long_t:.0f} characters (Q3 + {long_k:g} IQR, at least "
        f"1000) or {max_tokens} tokens, overlapping or invalid spans, or spans starting/ending "
        "with whitespace or punctuation",
        {
            "empty_text": int(empty.sum()),
            "very_long": int(long_.sum()),
            "overlapping_spans": int(overl.sum()),
            "bad_span_edges": int(edge.sum()),
            "invalid_spans": int(invalid.sum()),
            "long_threshold_chars": long_t,
            "max_tokens": max_tokens,
        },
        _order(ids_, hit, dep),
    )


def duplicates(
    groups: Sequence[Sequence[int]],
    *,
    ids: np.ndarray | None = None,
    n_tasks: int | None = None,
    conflicting: Sequence[bool] | None = None,
    threshold: float | None = None,
    method: str = "cosine",
) -> Alert | None:
    """Near-duplicate tasks.

    Parameters
    ----------
    groups : groups of task rows that are (near-)duplicates of each other, each of size >= 2
    conflicting : per group, True when the members' annotations differ (reported separately)
    threshold : similarity threshold used to build the groups (reported in the rule)
    method : how the groups were found (``"cosine"`` on embeddings, ``"tfidf"``, ``"hash"``)
    """
    gs = [np.asarray(g, dtype=np.int64) for g in groups if len(g) >= 2]
    if not gs:
        return None
    rows = np.unique(np.concatenate(gs))
    n = _n_rows(ids, n_tasks, rows)
    ids_ = _ids(ids, n)
    n_conf = int(sum(bool(c) for c in conflicting)) if conflicting is not None else None
    thr = "" if threshold is None else f" >= {threshold:.2f}"
    numbers: dict[str, Any] = {
        "n_groups": len(gs),
        "n_tasks": int(rows.size),
        "method": method,
        "threshold": threshold,
    }
    if n_conf is not None:
        numbers["n_groups_with_different_annotations"] = n_conf
    return Alert(
        "duplicates",
        f"tasks whose texts are near-identical ({method} similarity{thr})",
        numbers,
        _order(ids_, rows, None),
    )


def annotators_disagree(
    task_agreement: np.ndarray,
    task_ids: Sequence[int | None],
    *,
    n_ties: Sequence[int] | None = None,
    overall_f1: float | None = None,
    alpha: float | None = None,
    threshold: float = 1.0,
) -> Alert | None:
    """Tasks labelled by several annotators who do not all agree.

    Parameters
    ----------
    task_agreement : (n,) float, the mean pairwise exact span F1 of each multi-annotated task
        (:attr:`analysis.agreement.Agreement.task_agreement`)
    task_ids : (n,) the tasks' Label Studio ids (None outside Label Studio: not listed)
    n_ties : (n,) consensus ties per task (reported)
    overall_f1, alpha : the pooled figures (reported)
    threshold : a task fires when its agreement is below this (default 1.0: any disagreement)

    Flagged tasks are ordered by agreement, lowest first.
    """
    agr = _as1d(task_agreement, "task_agreement", np.float64)
    n = agr.shape[0]
    if len(task_ids) != n:
        raise ValueError(f"task_ids has {len(task_ids)} rows, expected {n}")
    hit = np.flatnonzero(np.isfinite(agr) & (agr < threshold))
    if hit.size == 0:
        return None
    order = hit[np.argsort(agr[hit], kind="stable")]
    ids = tuple(int(t) for t in (task_ids[i] for i in order.tolist()) if t is not None)
    ties = 0 if n_ties is None else int(np.asarray(n_ties, dtype=np.int64)[hit].sum())
    return Alert(
        "annotators disagree",
        f"task labelled by two or more annotators with mean pairwise exact span F1 < "
        f"{threshold:g}",
        {"n_flagged": int(hit.size), "n_multi_annotated": int(n),
         "mean_agreement_flagged": float(agr[hit].mean()), "consensus_ties": ties,
         "overall_f1_exact": overall_f1, "token_alpha": alpha},
        ids,
    )
