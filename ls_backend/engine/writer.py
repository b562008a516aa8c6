"""One writer of predictions to Label Studio: bounded, rate-limited, retried, each task once.

The Ray path of ``predict --project`` produces predictions faster than Label Studio takes them
(a 2-core Label Studio takes ~10 writes/s).  :class:`PredictionWriter` sits between the two:

* **bounded**: at most ``max_pending`` predictions wait; :meth:`put` blocks when the queue is
  full, which holds the driver (and so Ray's streaming) back instead of filling memory;
* **rate-limited**: at most ``rate`` writes per second (``None``: as fast as Label Studio answers);
* **retried**: a write that fails because Label Studio is unreachable is retried with
  exponential backoff (``retries`` times); before a retry the task's predictions are read, so a
  write whose answer was lost is not sent twice;
* **once per task**: a task id seen before in this run is skipped, whoever sends it again (a
  batch Ray retried after its actor died);
* **visible**: a task Label Studio rejects (4xx) is counted in ``failed`` with its message;
  when Label Studio stays unreachable after the retries the writer stops, and the next
  :meth:`put` / :meth:`close` raises ``ConnectionError`` with the counts (rerunning resumes:
  tasks that got their prediction are skipped).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["PredictionWriter", "WriteReport"]

_STOP = object()


@dataclass
class WriteReport:
    """What the writer did: counts and the first messages of failed writes."""

    written: int = 0
    already_there: int = 0
    duplicates_skipped: int = 0
    failed: int = 0
    retries: int = 0
    not_written: int = 0
    errors: list[str] = field(default_factory=list)


class PredictionWriter:
    """Write ``(task id, regions, score)`` predictions of one ``model_version`` from a thread.

    Parameters
    ----------
    api : ``analysis.labelstudio.LabelStudioAPI`` (``create_prediction``, ``list_predictions``)
    model_version : the version every prediction carries
    max_pending : queue bound
    rate : writes per second at most (None or 0: no limit)
    retries : attempts after the first for an unreachable Label Studio
    backoff : first wait in seconds (doubles each retry, at most 30 s)
    on_written : called with 1 after each task is done (progress bar)
    """

    def __init__(self, api: Any, model_version: str, *, max_pending: int = 256,
                 rate: float | None = None, retries: int = 5, backoff: float = 1.0,
                 on_written: Any = None) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        if rate is not None and rate < 0:
            raise ValueError(f"write rate must be >= 0, got {rate}")
        self.api = api
        self.version = model_version
        self.rate = rate or None
        self.retries = retries
        self.backoff = backoff
        self.on_written = on_written
        self.report = WriteReport()
        self._seen: set[int] = set()
        self._q: queue.Queue[Any] = queue.Queue(maxsize=max_pending)
        self._error: BaseException | None = None
        self._abort = False
        self._next_at = 0.0
        self._thread = threading.Thread(target=self._run, name="nerq-prediction-writer",
                                        daemon=True)
        self._thread.start()

    # --------------------------------------------------------------- driver side
    def put(self, task_id: int, result: list[dict[str, Any]], score: float) -> None:
        """Queue one prediction (blocks while ``max_pending`` wait); raises the writer's error."""
        while True:
            self._raise_if_failed()
            try:
                self._q.put((int(task_id), result, float(score)), timeout=0.5)
                return
            except queue.Full:
                continue

    def close(self) -> WriteReport:
        """Write what is queued, stop the thread, return the report (raises the writer's error)."""
        while self._thread.is_alive():
            try:
                self._q.put(_STOP, timeout=0.5)
                break
            except queue.Full:
                continue
        self._thread.join()
        self._raise_if_failed()
        return self.report

    def abort(self) -> WriteReport:
        """Stop after the write in progress (the driver failed or was interrupted); what is
        still queued is not written — a rerun writes it — and is counted in ``not_written``."""
        self._abort = True
        self._thread.join()
        self.report.not_written = self._q.qsize()
        return self.report

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            r = self.report
            raise ConnectionError(
                f"{self._error}; {r.written} prediction(s) written before it, "
                f"{self._q.qsize()} queued not written: run the same command again to resume "
                f"(tasks that have their prediction are skipped)") from self._error

    # --------------------------------------------------------------- writer thread
    def _run(self) -> None:
        while not self._abort:
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                continue
            if item is _STOP:
                return
            tid, result, score = item
            if tid in self._seen:
                self.report.duplicates_skipped += 1
                continue
            self._seen.add(tid)
            try:
                self._write(tid, result, score)
            except ConnectionError as exc:
                self._error = exc
                log.error("stopped writing predictions: %s", exc)
                return
            if self.on_written is not None:
                self.on_written(1)

    def _pace(self) -> None:
        if self.rate:
            now = time.monotonic()
            if now < self._next_at:
                time.sleep(self._next_at - now)
            self._next_at = max(now, self._next_at) + 1.0 / self.rate

    def _write(self, tid: int, result: list[dict[str, Any]], score: float) -> None:
        wait = self.backoff
        for attempt in range(self.retries + 1):
            self._pace()
            try:
                if attempt and self._has_version(tid):
                    self.report.already_there += 1  # the lost answer's write went through
                    return
                self.api.create_prediction(tid, result, score=score, model_version=self.version)
                self.report.written += 1
                return
            except ConnectionError as exc:
                if attempt == self.retries:
                    raise ConnectionError(
                        f"task {tid}: Label Studio unreachable after {attempt + 1} "
                        f"attempts ({exc})") from exc
                self.report.retries += 1
                log.warning("task %s: Label Studio unreachable (%s); retry in %.0f s", tid,
                            exc, wait)
                time.sleep(wait)
                wait = min(wait * 2, 30.0)
            except ValueError as exc:  # Label Studio rejected this task's write (4xx)
                self.report.failed += 1
                if len(self.report.errors) < 20:
                    self.report.errors.append(f"task {tid}: {exc}")
                log.error("task %s: prediction not written: %s", tid, exc)
                return

    def _has_version(self, tid: int) -> bool:
        return any(p.get("model_version") == self.version for p in self.api.list_predictions(tid))
