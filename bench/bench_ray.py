"""The Ray engine on this machine: cross-fit and (bulk) prediction with 1 vs 2 Ray workers,
and what Ray costs over the local engine on the same job — all in one run.

Jobs (CoNLL-03 from ``../shared/data/conll2003``; the packaged MiniLM, CPU):

* **cross-fit**: ``--crossfit-tasks`` train sentences, ``--folds`` folds, 1 epoch
  (:func:`ls_backend.runtime.crossfit_outputs`): local with 1 torch thread, local with all
  cores, Ray with 1 worker (1 CPU each) and with 2 workers; the Ray outputs are compared with
  the local 1-thread run bit for bit;
* **predict**: ``ner-quality predict --data`` on ``--predict-tasks`` test sentences, end to end
  in a fresh process per mode (start-up, model load and cold kernels included, as a user
  waits): local with 1 thread, with all cores, Ray with 1 and 2 actors (a local Ray started
  by the command);
* **bulk predict**: ``predict --project`` against a real Label Studio (127.0.0.1, temporary
  data) with ``--bulk-tasks`` tasks, one fresh project per mode: local, Ray 1 and 2 actors.
  Label Studio's own write rate bounds this one (see ``bench_ls_write``).

One local Ray (``num_cpus`` = the machine's cores, no dashboard) serves the cross-fit and bulk
Ray modes; its start-up is reported on its own (``ray_init_s``)::

    .venv/bin/python bench/bench_ray.py --out bench/results/ray_cpu.json

Needs ``pip install -e '.[ray]'`` and, for the bulk part, ``.venv-ls/bin/label-studio`` (or
``NERQ_LS_BIN``; ``--no-bulk`` skips it).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from bench.common import emit  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "conll2003"


def log(msg: str) -> None:
    print(f"[bench_ray {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _threads(n: int) -> Any:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    return before


def with_ratios(out: dict[str, Any]) -> dict[str, Any]:
    """``out`` with the two ratios of the closing note: 2 vs 1 Ray workers, Ray 1 vs local."""
    sec = {k: v["seconds"] for k, v in out.items() if isinstance(v, dict) and "seconds" in v}
    out["speedup_2_vs_1_workers"] = round(sec["ray_1worker"] / sec["ray_2worker"], 2)
    out["ray_overhead_1worker_vs_local_1thread"] = round(
        sec["ray_1worker"] / sec["local_1thread"], 3)
    return out


def bench_crossfit(ds: Any, a: argparse.Namespace) -> dict[str, Any]:
    import numpy as np
    import torch

    from ls_backend.engine import EngineOptions
    from ls_backend.runtime import crossfit_outputs

    kw = dict(folds=a.folds, seed=0, epochs=1, batch_size=16, device="cpu", progress=False)
    out: dict[str, Any] = {"tasks": len(ds.tasks), "folds": a.folds, "epochs": 1}
    runs: dict[str, Any] = {}
    cores = os.cpu_count() or 1
    for name, threads in (("local_1thread", 1), (f"local_{cores}threads", cores)):
        before = _threads(threads)
        try:
            t0 = time.time()
            runs[name] = crossfit_outputs(ds, **kw)
            out[name] = {"seconds": round(time.time() - t0, 2)}
        finally:
            torch.set_num_threads(before)
        log(f"cross-fit {name}: {out[name]['seconds']} s")
    for workers in (1, 2):
        name = f"ray_{workers}worker"
        t0 = time.time()
        res = crossfit_outputs(ds, engine="ray",
                               ray_options=EngineOptions(engine="ray", workers=workers), **kw)
        same = all((x is None and y is None) or (x is not None and y is not None
                                                 and np.array_equal(x, y))
                   for x, y in zip(res.probs, runs["local_1thread"].probs))
        out[name] = {"seconds": round(time.time() - t0, 2),
                     "fold_seconds": [round(s, 1) for s in res.seconds],
                     "identical_to_local_1thread": same}
        log(f"cross-fit {name}: {out[name]['seconds']} s, identical={same}")
    return with_ratios(out)


def bench_predict(model_dir: str, data: Path, n: int) -> dict[str, Any]:
    """``ner-quality predict --data`` end to end (a fresh process per mode: start-up, model
    load, cold kernels, writing the JSON — what a user waits for), local vs Ray."""
    import subprocess

    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"tasks": n}
    base = [sys.executable, "-m", "ls_backend.cli", "predict", "--model", model_dir, "--data",
            str(data), "--limit", str(n), "--device", "cpu", "--out", os.devnull]
    modes = [("local_1thread", [], "1"), (f"local_{cores}threads", [], str(cores)),
             ("ray_1worker", ["--engine", "ray", "--ray-workers", "1"], None),
             ("ray_2worker", ["--engine", "ray", "--ray-workers", "2"], None)]
    for name, extra, threads in modes:
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = threads
        t0 = time.time()
        r = subprocess.run(base + extra, env=env, capture_output=True, text=True)
        dt = time.time() - t0
        if r.returncode != 0:
            raise RuntimeError(f"{name}: {r.stderr[-2000:]}")
        out[name] = {"seconds": round(dt, 2), "tasks_per_s": round(n / dt, 1)}
        log(f"predict {name}: {out[name]}")
    return with_ratios(out)


def bench_bulk(model_dir: str, tasks: list[dict[str, Any]], work: Path) -> dict[str, Any]:
    from analysis.labelstudio import LabelStudioAPI
    from bench.common import label_studio_or_say
    from ls_backend.engine import EngineOptions
    from ls_backend.local_servers import start_label_studio, stop
    from ls_backend.service.bulk_predict import predict_project
    from ls_backend.settings import Settings

    exe = label_studio_or_say()
    if not exe:
        return {"skipped": "no label-studio executable"}
    out: dict[str, Any] = {"tasks": len(tasks)}
    (work / "ls").mkdir()
    proc, url, key = start_label_studio(exe, work / "ls")
    try:
        api = LabelStudioAPI(url, key)
        config = (REPO / "label_config" / "conll2003.xml").read_text(encoding="utf-8")
        settings = Settings.from_env({"LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": key,
                                      "MODEL_DIR": str(work / "models"), "DEVICE": "cpu"})
        for name, engine in (("local", None),
                             ("ray_1worker", EngineOptions(engine="ray", workers=1)),
                             ("ray_2worker", EngineOptions(engine="ray", workers=2))):
            pid = api.create_project(f"bench ray {name}", config)
            api.import_tasks(pid, [{"data": t["data"]} for t in tasks])
            s = predict_project(settings, pid, batch_size=64, progress=False, model=model_dir,
                                api=api, engine=engine, window=256)
            assert s["predicted"] == len(tasks) and s["failed"] == 0, s
            out[name] = {"seconds": s["seconds"],
                         "tasks_per_s": round(len(tasks) / s["seconds"], 1),
                         **({"writes": s["writes"]} if "writes" in s else {})}
            log(f"bulk {name}: {out[name]}")
    finally:
        stop(proc)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--crossfit-tasks", type=int, default=400)
    ap.add_argument("--folds", type=int, default=2)
    ap.add_argument("--predict-tasks", type=int, default=3453)
    ap.add_argument("--bulk-tasks", type=int, default=600)
    ap.add_argument("--no-bulk", action="store_true", help="skip the Label Studio part")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if not (DATA / "train.conll").is_file():
        print(f"{DATA} not found: this bench needs the shared CoNLL-03 corpus", file=sys.stderr)
        return 2
    import dataclasses

    import ray

    from analysis.formats import read_conll, to_ls_tasks
    from ls_backend.runtime import train

    result: dict[str, Any] = {"bench": "ray", "machine": f"{os.cpu_count()} cores",
                              "ray": ray.__version__}
    t0 = time.time()
    ray.init(num_cpus=os.cpu_count(), include_dashboard=False, log_to_driver=False,
             configure_logging=False)
    result["ray_init_s"] = round(time.time() - t0, 2)
    work = Path(tempfile.mkdtemp(prefix="nerq-bench-ray-"))
    try:
        train_ds = read_conll(DATA / "train.conll")
        cf = dataclasses.replace(train_ds, tasks=train_ds.tasks[: a.crossfit_tasks])
        result["crossfit"] = bench_crossfit(cf, a)
        model_dir = str(work / "model")
        train(cf, model_dir, epochs=1, batch_size=16, device="cpu", progress=False,
              record_dynamics=False)
        test = read_conll(DATA / "test.conll")
        result["predict"] = bench_predict(model_dir, DATA / "test.conll",
                                          min(a.predict_tasks, len(test.tasks)))
        if not a.no_bulk:
            tasks = to_ls_tasks(dataclasses.replace(test, tasks=test.tasks[: a.bulk_tasks]))
            result["bulk_predict"] = bench_bulk(model_dir, tasks, work)
    finally:
        ray.shutdown()
    emit(result, a.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
