"""Similarity bench: exact (IndexFlatIP) vs IVF (IndexIVFFlat) span index.

``--n`` random 384-d spans (Gaussian, unclustered: the worst case for IVF; ``--clustered`` draws
them around ``--centres`` centres instead, closer to real span embeddings), ``--queries`` query
vectors (a subset keeps the exact scan bounded on 2 cores).  Reports build time, index memory
(vectors + ids, and the process' peak RSS), queries/s and recall@10 of IVF against the exact
index for several ``nprobe`` values.  Prints one JSON object (also written to ``--out``)::

    .venv/bin/python -m bench.bench_similarity --n 1000000 --queries 200 \
        --out bench/results/similarity.json
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from analysis.similarity import SpanIndex, default_nlist, default_nprobe  # noqa: E402
from bench.common import emit  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def make_data(n: int, dim: int, seed: int, clustered: bool, centres: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if not clustered:
        return rng.standard_normal((n, dim), dtype=np.float32)
    c = rng.standard_normal((centres, dim), dtype=np.float32)
    out = np.empty((n, dim), dtype=np.float32)
    step = 100_000
    for a in range(0, n, step):  # chunks keep the temporary small
        b = min(n, a + step)
        out[a:b] = c[rng.integers(0, centres, b - a)] + 0.5 * rng.standard_normal(
            (b - a, dim), dtype=np.float32
        )
    return out


def timed_search(idx: SpanIndex, q: np.ndarray, k: int) -> tuple[np.ndarray, float]:
    t = time.perf_counter()
    _, ids = idx.search(q, k)
    return ids, time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=384)
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", default="", help="comma list (default: 8,32,default,4x default)")
    ap.add_argument("--train-size", type=int, default=None,
                    help="k-means training sample (default 32 * nlist)")
    ap.add_argument("--clustered", action="store_true")
    ap.add_argument("--centres", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="faiss threads (0: faiss default)")
    ap.add_argument("--out")
    args = ap.parse_args(argv)

    import faiss

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    t0 = time.perf_counter()
    x = make_data(args.n, args.dim, args.seed, args.clustered, args.centres)
    rng = np.random.default_rng(args.seed + 1)
    q = x[rng.choice(args.n, args.queries, replace=False)] + 0.1 * rng.standard_normal(
        (args.queries, args.dim), dtype=np.float32
    )
    gen_s = time.perf_counter() - t0
    vec_mb = args.n * args.dim * 4 / 2**20
    id_mb = args.n * 8 / 2**20
    result: dict[str, Any] = {
        "n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k,
        "data": "clustered" if args.clustered else "gaussian random (unclustered)",
        "faiss_threads": faiss.omp_get_max_threads(), "generate_s": round(gen_s, 1),
    }

    # ---- exact
    t = time.perf_counter()
    flat = SpanIndex.build(x, exact_max=args.n)
    flat_build = time.perf_counter() - t
    exact_ids, exact_s = timed_search(flat, q, args.k)
    result["flat"] = {
        "build_s": round(flat_build, 2),
        "memory_mb": round(vec_mb + id_mb, 1),
        "queries_per_s": round(args.queries / exact_s, 1),
        "recall_at_10": 1.0,
    }
    del flat

    # ---- IVF
    nlist = default_nlist(args.n)
    train_size = args.train_size or 32 * nlist
    t = time.perf_counter()
    ivf = SpanIndex.build(x, exact_max=0, nlist=nlist, train_size=train_size, seed=args.seed)
    ivf_build = time.perf_counter() - t
    dflt = default_nprobe(nlist)
    if args.nprobe:
        probes = [int(p) for p in args.nprobe.split(",") if p]
    else:
        probes = sorted({8, 32, dflt, min(nlist, 4 * dflt)})
    rows = []
    for p in probes:
        faiss.extract_index_ivf(ivf._index).nprobe = p
        ids, s = timed_search(ivf, q, args.k)
        recall = float(np.mean([len(set(a) & set(b)) / args.k for a, b in zip(ids, exact_ids)]))
        rows.append({"nprobe": p, "scanned_fraction": round(p / nlist, 4),
                     "queries_per_s": round(args.queries / s, 1),
                     "recall_at_10": round(recall, 4), "default": p == dflt})
    result["ivf"] = {
        "nlist": nlist,
        "train_size": train_size,
        "build_s (train + add)": round(ivf_build, 1),
        "memory_mb": round(vec_mb + id_mb + nlist * args.dim * 4 / 2**20, 1),
        "by_nprobe": rows,
    }
    result["peak_rss_mb"] = round(peak_rss_mb(), 0)
    result["total_s"] = round(time.perf_counter() - t0, 1)
    emit(result, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
