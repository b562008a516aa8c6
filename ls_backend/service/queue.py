"""The backend's job queue: persistent (SQLite), prioritised, one pending job per task.

Jobs live in one SQLite file under ``MODEL_DIR`` (``queue.sqlite3``, WAL journal), so a
``kill -9`` or a restart loses nothing: jobs a dead process had taken (``running``) are pending
again when the queue is opened.  Each ``(project, task id)`` has at most one job; a newer job
for the same task replaces the pending one (the newest state of a task wins) and keeps the more
urgent priority of the two.  Jobs are taken in priority order, then first in, first out:

* ``LIVE`` (0) — an annotation just saved (webhook): scored and written first;
* ``RESCORE`` (1) — a task to read back and score (annotations deleted, ...);
* ``WRITE`` (2) — scores already computed (after a training, as a side product of
  ``/predict``) waiting to be written to Label Studio.

A job that fails is retried with exponential backoff (``2**attempts`` s, at most
:data:`MAX_BACKOFF_S`) up to ``max_attempts`` times; then it stays in the file as ``failed``
with its last error, listed by :meth:`ScoreQueue.stats` (``/status``), never dropped silently.

Why not a task-queue library (huey's SQLite storage, rq): the worker must take *many* jobs at
once (one model pass and one batched Label Studio read for a whole batch), and a job must be
replaced in place by a newer one for the same task; both are a few SQL statements here and
neither is what those libraries' one-call-per-task model offers.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import QueueFull

logger = logging.getLogger(__name__)

__all__ = ["ScoreJob", "ScoreQueue", "QueueFull", "LIVE", "RESCORE", "WRITE", "MAX_BACKOFF_S"]

LIVE, RESCORE, WRITE = 0, 1, 2
PRIORITY_NAMES = {LIVE: "live", RESCORE: "rescore", WRITE: "write"}
MAX_BACKOFF_S = 300.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    project     TEXT    NOT NULL,
    task_id     INTEGER NOT NULL,
    priority    INTEGER NOT NULL,
    seq         INTEGER NOT NULL,
    state       TEXT    NOT NULL DEFAULT 'pending',
    attempts    INTEGER NOT NULL DEFAULT 0,
    not_before  REAL    NOT NULL DEFAULT 0,
    enqueued_at REAL    NOT NULL,
    error       TEXT,
    payload     TEXT    NOT NULL,
    PRIMARY KEY (project, task_id)
);
CREATE INDEX IF NOT EXISTS jobs_next ON jobs (state, priority, seq);
CREATE TABLE IF NOT EXISTS counters (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
"""


@dataclass
class ScoreJob:
    """Score one task's annotation (or write a precomputed score) in the background.

    ``task`` is the task dict as Label Studio sent it (``None``: fetch it), ``annotation`` the
    annotation to score (``None``: the task's latest).  ``fields`` holds a ready overlay
    ``{"data": {...}, "meta": {...}}`` to write as is (scores computed in a /predict pass or
    after training).  ``fallback`` is the ready overlay of a pending job this one replaced
    (newest wins): written when scoring this job finds nothing newer to write (the serving
    model trained on the task as it is, so the cross-fitted overlay stands).  ``priority``
    defaults from what the job carries (see the module docstring); ``seq`` and ``attempts``
    are set by the queue.
    """

    project: str
    task_id: int
    task: dict[str, Any] | None = None
    annotation: dict[str, Any] | None = None
    fields: dict[str, Any] | None = None
    fallback: dict[str, Any] | None = None
    enqueued_at: float = field(default_factory=time.time)
    priority: int | None = None
    seq: int = 0
    attempts: int = 0

    def __post_init__(self) -> None:
        if self.priority is None:
            self.priority = WRITE if self.fields is not None else (
                LIVE if self.task is not None else RESCORE)

    @property
    def key(self) -> tuple[str, int]:
        return (self.project, self.task_id)

    def payload(self) -> str:
        # ASCII JSON: lone surrogates and any other code point survive the round trip
        return json.dumps({"task": self.task, "annotation": self.annotation,
                           "fields": self.fields, "fallback": self.fallback}, ensure_ascii=True)


