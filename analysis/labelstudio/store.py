"""Local sync store: a SQLite copy of a Label Studio project's tasks.

Location
--------
``<root>/<host>/<project>/store.sqlite3`` where ``<root>`` is the cache directory the caller
passes (the CLI's ``NERQ_CACHE_DIR`` setting, default ``~/.cache/ner-quality``) and ``<host>`` is the Label Studio URL's ``host_port`` (or ``files``
for stores filled from export files).  :func:`store_path` computes it.

Schema
------
``tasks(id INTEGER PRIMARY KEY, updated_at TEXT, body TEXT)``
    one row per task; ``body`` is the full task JSON (data, meta, annotations, predictions)
    exactly as Label Studio returned it.
``state(key TEXT PRIMARY KEY, value TEXT)``
    JSON values: ``watermark`` (for the next incremental sync: the start of the last *complete*
    sync minus a clock-skew margin, or the newest server ``updated_at`` in the store if that is
    earlier), ``run`` (the sync in progress: its ``since`` and ``last_id``), ``project`` (id,
    title, label config, url).
``run_seen(id INTEGER PRIMARY KEY)``
    task ids already written by the sync in progress (for resume and for deletions).

Consistency
-----------
Every page of tasks is written in one transaction together with its ``run_seen`` rows, so an
interruption (Label Studio down, Ctrl-C, crash) loses at most the page in flight, and the store
always holds whole tasks.  The ``watermark`` only moves when a sync finishes; the next run after
an interruption reuses the interrupted run's ``since`` (so nothing changed in between is
missed) and continues after the last committed page (``after_id``: tasks come in id order).
Tasks whose ``updated_at`` did not change are never rewritten.

Incremental sync
----------------
A sync asks the source for tasks with ``updated_at >= since`` (Label Studio bumps a task's
``updated_at`` when an annotation or prediction on it is saved or deleted).  Deleted tasks are
found by comparing the store with the project's current list of task ids, which the source
returns cheaply (``task_ids``); without that call a full sync (``since=None``) is the only way
deletions are seen.
"""

from __future__ import annotations

import json
import logging
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlparse

log = logging.getLogger(__name__)

__all__ = [
    "TaskStore",
    "TaskSource",
    "SyncResult",
    "store_path",
    "sync_project",
    "DEFAULT_CLOCK_SKEW_S",
]

#: seconds subtracted from the local clock when setting the watermark (server/client skew)
DEFAULT_CLOCK_SKEW_S = 300


def store_path(url: str | None, project: int | str, *, root: str | Path) -> Path:
    """Path of the store for ``project`` on the Label Studio at ``url`` (None: files).

    >>> store_path("http://127.0.0.1:8080", 3, root=Path("/c")).as_posix()
    '/c/127.0.0.1_8080/3/store.sqlite3'
    """
    root = Path(root)
    if url:
        netloc = urlparse(url if "://" in url else f"http://{url}").netloc or url
        host = re.sub(r"[^A-Za-z0-9._-]+", "_", netloc)
    else:
        host = "files"
    proj = re.sub(r"[^A-Za-z0-9._-]+", "_", str(project))
    return root / host / proj / "store.sqlite3"


