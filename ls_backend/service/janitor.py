"""Background chores of the backend that keep Label Studio tidy after a ``/predict``.

* :meth:`Janitor.dedup_later` — Label Studio 1.23 calls /predict on every GET of a task that has no
  prediction of the current version; two quick opens of the same task race, and it stores both
  answers.  A few seconds later this keeps the oldest prediction of *our* version on each task
  and deletes the newer copies (only model predictions of this backend's version are ever
  deleted — never annotations, never other versions).
* :meth:`Janitor.sync_project_version` — points the project's ``model_version`` at the served version,
  once, so that ``predictions_score`` (an uncertainty queue's sort key) averages over it.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import TYPE_CHECKING

from .state import ProjectState

if TYPE_CHECKING:  # pragma: no cover
    from .backend import Backend

logger = logging.getLogger(__name__)

__all__ = ["Janitor", "DEDUP_MAX_TASKS"]

#: /predict requests with at most this many tasks (task opens) get a duplicate check
DEDUP_MAX_TASKS = 5
#: seconds after answering before the duplicate check (Label Studio stores answers first)
DEDUP_DELAY_S = 3.0


class Janitor:
    """The chores of one backend (see the module docstring)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._lock = threading.Lock()
        self._version_sync: set[str] = set()

    def dedup_later(self, st: ProjectState, task_ids: list[int]) -> None:
        """Remove duplicate predictions of the served version that Label Studio itself made."""
        if not (st.trained and task_ids and self.backend.settings.label_studio_enabled):
            return
        version = st.model_version

        def run() -> None:
            try:
                api = self.backend.api
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

        timer = threading.Timer(DEDUP_DELAY_S, run)
        timer.daemon = True
        timer.start()

    def sync_project_version(self, st: ProjectState) -> None:
        """Point the Label Studio project's ``model_version`` at the served version, once.

        ``predictions_score`` (the Data Manager column an uncertainty queue sorts on) averages
        only predictions of ``project.model_version``.  Label Studio accepts the new value only
        once its ML backend knows the version (it calls /setup right before /predict), so this
        runs in the background on the first /predict of a version, not at the switch.
        """
        if not (st.trained and self.backend.settings.label_studio_enabled and st.project.isdigit()):
            return
        if st.train.get("ls_model_version") == st.model_version:
            return
        with self._lock:
            key = f"{st.project}:{st.model_version}"
            if key in self._version_sync:
                return
            self._version_sync.add(key)

        def run() -> None:
            time.sleep(2.0)  # let Label Studio store the predictions of this request first
            try:
                self.backend.api.set_model_version(int(st.project), st.model_version)
            except Exception as exc:
                logger.warning("project %s: could not set the project's model_version to %s: %s",
                               st.project, st.model_version, exc)
                with self._lock:
                    self._version_sync.discard(key)
                return
            self.backend.store.update(st.project, lambda s: s.train.update(
                ls_model_version=st.model_version))
            logger.info("project %s: Label Studio project model_version set to %s", st.project,
                        st.model_version)

        threading.Thread(target=run, name="nerq-version-sync", daemon=True).start()

    # -- webhooks ------------------------------------------------------------------------
