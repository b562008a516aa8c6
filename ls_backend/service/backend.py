"""The backend service: projects, ``/predict``, webhooks and the background scoring worker.

``app.py`` is a thin layer of routes over :class:`Backend`.  Everything slow happens off the
request thread:

* **Scoring queue** (:mod:`.queue`) — a bounded, de-duplicating queue keyed by
  ``(project, task id)``: a task queued twice before the worker reaches it is scored once, with
  the latest payload.  One worker thread drains up to ``BATCH_SIZE`` jobs at a time, runs ONE
  batched model pass per project and writes the scores through :mod:`analysis.labelstudio`
  (read-merge-write; re-scoring replaces).
* **Training** (:mod:`.training`) — at most one per project, one at a time per process.
* **Model cache** (:mod:`.models`) — one loaded model (and span index) per
  ``(project, version)``, loaded lazily behind a per-key lock.
* **Chores** (:mod:`.janitor`) — duplicate predictions Label Studio made, the project's
  model version.

Nothing here loads a model or opens a connection at import time; the worker thread starts
with the first job.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from pathlib import Path
from typing import Any

from ls_backend.settings import Settings

from .errors import BadRequest, LabelMismatch, NoLabelStudio, QueueFull, TaskError
from .janitor import DEDUP_MAX_TASKS, Janitor
from .models import ModelCache
from .queue import ScoreJob, ScoreQueue
from .state import ProjectState, StateStore, base_version, project_id
from .training import Trainer

logger = logging.getLogger(__name__)

__all__ = ["Backend"]


class Backend:
    """State, models, queue and training for every project this process serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = StateStore(settings.model_dir)
        self.models = ModelCache(settings)
        self.queue = ScoreQueue(settings.queue_size)
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._stop = threading.Event()
        self._meta_lock = threading.Lock()
        self.trainer = Trainer(self)
        self.janitor = Janitor(self)
        self._api: Any = None
        self.stats = {"scored": 0, "written": 0, "failed": 0, "predicted_tasks": 0}
        self.recent_errors: list[dict[str, Any]] = []
        self.recent_scores: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()

    # -- Label Studio --------------------------------------------------------------------

    @property
    def api(self) -> Any:
        """The Label Studio adapter (created on first use), or raise :class:`NoLabelStudio`."""
        url, key = self.settings.label_studio_url, self.settings.label_studio_api_key
        if not self.settings.label_studio_enabled or url is None or key is None:
            raise NoLabelStudio(
                "LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY are not set: cannot read tasks from or "
                "write scores to Label Studio"
            )
        with self._meta_lock:
            if self._api is None:
                from analysis.labelstudio import LabelStudioAPI

                self._api = LabelStudioAPI(url, key)
            return self._api

    def record_error(self, where: str, exc: BaseException | str) -> None:
        msg = exc if isinstance(exc, str) else f"{type(exc).__name__}: {exc}"
        with self._meta_lock:
            self.recent_errors.append({"time": time.time(), "where": where, "error": msg})
            del self.recent_errors[:-50]

    # -- projects ------------------------------------------------------------------------

    def ensure_project(self, pid: str, label_config: str | None) -> tuple[ProjectState, Any]:
        """Create or refresh a project's state from its label config; return (state, config).

        Raises ``ValueError`` for a config without ``<Labels>`` (or unparsable XML) and when
        the project is unknown and no config is given.
        """
        from analysis.formats.label_config import parse_label_config

        pid = project_id(pid)
        st = self.store.get(pid)
        xml = label_config or (st.label_config if st else None)
        if not xml:
            raise BadRequest(
                f"project {pid}: no label config known; call /setup first or send label_config"
            )
        try:
            config = parse_label_config(xml)
        except ValueError as exc:
            raise BadRequest(f"project {pid}: bad label config: {exc}") from None
        if st is not None and st.label_config == xml and st.model_version:
            return st, config

        def fn(s: ProjectState) -> None:
            s.label_config = xml
            s.labels = tuple(config.labels)
            s.from_name, s.to_name, s.value_key = config.from_name, config.to_name, config.value_key
            if not s.trained:
                s.model_version = base_version(self.settings.model_name, s.labels)

        st = self.store.update(pid, fn, create=True)
        logger.info("project %s: label config set (labels %s), model version %s",
                    pid, list(config.labels), st.model_version)
        return st, config

    def model_for(self, st: ProjectState, config: Any) -> Any | None:
        """The model serving ``st`` or ``None`` when the project has no trained model.

        Raises ``ValueError`` (HTTP 409) when the trained model predicts labels the config
        no longer has.
        """
        if st.trained:
            missing = [lab for lab in st.model_labels if lab not in config.labels]
            if missing:
                raise LabelMismatch(
                    f"project {st.project}: model {st.model_version} predicts labels {missing} "
                    f"that the label config {list(config.labels)} does not have; add them to the "
                    f"config or retrain (START_TRAINING)"
                )
            extra = [lab for lab in config.labels if lab not in st.model_labels]
            if extra:
                logger.warning("project %s: labels %s are unknown to model %s (trained on %s); "
                               "they are never predicted until the next training", st.project,
                               extra, st.model_version, list(st.model_labels))
            return self.models.get((st.project, st.model_version), st.model_path, st.model_labels)
        if self.models.base_is_trained(tuple(config.labels)):
            return self.models.get(
                ("__base__", base_version(self.settings.model_name, tuple(config.labels))),
                None, tuple(config.labels),
            )
        return None

    # -- predict ---------------------------------------------------------------------------

    def predict(self, pid: str, tasks: list[Any], label_config: str | None) -> list[dict[str, Any]]:
        """Answer ``/predict``: one result dict per task, in order (see :mod:`.scoring`)."""
        from . import scoring

        st, config = self.ensure_project(pid, label_config)
        prepared = scoring.prepare_tasks(
            tasks, config, max_text_chars=self.settings.max_text_chars
        )
        if not prepared.dataset.tasks:
            raise TaskError("; ".join(prepared.errors.values()))
        model = self.model_for(st, config)
        version = st.model_version
        if model is None:
            logger.info(
                "project %s has no trained model yet (version %s): answering %d task(s) without "
                "regions; annotate %d task(s) or send START_TRAINING to train one",
                st.project, version, len(tasks), self.settings.train_every_n_annotations,
            )
            return scoring.empty_results(prepared, version)
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        results = scoring.prediction_results(prepared, preds, config, version)
        self.janitor.sync_project_version(st)
        if len(prepared.dataset.tasks) <= DEDUP_MAX_TASKS:
            self.janitor.dedup_later(st, [t.id for t in prepared.dataset.tasks if t.id is not None])
        with self._meta_lock:
            self.stats["predicted_tasks"] += len(prepared.dataset.tasks)
        # Side products, written in the background: uncertainty of every task, and live
        # scores of tasks that already carry an annotation.
        if st.trained:
            index = self.models.get_index((st.project, version), st.model_path)
            overlays = scoring.score_tasks(
                prepared, preds, model=model, version=version, index=index,
                similar_k=self.settings.similar_k,
            )
            for task_id, overlay in overlays.items():
                self.remember(st.project, task_id, overlay)
                self.enqueue_quiet(ScoreJob(st.project, task_id, fields=overlay))
        return results

    def webhook(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Handle a Label Studio webhook at once; the work is queued. Returns (reply, status)."""
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise BadRequest("webhook: missing 'action'")
        project = body.get("project")
        if project is None and isinstance(body.get("task"), dict):
            project = body["task"].get("project")
        pid = project_id(project)
        label_config = project.get("label_config") if isinstance(project, dict) else None

        if action == "START_TRAINING":
            self.ensure_project(pid, label_config)
            status = self.start_training(pid, reason="START_TRAINING")
            return {"status": "ok", "action": action, "project": pid, "train": status}, 201

        if action in ("ANNOTATION_CREATED", "ANNOTATION_UPDATED"):
            task, ann = body.get("task"), body.get("annotation")
            if not isinstance(task, dict) or not isinstance(task.get("id"), int):
                raise BadRequest(f"webhook {action}: payload has no task with an integer 'id'")
            if not isinstance(ann, dict) or not isinstance(ann.get("result"), list):
                raise BadRequest(
                    f"webhook {action}: task {task['id']}: payload has no annotation with a "
                    f"'result' list"
                )
            st, _ = self.ensure_project(pid, label_config)
            queued = False
            # (a MODEL_NAME that may be a trained model is checked by the worker: loading it
            # here could break Label Studio's 1 s webhook budget)
            if st.trained or self.settings.model_name is not None:
                queued = self._enqueue(ScoreJob(pid, task["id"], task=task, annotation=ann))
            st = self.store.update(pid, _bump_annotations)
            train = None
            n = self.settings.train_every_n_annotations
            if n and st.annotations_since_train >= n:
                train = self.start_training(
                    pid, reason=f"{st.annotations_since_train} annotations since last training"
                )
            return {"status": "ok", "action": action, "project": pid, "task": task["id"],
                    "scoring": "queued" if queued else ("deduplicated" if st.trained else
                                                       "skipped: no trained model yet"),
                    "train": train}, 200

        if action in ("TASKS_DELETED", "ANNOTATIONS_DELETED"):
            ids = [t.get("id") for t in body.get("tasks") or [] if isinstance(t, dict)]
            if action == "ANNOTATIONS_DELETED":
                ids = [a.get("task") for a in body.get("annotations") or [] if isinstance(a, dict)]
            removed = self._forget_tasks(pid, [i for i in ids if isinstance(i, int)],
                                         rescore=action == "ANNOTATIONS_DELETED")
            return {"status": "ok", "action": action, "project": pid, "tasks": removed}, 200

        return {"status": "ignored", "action": action}, 200

    def _forget_tasks(self, pid: str, task_ids: list[int], *, rescore: bool) -> list[int]:
        """Drop deleted tasks from the span index (and queue a re-score when asked)."""
        st = self.store.get(pid)
        if st is None or not task_ids:
            return task_ids
        index = self.models.get_index((pid, st.model_version), st.model_path)
        if index is not None:
            from . import index as span_index

            span_index.remove_tasks(index, task_ids)
        if rescore and st.trained and self.settings.label_studio_enabled:
            for tid in task_ids:
                self.enqueue_quiet(ScoreJob(pid, tid))
        return task_ids

    # -- queue ---------------------------------------------------------------------------

    def _enqueue(self, job: ScoreJob) -> bool:
        self._ensure_worker()
        return self.queue.put(job)

    def enqueue_quiet(self, job: ScoreJob) -> None:
        try:
            self._enqueue(job)
        except QueueFull as exc:
            logger.warning("project %s task %s: not queued: %s", job.project, job.task_id, exc)
            self.record_error(f"project {job.project} task {job.task_id}", exc)

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._work, name="nerq-scoring", daemon=True
                )
                self._worker.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            jobs = self.queue.take(self.settings.batch_size, timeout=0.5)
            if not jobs:
                continue
            by_project: dict[str, list[ScoreJob]] = {}
            for j in jobs:
                by_project.setdefault(j.project, []).append(j)
            for pid, pj in by_project.items():
                try:
                    self._process(pid, pj)
                except Exception as exc:  # the worker must survive anything
                    logger.error("project %s: scoring batch of %d failed: %s\n%s", pid, len(pj),
                                 exc, traceback.format_exc())
                    self.record_error(f"project {pid} scoring", exc)
                    with self._meta_lock:
                        self.stats["failed"] += len(pj)
                finally:
                    self.queue.done(len(pj))

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until the queue is empty and the worker idle (tests, shutdown)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.queue.idle():
                return True
            time.sleep(0.05)
        return False

    def _process(self, pid: str, jobs: list[ScoreJob]) -> None:
        from . import scoring

        ready = [j for j in jobs if j.fields is not None]
        todo = [j for j in jobs if j.fields is None]
        if todo:
            ready.extend(self._score_jobs(pid, todo, scoring))
        for j in ready:
            self._write(j)

    def _score_jobs(self, pid: str, jobs: list[ScoreJob], scoring: Any) -> list[ScoreJob]:
        from . import index as span_index

        st = self.store.get(pid)
        if st is None or not st.label_config:
            logger.warning("project %s: %d scoring job(s) dropped: unknown project", pid, len(jobs))
            return []
        _, config = self.ensure_project(pid, None)
        model = self.model_for(st, config)
        if model is None:
            logger.info("project %s: %d scoring job(s) skipped: no trained model yet", pid, len(jobs))
            return []
        tasks: list[dict[str, Any]] = []
        for j in jobs:
            task = j.task
            if task is None:
                try:
                    task = self.api.get_task(j.task_id)
                except Exception as exc:
                    logger.error("project %s task %s: cannot fetch task for scoring: %s", pid,
                                 j.task_id, exc)
                    self.record_error(f"project {pid} task {j.task_id}", exc)
                    continue
            task = dict(task)
            if j.annotation is not None:
                task["annotations"] = [j.annotation]
            task.pop("predictions", None)
            tasks.append(task)
        if not tasks:
            return []
        prepared = scoring.prepare_tasks(tasks, config, max_text_chars=self.settings.max_text_chars)
        for pos, err in prepared.errors.items():
            logger.error("project %s: cannot score: %s", pid, err)
            self.record_error(f"project {pid}", err)
        if not prepared.dataset.tasks:
            return []
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        key = (pid, st.model_version)
        index = self.models.get_index(key, st.model_path)
        index = span_index.update_index(index, prepared, preds)
        self.models.set_index(key, index)
        overlays = scoring.score_tasks(
            prepared, preds, model=model, version=st.model_version, index=index,
            similar_k=self.settings.similar_k,
        )
        if st.model_path and index is not None:
            try:
                span_index.save_index(index, Path(st.model_path) / "span_index")
            except OSError as exc:
                logger.error("project %s: cannot persist span index: %s", pid, exc)
        out = []
        for tid, overlay in overlays.items():
            self.remember(pid, tid, overlay)
            out.append(ScoreJob(pid, tid, fields=overlay))
        with self._meta_lock:
            self.stats["scored"] += len(overlays)
        return out

    def remember(self, pid: str, tid: int, overlay: dict[str, Any]) -> None:
        with self._meta_lock:
            self.recent_scores[(pid, tid)] = overlay
            self.recent_scores.move_to_end((pid, tid))
            while len(self.recent_scores) > 1000:
                self.recent_scores.popitem(last=False)

    def _write(self, job: ScoreJob) -> None:
        if not self.settings.label_studio_enabled or job.fields is None:
            return
        try:
            self.api.merge_task_fields(
                job.task_id, data=job.fields.get("data"), meta=job.fields.get("meta")
            )
        except Exception as exc:  # deleted task, LS down, ...: log, keep serving
            logger.error("project %s task %s: writing scores failed: %s", job.project,
                         job.task_id, exc)
            self.record_error(f"project {job.project} task {job.task_id} write", exc)
            with self._meta_lock:
                self.stats["failed"] += 1
            return
        with self._meta_lock:
            self.stats["written"] += 1

    # -- training ------------------------------------------------------------------------

    def versions(self, pid: str | None) -> dict[str, Any]:
        if pid is None:
            return {"versions": sorted({v["version"] for s in self.store.all()
                                        for v in s.versions})}
        st = self.store.get(project_id(pid))
        if st is None:
            return {"versions": [], "project": pid}
        vs = [v["version"] for v in st.versions]
        if st.model_version and st.model_version not in vs:
            vs.insert(0, st.model_version)
        return {"versions": vs, "model_version": st.model_version, "project": st.project}

    def health(self) -> dict[str, Any]:
        return {
            "status": "UP",
            "model_class": "NerQualityBackend",
            "projects": {s.project: {"model_version": s.model_version,
                                     "train": s.train.get("status")} for s in self.store.all()},
        }

    def status(self, pid: str | None = None) -> dict[str, Any]:
        states = self.store.all() if pid is None else [
            s for s in [self.store.get(project_id(pid))] if s is not None]
        with self._meta_lock:
            return {
                "status": "UP",
                "queue": {"pending": len(self.queue), "max": self.queue.maxsize,
                          "deduplicated": self.queue.deduplicated},
                "stats": dict(self.stats),
                "models_loaded": self.models.loaded(),
                "projects": {s.project: s.public() for s in states},
                "recent_errors": list(self.recent_errors[-10:]),
                "label_studio": self.settings.label_studio_url,
            }

    def task_score(self, pid: str, task_id: int) -> dict[str, Any] | None:
        with self._meta_lock:
            return self.recent_scores.get((project_id(pid), task_id))

    def start_training(self, pid: str, *, reason: str,
                       tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Start a background training (see :meth:`Trainer.start`)."""
        return self.trainer.start(pid, reason=reason, tasks=tasks)

    def wait_training(self, pid: str, timeout: float) -> bool:
        """Wait for the project's training thread (tests and CLI)."""
        return self.trainer.wait(pid, timeout)


def _bump_annotations(s: ProjectState) -> None:
    s.annotations_since_train += 1
