"""``ner-quality demo``: the whole loop on the bundled sample dataset, nothing configured.

Steps (progress on stderr):

1. load ``ls_backend/sample_data/sample_tasks.json`` (323 invented sentences, PER/LOC/ORG,
   with planted wrong tags, boundary errors, missed and extra entities, malformed spans,
   near-duplicates and a sloppier second annotator; ``planted.json`` lists them);
2. cross-fit the packaged MiniLM backbone on CPU (``folds`` folds, ``epochs`` epochs each) for
   out-of-sample probabilities;
3. analyse (DEP, metrics, alerts) and write ``<out>/report.html`` (+ ``flagged.csv``, the
   probabilities ``probs.npz``, ``analysis.json``) — the report path is printed on stdout;
4. when ``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY`` are set, or ``--with-label-studio``
   finds a ``label-studio`` executable (started on 127.0.0.1 with a throw-away data dir):
   create a project, import the tasks, start ``ner-quality serve`` on 127.0.0.1 and connect it
   as the ML backend, sync, and push the review views.  Servers started here are stopped at
   the end unless ``--keep-running``.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"


def say(msg: str) -> None:
    print(f"[demo] {msg}", file=sys.stderr, flush=True)


def sample_tasks() -> tuple[list[dict[str, Any]], str]:
    """The bundled tasks (with ids ``1..n``) and their label config XML."""
    tasks = json.loads((SAMPLE_DIR / "sample_tasks.json").read_text(encoding="utf-8"))
    for i, t in enumerate(tasks):
        t["id"] = i + 1
    return tasks, (SAMPLE_DIR / "label_config.xml").read_text(encoding="utf-8")


def planted() -> dict[str, Any]:
    return json.loads((SAMPLE_DIR / "planted.json").read_text(encoding="utf-8"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, *, timeout: float, ok: Callable[[bytes], bool] = lambda b: True) -> None:
    t0 = time.time()
    last: Exception | None = None
    while time.time() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:  # noqa: S310 (local URL)
                if r.status == 200 and ok(r.read()):
                    return
        except Exception as exc:  # noqa: BLE001 - keep polling
            last = exc
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not come up within {timeout:.0f} s ({last})")


def find_label_studio() -> str | None:
    """The ``label-studio`` executable: ``$NERQ_LS_BIN``, else on ``PATH``, else the
    repository's ``.venv-ls``; None when there is none."""
    env = os.environ.get("NERQ_LS_BIN")
    if env and Path(env).is_file():
        return env
    here = Path(__file__).resolve().parents[1]
    for cand in (shutil.which("label-studio"), here / ".venv-ls" / "bin" / "label-studio"):
        if cand and Path(cand).is_file():
            return str(cand)
    return None


