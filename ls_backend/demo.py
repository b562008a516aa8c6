"""``ner-quality demo``: the plugin in a local Label Studio, on the bundled sample dataset.

Steps (progress on stderr, the result on stdout):

1. load ``ls_backend/sample_data/sample_tasks.json`` (323 invented sentences, PER/LOC/ORG,
   with planted wrong tags, boundary errors, missed and extra entities, malformed spans,
   near-duplicates, a sloppier second annotator, and 53 tasks labelled again by two more
   annotators; ``planted.json`` lists it all);
2. find Label Studio (``$NERQ_LS_BIN``, ``PATH``, ``./.venv-ls``, ``~/.cache/ner-quality/
   label-studio-venv``) or install it into its own venv, and start it on 127.0.0.1 with a
   throw-away data folder while the model trains;
3. cross-fit the packaged MiniLM backbone on CPU (``folds`` folds, ``epochs`` epochs each) for
   out-of-sample probabilities;
4. create the annotators as Label Studio users, create a project and import the tasks with
   each annotation credited to its annotator, start ``ner-quality serve`` and connect it as the
   ML backend, sync, analyse (DEP, errors, alerts, annotator agreement), push the fields,
   review views and consensus predictions, and write ``<out>/report.html`` (+ ``flagged.csv``,
   ``probs.npz``, ``analysis.json``) with links into the project;
5. print the URL, the login, the review views, how many planted errors the views caught, and
   wait: Ctrl-C (or SIGTERM) stops Label Studio and the backend and removes the temporary data
   folder.

``report_only`` skips Label Studio (steps 2, 4 and the wait): the report of the file analysis.
With ``LABEL_STUDIO_URL`` + ``LABEL_STUDIO_API_KEY`` set, step 2 uses that server instead of
starting one (Ctrl-C then stops only the backend).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ls_backend.local_servers import (
    DEMO_USER,
    find_label_studio,
    free_port,
    install_label_studio,
    say,
    start_backend,
    start_label_studio,
    stop,
    wait_http,
)

log = logging.getLogger(__name__)

__all__ = [
    "DemoResult",
    "caught_planted",
    "find_label_studio",
    "free_port",
    "planted",
    "run_demo",
    "sample_tasks",
    "start_label_studio",
    "stop",
    "wait_http",
]

SAMPLE_DIR = Path(__file__).resolve().parent / "sample_data"
#: the planted error kinds the demo reports, with their names in its summary
PLANTED_KINDS = {"wrong_tag": "wrong tag", "span_shift": "span shift", "missed": "missed",
                 "extra": "extra", "bad_edge": "malformed"}


def sample_tasks() -> tuple[list[dict[str, Any]], str]:
    """The bundled tasks (with ids ``1..n``) and their label config XML."""
    tasks = json.loads((SAMPLE_DIR / "sample_tasks.json").read_text(encoding="utf-8"))
    for i, t in enumerate(tasks):
        t["id"] = i + 1
    return tasks, (SAMPLE_DIR / "label_config.xml").read_text(encoding="utf-8")


def planted() -> dict[str, Any]:
    return json.loads((SAMPLE_DIR / "planted.json").read_text(encoding="utf-8"))


def caught_planted(result: Mapping[str, Any], id_of_index: Mapping[int, int]
                   ) -> dict[str, tuple[int, int]]:
    """Per planted kind, ``(caught, planted)``: how many planted tasks an alert flagged.

    ``result``: :meth:`analysis.review.Analysis.to_dict`; ``id_of_index``: sample index ->
    task id in that result.
    """
    flagged = {int(t) for a in result["alerts"] for t in a["task_ids"]}
    p = planted()
    out = {}
    for kind in PLANTED_KINDS:
        ids = [id_of_index[i] for i in p[kind]]
        out[kind] = (sum(i in flagged for i in ids), len(ids))
    return out


@dataclass
class DemoResult:
    """What the demo made (paths, and the Label Studio project when there is one)."""

    out_dir: Path
    report: Path
    analysis: Path
    caught: dict[str, tuple[int, int]]
    views: dict[str, int] = field(default_factory=dict)
    label_studio_url: str | None = None
    project: int | None = None
    login: tuple[str, str] | None = None
    agreement: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """The lines printed at the end (stdout)."""
        c_all = sum(c for c, _ in self.caught.values())
        n_all = sum(n for _, n in self.caught.values())
        kinds = ", ".join(f"{PLANTED_KINDS[k]} {c}/{n}" for k, (c, n) in self.caught.items())
        lines = ["", "ner-quality demo: ready" if self.label_studio_url else
                 "ner-quality demo: done (report only)"]
        if self.label_studio_url and self.project is not None:
            lines.append(f"  Label Studio   {self.label_studio_url}/projects/{self.project}/data")
            if self.login is not None:
                lines.append(f"  login          {self.login[0]} / {self.login[1]}")
            lines.append("  review views   the project's Data Manager tabs:")
            lines += [f"                   {t} ({n} tasks)" for t, n in self.views.items()]
        lines.append(f"  caught         {c_all} of {n_all} planted errors ({kinds})")
        ag = self.agreement
        if ag and ag.get("tasks"):
            f1 = ag["overall"].get("f1_exact")
            alpha = ag.get("alpha")
            per = ", ".join(f"{a['annotator'].split('@')[0]} {a['f1_vs_others']:.2f}"
                            for a in ag["per_annotator"] if a.get("f1_vs_others") is not None)
            lines.append(f"  agreement      {ag['tasks']} tasks labelled by several annotators: "
                         f"span F1 {_f(f1)}, token alpha {_f(alpha)}; per annotator {per}")
        lines.append(f"  report         {self.report}")
        lines += [f"  note           {n}" for n in self.notes]
        return "\n".join(lines)


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def annotator_emails(tasks: list[dict[str, Any]]) -> list[str]:
    """Every annotator email of the sample, in first-seen order."""
    seen: dict[str, None] = {}
    for t in tasks:
        for a in t.get("annotations", []):
            if a.get("completed_by_email"):
                seen.setdefault(a["completed_by_email"], None)
    return list(seen)


def credited(tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The sample tasks as Label Studio imports them: without the local ids, each annotation
    credited to its annotator (``completed_by: {"email": ...}``; the users must exist)."""
    out = []
    for t in tasks:
        anns = [{**{k: v for k, v in a.items() if k != "completed_by_email"},
                 **({"completed_by": {"email": a["completed_by_email"]}}
                    if a.get("completed_by_email") else {})}
                for a in t.get("annotations", [])]
        out.append({**{k: v for k, v in t.items() if k not in ("id", "annotations")},
                    "annotations": anns})
    return out


