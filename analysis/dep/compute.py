"""Data Error Potential (DEP): how likely each human annotation is wrong.

Inputs are per-task tag probabilities ``(n_tokens, n_tags)`` (rows = ``Task.tokens``,
columns = ``tags``, normally :func:`tag_names` of the dataset labels) from a model that did not
train on that task (cross-fitting), and optionally one such set per training epoch.

Token DEP
    ``(1 − margin) / 2`` where ``margin = p(gold tag) − max p(other tag)``, in ``[0, 1]``;
    ``> 0.5`` exactly when the model's argmax disagrees with the gold tag.  With several
    probability sets (``epochs_probs``) the margin is averaged over them first (area under the
    margin, AUM: labels the model keeps fighting during training have a low average margin).
Units
    Every gold span (its token DEP is the max over its tokens) and every gold-``O`` token.  Each
    unit gets the signals of :mod:`analysis.dep.signals` (margin, disagreement, surface-form
    consistency, neighbour label consistency when span embeddings are given, and for spans the
    entity-type margin and the highest ``p(O)``).
Unit DEP (``scorer="model"``, the default)
    The unit's error probability under the learned error model (:mod:`analysis.dep.errormodel`): a
    multinomial logistic regression per unit type — gold spans, ``O`` tokens right next to a
    gold span (``o_boundary``: where a shifted boundary shows) and other ``O`` tokens (``o``:
    where a missed entity shows) — over the signals, the log-margin, the error type of the
    model's argmax decoding against the span and a few shape features.  One model per unit type,
    all fitted on the same labels, puts spans and tokens on one probability scale, and the
    multinomial form lets each error kind (wrong tag / span shift / ghost; missed / shift) have
    its own combination of signals; its most likely class is the unit's ``suspect`` kind.  The
    shipped coefficients are fitted by ``bench/fit_error_model.py`` on injected noise in
    CoNLL-03 (numbers in ``bench/README.md``).
Unit DEP (``scorer="signals"``)
    The signals combined by :func:`analysis.dep.signals.combine` (weighted noisy-OR), then mapped by
    :func:`analysis.dep.signals.calibrate` (``σ(a + b · logit s)``, monotone) with ``(a, b)`` per
    unit type, so that one type does not crowd out the others in the task max
    (:data:`analysis.dep.signals.DEFAULT_WEIGHTS`, :data:`analysis.dep.signals.DEFAULT_CALIBRATION`).
    Kept for explicit weighting and for the ablation; selected automatically when ``weights``
    or ``calibration`` are passed.
Span DEP
    The unit DEP of a gold span; a predicted span that overlaps no gold span (``ghost``, argmax
    decoding with :func:`analysis.tags.decode_probs`) gets the max unit DEP over its tokens.
Task DEP
    ``aggregate`` over the task's units: ``"max"`` by default.  ``bench/bench_detection.py``
    compares max, mean, noisy-OR, top-2 mean and a length-weighted mean by average precision on
    injected noise; see ``bench/README.md`` for the numbers behind the default.
Thresholds (per dataset, :func:`fit_thresholds`)
    *mislabeled-likely*: with the error model, task DEPs are error probabilities and the cut
    maximises the expected F2 of flagging (the dataset's own expected error count decides how
    many tasks are worth a look; recall weighs twice as much as precision); with ``scorer="signals"``, the task DEP that best separates
    tasks where the model's argmax decoding disagrees with the gold annotation (any wrong_tag /
    span_shift / missed / ghost from :func:`analysis.errors.align`) from tasks where it agrees
    (maximal Youden J).  *easy*: the median task DEP of the agreeing tasks.
    ``easy`` < t_easy ≤ ``hard`` < t_mislabeled ≤ ``mislabeled``.  Only when one side is empty (the model agrees with every
    task or with none) do quantiles of the DEP distribution stand in (0.9 / 0.5).

Unannotated tasks (``Task.gold is None``) are not scored: their task DEP is NaN.
"""

from __future__ import annotations

import errno
import logging
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import numpy as np
import pandas as pd

from analysis.tags import decode_probs, tag_names
from analysis.dep.errormodel import SPAN_FEATURES, TOKEN_FEATURES, ErrorModel, default_error_model, logit
from analysis.errors import KINDS, align
from analysis.schemes import split_tag
from analysis.dep.signals import DEFAULT_CALIBRATION, DEFAULT_WEIGHTS, calibrate, combine
from analysis.dep.signals import model_disagreement, neighbour_disagreement, type_disagreement
from analysis.dep.signals import surface_consistency
from analysis.spans import SpanTable

__all__ = [
    "tag_names",
    "Aggregate",
    "AGGREGATES",
    "Scorer",
    "SCORERS",
    "Thresholds",
    "DepResult",
    "load_probs",
    "validate_probs",
    "token_margins",
    "aggregate_units",
    "fit_thresholds",
    "compute_dep",
]

logger = logging.getLogger(__name__)

Aggregate = Literal["max", "mean", "noisy_or", "top2", "length_weighted"]
Scorer = Literal["model", "signals"]
SCORERS: tuple[str, ...] = ("model", "signals")
AGGREGATES: tuple[str, ...] = ("max", "mean", "noisy_or", "top2", "length_weighted")
CATEGORIES: tuple[str, ...] = ("easy", "hard", "mislabeled")


def _task_name(task: Any) -> str:
    tid = getattr(task, "id", None)
    idx = getattr(task, "index", None)
    return f"task {tid} (#{idx})" if tid is not None else f"task #{idx}"


# --------------------------------------------------------------------------------- loading


