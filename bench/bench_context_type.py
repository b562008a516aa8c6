"""Experiment for issue 15: a context-type error signal learnt from real corrections.

CleanCoNLL's real errors are mostly systematic type confusions (national teams in sports
results annotated LOC instead of ORG) that a model trained on the noisy corpus repeats, so
DEP and cleanlab, both reading that model's probabilities, miss them (type-change recall@K
0.22 / 0.23 on the held-out half, ``bench_real_errors``).  This bench asks whether the
corrections themselves carry a signal that travels: each gold span is embedded in its
sentence with the packaged MiniLM (the embedding DEP's neighbour signal uses), a logistic
regression on (embedding x gold label) is fitted to "CleanCoNLL changed this span's type" on
one part of the subset, and the sentences of the other part are ranked by their most
suspicious span.  No model probabilities are used.

Splits: ``random`` is ``bench_real_errors``'s held-out half (seed 1, the same sentences), so
the numbers sit next to DEP's and cleanlab's there; ``blocks-N`` holds out alternate blocks of N
consecutive CoNLL-03 train sentences (``sentence_ids.txt``), which keeps most documents whole
on one side — a check that the signal is not only the same match's sentences on both sides.

It is not in the shipped scorer: it needs corrected labels to learn from (in a project, the
tasks reviewers have fixed), and a model fitted on one corpus's corrections is that corpus's.

    .venv/bin/python -m bench.bench_context_type --out bench/results/context_type_cleanconll.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.bench_real_errors import DEFAULT_DIR, ranking_metrics, spans_of, truth

REPO = Path(__file__).resolve().parents[1]


def span_type_errors(orig: Any, clean: Any) -> np.ndarray:
    """(n_gold,) bool over ``orig.corpus.gold_tokens``: the clean labels keep the span's tokens
    and change its type."""
    g = orig.corpus.gold_tokens
    labels = list(g.labels)
    clean_spans = spans_of(clean)
    out = np.zeros(len(g.task), dtype=bool)
    for j, (t, a, b, lab) in enumerate(zip(g.task.tolist(), g.start.tolist(), g.end.tolist(),
                                           g.label.tolist())):
        out[j] = any((ca, cb) == (a, b) and cl != labels[lab] for ca, cb, cl in clean_spans[t])
    return out


def features(emb: np.ndarray, label: np.ndarray, n_labels: int) -> np.ndarray:
    """(n, n_labels * (dim + 1)): the embedding in the block of its gold label, and the label."""
    oh = np.eye(n_labels, dtype=np.float32)[label]
    x = (emb[:, None, :] * oh[:, :, None]).reshape(len(emb), -1)
    return np.concatenate([x, oh], axis=1)


def evaluate(x: np.ndarray, span_err: np.ndarray, span_task: np.ndarray, hold: np.ndarray,
             y: np.ndarray, kinds: np.ndarray, *, C: float) -> dict[str, Any]:
    from sklearn.linear_model import LogisticRegression

    fit = ~hold[span_task]
    clf = LogisticRegression(C=C, max_iter=3000, class_weight="balanced")
    clf.fit(x[fit], span_err[fit])
    p = clf.predict_proba(x)[:, 1]
    score = np.zeros(len(y))
    np.maximum.at(score, span_task, p)
    m = ranking_metrics(score[hold], y[hold], kinds[hold])
    m["fit_spans"], m["fit_span_errors"] = int(fit.sum()), int(span_err[fit].sum())
    return m


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data-dir", default=str(DEFAULT_DIR))
    ap.add_argument("--C", type=float, default=0.1, help="inverse regularisation (default 0.1)")
    ap.add_argument("--blocks", type=int, nargs="*", default=[500, 1500])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out")
    args = ap.parse_args(argv)
    from analysis.formats import load
    from ls_backend.runtime.embed import embed_gold_spans

    d = Path(args.data_dir)
    if not (d / "original.conll").is_file():
        print(f"skip: {d}/original.conll not found", file=sys.stderr)
        return 0
    orig = load(d / "original.conll", format="conll")
    clean = load(d / "clean.conll", format="conll")
    y, kinds = truth(orig, clean)
    t0 = time.time()
    emb = embed_gold_spans(orig.corpus, orig.labels, device=args.device)
    t_emb = time.time() - t0
    g = orig.corpus.gold_tokens
    span_err = span_type_errors(orig, clean)
    x = features(emb, g.label.astype(np.int64), len(g.labels))
    sid = np.array([int(v) for v in (d / "sentence_ids.txt").read_text().split()])
    splits = {"random (bench_real_errors, seed 1)":
              np.random.default_rng(1).random(len(orig.tasks)) >= 0.5}
    for b in args.blocks:
        splits[f"blocks-{b}"] = (sid // b) % 2 == 1
    t0 = time.time()
    res = {name: evaluate(x, span_err, g.task, hold, y, kinds, C=args.C)
           for name, hold in splits.items()}
    ref_path = REPO / "bench" / "results" / "real_errors_conll03_cpu.json"
    ref = json.loads(ref_path.read_text()) if ref_path.is_file() else {}
    out = {
        "bench": "context_type", "data": str(d), "sentences": len(orig.tasks),
        "errors": int(y.sum()), "span_type_errors": int(span_err.sum()),
        "gold_spans": len(span_err), "C": args.C,
        "signal": "logistic regression on (MiniLM span embedding x gold label) -> CleanCoNLL "
                  "changed this span's type; sentence score = its highest span probability; "
                  "no model probabilities",
        "heldout": res,
        "same_split_reference": {k: ref.get(k, {}).get("heldout") for k in ("dep", "cleanlab")},
        "timings": {"embeddings_s": round(t_emb, 1), "fits_s": round(time.time() - t0, 1)},
    }
    text = json.dumps(out, indent=1)
    if args.out:
        Path(args.out).write_text(text + "\n")
    for name, m in res.items():
        print(f"{name}: AP {m['ap']:.3f}  AUROC {m['auroc']:.3f}  recall@K "
              + ", ".join(f"{k} {v:.2f}" for k, v in m["recall_at_k"].items()))
    for k, m in out["same_split_reference"].items():
        if m:
            print(f"{k} (same random half, bench_real_errors): AP {m['ap']:.3f}  AUROC "
                  f"{m['auroc']:.3f}  type recall@K {m['recall_at_k']['type']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