@contextmanager
def _stop_on_sigterm() -> Iterator[None]:
    """SIGTERM behaves like Ctrl-C (the clean-up in ``finally`` blocks runs)."""
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@dataclass
class _Servers:
    """Processes and folders the demo started (stopped / removed by :meth:`close`)."""

    ls: subprocess.Popen[bytes] | None = None
    ls_dir: Path | None = None
    backend: subprocess.Popen[bytes] | None = None

    def close(self) -> None:
        stop(self.backend)
        stop(self.ls)
        if self.ls_dir is not None:
            shutil.rmtree(self.ls_dir, ignore_errors=True)

    def wait(self, url: str | None) -> None:
        """Until Ctrl-C / SIGTERM, or until a server the demo started dies."""
        while True:
            for name, p in (("Label Studio", self.ls), ("the backend", self.backend)):
                if p is not None and p.poll() is not None:
                    raise RuntimeError(f"{name} exited with code {p.returncode} (logs in the "
                                       f"demo folder{'' if url is None else ', ' + url})")
            time.sleep(1.0)


def run_demo(
    out_dir: str | Path = "ner-quality-demo",
    *,
    folds: int = 2,
    epochs: int = 3,
    lr: float = 3e-4,
    batch_size: int = 8,
    report_only: bool = False,
    wait: bool = True,
    seed: int = 0,
    label_studio_url: str | None = None,
    label_studio_api_key: str | None = None,
) -> DemoResult:
    """Run the demo (see the module docstring); returns what it made.

    ``wait=False`` does not wait for Ctrl-C: the servers it started are stopped (and the
    temporary folder removed) as soon as everything is pushed.
    """
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    out = Path(out_dir).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    tasks, config = sample_tasks()
    steps = 3 if report_only else 5
    n_multi = sum(len(t["annotations"]) > 1 for t in tasks)
    say(f"1/{steps} sample dataset: {len(tasks)} tasks ({n_multi} labelled by several "
        f"annotators), planted errors in {SAMPLE_DIR / 'planted.json'}")
    servers = _Servers()
    url, key = label_studio_url, label_studio_api_key
    login: tuple[str, str] | None = None
    with _stop_on_sigterm():
        try:
            if not report_only and not (url and key):
                exe = find_label_studio()
                if exe is None:
                    say(f"2/{steps} Label Studio is not installed")
                    exe = install_label_studio()
                password = secrets.token_urlsafe(9)
                servers.ls_dir = Path(tempfile.mkdtemp(prefix="nerq-demo-ls-"))
                say(f"2/{steps} starting Label Studio ({exe}) on 127.0.0.1 (first start "
                    "~30-60 s, in the background) ...")
                ls_start = _LSStart(exe, servers.ls_dir, password, servers)
                login = (DEMO_USER, password)
            else:
                ls_start = None
            probs = _crossfit(tasks, config, out, folds=folds, epochs=epochs, lr=lr,
                              batch_size=batch_size, seed=seed, step=f"{2 if report_only else 3}"
                              f"/{steps}")
            if report_only:
                res = _report_only(tasks, config, out, probs, seed=seed, steps=steps)
            else:
                if ls_start is not None:
                    servers.ls, url, key = ls_start.join()
                assert url and key
                res = push_to_label_studio(url, key, tasks, config, out, probs=probs,
                                           servers=servers, seed=seed, steps=steps, login=login)
            say(f"finished in {time.time() - t0:.0f} s")
            if not report_only and wait:
                print(res.summary() + "\n  Ctrl-C stops Label Studio and the backend"
                      + (f" and removes {servers.ls_dir}" if servers.ls_dir else "") + ".",
                      flush=True)
                try:
                    servers.wait(res.label_studio_url)
                except KeyboardInterrupt:  # the documented way to end the demo
                    say("stopping ...")
            else:
                print(res.summary(), flush=True)
            return res
        except KeyboardInterrupt:
            say("interrupted; stopping ...")
            raise
        finally:
            servers.close()
            if servers.ls_dir is not None:
                say(f"stopped; removed {servers.ls_dir}")


