"""Dataset-wide alerts: rules over plain arrays that flag tasks for review.

Every alert function takes columnar numpy arrays (one row per task, or one row per span with a
``span_task`` column holding the 0-based task row) and returns an :class:`Alert` when its rule
fires, ``None`` otherwise.  An alert carries

``name``
    a short stable name, used for the Label Studio review view ``"Review: <name>"``;
``rule``
    the rule that fired in words, *with the thresholds actually used*;
``numbers``
    the figures behind it (counts, rates, thresholds), JSON-serialisable;
``task_ids``
    the flagged tasks (Label Studio ids, or 0-based indices for CoNLL input), ordered by
    descending DEP when a DEP is known (the order the review queue uses).

Thresholds are derived from the data where that is meaningful and always reported:

* *upper fence* ``Q3 + k * IQR`` (Tukey) for "unusually high" per-task quantities (DEP, loss,
  text length), with a floor so that a clean dataset whose values are all tiny does not fire;
* classes are "well below" the mean F1 when ``F1 < mean - max(0.10, std)`` over classes;
* a class is "rare" when its count is below ``imbalance_ratio`` (default 1/10) of the largest
  class count;
* per-annotator error rates are compared with the pooled rate using a one-sided binomial
  z-score (``z >= 3``) so that a handful of errors on a small annotator does not fire.

No Python loop runs over tasks or spans in these functions except where noted (the surface
form rule groups with pandas).

>>> import numpy as np
>>> a = likely_mislabeled(np.array([0.05, 0.9, 0.1, 0.02]), np.array([0.0, 0.97, 0.2, 0.0]),
...                       ids=np.array([10, 11, 12, 13]), dep_threshold=0.5)
>>> a.name, a.task_ids
('likely mislabeled', (11,))
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = [
    "Alert",
    "ALERT_NAMES",
    "upper_fence",
    "likely_mislabeled",
    "hard_for_model",
    "low_performing_classes",
    "class_imbalance",
    "overlapping_classes",
    "inconsistent_surface_forms",
    "overlooked_spans",
    "malformed_samples",
    "duplicates",
    "annotator_error_rates",
]

ALERT_NAMES = (
    "likely mislabeled",
    "hard for the model",
    "low-performing classes",
    "class imbalance",
    "overlapping classes",
    "inconsistent surface forms",
    "overlooked spans",
    "malformed samples",
    "duplicates",
    "annotator error rates",
)


#: every review view ner-quality manages is titled ``VIEW_PREFIX + alert name``
VIEW_PREFIX = "Review: "


@dataclass(frozen=True)
class Alert:
    """One fired rule.  See the module docstring for the fields."""

    name: str
    rule: str
    numbers: dict[str, Any] = field(default_factory=dict)
    task_ids: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "rule": self.rule,
            "numbers": _jsonable(self.numbers),
            "task_ids": [int(t) for t in self.task_ids],
        }

    @property
    def view_title(self) -> str:
        """Title of the Label Studio Data Manager view for this alert."""
        return f"{VIEW_PREFIX}{self.name}"


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        v = float(x)
        return round(v, 6) if np.isfinite(v) else None
    if isinstance(x, np.bool_):
        return bool(x)
    return x


def _as1d(x: Any, name: str, dtype: Any = None, n: int | None = None) -> np.ndarray:
    arr = np.asarray(x, dtype=dtype)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array, got shape {arr.shape}")
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"{name} has {arr.shape[0]} rows, expected {n} (one per task)")
    return arr


def _ids(ids: Any, n: int) -> np.ndarray:
    if ids is None:
        return np.arange(n, dtype=np.int64)
    return _as1d(ids, "ids", np.int64, n)


def _n_rows(ids: Any, n_tasks: int | None, rows: np.ndarray) -> int:
    if ids is not None:
        return int(np.asarray(ids).shape[0])
    if n_tasks is not None:
        return int(n_tasks)
    return int(rows.max()) + 1 if rows.size else 0


def _order(ids: np.ndarray, rows: np.ndarray, dep: np.ndarray | None) -> tuple[int, ...]:
    """Task ids of ``rows``, by descending DEP (ties and no DEP: ascending id)."""
    rows = np.unique(np.asarray(rows, dtype=np.int64))
    if rows.size == 0:
        return ()
    if dep is None:
        return tuple(int(i) for i in np.sort(ids[rows]))
    order = np.lexsort((ids[rows], -np.nan_to_num(dep[rows], nan=-1.0)))
    return tuple(int(i) for i in ids[rows][order])


def upper_fence(x: np.ndarray, *, k: float = 1.5, floor: float | None = None) -> float:
    """Tukey's upper fence ``Q3 + k * IQR`` of the finite values of ``x``, at least ``floor``.

    >>> upper_fence(np.array([1.0, 2, 3, 4, 5]), k=1.5)
    7.0
    >>> upper_fence(np.array([0.0, 0, 0, 0]), floor=0.5)
    0.5
    """
    v = np.asarray(x, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return float("inf") if floor is None else float(floor)
    q1, q3 = np.quantile(v, [0.25, 0.75])
    t = float(q3 + k * (q3 - q1))
    return t if floor is None else max(t, float(floor))


# --------------------------------------------------------------------------- per-task rules


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


# --------------------------------------------------------------------------- per-class rules


def low_performing_classes(
    f1: Mapping[str, float],
    support: Mapping[str, int],
    *,
    class_task_rows: Mapping[str, np.ndarray] | None = None,
    ids: np.ndarray | None = None,
    min_gap: float = 0.10,
    min_support: int = 1,
) -> Alert | None:
    """Classes whose F1 is well below the mean: ``F1 < mean - max(min_gap, std)``.

    Parameters
    ----------
    f1, support : per-class F1 and gold support (classes with support < ``min_support`` are
        ignored)
    class_task_rows : per class, task rows to flag (e.g. tasks with an error on that class)
    """
    labs = [lab for lab in f1 if support.get(lab, 0) >= min_support]
    if len(labs) < 2:
        return None
    v = np.array([f1[lab] for lab in labs], dtype=np.float64)
    mean, std = float(v.mean()), float(v.std())
    t = mean - max(min_gap, std)
    low = [lab for lab, x in zip(labs, v) if x < t]
    if not low:
        return None
    task_ids: tuple[int, ...] = ()
    if class_task_rows is not None:
        parts = [np.asarray(class_task_rows.get(lab, ()), dtype=np.int64) for lab in low]
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if rows.size:
            ids_ = _ids(ids, int(rows.max()) + 1) if ids is None else np.asarray(ids, np.int64)
            task_ids = _order(ids_, rows, None)
    return Alert(
        "low-performing classes",
        f"class F1 < mean F1 - max({min_gap:.2f}, std) = {mean:.3f} - {max(min_gap, std):.3f} "
        f"= {t:.3f}",
        {
            "classes": {lab: float(f1[lab]) for lab in low},
            "mean_f1": mean,
            "std_f1": std,
            "threshold": t,
        },
        task_ids,
    )


def class_imbalance(
    counts: Mapping[str, int],
    *,
    imbalance_ratio: float = 0.1,
    class_task_rows: Mapping[str, np.ndarray] | None = None,
    ids: np.ndarray | None = None,
) -> Alert | None:
    """Classes with fewer than ``imbalance_ratio`` times the largest class's span count."""
    if len(counts) < 2:
        return None
    labs = list(counts)
    c = np.array([counts[lab] for lab in labs], dtype=np.float64)
    top = float(c.max())
    if top <= 0:
        return None
    t = imbalance_ratio * top
    rare = [lab for lab, x in zip(labs, c) if x < t]
    if not rare:
        return None
    task_ids: tuple[int, ...] = ()
    if class_task_rows is not None:
        parts = [np.asarray(class_task_rows.get(lab, ()), dtype=np.int64) for lab in rare]
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if rows.size:
            ids_ = _ids(ids, int(rows.max()) + 1) if ids is None else np.asarray(ids, np.int64)
            task_ids = _order(ids_, rows, None)
    largest = labs[int(c.argmax())]
    return Alert(
        "class imbalance",
        f"class span count < {imbalance_ratio:g} x the largest class ({largest}: {int(top)}), "
        f"i.e. < {t:.1f}",
        {
            "counts": {lab: int(counts[lab]) for lab in labs},
            "rare_classes": rare,
            "max_min_ratio": float(top / max(float(c.min()), 1.0)),
            "threshold": t,
        },
        task_ids,
    )


