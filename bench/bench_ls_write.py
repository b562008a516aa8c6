"""How fast can Label Studio itself take task writes? The ceiling under the backend's write-back.

The backend writes one ``PATCH /api/tasks/<id>`` per re-scored task (Label Studio 1.23 community
has no bulk update of task ``data``/``meta``). This bench measures, against a real Label Studio
with ``--tasks`` annotated CoNLL-03 tasks, with nothing else running:

- ``raw_patch``: bare PATCHes of ``meta`` + ``data`` (one request per task, no read), 1 and
  ``--workers`` at a time — the server's own ceiling;
- ``merge_many``: the backend's write path (:meth:`LabelStudioAPI.merge_many_task_fields`: the
  tasks read through the task list in pages, then one PATCH per task), same concurrency;

for each server: Label Studio's own ``label-studio start`` (Django's threaded dev server), and,
with ``--gunicorn-workers N`` (needs ``gunicorn`` in the Label Studio venv), the same Label Studio
WSGI app under gunicorn with N processes — closer to the production image (uWSGI, several
processes). ``--wal`` switches the SQLite file to WAL first (to check whether the database is
what limits the writes).

    .venv/bin/python bench/bench_ls_write.py --gunicorn-workers 2 --out bench/results/ls_write.json

Needs ``.venv-ls/bin/label-studio`` (or ``NERQ_LS_BIN``) and ``../shared/data/conll2003``.
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
TRAIN = REPO.parent / "shared" / "data" / "conll2003" / "train.conll"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def raw_patch(url: str, key: str, tasks: dict[int, dict[str, Any]], workers: int) -> float:
    """Tasks/s of bare meta+data PATCHes (the data read beforehand, outside the timing)."""
    import requests

    session = requests.Session()
    session.headers["Authorization"] = f"Token {key}"
    stamp = time.time()

    def one(tid: int) -> None:
        body = {"data": {**tasks[tid], "nerq_dep": stamp % 1}, "meta": {"ner_quality": {"dep": 0.5}}}
        session.patch(f"{url}/api/tasks/{tid}", json=body, timeout=60).raise_for_status()

    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(one, tasks))
    return len(tasks) / (time.perf_counter() - t0)


def merge_many(api: Any, pid: int, ids: list[int], workers: int) -> float:
    stamp = time.time()
    updates = {t: ({"nerq_dep": stamp % 1}, {"ner_quality": {"dep": 0.25}}) for t in ids}
    t0 = time.perf_counter()
    merged = api.merge_many_task_fields(pid, updates, workers=workers)
    dt = time.perf_counter() - t0
    if merged.failed or len(merged.written) != len(ids):
        raise RuntimeError(f"write failed: {len(merged.written)} of {len(ids)} written, "
                           f"{len(merged.failed)} failed")
    return len(ids) / dt


def gunicorn_cmd(exe: str, workers: int, port: int) -> list[str]:
    gunicorn = Path(exe).with_name("gunicorn")
    if not gunicorn.is_file():
        raise SystemExit(f"{gunicorn} not found: `{Path(exe).with_name('pip')} install gunicorn`")
    return [str(gunicorn), "-w", str(workers), "--threads", "4", "-b", f"127.0.0.1:{port}",
            "core.wsgi:application"]


def measure(api: Any, url: str, key: str, pid: int, ids: list[int], n: int,
            workers: int) -> dict[str, float]:
    """Disjoint task slices per measurement, so no write is a no-op."""
    out: dict[str, float] = {}
    data = {tid: t["data"] for tid, t in api.tasks_by_id(pid, ids, fields="task_only").items()}
    slices = iter(range(0, len(ids), n))
    for name, w in (("raw_patch_1", 1), (f"raw_patch_{workers}", workers)):
        s = next(slices)
        out[name] = round(raw_patch(url, key, {t: data[t] for t in ids[s:s + n]}, w), 1)
        log(f"  {name}: {out[name]} tasks/s")
    for name, w in (("merge_many_1", 1), (f"merge_many_{workers}", workers)):
        s = next(slices)
        out[name] = round(merge_many(api, pid, ids[s:s + n], w), 1)
        log(f"  {name}: {out[name]} tasks/s")
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--per-run", type=int, default=300, help="tasks written per measurement")
    ap.add_argument("--workers", type=int, default=4, help="concurrent PATCHes")
    ap.add_argument("--gunicorn-workers", type=int, default=0,
                    help="also measure Label Studio under gunicorn with N processes")
    ap.add_argument("--wal", action="store_true", help="switch the SQLite file to WAL first")
    ap.add_argument("--out")
    a = ap.parse_args(argv)
    if not TRAIN.is_file():
        print(f"{TRAIN} not found: this bench needs the shared CoNLL-03 corpus", file=sys.stderr)
        return 2
    if a.per_run * 4 > a.tasks:
        ap.error("--tasks must be at least 4 × --per-run (each measurement writes its own tasks)")
    from analysis.formats import read_conll, to_ls_tasks
    from analysis.labelstudio import LabelStudioAPI
    from bench.common import label_studio_or_say
    from ls_backend.local_servers import free_port, start_label_studio, stop, wait_http

    exe = label_studio_or_say()
    if not exe:
        return 2
    work = Path(tempfile.mkdtemp(prefix="nerq-ls-write-"))
    result: dict[str, Any] = {"bench": "ls_write", "tasks": a.tasks, "per_run": a.per_run,
                              "workers": a.workers, "wal": a.wal,
                              "machine": f"{os.cpu_count()} cores", "servers": {}}
    proc = None
    try:
        proc, url, key = start_label_studio(exe, work)
        api = LabelStudioAPI(url, key)
        tasks = [t for t in to_ls_tasks(read_conll(TRAIN)) if len(t["data"]["text"]) > 20]
        config = (REPO / "label_config" / "conll2003.xml").read_text(encoding="utf-8")
        pid = api.create_project("nerq write bench", config)
        ids = api.import_tasks(pid, [{"data": t["data"], "annotations": t["annotations"]}
                                     for t in tasks[:a.tasks]])
        log(f"imported {len(ids)} annotated tasks")
        if a.wal:
            stop(proc)
            with sqlite3.connect(work / "label_studio.sqlite3") as db:
                log(f"journal mode: {db.execute('PRAGMA journal_mode=WAL').fetchone()[0]}")
            proc, url, _ = start_label_studio(exe, work, token=key)
            api = LabelStudioAPI(url, key)
        log("label-studio start (Django dev server, threaded, one process)")
        result["servers"]["label-studio start"] = measure(api, url, key, pid, ids, a.per_run,
                                                           a.workers)
        if a.gunicorn_workers:
            stop(proc)
            port = free_port()
            env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(work), "DJANGO_DB": "sqlite",
                   "DJANGO_SETTINGS_MODULE": "core.settings.label_studio",
                   "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
                   "LATEST_VERSION_CHECK": "false", "LABEL_STUDIO_LATEST_VERSION_CHECK": "false"}
            import label_studio_sdk  # noqa: F401 - only to fail early when the SDK is missing

            ls_pkg = subprocess.check_output(
                [str(Path(exe).with_name("python")), "-c",
                 "import label_studio, os; print(os.path.dirname(label_studio.__file__))"],
                text=True).strip()
            log_f = open(work / "gunicorn.log", "wb")  # noqa: SIM115 - lives with the process
            proc = subprocess.Popen(gunicorn_cmd(exe, a.gunicorn_workers, port), cwd=ls_pkg,
                                    env=env, stdin=subprocess.DEVNULL, stdout=log_f,
                                    stderr=subprocess.STDOUT, start_new_session=True)
            url = f"http://127.0.0.1:{port}"
            wait_http(f"{url}/health", timeout=120, ok=lambda b: b"UP" in b)
            api = LabelStudioAPI(url, key)
            name = f"gunicorn -w {a.gunicorn_workers} --threads 4"
            log(name)
            result["servers"][name] = measure(api, url, key, pid, ids, a.per_run, a.workers)
    finally:
        stop(proc)
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n", encoding="utf-8")
    import shutil

    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