def _utcnow_iso(offset_s: float = 0.0) -> str:
    t = datetime.now(timezone.utc) + timedelta(seconds=offset_s)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class TaskStore:
    """SQLite-backed task store (see the module docstring for the schema)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.executescript(
            """
            CREATE TABLE IF NOT EXISTS tasks (
                id INTEGER PRIMARY KEY, updated_at TEXT, body TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS state (key TEXT PRIMARY KEY, value TEXT NOT NULL);
            CREATE TABLE IF NOT EXISTS run_seen (id INTEGER PRIMARY KEY);
            """
        )

    # -- lifecycle
    def close(self) -> None:
        self._conn.close()

    def __enter__(self) -> TaskStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT``; rolled back on any exception (incl. Ctrl-C)."""
        self._conn.execute("BEGIN IMMEDIATE")
        try:
            yield self._conn
        except BaseException:
            self._conn.execute("ROLLBACK")
            raise
        else:
            self._conn.execute("COMMIT")

    # -- state
    def get_state(self, key: str, default: Any = None) -> Any:
        row = self._conn.execute("SELECT value FROM state WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def _set_state(self, conn: sqlite3.Connection, key: str, value: Any) -> None:
        if value is None:
            conn.execute("DELETE FROM state WHERE key = ?", (key,))
        else:
            conn.execute(
                "INSERT INTO state(key, value) VALUES(?, ?) "
                "ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (key, json.dumps(value)),
            )

    def set_state(self, key: str, value: Any) -> None:
        with self.transaction() as c:
            self._set_state(c, key, value)

    # -- tasks
    def __len__(self) -> int:
        return int(self._conn.execute("SELECT COUNT(*) FROM tasks").fetchone()[0])

    def ids(self) -> list[int]:
        return [r[0] for r in self._conn.execute("SELECT id FROM tasks ORDER BY id")]

    def updated_at(self) -> dict[int, str | None]:
        return dict(self._conn.execute("SELECT id, updated_at FROM tasks"))

    def tasks(self) -> list[dict[str, Any]]:
        """All stored tasks, ordered by id."""
        return [json.loads(b) for (b,) in self._conn.execute("SELECT body FROM tasks ORDER BY id")]

    def get(self, task_id: int) -> dict[str, Any] | None:
        row = self._conn.execute("SELECT body FROM tasks WHERE id = ?", (task_id,)).fetchone()
        return None if row is None else json.loads(row[0])

    def _upsert(self, conn: sqlite3.Connection, tasks: Iterable[dict[str, Any]]) -> int:
        rows = []
        for t in tasks:
            if not isinstance(t, dict) or "id" not in t:
                raise ValueError(f"task without an 'id' cannot be stored: {str(t)[:80]}")
            try:
                tid = int(t["id"])
            except (TypeError, ValueError):
                raise ValueError(f"task id {t['id']!r} is not an integer") from None
            rows.append((tid, t.get("updated_at"), json.dumps(t, ensure_ascii=False)))
        conn.executemany(
            "INSERT INTO tasks(id, updated_at, body) VALUES(?, ?, ?) ON CONFLICT(id) DO UPDATE "
            "SET updated_at = excluded.updated_at, body = excluded.body",
            rows,
        )
        return len(rows)

    def upsert(self, tasks: Iterable[dict[str, Any]]) -> int:
        """Insert or replace whole tasks in one transaction; returns the number written."""
        with self.transaction() as c:
            return self._upsert(c, tasks)

    def replace_all(self, tasks: Iterable[dict[str, Any]]) -> int:
        """Atomically make the store hold exactly ``tasks`` (file imports)."""
        with self.transaction() as c:
            c.execute("DELETE FROM tasks")
            c.execute("DELETE FROM run_seen")
            self._set_state(c, "run", None)
            n = self._upsert(c, tasks)
            self._set_state(c, "watermark", None)
            return n

    def check(self) -> list[str]:
        """Consistency problems (empty list when fine): SQLite integrity and JSON bodies."""
        problems = [
            r[0] for r in self._conn.execute("PRAGMA integrity_check") if r[0] != "ok"
        ]
        for tid, body in self._conn.execute("SELECT id, body FROM tasks"):
            try:
                t = json.loads(body)
            except json.JSONDecodeError:
                problems.append(f"task {tid}: body is not valid JSON")
                continue
            if int(t.get("id", -1)) != tid:
                problems.append(f"task {tid}: body id {t.get('id')!r} differs from row id")
        return problems


class TaskSource(Protocol):
    """What :func:`sync_project` needs from the Label Studio adapter (``analysis.labelstudio``).

    ``iter_tasks`` yields full task dicts (``id``, ``updated_at``, ``data``, ``meta``,
    ``annotations``, ``predictions``), paged; ``updated_after`` (ISO time) restricts to tasks
    with ``updated_at >= updated_after`` when given.  ``task_ids`` lists every current task id
    of the project (used to detect deletions).
    """

    def iter_tasks(self, project_id: int, **kwargs: Any) -> Iterable[dict[str, Any]]: ...

    def task_ids(self, project_id: int) -> list[int]: ...


@dataclass(frozen=True)
class SyncResult:
    """What a sync did."""

    fetched: int  # tasks received from the source in this run
    written: int  # tasks inserted or changed in the store
    deleted: int  # tasks removed because they no longer exist in the project
    total: int  # tasks in the store afterwards
    since: str | None  # the updated_after used (None: full sync)
    resumed: bool  # this run continued an interrupted one
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


_MISSING = object()


def _call_iter(
    source: Any, project_id: int, *, page_size: int, since: str | None, after_id: int | None
) -> Iterable[Any]:
    kwargs: dict[str, Any] = {"page_size": page_size}
    if since is not None:
        kwargs["updated_after"] = since
    if after_id is not None:
        kwargs["after_id"] = after_id
    try:
        return source.iter_tasks(project_id, **kwargs)
    except TypeError:
        # an adapter without the incremental filters: fetch everything, compare client-side
        log.info("task source has no updated_after/after_id filter; fetching all tasks")
        return source.iter_tasks(project_id, page_size=page_size)


def _pages(items: Iterable[Any], page_size: int) -> Iterator[list[dict[str, Any]]]:
    """Pages of tasks from a source yielding pages (lists, ``ls_api.TaskPage``) or tasks."""
    buf: list[dict[str, Any]] = []
    for it in items:
        if isinstance(it, list):
            if buf:
                yield buf
                buf = []
            yield list(it)
            continue
        buf.append(it)
        if len(buf) >= page_size:
            yield buf
            buf = []
    if buf:
        yield buf


def _start_run(store: TaskStore, full: bool, skew: int) -> tuple[dict[str, Any], Any, bool]:
    """The run to continue (an interrupted one) or a new one; returns ``(run, since, resumed)``."""
    run = store.get_state("run")
    if run is not None:
        since = None if full else run.get("since")
        log.info("resuming an interrupted sync (since=%s, after id %s)", since, run.get("last_id"))
        return run, since, True
    since = None if full else store.get_state("watermark")
    run = {"since": since, "started": _utcnow_iso(-skew), "last_id": None}
    with store.transaction() as c:
        c.execute("DELETE FROM run_seen")
        store._set_state(c, "run", run)
    return run, since, False


def _copy_pages(source: Any, project_id: int, store: TaskStore, run: dict[str, Any], since: Any,
                page_size: int, progress: bool | Callable[[int], None]) -> tuple[int, int]:
    """Write the changed tasks of every page, one transaction a page; ``(fetched, written)``."""
    known = store.updated_at()
    bar = None
    cb: Callable[[int], None] | None = progress if callable(progress) else None
    if progress is True:
        from tqdm import tqdm

        bar = tqdm(desc=f"sync project {project_id}", unit="task", leave=False)
        cb = bar.update
    fetched = written = 0
    try:
        items = _call_iter(source, project_id, page_size=page_size, since=since,
                           after_id=run.get("last_id"))
        for page in _pages(items, page_size):
            if bar is not None and getattr(page, "total", None) is not None and bar.total is None:
                bar.total = int(page.total)  # type: ignore[attr-defined]
            for t in page:
                if not isinstance(t, dict) or "id" not in t:
                    raise ValueError(f"project {project_id}: the source returned a task without id")
            fetched += len(page)
            changed = [t for t in page if t.get("updated_at") is None
                       or known.get(int(t["id"]), _MISSING) != t["updated_at"]]
            run["last_id"] = max(int(t["id"]) for t in page)
            with store.transaction() as c:
                if changed:
                    store._upsert(c, changed)
                c.executemany("INSERT OR IGNORE INTO run_seen(id) VALUES(?)",
                              [(int(t["id"]),) for t in page])
                store._set_state(c, "run", run)
            written += len(changed)
            if cb is not None:
                cb(len(page))
    finally:
        if bar is not None:
            bar.close()
    return fetched, written


def _finish_run(source: Any, project_id: int, store: TaskStore, run: dict[str, Any],
                since: Any) -> int:
    """Drop deleted tasks and move the watermark, atomically; returns the number deleted."""
    current: set[int] | None
    if hasattr(source, "task_ids"):
        current = {int(i) for i in source.task_ids(project_id)}
    elif since is None:
        current = {r[0] for r in store._conn.execute("SELECT id FROM run_seen")}
    else:
        current = None
    deleted = 0
    with store.transaction() as c:
        if current is not None:
            stale = [i for i in store.ids() if i not in current]
            c.executemany("DELETE FROM tasks WHERE id = ?", [(i,) for i in stale])
            deleted = len(stale)
        newest = c.execute("SELECT MAX(updated_at) FROM tasks").fetchone()[0]
        wm = run["started"] if not newest else min(run["started"], str(newest))
        store._set_state(c, "watermark", wm)
        store._set_state(c, "run", None)
        store._set_state(c, "last_sync", {"finished": _utcnow_iso(), "project": project_id})
        c.execute("DELETE FROM run_seen")
    return deleted


def sync_project(
    source: Any,
    project_id: int,
    store: TaskStore,
    *,
    page_size: int = 100,
    full: bool = False,
    progress: bool | Callable[[int], None] = False,
    project_info: dict[str, Any] | None = None,
    clock_skew_s: int | None = None,
) -> SyncResult:
    """Pull a project's tasks into ``store``: incremental, paged, resumable.

    Parameters
    ----------
    source : a :class:`TaskSource` (``analysis.labelstudio.LabelStudioAPI``)
    full : ignore the watermark and fetch every task
    progress : True for a tqdm bar on stderr, or a callback receiving the number of tasks of
        each page
    project_info : stored under ``state["project"]`` (label config, title, url)
    clock_skew_s : margin subtracted from the local clock for the watermark (default
        :data:`DEFAULT_CLOCK_SKEW_S`)
    """
    t0 = time.perf_counter()
    skew = DEFAULT_CLOCK_SKEW_S if clock_skew_s is None else clock_skew_s
    run, since, resumed = _start_run(store, full, skew)
    if project_info is not None:
        store.set_state("project", project_info)
    fetched, written = _copy_pages(source, project_id, store, run, since, page_size, progress)
    deleted = _finish_run(source, project_id, store, run, since)
    res = SyncResult(fetched, written, deleted, len(store), since, resumed,
                     time.perf_counter() - t0)
    log.info("sync project %s: %s", project_id, res.to_dict())
    return res