class _LSStart:
    """Label Studio starting in a thread while the model trains."""

    def __init__(self, exe: str, data_dir: Path, password: str, servers: _Servers) -> None:
        import threading

        self._out: tuple[subprocess.Popen[bytes], str, str] | None = None
        self._err: BaseException | None = None

        def spawned(proc: subprocess.Popen[bytes]) -> None:
            servers.ls = proc  # stopped by servers.close() even while it is still starting

        def run() -> None:
            try:
                self._out = start_label_studio(exe, data_dir, password=password,
                                               on_spawn=spawned)
            except BaseException as exc:  # noqa: BLE001 - re-raised in join()
                self._err = exc

        self._t = threading.Thread(target=run, name="label-studio-start", daemon=True)
        self._t.start()

    def join(self) -> tuple[subprocess.Popen[bytes], str, str]:
        self._t.join()
        if self._err is not None:
            raise RuntimeError(f"Label Studio did not start: {self._err}") from self._err
        assert self._out is not None
        return self._out


def _crossfit(tasks: list[dict[str, Any]], config: str, out: Path, *, folds: int, epochs: int,
              lr: float, batch_size: int, seed: int, step: str) -> Any:
    """Cross-fitted probabilities of the sample (saved to ``<out>/probs.npz``)."""
    from analysis.formats import from_ls_tasks
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet
    from ls_backend.runtime import crossfit

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_ls_tasks(tasks, label_config=config, strict=False)
    t0 = time.time()
    say(f"{step} cross-fitting the packaged MiniLM on CPU: {folds} folds x {epochs} epochs "
        "(out-of-sample DEP) ...")
    probs = crossfit(ds, folds=folds, epochs=epochs, seed=seed, progress=True, lr=lr,
                     batch_size=batch_size, out_dir=out / "crossfit")
    output = ModelOutput.from_arrays(probs, TagSet.for_labels(ds.labels))
    save_output(out / "probs.npz", output)
    say(f"    done in {time.time() - t0:.0f} s; probabilities in {out / 'probs.npz'}")
    return output