def load_probs(path: str | Path) -> list[np.ndarray | None]:
    """Read per-task probabilities from an ``.npz`` written by ``numpy.savez(path, *arrays)``.

    Arrays ``arr_0, arr_1, ...`` are returned in task order as float32.  An optional boolean
    array ``annotated`` (one entry per task, as ``ner-quality train --folds`` writes) marks tasks
    without out-of-sample probabilities: those come back as ``None``.  Raises ``ValueError``
    when the file holds other keys, a gap in the numbering or a mask of the wrong length.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(errno.ENOENT, "no such file", str(p))
    import zipfile

    try:
        z = np.load(p, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{p}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise ValueError(f"{p}: not an .npz archive (write it with numpy.savez(path, *arrays))")
    with z:
        idx: list[int] = []
        mask = None
        for k in z.files:
            if k == "annotated":
                mask = np.asarray(z[k]).astype(bool).ravel()
                continue
            if not (k.startswith("arr_") and k[4:].isdigit()):
                raise ValueError(
                    f"{p}: unexpected array {k!r}; expected arr_0, arr_1, ... "
                    "(numpy.savez(path, *arrays) in task order)"
                )
            idx.append(int(k[4:]))
        order = sorted(idx)
        if order != list(range(len(order))):
            missing = sorted(set(range(max(order) + 1)) - set(order))
            raise ValueError(f"{p}: arrays are not numbered 0..n-1 (missing arr_{missing[0]})")
        out: list[np.ndarray | None] = [np.asarray(z[f"arr_{i}"], dtype=np.float32) for i in order]
        if mask is not None:
            if mask.shape[0] != len(out):
                raise ValueError(
                    f"{p}: 'annotated' mask has {mask.shape[0]} entries for {len(out)} arrays"
                )
            out = [a if m else None for a, m in zip(out, mask.tolist())]
        return out


# ------------------------------------------------------------------------------ validation


@dataclass(frozen=True)
class _Flat:
    """Probabilities of the scored tasks, flattened."""

    tasks: np.ndarray  # (n_scored,) dataset task index of each scored task
    offsets: np.ndarray  # (n_scored + 1,) token offsets into the flat arrays
    probs: np.ndarray  # (N, n_tags) float32


def _check_tags(dataset: Any, tags: Sequence[str]) -> tuple[str, ...]:
    tags = tuple(tags)
    if not tags or not all(isinstance(t, str) for t in tags):
        raise TypeError(f"tags must be a non-empty sequence of str, got {tags!r}")
    if len(set(tags)) != len(tags):
        dup = sorted({t for t in tags if tags.count(t) > 1})
        raise ValueError(f"tag list has duplicates: {dup}")
    if "O" not in tags:
        raise ValueError(f"tag list {list(tags)} has no 'O' tag")
    types: set[str] = set()
    for t in tags:
        try:
            prefix, typ = split_tag(t)
        except ValueError as exc:
            raise ValueError(f"tag list: {exc}") from None
        if prefix not in ("O", "B", "I"):
            raise ValueError(
                f"tag {t!r}: DEP needs IOB2 model tags (O, B-X, I-X), got prefix {prefix!r}"
            )
        if prefix != "O":
            types.add(typ)
    for typ in types:
        for p in ("B", "I"):
            if f"{p}-{typ}" not in tags:
                raise ValueError(f"tag list has {typ} tags but no {p}-{typ}")
    labels = tuple(getattr(dataset, "labels", ()))
    extra = sorted(types - set(labels))
    if extra and labels:
        raise ValueError(
            f"tag list names entity types {extra} that are not dataset labels {list(labels)}"
        )
    return tags


def _scored_tasks(dataset: Any, n_probs: int) -> tuple[np.ndarray, list[int]]:
    """Which dataset task each probability array belongs to, and the scored tasks."""
    tasks = dataset.tasks
    annotated = [t.index for t in tasks if t.gold is not None]
    if n_probs == len(tasks):
        pos = list(range(len(tasks)))
        return np.asarray(annotated, dtype=np.int64), pos
    if n_probs == len(annotated):
        return np.asarray(annotated, dtype=np.int64), list(range(n_probs))
    raise ValueError(
        f"got {n_probs} probability arrays for {len(tasks)} tasks ({len(annotated)} annotated); "
        "expected one per task or one per annotated task, in task order"
    )


def validate_probs(
    dataset: Any,
    probs: Sequence[np.ndarray],
    tags: Sequence[str],
    *,
    tol: float = 1e-3,
) -> list[int]:
    """Check per-task probabilities against a dataset and tag list.

    ``probs`` holds one array per task (``None`` allowed for unannotated tasks, as
    :func:`ls_backend.runtime.crossfit` returns), or one per annotated task, in task order.  Raises
    ``ValueError`` naming the task (id and 0-based index) for: a non-2-D array, a row count
    different from the task's token count, a column count different from ``len(tags)``,
    NaN/inf or negative values, rows not summing to 1 within ``tol``; and for a tag list that
    does not fit the dataset (duplicates, no ``O``, non-IOB2 prefixes, a ``B-X`` without
    ``I-X``, types that are not dataset labels, or a gold span label without tags).

    Returns
    -------
    list[int] : the dataset task index of each array in ``probs``.
    """
    _validate(dataset, probs, tags, tol=tol)
    tasks = dataset.tasks
    if len(probs) == len(tasks):
        return list(range(len(tasks)))
    return [t.index for t in tasks if t.gold is not None]


def _validate(
    dataset: Any, probs: Sequence[np.ndarray], tags: Sequence[str], *, tol: float
) -> _Flat:
    tags = _check_tags(dataset, tags)
    if isinstance(probs, np.ndarray) and probs.dtype != object:
        raise TypeError("probs must be a list of per-task arrays, not one array")
    probs = list(probs)
    scored, _ = _scored_tasks(dataset, len(probs))
    tasks = dataset.tasks
    if len(probs) == len(tasks):
        arr_of_task = {i: i for i in range(len(tasks))}
    else:
        arr_of_task = {int(t): k for k, t in enumerate(scored.tolist())}
    n_tags = len(tags)
    # shapes of every array (also those of unannotated tasks)
    all_idx = list(arr_of_task.items())
    for ti, k in all_idx:
        task = tasks[ti]
        if probs[k] is None:
            if task.gold is None:
                continue  # unannotated task without probabilities (crossfit leaves None)
            raise ValueError(f"{_task_name(task)}: annotated task has no probabilities (None)")
        a = np.asarray(probs[k])
        if a.ndim != 2:
            raise ValueError(f"{_task_name(task)}: probabilities must be 2-D (n_tokens, n_tags), "
                             f"got shape {a.shape}")
        if a.shape[0] != len(task.tokens):
            raise ValueError(
                f"{_task_name(task)}: {a.shape[0]} probability rows for {len(task.tokens)} tokens"
            )
        if a.shape[1] != n_tags:
            raise ValueError(
                f"{_task_name(task)}: {a.shape[1]} probability columns but {n_tags} tags "
                f"({', '.join(tags[:6])}{', ...' if n_tags > 6 else ''})"
            )
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{_task_name(task)}: probabilities must be numeric, got {a.dtype}")
    k_of = [arr_of_task[int(t)] for t in scored.tolist()]
    lens = np.fromiter((len(tasks[int(t)].tokens) for t in scored.tolist()), dtype=np.int64,
                       count=len(k_of))
    offsets = np.zeros(len(k_of) + 1, dtype=np.int64)
    np.cumsum(lens, out=offsets[1:])
    flat = (
        np.concatenate([np.asarray(probs[k], dtype=np.float32) for k in k_of], axis=0)
        if k_of and offsets[-1]
        else np.zeros((0, n_tags), dtype=np.float32)
    )
    flat = np.ascontiguousarray(flat)
    if flat.shape[0]:
        bad = cast(np.ndarray, ~np.isfinite(flat).all(axis=1))
        bad |= (flat < -tol).any(axis=1)
        sums = flat.sum(axis=1, dtype=np.float64)
        bad_sum = np.abs(sums - 1.0) > tol
        rows = np.flatnonzero(bad | bad_sum)
        if rows.size:
            r = int(rows[0])
            j = int(np.searchsorted(offsets, r, side="right") - 1)
            task = tasks[int(scored[j])]
            tok = r - int(offsets[j])
            if bad[r]:
                raise ValueError(
                    f"{_task_name(task)}: token {tok} has NaN, infinite or negative probabilities"
                )
            raise ValueError(
                f"{_task_name(task)}: token {tok} probabilities sum to {sums[r]:.4f}, not 1 "
                f"(tolerance {tol}); pass softmax probabilities, not logits"
            )
    return _Flat(scored, offsets, flat)


# ----------------------------------------------------------------------------- gold tags
def _range_indices(t0: np.ndarray, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All positions of half-open ranges ``[t0_i, t1_i)`` and the range each belongs to."""
    length = np.maximum(np.asarray(t1) - np.asarray(t0), 0)
    owner = np.repeat(np.arange(len(length)), length)
    first = np.repeat(np.cumsum(length) - length, length)
    pos = np.repeat(t0, length) + (np.arange(int(length.sum())) - first)
    return pos.astype(np.int64), owner


