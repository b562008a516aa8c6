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
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from typing import Any

from ls_backend.service.state import StateStore, project_id
from ls_backend.settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["predict_project", "run_cli"]


def _resolve_model(settings: Settings, pid: str, labels: tuple[str, ...],
                   model: str | None) -> tuple[Any, str]:
    from ls_backend.runtime import NerModel

    if model is not None:
        m = NerModel.load(model, labels=list(labels), **settings.serving_model_options)
        if not m.trained:
            raise ValueError(f"--model {model}: not a trained token-classification model")
        return m, m.version
    st = StateStore(settings.model_dir).get(pid)
    if st is not None and st.trained:
        missing = [lab for lab in st.model_labels if lab not in labels]
        if missing:
            raise ValueError(f"project {pid}: model {st.model_version} predicts labels {missing} "
                             f"that the project's label config {list(labels)} lacks")
        return NerModel.load(st.model_path, labels=list(st.model_labels),
                             **settings.serving_model_options), st.model_version
    if settings.model_name is not None:
        m = NerModel.load(settings.model_name, labels=list(labels), **settings.serving_model_options)
        if m.trained:
            from ls_backend.service.state import base_version

            return m, base_version(settings.model_name, labels)
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
) -> dict[str, Any]:
    """Create a prediction for every task of ``project`` that lacks one of this model version.

    Parameters
    ----------
    settings : needs ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (and ``MODEL_DIR`` to find
        the project's trained model)
    project : Label Studio project id
    batch_size : tasks per page and per batched model pass
    progress : tqdm progress bar on stderr
    model : model directory / HF path overriding the project's trained version
    api : an ``analysis.labelstudio.LabelStudioAPI`` (default: built from ``settings``)

    Returns
    -------
    dict with ``project, model_version, tasks, predicted, skipped_existing, failed,
    errors`` (first 20 messages), ``seconds``.
    """
    from analysis.formats import regions
    from analysis.formats.label_config import parse_label_config
    from ls_backend.service import scoring

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    pid = project_id(project)
    if api is None:
        url, key = settings.label_studio_url, settings.label_studio_api_key
        if not settings.label_studio_enabled or url is None or key is None:
            raise ValueError("predict --project needs LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY")
        from analysis.labelstudio import LabelStudioAPI

        api = LabelStudioAPI(url, key)
    t0 = time.time()
    proj = api.get_project(int(pid))
    config = parse_label_config(proj["label_config"])
    m, version = _resolve_model(settings, pid, tuple(config.labels), model)
    logger.info("project %s: pre-annotating with %s", pid, version)
    summary: dict[str, Any] = {"project": int(pid), "model_version": version, "tasks": 0,
                               "predicted": 0, "skipped_existing": 0, "failed": 0, "errors": []}
    bar = None
    if progress:
        from tqdm import tqdm

        total = proj.get("task_number") or proj.get("total_tasks") or None
        bar = tqdm(total=total, unit="task", desc=f"project {pid}", file=sys.stderr)
    try:
        for page in api.iter_tasks(int(pid), page_size=batch_size):
            summary["tasks"] += len(page)
            todo = [t for t in page if not any(
                p.get("model_version") == version for p in (t.get("predictions") or [])
                if isinstance(p, dict))]
            summary["skipped_existing"] += len(page) - len(todo)
            if todo:
                prepared = scoring.prepare_tasks(todo, config,
                                                 max_text_chars=settings.max_text_chars)
                for msg in prepared.errors.values():
                    summary["failed"] += 1
                    if len(summary["errors"]) < 20:
                        summary["errors"].append(msg)
                    logger.warning("project %s: %s", pid, msg)
                preds = m.predict([t.tokens for t in prepared.dataset.tasks], batch_tokens=4096)
                for task, pred in zip(prepared.dataset.tasks, preds):
                    result = regions(task.text, pred.spans, from_name=config.from_name,
                                     to_name=config.to_name, scores=pred.span_scores,
                                     id_prefix="nerq")
                    try:
                        api.create_prediction(task.id, result, score=round(float(pred.score), 6),
                                              model_version=version)
                        summary["predicted"] += 1
                    except (ValueError, ConnectionError) as exc:
                        summary["failed"] += 1
                        if len(summary["errors"]) < 20:
                            summary["errors"].append(f"task {task.id}: {exc}")
                        logger.error("project %s task %s: %s", pid, task.id, exc)
                        if isinstance(exc, ConnectionError):
                            raise
            if bar is not None:
                bar.update(len(page))
    finally:
        if bar is not None:
            bar.close()
        summary["seconds"] = round(time.time() - t0, 2)
    logger.info("project %s: %s", pid, {k: v for k, v in summary.items() if k != "errors"})
    return summary


def run_cli(args: argparse.Namespace) -> int:
    """Entry for ``ner-quality predict --project ID [--model DIR] [--batch-size N]``.

    Prints the summary as one JSON object on stdout; exit 1 when some tasks failed.
    """
    settings = getattr(args, "settings", None) or Settings.from_env()
    summary = predict_project(
        settings, args.project, batch_size=getattr(args, "batch_size", None) or 64,
        progress=bool(getattr(args, "progress", True)), model=getattr(args, "model", None),
    )
    print(json.dumps(summary))
    return 1 if summary["failed"] else 0