def _write(res: Any, inp: Any, out: Path, seed: int) -> Path:
    from ls_backend.commands.report import build_report

    (out / "analysis.json").write_text(json.dumps(res.to_dict(), ensure_ascii=False))
    return Path(build_report(res, inp, out=out / "report.html", csv=str(out / "flagged.csv"),
                             title="ner-quality demo report", seed=seed))


def _report_only(tasks: list[dict[str, Any]], config: str, out: Path, probs: Any, *, seed: int,
                 steps: int) -> DemoResult:
    from analysis.formats import from_ls_tasks
    from analysis.review.analyze import analyze_dataset
    from ls_backend.commands.analyze import Inputs

    say(f"3/{steps} analysing and writing the report ...")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_ls_tasks(tasks, label_config=config, strict=False)
    res = analyze_dataset(ds, probs=probs, dep_source="cross-fitted MiniLM (demo)", seed=seed)
    report = _write(res, Inputs(ds, None, None), out, seed)
    d = res.to_dict()
    return DemoResult(out, report, out / "analysis.json",
                      caught_planted(d, {i: int(t["id"]) for i, t in enumerate(tasks)}),
                      agreement=d["metrics"].get("agreement"))


def push_to_label_studio(url: str, key: str, tasks: list[dict[str, Any]], config: str,
                         out: Path, *, probs: Any, servers: _Servers, seed: int, steps: int,
                         login: tuple[str, str] | None) -> DemoResult:
    """Users, project, import, backend, sync, analysis, push, report (step 4 of the demo)."""
    from analysis.formats import from_ls_tasks
    from analysis.labelstudio import LabelStudioAPI
    from analysis.labelstudio.push import plan_push
    from analysis.labelstudio.store import TaskStore, store_path, sync_project
    from analysis.review.analyze import analyze_dataset
    from ls_backend.commands.analyze import Inputs
    from ls_backend.commands.push import apply_plan

    say(f"4/{steps} Label Studio at {url}: users, project, import, backend, analysis ...")
    api = LabelStudioAPI(url, key)
    users = api.ensure_users(annotator_emails(tasks))
    say(f"    annotators as Label Studio users: {', '.join(users)}")
    pid = int(api.create_project("ner-quality demo", config))
    new_ids = api.import_tasks(pid, credited(tasks))
    if len(new_ids) != len(tasks):
        raise RuntimeError(f"imported {len(new_ids)} of {len(tasks)} tasks")
    say(f"    project {pid}: {len(new_ids)} tasks imported")
    servers.backend, burl = start_backend(url, key, out / "backend-models", out / "backend.log")
    api.connect_ml_backend(pid, burl, title="ner-quality")
    say(f"    ML backend {burl} connected (log: {out / 'backend.log'})")
    with TaskStore(store_path(url, pid, root=out / "store")) as st:
        sync_project(api, pid, st, progress=True,
                     project_info={"id": pid, "url": url, "label_config": config})
        stored = st.tasks()
    by_id = {int(t["id"]): t for t in stored}
    ordered = [by_id[i] for i in new_ids]  # sample order: the probabilities line up
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_ls_tasks(ordered, label_config=config, strict=False)
    res = analyze_dataset(ds, probs=probs, dep_source="cross-fitted MiniLM (demo)", seed=seed)
    plan = plan_push(res, model_version="ner-quality-demo", dataset=ds, suggest=True)
    summary = apply_plan(api, pid, plan, by_id)
    say(f"    pushed DEP/errors to {len(summary['tasks_changed'])} tasks, "
        f"{len(summary['predictions'])} predictions (model suggestions and consensus), "
        f"{len(summary['views'])} review views")
    report = _write(res, Inputs(ds, url, pid), out, seed)
    d = res.to_dict()
    notes = [f"alert '{a.name}' is dataset-wide (no tasks to review)"
             for a in res.alerts if not a.task_ids]
    return DemoResult(out, report, out / "analysis.json",
                      caught_planted(d, {i: int(t) for i, t in enumerate(new_ids)}),
                      views={t: len(v) for t, v in summary["views"].items()},
                      label_studio_url=url, project=pid, login=login,
                      agreement=d["metrics"].get("agreement"), notes=notes)
