"""The backend service: projects, ``/predict``, webhooks and the background scoring worker.

``app.py`` is a thin layer of routes over :class:`Backend`.  Everything slow happens off the
request thread:

* **Job queue** (:mod:`.queue`) — persistent (SQLite under ``MODEL_DIR``), prioritised (live
  annotations first, then re-scores, then bulk score writes), one pending job per
  ``(project, task id)`` (the newest wins).  One worker thread takes up to ``BATCH_SIZE`` due
  jobs, runs ONE batched model pass per project and writes the scores through
  :mod:`analysis.labelstudio` in one batched read + one PATCH per changed task.  A failed write
  is retried with backoff and, after ``QUEUE_MAX_ATTEMPTS``, kept as failed in ``/status``;
  while Label Studio is unreachable the worker pauses (backoff up to a minute) instead of
  hammering it.
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
from collections import OrderedDict, deque
from pathlib import Path
from typing import Any

from ls_backend.settings import Settings

from .errors import BadRequest, Busy, LabelMismatch, NoLabelStudio, TaskError, UnknownProject
from .janitor import DEDUP_MAX_TASKS, Janitor
from .models import ModelCache
from .queue import ScoreJob, ScoreQueue
from .worker import QueueWorker
from .state import ProjectState, StateStore, base_version, project_id
from .training import Trainer

logger = logging.getLogger(__name__)

__all__ = ["Backend"]



class Backend(QueueWorker):
    """State, models, queue and training for every project this process serves."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.store = StateStore(settings.model_dir)
        self.models = ModelCache(settings)
        self.queue = ScoreQueue(Path(settings.model_dir) / "queue.sqlite3", settings.queue_size,
                                write_maxsize=settings.write_queue_size,
                                max_attempts=settings.queue_max_attempts)
        self._ls_down_until = 0.0
        self._ls_backoff = 0.0
        self._worker: threading.Thread | None = None
        self._worker_lock = threading.Lock()
        self._stop = threading.Event()
        self._meta_lock = threading.Lock()
        self.trainer = Trainer(self)
        self.trainer.remove_leftovers()
        self.janitor = Janitor(self)
        self._api: Any = None
        self.stats = {"scored": 0, "written": 0, "unchanged": 0, "failed": 0, "retried": 0,
                      "predicted_tasks": 0}
        self.recent_errors: list[dict[str, Any]] = []
        self.recent_scores: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._webhook_ms: deque[float] = deque(maxlen=2000)
        self._predict_slots = threading.BoundedSemaphore(settings.predict_concurrency)

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

    def record_webhook_ms(self, ms: float) -> None:
        with self._meta_lock:
            self._webhook_ms.append(ms)

    def _webhook_latency(self) -> dict[str, Any]:
        with self._meta_lock:
            v = sorted(self._webhook_ms)
        if not v:
            return {"n": 0}
        q = lambda f: round(v[min(len(v) - 1, int(f * len(v)))], 2)  # noqa: E731
        return {"n": len(v), "p50": q(0.5), "p99": q(0.99), "max": round(v[-1], 2)}

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
        pid = project_id(pid)
        st = self.store.get(pid)
        xml, config = self._parse_config(pid, label_config, st)
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

    @staticmethod
    def _parse_config(pid: str, label_config: str | None, st: ProjectState | None
                      ) -> tuple[str, Any]:
        """The label config of a request (or the stored one), parsed; nothing is stored."""
        from analysis.formats.label_config import parse_label_config

        xml = label_config or (st.label_config if st else None)
        if not xml:
            raise BadRequest(
                f"project {pid}: no label config known; call /setup first or send label_config"
            )
        try:
            return xml, parse_label_config(xml)
        except ValueError as exc:
            raise BadRequest(f"project {pid}: bad label config: {exc}") from None

    @staticmethod
    def _check_labels(st: ProjectState | None, config: Any) -> None:
        """Refuse (409) a config that lacks labels the project's trained model predicts."""
        if st is None or not st.trained:
            return
        missing = [lab for lab in st.model_labels if lab not in config.labels]
        if missing:
            raise LabelMismatch(
                f"project {st.project}: model {st.model_version} predicts labels {missing} "
                f"that the label config {list(config.labels)} does not have; add them to the "
                f"config or retrain (START_TRAINING)"
            )

    def model_for(self, st: ProjectState, config: Any) -> Any | None:
        """The model serving ``st`` or ``None`` when the project has no trained model.

        Raises ``ValueError`` (HTTP 409) when the trained model predicts labels the config
        no longer has.
        """
        if st.trained:
            self._check_labels(st, config)
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

        # everything that can refuse the request runs before any state is stored
        pid = project_id(pid)
        _, config = self._parse_config(pid, label_config, self.store.get(pid))
        self._check_labels(self.store.get(pid), config)
        prepared = scoring.prepare_tasks(
            tasks, config, max_text_chars=self.settings.max_text_chars
        )
        if not prepared.dataset.tasks:
            raise TaskError("; ".join(prepared.errors.values()))
        st, config = self.ensure_project(pid, label_config)
        model = self.model_for(st, config)
        version = st.model_version
        if model is None:
            logger.info(
                "project %s has no trained model yet (version %s): answering %d task(s) without "
                "regions; annotate %d task(s) or send START_TRAINING to train one",
                st.project, version, len(tasks), self.settings.train_every_n_annotations,
            )
            return scoring.empty_results(prepared, version)
        # a bounded number of model passes at once: /health and webhooks stay responsive, and a
        # request that would wait too long is refused now rather than after LS's 100 s
        if not self._predict_slots.acquire(timeout=self.settings.predict_wait_s):
            raise Busy(f"predict: {self.settings.predict_concurrency} model pass(es) running "
                       f"and none finished within PREDICT_WAIT_S={self.settings.predict_wait_s:g} "
                       f"s; retry later or send fewer tasks per request")
        try:
            preds = scoring.run_model(model, prepared, batch_tokens=4096)
        finally:
            self._predict_slots.release()
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
            skip, source = self.provenance(st, prepared)
            overlays = scoring.score_tasks(
                prepared, preds, model=model, version=version, index=index,
                similar_k=self.settings.similar_k, thresholds=st.thresholds,
                dep_source=source, skip=skip,
            ).overlays
            for task_id, overlay in overlays.items():
                self.remember(st.project, task_id, overlay)
            self.enqueue_many([ScoreJob(st.project, tid, fields=overlay)
                               for tid, overlay in overlays.items()])
        return results

    def probe(self, pid: str, text: str, *, top_k: int = 3,
              low_confidence: float = 0.6) -> dict[str, Any]:
        """Answer ``/probe``: :func:`ls_backend.runtime.probe.probe` of ``text`` with the
        project's serving model (the one ``/predict`` uses), within the same model-pass slots."""
        from ls_backend.runtime.probe import probe

        pid = project_id(pid)
        if len(text) > self.settings.max_text_chars:
            raise BadRequest(f"probe: text of {len(text)} characters, more than MAX_TEXT_CHARS="
                             f"{self.settings.max_text_chars}")
        st = self.store.get(pid)
        if st is None:
            raise UnknownProject(f"probe: project {pid} is unknown; call /setup first")
        _, config = self._parse_config(pid, None, st)
        model = self.model_for(st, config)
        if model is None:
            raise UnknownProject(f"probe: project {pid} has no trained model yet (version "
                                 f"{st.model_version}); train one first")
        if not self._predict_slots.acquire(timeout=self.settings.predict_wait_s):
            raise Busy(f"probe: {self.settings.predict_concurrency} model pass(es) running; "
                       "retry later")
        try:
            res = probe(model, text, top_k=top_k, low_confidence=low_confidence)
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        finally:
            self._predict_slots.release()
        return {"project": pid, **res.to_dict()}

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
            if n and st.annotations_since_train >= n and self.trainer.may_start_automatically(st):
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

    def remember(self, pid: str, tid: int, overlay: dict[str, Any]) -> None:
        with self._meta_lock:
            self.recent_scores[(pid, tid)] = overlay
            self.recent_scores.move_to_end((pid, tid))
            while len(self.recent_scores) > 1000:
                self.recent_scores.popitem(last=False)

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
        queue = {**self.queue.stats(),
                 "paused_s": max(0.0, round(self._ls_down_until - time.time(), 1))}
        webhook_ms = self._webhook_latency()
        with self._meta_lock:
            return {
                "status": "UP",
                "queue": queue,
                "stats": dict(self.stats),
                "webhook_ms": webhook_ms,
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
