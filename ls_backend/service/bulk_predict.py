"""``ner-quality predict --project ID``: pre-annotate a whole Label Studio project in batches.

Tasks are read page by page through :mod:`analysis.labelstudio` (the only module that talks to
Label Studio), predicted in one batched model pass per page, and each prediction is created
with the same rules as the ML backend: the regions of :func:`analysis.formats.regions`, the
task ``score`` (least-confident token probability) and ONE ``model_version`` per model.

* **No duplicates / resumable**: a task that already carries a prediction with this
  ``model_version`` is skipped, so an interrupted run (Ctrl-C, Label Studio restart) simply
  continues when started again, and a second complete run creates nothing.
* **Model**: ``model`` (a directory or HF path) when given; else the project's current trained
  version from the backend's ``MODEL_DIR/<project>/`` (the same version the backend serves, so
  Label Studio's own retrieval skips these tasks afterwards); else ``MODEL_NAME`` when it is
  already a token-classification model.  An untrained backbone is refused: never predictions
  from a random head.
* Invalid tasks (no text, too long, ...) are counted and reported, not fatal.
* **Engine**: ``local`` predicts each page here and writes its predictions one by one;
  ``ray`` (:func:`predict_project_ray`) gathers windows of pages, predicts each window on Ray
  Data (an actor pool, one model per actor) and writes through one bounded, rate-limited
  writer on the driver (:class:`ls_backend.engine.writer.PredictionWriter`) — the same
  skip-what-exists rule, so it resumes the same way and never writes a task twice.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import dataclass
from typing import Any

from ls_backend.service.state import StateStore, project_id
from ls_backend.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["predict_project", "run_cli"]

#: items per Ray actor call at most (large calls run the runtime faster; see
#: ``ls_backend.engine.predict.plan_batches``)
RAY_BATCH = 1024


@dataclass
class ModelChoice:
    """The model a bulk prediction uses: loaded here, and how a Ray actor loads it again."""

    model: Any
    version: str
    path: str
    load_options: dict[str, Any]


def _resolve_model(settings: Settings, pid: str, labels: tuple[str, ...],
                   model: str | None) -> ModelChoice:
    from ls_backend.runtime import NerModel

    opts = settings.serving_model_options
    if model is not None:
        m = NerModel.load(model, labels=list(labels), **opts)
        if not m.trained:
            raise ValueError(f"--model {model}: not a trained token-classification model")
        return ModelChoice(m, m.version, str(model), {"labels": list(labels), **opts})
    st = StateStore(settings.model_dir).get(pid)
    if st is not None and st.trained:
        missing = [lab for lab in st.model_labels if lab not in labels]
        if missing:
            raise ValueError(f"project {pid}: model {st.model_version} predicts labels {missing} "
                             f"that the project's label config {list(labels)} lacks")
        kw = {"labels": list(st.model_labels), **opts}
        return ModelChoice(NerModel.load(st.model_path, **kw), st.model_version,
                           str(st.model_path), kw)
    if settings.model_name is not None:
        m = NerModel.load(settings.model_name, labels=list(labels), **opts)
        if m.trained:
            from ls_backend.service.state import base_version

            return ModelChoice(m, base_version(settings.model_name, labels),
                               str(settings.model_name), {"labels": list(labels), **opts})
    raise ValueError(
        f"project {pid}: no trained model (none in MODEL_DIR={settings.model_dir}/{pid} and "
        f"MODEL_NAME is not a token-classification model); train one first (Label Studio's "
        f"'Start training', or `ner-quality train`) or pass --model"
    )


def predict_project(
    settings: Settings,
    project: int | str,
    *,
    batch_size: int = 64,
    progress: bool = True,
    model: str | None = None,
    api: Any = None,
    engine: Any = None,
    write_rate: float | None = None,
    window: int = 2048,
) -> dict[str, Any]:
    """Create a prediction for every task of ``project`` that lacks one of this model version.

    Parameters
    ----------
    settings : needs ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (and ``MODEL_DIR`` to find
        the project's trained model)
    project : Label Studio project id
    batch_size : tasks per page and per batched model pass (on Ray: per page; an actor call
        takes up to 1,024 tasks of a window)
    progress : tqdm progress bar on stderr (tasks done / total, rate, ETA)
    model : model directory / HF path overriding the project's trained version
    api : an ``analysis.labelstudio.LabelStudioAPI`` (default: built from ``settings``)
    engine : ``ls_backend.engine.EngineOptions``; None or ``local``: here, page by page
    write_rate : with Ray, predictions written per second at most (None: no limit)
    window : with Ray, tasks read from Label Studio per Ray Dataset

    Returns
    -------
    dict with ``project, model_version, engine, tasks, predicted, skipped_existing, failed,
    errors`` (first 20 messages), ``seconds``; on Ray also ``writes`` (the writer's report).
    """
    from analysis.formats.label_config import parse_label_config

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    pid = project_id(project)
    if api is None:
        url, key = settings.label_studio_url, settings.label_studio_api_key
        if not settings.label_studio_enabled or url is None or key is None:
            raise ValueError("predict --project needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        from analysis.labelstudio import LabelStudioAPI

        api = LabelStudioAPI(url, key)
    on_ray = engine is not None and engine.is_ray
    if on_ray:
        from ls_backend.engine.cluster import preflight

        preflight(engine)  # fail before loading anything when Ray is missing or unreachable
    t0 = time.time()
    proj = api.get_project(int(pid))
    config = parse_label_config(proj["label_config"])
    choice = _resolve_model(settings, pid, tuple(config.labels), model)
    logger.info("project %s: pre-annotating with %s", pid, choice.version)
    run = _Run(settings, pid, config, choice.version, {
        "project": int(pid), "model_version": choice.version, "engine": "ray" if on_ray else "local",
        "tasks": 0, "predicted": 0, "skipped_existing": 0, "failed": 0, "errors": []})
    bar = None
    if progress:
        from tqdm import tqdm

        total = proj.get("task_number") or proj.get("total_tasks") or None
        bar = tqdm(total=total, unit="task", desc=f"project {pid}", file=sys.stderr)
    try:
        if on_ray:
            _on_ray(run, api, choice, engine, batch_size=batch_size, window=window,
                    write_rate=write_rate, bar=bar)
        else:
            _local(run, api, choice.model, batch_size=batch_size, bar=bar)
    finally:
        if bar is not None:
            bar.close()
        run.summary["seconds"] = round(time.time() - t0, 2)
    summary = run.summary
    logger.info("project %s: %s", pid, {k: v for k, v in summary.items() if k != "errors"})
    return summary


@dataclass
class _Run:
    """One bulk prediction's fixed inputs and its running summary."""

    settings: Settings
    pid: str
    config: Any
    version: str
    summary: dict[str, Any]

    def todo(self, tasks: list[dict[str, Any]]) -> Any:
        """The tasks that lack this version's prediction, prepared (``scoring.prepare_tasks``);
        counts the skipped and the invalid ones."""
        from ls_backend.service import scoring

        self.summary["tasks"] += len(tasks)
        todo = [t for t in tasks if not any(
            p.get("model_version") == self.version for p in (t.get("predictions") or [])
            if isinstance(p, dict))]
        self.summary["skipped_existing"] += len(tasks) - len(todo)
        if not todo:
            return None
        prepared = scoring.prepare_tasks(todo, self.config,
                                         max_text_chars=self.settings.max_text_chars)
        for msg in prepared.errors.values():
            self.fail(msg)
        return prepared

    def fail(self, msg: str) -> None:
        self.summary["failed"] += 1
        if len(self.summary["errors"]) < 20:
            self.summary["errors"].append(msg)
        logger.warning("project %s: %s", self.pid, msg)

    def regions(self, task: Any, pred: Any) -> list[dict[str, Any]]:
        from analysis.formats import regions

        return regions(task.text, pred.spans, from_name=self.config.from_name,
                       to_name=self.config.to_name, scores=pred.span_scores, id_prefix="nerq")


def _local(run: _Run, api: Any, m: Any, *, batch_size: int, bar: Any) -> None:
    """Page by page: predict the page here, write each prediction (the ``local`` engine)."""
    for page in api.iter_tasks(int(run.pid), page_size=batch_size):
        prepared = run.todo(list(page))
        if prepared is not None:
            preds = m.predict([t.tokens for t in prepared.dataset.tasks], batch_tokens=4096)
            for task, pred in zip(prepared.dataset.tasks, preds):
                try:
                    api.create_prediction(task.id, run.regions(task, pred),
                                          score=round(float(pred.score), 6),
                                          model_version=run.version)
                    run.summary["predicted"] += 1
                except (ValueError, ConnectionError) as exc:
                    run.fail(f"task {task.id}: {exc}")
                    if isinstance(exc, ConnectionError):
                        raise
        if bar is not None:
            bar.update(len(page))


def _windows(pages: Any, size: int) -> Any:
    """Pages of tasks regrouped into lists of about ``size`` tasks (whole pages)."""
    buf: list[dict[str, Any]] = []
    for page in pages:
        buf.extend(page)
        if len(buf) >= size:
            yield buf
            buf = []
    if buf:
        yield buf


def _on_ray(run: _Run, api: Any, choice: ModelChoice, engine: Any, *, batch_size: int,
            window: int, write_rate: float | None, bar: Any) -> None:
    """Windows of Label Studio pages → Ray Data (actor pool) → one writer on this driver.

    The next window is read from Label Studio while Ray predicts the current one.
    """
    from concurrent.futures import ThreadPoolExecutor

    from ls_backend.engine.cluster import ray_session
    from ls_backend.engine.predict import predict_on_ray
    from ls_backend.engine.writer import PredictionWriter

    choice.model = None  # the actors load their own; this copy only checked the model
    with ray_session(engine) as session, ThreadPoolExecutor(1) as reader:
        writer = PredictionWriter(api, run.version, rate=write_rate,
                                  on_written=bar.update if bar is not None else None)
        windows = _windows(api.iter_tasks(int(run.pid), page_size=batch_size), window)
        ok = False
        try:
            nxt = reader.submit(next, windows, None)
            while (tasks := nxt.result()) is not None:
                nxt = reader.submit(next, windows, None)
                prepared = run.todo(tasks)
                if bar is not None:  # skipped and invalid tasks are done too
                    n_do = 0 if prepared is None else len(prepared.dataset.tasks)
                    bar.update(len(tasks) - n_do)
                if prepared is None:
                    continue
                ptasks = prepared.dataset.tasks
                for i, pred in predict_on_ray(session, engine, choice.path,
                                              [t.tokens for t in ptasks],
                                              load_options=choice.load_options,
                                              batch_size=RAY_BATCH):
                    writer.put(ptasks[i].id, run.regions(ptasks[i], pred),
                               round(float(pred.score), 6))
            ok = True
        finally:
            # done: write what is queued; failed or interrupted: stop now (a rerun resumes)
            report = writer.close() if ok else writer.abort()
            run.summary["predicted"] = report.written + report.already_there
            run.summary["failed"] += report.failed
            run.summary["errors"].extend(report.errors[: 20 - len(run.summary["errors"])])
            run.summary["writes"] = {"written": report.written, "retries": report.retries,
                                     "already_there": report.already_there,
                                     "duplicates_skipped": report.duplicates_skipped,
                                     "not_written": report.not_written}


def run_cli(args: argparse.Namespace) -> int:
    """Entry for ``ner-quality predict --project ID [--model DIR] [--batch-size N]``.

    Prints the summary as one JSON object on stdout; exit 1 when some tasks failed.
    """
    settings = getattr(args, "settings", None) or Settings.from_env()
    from ls_backend.engine import EngineOptions

    summary = predict_project(
        settings, args.project, batch_size=getattr(args, "batch_size", None) or 64,
        progress=bool(getattr(args, "progress", True)), model=getattr(args, "model", None),
        engine=EngineOptions.from_args(args), write_rate=getattr(args, "write_rate", None),
        window=getattr(args, "ray_window", None) or 2048,
    )
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0
