"""This tree against an earlier one, in one run: ``bench_core.py``, the analysis, DEP.

The earlier tree is a plain copy of the repository at a commit (``git archive <commit> | tar -x
-C DIR``); its code runs there (``PYTHONPATH=DIR``) with this tree's ``.venv``, one process after
the other with this tree's, size by size, so both see the same machine state.  Each timing is
the best of ``--repeat`` runs inside its process.

* ``core``: each tree's own ``bench_core.py`` (load of the CoNLL-03 train LS export, align +
  metrics at 14k / 100k / 1M synthetic tasks, LS JSON parse at 10k / 100k); ratio = old / new.
* ``analysis``: the same synthetic tasks (``bench_analysis.py``'s generator: the same draws in
  both trees; the earlier generator's stand-in texts and span forms are replaced by the real
  ones) analysed with their probabilities: the earlier ``analyze_columns`` (DEP = token margin
  only) + ``to_dict`` + ``json.dumps`` against ``compute_dep`` (the default learned error model,
  more work) + ``analyze`` + ``write_json``.  Not like for like, so two more:
* ``analysis_no_probs`` (like for like): the same tasks without probabilities (metrics, error
  types, alerts from the stored predictions; no DEP);
* ``dep`` (like for like): DEP of both trees on CoNLL-03 train with 10 % injected noise
  (``bench/noise.py``) and peaked probabilities drawn from the clean gold (the detection bench's
  setting without a training): the default scorer replicated to ``--dep-copies``, and on one
  copy the default scorer with (random, seeded) span embeddings (the neighbour signal) and the
  ``signals`` scorer without and with them; timed: loading the CoNLL file and ``compute_dep``;
  reported: ``max |task DEP(old) - task DEP(new)|``.

``--allocator cli`` runs both trees with the glibc malloc settings of the CLI's batch commands
(large blocks from the heap, never trimmed: far fewer page faults on a VM).

    .venv/bin/python bench/bench_vs_old.py --old-tree /tmp/old --out bench/results/vs_old.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
TRAIN = REPO.parent / "shared" / "data" / "conll2003" / "train.conll"


#: glibc's malloc settings of the ``ner-quality`` batch commands (``cli.retain_freed_memory``),
#: given to both trees' processes through glibc's environment variables with ``--allocator cli``
CLI_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(2**31 - 1)}
ENV: dict[str, str] = {}


def run(tree: Path, args: list[str], timeout: float, *, parse: bool = True) -> Any:
    env = {**os.environ, **ENV, "PYTHONPATH": str(tree)}
    p = subprocess.run([str(REPO / ".venv" / "bin" / "python"), *args], cwd=tree, env=env,
                       capture_output=True, text=True, timeout=timeout)
    if p.returncode != 0:
        print(f"{tree}: {' '.join(args)} failed:\n{p.stderr[-1500:]}", file=sys.stderr)
        return None
    if not parse:
        return True
    last = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    return json.loads(last[-1]) if last else None


_ANALYSIS = {
    "old": """
