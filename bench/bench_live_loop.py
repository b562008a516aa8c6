"""The live loop under real load: annotations scored while a training's re-score is written.

Against a real Label Studio and the real backend process (both on 127.0.0.1, temporary data):

1. a project with ``--tasks`` annotated CoNLL-03 train sentences (imported with their gold
   annotations) and ``--live`` more without annotations; the backend is connected through
   Label Studio's ML API (``TRAIN_EVERY_N_ANNOTATIONS=0``, a short CPU training:
   ``--train-steps`` optimizer steps);
2. "Start training" (Label Studio's ``ml.train``).  When the new version serves, the backend
   writes the re-score of every annotated task (one DEP over the whole project).  Meanwhile
   ``--live`` annotations (the sentences' gold spans) are created through Label Studio's API,
   one every ``--interval`` s; a poller reads the tasks through the task list and records when
   each one's ``data.nerq_dep`` of the new version lands;
3. a second training; half way through its re-score the backend is killed (``kill -9``) and
   restarted on the same port and ``MODEL_DIR``; the rest of the re-score completes from the
   persistent queue.

Reported (JSON): annotation POST → DEP on its task p50 / p95 / max while the re-score runs;
re-score write-back throughput (tasks/s, from the training's switch to the last annotated task
carrying the new version); the backend's own webhook answer times (p50 / p99 / max, from
``/status``); the restart phase: tasks done before the kill, writes after it, tasks found
already up to date (an in-flight batch re-taken after the restart is not written again),
failed jobs, and predictions per task (Label Studio must not have called ``/predict`` for the
writes).

    .venv/bin/python bench/bench_live_loop.py --out bench/results/live_loop.json   # ~8 min

Needs ``.venv-ls/bin/label-studio`` (or ``NERQ_LS_BIN``) and ``../shared/data/conll2003``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAIN = REPO.parent / "shared" / "data" / "conll2003" / "train.conll"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (loopback)
        return json.loads(r.read())


class Backend:
    """``ner-quality serve`` on a fixed port (so a restart keeps Label Studio's connection)."""

    def __init__(self, env: dict[str, str], port: int, log_path: Path) -> None:
        self.env, self.port, self.log_path = env, port, log_path
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        from ls_backend.local_servers import wait_http

        log_f = open(self.log_path, "ab")  # noqa: SIM115 - lives with the process
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "ls_backend.cli", "serve", "--host", "127.0.0.1", "--port",
             str(self.port), "--threads", "16"],
            stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, env=self.env,
            start_new_session=True, cwd=REPO)
        wait_http(f"{self.url}/health", timeout=120)

    def kill9(self) -> None:
        assert self.proc is not None
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.proc = None

    def stop(self) -> None:
        from ls_backend.local_servers import stop

        stop(self.proc)
        self.proc = None

    def status(self, pid: int) -> dict[str, Any]:
        out: dict[str, Any] = get_json(f"{self.url}/status?project={pid}")
        return out


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    return round(v[min(len(v) - 1, int(q * len(v)))], 2)


