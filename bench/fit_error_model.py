"""Fit the shipped error model on several detection runs at once (pooled), report per run.

One cross-fit gives probabilities of one confidence scale: a model trained on 14k sentences is
far surer of itself than one trained on a few hundred (the demo, a fresh project), and an error
model fitted on one scale under-scores errors on the other.  This script pools the *selection
halves* of several :mod:`bench.bench_detection` runs (each: ``--limit`` sentences, its saved
cross-fitted probabilities), chooses ``C`` and the wrong-tag class weight by 2-fold
cross-validation inside the selection halves (models fitted on the pooled inner folds, judged by
AP + the lowest per-kind recall@K on the target run — by default the largest, the issue's "all of
CoNLL-03 train" setting), fits once on all selection halves, and reports every run's *held-out* half next to cleanlab::

    .venv/bin/python -m bench.fit_error_model \\
        --run 3000:/tmp/p3000.npz --run 5000:/tmp/p5000.npz --run 14041:/tmp/pfull.npz \\
        --out analysis/dep/error_model.json --report bench/results/error_model_fit.json

Each ``--run LIMIT:PROBS[:NOISE_SEED]`` must match how its probabilities were made
(``bench_detection --limit LIMIT --noise-seed NOISE_SEED --save-probs PROBS``; noise seed 13 by
default, subset seed 0, split seed 1 as there).
"""

from __future__ import annotations

import argparse
import json
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

from analysis.dep import compute_dep
from analysis.dep.errormodel import UNIT_TYPES, ErrorModel, fit_error_model  # noqa: E402
from analysis.probs import load_probs  # noqa: E402
from analysis.tags import tag_names  # noqa: E402
from bench.bench_detection import (  # noqa: E402
    DEFAULT_DATA,
    cleanlab_scores,
    cv_criterion,
    model_task_scores,
    ranking_metrics,
    select_hyperparameters,
    span_embeddings,
    subset,
    unit_labels,
)
from bench.noise import inject_noise, summary  # noqa: E402

log = logging.getLogger("fit_error_model")


def prepare(data: str, limit: int, probs_path: str, noise_seed: int, *, device: str,
            embeddings: bool) -> dict[str, Any]:
    """Units, labels, task labels and the selection / held-out split of one run."""
    from analysis.formats import load

    ds = subset(load(data), limit, 0)
    noisy, corr = inject_noise(ds, rate=0.1, seed=noise_seed)
    tags = tag_names(noisy.labels)
    probs = load_probs(probs_path)
    if len(probs) != len(noisy.tasks):
        raise SystemExit(f"{probs_path}: {len(probs)} arrays for {len(noisy.tasks)} tasks "
                         f"(--run {limit}:{probs_path} does not match)")
    emb = span_embeddings(noisy, device=device) if embeddings else None
    res = compute_dep(noisy, probs, tags=tags, span_embeddings=emb,
                      error_model=ErrorModel.untrained(), return_units=True)
    assert res.units is not None
    n = len(noisy.tasks)
    y = np.zeros(n, dtype=bool)
    kinds = np.full(n, "", dtype=object)
    for c in corr:
        y[c.task] = True
        kinds[c.task] = c.kind
    sel = np.random.default_rng(1).random(n) < 0.5
    return {"name": f"{limit}:seed{noise_seed}", "n": n, "units": res.units,
            "labels": unit_labels(noisy, corr, res.units), "y": y, "kinds": kinds, "sel": sel,
            "inner": np.random.default_rng(7).random(n) < 0.5,
            "cleanlab": cleanlab_scores(noisy, probs, tags), "noise": summary(corr)}