class ScoreQueue:
    """Persistent priority queue of :class:`ScoreJob` (see the module docstring).

    Parameters
    ----------
    path : the SQLite file (created with its folder); ``None``: in memory (tests, tools)
    maxsize : most pending ``LIVE`` + ``RESCORE`` jobs (a webhook beyond it answers 503)
    write_maxsize : most pending ``WRITE`` jobs (beyond it, precomputed scores are refused
        and the refusal is reported by the caller)
    max_attempts : tries of a job before it is kept as ``failed``
    """

    def __init__(self, path: str | Path | None, maxsize: int, *, write_maxsize: int | None = None,
                 max_attempts: int = 8) -> None:
        self.maxsize = maxsize
        self.write_maxsize = write_maxsize if write_maxsize is not None else 10 * maxsize
        self.max_attempts = max_attempts
        self.path = None if path is None else Path(path)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(":memory:" if self.path is None else str(self.path),
                                   check_same_thread=False, isolation_level=None, timeout=30.0)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._cond = threading.Condition()
        with self._cond:
            n = self._db.execute(
                "UPDATE jobs SET state = 'pending' WHERE state = 'running'").rowcount
            row = self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM jobs").fetchone()
            self._seq = int(row[0])
        self.in_flight = 0
        if n:
            logger.warning("queue %s: %d job(s) a previous process had taken are pending again",
                           self.path, n)

    # -- counters (persisted) --------------------------------------------------------------

    def _bump(self, name: str, by: int = 1) -> None:
        self._db.execute("INSERT INTO counters(name, value) VALUES (?, ?) ON CONFLICT(name) "
                         "DO UPDATE SET value = value + excluded.value", (name, by))

    @property
    def deduplicated(self) -> int:
        with self._cond:
            row = self._db.execute("SELECT value FROM counters WHERE name = 'deduplicated'"
                                   ).fetchone()
        return int(row[0]) if row else 0

    # -- put / take / done / fail ----------------------------------------------------------

    def put(self, job: ScoreJob) -> bool:
        """Queue ``job``; return False when it replaced a pending job for the same task.

        Raises :class:`QueueFull` when its class of jobs is at its bound.
        """
        return self.put_many([job])[0]

    def put_many(self, jobs: list[ScoreJob]) -> list[bool]:
        """Queue ``jobs`` in ONE transaction: all of them are in the file, or (on
        :class:`QueueFull` or any error) none.  Returns, per job, whether it was added (False:
        it replaced or was merged into a pending job of the same task)."""
        out: list[bool] = []
        with self._cond:
            seq0 = self._seq
            self._db.execute("BEGIN IMMEDIATE")
            try:
                out = [self._put_locked(j) for j in jobs]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                self._seq = seq0
                raise
            self._cond.notify_all()
        return out

    def _put_locked(self, job: ScoreJob) -> bool:
        assert job.priority is not None
        old = self._db.execute(
            "SELECT priority, state, payload FROM jobs WHERE project = ? AND task_id = ?",
            job.key).fetchone()
        pending = old is not None and old[1] == "pending"
        if pending:
            old_payload = json.loads(old[2])
            old_fields = old_payload.get("fields")
            if job.fields is None and old_fields is not None and job.task is None:
                self._bump("deduplicated")
                return False  # a precomputed score is at least as fresh as a re-fetch
            if job.fields is None and job.fallback is None:
                job.fallback = old_fields or old_payload.get("fallback")
        else:
            self._check_bound(job.priority)
        priority = min(job.priority, int(old[0])) if pending else job.priority
        self._seq += 1
        job.seq, job.attempts = self._seq, 0
        self._db.execute(
            "INSERT INTO jobs(project, task_id, priority, seq, state, attempts, "
            "not_before, enqueued_at, error, payload) "
            "VALUES (?, ?, ?, ?, 'pending', 0, 0, ?, NULL, ?) "
            "ON CONFLICT(project, task_id) DO UPDATE SET priority = excluded.priority, "
            "seq = excluded.seq, state = 'pending', attempts = 0, not_before = 0, "
            "enqueued_at = excluded.enqueued_at, error = NULL, payload = excluded.payload",
            (job.project, job.task_id, priority, job.seq, job.enqueued_at, job.payload()))
        if pending:
            self._bump("deduplicated")
        return not pending

    def _check_bound(self, priority: int) -> None:
        if priority == WRITE:
            n = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND "
                                 "priority = ?", (WRITE,)).fetchone()[0]
            if n >= self.write_maxsize:
                raise QueueFull(f"write queue is full ({self.write_maxsize} pending score "
                                f"writes)")
            return
        n = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND "
                             "priority < ?", (WRITE,)).fetchone()[0]
        if n >= self.maxsize:
            raise QueueFull(f"scoring queue is full ({self.maxsize} pending tasks)")

    def take(self, max_n: int, timeout: float, *, max_write: int | None = None
             ) -> list[ScoreJob]:
        """Up to ``max_n`` due jobs of the most urgent class that has any (``max_write`` for
        ``WRITE`` jobs: small write batches let a live job in between); waits up to
        ``timeout`` s for one."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                now = time.time()
                best = self._db.execute("SELECT MIN(priority) FROM jobs WHERE state = 'pending' "
                                        "AND not_before <= ?", (now,)).fetchone()[0]
                rows = []
                if best is not None:
                    n = max_n if best != WRITE or max_write is None else min(max_n, max_write)
                    rows = self._db.execute(
                        "SELECT project, task_id, priority, seq, attempts, enqueued_at, payload "
                        "FROM jobs WHERE state = 'pending' AND not_before <= ? AND priority = ? "
                        "ORDER BY seq LIMIT ?", (now, int(best), n)).fetchall()
                if rows:
                    break
                left = deadline - time.monotonic()
                if left <= 0:
                    return []
                nxt = self._db.execute("SELECT MIN(not_before) FROM jobs WHERE state = "
                                       "'pending'").fetchone()[0]
                wait = left if nxt is None else max(0.01, min(left, float(nxt) - now))
                self._cond.wait(wait)
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("UPDATE jobs SET state = 'running' WHERE project = ? AND "
                                 "task_id = ? AND seq = ?", [(r[0], r[1], r[3]) for r in rows])
            self._db.execute("COMMIT")
            self.in_flight += len(rows)
        out = []
        for project, task_id, priority, seq, attempts, enqueued_at, payload in rows:
            p = json.loads(payload)
            out.append(ScoreJob(project, int(task_id), task=p.get("task"),
                                annotation=p.get("annotation"), fields=p.get("fields"),
                                fallback=p.get("fallback"),
                                enqueued_at=float(enqueued_at), priority=int(priority),
                                seq=int(seq), attempts=int(attempts)))
        return out

    def done(self, jobs: list[ScoreJob]) -> None:
        """Finished jobs leave the queue (a newer job for the same task stays)."""
        with self._cond:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("DELETE FROM jobs WHERE project = ? AND task_id = ? AND seq = ?",
                                 [(j.project, j.task_id, j.seq) for j in jobs])
            self._db.execute("COMMIT")
            self.in_flight -= len(jobs)
            self._cond.notify_all()

    def fail(self, jobs: list[ScoreJob], error: str, *, retry: bool = True) -> int:
        """Record a failure of ``jobs``; retried later with backoff, or kept as ``failed``.

        Returns how many were given up (``failed``) now.
        """
        now, given_up = time.time(), 0
        with self._cond:
            self._db.execute("BEGIN IMMEDIATE")
            for j in jobs:
                attempts = j.attempts + 1
                if retry and attempts < self.max_attempts:
                    delay = min(MAX_BACKOFF_S, 2.0 ** attempts)
                    self._db.execute(
                        "UPDATE jobs SET state = 'pending', attempts = ?, not_before = ?, "
                        "error = ? WHERE project = ? AND task_id = ? AND seq = ?",
                        (attempts, now + delay, error[:500], j.project, j.task_id, j.seq))
                else:
                    given_up += self._db.execute(
                        "UPDATE jobs SET state = 'failed', attempts = ?, error = ? "
                        "WHERE project = ? AND task_id = ? AND seq = ?",
                        (attempts, error[:500], j.project, j.task_id, j.seq)).rowcount
            if given_up:
                self._bump("failed", given_up)
            self._db.execute("COMMIT")
            self.in_flight -= len(jobs)
            self._cond.notify_all()
        return given_up

    # -- inspection ------------------------------------------------------------------------

    def idle(self) -> bool:
        """No job due or running (jobs waiting for a retry later do not count)."""
        with self._cond:
            n = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'running' OR "
                                 "(state = 'pending' AND not_before <= ?)",
                                 (time.time(),)).fetchone()[0]
            return n == 0 and self.in_flight == 0

    def pending(self, project: str | None = None) -> int:
        """Pending jobs (due now or waiting for a retry)."""
        q = "SELECT COUNT(*) FROM jobs WHERE state IN ('pending', 'running')"
        args: tuple[str, ...] = ()
        if project is not None:
            q, args = q + " AND project = ?", (project,)
        with self._cond:
            return int(self._db.execute(q, args).fetchone()[0])

    def __len__(self) -> int:
        return self.pending()

    def stats(self, *, failed_rows: int = 20) -> dict[str, Any]:
        """Counts by state and priority, retrying jobs and the latest failed ones."""
        with self._cond:
            by = self._db.execute("SELECT state, priority, COUNT(*) FROM jobs GROUP BY state, "
                                  "priority").fetchall()
            retrying = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'pending' AND "
                                        "attempts > 0").fetchone()[0]
            failed = self._db.execute(
                "SELECT project, task_id, attempts, error, enqueued_at FROM jobs WHERE state = "
                "'failed' ORDER BY seq DESC LIMIT ?", (failed_rows,)).fetchall()
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        counts: dict[str, dict[str, int]] = {}
        for state, prio, n in by:
            counts.setdefault(state, {})[PRIORITY_NAMES.get(int(prio), str(prio))] = int(n)
        return {
            "pending": sum(counts.get("pending", {}).values()) + sum(
                counts.get("running", {}).values()),
            "by_state": counts, "retrying": int(retrying),
            "failed": sum(counts.get("failed", {}).values()),
            "failed_recent": [{"project": p, "task": t, "attempts": a, "error": e}
                              for p, t, a, e, _ in failed],
            "max": self.maxsize, "write_max": self.write_maxsize,
            "deduplicated": int(counters.get("deduplicated", 0)),
            "path": None if self.path is None else str(self.path),
        }

    def retry_failed(self, project: str | None = None) -> int:
        """Put ``failed`` jobs back in the queue (after the cause was fixed)."""
        q = "UPDATE jobs SET state = 'pending', attempts = 0, not_before = 0 WHERE state = 'failed'"
        args: tuple[str, ...] = ()
        if project is not None:
            q, args = q + " AND project = ?", (project,)
        with self._cond:
            n = int(self._db.execute(q, args).rowcount)
            self._cond.notify_all()
        return n

    def close(self) -> None:
        with self._cond:
            self._db.close()