def _range_max(values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Max of ``values`` over sorted, non-overlapping, non-empty ranges ``[t0_i, t1_i)``."""
    if len(t0) == 0:
        return np.zeros(0, dtype=np.float64)
    v = np.append(np.asarray(values, dtype=np.float64), -np.inf)
    idx = np.empty(2 * len(t0), dtype=np.int64)
    idx[0::2], idx[1::2] = t0, t1
    return np.maximum.reduceat(v, idx)[0::2]




@dataclass(frozen=True)
class _Gold:
    tags: np.ndarray  # (N,) gold tag column per token
    span_task: np.ndarray  # (n,) dataset task index
    span_t0: np.ndarray  # (n,) global token start
    span_t1: np.ndarray  # (n,) global token end (exclusive)
    span_label: np.ndarray  # (n,) index into dataset labels
    span_start: np.ndarray  # (n,) char start
    span_end: np.ndarray  # (n,) char end


def _gold_tags(
    dataset: Any, flat: _Flat, tags: tuple[str, ...]
) -> tuple[_Gold, np.ndarray, np.ndarray]:
    """Gold IOB2 tag column of every flattened token, vectorised over the dataset.

    Also returns the global character start/end of every flattened token (for mapping back).
    """
    tasks = dataset.tasks
    labels = tuple(dataset.labels)
    scored = flat.tasks.tolist()
    # one number line: task j's characters live at [base_j, base_j + len(text_j))
    text_len = np.fromiter((len(tasks[t].text) + 1 for t in scored), dtype=np.int64,
                           count=len(scored))
    base = np.zeros(len(scored), dtype=np.int64)
    if len(scored) > 1:
        base[1:] = np.cumsum(text_len[:-1])
    n_tok = np.diff(flat.offsets)
    if flat.offsets[-1]:
        tok_base = np.repeat(base, n_tok)
        tok_s = np.concatenate([tasks[t].tokens.starts for t in scored]).astype(np.int64)
        tok_e = np.concatenate([tasks[t].tokens.ends for t in scored]).astype(np.int64)
    else:
        tok_base = tok_s = tok_e = np.zeros(0, dtype=np.int64)
    gs_tok, ge_tok = tok_s + tok_base, tok_e + tok_base

    lab_id = {lab: i for i, lab in enumerate(labels)}
    st, en, lb, tj = [], [], [], []
    for j, t in enumerate(scored):
        for s in tasks[t].gold or ():
            if s.label not in lab_id:
                raise ValueError(
                    f"{_task_name(tasks[t])}: gold label {s.label!r} is not a dataset label "
                    f"{list(labels)}"
                )
            st.append(s.start)
            en.append(s.end)
            lb.append(lab_id[s.label])
            tj.append(j)
    st_a = np.asarray(st, dtype=np.int64)
    en_a = np.asarray(en, dtype=np.int64)
    lb_a = np.asarray(lb, dtype=np.int64)
    tj_a = np.asarray(tj, dtype=np.int64)
    order = np.lexsort((en_a, st_a, tj_a))
    st_a, en_a, lb_a, tj_a = st_a[order], en_a[order], lb_a[order], tj_a[order]
    gs, ge = st_a + base[tj_a], en_a + base[tj_a]
    t0 = np.searchsorted(ge_tok, gs, side="right")
    t1 = np.searchsorted(gs_tok, ge, side="left")
    # token ranges must stay inside the span's task
    t0 = np.maximum(t0, flat.offsets[tj_a])
    t1 = np.minimum(t1, flat.offsets[tj_a + 1])
    keep = t1 > t0
    t0c = np.minimum(t0, max(len(gs_tok) - 1, 0))
    t1c = np.maximum(t1 - 1, 0)
    misaligned = keep & ((gs_tok[t0c] != gs) | (ge_tok[t1c] != ge)) if len(gs_tok) else keep
    # two misaligned spans snapping onto the same token: keep the first
    same_task_prev = np.zeros(len(keep), dtype=bool)
    if len(keep) > 1:
        prev_end = np.maximum.accumulate(np.where(keep, t1, -1))
        same_task_prev[1:] = (tj_a[1:] == tj_a[:-1]) & (t0[1:] < prev_end[:-1])
    clash = keep & same_task_prev
    n_empty, n_mis, n_clash = int((~keep).sum()), int(misaligned.sum()), int(clash.sum())
    if n_empty or n_mis or n_clash:
        first = int(np.flatnonzero(~keep | misaligned | clash)[0])
        warnings.warn(
            f"DEP: {n_mis} gold span(s) do not line up with token boundaries (scored on the "
            f"tokens they touch), {n_empty} cover no token and {n_clash} share tokens with "
            f"another span (both left out); first: {_task_name(tasks[scored[tj_a[first]]])} "
            f"span [{st_a[first]}, {en_a[first]})",
            stacklevel=3,
        )
    keep &= ~clash
    st_a, en_a, lb_a, tj_a, t0, t1 = (a[keep] for a in (st_a, en_a, lb_a, tj_a, t0, t1))

    col = {t: i for i, t in enumerate(tags)}
    missing = [lab for lab in labels if f"B-{lab}" not in col]
    b_col = np.array([col.get(f"B-{lab}", -1) for lab in labels], dtype=np.int64)
    i_col = np.array([col.get(f"I-{lab}", -1) for lab in labels], dtype=np.int64)
    if missing and len(lb_a):
        bad = np.flatnonzero(b_col[lb_a] < 0)
        if bad.size:
            j = int(bad[0])
            raise ValueError(
                f"{_task_name(tasks[scored[tj_a[j]]])}: gold label {labels[lb_a[j]]!r} has no "
                f"B-/I- column in the tag list {list(tags)}"
            )
    gold = np.full(int(flat.offsets[-1]), col["O"], dtype=np.int64)
    gold[t0] = b_col[lb_a]
    inner, owner = _range_indices(t0 + 1, t1)
    gold[inner] = i_col[lb_a][owner]
    g = _Gold(gold, flat.tasks[tj_a], t0, t1, lb_a, st_a, en_a)
    return g, tok_s, tok_e


# ------------------------------------------------------------------------------- margins


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
    probs = np.asarray(probs, dtype=np.float32)
    n = probs.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.float32)
    rows = np.arange(n)
    pg = probs[rows, gold]
    other = probs.copy()
    other[rows, gold] = -np.inf
    return (pg - other.max(axis=1)).astype(np.float32)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    z = np.asarray(z, dtype=np.float64)
    out: np.ndarray = np.where(z >= 0, 1.0 / (1.0 + np.exp(-np.abs(z))),
                               np.exp(-np.abs(z)) / (1.0 + np.exp(-np.abs(z))))
    return out


def _range_mean(values: np.ndarray, t0: np.ndarray, t1: np.ndarray) -> np.ndarray:
    """Mean of ``values`` over sorted, non-overlapping, non-empty ranges ``[t0_i, t1_i)``."""
    if len(t0) == 0:
        return np.zeros(0, dtype=np.float64)
    v = np.append(np.asarray(values, dtype=np.float64), 0.0)
    idx = np.empty(2 * len(t0), dtype=np.int64)
    idx[0::2], idx[1::2] = t0, t1
    out: np.ndarray = np.add.reduceat(v, idx)[0::2] / (np.asarray(t1) - np.asarray(t0))
    return out


def _span_features(sig: Mapping[str, np.ndarray], log_margin: np.ndarray, t0: np.ndarray,
                   t1: np.ndarray, kind: np.ndarray) -> np.ndarray:
    """(n_spans, len(SPAN_FEATURES)) feature rows of the gold spans (see analysis.dep.errormodel)."""
    kind = np.asarray(kind, dtype=object)
    cols = {
        "margin": logit(sig["margin"]),
        "log_margin_max": _range_max(log_margin, t0, t1),
        "log_margin_mean": _range_mean(log_margin, t0, t1),
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


def _token_features(sig: Mapping[str, np.ndarray], log_margin: np.ndarray, rows: np.ndarray,
                    token_text: np.ndarray, offsets: np.ndarray,
                    p_o: np.ndarray) -> np.ndarray:
    """(len(rows), len(TOKEN_FEATURES)) feature rows of the flat tokens ``rows``."""
    if rows.size == 0:
        return np.zeros((0, len(TOKEN_FEATURES)), dtype=np.float64)
    initial = np.zeros(len(log_margin), dtype=bool)
    starts = np.asarray(offsets[:-1])[np.diff(offsets) > 0]
    initial[starts] = True
    text = pd.Series(np.asarray(token_text, dtype=object)[rows])
    cols = {
        "margin": logit(np.asarray(sig["margin"])[rows]),
        "log_margin": np.asarray(log_margin, dtype=np.float64)[rows],
        "surface": np.asarray(sig["surface"], dtype=np.float64)[rows],
        "disagreement": np.asarray(sig["disagreement"], dtype=np.float64)[rows],
        "capitalized": text.str[:1].str.isupper().fillna(False).to_numpy(dtype=bool),
        "sentence_initial": initial[rows],
        "entity": logit(1.0 - np.asarray(p_o, dtype=np.float64)[rows]),
    }
    return np.column_stack([np.asarray(cols[f], dtype=np.float64) for f in TOKEN_FEATURES])


# --------------------------------------------------------------------------- aggregation


def aggregate_units(
    unit_task: np.ndarray,
    unit_score: np.ndarray,
    n_tasks: int,
    *,
    method: Aggregate = "max",
    unit_weight: np.ndarray | None = None,
) -> np.ndarray:
    """Aggregate unit scores (spans, ``O`` tokens) into one score per task.

    Parameters
    ----------
    unit_task : (U,) int, task index of each unit
    unit_score : (U,) float in [0, 1]
    n_tasks : length of the output
    method : ``"max"``; ``"mean"``; ``"noisy_or"`` (``1 − Π(1 − s)``); ``"top2"`` (mean of the
        two highest); ``"length_weighted"`` (mean weighted by ``unit_weight``, e.g. tokens per
        unit)
    unit_weight : (U,) float, only for ``"length_weighted"`` (default 1)

    Returns
    -------
    (n_tasks,) float64; NaN for tasks without units.

    >>> aggregate_units(np.array([0, 0, 2]), np.array([0.2, 0.6, 0.1]), 3).tolist()
    [0.6, nan, 0.1]
    """
    if method not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {method!r}")
    task = np.asarray(unit_task, dtype=np.int64)
    s = np.clip(np.asarray(unit_score, dtype=np.float64), 0.0, 1.0)
    out = np.full(n_tasks, np.nan)
    if task.size == 0:
        return out
    cnt = np.bincount(task, minlength=n_tasks)
    has = cnt > 0
    if method == "max":
        np.fmax.at(out, task, s)
    elif method == "mean":
        out[has] = np.bincount(task, weights=s, minlength=n_tasks)[has] / cnt[has]
    elif method == "noisy_or":
        logkeep = np.bincount(task, weights=np.log1p(-np.minimum(s, 1 - 1e-12)), minlength=n_tasks)
        out[has] = -np.expm1(logkeep[has])
    elif method == "top2":
        order = np.lexsort((-s, task))
        ts, ss = task[order], s[order]
        first = np.r_[True, ts[1:] != ts[:-1]]
        grp_start = np.maximum.accumulate(np.where(first, np.arange(len(ts)), 0))
        rank = np.arange(len(ts)) - grp_start
        top = rank < 2
        num = np.bincount(ts[top], weights=ss[top], minlength=n_tasks)
        den = np.bincount(ts[top], minlength=n_tasks)
        out[has] = num[has] / den[has]
    else:  # length_weighted
        w = np.ones_like(s) if unit_weight is None else np.asarray(unit_weight, dtype=np.float64)
        num = np.bincount(task, weights=w * s, minlength=n_tasks)
        den = np.bincount(task, weights=w, minlength=n_tasks)
        out[has] = num[has] / np.where(den[has] > 0, den[has], 1.0)
    return out


# ---------------------------------------------------------------------------- thresholds


@dataclass(frozen=True)
class Thresholds:
    """Per-dataset DEP thresholds: ``dep < easy`` easy, ``dep >= mislabeled`` likely
    mislabeled, hard in between.  ``method`` says how they were derived."""

    easy: float
    mislabeled: float
    method: str

    def categorize(self, dep: np.ndarray) -> np.ndarray:
        """(n,) object array of ``"easy"`` / ``"hard"`` / ``"mislabeled"`` (None for NaN)."""
        d = np.asarray(dep, dtype=np.float64)
        out = np.where(d >= self.mislabeled, "mislabeled", np.where(d < self.easy, "easy", "hard"))
        out = out.astype(object)
        out[np.isnan(d)] = None
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"easy": float(self.easy), "mislabeled": float(self.mislabeled),
                "method": self.method}


def fit_thresholds(task_dep: np.ndarray, disagrees: np.ndarray, *,
                   method: Literal["youden", "expected_fbeta"] = "youden",
                   beta: float = 2.0) -> Thresholds:
    """Derive easy / mislabeled-likely thresholds from one dataset's task DEPs.

    Parameters
    ----------
    task_dep : (n,) float, NaN entries are ignored
    disagrees : (n,) bool, the model's argmax decoding disagrees with the task's gold spans
    method : how ``mislabeled`` is placed (``easy`` is the same for both)
    beta : the F-beta of ``"expected_fbeta"`` (2: recall weighs twice as much as precision —
        a review queue should rather show a few clean tasks than hide errors)

    ``"youden"``: ``mislabeled`` is the cut maximising Youden's J (TPR − FPR) for predicting
    ``disagrees`` from DEP, placed midway between the two neighbouring DEP values — for DEPs
    that are scores, not probabilities (``scorer="signals"``).
    ``"expected_fbeta"``: DEPs are error probabilities (``scorer="model"``); the cut maximises
    the *expected* F-beta of flagging, ``(1 + β²) · Σ_{flagged} dep / (n_flagged + β² · Σ_all
    dep)`` — the dataset's own expected number of errors decides how many tasks are worth
    flagging.
    ``easy`` is the median DEP of the tasks the model agrees with (capped at ``mislabeled``).
    When every scored task agrees, or every one disagrees, the 0.9 and 0.5 quantiles of the DEP
    distribution are used instead.

    >>> th = fit_thresholds(np.array([0.1, 0.2, 0.3, 0.7, 0.9]), np.array([0, 0, 0, 1, 1], bool))
    >>> round(th.mislabeled, 2), round(th.easy, 2), th.method
    (0.5, 0.2, 'youden')
    """
    d = np.asarray(task_dep, dtype=np.float64)
    y = np.asarray(disagrees, dtype=bool)
    ok = ~np.isnan(d)
    d, y = d[ok], y[ok]
    if d.size == 0:
        return Thresholds(float("nan"), float("nan"), "empty")
    if method not in ("youden", "expected_fbeta"):
        raise ValueError(f"method must be 'youden' or 'expected_fbeta', got {method!r}")
    if not beta > 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    n_pos, n_neg = int(y.sum()), int((~y).sum())
    if n_pos == 0 or n_neg == 0:
        t_mis = float(np.quantile(d, 0.9))
        t_easy = float(np.quantile(d, 0.5))
        return Thresholds(min(t_easy, t_mis), t_mis, "quantile")
    order = np.argsort(-d, kind="stable")
    ds, ys = d[order], y[order]
    # a cut is only valid between distinct values
    valid = np.r_[ds[1:] < ds[:-1], True]
    if method == "youden":
        tpr = np.cumsum(ys) / n_pos
        fpr = np.cumsum(~ys) / n_neg
        j = np.where(valid, tpr - fpr, -np.inf)
    else:
        p = np.clip(ds, 0.0, 1.0)
        b2 = beta * beta
        j = np.where(valid, (1.0 + b2) * np.cumsum(p) / (np.arange(1, len(p) + 1) + b2 * p.sum()),
                     -np.inf)
    best = int(np.argmax(j))
    t_mis = float((ds[best] + ds[best + 1]) / 2) if best + 1 < len(ds) else float(ds[best])
    t_easy = float(np.median(d[~y]))
    return Thresholds(min(t_easy, t_mis), t_mis, method)


# ------------------------------------------------------------------------------- result


@dataclass(frozen=True)
class DepResult:
    """Everything :func:`compute_dep` found.

    Attributes
    ----------
    task_dep : (n_tasks,) float64 in [0, 1]; NaN for unannotated tasks
    category : (n_tasks,) object, ``"easy"`` / ``"hard"`` / ``"mislabeled"`` (None: NaN DEP)
    thresholds : Thresholds
    token_dep : (N,) float32, unit DEP of every token of the scored tasks, flattened (a token
        inside a gold span carries its span's DEP)
    token_margin_dep : (N,) float32, ``(1 − margin) / 2`` per token (no other signal)
    token_offsets : (n_tasks + 1,) int64, task ``i``'s tokens are
        ``token_dep[token_offsets[i]:token_offsets[i + 1]]`` (empty for unscored tasks)
    spans : DataFrame, one row per gold span and per ghost prediction, sorted by task and
        offset: ``task, task_id, start, end`` (char, half-open), ``token_start, token_end``,
        ``text, gold_label`` (None for ghosts), ``pred_label`` (overlapping argmax prediction,
        None if none), ``kind`` (error type vs the argmax prediction, one of
        :data:`analysis.errors.KINDS`), ``dep`` and one column per signal
    task_errors : (n_tasks, 5) int64, per task counts of ``KINDS`` (gold kinds + ghosts)
    signals : DataFrame (n_tasks rows), per-task max of each signal
    tags : tag columns of the probabilities
    aggregate : how unit scores became task scores
    weights : signal weights used by :func:`analysis.dep.signals.combine` (``scorer="signals"``)
    scorer : ``"model"`` (the learned error model, :mod:`analysis.dep.errormodel`) or ``"signals"``
        (weighted noisy-OR of the signals plus per-unit-type calibration)
    units : with ``return_units=True`` and ``scorer="model"``: per unit type the feature
        matrix ``x`` and where each unit is (``task``; ``token_start``/``token_end`` for spans,
        ``token`` for O tokens, task-local token indices) — what fitting an error model needs
    """

    task_dep: np.ndarray
    category: np.ndarray
    thresholds: Thresholds
    token_dep: np.ndarray
    token_margin_dep: np.ndarray
    token_offsets: np.ndarray
    spans: pd.DataFrame
    task_errors: np.ndarray
    signals: pd.DataFrame
    tags: tuple[str, ...]
    aggregate: str
    weights: Mapping[str, float] = field(default_factory=dict)
    scorer: str = "signals"
    units: Mapping[str, Any] | None = None

    def task_spans(self, i: int) -> list[dict[str, Any]]:
        """Span records of task ``i`` as plain dicts (JSON-ready)."""
        return self._span_records(self.spans[self.spans["task"] == i])

    @staticmethod
    def _span_records(rows: pd.DataFrame) -> list[dict[str, Any]]:
        cols = ["start", "end", "text", "gold_label", "pred_label", "kind", "dep", "suspect"]
        out = []
        for rec in rows[cols].to_dict(orient="records"):
            rec["start"], rec["end"] = int(rec["start"]), int(rec["end"])
            rec["dep"] = round(float(rec["dep"]), 6)
            out.append(rec)
        return out

    def task_records(self, tasks: Sequence[Any] | None = None) -> list[dict[str, Any]]:
        """One JSON-ready dict per task: ``index, id, dep, category, errors, spans``.

        ``tasks`` (the dataset's tasks) supplies the ids; without it ``id`` comes from the
        span table where the task has spans, else ``None``.
        """
        sp = self.spans
        cols = {c: sp[c].tolist() for c in
                ("task", "start", "end", "text", "gold_label", "pred_label", "kind", "dep",
                 "suspect")}
        per_task: dict[int, list[dict[str, Any]]] = {}
        for t, s, e, tx, gl, pl, kd, d, su in zip(*cols.values()):
            per_task.setdefault(int(t), []).append(
                {"start": int(s), "end": int(e), "text": tx, "gold_label": gl, "pred_label": pl,
                 "kind": kd, "dep": round(float(d), 6), "suspect": su}
            )
        ids = sp.groupby("task", sort=False)["task_id"].first().to_dict() if tasks is None else {}
        dep = self.task_dep.tolist()
        cat = self.category.tolist()
        err = self.task_errors[:, 1:].tolist()
        kinds = KINDS[1:]
        out = []
        for i in range(len(dep)):
            d = dep[i]
            out.append(
                {
                    "index": i,
                    "id": tasks[i].id if tasks is not None else ids.get(i),
                    "dep": None if d != d else round(d, 6),
                    "category": cat[i],
                    "errors": dict(zip(kinds, err[i])),
                    "spans": per_task.get(i, []),
                }
            )
        return out

    def ranking(self) -> np.ndarray:
        """Scored task indices, most suspicious first (ties keep task order)."""
        d = self.task_dep
        idx = np.flatnonzero(~np.isnan(d))
        return idx[np.argsort(-d[idx], kind="stable")]

    def summary(self) -> dict[str, Any]:
        d = self.task_dep[~np.isnan(self.task_dep)]
        cats = pd.Series(self.category).value_counts()
        err = self.task_errors.sum(axis=0) if self.task_errors.size else np.zeros(5, int)
        return {
            "tasks": int(self.task_dep.shape[0]),
            "scored": int(d.size),
            "spans": int((self.spans["kind"] != "ghost").sum()),
            "mean_dep": float(d.mean()) if d.size else None,
            "median_dep": float(np.median(d)) if d.size else None,
            "categories": {c: int(cats.get(c, 0)) for c in CATEGORIES},
            "errors_vs_model": {k: int(v) for k, v in zip(KINDS, err)},
            "aggregate": self.aggregate,
            "scorer": self.scorer,
            "weights": {k: float(v) for k, v in self.weights.items()},
        }


# -------------------------------------------------------------------------------- compute


def compute_dep(
    dataset: Any,
    probs: Sequence[np.ndarray],
    *,
    tags: Sequence[str],
    epochs_probs: Sequence[Sequence[np.ndarray]] | None = None,
    span_embeddings: np.ndarray | None = None,
    aggregate: Aggregate = "max",
    weights: Mapping[str, float] | None = None,
    neighbours: int = 10,
    tol: float = 1e-3,
    calibration: Mapping[str, tuple[float, float]] | None = None,
    scorer: Scorer | None = None,
    error_model: ErrorModel | None = None,
    return_units: bool = False,
) -> DepResult:
    """Score every annotated task of ``dataset`` for label errors.

    Parameters
    ----------
    dataset : analysis.dataset.Dataset
    probs : one (n_tokens, n_tags) array per task (or per annotated task), in task order: the
        final, out-of-sample probabilities; argmax-decoded for error types and ghost spans
    tags : column names of the arrays (IOB2, normally ``tag_names(dataset.labels)``)
    epochs_probs : optional probability sets of several training epochs (same layout); when
        given, the margin signal is averaged over these sets (AUM) instead of taken from ``probs``
    span_embeddings : optional (n_gold_spans, dim) embeddings, one row per gold span in
        ``dataset.gold_table()`` order; enables the ``neighbour`` signal
    aggregate : task aggregation of unit scores (see :func:`aggregate_units`)
    weights : signal weights for :func:`analysis.dep.signals.combine` (default
        :data:`analysis.dep.signals.DEFAULT_WEIGHTS`)
    neighbours : ``k`` of the neighbour signal
    tol : tolerance of the row sums of ``probs``
    calibration : unit type (``"span"``, ``"o"``, ``"o_boundary"``) → ``(a, b)`` of
        :func:`analysis.dep.signals.calibrate`, applied to the combined signals of each unit before
        aggregation; default :data:`analysis.dep.signals.DEFAULT_CALIBRATION`; ``{}`` = identity
    scorer : ``"model"`` — each unit's DEP is its error probability under the learned error
        model (:mod:`analysis.dep.errormodel`, default when neither ``weights`` nor
        ``calibration`` is given); ``"signals"`` — the weighted noisy-OR of the signals
        (``weights``) mapped by the per-unit-type ``calibration`` (the earlier scorer, kept for
        ablations and explicit weighting)
    error_model : the error model of ``scorer="model"`` (default
        :func:`analysis.dep.errormodel.default_error_model`, fitted by ``bench/fit_error_model.py``)
    return_units : also return the unit feature matrices (``DepResult.units``), for fitting

    Returns
    -------
    DepResult

    Raises
    ------
    ValueError, TypeError
        Bad probabilities or tags (see :func:`validate_probs`), naming the task.
    """
    tags = _check_tags(dataset, tags)
    if scorer is None:
        scorer = "signals" if (weights is not None or calibration is not None) else "model"
    if scorer not in SCORERS:
        raise ValueError(f"scorer must be one of {SCORERS}, got {scorer!r}")
    if scorer == "model" and (weights is not None or calibration is not None):
        raise ValueError("weights and calibration belong to scorer='signals'; the error model "
                         "(scorer='model') has its own coefficients")
    if error_model is not None and not isinstance(error_model, ErrorModel):
        raise TypeError(f"error_model must be an analysis.dep.errormodel.ErrorModel, "
                        f"got {type(error_model).__name__}")
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    flat = _validate(dataset, probs, tags, tol=tol)
    tasks = dataset.tasks
    n_tasks = len(tasks)
    gold, tok_s, tok_e = _gold_tags(dataset, flat, tags)
    n_tok = int(flat.offsets[-1])
    tok_task = np.repeat(flat.tasks, np.diff(flat.offsets))  # dataset task index per token

    # ---- margin (AUM over epochs when given)
    if epochs_probs:
        margins = []
        for e, ep in enumerate(epochs_probs):
            try:
                fe = _validate(dataset, ep, tags, tol=tol)
            except ValueError as exc:
                raise ValueError(f"epoch {e}: {exc}") from None
            if not np.array_equal(fe.offsets, flat.offsets):
                raise ValueError(f"epoch {e}: probability arrays do not match the final ones")
            margins.append(token_margins(fe.probs, gold.tags))
        margin = np.mean(margins, axis=0).astype(np.float32)
    else:
        margin = token_margins(flat.probs, gold.tags)
    margin_dep = ((1.0 - margin) / 2.0).astype(np.float32)
    disagree = model_disagreement(flat.probs, gold.tags)

    # ---- surface-form consistency
    o_col = tags.index("O")
    is_o = gold.tags == o_col
    token_text = np.concatenate(
        [np.asarray(tasks[t].tokens.tokens, dtype=object) for t in flat.tasks.tolist()]
    ) if n_tok else np.zeros(0, dtype=object)
    surf_span, surf_tok = surface_consistency(
        token_text, tok_task, is_o, gold.span_t0, gold.span_t1, gold.span_label
    )

    # ---- neighbour label consistency (gold spans only)
    n_span = len(gold.span_t0)
    neigh = np.full(n_span, np.nan, dtype=np.float32)
    if span_embeddings is not None:
        emb = np.asarray(span_embeddings)
        table = dataset.gold_table()
        if emb.ndim != 2 or emb.shape[0] != len(table):
            raise ValueError(
                f"span_embeddings must have one row per gold span ({len(table)}), "
                f"got shape {emb.shape}"
            )
        # gold_table rows -> our (scored, token-aligned) span rows
        key_t = pd.MultiIndex.from_arrays([table.task, table.start, table.end])
        key_o = pd.MultiIndex.from_arrays([gold.span_task, gold.span_start, gold.span_end])
        pos = key_t.get_indexer(key_o)
        if (pos < 0).any():
            raise ValueError("internal: gold span not found in dataset.gold_table()")
        neigh = neighbour_disagreement(emb[pos], gold.span_label, k=neighbours)

    # ---- per-unit signals: gold spans (max over their tokens) and gold-O tokens
    inside = np.zeros(n_tok, dtype=bool)
    span_tok, span_owner = _range_indices(gold.span_t0, gold.span_t1)
    inside[span_tok] = True
    span_margin = _range_max(margin_dep, gold.span_t0, gold.span_t1)
    span_dis = _range_max(disagree, gold.span_t0, gold.span_t1)
    labels_ = tuple(dataset.labels)
    b_cols = np.array([tags.index(f"B-{lab}") if f"B-{lab}" in tags else -1 for lab in labels_])
    i_cols = np.array([tags.index(f"I-{lab}") if f"I-{lab}" in tags else -1 for lab in labels_])
    span_type = type_disagreement(flat.probs, gold.span_t0, gold.span_t1, gold.span_label,
                                  b_cols, i_cols)
    span_sig = {
        "margin": span_margin,
        "disagreement": span_dis,
        "surface": surf_span,
        "neighbour": neigh,
        "type": span_type,
        "outside": _range_max(flat.probs[:, o_col], gold.span_t0, gold.span_t1),
    }
    tok_sig = {
        "margin": margin_dep,
        "disagreement": disagree,
        "surface": surf_tok,
        "neighbour": np.zeros(n_tok, dtype=np.float32),
        "type": np.zeros(n_tok, dtype=np.float32),
        "outside": np.zeros(n_tok, dtype=np.float32),
    }
    # ---- argmax predictions, error types (token offsets; align works on any half-open units)
    pt, p0, p1, pl = [], [], [], []
    # One decode over all tasks: a certain-"O" row after every task keeps spans inside their
    # task (an I- after O begins a new span, exactly as at a sequence start).
    n_sc = len(flat.tasks)
    if n_tok:
        sep_at = flat.offsets[1:] + np.arange(n_sc)  # row of each separator in the padded array
        padded = np.zeros((n_tok + n_sc, len(tags)), dtype=np.float32)
        is_sep = np.zeros(n_tok + n_sc, dtype=bool)
        is_sep[sep_at] = True
        padded[~is_sep] = flat.probs
        padded[sep_at, o_col] = 1.0
        dec, _ = decode_probs(padded, tags)
        shift = np.cumsum(is_sep) - is_sep  # separators before each padded row
        for sp in dec:
            g0 = sp.start - int(shift[sp.start])
            p0.append(g0)
            p1.append(sp.end - int(shift[sp.start]))
            pl.append(sp.label)
        p0_a = np.asarray(p0, dtype=np.int64)
        pt = flat.tasks[np.searchsorted(flat.offsets, p0_a, side="right") - 1].tolist()
    labels = tuple(dataset.labels)
    pred_labels = tuple(dict.fromkeys(list(labels) + sorted(set(pl) - set(labels))))
    plid = {lab: i for i, lab in enumerate(pred_labels)}
    gold_tab = SpanTable.from_arrays(gold.span_task, gold.span_t0, gold.span_t1,
                                     gold.span_label, labels)
    pred_tab = SpanTable.from_arrays(
        np.asarray(pt, dtype=np.int64), np.asarray(p0, dtype=np.int64),
        np.asarray(p1, dtype=np.int64), np.asarray([plid[x] for x in pl], dtype=np.int32),
        pred_labels,
    )
    al = align(gold_tab, pred_tab, n_tasks=n_tasks)
    # align re-sorts by (task, start, end): our gold rows already are in that order
    g_kind = np.asarray(KINDS, dtype=object)[al.gold_kind]
    first_pair = np.full(n_span, -1, dtype=np.int64)
    if al.n_pairs:
        uniq, first_idx = np.unique(al.pair_gold, return_index=True)
        first_pair[uniq] = al.pair_pred[first_idx]
    al_labels = np.asarray(al.labels, dtype=object)
    # numpy's stub rejects None (an object scalar) as a branch; at runtime it broadcasts fine
    g_pred_label = np.where(first_pair >= 0,  # type: ignore[call-overload]
                            al_labels[al.pred.label[np.maximum(first_pair, 0)]]
                            if len(al.pred) else None, None)

    # ---- per-unit-type calibration onto one scale (see analysis.dep.signals.calibrate)
    boundary = np.zeros(n_tok, dtype=bool)
    if n_span:
        before = gold.span_t0 - 1
        ok = (before >= 0) & (tok_task[np.maximum(before, 0)] == gold.span_task)
        boundary[before[ok]] = True
        after = gold.span_t1
        ok = (after < n_tok) & (tok_task[np.minimum(after, max(n_tok - 1, 0))] == gold.span_task)
        boundary[after[ok]] = True
    boundary &= ~inside
    o_tok = np.flatnonzero(~inside)
    span_base = flat.offsets[np.searchsorted(flat.tasks, gold.span_task)]
    suspect_span = np.full(n_span, None, dtype=object)
    units: dict[str, Any] | None = None
    if scorer == "signals":
        cal = dict(DEFAULT_CALIBRATION if calibration is None else calibration)
        span_score = calibrate(combine(span_sig, w), "span", cal).astype(np.float64)
        tok_raw = combine(tok_sig, w)
        tok_score = np.where(boundary, calibrate(tok_raw, "o_boundary", cal),
                             calibrate(tok_raw, "o", cal)).astype(np.float64)
    else:
        em = default_error_model() if error_model is None else error_model
        # log max p(other) − log p(gold); float32 is ample (probabilities ≥ ~1e-30)
        other = np.array(flat.probs, dtype=np.float32)
        rows = np.arange(n_tok)
        pg = other[rows, gold.tags].astype(np.float64)
        other[rows, gold.tags] = -np.inf
        log_margin = (np.log(np.maximum(other.max(axis=1).astype(np.float64), 1e-12))
                      - np.log(np.maximum(pg, 1e-12))) if n_tok else np.zeros(0)
        del other
        span_x = _span_features(span_sig, log_margin, gold.span_t0, gold.span_t1, g_kind)
        tok_x = _token_features(tok_sig, log_margin, o_tok, token_text, flat.offsets,
                                flat.probs[:, o_col])
        span_z = em.error_log_odds("span", span_x)
        tok_z = np.zeros(n_tok, dtype=np.float64)
        b_o = boundary[o_tok]
        if o_tok.size:
            tok_z[o_tok] = np.where(b_o, em.error_log_odds("o_boundary", tok_x),
                                    em.error_log_odds("o", tok_x))
        span_score = _sigmoid(span_z)
        tok_score = _sigmoid(tok_z)
        tok_score[inside] = 0.0
        if n_span:
            suspect_span = em.suspected("span", span_x)
        if return_units:
            tt = tok_task[o_tok]
            local = o_tok - flat.offsets[np.searchsorted(flat.tasks, tt)]
            units = {"span": {"x": span_x, "task": gold.span_task,
                              "token_start": gold.span_t0 - span_base,
                              "token_end": gold.span_t1 - span_base}}
            for name, m in (("o_boundary", b_o), ("o", ~b_o)):
                units[name] = {"x": tok_x[m], "task": tt[m], "token": local[m]}

    unit_task = np.concatenate([gold.span_task, tok_task[o_tok]])
    unit_score = np.concatenate([span_score, tok_score[o_tok]])
    unit_len = np.concatenate([gold.span_t1 - gold.span_t0, np.ones(len(o_tok), dtype=np.int64)])
    task_dep = aggregate_units(unit_task, unit_score, n_tasks, method=aggregate,
                               unit_weight=unit_len)
    # annotated tasks with no token at all: nothing can be wrong
    scored_mask = np.zeros(n_tasks, dtype=bool)
    scored_mask[flat.tasks] = True
    task_dep[scored_mask & np.isnan(task_dep)] = 0.0

    # token DEP: O tokens their own unit score, span tokens their span's
    token_dep = tok_score.astype(np.float32)
    token_dep[span_tok] = span_score[span_owner]

    # ---- span table
    texts = [tasks[t].text for t in gold.span_task.tolist()]
    gold_df = pd.DataFrame(
        {
            "task": gold.span_task,
            "start": gold.span_start,
            "end": gold.span_end,
            "token_start": gold.span_t0 - span_base,
            "token_end": gold.span_t1 - span_base,
            "text": [tx[s:e] for tx, s, e in zip(texts, gold.span_start.tolist(),
                                                 gold.span_end.tolist())],
            "gold_label": np.asarray(labels, dtype=object)[gold.span_label]
            if n_span else np.zeros(0, dtype=object),
            "pred_label": g_pred_label,
            "kind": g_kind,
            "dep": span_score.astype(np.float64),
            "suspect": suspect_span,
            **{f"sig_{k}": np.asarray(v, dtype=np.float64) for k, v in span_sig.items()},
        }
    )
    ghost = np.flatnonzero(al.pred_kind == KINDS.index("ghost"))
    gh_t0, gh_t1 = al.pred.start[ghost], al.pred.end[ghost]
    gh_task = al.pred.task[ghost]
    gh_dep = _range_max(tok_score, gh_t0, gh_t1)
    gh_sig = {k: _range_max(v, gh_t0, gh_t1) for k, v in tok_sig.items()}
    gh_cs = tok_s[gh_t0] if ghost.size else np.zeros(0, dtype=np.int64)
    gh_ce = tok_e[gh_t1 - 1] if ghost.size else np.zeros(0, dtype=np.int64)
    gh_off = flat.offsets[np.searchsorted(flat.tasks, gh_task)] if ghost.size else gh_t0
    ghost_df = pd.DataFrame(
        {
            "task": gh_task,
            "start": gh_cs,
            "end": gh_ce,
            "token_start": gh_t0 - gh_off,
            "token_end": gh_t1 - gh_off,
            "text": [tasks[t].text[s:e] for t, s, e in zip(gh_task.tolist(), gh_cs.tolist(),
                                                          gh_ce.tolist())],
            "gold_label": np.full(ghost.size, None, dtype=object),
            "pred_label": al_labels[al.pred.label[ghost]] if ghost.size else np.zeros(0, object),
            "kind": np.full(ghost.size, "ghost", dtype=object),
            "dep": gh_dep.astype(np.float64),
            "suspect": np.full(ghost.size, None, dtype=object),
            **{f"sig_{k}": np.asarray(v, dtype=np.float64) for k, v in gh_sig.items()},
        }
    )
    spans_df = pd.concat([gold_df, ghost_df], ignore_index=True)
    spans_df = spans_df.sort_values(["task", "start", "end"], kind="stable").reset_index(drop=True)
    ids = np.asarray([tasks[t].id for t in spans_df["task"].tolist()], dtype=object)
    spans_df.insert(1, "task_id", ids)

    # ---- per-task signal maxima (for explanations and the ablation)
    sig_task = {}
    for k in span_sig:
        u = np.concatenate([np.nan_to_num(np.asarray(span_sig[k], dtype=np.float64)),
                            np.asarray(tok_sig[k], dtype=np.float64)[o_tok]])
        sig_task[k] = aggregate_units(unit_task, u, n_tasks, method="max")
    signals_df = pd.DataFrame(sig_task)

    # ---- thresholds
    offsets_all = np.zeros(n_tasks + 1, dtype=np.int64)
    n_per = np.zeros(n_tasks, dtype=np.int64)
    n_per[flat.tasks] = np.diff(flat.offsets)
    np.cumsum(n_per, out=offsets_all[1:])
    disagrees = al.task_error_counts() > 0
    th = fit_thresholds(np.where(scored_mask, task_dep, np.nan), disagrees,
                        method="expected_fbeta" if scorer == "model" else "youden")
    category = th.categorize(task_dep)
    logger.info(
        "DEP: %d tasks scored, %d gold spans, thresholds easy<%.3f mislabeled>=%.3f (%s)",
        int(scored_mask.sum()), n_span, th.easy, th.mislabeled, th.method,
    )
    return DepResult(
        task_dep=task_dep,
        category=category,
        thresholds=th,
        token_dep=token_dep,
        token_margin_dep=margin_dep,
        token_offsets=offsets_all,
        spans=spans_df,
        task_errors=al.per_task,
        signals=signals_df,
        tags=tags,
        aggregate=aggregate,
        weights=w if scorer == "signals" else {},
        scorer=scorer,
        units=units,
    )
