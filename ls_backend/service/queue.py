"""The backend's scoring queue: bounded, FIFO, one pending job per ``(project, task id)``."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

from .errors import QueueFull

__all__ = ["ScoreJob", "ScoreQueue", "QueueFull"]


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
