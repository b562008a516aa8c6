"""Per-class, per-form and per-annotator alert rules (see :mod:`analysis.review.alerts`)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.review.alerts.base import Alert, _as1d, _ids, _n_rows, _order

__all__ = ["low_performing_classes", "class_imbalance", "overlapping_classes",
           "inconsistent_surface_forms", "annotator_error_rates"]

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
    surface: Sequence[str] | np.ndarray,
    span_label: Sequence[str] | np.ndarray,
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

    from analysis.review.duplicates import fold_texts

    st = _as1d(span_task, "span_task", np.int64)
    m = st.shape[0]
    if m == 0:
        return None
    if len(surface) != m or len(span_label) != m:
        raise ValueError("span_task, surface and span_label must have one row per span")
    form_code, forms_u = pd.factorize(np.asarray(fold_texts(surface), dtype=object))
    lab_code, labs_u = pd.factorize(np.asarray(span_label, dtype=object))
    # (form, label) pairs in first-seen order, with their counts
    key = form_code.astype(np.int64) * len(labs_u) + lab_code
    pair_of_row, pairs = pd.factorize(key)
    n_pair = np.bincount(pair_of_row)
    p_form = pairs // len(labs_u)
    p_lab = pairs % len(labs_u)
    total = np.bincount(p_form, weights=n_pair, minlength=len(forms_u))[p_form]
    nlab = np.bincount(p_form, minlength=len(forms_u))[p_form]
    top = np.zeros(len(forms_u), dtype=np.int64)
    np.maximum.at(top, p_form, n_pair)
    cand = (total >= min_occurrences) & (nlab >= 2)
    if not cand.any():
        return None
    # minority pairs: label count below the form's top count, minority share small enough
    minority = cand & (n_pair < top[p_form]) & (n_pair / total <= max_minority_share)
    if not minority.any():
        return None
    rows = st[minority[pair_of_row]]
    n = _n_rows(ids, n_tasks, st)
    ids_ = _ids(ids, n)
    dep = None if task_dep is None else _as1d(task_dep, "task_dep", np.float64, n)
    mforms = np.unique(p_form[minority])
    sel = np.flatnonzero(cand & np.isin(p_form, mforms))
    shown = pd.DataFrame({"form": forms_u[p_form[sel]], "label": labs_u[p_lab[sel]],
                          "n": n_pair[sel], "total": total[sel]})
    shown = shown.sort_values("total", ascending=False).head(200)
    forms: dict[str, dict[str, int]] = {}
    for form, lab, k in shown[["form", "label", "n"]].itertuples(index=False):
        forms.setdefault(str(form), {})[str(lab)] = int(k)
    mforms_n = int(mforms.size)
    return Alert(
        "inconsistent surface forms",
        f"span text seen >= {min_occurrences} times with several labels; tasks using a label "
        f"held by <= {max_minority_share:.0%} of its occurrences",
        {"forms": dict(list(forms.items())[:50]), "n_forms": mforms_n},
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
