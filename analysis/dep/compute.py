"""Data Error Potential (DEP): how likely each human annotation is wrong.

Inputs are per-token tag probabilities (rows = the tasks' tokens, columns = a
:class:`analysis.tags.TagSet`) from a model that did not train on those tasks (cross-fitting),
and optionally one such set per training epoch.

Token DEP
    ``(1 − margin) / 2`` where ``margin = p(gold tag) − max p(other tag)``, in ``[0, 1]``;
    ``> 0.5`` exactly when the model's argmax disagrees with the gold tag.  With several
    probability sets (``epochs_probs``) the margin is averaged over them first (area under the
    margin, AUM: labels the model keeps fighting during training have a low average margin).
    Gold tags are written in the probabilities' own scheme (an IOB1 model is compared with IOB1
    gold tags).
Units
    Every gold span (its token DEP is the max over its tokens) and every gold-``O`` token.  Each
    unit gets the signals of :mod:`analysis.dep.signals` (margin, disagreement, surface-form
    consistency, neighbour label consistency when span embeddings are given, and for spans the
    entity-type margin and the highest ``p(O)``): :mod:`analysis.dep.units`.
Unit DEP (``scorer="model"``, the default)
    The unit's error probability under the learned error model (:mod:`analysis.dep.errormodel`):
    a multinomial logistic regression per unit type — gold spans, ``O`` tokens right next to a
    gold span (``o_boundary``) and other ``O`` tokens (``o``) — over the signals, the
    log-margin, the error type of the model's argmax decoding against the span and a few shape
    features; its most likely class is the unit's ``suspect`` kind.  The shipped coefficients
    are fitted by ``bench/fit_error_model.py`` (numbers in ``bench/README.md``).
Unit DEP (``scorer="signals"``)
    The signals combined by :func:`analysis.dep.signals.combine` (weighted noisy-OR), then mapped
    by :func:`analysis.dep.signals.calibrate` per unit type.  Kept for explicit weighting and for
    the ablation; selected automatically when ``weights`` or ``calibration`` are passed.
Span DEP
    The unit DEP of a gold span; a predicted span that overlaps no gold span (``ghost``, argmax
    decoding with :func:`analysis.tags.decode_columns`) gets the max unit DEP over its tokens.
Task DEP
    ``aggregate`` over the task's units: ``"max"`` by default
    (:func:`analysis.dep.thresholds.aggregate_units`).
Thresholds (per dataset, :func:`analysis.dep.thresholds.fit_thresholds`)
    With the error model the *likely mislabeled* cut maximises the expected F2 of flagging; with
    ``scorer="signals"`` it best separates tasks where the model's argmax disagrees with the
    annotation (Youden J).  *easy*: the median task DEP of the agreeing tasks.

The alignment of gold spans against the argmax decoding is computed here once and carried in
:attr:`DepResult.alignment` (task-local token units) for the metrics, alerts and write-back.
Unannotated tasks are not scored: their task DEP is NaN.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from analysis.corpus import Corpus
from analysis.dep.errormodel import ErrorModel, default_error_model
from analysis.dep.inputs import ProbsLike, Scored, as_corpus, as_output, prepare
from analysis.dep.result import DepResult
from analysis.dep.rows import CHUNK
from analysis.dep.signals import (
    DEFAULT_CALIBRATION,
    DEFAULT_WEIGHTS,
    calibrate,
    combine,
    token_margins,
)
from analysis.dep.thresholds import (
    AGGREGATES,
    CATEGORIES,
    Aggregate,
    Thresholds,
    aggregate_units,
    fit_thresholds,
)
from analysis.dep.units import (
    Units,
    log_margins,
    range_max,
    span_features,
    token_features,
    unit_signals,
)
from analysis.errors import KINDS, Alignment, align
from analysis.exceptions import DataError
from analysis.spans import SpanTable
from analysis.tags import TagSet, decode_columns

if TYPE_CHECKING:  # pragma: no cover
    from analysis.dataset import Dataset

__all__ = ["Aggregate", "AGGREGATES", "CATEGORIES", "Scorer", "SCORERS", "Thresholds",
           "DepResult", "validate_probs", "token_margins", "aggregate_units", "fit_thresholds",
           "compute_dep"]

logger = logging.getLogger(__name__)

Scorer = Literal["model", "signals"]
SCORERS: tuple[str, ...] = ("model", "signals")


def validate_probs(data: Corpus | Dataset, probs: ProbsLike,
                   tags: Sequence[str] | TagSet | None = None, *, tol: float = 1e-3) -> list[int]:
    """Check probabilities against a dataset and tag list; return the scored task indices.

    ``probs`` holds one array per task (``None`` allowed for unannotated tasks), one per
    annotated task, or a :class:`analysis.probs.ModelOutput`.  Raises
    :class:`analysis.exceptions.DataError` naming the task for a non-2-D array, a row count
    different from the task's token count, a column count different from the tags, NaN/inf or
    negative values, rows not summing to 1 within ``tol``; and for a tag list that does not fit
    the dataset.
    """
    corpus = as_corpus(data)
    sc = prepare(corpus, as_output(corpus, probs, tags), tol=tol)
    return sc.tasks.tolist()


def _choose_scorer(scorer: Scorer | None, weights: Mapping[str, float] | None,
                   calibration: Mapping[str, tuple[float, float]] | None,
                   error_model: ErrorModel | None) -> str:
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
    return scorer


def _margin_dep(sc: Scored, corpus: Corpus, epochs_probs: Sequence[ProbsLike] | None,
                tol: float) -> np.ndarray:
    """``(1 − margin) / 2`` per flat token; the margin averaged over epochs when given (AUM)."""
    if not epochs_probs:
        margin = (sc.gold_prob - sc.other_prob).astype(np.float32)  # = token_margins
    else:
        margins = []
        for e, ep in enumerate(epochs_probs):
            try:
                se = prepare(corpus, as_output(corpus, ep, sc.tagset), tol=tol)
            except DataError as exc:
                raise DataError(f"epoch {e}: {exc}") from None
            if not np.array_equal(se.offsets, sc.offsets):
                raise DataError(f"epoch {e}: probability arrays do not match the final ones")
            margins.append(token_margins(se.probs, sc.gold))
        margin = np.mean(margins, axis=0).astype(np.float32)
    return ((1.0 - margin) / 2.0).astype(np.float32)


def _predictions(sc: Scored) -> tuple[Alignment, SpanTable, SpanTable, np.ndarray]:
    """Argmax-decode the scored tasks and align the gold spans with the result (token units).

    Returns the alignment (task-local token offsets), the predicted spans in flat-row units and
    in characters, and each predicted span's mean argmax probability.
    """
    corpus, ts = sc.corpus, sc.tagset
    labels = tuple(corpus.labels) + tuple(sorted(set(ts.types) - set(corpus.labels)))
    best = sc.best
    p0, p1, plab = decode_columns(best, sc.offsets, ts, labels)
    ptask = sc.tok_task[p0] if p0.size else np.zeros(0, dtype=np.int64)
    base = sc.offsets[ptask]
    flat = SpanTable(ptask, p0, p1, plab.astype(np.int32), labels)
    local_pred = SpanTable(ptask, p0 - base, p1 - base, plab.astype(np.int32), labels)
    sbase = sc.span_base
    local_gold = SpanTable(sc.span_task, sc.span_t0 - sbase, sc.span_t1 - sbase,
                           sc.span_label.astype(np.int32), corpus.labels)
    al = align(local_gold, local_pred, n_tasks=corpus.n_tasks)
    rows = sc.rows
    chars = SpanTable(ptask, corpus.token_start[rows[p0]] if p0.size else p0,
                      corpus.token_end[rows[p1 - 1]] if p0.size else p1,
                      plab.astype(np.int32), labels)
    conf = sc.best_prob
    csum = np.concatenate([[0.0], np.cumsum(conf, dtype=np.float64)])
    pconf = ((csum[p1] - csum[p0]) / np.maximum(p1 - p0, 1)).astype(np.float32)
    return al, flat, chars, pconf


def _score_units(scorer: str, sc: Scored, u: Units, g_kind: np.ndarray, *,
                 weights: Mapping[str, float], calibration: Mapping[str, tuple[float, float]] | None,
                 error_model: ErrorModel | None, return_units: bool
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict[str, Any] | None]:
    """Span scores, token scores, each span's suspected error class, and (optionally) units."""
    n_span = len(sc.span_t0)
    suspect = np.full(n_span, None, dtype=object)
    if scorer == "signals":
        cal = dict(DEFAULT_CALIBRATION if calibration is None else calibration)
        span_score = calibrate(combine(u.span, weights), "span", cal).astype(np.float64)
        tok_raw = combine(u.tok, weights)
        tok_score = np.where(u.boundary, calibrate(tok_raw, "o_boundary", cal),
                             calibrate(tok_raw, "o", cal)).astype(np.float64)
        return span_score, tok_score, suspect, None
    em = default_error_model() if error_model is None else error_model
    log_margin = log_margins(sc.gold_prob, sc.other_prob)
    span_x = span_features(u, log_margin, sc.span_t0, sc.span_t1, g_kind)
    tok_z = np.zeros(sc.n_tokens, dtype=np.float64)
    b_o = u.boundary[u.o_tok]
    for name, m in (("o_boundary", b_o), ("o", ~b_o)):  # each model on its own tokens only,
        sel = u.o_tok[m]  # in blocks (no full-size feature matrix)
        for a in range(0, sel.size, CHUNK):
            r = sel[a:a + CHUNK]
            tok_z[r] = em.error_log_odds(name, token_features(u, log_margin, sc, r))
    span_odds, span_suspect = em.units["span"].odds_and_suspected(span_x)
    span_score = _sigmoid(span_odds)
    tok_score = _sigmoid(tok_z)
    tok_score[u.inside] = 0.0
    if n_span:
        suspect = span_suspect
    units = None
    if return_units:
        tt = sc.tok_task[u.o_tok]
        local = u.o_tok - sc.offsets[tt]
        base = sc.span_base
        units = {"span": {"x": span_x, "task": sc.span_task, "token_start": sc.span_t0 - base,
                          "token_end": sc.span_t1 - base}}
        tok_x = token_features(u, log_margin, sc)
        for name, m in (("o_boundary", b_o), ("o", ~b_o)):
            units[name] = {"x": tok_x[m], "task": tt[m], "token": local[m]}
    return span_score, tok_score, suspect, units


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Numerically stable logistic function, float64."""
    z = np.asarray(z, dtype=np.float64)
    e = np.abs(z)
    np.negative(e, out=e)
    np.exp(e, out=e)  # exp(-|z|)
    out: np.ndarray = 1.0 + e
    # 1 / (1 + e) where z >= 0, e / (1 + e) elsewhere
    np.divide(np.where(z >= 0, 1.0, e), out, out=out)
    return out


def _span_frame(sc: Scored, u: Units, al: Alignment, pchars: SpanTable, span_score: np.ndarray,
                pred_dep: np.ndarray, suspect: np.ndarray, g_kind: np.ndarray
                ) -> Callable[[], pd.DataFrame]:
    """A builder of the span table: one row per gold span and per ghost prediction, sorted by
    task and offset.  What needs the per-token signals is computed now; the table (strings,
    one pandas frame of ~20 columns) only when :attr:`DepResult.spans` is first read."""
    ghost = np.flatnonzero(al.pred_kind == KINDS.index("ghost"))
    gh_task = al.pred.task[ghost]
    gh_t0 = al.pred.start[ghost] + sc.offsets[gh_task]
    gh_t1 = al.pred.end[ghost] + sc.offsets[gh_task]
    ghost_sig = {f"sig_{k}": np.asarray(range_max(v, gh_t0, gh_t1), dtype=np.float64)
                 for k, v in u.tok.items()}
    span_sig = {f"sig_{k}": np.asarray(v, dtype=np.float64) for k, v in u.span.items()}

    def build() -> pd.DataFrame:
        return _build_span_frame(sc, al, pchars, span_score, pred_dep, suspect, g_kind, ghost,
                                 span_sig, ghost_sig)

    return build


def _build_span_frame(sc: Scored, al: Alignment, pchars: SpanTable, span_score: np.ndarray,
                      pred_dep: np.ndarray, suspect: np.ndarray, g_kind: np.ndarray,
                      ghost: np.ndarray, span_sig: dict[str, np.ndarray],
                      ghost_sig: dict[str, np.ndarray]) -> pd.DataFrame:
    corpus = sc.corpus
    texts = corpus.texts
    n_span = len(sc.span_t0)
    first_pair = np.full(n_span, -1, dtype=np.int64)
    if al.n_pairs:
        uniq, first_idx = np.unique(al.pair_gold, return_index=True)
        first_pair[uniq] = al.pair_pred[first_idx]
    al_labels = np.asarray(al.labels, dtype=object)
    g_pred = np.full(n_span, None, dtype=object)
    has = first_pair >= 0
    if has.any():
        g_pred[has] = al_labels[al.pred.label[first_pair[has]]]
    gch = corpus.gold.chars
    r = sc.span_rows
    gs, ge = gch.start[r], gch.end[r]
    base = sc.span_base
    gold_cols: dict[str, np.ndarray] = {
        "task": sc.span_task, "start": gs, "end": ge,
        "token_start": sc.span_t0 - base, "token_end": sc.span_t1 - base,
        "text": corpus.gold_text[r] if n_span else np.zeros(0, dtype=object),
        "gold_label": np.asarray(corpus.labels, dtype=object)[sc.span_label] if n_span
        else np.zeros(0, dtype=object),
        "pred_label": g_pred, "kind": g_kind, "dep": span_score.astype(np.float64),
        "suspect": suspect, **span_sig,
    }
    gh_task = al.pred.task[ghost]
    gh_cs, gh_ce = pchars.start[ghost], pchars.end[ghost]
    ghost_cols: dict[str, np.ndarray] = {
        "task": gh_task, "start": gh_cs, "end": gh_ce,
        "token_start": al.pred.start[ghost], "token_end": al.pred.end[ghost],
        "text": np.array([texts[t][s:e] for t, s, e in zip(gh_task.tolist(), gh_cs.tolist(),
                                                            gh_ce.tolist())], dtype=object),
        "gold_label": np.full(ghost.size, None, dtype=object),
        "pred_label": al_labels[al.pred.label[ghost]] if ghost.size else np.zeros(0, object),
        "kind": np.full(ghost.size, "ghost", dtype=object),
        "dep": pred_dep[ghost].astype(np.float64),
        "suspect": np.full(ghost.size, None, dtype=object), **ghost_sig,
    }
    # one frame in (task, start, end) order: both parts are sorted, so without ghosts (or when
    # they only follow) the concatenation is the order already
    order = None
    if ghost.size and n_span:  # stable, as sort_values(kind="stable")
        order = np.lexsort((np.concatenate([ge, gh_ce]), np.concatenate([gs, gh_cs]),
                            np.concatenate([sc.span_task, gh_task])))
        if np.array_equal(order, np.arange(order.size)):
            order = None
    ids = np.where(corpus.has_id, corpus.task_ids, -1)
    cols = {name: _frame_column([gold_cols[name], ghost_cols[name]], order)
            for name in gold_cols}
    sorted_task = np.asarray(cols["task"])
    task_id = ids[sorted_task].astype(object)
    task_id[ids[sorted_task] < 0] = None
    # copy=False: the columns are fresh arrays already; no consolidation copy
    return pd.DataFrame({"task": sorted_task, "task_id": pd.Series(task_id, dtype=object),
                         **{k: v for k, v in cols.items() if k != "task"}}, copy=False)


def _frame_column(parts: list[np.ndarray], order: np.ndarray | None) -> Any:
    """One column of the span frame from its gold and ghost parts, in ``order``, with the
    dtype ``pd.concat`` of one frame per non-empty part gives: pandas' string dtype when every
    part holds strings (and missing values) only, else object."""
    col = np.concatenate(parts)
    if order is not None:
        col = col[order]
    if col.dtype != object:
        return col
    nonempty = [p for p in parts if len(p)]
    if nonempty and all(pd.api.types.infer_dtype(p, skipna=True) == "string" for p in nonempty):
        return pd.Series(col)  # inferred as a frame column would be
    return pd.Series(col, dtype=object)


def compute_dep(
    data: Corpus | Dataset,
    probs: ProbsLike,
    *,
    tags: Sequence[str] | TagSet | None = None,
    epochs_probs: Sequence[ProbsLike] | None = None,
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
    """Score every annotated task of ``data`` for label errors (see the module docstring).

    Parameters
    ----------
    data : analysis.dataset.Dataset or analysis.corpus.Corpus
    probs : a :class:`analysis.probs.ModelOutput`, or one ``(n_tokens, n_tags)`` array per task
        (or per annotated task) in task order: the final, out-of-sample probabilities
    tags : column names (or a :class:`TagSet`); default: the ModelOutput's own tag set
    epochs_probs : probability sets of several training epochs (same layout); the margin signal
        is averaged over them (AUM) instead of taken from ``probs``
    span_embeddings : (n_gold_spans, dim), one row per gold span in
        ``dataset.gold_table()`` order; enables the ``neighbour`` signal
    aggregate : task aggregation of unit scores (see :func:`aggregate_units`)
    weights, calibration : the ``scorer="signals"`` weights and per-unit-type calibration
    neighbours : ``k`` of the neighbour signal
    tol : tolerance of the row sums of ``probs``
    scorer : ``"model"`` (the learned error model; default unless ``weights`` /
        ``calibration`` are given) or ``"signals"``
    error_model : the error model of ``scorer="model"`` (default: the packaged one)
    return_units : also return the unit feature matrices (``DepResult.units``), for fitting

    Raises
    ------
    analysis.exceptions.DataError
        Bad probabilities or tags (see :func:`validate_probs`), naming the task.
    """
    scorer_name = _choose_scorer(scorer, weights, calibration, error_model)
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    w = dict(DEFAULT_WEIGHTS if weights is None else weights)
    corpus = as_corpus(data)
    sc = prepare(corpus, as_output(corpus, probs, tags), tol=tol)
    u = unit_signals(sc, _margin_dep(sc, corpus, epochs_probs, tol),
                     span_embeddings=span_embeddings, neighbours=neighbours)
    al, _, pchars, pconf = _predictions(sc)
    g_kind = np.asarray(KINDS, dtype=object)[al.gold_kind]
    span_score, tok_score, suspect, units = _score_units(
        scorer_name, sc, u, g_kind, weights=w, calibration=calibration, error_model=error_model,
        return_units=return_units)
    n_tasks = corpus.n_tasks
    task_dep, scored_mask = _task_dep(sc, u, span_score, tok_score, aggregate, n_tasks)
    token_dep = tok_score.astype(np.float32)
    token_dep[u.span_tok] = span_score[u.span_owner]
    th = fit_thresholds(np.where(scored_mask, task_dep, np.nan), al.task_error_counts() > 0,
                        method="expected_fbeta" if scorer_name == "model" else "youden")
    logger.info("DEP: %d tasks scored, %d gold spans, thresholds easy<%.3f mislabeled>=%.3f (%s)",
                int(scored_mask.sum()), len(sc.span_t0), th.easy, th.mislabeled, th.method)
    gold_span_dep = np.full(len(corpus.gold), np.nan)
    gold_span_dep[sc.span_rows] = span_score
    gold_span_suspect = np.full(len(corpus.gold), None, dtype=object)
    gold_span_suspect[sc.span_rows] = suspect
    ghost = al.pred_kind == KINDS.index("ghost")
    pred_dep = np.full(len(al.pred), np.nan)
    gt = al.pred.task[ghost]
    pred_dep[ghost] = range_max(tok_score, al.pred.start[ghost] + sc.offsets[gt],
                                al.pred.end[ghost] + sc.offsets[gt])
    return DepResult(
        task_dep=task_dep, category=th.categorize(task_dep), thresholds=th,
        token_dep=token_dep, token_margin_dep=u.margin_dep, token_offsets=sc.offsets,
        _spans=_span_frame(sc, u, al, pchars, span_score, pred_dep, suspect, g_kind),
        task_errors=al.per_task, _signals=partial(_signal_maxima, sc, u, n_tasks),
        tags=sc.tagset.tags,
        aggregate=aggregate, weights=w if scorer_name == "signals" else {}, scorer=scorer_name,
        units=units, alignment=al, pred_chars=pchars, pred_conf=pconf,
        gold_span_dep=gold_span_dep, gold_span_suspect=gold_span_suspect, pred_dep=pred_dep,
        tagset=sc.tagset, scored=sc,
        task_ids=[int(t) if h else None for t, h in zip(corpus.task_ids.tolist(),
                                                        corpus.has_id.tolist())],
    )


def _task_dep(sc: Scored, u: Units, span_score: np.ndarray, tok_score: np.ndarray,
              aggregate: Aggregate, n_tasks: int) -> tuple[np.ndarray, np.ndarray]:
    o_task = sc.tok_task[u.o_tok]
    if aggregate == "max":  # spans and O tokens are each grouped by task: max of the two maxima
        task_dep = np.fmax(aggregate_units(sc.span_task, span_score, n_tasks),
                           aggregate_units(o_task, tok_score[u.o_tok], n_tasks))
    else:
        unit_task = np.concatenate([sc.span_task, o_task])
        unit_score = np.concatenate([span_score, tok_score[u.o_tok]])
        unit_len = np.concatenate([sc.span_t1 - sc.span_t0,
                                   np.ones(len(u.o_tok), dtype=np.int64)])
        task_dep = aggregate_units(unit_task, unit_score, n_tasks, method=aggregate,
                                   unit_weight=unit_len)
    scored_mask = np.zeros(n_tasks, dtype=bool)
    scored_mask[sc.tasks] = True
    task_dep[scored_mask & np.isnan(task_dep)] = 0.0  # annotated tasks with no token at all
    return task_dep, scored_mask


def _signal_maxima(sc: Scored, u: Units, n_tasks: int) -> pd.DataFrame:
    """Per-task max of each signal (for explanations and the ablation)."""
    o_task = sc.tok_task[u.o_tok]
    out = {}
    for k in u.span:  # spans and O tokens are each grouped by task
        out[k] = np.fmax(
            aggregate_units(sc.span_task, np.nan_to_num(np.asarray(u.span[k], np.float64)),
                            n_tasks),
            aggregate_units(o_task, np.asarray(u.tok[k], dtype=np.float64)[u.o_tok], n_tasks))
    return pd.DataFrame(out)
