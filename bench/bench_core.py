"""Benchmark of the core: parse + align + error types + metrics, next to seqeval.

Parts (all in one run, JSON on stdout and ``--out``):

``conll03_train_ls_json``
    CoNLL-2003 train (14,041 sentences) is loaded with ``analysis.formats``, given a deterministic
    perturbed copy of its spans as predictions, and written as one Label Studio JSON export
    (setup, not timed).  Timed: ``io.load`` of that JSON, ``gold_table``/``pred_table``,
    ``align``, ``span_prf`` + ``confusion`` + ``error_distribution``.  seqeval's strict IOB2
    ``classification_report`` runs on the same data (tags prepared outside its timing).
``synthetic``
    Columnar span arrays generated directly (vectorised) for 14,041 / 100k / 1M tasks; timed:
    align + metrics.  seqeval runs on the same data up to ``--seqeval-max-tasks`` tasks (default
    100k: a 1M run takes minutes); larger sizes report seqeval as skipped.
``synthetic_json``
    LS JSON exports of synthetic tasks (default 10k and 100k tasks) parsed with ``io.load`` and
    then aligned, to show how the parse scales.

Run: ``.venv/bin/python bench/bench_core.py [--out bench/core.json]``.  Each timing is the best
of ``--repeat`` runs (default 3) for the fast steps, one run for parsing and seqeval.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from analysis import formats as io  # noqa: E402
from analysis.errors import align  # noqa: E402
from analysis.metrics import confusion, error_distribution, span_prf  # noqa: E402
from analysis.schemes import encode  # noqa: E402
from analysis.spans import Span, SpanTable, TokenSpan  # noqa: E402

SHARED = Path(os.environ.get("NERQ_SHARED_DATA", REPO.parent / "shared" / "data"))
LABELS = ("LOC", "MISC", "ORG", "PER")


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def core(gold: SpanTable, pred: SpanTable, n_tasks: int) -> dict[str, Any]:
    al = align(gold, pred, n_tasks=n_tasks)
    rep = span_prf(gold, pred, alignment=al)
    conf = confusion(gold, pred, al)
    dist = error_distribution(gold, pred, al)
    return {"counts": al.counts(), "micro_f1": rep.micro["f1-score"],
            "conf_total": int(conf.counts.sum()), "dist_total": int(dist.counts.sum())}


def seqeval_report(true_tags: list[list[str]], pred_tags: list[list[str]]) -> dict:
    from seqeval.metrics import classification_report
    from seqeval.scheme import IOB2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classification_report(true_tags, pred_tags, mode="strict", scheme=IOB2,
                                     output_dict=True)


def max_abs_diff(ours: dict, ref: dict) -> float:
    if list(ours) != list(ref):
        return float("inf")
    return max(
        abs(ours[k][m] - float(ref[k][m])) for k in ref for m in ("precision", "recall", "f1-score")
    )


# --------------------------------------------------------------------------- perturbation


def perturb_spans(spans: list[TokenSpan], n: int, rng: np.random.Generator) -> list[TokenSpan]:
    """Setup helper (not timed): drop / relabel / shift some spans, add a few ghosts."""
    out: list[TokenSpan] = []
    for s in spans:
        u = rng.random()
        if u < 0.05:
            continue
        if u < 0.10:
            out.append(TokenSpan(s.start, s.end, LABELS[int(rng.integers(4))]))
        elif u < 0.15:
            out.append(TokenSpan(s.start, min(n, s.end + 1), s.label))
        elif u < 0.20 and s.end - s.start > 1:
            out.append(TokenSpan(s.start + 1, s.end, s.label))
        else:
            out.append(s)
    if n and rng.random() < 0.05:
        i = int(rng.integers(n))
        out.append(TokenSpan(i, i + 1, LABELS[int(rng.integers(4))]))
    kept: list[TokenSpan] = []
    for s in sorted(out):
        if not kept or kept[-1].end <= s.start:
            kept.append(s)
    return kept


# --------------------------------------------------------------------------- CoNLL-03 train


def bench_conll(tmp: Path, repeat: int) -> dict[str, Any]:
    from analysis.dataset import token_spans

    path = SHARED / "conll2003" / "train.conll"
    if not path.is_file():
        return {"skipped": f"{path} not present"}
    ds = io.load(path)
    rng = np.random.default_rng(0)
    true_tags, pred_tags = [], []
    for t in ds.tasks:
        g = token_spans(t, "gold", warn=False)
        p = perturb_spans(g, len(t.tokens), rng)
        starts, ends = t.tokens.starts, t.tokens.ends
        t.pred = tuple(Span(int(starts[s.start]), int(ends[s.end - 1]), s.label) for s in p)
        true_tags.append(encode(len(t.tokens), g, "iob2"))
        pred_tags.append(encode(len(t.tokens), p, "iob2"))
    js = tmp / "conll03_train.json"
    io.save(ds, js, format="ls-json")

    res: dict[str, Any] = {"tasks": len(ds.tasks), "json_mb": round(js.stat().st_size / 1e6, 1)}
    t0 = time.perf_counter()
    ds2 = io.load(js)
    t_load_first = time.perf_counter() - t0  # cold: first parse in this process
    t_load, ds2 = best_of(lambda: io.load(js), repeat)
    t_tables, (gold, pred) = best_of(lambda: (ds2.gold_table(), ds2.pred_table()), repeat)
    t_core, out = best_of(lambda: core(gold, pred, len(ds2.tasks)), repeat)
    t_align, _ = best_of(lambda: align(gold, pred, n_tasks=len(ds2.tasks)), repeat)
    ours = span_prf(gold, pred).to_dict()
    t0 = time.perf_counter()
    ref = seqeval_report(true_tags, pred_tags)
    t_seq = time.perf_counter() - t0
    total = t_load + t_tables + t_core
    res.update(
        gold_spans=len(gold), pred_spans=len(pred), result=out,
        seconds={"io_load_json": t_load, "io_load_json_first": t_load_first, "tables": t_tables, "align": t_align,
                 "align_plus_metrics": t_core, "total_parse_to_metrics": total,
                 "seqeval_classification_report": t_seq},
        tasks_per_s={"total": len(ds2.tasks) / total, "core_only": len(ds2.tasks) / t_core,
                     "seqeval": len(ds2.tasks) / t_seq},
        speedup_core_vs_seqeval=t_seq / t_core,
        max_abs_diff_vs_seqeval=max_abs_diff(ours, ref),
    )
    return res


# --------------------------------------------------------------------------- synthetic


def synthetic(n_tasks: int, seed: int = 0) -> tuple[SpanTable, SpanTable, np.ndarray]:
    """Token-offset gold/pred tables for ``n_tasks`` tasks, generated without Python loops.

    Returns ``gold, pred, n_tokens (n_tasks,)``.
    """
    rng = np.random.default_rng(seed)
    k = np.minimum(rng.poisson(1.7, n_tasks), 6)
    n = int(k.sum())
    task = np.repeat(np.arange(n_tasks, dtype=np.int64), k)
    gap = rng.integers(0, 4, n)
    length = rng.integers(1, 5, n)
    step = gap + length
    csum = np.cumsum(step)
    first = np.cumsum(k) - k  # index of each task's first span
    base = np.repeat(csum[first[k > 0]] - step[first[k > 0]], k[k > 0])
    end = csum - base
    start = end - length
    label = rng.integers(0, 4, n).astype(np.int32)
    n_tokens = np.zeros(n_tasks, dtype=np.int64)
    last = first + k - 1
    n_tokens[k > 0] = end[last[k > 0]]
    n_tokens += rng.integers(1, 6, n_tasks)
    gold = SpanTable.from_arrays(task, start, end, label, LABELS)

    # prediction: drop 5 %, relabel 5 %, shrink 5 %, grow into a free gap 5 %, ghosts 5 %
    u = rng.random(n)
    keep = u >= 0.05
    p_label = np.where((u >= 0.05) & (u < 0.10), rng.integers(0, 4, n), label).astype(np.int32)
    p_start = np.where((u >= 0.10) & (u < 0.15) & (length > 1), start + 1, start)
    nxt_start = np.where(np.r_[task[1:] == task[:-1], False], np.r_[start[1:], 0], n_tokens[task])
    p_end = np.where((u >= 0.15) & (u < 0.20) & (nxt_start > end), end + 1, end)
    g_mask = (gap >= 2) & (rng.random(n) < 0.05)  # gap >= 2: clear of a grown neighbour
    pred = SpanTable.from_arrays(
        np.concatenate([task[keep], task[g_mask]]),
        np.concatenate([p_start[keep], start[g_mask] - 1]),
        np.concatenate([p_end[keep], start[g_mask]]),
        np.concatenate([p_label[keep], rng.integers(0, 4, int(g_mask.sum())).astype(np.int32)]),
        LABELS,
    )
    return gold, pred, n_tokens


def tags_of(table: SpanTable, n_tokens: np.ndarray) -> list[list[str]]:
    per = table.to_spans(len(n_tokens))
    return [
        encode(int(n), [TokenSpan(s.start, s.end, s.label) for s in spans], "iob2")
        for n, spans in zip(n_tokens.tolist(), per)
    ]


def bench_synthetic(sizes: list[int], repeat: int, seqeval_max: int) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        t0 = time.perf_counter()
        gold, pred, n_tok = synthetic(n)
        t_gen = time.perf_counter() - t0
        t_core, out = best_of(lambda: core(gold, pred, n), repeat if n < 1_000_000 else 1)
        t_align, _ = best_of(lambda: align(gold, pred, n_tasks=n), repeat if n < 1_000_000 else 1)
        row: dict[str, Any] = {
            "tasks": n, "gold_spans": len(gold), "pred_spans": len(pred),
            "seconds": {"generate": t_gen, "align": t_align, "align_plus_metrics": t_core},
            "tasks_per_s": {"core_only": n / t_core}, "result": out,
        }
        if n <= seqeval_max:
            tt, pt = tags_of(gold, n_tok), tags_of(pred, n_tok)
            t0 = time.perf_counter()
            ref = seqeval_report(tt, pt)
            t_seq = time.perf_counter() - t0
            row["seconds"]["seqeval_classification_report"] = t_seq
            row["tasks_per_s"]["seqeval"] = n / t_seq
            row["speedup_core_vs_seqeval"] = t_seq / t_core
            row["max_abs_diff_vs_seqeval"] = max_abs_diff(span_prf(gold, pred).to_dict(), ref)
        else:
            row["seqeval"] = f"skipped above {seqeval_max} tasks (--seqeval-max-tasks)"
        rows.append(row)
        print(f"synthetic {n}: {row['seconds']}", file=sys.stderr)
    return rows


def synthetic_ls_json(n: int, path: Path) -> None:
    """Write ``n`` synthetic tasks as a Label Studio export with annotations + predictions."""
    gold, pred, n_tok = synthetic(n, seed=1)
    words = [f"w{i}" for i in range(int(n_tok.max()) + 1)]
    # token i is "w<i>", so character offsets follow from the token index
    wl = np.array([len(w) for w in words])
    cstart = np.r_[0, np.cumsum(wl + 1)[:-1]]
    cend = cstart + wl
    g_spans, p_spans = gold.to_spans(n), pred.to_spans(n)

    def regions(spans: list[Span], text: str, pre: str) -> list[dict[str, Any]]:
        out = []
        for j, s in enumerate(spans):
            a, b = int(cstart[s.start]), int(cend[s.end - 1])
            out.append({"id": f"{pre}{j}", "from_name": "label", "to_name": "text",
                        "type": "labels",
                        "value": {"start": a, "end": b, "text": text[a:b], "labels": [s.label]}})
        return out

    tasks = []
    for i in range(n):
        text = " ".join(words[: int(n_tok[i])])
        tasks.append({
            "id": i + 1, "data": {"text": text},
            "annotations": [{"id": i + 1, "result": regions(g_spans[i], text, "g")}],
            "predictions": [{"model_version": "bench", "result": regions(p_spans[i], text, "p")}],
        })
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(tasks, fh)


def bench_synthetic_json(sizes: list[int], tmp: Path) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        path = tmp / f"synthetic_{n}.json"
        synthetic_ls_json(n, path)
        t0 = time.perf_counter()
        ds = io.load(path)
        t_load = time.perf_counter() - t0
        t0 = time.perf_counter()
        gold, pred = ds.gold_table(), ds.pred_table()
        t_tables = time.perf_counter() - t0
        t0 = time.perf_counter()
        out = core(gold, pred, len(ds.tasks))
        t_core = time.perf_counter() - t0
        total = t_load + t_tables + t_core
        rows.append({
            "tasks": n, "json_mb": round(path.stat().st_size / 1e6, 1),
            "seconds": {"io_load_json": t_load, "tables": t_tables, "align_plus_metrics": t_core,
                        "total": total},
            "tasks_per_s": {"total": n / total, "io_load_json": n / t_load},
            "result": out,
        })
        print(f"synthetic json {n}: {rows[-1]['seconds']}", file=sys.stderr)
        path.unlink()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the JSON result here")
    ap.add_argument("--sizes", default="14041,100000,1000000",
                    help="synthetic task counts (comma separated)")
    ap.add_argument("--json-sizes", default="10000,100000",
                    help="synthetic LS JSON sizes to parse (comma separated; empty: skip)")
    ap.add_argument("--seqeval-max-tasks", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--skip-conll", action="store_true")
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",") if x]
    json_sizes = [int(x) for x in args.json_sizes.split(",") if x]
    import seqeval

    result: dict[str, Any] = {
        "machine": {"python": platform.python_version(), "numpy": np.__version__,
                    "seqeval": getattr(seqeval, "__version__", "1.2.2"),
                    "cpus": os.cpu_count(), "platform": platform.platform()},
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        if not args.skip_conll:
            result["conll03_train_ls_json"] = bench_conll(tmp, args.repeat)
            print(f"conll03: {result['conll03_train_ls_json'].get('seconds')}", file=sys.stderr)
        result["synthetic"] = bench_synthetic(sizes, args.repeat, args.seqeval_max_tasks)
        if json_sizes:
            result["synthetic_json"] = bench_synthetic_json(json_sizes, tmp)
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