def wait(fn: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(interval)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def train_and_wait(api: Any, sdk: Any, ml_id: int, backend: Backend, pid: int, old: str,
                   timeout: float) -> tuple[str, float]:
    sdk.ml.train(id=ml_id)

    def switched() -> Any:
        p = backend.status(pid)["projects"][str(pid)]
        if p["train"]["status"] == "failed":
            raise RuntimeError(f"training failed: {p['train']}")
        return p["model_version"] != old and p["model_version"]

    version = wait(switched, timeout, "the training", interval=0.25)
    return version, time.time()


def count_version(api: Any, pid: int, ids: list[int], version: str) -> int:
    tasks = api.tasks_by_id(pid, ids, fields="task_only")
    return sum(1 for t in tasks.values() if t["data"].get("nerq_model_version") == version)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=2000, help="annotated tasks (default 2000)")
    ap.add_argument("--live", type=int, default=50, help="annotations made during the re-score")
    ap.add_argument("--interval", type=float, default=1.0, help="seconds between them")
    ap.add_argument("--train-steps", type=int, default=40)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--keep", action="store_true", help="keep the temporary folder")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if not TRAIN.is_file():
        print(f"{TRAIN} not found: this bench needs the shared CoNLL-03 corpus", file=sys.stderr)
        return 2
    from label_studio_sdk import LabelStudio

    from analysis.formats import read_conll, to_ls_tasks
    from analysis.labelstudio import LabelStudioAPI
    from bench.common import label_studio_or_say
    from ls_backend.local_servers import free_port, start_label_studio, stop

    exe = label_studio_or_say()
    if not exe:
        return 2
    work = Path(tempfile.mkdtemp(prefix="nerq-live-loop-"))
    ls_proc = backend = None
    result: dict[str, Any] = {"bench": "live_loop", "tasks": a.tasks, "live": a.live,
                              "interval_s": a.interval, "train_steps": a.train_steps,
                              "machine": f"{os.cpu_count()} cores"}
    try:
        (work / "ls").mkdir()
        t0 = time.time()
        ls_proc, ls_url, key = start_label_studio(exe, work / "ls")
        log(f"Label Studio up in {time.time() - t0:.0f} s at {ls_url}")
        api = LabelStudioAPI(ls_url, key)
        sdk = LabelStudio(base_url=ls_url, api_key=key)
        ds = read_conll(TRAIN)
        tasks = [t for t in to_ls_tasks(ds) if len(t["data"]["text"]) > 20][:a.tasks + a.live]
        annotated, live = tasks[:a.tasks], tasks[a.tasks:]
        config = (REPO / "label_config" / "conll2003.xml").read_text(encoding="utf-8")
        pid = api.create_project("nerq live loop bench", config)
        t0 = time.time()
        ids = api.import_tasks(pid, [{"data": t["data"], "annotations": t["annotations"]}
                                     for t in annotated])
        live_ids = api.import_tasks(pid, [{"data": t["data"]} for t in live])
        log(f"imported {len(ids)} annotated + {len(live_ids)} tasks in {time.time() - t0:.0f} s")
        env = {**os.environ, "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": key,
               "MODEL_DIR": str(work / "models"), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TRAIN_EVERY_N_ANNOTATIONS": "0",
               "TRAIN_EPOCHS": "1", "TRAIN_MAX_STEPS": str(a.train_steps),
               "TRAIN_BATCH_SIZE": "16", "LOG_LEVEL": "INFO", "OMP_NUM_THREADS": "1",
               # the re-score of the switch is measured; a cross-fit would write a second
               # re-score of every annotated task after it (bench_ls_write bounds its cost)
               "TRAIN_FOLDS": "0"}
        backend = Backend(env, free_port(), work / "backend.log")
        backend.start()
        ml_id = api.connect_ml_backend(pid, backend.url, title="ner-quality")
        v0 = backend.status(pid)["projects"][str(pid)]["model_version"]

        # ---- phase 1: a training, its re-score, live annotations meanwhile
        t_train = time.time()
        v1, t_switch = train_and_wait(api, sdk, ml_id, backend, pid, v0, a.timeout)
        log(f"training 1 -> {v1} in {t_switch - t_train:.0f} s; annotating {a.live} tasks")
        posted: dict[int, float] = {}
        landed: dict[int, float] = {}
        stop_poll = threading.Event()

        def poll() -> None:
            while not stop_poll.is_set():
                todo = [t for t in posted if t not in landed]
                if todo:
                    got = api.tasks_by_id(pid, todo, fields="task_only")
                    now = time.time()
                    for tid, t in got.items():
                        nq = (t.get("meta") or {}).get("ner_quality") or {}
                        if t["data"].get("nerq_model_version") == v1 and nq.get("annotation_id"):
                            landed[tid] = now
                time.sleep(0.2)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        # the re-score's end from the backend's own counters (reading 2,000 tasks from Label
        # Studio every second would load the server the writes go to); checked at the end
        rescore: dict[str, float] = {}

        def watch() -> None:
            while not stop_poll.is_set():
                q = backend.status(pid)["queue"]["by_state"]
                if not q.get("pending", {}).get("write") and not q.get("running", {}).get("write"):
                    rescore["done"] = time.time()
                    return
                time.sleep(0.25)

        watcher = threading.Thread(target=watch, daemon=True)
        watcher.start()
        for tid, t in zip(live_ids, live):
            posted[tid] = time.time()
            api.create_annotation(tid, t["annotations"][0]["result"])
            time.sleep(a.interval)
        wait(lambda: len(landed) == len(posted), 300, "DEP on every live annotation")
        watcher.join(a.timeout)
        stop_poll.set()
        rescore_done = rescore["done"]
        n_v1 = count_version(api, pid, ids, v1)
        if n_v1 != len(ids):
            raise RuntimeError(f"only {n_v1} of {len(ids)} tasks carry {v1} after the re-score")
        lat = [landed[t] - posted[t] for t in posted]
        st = backend.status(pid)
        during = [landed[t] - posted[t] for t in posted if posted[t] <= rescore_done]
        result["phase1"] = {
            "training_s": round(t_switch - t_train, 1),
            "annotation_to_dep_s": {"p50": pct(lat, 0.5), "p95": pct(lat, 0.95),
                                    "max": round(max(lat), 2), "n": len(lat)},
            "annotation_to_dep_during_rescore_s": {"p50": pct(during, 0.5),
                                                   "p95": pct(during, 0.95),
                                                   "max": round(max(during), 2) if during
                                                   else None, "n": len(during)},
            "rescore_tasks": len(ids),
            "rescore_s": round(rescore_done - t_switch, 1),
            "rescore_tasks_per_s": round(len(ids) / max(1e-9, rescore_done - t_switch), 1),
            "webhook_ms": st["webhook_ms"], "backend_stats": st["stats"],
            "queue_failed": st["queue"]["failed"],
        }
        log(json.dumps(result["phase1"]))

        # ---- phase 2: a second training, kill -9 half way through its re-score, restart
        written1 = backend.status(pid)["stats"]["written"]
        v2, t_switch2 = train_and_wait(api, sdk, ml_id, backend, pid, v1, a.timeout)
        half_w = wait(lambda: (s := backend.status(pid))["stats"]["written"]
                      >= written1 + len(ids) // 2 and s, a.timeout,
                      "half of the second re-score", interval=0.1)
        before = backend.status(pid)
        backend.kill9()
        t_kill = time.time()
        half = count_version(api, pid, ids, v2)
        log(f"killed the backend with {half} of {len(ids)} tasks re-scored")
        backend.start()
        st_after = backend.status(pid)
        st2 = wait(lambda: (s := backend.status(pid))["queue"]["pending"] == 0 and s, a.timeout,
                   "the rest of the re-score after the restart (an empty queue)")
        t_done = time.time()
        preds = api.tasks_by_id(pid, ids + live_ids, fields="all")
        n_preds = [len(t.get("predictions") or []) for t in preds.values()]
        result["phase2_kill9"] = {
            "done_before_kill": half, "written_before_kill_at_last_poll":
                before["stats"]["written"], "written_at_half_poll": half_w["stats"]["written"],
            "pending_after_restart": st_after["queue"]["pending"],
            "written_after_restart": st2["stats"]["written"],
            "unchanged_after_restart": st2["stats"]["unchanged"],
            "written_total_at_most": before["stats"]["written"] - written1
                + st2["stats"]["written"],
            "rest_completed_s": round(t_done - t_kill, 1),
            "all_tasks_on_new_version": count_version(api, pid, ids, v2) == len(ids),
            "queue_failed": st2["queue"]["failed"],
            "predictions_per_task_max": max(n_preds) if n_preds else 0,
            "tasks_with_predictions": sum(1 for n in n_preds if n),
        }
        log(json.dumps(result["phase2_kill9"]))
    finally:
        if backend is not None:
            backend.stop()
        stop(ls_proc)
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"kept {work}")
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
