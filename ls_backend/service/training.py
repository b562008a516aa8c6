"""Background training of a project's model.

At most one training per project (a second request while one runs is remembered and runs
afterwards) and one at a time per process (they share the CPU/GPU).  Requests keep being served
by the previous version; the new version is loaded, indexed and scored *before* it is switched
in atomically (state file replaced, then the cache key changes); its scores are then written.
"""

from __future__ import annotations

import logging
import shutil
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any

from analysis.labelstudio import fields as lsf

from .queue import ScoreJob
from .state import ProjectState, project_id

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Backend

logger = logging.getLogger(__name__)

__all__ = ["Trainer"]


#: automatic trainings after a failure wait 30 s, 60 s, 120 s, ... (at most an hour)
RETRY_BASE_S, RETRY_MAX_S = 30.0, 3600.0


def _failed(s: ProjectState, err: str) -> None:
    """A failed training: recorded, counters reset, automatic retries backed off."""
    now = time.time()
    n = int(s.train.get("failures") or 0) + 1
    s.train.update(status="failed", error=err, finished_at=now, failures=n,
                   retry_after=now + min(RETRY_MAX_S, RETRY_BASE_S * 2 ** (n - 1)))
    s.annotations_since_train = 0


def _fresh_dir(path: Path) -> Path:
    if not path.exists():
        return path
    i = 1
    while path.with_name(f"{path.name}-{i}").exists():
        i += 1
    return path.with_name(f"{path.name}-{i}")


