"""The backend's queue worker: one thread that drains the job queue (see :mod:`.queue`).

Each round takes the most urgent class of due jobs: live annotations and re-scores are scored in
ONE batched model pass per project (a task that cannot be read fails alone, named), then every
ready overlay is written through :meth:`analysis.labelstudio.LabelStudioAPI.merge_many_task_fields`
(one batched read through the task list, concurrent PATCHes of the tasks that change).  A failed
job goes back to the queue with backoff (or is kept as failed); while Label Studio is unreachable
the worker pauses instead of hammering it.  :class:`QueueWorker` is mixed into
:class:`~ls_backend.service.backend.Backend`, whose state (settings, store, models, stats) it
uses.
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.labelstudio import fields as lsf
from ls_backend.settings import Settings

from .errors import QueueFull
from .queue import ScoreJob, ScoreQueue

if TYPE_CHECKING:  # pragma: no cover
    from .models import ModelCache
    from .state import ProjectState, StateStore

logger = logging.getLogger(__name__)

__all__ = ["QueueWorker", "WRITE_BATCH"]

#: score writes per worker round: small, so that a live annotation waits for at most this many
#: Label Studio PATCHes before its own turn
WRITE_BATCH = 16


class QueueWorker:
    """Queueing, the worker thread and the batched write-back (a mixin of ``Backend``)."""

    settings: Settings
    queue: ScoreQueue
    store: StateStore
    models: ModelCache
    stats: dict[str, int]
    recent_scores: Any
    _meta_lock: Any
    _stop: threading.Event
    _worker: threading.Thread | None
    _worker_lock: Any
    _ls_down_until: float
    _ls_backoff: float

    if TYPE_CHECKING:  # provided by Backend
        @property
        def api(self) -> Any: ...
        def record_error(self, where: str, exc: BaseException | str) -> None: ...
        def remember(self, pid: str, tid: int, overlay: dict[str, Any]) -> None: ...
        def ensure_project(self, pid: str, label_config: str | None
                           ) -> tuple[ProjectState, Any]: ...
        def model_for(self, st: ProjectState, config: Any) -> Any | None: ...

    def _enqueue(self, job: ScoreJob) -> bool:
        self._ensure_worker()
        return self.queue.put(job)

    def enqueue_quiet(self, job: ScoreJob) -> None:
        try:
            self._enqueue(job)
        except QueueFull as exc:
            logger.warning("project %s task %s: not queued: %s", job.project, job.task_id, exc)
            self.record_error(f"project {job.project} task {job.task_id}", exc)

    def enqueue_many(self, jobs: list[ScoreJob]) -> None:
        """Queue ``jobs`` in one transaction; a full queue is logged and shown in /status."""
        if not jobs:
            return
        self._ensure_worker()
        try:
            self.queue.put_many(jobs)
        except QueueFull as exc:
            logger.error("project %s: %d score write(s) not queued: %s", jobs[0].project,
                         len(jobs), exc)
            self.record_error(f"project {jobs[0].project}", f"{len(jobs)} score writes not "
                                                            f"queued: {exc}")

    def _ensure_worker(self) -> None:
        with self._worker_lock:
            if self._worker is None or not self._worker.is_alive():
                self._worker = threading.Thread(
                    target=self._work, name="nerq-scoring", daemon=True
                )
                self._worker.start()

    def resume(self) -> int:
        """Start the worker when the queue holds jobs from an earlier run; return how many."""
        n = self.queue.pending()
        if n:
            logger.info("resuming %d queued job(s) from %s", n, self.queue.path)
            self._ensure_worker()
        return n

    def _work(self) -> None:
        while not self._stop.is_set():
            pause = self._ls_down_until - time.time()
            if pause > 0:
                self._stop.wait(min(pause, 1.0))
                continue
            jobs = self.queue.take(self.settings.batch_size, timeout=0.5,
                                   max_write=WRITE_BATCH)
            if not jobs:
                continue
            by_project: dict[str, list[ScoreJob]] = {}
            for j in jobs:
                by_project.setdefault(j.project, []).append(j)
            for pid, pj in by_project.items():
                try:
                    self._process(pid, pj)
                except Exception as exc:  # the worker must survive anything
                    logger.error("project %s: batch of %d job(s) failed: %s\n%s", pid, len(pj),
                                 exc, traceback.format_exc())
                    self.record_error(f"project {pid} scoring", exc)
                    self._failed(pj, f"{type(exc).__name__}: {exc}")

    def _failed(self, jobs: list[ScoreJob], error: str, *, retry: bool = True) -> None:
        given_up = self.queue.fail(jobs, error, retry=retry)
        with self._meta_lock:
            self.stats["failed"] += given_up
            self.stats["retried"] += len(jobs) - given_up

    def drain(self, timeout: float = 30.0) -> bool:
        """Wait until no job is due and the worker is idle (tests, shutdown)."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.queue.idle():
                return True
            time.sleep(0.05)
        return False

    def _process(self, pid: str, jobs: list[ScoreJob]) -> None:
        """Score the jobs that need it, then write every ready overlay in one batch."""
        from . import scoring

        ready = [j for j in jobs if j.fields is not None]
        todo = [j for j in jobs if j.fields is None]
        if todo:
            scored, finished = self._score_jobs(pid, todo, scoring)
            ready.extend(scored)
            if finished:
                self.queue.done(finished)
        if ready:
            self._write_batch(pid, ready)

    def _score_jobs(self, pid: str, jobs: list[ScoreJob], scoring: Any
                    ) -> tuple[list[ScoreJob], list[ScoreJob]]:
        """Score ``jobs`` in one model pass: (jobs with their overlay to write, jobs finished
        without a write).  A task that cannot be scored fails alone, named; the others go on."""
        from . import index as span_index

        st = self.store.get(pid)
        if st is None or not st.label_config:
            logger.warning("project %s: %d scoring job(s) dropped: unknown project", pid, len(jobs))
            self.record_error(f"project {pid}", f"{len(jobs)} scoring job(s) for an unknown "
                                                f"project dropped")
            return [], jobs
        _, config = self.ensure_project(pid, None)
        model = self.model_for(st, config)
        if model is None:
            logger.info("project %s: %d scoring job(s) skipped: no trained model yet", pid, len(jobs))
            return [], jobs
        fetch = [j for j in jobs if j.task is None]
        fetched = self._fetch_tasks(pid, fetch) if fetch else {}
        tasks: list[dict[str, Any]] = []
        owners: list[ScoreJob] = []
        for j in jobs:
            task = j.task if j.task is not None else fetched.get(j.task_id)
            if task is None:
                continue  # _fetch_tasks recorded the failure
            task = dict(task)
            if j.annotation is not None:
                task["annotations"] = [j.annotation]
            task.pop("predictions", None)
            tasks.append(task)
            owners.append(j)
        if not tasks:
            return [], []
        prepared = scoring.prepare_tasks(tasks, config, max_text_chars=self.settings.max_text_chars)
        bad = []
        for pos, err in prepared.errors.items():
            logger.error("project %s: cannot score: %s", pid, err)
            self.record_error(f"project {pid}", err)
            bad.append(owners[pos])
        if bad:
            self._failed(bad, "; ".join(prepared.errors.values())[:500], retry=False)
        if not prepared.dataset.tasks:
            return [], []
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        key = (pid, st.model_version)
        index = self.models.get_index(key, st.model_path)
        index = span_index.update_index(index, prepared, preds)
        self.models.set_index(key, index)
        skip, source = self.provenance(st, prepared)
        overlays = scoring.score_tasks(
            prepared, preds, model=model, version=st.model_version, index=index,
            similar_k=self.settings.similar_k, thresholds=st.thresholds,
            dep_source=source, skip=skip,
        ).overlays
        if st.model_path and index is not None:
            try:
                span_index.save_index(index, Path(st.model_path) / "span_index")
            except OSError as exc:
                logger.error("project %s: cannot persist span index: %s", pid, exc)
        out, finished = [], []
        for pos in prepared.positions:
            j = owners[pos]
            overlay = overlays.get(j.task_id) or j.fallback
            if overlay is None:
                finished.append(j)
                continue
            self.remember(pid, j.task_id, overlay)
            j.fields = overlay
            out.append(j)
        with self._meta_lock:
            self.stats["scored"] += len(overlays)
        return out, finished

    def provenance(self, st: Any, prepared: Any) -> tuple[Any, Any]:
        """:func:`scoring.provenance` for ``st``'s serving model; the score last written on a
        task (``recent_scores``) tells whether its cross-fitted DEP still stands."""
        from . import scoring

        def last_source(tid: int) -> str | None:
            with self._meta_lock:
                o = self.recent_scores.get((st.project, tid))
            meta = ((o or {}).get("meta") or {}).get(lsf.META_KEY) or {}
            return meta.get("dep_source") if o else None

        return scoring.provenance(self.models.fingerprints(st.model_path), prepared,
                                  crossfit=self.settings.train_folds >= 2,
                                  last_source=last_source)

    def _fetch_tasks(self, pid: str, jobs: list[ScoreJob]) -> dict[int, dict[str, Any]]:
        """Read the tasks of ``jobs`` through the task list (one request per page)."""
        try:
            got = self.api.tasks_by_id(int(pid) if pid.isdigit() else pid,
                                       [j.task_id for j in jobs])
        except Exception as exc:
            self._ls_failure(f"project {pid}: cannot read {len(jobs)} task(s)", exc)
            self._failed(jobs, f"{type(exc).__name__}: {exc}")
            return {}
        missing = [j for j in jobs if j.task_id not in got]
        if missing:
            self._failed(missing, "task not found in Label Studio (deleted?)", retry=False)
        return got

    def _write_batch(self, pid: str, jobs: list[ScoreJob]) -> None:
        """Write the overlays of ``jobs`` (one batched read, one PATCH per changed task)."""
        if not self.settings.label_studio_enabled:
            self.queue.done(jobs)
            return
        updates = {j.task_id: ((j.fields or {}).get("data"), (j.fields or {}).get("meta"))
                   for j in jobs}
        try:
            results = self.api.merge_many_task_fields(int(pid) if pid.isdigit() else pid,
                                                      updates)
        except Exception as exc:  # Label Studio down or the whole call refused
            self._ls_failure(f"project {pid}: writing {len(jobs)} score(s)", exc)
            self._failed(jobs, f"{type(exc).__name__}: {exc}")
            return
        self._ls_ok()
        ok = [j for j in jobs if j.task_id in results.written or j.task_id in results.unchanged]
        if ok:
            self.queue.done(ok)
        for j in jobs:
            err = results.failed.get(j.task_id)
            if err is None:
                continue
            logger.error("project %s task %s: writing scores failed: %s", pid, j.task_id, err)
            self.record_error(f"project {pid} task {j.task_id} write", str(err))
            # a deleted task will not come back; other refusals are retried
            self._failed([j], str(err), retry=err.status != 404)
        with self._meta_lock:
            self.stats["written"] += len(results.written)
            self.stats["unchanged"] += len(results.unchanged)

    def _ls_failure(self, what: str, exc: BaseException) -> None:
        """Back off the whole write path while Label Studio is unreachable."""
        # the adapter raises LabelStudioUnavailable (a ConnectionError) for refused connections,
        # timeouts and 502/503/504; an HTTP refusal of one call is not "down"
        down = isinstance(exc, (OSError, TimeoutError))
        logger.error("%s: %s", what, exc)
        self.record_error(what, exc)
        if down:
            self._ls_backoff = min(60.0, max(1.0, self._ls_backoff * 2))
            self._ls_down_until = time.time() + self._ls_backoff
            logger.warning("Label Studio unreachable: pausing the job queue for %.0f s",
                           self._ls_backoff)

    def _ls_ok(self) -> None:
        self._ls_backoff, self._ls_down_until = 0.0, 0.0

