"""The backend service: model cache, the background scoring queue and background training.

``app.py`` is a thin layer of routes over :class:`Backend`.  Everything slow happens here, off
the request thread:

* **Scoring queue** — a bounded, de-duplicating queue keyed by ``(project, task id)``: a task
  queued twice before the worker reaches it is scored once, with the latest payload.  One worker
  thread drains up to ``BATCH_SIZE`` jobs at a time, runs ONE batched model pass per project and
  writes the scores through :mod:`analysis.labelstudio` (read-merge-write; re-scoring replaces).
* **Training** — at most one training per project (a second request while one runs is
  remembered and runs afterwards) and one at a time per process (they share the CPU/GPU).
  Requests keep being served by the previous version; the new version is switched in
  atomically (state file replaced, then the cache key changes), then annotated tasks are
  re-scored.
* **Model cache** — one loaded model (and span index) per ``(project, version)``, loaded lazily
  behind a per-key lock; old versions are evicted after a switch.

Nothing here loads a model or opens a connection at import time; the worker thread starts
with the first job.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ls_backend.settings import Settings
from ls_backend.service.state import ProjectState, StateStore, base_version, project_id

logger = logging.getLogger(__name__)

#: /predict requests with at most this many tasks (task opens) get a duplicate check
_DEDUP_MAX_TASKS = 5
#: seconds after answering before the duplicate check (Label Studio stores answers first)
_DEDUP_DELAY_S = 3.0

__all__ = ["Backend", "ScoreJob", "ScoreQueue", "QueueFull", "ModelCache", "NoLabelStudio"]


class QueueFull(RuntimeError):
    """The scoring queue is at ``QUEUE_SIZE``."""


class NoLabelStudio(RuntimeError):
    """An operation needs LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY, which are not set."""


@dataclass
class ScoreJob:
    """Score one task's annotation (or write a precomputed score) in the background.

    ``task`` is the task dict as Label Studio sent it (``None``: fetch it), ``annotation`` the
    annotation to score (``None``: the task's latest).  ``fields`` holds a ready overlay
    ``{"data": {...}, "meta": {...}}`` to write as is (scores computed in a /predict pass or
    after training).
    """

    project: str
    task_id: int
    task: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None
    enqueued_at: float = field(default_factory=time.time)

    @property
    def key(self) -> tuple[str, int]:
        return (self.project, self.task_id)


class ScoreQueue:
    """Bounded FIFO of :class:`ScoreJob` with per-key de-duplication (latest payload wins)."""

    def __init__(self, maxsize: int) -> None:
        self.maxsize = maxsize
        self._items: OrderedDict[tuple[str, int], ScoreJob] = OrderedDict()
        self._cond = threading.Condition()
        self.deduplicated = 0
        self.in_flight = 0

    def put(self, job: ScoreJob) -> bool:
        """Queue ``job``; return False when it replaced a pending job for the same task.

        Raises :class:`QueueFull` when the queue holds ``maxsize`` other tasks.
        """
        with self._cond:
            if job.key in self._items:
                old = self._items[job.key]
                if job.fields is None and old.fields is not None and job.task is None:
                    return False  # a precomputed score is at least as fresh as a bare re-fetch
                self._items[job.key] = job
                self.deduplicated += 1
                return False
            if len(self._items) >= self.maxsize:
                raise QueueFull(f"scoring queue is full ({self.maxsize} pending tasks)")
            self._items[job.key] = job
            self._cond.notify()
            return True

    def take(self, max_n: int, timeout: float) -> list[ScoreJob]:
        """Up to ``max_n`` jobs in FIFO order; waits up to ``timeout`` s for the first one."""
        with self._cond:
            if not self._items:
                self._cond.wait(timeout)
            out: list[ScoreJob] = []
            while self._items and len(out) < max_n:
                out.append(self._items.popitem(last=False)[1])
            self.in_flight += len(out)
            return out

    def done(self, n: int) -> None:
        """Mark ``n`` jobs returned by :meth:`take` as finished."""
        with self._cond:
            self.in_flight -= n

    def idle(self) -> bool:
        with self._cond:
            return not self._items and self.in_flight == 0

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


class ModelCache:
    """One loaded model per ``(project, version)`` key, loaded lazily behind a per-key lock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self._indexes: dict[tuple[str, str], Any] = {}
        self._base_trained: dict[tuple[str, ...], bool] = {}

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[str, str], path: str | None, labels: Sequence[str]) -> Any:
        """The model for ``key``, loading ``path`` (None: ``MODEL_NAME``) on first use."""
        with self._lock:
            if key in self._models:
                return self._models[key]
        with self._key_lock(key):
            with self._lock:
                if key in self._models:
                    return self._models[key]
            from ls_backend.runtime import NerModel  # heavy import (torch), only when a model is needed

            t0 = time.perf_counter()
            model = NerModel.load(
                path if path is not None else self.settings.model_name,
                labels=list(labels),
                device=self.settings.device,
            )
            logger.info(
                "loaded model %s for project %s from %s in %.1f s (device %s)",
                key[1], key[0], path or self.settings.model_name or "packaged backbone",
                time.perf_counter() - t0, getattr(model, "device", "?"),
            )
            with self._lock:
                self._models[key] = model
            return model

    def base_is_trained(self, labels: tuple[str, ...]) -> bool:
        """Whether ``MODEL_NAME`` is already a token-classification model for ``labels``.

        The packaged backbone (MODEL_NAME unset) never is: it is not loaded just to find out.
        """
        if self.settings.model_name is None:
            return False
        with self._lock:
            if labels in self._base_trained:
                return self._base_trained[labels]
        try:
            model = self.get(("__base__", base_version(self.settings.model_name, labels)),
                             None, labels)
            ok = bool(getattr(model, "trained", False))
        except ValueError as exc:
            logger.warning("MODEL_NAME %s does not fit labels %s: %s",
                           self.settings.model_name, list(labels), exc)
            ok = False
        with self._lock:
            self._base_trained[labels] = ok
        return ok

    def get_index(self, key: tuple[str, str], path: str | None) -> Any:
        """The span index of ``key`` (loaded from ``path/span_index`` or empty), cached."""
        with self._lock:
            if key in self._indexes:
                return self._indexes[key]
        from analysis.similarity import SpanIndex

        idx = None
        if path is not None and (Path(path) / "span_index").is_dir():
            try:
                idx = SpanIndex.load(Path(path) / "span_index")
            except (OSError, ValueError) as exc:
                logger.error("project %s: cannot load span index from %s: %s", key[0], path, exc)
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = idx
            return self._indexes[key]

    def set_index(self, key: tuple[str, str], index: Any) -> None:
        with self._lock:
            self._indexes[key] = index

    def put(self, key: tuple[str, str], model: Any) -> None:
        with self._lock:
            self._models[key] = model

    def evict_project(self, project: str, *, keep: str) -> None:
        """Drop every cached model/index of ``project`` except version ``keep``."""
        with self._lock:
            for d in (self._models, self._indexes):
                for k in [k for k in d if k[0] == project and k[1] != keep]:
                    del d[k]

    def loaded(self) -> list[str]:
        with self._lock:
            return [f"{p}:{v}" for p, v in self._models]


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
        self._train_lock = threading.Lock()  # one training at a time per process
        self._training: dict[str, threading.Thread] = {}
        self._train_again: set[str] = set()
        self._meta_lock = threading.Lock()
        self._api: Any = None
        self.stats = {"scored": 0, "written": 0, "failed": 0, "predicted_tasks": 0}
        self.recent_errors: list[dict[str, Any]] = []
        self._version_sync: set[str] = set()
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

    def _record_error(self, where: str, exc: BaseException | str) -> None:
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
            raise ValueError(
                f"project {pid}: no label config known; call /setup first or send label_config"
            )
        try:
            config = parse_label_config(xml)
        except ValueError as exc:
            raise ValueError(f"project {pid}: bad label config: {exc}") from None
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
        from ls_backend.service import scoring

        st, config = self.ensure_project(pid, label_config)
        prepared = scoring.prepare_tasks(
            tasks, config, max_text_chars=self.settings.max_text_chars
        )
        if not prepared.dataset.tasks:
            raise scoring.TaskError("; ".join(prepared.errors.values()))
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
        self._sync_project_version(st)
        if len(prepared.dataset.tasks) <= _DEDUP_MAX_TASKS:
            self._dedup_later(st, [t.id for t in prepared.dataset.tasks if t.id is not None])
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
                self._remember(st.project, task_id, overlay)
                self._enqueue_quiet(ScoreJob(st.project, task_id, fields=overlay))
        return results

    def _dedup_later(self, st: ProjectState, task_ids: list[int]) -> None:
        """Remove duplicate predictions of the served version that Label Studio itself made.

        Label Studio 1.23 calls /predict on every GET of a task that has no prediction of the
        current version; two quick opens of the same task race, and it stores both answers.
        A few seconds later (after it stored them) this keeps the oldest prediction of *our*
        version on each task and deletes the newer copies.  Only model predictions of this
        backend's version are ever deleted — never annotations, never other versions.
        """
        if not (st.trained and task_ids and self.settings.label_studio_enabled):
            return
        version = st.model_version

        def run() -> None:
            try:
                api = self.api
                for tid in task_ids:
                    mine = sorted(
                        (p for p in api.list_predictions(int(tid))
                         if p.get("model_version") == version),
                        key=lambda p: int(p["id"]),
                    )
                    for dup in mine[1:]:
                        api.delete_prediction(int(dup["id"]))
                        logger.info("task %s: removed duplicate prediction %s of version %s "
                                    "(Label Studio raced two /predict calls)", tid, dup["id"],
                                    version)
            except Exception as exc:  # never fail a request for the janitor
                logger.warning("duplicate-prediction check failed for tasks %s: %s", task_ids, exc)

        timer = threading.Timer(_DEDUP_DELAY_S, run)
        timer.daemon = True
        timer.start()

    def _sync_project_version(self, st: ProjectState) -> None:
        """Point the Label Studio project's ``model_version`` at the served version, once.

        ``predictions_score`` (the Data Manager column an uncertainty queue sorts on) averages
        only predictions of ``project.model_version``.  Label Studio accepts the new value only
        once its ML backend knows the version (it calls /setup right before /predict), so this
        runs in the background on the first /predict of a version, not at the switch.
        """
        if not (st.trained and self.settings.label_studio_enabled and st.project.isdigit()):
            return
        if st.train.get("ls_model_version") == st.model_version:
            return
        with self._meta_lock:
            key = f"{st.project}:{st.model_version}"
            if key in self._version_sync:
                return
            self._version_sync.add(key)

        def run() -> None:
            time.sleep(2.0)  # let Label Studio store the predictions of this request first
            try:
                self.api.set_model_version(int(st.project), st.model_version)
            except Exception as exc:
                logger.warning("project %s: could not set the project's model_version to %s: %s",
                               st.project, st.model_version, exc)
                with self._meta_lock:
                    self._version_sync.discard(key)
                return
            self.store.update(st.project, lambda s: s.train.update(
                ls_model_version=st.model_version))
            logger.info("project %s: Label Studio project model_version set to %s", st.project,
                        st.model_version)

        threading.Thread(target=run, name="nerq-version-sync", daemon=True).start()

    # -- webhooks ------------------------------------------------------------------------

    def webhook(self, body: dict[str, Any]) -> tuple[dict[str, Any], int]:
        """Handle a Label Studio webhook at once; the work is queued. Returns (reply, status)."""
        action = body.get("action")
        if not isinstance(action, str) or not action:
            raise ValueError("webhook: missing 'action'")
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
                raise ValueError(f"webhook {action}: payload has no task with an integer 'id'")
            if not isinstance(ann, dict) or not isinstance(ann.get("result"), list):
                raise ValueError(
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
            from ls_backend.service import scoring

            scoring.remove_tasks(index, task_ids)
        if rescore and st.trained and self.settings.label_studio_enabled:
            for tid in task_ids:
                self._enqueue_quiet(ScoreJob(pid, tid))
        return task_ids

    # -- queue ---------------------------------------------------------------------------

    def _enqueue(self, job: ScoreJob) -> bool:
        self._ensure_worker()
        return self.queue.put(job)

    def _enqueue_quiet(self, job: ScoreJob) -> None:
        try:
            self._enqueue(job)
        except QueueFull as exc:
            logger.warning("project %s task %s: not queued: %s", job.project, job.task_id, exc)
            self._record_error(f"project {job.project} task {job.task_id}", exc)

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
                    self._record_error(f"project {pid} scoring", exc)
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
        from ls_backend.service import scoring

        ready = [j for j in jobs if j.fields is not None]
        todo = [j for j in jobs if j.fields is None]
        if todo:
            ready.extend(self._score_jobs(pid, todo, scoring))
        for j in ready:
            self._write(j)

    def _score_jobs(self, pid: str, jobs: list[ScoreJob], scoring: Any) -> list[ScoreJob]:
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
                    self._record_error(f"project {pid} task {j.task_id}", exc)
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
            self._record_error(f"project {pid}", err)
        if not prepared.dataset.tasks:
            return []
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        key = (pid, st.model_version)
        index = self.models.get_index(key, st.model_path)
        index = scoring.update_index(index, prepared, preds)
        self.models.set_index(key, index)
        overlays = scoring.score_tasks(
            prepared, preds, model=model, version=st.model_version, index=index,
            similar_k=self.settings.similar_k,
        )
        if st.model_path and index is not None:
            try:
                scoring.save_index(index, Path(st.model_path) / "span_index")
            except OSError as exc:
                logger.error("project %s: cannot persist span index: %s", pid, exc)
        out = []
        for tid, overlay in overlays.items():
            self._remember(pid, tid, overlay)
            out.append(ScoreJob(pid, tid, fields=overlay))
        with self._meta_lock:
            self.stats["scored"] += len(overlays)
        return out

    def _remember(self, pid: str, tid: int, overlay: dict[str, Any]) -> None:
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
            self._record_error(f"project {job.project} task {job.task_id} write", exc)
            with self._meta_lock:
                self.stats["failed"] += 1
            return
        with self._meta_lock:
            self.stats["written"] += 1

    # -- training ------------------------------------------------------------------------

    def start_training(self, pid: str, *, reason: str,
                       tasks: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Start a background training of ``pid`` unless one runs (then run once more after).

        ``tasks``: annotated tasks to train on (legacy ``/train`` payload); ``None`` pulls them
        from Label Studio through the adapter.
        """
        pid = project_id(pid)
        with self._meta_lock:
            running = self._training.get(pid)
            if running is not None and running.is_alive():
                self._train_again.add(pid)
                logger.info("project %s: training already running; another run queued (%s)",
                            pid, reason)
                st = self.store.get(pid)
                return {**(st.train if st else {}), "rerun_queued": True}
            st = self.store.update(pid, lambda s: s.train.update(
                status="queued", reason=reason, queued_at=time.time(), error=None))
            t = threading.Thread(target=self._train_thread, args=(pid, reason, tasks),
                                 name=f"nerq-train-{pid}", daemon=True)
            self._training[pid] = t
            t.start()
        logger.info("project %s: training queued (%s)", pid, reason)
        return dict(st.train)

    def _train_thread(self, pid: str, reason: str, tasks: list[dict[str, Any]] | None) -> None:
        while True:
            with self._train_lock:
                try:
                    self._train(pid, tasks)
                except Exception as exc:
                    logger.error("project %s: training failed: %s\n%s", pid, exc,
                                 traceback.format_exc())
                    self._record_error(f"project {pid} training", exc)
                    err = f"{type(exc).__name__}: {exc}"

                    def failed(s: ProjectState, err: str = err) -> None:
                        s.train.update(status="failed", error=err, finished_at=time.time())

                    self.store.update(pid, failed)
            with self._meta_lock:
                if pid not in self._train_again:
                    self._training.pop(pid, None)
                    return
                self._train_again.discard(pid)
            tasks = None  # the rerun pulls fresh tasks
            self.store.update(pid, lambda s: s.train.update(status="queued", reason="rerun"))

    def _train(self, pid: str, tasks: list[dict[str, Any]] | None) -> None:
        from ls_backend.service import scoring
        from ls_backend.runtime import train as runtime_train

        t0 = time.time()
        self.store.update(pid, lambda s: s.train.update(status="running", started_at=t0,
                                                         finished_at=None, error=None))
        st, config = self.ensure_project(pid, None)
        if tasks is None:
            tasks = []
            for page in self.api.iter_tasks(int(pid) if pid.isdigit() else pid):
                tasks.extend(t for t in page if t.get("annotations"))
        annotated = [t for t in tasks if isinstance(t, dict) and t.get("annotations")]
        prepared = scoring.prepare_tasks(annotated, config,
                                         max_text_chars=self.settings.max_text_chars)
        for err in list(prepared.errors.values())[:20]:
            logger.warning("project %s: training skips %s", pid, err)
        ds = prepared.dataset
        n_gold = sum(1 for t in ds.tasks if t.gold is not None)
        if n_gold < self.settings.train_min_annotated:
            raise ValueError(
                f"project {pid}: {n_gold} annotated task(s); TRAIN_MIN_ANNOTATED is "
                f"{self.settings.train_min_annotated}"
            )
        out_dir = self.store.project_dir(pid) / "models" / time.strftime(
            "%Y%m%dT%H%M%S", time.gmtime(t0))
        out_dir = _fresh_dir(out_dir)
        logger.info("project %s: training on %d annotated task(s) -> %s", pid, n_gold, out_dir)
        result = runtime_train(
            ds, out_dir, model=self.settings.model_name, epochs=self.settings.train_epochs,
            batch_size=self.settings.train_batch_size, lr=self.settings.train_lr,
            device=self.settings.device,
            max_steps=self.settings.train_max_steps, progress=False,
        )
        version, model_dir = result.version, str(result.model_dir)
        labels = tuple(config.labels)
        # Load the new version, build its span index and scores BEFORE switching, so
        # requests see either the old version or the complete new one.
        from ls_backend.runtime import NerModel

        model = NerModel.load(model_dir, labels=list(labels), device=self.settings.device)
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        index = scoring.update_index(None, prepared, preds)
        if index is not None:
            scoring.save_index(index, Path(model_dir) / "span_index")
        overlays = scoring.score_tasks(prepared, preds, model=model, version=version,
                                       index=index, similar_k=self.settings.similar_k)
        self.models.put((pid, version), model)
        self.models.set_index((pid, version), index)
        entry = {"version": version, "path": model_dir, "trained_at": time.time(),
                 "n_tasks": n_gold, "seconds": round(time.time() - t0, 1),
                 "metrics": getattr(result, "metrics", None) or {},
                 "dynamics": [str(p) for p in getattr(result, "dynamics", [])]}

        def switch(s: ProjectState) -> None:
            s.model_version, s.model_path, s.model_labels = version, model_dir, labels
            s.versions.append(entry)
            s.annotations_since_train = 0
            s.train.update(status="done", version=version, finished_at=time.time(),
                           n_tasks=n_gold, error=None)

        self.store.update(pid, switch)
        self.models.evict_project(pid, keep=version)
        logger.info("project %s: now serving %s (trained on %d tasks in %.1f s)", pid, version,
                    n_gold, time.time() - t0)
        for tid, overlay in overlays.items():
            self._remember(pid, tid, overlay)
            self._enqueue_quiet(ScoreJob(pid, tid, fields=overlay))

    # -- status --------------------------------------------------------------------------

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

    def wait_training(self, pid: str, timeout: float) -> bool:
        """Wait for the project's training thread (tests and CLI)."""
        with self._meta_lock:
            t = self._training.get(project_id(pid))
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()


class LabelMismatch(ValueError):
    """The trained model and the label config disagree on labels (HTTP 409)."""


def _bump_annotations(s: ProjectState) -> None:
    s.annotations_since_train += 1


def _fresh_dir(path: Path) -> Path:
    if not path.exists():
        return path
    i = 1
    while path.with_name(f"{path.name}-{i}").exists():
        i += 1
    return path.with_name(f"{path.name}-{i}")