def overlapping_classes(
    confusion: np.ndarray,
    labels: Sequence[str],
    *,
    pair_task_rows: Mapping[tuple[str, str], np.ndarray] | None = None,
    ids: np.ndarray | None = None,
    min_rate: float = 0.05,
    min_count: int = 3,
) -> Alert | None:
    """Frequently confused class pairs.

    Parameters
    ----------
    confusion : (k, k) raw counts, rows = gold class, columns = predicted class, over the
        entity classes in ``labels`` (a trailing "none" row/column, if present, is ignored)
    min_rate : a pair fires when ``confusion[a, b] / row_total[a] >= min_rate``
    min_count : ... and ``confusion[a, b] >= min_count``
    pair_task_rows : per ``(gold, pred)`` pair, task rows where that confusion occurs
    """
    cm = np.asarray(confusion, dtype=np.float64)
    k = len(labels)
    if cm.ndim != 2 or cm.shape[0] < k or cm.shape[1] < k:
        raise ValueError(f"confusion must be at least ({k}, {k}), got shape {cm.shape}")
    row_tot = cm.sum(axis=1)[:k]
    sub = cm[:k, :k].copy()
    np.fill_diagonal(sub, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(row_tot[:, None] > 0, sub / row_tot[:, None], 0.0)
    a_idx, b_idx = np.nonzero((rate >= min_rate) & (sub >= min_count))
    if a_idx.size == 0:
        return None
    order = np.argsort(-sub[a_idx, b_idx], kind="stable")
    pairs: list[dict[str, Any]] = [
        {
            "gold": labels[int(a)],
            "pred": labels[int(b)],
            "count": int(sub[a, b]),
            "rate": float(rate[a, b]),
        }
        for a, b in zip(a_idx[order], b_idx[order])
    ]
    task_ids: tuple[int, ...] = ()
    if pair_task_rows is not None:
        parts = [
            np.asarray(pair_task_rows.get((p["gold"], p["pred"]), ()), dtype=np.int64)
            for p in pairs
        ]
        rows = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        if rows.size:
            ids_ = _ids(ids, int(rows.max()) + 1) if ids is None else np.asarray(ids, np.int64)
            task_ids = _order(ids_, rows, None)
    return Alert(
        "overlapping classes",
        f"gold class A predicted as B in >= {min_rate:.0%} of A's spans and >= {min_count} times",
        {"pairs": pairs, "min_rate": min_rate, "min_count": min_count},
        task_ids,
    )


def inconsistent_surface_forms(
    span_task: np.ndarray,
    surface: Sequence[str],
    span_label: Sequence[str],
    *,
    ids: np.ndarray | None = None,
    n_tasks: int | None = None,
    task_dep: np.ndarray | None = None,
    min_occurrences: int = 3,
    max_minority_share: float = 0.34,
) -> Alert | None:
    """The same surface form annotated with different labels across tasks.

    A form (case-folded, whitespace-collapsed span text) seen at least ``min_occurrences``
    times with two or more labels fires when its minority labels make up at most
    ``max_minority_share`` of its occurrences (a genuinely ambiguous form, e.g. ``Washington``
    half PER half LOC, is reported in ``numbers`` but only its minority tasks are flagged when
    a clear majority exists).  Flagged tasks are those carrying a minority label.

    Parameters
    ----------
    span_task : (n_spans,) task row of each gold span
    surface : (n_spans,) span text
    span_label : (n_spans,) label of each span
    """
    import pandas as pd

    st = _as1d(span_task, "span_task", np.int64)
    m = st.shape[0]
    if m == 0:
        return None
    if len(surface) != m or len(span_label) != m:
        raise ValueError("span_task, surface and span_label must have one row per span")
    df = pd.DataFrame(
        {
            "task": st,
            "form": pd.Series(list(surface), dtype="string").str.casefold()
            .str.replace(r"\s+", " ", regex=True)
            .str.strip(),
            "label": pd.Series(list(span_label), dtype="string"),
        }
    )
    cnt = df.groupby(["form", "label"], sort=False).size().rename("n").reset_index()
    tot = cnt.groupby("form")["n"].transform("sum")
    nlab = cnt.groupby("form")["label"].transform("nunique")
    top = cnt.groupby("form")["n"].transform("max")
    cnt = cnt.assign(total=tot, nlab=nlab, top=top)
    cand = cnt[(cnt["total"] >= min_occurrences) & (cnt["nlab"] >= 2)]
    if cand.empty:
        return None
    # minority rows: label count below the form's top count, minority share small enough
    minority = cand[(cand["n"] < cand["top"]) & (cand["n"] / cand["total"] <= max_minority_share)]
    if minority.empty:
        return None
    flag = df.merge(minority[["form", "label"]], on=["form", "label"], how="inner")
    rows = flag["task"].to_numpy(dtype=np.int64)
    n = _n_rows(ids, n_tasks, st)
    ids_ = _ids(ids, n)
    dep = None if task_dep is None else _as1d(task_dep, "task_dep", np.float64, n)
    forms: dict[str, dict[str, int]] = {}
    mforms = set(minority["form"].tolist())
    shown = cand[cand["form"].isin(mforms)].sort_values("total", ascending=False).head(200)
    for form, lab, k in shown[["form", "label", "n"]].itertuples(index=False):
        forms.setdefault(str(form), {})[str(lab)] = int(k)
    return Alert(
        "inconsistent surface forms",
        f"span text seen >= {min_occurrences} times with several labels; tasks using a label "
        f"held by <= {max_minority_share:.0%} of its occurrences",
        {"forms": dict(list(forms.items())[:50]), "n_forms": len(mforms)},
        _order(ids_, rows, dep),
    )


def annotator_error_rates(
    annotator: Sequence[str | None],
    n_errors: np.ndarray,
    n_spans: np.ndarray,
    *,
    ids: np.ndarray | None = None,
    task_dep: np.ndarray | None = None,
    z_threshold: float = 3.0,
    min_spans: int = 10,
) -> Alert | None:
    """Annotators whose error rate is significantly above the pooled rate.

    ``rate_a = errors_a / spans_a``; an annotator fires when ``spans_a >= min_spans`` and the
    one-sided binomial z-score ``(rate_a - p) / sqrt(p (1 - p) / spans_a) >= z_threshold``,
    ``p`` the pooled rate.  Needs at least two annotators.  Flagged tasks: that annotator's
    tasks with at least one error.

    Parameters
    ----------
    annotator : (n_tasks,) annotator of the chosen annotation (None: unknown, ignored)
    n_errors : (n_tasks,) int, gold spans not ``correct`` plus ghosts
    n_spans : (n_tasks,) int, gold spans plus ghosts (the denominator)
    """
    import pandas as pd

    ne = _as1d(n_errors, "n_errors", np.int64)
    n = ne.shape[0]
    ns = _as1d(n_spans, "n_spans", np.int64, n)
    if len(annotator) != n:
        raise ValueError(f"annotator has {len(annotator)} rows, expected {n} (one per task)")
    ann = pd.Series(list(annotator), dtype="string")
    known = ann.notna().to_numpy()
    if ann[known].nunique() < 2:
        return None
    df = pd.DataFrame({"a": ann[known], "e": ne[known], "s": ns[known]})
    g = df.groupby("a")[["e", "s"]].sum()
    p = float(g["e"].sum() / max(int(g["s"].sum()), 1))
    if p <= 0.0 or p >= 1.0:
        return None
    rate = g["e"] / g["s"].clip(lower=1)
    z = (rate - p) / np.sqrt(p * (1 - p) / g["s"].clip(lower=1))
    bad = g.index[(g["s"] >= min_spans) & (z >= z_threshold)]
    if len(bad) == 0:
        return None
    ids_ = _ids(ids, n)
    dep = None if task_dep is None else _as1d(task_dep, "task_dep", np.float64, n)
    rows = np.flatnonzero(ann.isin(list(bad)).fillna(False).to_numpy(dtype=bool) & (ne > 0))
    return Alert(
        "annotator error rates",
        f"annotator error rate above the pooled rate {p:.3f} with binomial z >= "
        f"{z_threshold:g} (at least {min_spans} spans)",
        {
            "pooled_rate": p,
            "annotators": {
                str(a): {"rate": float(rate[a]), "spans": int(g.loc[a, "s"]), "z": float(z[a])}
                for a in g.index
            },
            "flagged_annotators": [str(a) for a in bad],
        },
        _order(ids_, rows, dep),
    )
