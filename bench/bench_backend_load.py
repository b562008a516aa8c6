"""Load bench of the ML backend: concurrent ``/predict`` clients against a real gunicorn server.

Starts ``gunicorn -w 1 --threads T ls_backend.wsgi:app`` on 127.0.0.1 (free port, MODEL_DIR in a
temporary directory), trains project 1 briefly through the real ``/train`` route on CoNLL-03
train sentences (setup, not measured), then measures on other, unannotated sentences:

1. single-client ``/predict`` of one task, sequentially, for ``--single-seconds`` (p50/p99);
2. ``--clients`` concurrent clients (default 32), each sending one-task ``/predict`` requests
   back to back for ``--duration`` seconds (default 60, capped at 600): p50/p99 latency,
   requests/s, error count (target 0);
3. optionally batched requests (``--batch`` tasks per request) for tasks/s.

Prints one JSON object (and writes it to ``--out``).  Example::

    .venv/bin/python bench/bench_backend_load.py --duration 60 --out bench/results/backend_load.json
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import requests

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import stop_process  # noqa: E402
DEFAULT_DATA = Path(os.environ.get("NERQ_SHARED_DATA", REPO.parent / "shared" / "data"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def load_tasks(path: Path, limit: int, seed: int) -> list[dict[str, Any]]:
    from analysis.formats import load, to_ls_tasks

    ds = load(path, format="conll")
    tasks = to_ls_tasks(ds)
    rng = random.Random(seed)
    rng.shuffle(tasks)
    tasks = [t for t in tasks if t["data"].get("text")][:limit]
    for i, t in enumerate(tasks):
        t["id"] = i + 1
        for a in t.get("annotations") or []:
            a.setdefault("id", 100000 + i)
    return tasks


def pct(x: list[float], q: float) -> float | None:
    return round(float(np.percentile(np.asarray(x), q)) * 1000, 2) if x else None


def run_clients(url: str, payloads: list[dict[str, Any]], clients: int, duration: float,
                ) -> dict[str, Any]:
    lat: list[list[float]] = [[] for _ in range(clients)]
    errs: list[list[str]] = [[] for _ in range(clients)]
    stop = time.perf_counter() + duration
    barrier = threading.Barrier(clients)

    def worker(k: int) -> None:
        s = requests.Session()
        rng = random.Random(k)
        barrier.wait()
        while time.perf_counter() < stop:
            body = payloads[rng.randrange(len(payloads))]
            t0 = time.perf_counter()
            try:
                r = s.post(url, json=body, timeout=120)
                ok = r.status_code == 200 and len(r.json()["results"]) == len(body["tasks"])
                if not ok:
                    errs[k].append(f"HTTP {r.status_code}: {r.text[:200]}")
            except Exception as exc:  # noqa: BLE001 - every failure counts as an error
                errs[k].append(f"{type(exc).__name__}: {exc}")
                continue
            lat[k].append(time.perf_counter() - t0)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    all_lat = [x for xs in lat for x in xs]
    all_err = [e for es in errs for e in es]
    n_tasks = sum(len(p["tasks"]) for p in payloads) / len(payloads)
    return {
        "clients": clients, "seconds": round(wall, 2), "requests": len(all_lat),
        "requests_per_s": round(len(all_lat) / wall, 2),
        "tasks_per_s": round(len(all_lat) * n_tasks / wall, 2),
        "p50_ms": pct(all_lat, 50), "p90_ms": pct(all_lat, 90), "p99_ms": pct(all_lat, 99),
        "max_ms": round(max(all_lat) * 1000, 2) if all_lat else None,
        "errors": len(all_err), "error_samples": all_err[:5],
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA / "conll2003" / "train.conll")
    ap.add_argument("--train-tasks", type=int, default=200)
    ap.add_argument("--train-steps", type=int, default=60)
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--threads", type=int, default=32, help="gunicorn threads")
    ap.add_argument("--duration", type=float, default=60.0)
    ap.add_argument("--single-seconds", type=float, default=15.0)
    ap.add_argument("--batch", type=int, default=32, help="tasks per request in phase 3 (0: skip)")
    ap.add_argument("--batch-seconds", type=float, default=20.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.duration = min(max(args.duration, 1.0), 600.0)
    if not args.data.is_file():
        print(f"bench_backend_load: data file {args.data} not found (--data)", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="nerq-bench-load-"))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODEL_DIR": str(tmp / "models"), "DEVICE": args.device,
           "LOG_LEVEL": "WARNING", "TRAIN_EVERY_N_ANNOTATIONS": "0", "TRAIN_EPOCHS": "50",
           "TRAIN_MAX_STEPS": str(args.train_steps), "TRAIN_LR": "2e-4",
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TRAIN_FOLDS": "0"}
    env.pop("LABEL_STUDIO_URL", None)
    gunicorn = Path(sys.executable).with_name("gunicorn")
    log = open(tmp / "server.log", "w")
    proc = subprocess.Popen(
        [str(gunicorn), "-w", "1", "--threads", str(args.threads), "-k", "gthread",
         "--timeout", "300", "-b", f"127.0.0.1:{port}", "ls_backend.wsgi:app"],
        cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    result: dict[str, Any] = {"bench": "backend_load", "device": args.device,
                              "cpu_count": os.cpu_count(), "gunicorn_threads": args.threads}
    try:
        for _ in range(300):
            try:
                if requests.get(base + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            time.sleep(0.2)
        else:
            raise RuntimeError("backend did not come up; see " + str(tmp / "server.log"))
        xml = (REPO / "label_config" / "conll2003.xml").read_text()
        project = "1.1700000000"
        requests.post(base + "/setup", json={"project": project, "schema": xml}, timeout=10)
        tasks = load_tasks(args.data, args.train_tasks + 2000, args.seed)
        train, pool = tasks[: args.train_tasks], tasks[args.train_tasks:]
        t0 = time.perf_counter()
        r = requests.post(base + "/train", json={"project": project, "label_config": xml,
                                                 "annotations": train}, timeout=30)
        r.raise_for_status()
        while True:
            st = requests.get(base + "/status?project=1", timeout=5).json()["projects"]["1"]
            if st["train"]["status"] in ("done", "failed"):
                break
            time.sleep(1)
        if st["train"]["status"] != "done":
            raise RuntimeError(f"training failed: {st['train']}")
        result["train"] = {"tasks": len(train), "max_steps": args.train_steps,
                           "seconds": round(time.perf_counter() - t0, 1),
                           "model_version": st["model_version"]}
        unannotated = [{"id": t["id"], "data": t["data"]} for t in pool]
        one = [{"project": project, "tasks": [t]} for t in unannotated]
        # warm-up (model load)
        requests.post(base + "/predict", json=one[0], timeout=120).raise_for_status()
        result["single"] = run_clients(base + "/predict", one, 1, args.single_seconds)
        result["concurrent"] = run_clients(base + "/predict", one, args.clients, args.duration)
        if args.batch:
            batches = [{"project": project, "tasks": unannotated[i:i + args.batch]}
                       for i in range(0, len(unannotated) - args.batch + 1, args.batch)]
            result["batched"] = run_clients(base + "/predict", batches, 1, args.batch_seconds)
            result["batched"]["tasks_per_request"] = args.batch
        result["mean_words_per_task"] = round(float(np.mean(
            [len(t["data"]["text"].split()) for t in unannotated])), 1)
    finally:
        stop_process(proc)
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)
    text = json.dumps(result, indent=1)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if result.get("concurrent", {}).get("errors", 1) == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