def pooled_fit(runs: list[dict[str, Any]], masks: list[np.ndarray], C: float,
               w_tag: float) -> ErrorModel:
    feats = {u: np.concatenate([r["units"][u]["x"][m[r["units"][u]["task"]]]
                                for r, m in zip(runs, masks)]) for u in UNIT_TYPES}
    labs = {u: np.concatenate([r["labels"][u][m[r["units"][u]["task"]]]
                               for r, m in zip(runs, masks)]) for u in UNIT_TYPES}
    return fit_error_model(feats, labs, C=C, class_weight={"wrong_tag": w_tag})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", action="append", required=True, metavar="LIMIT:PROBS[:SEED]")
    ap.add_argument("--data", default=str(DEFAULT_DATA))
    ap.add_argument("--device", default="auto")
    ap.add_argument("--no-embeddings", action="store_true")
    ap.add_argument("--select-on", metavar="LIMIT:seedN",
                    help="run whose inner CV picks C and the class weight (default: the largest)")
    ap.add_argument("--out", help="write the fitted error model (JSON) here")
    ap.add_argument("--report", help="write the per-run report (JSON) here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    t0 = time.time()
    runs = []
    for spec in args.run:
        parts = spec.split(":")
        if len(parts) not in (2, 3) or not parts[0].isdigit():
            raise SystemExit(f"--run {spec!r}: expected LIMIT:PROBS[:NOISE_SEED]")
        seed = int(parts[2]) if len(parts) == 3 else 13
        log.info("run %s: preparing", spec)
        runs.append(prepare(args.data, int(parts[0]), parts[1], seed, device=args.device,
                            embeddings=not args.no_embeddings))

    def metrics(r: dict[str, Any], score: np.ndarray, mask: np.ndarray) -> dict[str, Any]:
        return ranking_metrics(score[mask], r["y"][mask], r["kinds"][mask])

    # hyper-parameters are chosen for the target setting (default: the largest run, the issue's
    # "all of train"); the coefficients are fitted on every run's selection half
    names = [r["name"] for r in runs]
    if args.select_on is not None and args.select_on not in names:
        raise SystemExit(f"--select-on {args.select_on!r}: not one of {names}")
    target = (runs[names.index(args.select_on)] if args.select_on
              else max(runs, key=lambda r: r["n"]))
    best, grid = select_hyperparameters(
        lambda flip, C, w: pooled_fit(runs, [r["sel"] & (r["inner"] ^ flip) for r in runs], C, w),
        lambda em, flip: cv_criterion(model_task_scores(em, target["units"], target["n"]),
                                      target["y"], target["kinds"],
                                      target["sel"] & ~(target["inner"] ^ flip)))
    em = pooled_fit(runs, [r["sel"] for r in runs], best["C"], best["wrong_tag_weight"])
    per_run = {}
    for r in runs:
        score = model_task_scores(em, r["units"], r["n"])
        hold = ~r["sel"]
        dep_h, cl_h = metrics(r, score, hold), metrics(r, r["cleanlab"], hold)
        dep_a = ranking_metrics(score, r["y"], r["kinds"])
        cl_a = ranking_metrics(r["cleanlab"], r["y"], r["kinds"])
        per_run[r["name"]] = {
            "noise": r["noise"],
            "heldout": {"dep": dep_h, "cleanlab": cl_h,
                        "ap_ratio": round(dep_h["ap"] / cl_h["ap"], 3)},
            "all": {"dep": dep_a, "cleanlab": cl_a, "ap_ratio": round(dep_a["ap"] / cl_a["ap"], 3)},
        }
    counts = {u: int(sum(int((r["labels"][u][r["sel"][r["units"][u]["task"]]] != "clean").sum())
                         for r in runs)) for u in UNIT_TYPES}
    meta = {
        "fitted_on": "bench/fit_error_model.py: pooled selection halves of bench_detection runs",
        "runs": [r["name"] for r in runs],
        "noise": {r["name"]: r["noise"] for r in runs},
        "error_units_used": counts,
        "C": best["C"], "class_weight": {"wrong_tag": best["wrong_tag_weight"]},
        "selected_on": target["name"],
        "heldout_ap_ratio_vs_cleanlab": {k: v["heldout"]["ap_ratio"] for k, v in per_run.items()},
    }
    if args.out:
        ErrorModel(em.units, meta).save(args.out)
    report = {"grid": grid, "chosen": best, "runs": per_run, "meta": meta,
              "seconds": round(time.time() - t0, 1)}
    text = json.dumps(report, indent=1)
    print(text)
    if args.report:
        Path(args.report).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
