"""The backend's persistent job queue (SQLite): priorities, de-duplication, retries, restarts."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from ls_backend.service.queue import LIVE, RESCORE, WRITE, QueueFull, ScoreJob, ScoreQueue


def test_priority_from_payload_and_order(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 100)
    q.put(ScoreJob("1", 1, fields={"data": {"nerq_dep": 0.1}}))   # a score to write
    q.put(ScoreJob("1", 2))                                        # a re-fetch
    q.put(ScoreJob("1", 3, task={"id": 3}, annotation={"result": []}))  # a live annotation
    q.put(ScoreJob("1", 4, fields={"data": {"nerq_dep": 0.2}}))
    rounds = []
    while jobs := q.take(10, timeout=0, max_write=1):  # one class per round
        rounds.append([(j.task_id, j.priority) for j in jobs])
        q.done(jobs)
    assert rounds == [[(3, LIVE)], [(2, RESCORE)], [(1, WRITE)], [(4, WRITE)]]


def test_a_live_job_overtakes_pending_writes(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 100)
    for tid in range(100):
        q.put(ScoreJob("1", tid, fields={"data": {}}))
    first = q.take(32, timeout=0, max_write=8)
    assert [j.task_id for j in first] == list(range(8))  # small write batches
    q.put(ScoreJob("1", 500, task={"id": 500}))          # an annotator saves meanwhile
    q.done(first)
    (live,) = q.take(32, timeout=0, max_write=8)
    assert live.task_id == 500 and live.priority == LIVE


def test_newest_job_of_a_task_wins_and_keeps_the_urgent_priority(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 100)
    q.put(ScoreJob("1", 7, task={"id": 7, "v": 1}, annotation={"result": []}))
    assert not q.put(ScoreJob("1", 7, fields={"data": {"nerq_dep": 0.5}}))
    (job,) = q.take(10, timeout=0)
    assert job.fields == {"data": {"nerq_dep": 0.5}} and job.priority == LIVE
    q.done([job])
    # a bare re-fetch never replaces a computed score
    q.put(ScoreJob("1", 8, fields={"data": {"nerq_dep": 0.3}}))
    assert not q.put(ScoreJob("1", 8))
    (job,) = q.take(10, timeout=0)
    assert job.fields == {"data": {"nerq_dep": 0.3}}
    assert q.stats()["deduplicated"] == 2


def test_a_job_replaced_while_running_is_not_lost(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 100)
    q.put(ScoreJob("1", 5, task={"v": 1}))
    (running,) = q.take(1, timeout=0)
    q.put(ScoreJob("1", 5, task={"v": 2}))  # the task changed while the first was scored
    q.done([running])                       # finishing the old job keeps the new one
    (nxt,) = q.take(1, timeout=0)
    assert nxt.task == {"v": 2}


def test_bounds_are_per_class(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 2, write_maxsize=3)
    for tid in range(3):
        q.put(ScoreJob("1", tid, fields={"data": {}}))
    with pytest.raises(QueueFull, match="write queue is full"):
        q.put(ScoreJob("1", 99, fields={"data": {}}))
    # a full write queue never blocks live scoring
    q.put(ScoreJob("1", 10, task={"id": 10}))
    q.put(ScoreJob("1", 11, task={"id": 11}))
    with pytest.raises(QueueFull, match="scoring queue is full"):
        q.put(ScoreJob("1", 12, task={"id": 12}))
    assert q.put(ScoreJob("1", 10, task={"id": 10, "v": 2})) is False  # replacing is allowed


def test_failures_back_off_then_stay_visible(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 10, max_attempts=2)
    q.put(ScoreJob("1", 1, fields={"data": {}}))
    (job,) = q.take(1, timeout=0)
    assert q.fail([job], "HTTP 500: boom") == 0
    assert q.take(1, timeout=0) == []          # backing off (2 s)
    assert q.idle() and q.pending() == 1
    st = q.stats()
    assert st["retrying"] == 1 and st["failed"] == 0
    (job,) = q.take(1, timeout=3.0)            # due again after the backoff
    assert job.attempts == 1
    assert q.fail([job], "HTTP 500: boom again") == 1
    st = q.stats()
    assert st["failed"] == 1 and st["failed_recent"][0]["error"] == "HTTP 500: boom again"
    assert q.take(1, timeout=0) == [] and q.pending() == 0
    assert q.retry_failed() == 1 and q.take(1, timeout=0)[0].attempts == 0


def test_payload_round_trips_any_text(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 10)
    text = "lone \ud800 surrogate, emoji \U0001f600, NUL \x00"
    q.put(ScoreJob("1", 1, task={"data": {"text": text}}))
    (job,) = q.take(1, timeout=0)
    assert job.task == {"data": {"text": text}}


_WRITER = """
import sys
from ls_backend.service.queue import ScoreJob, ScoreQueue
q = ScoreQueue(sys.argv[1], 10000)
for tid in range(500):
    q.put(ScoreJob("4", tid, fields={"data": {"nerq_dep": tid / 1000}}))