class Trainer:
    """Trainings of every project of one backend process."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()  # one training at a time per process
        self._threads: dict[str, threading.Thread] = {}
        self._again: set[str] = set()
        self._meta_lock = threading.Lock()

    def start(self, pid: str, *, reason: str, tasks: list[dict[str, Any]] | None = None,
              crossfit_only: bool = False) -> dict[str, Any]:
        """Start a background training of ``pid`` unless one runs (then run once more after).

        ``tasks``: annotated tasks to train on (legacy ``/train`` payload); ``None`` pulls them
        from Label Studio through the adapter.  ``crossfit_only``: no new version, only the
        cross-fit of the serving one (one that was cut short by a restart).
        """
        pid = project_id(pid)
        store = self.backend.store
        with self._meta_lock:
            running = self._threads.get(pid)
            if running is not None and running.is_alive():
                self._again.add(pid)
                logger.info("project %s: training already running; another run queued (%s)",
                            pid, reason)
                st = store.get(pid)
                return {**(st.train if st else {}), "rerun_queued": True}
            st = store.update(pid, lambda s: s.train.update(
                status="crossfit" if crossfit_only else "queued", reason=reason,
                queued_at=time.time(), error=None))
            t = threading.Thread(target=self._thread, args=(pid, tasks, crossfit_only),
                                 name=f"nerq-train-{pid}", daemon=True)
            self._threads[pid] = t
            t.start()
        logger.info("project %s: training queued (%s)", pid, reason)
        return dict(st.train)

    def _thread(self, pid: str, tasks: list[dict[str, Any]] | None,
                crossfit_only: bool = False) -> None:
        while True:
            with self._lock:
                try:
                    if crossfit_only:
                        self._crossfit_serving(pid)
                    else:
                        self._train(pid, tasks)
                except Exception as exc:  # a failed training is recorded, the server goes on
                    logger.error("project %s: training failed: %s\n%s", pid, exc,
                                 traceback.format_exc())
                    self.backend.record_error(f"project {pid} training", exc)
                    err = f"{type(exc).__name__}: {exc}"
                    def failed(s: ProjectState, err: str = err) -> None:
                        _failed(s, err)

                    st = self.backend.store.update(pid, failed)
                    logger.warning("project %s: automatic trainings paused until %s (failure "
                                   "%d in a row); START_TRAINING runs one at once", pid,
                                   time.strftime("%H:%M:%S", time.localtime(
                                       st.train["retry_after"])), st.train["failures"])
            with self._meta_lock:
                if pid not in self._again:
                    self._threads.pop(pid, None)
                    return
                self._again.discard(pid)
            tasks, crossfit_only = None, False  # the rerun pulls fresh tasks and trains
            self.backend.store.update(pid, lambda s: s.train.update(status="queued",
                                                                    reason="rerun"))

    def _annotated(self, pid: str, tasks: list[dict[str, Any]] | None) -> list[Any]:
        if tasks is None:
            tasks = []
            for page in self.backend.api.iter_tasks(int(pid) if pid.isdigit() else pid):
                tasks.extend(t for t in page if t.get("annotations"))
        return [t for t in tasks if isinstance(t, dict) and t.get("annotations")]

    def _train(self, pid: str, tasks: list[dict[str, Any]] | None) -> None:
        from ls_backend.runtime import NerModel
        from ls_backend.runtime import train as runtime_train

        from . import index as span_index
        from . import scoring

        b, settings = self.backend, self.backend.settings
        t0 = time.time()
        b.store.update(pid, lambda s: s.train.update(status="running", started_at=t0,
                                                      finished_at=None, error=None))
        st, config = b.ensure_project(pid, None)
        prepared = scoring.prepare_tasks(self._annotated(pid, tasks), config,
                                         max_text_chars=settings.max_text_chars)
        for err in list(prepared.errors.values())[:20]:
            logger.warning("project %s: training skips %s", pid, err)
        ds = prepared.dataset
        n_gold = int(ds.corpus.annotated.sum())
        if n_gold < settings.train_min_annotated:
            raise ValueError(f"project {pid}: {n_gold} annotated task(s); TRAIN_MIN_ANNOTATED is "
                             f"{settings.train_min_annotated}")
        out_dir = _fresh_dir(b.store.project_dir(pid) / "models"
                             / time.strftime("%Y%m%dT%H%M%S", time.gmtime(t0)))
        logger.info("project %s: training on %d annotated task(s) -> %s", pid, n_gold, out_dir)
        result = runtime_train(
            ds, out_dir, model=settings.model_name, epochs=settings.train_epochs,
            batch_size=settings.train_batch_size, lr=settings.train_lr, device=settings.device,
            max_steps=settings.train_max_steps, progress=False)
        version, model_dir = result.version, str(result.model_dir)
        labels = tuple(config.labels)
        # load the new version, build its span index and scores BEFORE switching, so requests
        # see either the old version or the complete new one
        model = NerModel.load(model_dir, labels=list(labels), device=settings.device)
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        idx = span_index.update_index(None, prepared, preds)
        if idx is not None:
            span_index.save_index(idx, Path(model_dir) / "span_index")
        crossfit = self._crossfit_folds(n_gold)
        # one DEP over the whole project: its thresholds are the project's (stored for live
        # scoring) and give every task its category.  With cross-fitting these in-sample scores
        # are not written on annotated tasks (the fold models' DEP follows); their thresholds
        # serve live scoring only until the cross-fit's replace them, and only when the project
        # has none yet.
        scores = scoring.score_tasks(prepared, preds, model=model, version=version, index=idx,
                                     similar_k=settings.similar_k, thresholds="fit",
                                     dep_source=lsf.DEP_IN_SAMPLE)
        overlays = scores.overlays
        if crossfit:
            overlays = {tid: o for tid, o in overlays.items()
                        if lsf.META_KEY not in (o.get("meta") or {})}
        thresholds = None if scores.thresholds is None else scores.thresholds.to_dict()
        b.models.put((pid, version), model)
        b.models.set_index((pid, version), idx)
        entry = {"version": version, "path": model_dir, "trained_at": time.time(),
                 "n_tasks": n_gold, "seconds": round(time.time() - t0, 1),
                 "metrics": getattr(result, "metrics", None) or {},
                 "dynamics": [str(p) for p in getattr(result, "dynamics", [])]}

        def switch(s: ProjectState) -> None:
            s.model_version, s.model_path, s.model_labels = version, model_dir, labels
            s.versions.append(entry)
            s.annotations_since_train = 0
            if not crossfit or s.thresholds is None:
                s.thresholds = thresholds
            s.train.update(status="crossfit" if crossfit else "done", version=version,
                           finished_at=None if crossfit else time.time(), n_tasks=n_gold,
                           error=None, failures=0, retry_after=None,
                           crossfit={"status": "queued", "folds": crossfit} if crossfit else None)

        # the new version's scores are queued (one transaction) BEFORE the switch, so a process
        # killed after the switch loses no re-score; killed in between, the scores of a version
        # that never served are written and the next training's re-score replaces them
        for tid, overlay in overlays.items():
            b.remember(pid, tid, overlay)
        b.enqueue_many([ScoreJob(pid, tid, fields=overlay) for tid, overlay in overlays.items()])
        st = b.store.update(pid, switch)
        self.prune_versions(st)
        b.models.evict_project(pid, keep=version)
        logger.info("project %s: now serving %s (trained on %d tasks in %.1f s)", pid, version,
                    n_gold, time.time() - t0)
        if crossfit:
            self._crossfit_guarded(pid, prepared, preds, model, version, idx, crossfit)

    def resume_crossfits(self) -> list[str]:
        """Run again the cross-fits that a restart cut short (serving version unchanged)."""
        started = []
        for st in self.backend.store.all():
            cf = st.train.get("crossfit") or {}
            if (cf.get("status") in ("queued", "running", "interrupted") and st.model_path
                    and st.train.get("version") == st.model_version):
                self.start(st.project, reason="cross-fit cut short by a restart",
                           crossfit_only=True)
                started.append(st.project)
        return started

    def _crossfit_serving(self, pid: str) -> None:
        """The cross-fit of the serving version, on the project's current annotated tasks."""
        from . import index as span_index
        from . import scoring

        b = self.backend
        st, config = b.ensure_project(pid, None)
        if not st.trained or st.model_path is None:
            return
        prepared = scoring.prepare_tasks(self._annotated(pid, None), config,
                                         max_text_chars=b.settings.max_text_chars)
        folds = self._crossfit_folds(int(prepared.dataset.corpus.annotated.sum()))
        if not folds:
            b.store.update(pid, lambda s: s.train.update(status="done", crossfit=None))
            return
        key = (pid, st.model_version)
        model = b.models.get(key, st.model_path, st.model_labels)
        preds = scoring.run_model(model, prepared, batch_tokens=4096)
        index = span_index.update_index(b.models.get_index(key, st.model_path), prepared, preds)
        b.models.set_index(key, index)
        self._crossfit_guarded(pid, prepared, preds, model, st.model_version, index, folds)

    def _crossfit_guarded(self, pid: str, prepared: Any, preds: list[Any], model: Any,
                          version: str, index: Any, folds: int) -> None:
        """:meth:`_crossfit`; a failure is recorded (``/status``: ``train.crossfit``) without
        failing the training: the new version serves, only its out-of-sample DEP is missing."""
        b = self.backend
        try:
            self._crossfit(pid, prepared, preds, model, version, index, folds)
        except Exception as exc:
            logger.error("project %s: cross-fit of %s failed: %s\n%s", pid, version, exc,
                         traceback.format_exc())
            b.record_error(f"project {pid} cross-fit", exc)
            err = f"{type(exc).__name__}: {exc}"
            b.store.update(pid, lambda s: s.train.update(
                status="done", finished_at=time.time(),
                crossfit={"status": "failed", "folds": folds, "error": err}))

    def _crossfit_folds(self, n_gold: int) -> int:
        """Folds to cross-fit (0: none — off, or too few annotated tasks for 2 per fold)."""
        k = self.backend.settings.train_folds
        if k < 2:
            return 0
        if n_gold < 2 * k:
            logger.warning("%d annotated task(s): too few to cross-fit %d folds; their DEP comes "
                           "from the model trained on them (in-sample)", n_gold, k)
            return 0
        return k

    def _crossfit(self, pid: str, prepared: Any, preds: list[Any], model: Any, version: str,
                  index: Any, folds: int) -> None:
        """Out-of-fold DEP for every annotated task, written as the re-score of ``version``.

        ``folds`` models, each trained on the other (K-1)/K of the tasks, predict the held-out
        part; the full model keeps serving meanwhile.  The project's thresholds are refitted on
        these out-of-sample scores.
        """
        from ls_backend.runtime import crossfit as runtime_crossfit

        from . import scoring

        b, settings = self.backend, self.backend.settings
        t0 = time.time()
        b.store.update(pid, lambda s: s.train.update(
            crossfit={"status": "running", "folds": folds, "started_at": t0}))
        logger.info("project %s: cross-fitting %d folds for out-of-sample DEP of %s (engine "
                    "%s)", pid, folds, version, settings.train_engine)
        from ls_backend.engine import EngineOptions

        engine = EngineOptions(engine="ray" if settings.train_engine == "ray" else "local",
                               address=settings.ray_address)
        oof = runtime_crossfit(
            prepared.dataset, folds=folds, seed=0, model=settings.model_name,
            epochs=settings.train_epochs, batch_size=settings.train_batch_size,
            lr=settings.train_lr, device=settings.device, max_steps=settings.train_max_steps,
            progress=False, engine=engine.engine, ray_options=engine)
        scores = scoring.score_tasks(prepared, preds, model=model, version=version, index=index,
                                     similar_k=settings.similar_k, thresholds="fit",
                                     dep_probs=oof, dep_source=lsf.DEP_CROSSFIT,
                                     annotated_only=True)
        thresholds = None if scores.thresholds is None else scores.thresholds.to_dict()
        seconds = round(time.time() - t0, 1)

        def done(s: ProjectState) -> None:
            if s.model_version == version:
                s.thresholds = thresholds
            s.train.update(status="done", finished_at=time.time(),
                           crossfit={"status": "done", "folds": folds, "seconds": seconds,
                                     "tasks": len(scores.overlays)})

        for tid, overlay in scores.overlays.items():
            b.remember(pid, tid, overlay)
        b.enqueue_many([ScoreJob(pid, tid, fields=o) for tid, o in scores.overlays.items()])
        b.store.update(pid, done)
        logger.info("project %s: cross-fit of %s done in %.1f s: %d task(s) re-scored "
                    "out of sample", pid, version, seconds, len(scores.overlays))

    def may_start_automatically(self, st: ProjectState) -> bool:
        """Whether an automatic (annotation-count) training may start now (failure backoff)."""
        return time.time() >= float(st.train.get("retry_after") or 0.0)

    def prune_versions(self, st: ProjectState) -> list[str]:
        """Remove the model folders of all but the newest ``KEEP_MODEL_VERSIONS`` versions
        (never the serving one); their entries stay, marked ``removed``."""
        keep = self.backend.settings.keep_model_versions
        live = [v for v in st.versions if v.get("path") and not v.get("removed")]
        old = [v for v in live[:-keep] if v.get("path") != st.model_path] if keep else []
        removed = []
        for v in old:
            path = Path(v["path"])
            shutil.rmtree(path, ignore_errors=True)
            removed.append(v["version"])
        if removed:
            gone = set(removed)

            def mark(s: ProjectState) -> None:
                for v in s.versions:
                    if v.get("version") in gone:
                        v["removed"] = True

            self.backend.store.update(st.project, mark)
            logger.info("project %s: removed model version(s) %s (KEEP_MODEL_VERSIONS=%d)",
                        st.project, removed, keep)
        return removed

    def remove_leftovers(self) -> list[str]:
        """Remove model folders no version refers to (a training that crashed half way)."""
        removed = []
        for st in self.backend.store.all():
            models = self.backend.store.project_dir(st.project) / "models"
            if not models.is_dir():
                continue
            # by folder name: every version folder is models/<timestamp>[-k] of its project
            known = {Path(v["path"]).name for v in st.versions if v.get("path")}
            if st.model_path:
                known.add(Path(st.model_path).name)
            for d in models.iterdir():
                if d.is_dir() and d.name not in known:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(str(d))
        if removed:
            logger.warning("removed %d model folder(s) left by interrupted trainings: %s",
                           len(removed), removed[:5])
        return removed

    def wait(self, pid: str, timeout: float) -> bool:
        """Wait for the project's training thread (tests and CLI)."""
        with self._meta_lock:
            t = self._threads.get(project_id(pid))
        if t is None:
            return True
        t.join(timeout)
        return not t.is_alive()
