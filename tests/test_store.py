"""The SQLite sync store: incremental, deletions, interruption/resume, atomic pages.

The task source here is an in-memory project (a plain class with the two methods the adapter
provides); the same flow runs against a real Label Studio in ``test_analysis_e2e.py``.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from analysis.labelstudio.store import TaskStore, store_path, sync_project


class Project:
    """An in-memory project: tasks with server-side ``updated_at`` ticks."""

    def __init__(self, n: int) -> None:
        self.clock = 0
        self.tasks: dict[int, dict[str, Any]] = {}
        for i in range(1, n + 1):
            self.add(i, f"text {i}")
        self.fail_after: int | None = None
        self.requests: list[str | None] = []

    def _tick(self) -> str:
        self.clock += 1
        return f"2030-01-01T00:00:{self.clock:06d}Z"

    def add(self, tid: int, text: str) -> None:
        self.tasks[tid] = {"id": tid, "data": {"text": text}, "annotations": [],
                           "predictions": [], "meta": {}, "updated_at": self._tick()}

    def annotate(self, tid: int) -> None:
        t = self.tasks[tid]
        t["annotations"] = [{"id": tid * 10, "result": []}]
        t["updated_at"] = self._tick()

    def iter_tasks(self, project_id: int, *, page_size: int = 100,
                   updated_after: str | None = None, after_id: int | None = None) -> Any:
        """Pages (lists) in id order, like ``LabelStudioAPI.iter_tasks``."""
        self.requests.append(updated_after)
        page: list[dict[str, Any]] = []
        for k, tid in enumerate(sorted(self.tasks)):
            if self.fail_after is not None and k >= self.fail_after:
                raise ConnectionError("Label Studio went away")
            t = self.tasks[tid]
            if after_id is not None and tid <= after_id:
                continue
            if updated_after is None or t["updated_at"] >= updated_after:
                page.append(dict(t))
            if len(page) == page_size:
                yield page
                page = []
        if page:
            yield page

    def task_ids(self, project_id: int) -> list[int]:
        return sorted(self.tasks)


@pytest.fixture
def store(tmp_path: Path) -> TaskStore:
    s = TaskStore(tmp_path / "s" / "store.sqlite3")
    yield s
    s.close()


def _watermark_after_all(store: TaskStore, proj: Project) -> None:
    # the fake server clock is far in the future of the local clock; pin the watermark to
    # the fake clock so "changed since" means something in this test
    store.set_state("watermark", f"2030-01-01T00:00:{proj.clock + 1:06d}Z")


def test_store_path_layout(tmp_path: Path) -> None:
    p = store_path("http://localhost:8080/", 7, root=tmp_path)
    assert p == tmp_path / "localhost_8080" / "7" / "store.sqlite3"
    assert store_path(None, "x", root=tmp_path).parent.parent.name == "files"


def test_first_sync_then_incremental(store: TaskStore) -> None:
    proj = Project(25)
    r1 = sync_project(proj, 1, store, page_size=7)
    assert (r1.fetched, r1.written, r1.total, r1.since) == (25, 25, 25, None)
    assert store.ids() == list(range(1, 26))
    _watermark_after_all(store, proj)
    proj.annotate(3)
    proj.annotate(20)
    r2 = sync_project(proj, 1, store, page_size=7)
    assert r2.since is not None
    assert r2.fetched == 2 and r2.written == 2
    assert store.get(3)["annotations"] == [{"id": 30, "result": []}]
    assert store.check() == []


def test_deleted_tasks_leave_the_store(store: TaskStore) -> None:
    proj = Project(10)
    sync_project(proj, 1, store)
    del proj.tasks[4], proj.tasks[9]
    r = sync_project(proj, 1, store)
    assert r.deleted == 2
    assert 4 not in store.ids() and 9 not in store.ids() and len(store) == 8


def test_interrupted_sync_keeps_store_consistent_and_resumes(store: TaskStore) -> None:
    proj = Project(30)
    sync_project(proj, 1, store, page_size=5)
    _watermark_after_all(store, proj)
    wm = store.get_state("watermark")
    for tid in range(1, 31):
        proj.annotate(tid)
    proj.fail_after = 12  # dies inside the third page
    with pytest.raises(ConnectionError):
        sync_project(proj, 1, store, page_size=5)
    assert store.check() == []
    # two whole pages written, the page in flight rolled back, watermark not moved
    annotated = [t["id"] for t in store.tasks() if t["annotations"]]
    assert annotated == list(range(1, 11))
    assert store.get_state("watermark") == wm
    assert store.get_state("run") is not None
    proj.fail_after = None
    r = sync_project(proj, 1, store, page_size=5)
    assert r.resumed and r.since == wm
    assert all(t["annotations"] for t in store.tasks()) and len(store) == 30
    assert r.fetched == 20 and r.written == 20  # resumes after the last committed page
    assert store.get_state("run") is None


def test_keyboard_interrupt_rolls_back_the_page(store: TaskStore) -> None:
    proj = Project(8)

    def boom(n: int) -> None:
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        sync_project(proj, 1, store, page_size=4, progress=boom)
    # the page was committed before the callback; the store holds whole tasks only
    assert store.check() == [] and len(store) in (0, 4)


def test_upsert_rejects_tasks_without_id(store: TaskStore) -> None:
    with pytest.raises(ValueError, match="without an 'id'"):
        store.upsert([{"data": {}}])
    assert len(store) == 0


def test_replace_all_is_atomic(store: TaskStore) -> None:
    store.upsert([{"id": 1, "data": {"text": "a"}}])
    with pytest.raises(ValueError):
        store.replace_all([{"id": 2, "data": {}}, {"id": "x"}])
    assert store.ids() == [1]
    store.replace_all([{"id": 2, "data": {}}])
    assert store.ids() == [2]


def test_store_is_plain_sqlite(store: TaskStore) -> None:
    store.upsert([{"id": 5, "updated_at": "t", "data": {"text": "é"}}])
    con = sqlite3.connect(store.path)
    assert con.execute("SELECT id, updated_at FROM tasks").fetchall() == [(5, "t")]
    con.close()
