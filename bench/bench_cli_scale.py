"""The real CLI path at scale: ``ner-quality analyze --data FILE --probs P --json`` from files.

Inputs (built once into ``--workdir``, reused on later runs):

* CoNLL-03 train (14,041 sentences) as is, and replicated x10 (140,410) and x71 (996,911
  sentences, ~1 M tasks); every replica after the first ends its sentences with a marker token
  ``r<k>`` so that the copies are not exact duplicates of each other;
* the same datasets as Label Studio JSON exports (``--formats ls-json``);
* peaked synthetic probabilities in the columnar format (:mod:`analysis.probs`): the gold tag
  gets a random logit boost, 3 % of tokens are flipped to a random tag.

Each run is a fresh ``ner-quality`` process (``.venv/bin/python -m ls_backend.cli``), timed
wall-clock, peak RSS from ``getrusage``; stdout is discarded after checking it is one JSON
object with one task record per task.  ``--old-tree DIR`` also times the code in DIR (e.g. a
``git archive`` of an earlier commit) on the inputs its format can read (the per-task ``.npz``).

    .venv/bin/python bench/bench_cli_scale.py --sizes 14k 140k 1m --out bench/results/cli_scale.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

TRAIN = REPO.parent / "shared" / "data" / "conll2003" / "train.conll"
SIZES = {"14k": 1, "140k": 10, "1m": 71}


def make_conll(dst: Path, copies: int) -> Path:
    """CoNLL-03 train ``copies`` times; replica k > 0 gets a marker token ``r<k>`` per sentence."""
    if dst.exists():
        return dst
    blocks = [b for b in TRAIN.read_text(encoding="utf-8").split("\n\n") if b.strip()]
    tmp = dst.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in range(copies):
            for b in blocks:
                fh.write(b if r == 0 else f"{b}\nr{r}\tO")
                fh.write("\n\n")
    tmp.replace(dst)
    return dst


def make_ls_json(conll: Path, dst: Path) -> Path:
    """The CoNLL file as a Label Studio export (tasks with ids, one annotation each)."""
    if dst.exists():
        return dst
    from analysis.formats import read_conll, to_ls_tasks

    tasks = to_ls_tasks(read_conll(conll))
    for i, t in enumerate(tasks):
        t["id"] = i + 1
    tmp = dst.with_suffix(".tmp")
    tmp.write_text(json.dumps(tasks, ensure_ascii=False), encoding="utf-8")
    tmp.replace(dst)
    return dst


def peaked_probs(gold: np.ndarray, k: int, *, seed: int, flip: float) -> np.ndarray:
    """(n, k) float32 probabilities peaked on the gold tag ids ``gold`` (n,): a ``flip``
    share of tokens gets a uniformly random target, then softmax(N(0, 1) logits + U(2, 7) on
    the target) — peaked but never one-hot.  Generated in chunks of 2**20 tokens."""
    rng = np.random.default_rng(seed)
    n = gold.shape[0]
    target = gold.copy()
    fl = rng.random(n) < flip
    target[fl] = rng.integers(0, k, int(fl.sum()))
    probs = np.empty((n, k), dtype=np.float32)
    for a in range(0, n, 1 << 20):  # in chunks: 15 M x 9 floats at the largest size
        b = min(n, a + (1 << 20))
        z = rng.normal(0.0, 1.0, (b - a, k)).astype(np.float32)
        z[np.arange(b - a), target[a:b]] += rng.uniform(2, 7, b - a).astype(np.float32)
        z -= z.max(axis=1, keepdims=True)
        np.exp(z, out=z)
        z /= z.sum(axis=1, keepdims=True)
        probs[a:b] = z
    return probs


def make_probs(conll: Path, dst: Path, *, seed: int = 0, flip: float = 0.03,
               per_task: bool = False) -> Path:
    """Peaked synthetic probabilities for every task of ``conll`` (columnar, or per task)."""
    if dst.exists():
        return dst
    from analysis.formats import read_conll
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet

    corpus = read_conll(conll).corpus
    ts = TagSet.for_labels(corpus.labels)
    probs = peaked_probs(corpus.gold_tags(ts), len(ts), seed=seed, flip=flip)
    out = ModelOutput(probs, corpus.token_offsets.copy(), np.ones(corpus.n_tasks, bool), ts)
    tmp = dst.with_name(dst.stem + ".tmp.npz")
    if per_task:
        np.savez(tmp, *out.per_task())
    else:
        save_output(tmp, out)
    tmp.replace(dst)
    return dst


def run_cli(python: str, tree: Path, args: list[str], n_tasks: int, *, timeout: float
            ) -> dict[str, Any]:
    """One ``analyze`` process: wall time, its own peak RSS (``wait4``), a check of its JSON."""
    import tempfile

    env = {**os.environ, "PYTHONPATH": str(tree), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1", "NERQ_CACHE_DIR": "/tmp/nerq-bench-cache"}
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        t0 = time.perf_counter()
        p = subprocess.Popen([python, "-m", "ls_backend.cli", "analyze", *args, "--json"],
                             cwd=tree, env=env, stdout=out, stderr=err)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                os.wait4(p.pid, 0)
                return {"seconds": None, "timeout_s": timeout, "ok": False}
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        ok = p.returncode == 0
        n_out = None
        if ok:
            out.seek(0)
            obj = json.load(out)
            n_out = len(obj["tasks"])
            ok = n_out == n_tasks and {"metrics", "alerts", "tasks"} == set(obj)
        err.seek(0)
        tail = err.read().decode(errors="replace")[-300:] if not ok else None
    return {"seconds": round(wall, 2), "ok": ok, "tasks_out": n_out,
            "peak_rss_mb": round(usage.ru_maxrss / 1024, 1), "stderr_tail": tail}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=["14k", "140k", "1m"], choices=list(SIZES))
    ap.add_argument("--formats", nargs="+", default=["conll"], choices=["conll", "ls-json"])
    ap.add_argument("--workdir", default="/tmp/nerq-bench-scale")
    ap.add_argument("--repeat", type=int, default=2, help="runs per input (the best is reported)")
    ap.add_argument("--old-tree", help="also time this source tree (per-task .npz only)")
    ap.add_argument("--old-max", default="14k", choices=list(SIZES),
                    help="largest size the old tree is run on (it is O(n^2) in tasks)")
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", help="write the JSON result here")
    args = ap.parse_args(argv)
    if not TRAIN.is_file():
        print(f"skipped: {TRAIN} not present", file=sys.stderr)
        return 0
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    python = str(REPO / ".venv" / "bin" / "python")
    rows = []
    for size in args.sizes:
        conll = make_conll(work / f"train_{size}.conll", SIZES[size])
        probs = make_probs(conll, work / f"probs_{size}.npz")
        n_tasks = 14041 * SIZES[size]
        for fmt in args.formats:
            data = conll if fmt == "conll" else make_ls_json(conll, work / f"train_{size}.json")
            # --no-embed: the parse + analysis path is measured; the span embedding (automatic
            # up to 20,000 tasks, ~25 s per 5,000 sentences) is the model's cost, not this one
            runs = [run_cli(python, REPO, ["--data", str(data), "--probs", str(probs),
                                           "--no-embed"], n_tasks,
                            timeout=args.timeout) for _ in range(args.repeat)]
            best = min((r for r in runs if r["ok"]), key=lambda r: r["seconds"], default=runs[0])
            row: dict[str, Any] = {"size": size, "tasks": n_tasks, "format": fmt,
                                   "file_mb": round(data.stat().st_size / 2**20, 1),
                                   "new": best, "new_all_s": [r["seconds"] for r in runs]}
            if args.old_tree and list(SIZES).index(size) <= list(SIZES).index(args.old_max):
                old_probs = make_probs(conll, work / f"probs_{size}_per_task.npz", per_task=True)
                tags = "O,B-LOC,I-LOC,B-MISC,I-MISC,B-ORG,I-ORG,B-PER,I-PER"
                old = [run_cli(python, Path(args.old_tree), ["--data", str(data), "--probs",
                                                             str(old_probs), "--labels", tags],
                               n_tasks, timeout=args.timeout) for _ in range(args.repeat)]
                row["old"] = min((r for r in old if r["ok"]), key=lambda r: r["seconds"],
                                 default=old[0])
                if row["old"]["ok"] and best["ok"]:
                    row["speedup"] = round(row["old"]["seconds"] / best["seconds"], 1)
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
    per_fmt: dict[str, list[float]] = {}
    for r in rows:
        if r["new"]["ok"]:
            per_fmt.setdefault(r["format"], []).append(round(1e6 * r["new"]["seconds"]
                                                             / r["tasks"], 1))
    result = {"bench": "cli_scale", "machine": f"{os.cpu_count()} cores", "rows": rows,
              "us_per_task": per_fmt}
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