def start_label_studio(exe: str, data_dir: Path,
                       token: str | None = None) -> tuple[subprocess.Popen[bytes], str, str]:
    """Start Label Studio on 127.0.0.1 with a fresh admin and token; returns (proc, url, key).

    ``token``: the admin's token when ``data_dir`` already holds a server's data (a restart);
    the token only applies when the first user is created.
    """
    port = free_port()
    token = token or secrets.token_hex(20)
    env = {
        **os.environ,
        "LABEL_STUDIO_BASE_DATA_DIR": str(data_dir),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_USERNAME": "demo@example.com",
        "LABEL_STUDIO_PASSWORD": secrets.token_urlsafe(12),
        "LABEL_STUDIO_USER_TOKEN": token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_ML_BLOCK_LOCAL_IP": "false",
        "ML_BLOCK_LOCAL_IP": "false",
        "LABEL_STUDIO_SSRF_PROTECTION_ENABLED": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "LABEL_STUDIO_LATEST_VERSION_CHECK": "false",
        "LATEST_VERSION_CHECK": "false",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
    }
    log_f = open(data_dir / "label-studio.log", "wb")  # noqa: SIM115 - lives with the process
    proc = subprocess.Popen(
        [exe, "start", "--no-browser", "--internal-host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/health", timeout=180, ok=lambda b: b"UP" in b)
    return proc, url, token


def start_backend(url: str, key: str, model_dir: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "LABEL_STUDIO_URL": url, "LABEL_STUDIO_API_KEY": key,
           "MODEL_DIR": str(model_dir), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log_f = open(log_path, "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [sys.executable, "-m", "ls_backend.cli", "serve", "--host", "127.0.0.1", "--port", str(port)],
        stdin=subprocess.DEVNULL, stdout=log_f, stderr=subprocess.STDOUT, env=env,
        start_new_session=True,
    )
    burl = f"http://127.0.0.1:{port}"
    wait_http(f"{burl}/health", timeout=120)
    return proc, burl


def stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def run_demo(
    out_dir: str | Path = "ner-quality-demo",
    *,
    folds: int = 2,
    epochs: int = 3,
    lr: float = 3e-4,
    batch_size: int = 8,
    with_label_studio: bool = False,
    keep_running: bool = False,
    seed: int = 0,
    label_studio_url: str | None = None,
    label_studio_api_key: str | None = None,
) -> dict[str, Any]:
    """Run the demo; returns paths and, with Label Studio, the project id and URL."""
    from analysis.formats import from_ls_tasks
    from analysis.probs import ModelOutput, save_output
    from analysis.review.analyze import analyze_dataset
    from analysis.tags import TagSet

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks, config = sample_tasks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_ls_tasks(tasks, label_config=config, strict=False)
    say(f"1/4 sample dataset: {len(ds.tasks)} tasks, labels {', '.join(ds.labels)} "
        f"(planted errors: {SAMPLE_DIR / 'planted.json'})")

    from ls_backend.runtime import crossfit

    say(f"2/4 cross-fitting the packaged MiniLM on CPU: {folds} folds x {epochs} epochs ...")
    # a short, hot schedule: the sample is small and regular, and the demo must stay within a
    # few minutes on 2 CPU cores
    probs = crossfit(ds, folds=folds, epochs=epochs, seed=seed, progress=True, lr=lr,
                     batch_size=batch_size, out_dir=out / "crossfit")
    output = ModelOutput.from_arrays(probs, TagSet.for_labels(ds.labels))
    save_output(out / "probs.npz", output)
    say(f"    done in {time.time() - t0:.0f} s; probabilities in {out / 'probs.npz'}")

    say("3/4 analysing and writing the report ...")
    res = analyze_dataset(ds, probs=output, dep_source="cross-fitted MiniLM (demo)",
                          seed=seed)
    from ls_backend.commands.analyze import Inputs, summary_text
    from ls_backend.commands.report import build_report

    (out / "analysis.json").write_text(json.dumps(res.to_dict(), ensure_ascii=False))
    inp = Inputs(ds, None, None)
    result: dict[str, Any] = {"out_dir": str(out), "analysis": str(out / "analysis.json")}

    ls_proc = None
    url, key = label_studio_url, label_studio_api_key
    try:
        if not (url and key) and with_label_studio:
            exe = find_label_studio()
            if exe is None:
                say("    --with-label-studio: no label-studio executable found; skipping")
            else:
                say(f"4/4 starting Label Studio ({exe}) on 127.0.0.1 (first start ~30 s) ...")
                data_dir = Path(tempfile.mkdtemp(prefix="nerq-demo-ls-"))
                ls_proc, url, key = start_label_studio(exe, data_dir)
                say(f"    Label Studio at {url} (data dir {data_dir})")
        if url and key:
            pid = push_to_label_studio(url, key, tasks, config, res, ds, out, probs=output,
                                       result=result)
            inp = Inputs(ds, url, pid)
            if ls_proc is not None and not keep_running:
                say("    (Label Studio and the backend stop now; --keep-running keeps them)")
        else:
            say("4/4 Label Studio not configured (set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY, "
                "or pass --with-label-studio): report only")
        report = build_report(res, inp, out=out / "report.html", csv=str(out / "flagged.csv"),
                              title="ner-quality demo report", seed=seed)
        result["report"] = str(report)
        say(summary_text(res))
        say(f"finished in {time.time() - t0:.0f} s")
    finally:
        if not keep_running:
            stop(result.pop("_backend_proc", None))
            stop(ls_proc)
        else:
            result.pop("_backend_proc", None)
    return result


def push_to_label_studio(url: str, key: str, tasks: list[dict[str, Any]], config: str, res: Any,
                         ds: Any, out: Path, *, probs: Any, result: dict[str, Any]) -> int:
    """Create a project, import, connect the backend, sync, push views; returns the project id."""
    from analysis.formats import from_ls_tasks
    from analysis.labelstudio import LabelStudioAPI
    from analysis.labelstudio.push import plan_push
    from analysis.labelstudio.store import TaskStore, store_path, sync_project
    from analysis.review.analyze import analyze_dataset
    from ls_backend.commands.push import apply_plan

    api = LabelStudioAPI(url, key)
    pid = int(api.create_project("ner-quality demo", config))
    say(f"    project {pid} created; importing {len(tasks)} tasks ...")
    new_ids = api.import_tasks(pid, [{k: v for k, v in t.items() if k != "id"} for t in tasks])
    result.update({"label_studio_url": url, "project": pid})
    try:
        be_proc, burl = start_backend(url, key, out / "backend-models", out / "backend.log")
        result["_backend_proc"] = be_proc
        api.connect_ml_backend(pid, burl, title="ner-quality")
        say(f"    ML backend {burl} connected")
    except Exception as exc:  # noqa: BLE001 - the demo goes on without the backend
        say(f"    could not start/connect the ML backend ({exc}); continuing")
    path = store_path(url, pid, root=out / "store")
    with TaskStore(path) as st:
        sync_project(api, pid, st, progress=True,
                     project_info={"id": pid, "url": url, "label_config": config})
        stored = st.tasks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds_ls = from_ls_tasks(stored, label_config=config, strict=False)
    # the imported tasks keep the sample order, so the probabilities still line up
    if new_ids is not None and len(new_ids) != len(tasks):
        raise RuntimeError(f"imported {len(new_ids)} of {len(tasks)} tasks")
    res_ls = analyze_dataset(ds_ls, probs=probs, dep_source="cross-fitted MiniLM (demo)")
    plan = plan_push(res_ls, model_version="ner-quality-demo", dataset=ds_ls, suggest=True)
    summary = apply_plan(api, pid, plan, {int(t["id"]): t for t in stored})
    say(f"    pushed DEP/errors to {len(summary['tasks_changed'])} tasks; views: "
        + ", ".join(summary["views"]))
    say(f"    open {url}/projects/{pid}/data")
    return pid
