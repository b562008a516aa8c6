"""Dataset analysis throughput: DEP + ``analysis.review.analyze`` on synthetic columns.

Synthetic columnar data (no Python objects per task): ``n`` tasks of 8-16 three-character
tokens drawn from a 5,000-word vocabulary, ~1.5 gold spans per task over 3 labels (7 IOB2
tags), stored predictions equal to gold except ~5 % relabelled / shifted / dropped plus ~2 %
ghosts, per-token probabilities (float32, peaked on a 3 %-flipped gold tag).  The corpus is
built with :meth:`analysis.corpus.Corpus.from_columns` (not timed); timed are
:func:`analysis.dep.compute_dep` (the default error-model scorer), :func:`analysis.review.analyze`
on its result, and the ``--json`` text.  Duplicate search uses normalised-text hashing (the
TF-IDF near-duplicate pass runs up to ``near_dup_max`` = 50k tasks).

Each size runs in its own process so the peak RSS (``ru_maxrss``) is that size's own.
``bench/bench_vs_old.py`` runs this and the previous tree's version on the same data.

    .venv/bin/python bench/bench_analysis.py                 # 100k, 300k, 1M
    .venv/bin/python bench/bench_analysis.py --sizes 20000   # quick
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def make_inputs(n: int, seed: int = 0) -> tuple[object, object]:
    """``(corpus, model output)`` of ``n`` synthetic tasks (the same draws as the previous
    tree's ``make_columns``, so both analyse the same spans and probabilities)."""
    from analysis.corpus import Corpus
    from analysis.probs import ModelOutput
    from analysis.spans import SpanTable
    from analysis.tags import TagSet

    rng = np.random.default_rng(seed)
    labels = ("PER", "LOC", "ORG")
    ts = TagSet.for_labels(labels)
    n_tok = rng.integers(8, 17, n)
    N = int(n_tok.sum())
    offs = np.r_[0, np.cumsum(n_tok)]
    alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
    words = ["".join(alphabet[[i // 1296 % 36, i // 36 % 36, i % 36]]) for i in range(5000)]
    vocab = np.array(words, dtype=object)
    tok_id = rng.zipf(1.3, N) % 5000
    tokens = vocab[tok_id]
    # gold spans: one or two per task, 1-2 tokens, non-overlapping (first half / second half)
    k = rng.integers(1, 3, n)
    t1 = np.repeat(np.arange(n), k)
    second = np.r_[np.zeros(0, bool), np.concatenate([[False], np.diff(t1) == 0])]
    half = n_tok[t1] // 2
    start_tok = np.where(second, half, 0) + rng.integers(0, 3, t1.size)
    length = rng.integers(1, 3, t1.size)
    end_tok = np.minimum(start_tok + length, np.where(second, n_tok[t1], half))
    ok = end_tok > start_tok
    t1, start_tok, end_tok = t1[ok], start_tok[ok], end_tok[ok]
    lab = rng.integers(0, 3, t1.size).astype(np.int32)
    # character offsets: token j of a task starts at 4*j (three characters and a space)
    gold = SpanTable.from_arrays(t1, start_tok * 4, end_tok * 4 - 1, lab, labels)
    token_gold = np.zeros(N, dtype=np.int64)
    gs = offs[gold.task] + gold.start // 4
    ge = offs[gold.task] + (gold.end + 1) // 4
    token_gold[gs] = 1 + 2 * gold.label
    inside = np.repeat(gs, ge - gs) + (np.arange(int((ge - gs).sum()))
                                       - np.repeat(np.cumsum(ge - gs) - (ge - gs), ge - gs))
    cont = np.isin(inside, gs, invert=True)
    token_gold[inside[cont]] = np.repeat(2 + 2 * gold.label, ge - gs)[cont]
    # predictions: perturb 5 %, add 2 % ghosts
    plab = gold.label.copy()
    pend = gold.end.copy()
    r = rng.random(len(gold))
    plab[r < 0.02] = (plab[r < 0.02] + 1) % 3
    shift = (r >= 0.02) & (r < 0.035)
    pend[shift] = gold.end[shift] + 4
    keep = ~((r >= 0.035) & (r < 0.05))  # drop ~ 1.5 %
    gh_t = rng.choice(n, int(0.02 * n), replace=False)
    gh_s = (n_tok[gh_t] - 1) * 4
    ptask = np.r_[gold.task[keep], gh_t]
    pstart = np.r_[gold.start[keep], gh_s]
    pend_ = np.minimum(np.r_[pend[keep], gh_s + 3], n_tok[ptask] * 4 - 1)
    plab_ = np.r_[plab[keep], rng.integers(0, 3, gh_t.size).astype(np.int32)]
    pred = SpanTable.from_arrays(ptask, pstart, pend_, plab_, labels)
    same = np.r_[pred.task[1:] == pred.task[:-1], False]
    nxt = np.r_[pred.start[1:], 0]
    bad = same & (pred.end > nxt)
    pred = SpanTable(pred.task, pred.start, np.where(bad, nxt, pred.end), pred.label, labels)
    okp = pred.end > pred.start
    pred = SpanTable(pred.task[okp], pred.start[okp], pred.end[okp], pred.label[okp], labels)
    probs = rng.random((N, len(ts)), dtype=np.float32) * 0.1
    predicted = token_gold.copy()
    flip = rng.random(N) < 0.03
    predicted[flip] = rng.integers(0, len(ts), int(flip.sum()))
    probs[np.arange(N), predicted] += 3.0
    probs /= probs.sum(axis=1, keepdims=True)
    ann = np.array(["a@x", "b@x", "c@x"], dtype=object)[rng.integers(0, 3, n)]
    split = np.array(["train", "validation", "test"], dtype=object)[rng.integers(0, 3, n)]
    # the texts: the tokens joined by single spaces (one join, then one slice per task)
    big = " ".join(tokens.tolist())
    texts = [big[4 * a:4 * b - 1] for a, b in zip(offs[:-1].tolist(), offs[1:].tolist())]
    local = np.arange(N) - np.repeat(offs[:-1], n_tok)
    corpus = Corpus.from_columns(
        labels, texts, list(range(1, n + 1)), annotated=np.ones(n, bool), token_offsets=offs,
        token_start=local * 4, token_end=local * 4 + 3, tokens=tokens, gold=gold, pred=pred,
        pred_score=np.full(n, 0.9), split=split, annotator=ann)
    output = ModelOutput(probs, offs.copy(), np.ones(n, bool), ts)
    return corpus, output


def one(n: int) -> dict[str, object]:
    import io

    from analysis.dep import compute_dep
    from analysis.review import analyze

    t0 = time.perf_counter()
    corpus, output = make_inputs(n)
    t_gen = time.perf_counter() - t0
    rss_gen = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    dep = compute_dep(corpus, output)
    t_dep = time.perf_counter() - t0
    t0 = time.perf_counter()
    res = analyze(corpus, dep=dep)
    t_an = time.perf_counter() - t0
    t0 = time.perf_counter()
    buf = io.StringIO()
    res.write_json(buf)
    t_json = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    alerts = [a.name for a in res.alerts]
    return {
        "tasks": n, "tokens": int(output.probs.shape[0]), "generate_s": round(t_gen, 2),
        "dep_s": round(t_dep, 2), "analyze_s": round(t_an, 2), "json_s": round(t_json, 2),
        "dep_plus_analyze_s": round(t_dep + t_an, 2),
        "tasks_per_s": round(n / (t_dep + t_an)), "peak_rss_mb_after_generate": round(rss_gen),
        "peak_rss_mb": round(rss), "alerts": alerts,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.one:
        print(json.dumps(one(a.one)))
        return
    for n in a.sizes:
        out = subprocess.run([sys.executable, __file__, "--one", str(n)], capture_output=True,
                             text=True, check=False)
        if out.returncode != 0:
            print(f"n={n}: failed\n{out.stderr[-2000:]}")
            continue
        print(out.stdout.strip().splitlines()[-1], flush=True)


if __name__ == "__main__":
    main()