import dataclasses, json, resource, sys, time
import numpy as np
sys.path.insert(0, "bench")
from bench_analysis import make_columns
from analysis.analyze import analyze_columns
cols = make_columns(N)
# the texts, tokens and span surface forms this tree's generator writes (same draws): the old
# generator's stand-ins ("t<i>" texts, "w1 w2" forms) would make the two analyses see other data
alphabet = np.array(list("abcdefghijklmnopqrstuvwxyz0123456789"))
words = np.array(["".join(alphabet[[i // 1296 % 36, i // 36 % 36, i % 36]]) for i in range(5000)],
                 dtype=object)
tokens = words[np.fromiter((int(w[1:]) for w in cols.token_text), np.int64, len(cols.token_text))]
big = " ".join(tokens.tolist())
offs = np.r_[0, np.cumsum(cols.n_tokens)].tolist()
texts = [big[4 * a:4 * b - 1] for a, b in zip(offs[:-1], offs[1:])]
g = cols.gold
gold_text = np.array([texts[t][s:e] for t, s, e in zip(g.task.tolist(), g.start.tolist(),
                                                       g.end.tolist())], dtype=object)
cols = dataclasses.replace(cols, texts=texts, token_text=tokens, gold_text=gold_text)
if not PROBS:
    cols = dataclasses.replace(cols, probs=None, tags=())
best = None
for _ in range(R):
    t0 = time.perf_counter(); res = analyze_columns(cols); t1 = time.perf_counter()
    text = json.dumps(res.to_dict()); t2 = time.perf_counter()
    if best is None or t2 - t0 < best[0] + best[1]:
        best = (t1 - t0, t2 - t1)
print(json.dumps({"analyze_s": best[0], "json_s": best[1],
                  "alerts": sorted(a["name"] for a in res.to_dict()["alerts"]),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
""",
    "new": """
import io, json, resource, sys, time
sys.path.insert(0, "bench")
from bench_analysis import make_inputs
from analysis.dep import compute_dep
from analysis.review import analyze
corpus, output = make_inputs(N)
best = None
for _ in range(R):
    t0 = time.perf_counter()
    res = analyze(corpus, dep=compute_dep(corpus, output)) if PROBS else analyze(corpus)
    t1 = time.perf_counter()
    buf = io.StringIO(); res.write_json(buf); t2 = time.perf_counter()
    if best is None or t2 - t0 < best[0] + best[1]:
        best = (t1 - t0, t2 - t1)
print(json.dumps({"analyze_s": best[0], "json_s": best[1],
                  "alerts": sorted(a.name for a in res.alerts),
                  "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024}))
""",
}


def compare_analysis(old: Path, sizes: list[int], *, probs: bool, repeat: int, timeout: float
                     ) -> list[dict[str, Any]]:
    """Both trees' analysis of the same synthetic tasks, size by size."""
    rows = []
    for n in sizes:
        o = run_code(old, _ANALYSIS["old"], timeout, N=n, R=repeat, PROBS=probs)
        w = run_code(REPO, _ANALYSIS["new"], timeout, N=n, R=repeat, PROBS=probs)
        if o is None or w is None:
            continue
        ot, wt = o["analyze_s"] + o["json_s"], w["analyze_s"] + w["json_s"]
        row = {"tasks": n, "old": o, "new": w, "old_total_s": round(ot, 3),
               "new_total_s": round(wt, 3), "ratio_total_old_over_new": round(ot / wt, 2),
               "ratio_without_json_old_over_new": round(o["analyze_s"] / w["analyze_s"], 2),
               "same_alerts": o["alerts"] == w["alerts"]}
        rows.append(row)
        print(json.dumps({k: v for k, v in row.items() if k not in ("old", "new")}),
              file=sys.stderr, flush=True)
    return rows


_DEP = {
    "old": """
import json, sys, time
import numpy as np
from analysis.io import load
from analysis.decoding import tag_names
from analysis.dep import compute_dep
z = np.load(PROBS)
probs, offs = z["probs"], z["offsets"]
best = None
for _ in range(R):
    t0 = time.perf_counter()
    ds = load(DATA)
    per = [probs[a:b] for a, b in zip(offs[:-1], offs[1:])]
    t1 = time.perf_counter()
    kw = dict(scorer=SCORER)
    if EMB:
        kw["span_embeddings"] = np.random.default_rng(0).normal(
            size=(len(ds.gold_table()), 32)).astype(np.float32)
    dep = compute_dep(ds, per, tags=tag_names(ds.labels), **kw)
    t2 = time.perf_counter()
    if best is None or t2 - t0 < best[0] + best[1]:
        best = (t1 - t0, t2 - t1)
np.save(OUT, np.asarray(dep.task_dep, dtype=np.float64))
print(json.dumps({"load_s": best[0], "dep_s": best[1]}))
""",
    "new": """
import json, sys, time
import numpy as np
from analysis.formats import load
from analysis.dep import compute_dep
from analysis.probs import ModelOutput
from analysis.tags import TagSet
z = np.load(PROBS)
probs, offs = z["probs"], z["offsets"]
best = None
for _ in range(R):
    t0 = time.perf_counter()
    ds = load(DATA)
    out = ModelOutput(probs, offs, np.ones(offs.shape[0] - 1, bool), TagSet.for_labels(ds.labels))
    t1 = time.perf_counter()
    kw = dict(scorer=SCORER)
    if EMB:
        kw["span_embeddings"] = np.random.default_rng(0).normal(
            size=(len(ds.gold_table()), 32)).astype(np.float32)
    dep = compute_dep(ds, out, **kw)
    t2 = time.perf_counter()
    if best is None or t2 - t0 < best[0] + best[1]:
        best = (t1 - t0, t2 - t1)
np.save(OUT, np.asarray(dep.task_dep, dtype=np.float64))
print(json.dumps({"load_s": best[0], "dep_s": best[1]}))
""",
}


def run_code(tree: Path, code: str, timeout: float, **consts: Any) -> Any:
    """Run ``code`` in ``tree`` with ``consts`` bound (as Python literals) first."""
    head = "".join(f"{k} = {v!r}\n" for k, v in consts.items())
    return run(tree, ["-c", head + code], timeout)


def make_dep_inputs(work: Path, copies: int) -> tuple[Path, Path]:
    """CoNLL-03 train with 10 % injected noise (x ``copies``) and peaked probabilities drawn
    from the clean gold tags: the detection bench's setting, without a training."""
    sys.path.insert(0, str(REPO / "bench"))
    sys.path.insert(0, str(REPO))
    from noise import inject_noise

    from analysis.formats import read_conll, write_conll
    from analysis.tags import TagSet

    data, probs = work / f"dep_noisy_x{copies}.conll", work / f"dep_probs_x{copies}.npz"
    if data.exists() and probs.exists():
        return data, probs
    clean = read_conll(TRAIN)
    noisy, _ = inject_noise(clean, rate=0.1, seed=0)
    text = write_conll(noisy, warn=False).text
    data.write_text(text * copies, encoding="utf-8")
    corpus = clean.corpus
    ts = TagSet.for_labels(corpus.labels)
    gold = np.tile(corpus.gold_tags(ts), copies)
    offs = corpus.token_offsets
    offs = np.r_[0, np.cumsum(np.tile(np.diff(offs), copies))].astype(np.int64)
    rng = np.random.default_rng(0)
    target = gold.copy()
    flip = rng.random(gold.shape[0]) < 0.03
    target[flip] = rng.integers(0, len(ts), int(flip.sum()))
    z = rng.normal(0.0, 1.0, (gold.shape[0], len(ts))).astype(np.float32)
    z[np.arange(gold.shape[0]), target] += rng.uniform(2, 7, gold.shape[0]).astype(np.float32)
    z = np.exp(z - z.max(axis=1, keepdims=True))
    z /= z.sum(axis=1, keepdims=True)
    np.savez(probs, probs=z.astype(np.float32), offsets=offs)
    return data, probs


def core_steps(d: dict[str, Any]) -> dict[str, float]:
    """The timed steps of one bench_core result, flattened."""
    out = {f"conll03_ls_json.{k}": v for k, v in d["conll03_train_ls_json"]["seconds"].items()
           if not k.startswith("seqeval")}
    for row in d.get("synthetic", []):
        for k in ("align", "align_plus_metrics"):
            out[f"synthetic_{row['tasks']}.{k}"] = row["seconds"][k]
    for row in d.get("synthetic_json", []):
        for k, v in row["seconds"].items():
            out[f"synthetic_json_{row['tasks']}.{k}"] = v
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old-tree", required=True)
    ap.add_argument("--analysis-sizes", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    ap.add_argument("--core-sizes", default="14041,100000,1000000")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--no-probs-sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    ap.add_argument("--dep-copies", type=int, nargs="+", default=[1, 10],
                    help="CoNLL-03 train replicas for the DEP comparison (1 = 14,041 tasks)")
    ap.add_argument("--skip", nargs="*", default=[],
                    choices=["analysis", "no_probs", "dep", "core"])
    ap.add_argument("--timeout", type=float, default=1800)
    ap.add_argument("--allocator", choices=["default", "cli"], default="default",
                    help="cli: run both trees with the malloc settings the CLI's batch commands "
                         "use (large blocks from the heap, never trimmed)")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if a.allocator == "cli":
        ENV.update(CLI_MALLOC)
    old = Path(a.old_tree).resolve()
    result: dict[str, Any] = {"bench": "vs_old", "old_tree": str(old), "machine":
                              f"{os.cpu_count()} cores", "allocator": a.allocator,
                              "analysis": [], "core": {}}
    result["analysis"] = compare_analysis(
        old, [] if "analysis" in a.skip else a.analysis_sizes, probs=True, repeat=a.repeat,
        timeout=a.timeout)
    result["analysis_no_probs"] = compare_analysis(
        old, [] if "no_probs" in a.skip else a.no_probs_sizes, probs=False, repeat=a.repeat,
        timeout=a.timeout)
    result["dep"] = []
    work = Path(tempfile.gettempdir()) / "nerq-bench-vs-old"
    work.mkdir(exist_ok=True)
    variants = [(c, "model", False) for c in a.dep_copies] + [(1, "model", True),
                                                               (1, "signals", False),
                                                               (1, "signals", True)]
    for copies, scorer, emb in ([] if "dep" in a.skip or not TRAIN.exists() else variants):
        data, probs = make_dep_inputs(work, copies)
        deps = {}
        for tree, name in ((old, "old"), (REPO, "new")):
            dst = work / f"task_dep_{name}.npy"
            deps[name] = (run_code(tree, _DEP[name], a.timeout, DATA=str(data), PROBS=str(probs),
                                   OUT=str(dst), R=a.repeat, SCORER=scorer, EMB=emb), dst)
        (o, od), (w, wd) = deps["old"], deps["new"]
        if o is None or w is None:
            continue
        do, dw = np.load(od), np.load(wd)
        both = ~np.isnan(do) & ~np.isnan(dw)
        row = {"tasks": int(do.shape[0]), "scorer": scorer, "span_embeddings": emb,
               "old": o, "new": w,
               "same_nan": bool(np.array_equal(np.isnan(do), np.isnan(dw))),
               "max_abs_diff_task_dep": float(np.max(np.abs(do[both] - dw[both]))),
               "ratio_dep_old_over_new": round(o["dep_s"] / w["dep_s"], 2),
               "ratio_load_plus_dep_old_over_new": round((o["load_s"] + o["dep_s"])
                                                         / (w["load_s"] + w["dep_s"]), 2)}
        result["dep"].append(row)
        print(json.dumps(row), file=sys.stderr, flush=True)
    outs: list[Any] = [None, None]
    for i, (tree, name) in enumerate(() if "core" in a.skip else ((old, "old"), (REPO, "new"))):
        dst = Path(tempfile.gettempdir()) / f"nerq-bench-core-{name}.json"
        args = ["bench/bench_core.py", "--sizes", a.core_sizes, "--seqeval-max-tasks", "0",
                "--repeat", str(a.repeat), "--out", str(dst)]
        ok = run(tree, args, a.timeout, parse=False)
        outs[i] = json.loads(dst.read_text(encoding="utf-8")) if ok else None
    o, w = outs
    if o is not None and w is not None:
        so, sw = core_steps(o), core_steps(w)
        result["core"] = {k: {"old_s": so[k], "new_s": sw[k],
                              "ratio_old_over_new": round(so[k] / sw[k], 2) if sw[k] else None}
                          for k in sorted(so) if k in sw}
        for k, v in result["core"].items():
            print(k, v, file=sys.stderr)
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