taken = q.take(100, timeout=0)      # a worker took these, then the process is killed
print(len(taken), flush=True)
import os, signal
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_jobs_survive_kill_9(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    p = subprocess.run([sys.executable, "-c", _WRITER, str(path)], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == -9 and p.stdout.strip() == "100"
    q = ScoreQueue(path, 10000)       # the taken ones are pending again
    assert q.pending() == 500
    seen = set()
    while jobs := q.take(128, timeout=0):
        seen.update(j.task_id for j in jobs)
        q.done(jobs)
    assert seen == set(range(500)) and q.idle()


def test_take_waits_for_a_put_from_another_thread(tmp_path: Path) -> None:
    import threading

    q = ScoreQueue(tmp_path / "q.sqlite3", 10)
    t = threading.Timer(0.2, lambda: q.put(ScoreJob("1", 1, task={})))
    t.start()
    t0 = time.monotonic()
    jobs = q.take(1, timeout=5.0)
    assert jobs and time.monotonic() - t0 < 4.0


def test_put_many_is_all_or_nothing(tmp_path: Path) -> None:
    q = ScoreQueue(tmp_path / "q.sqlite3", 10, write_maxsize=5)
    assert q.put_many([ScoreJob("1", t, fields={"data": {}}) for t in range(3)]) == [True] * 3
    with pytest.raises(QueueFull):  # 3 + 4 > 5: none of the four is queued
        q.put_many([ScoreJob("1", t, fields={"data": {}}) for t in range(10, 14)])
    assert q.pending() == 3
    assert q.put_many([ScoreJob("1", 0, fields={"data": {"v": 2}}),
                       ScoreJob("1", 20, fields={"data": {}})]) == [False, True]
    jobs = q.take(10, timeout=0)
    assert sorted(j.task_id for j in jobs) == [0, 1, 2, 20]
    assert [j.seq for j in jobs] == sorted(j.seq for j in jobs)


def test_a_live_job_that_replaces_a_pending_score_keeps_it_as_fallback(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite3"
    q = ScoreQueue(path, 100)
    crossfit = {"meta": {"ner_quality": {"dep": 0.7, "dep_source": "cross-fit"}}}
    q.put(ScoreJob("1", 9, fields=crossfit))  # the cross-fit's write, not yet done
    q.put(ScoreJob("1", 9, task={"id": 9}, annotation={"result": []}))  # then a webhook
    q.close()
    (job,) = ScoreQueue(path, 100).take(10, timeout=0)  # also across a restart
    assert job.fields is None and job.task == {"id": 9} and job.priority == LIVE
    assert job.fallback == crossfit
    q2 = ScoreQueue(tmp_path / "q2.sqlite3", 100)
    q2.put(ScoreJob("1", 9, task={"id": 9}))
    (job,) = q2.take(10, timeout=0)
    assert job.fallback is None  # nothing was replaced
