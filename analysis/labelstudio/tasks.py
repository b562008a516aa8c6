"""Tasks of a project through the adapter: import, read (paged by id), export, field writes."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from analysis.labelstudio import fields as lsfields
from analysis.labelstudio.client import (
    IMPORT_CHUNK,
    Client,
    LabelStudioError,
    TaskPage,
    _canon,
    _check_id,
    _plain,
)

__all__ = ["TasksMixin"]

logger = logging.getLogger(__name__)


class TasksMixin(Client):
    """The task calls of :class:`analysis.labelstudio.LabelStudioAPI`."""

    def import_tasks(
        self, pid: int, tasks: Sequence[Mapping[str, Any]], *, chunk: int = IMPORT_CHUNK
    ) -> list[int]:
        """Import tasks; returns the new task ids in input order.

        Each item is either a plain data dict (``{"text": ...}``) or a full task
        (``{"data": {...}, "annotations": [...], "predictions": [...], "meta": {...}}``).
        Sent in chunks of ``chunk`` tasks (one POST each): a failure part-way leaves the
        earlier chunks imported (the error says how many).
        """
        pid = _check_id(pid, "project")
        if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence):
            raise TypeError(f"project {pid}: tasks must be a list of dicts")
        for i, t in enumerate(tasks):
            if not isinstance(t, Mapping):
                raise TypeError(f"project {pid}: task #{i} is a {type(t).__name__}, not a dict")
        payload = _plain(list(tasks), where=f"project {pid} import")
        ids: list[int] = []
        for k in range(0, len(payload), max(1, chunk)):
            part = payload[k : k + max(1, chunk)]
            ident = f"project {pid} (tasks {k}..{k + len(part) - 1}; {len(ids)} imported before)"
            r = self._sdk("import_tasks", ident, self._client.projects.import_tasks,
                          pid, request=part, return_task_ids=True)
            got = [int(i) for i in (getattr(r, "task_ids", None) or [])]
            if len(got) != len(part):
                raise LabelStudioError("import_tasks", ident, None,
                                       f"sent {len(part)} tasks, server returned {len(got)} ids")
            ids.extend(got)
        return ids

    def get_task(self, tid: int) -> dict[str, Any]:
        """One full task (``data``, ``meta``, ``annotations``, ``predictions``, ...)."""
        tid = _check_id(tid, "task")
        out: dict[str, Any] = self._raw("GET", f"api/tasks/{tid}/", call="get_task",
                                        ident=f"task {tid}")
        return out

    def _task_query(
        self,
        pid: int,
        *,
        page_size: int,
        after_id: int | None,
        items: Sequence[Mapping[str, Any]],
        extra: Mapping[str, Any],
        call: str,
    ) -> dict[str, Any]:
        its = list(items)
        if after_id is not None:
            its.append({"filter": "filter:tasks:id", "operator": "greater", "type": "Number",
                        "value": after_id})
        query: dict[str, Any] = {"ordering": ["tasks:id"]}
        if its:
            query["filters"] = {"conjunction": "and", "items": its}
        params = {"project": pid, "page": 1, "page_size": page_size, "query": _canon(query),
                  **extra}
        out: dict[str, Any] = self._raw("GET", "api/tasks/", call=call, ident=f"project {pid}",
                                        params=params)
        if not isinstance(out, Mapping) or not isinstance(out.get("tasks"), list):
            raise LabelStudioError(call, f"project {pid}", None,
                                   f"unexpected task list answer: {str(out)[:200]}")
        return dict(out)

    def iter_tasks(
        self,
        pid: int,
        *,
        page_size: int = 100,
        updated_since: str | None = None,
        updated_after: str | None = None,
        after_id: int | None = None,
        filters: Sequence[Mapping[str, Any]] = (),
        fields: str = "all",
    ) -> Iterator[TaskPage]:
        """Full tasks of a project in id order, one :class:`TaskPage` (a list) at a time.

        Parameters
        ----------
        page_size : tasks per request
        updated_since : ISO time (as in ``task["updated_at"]``): only tasks with
            ``updated_at >= updated_since`` (created, annotated, predicted, or whose
            data/meta changed).  Pass the largest ``updated_at`` seen by the
            previous sync.  ``updated_after`` is an alias (``analysis.labelstudio.store.TaskSource``).
        after_id : only tasks with a larger id (resume an interrupted iteration with the
            ``last_id`` of the last page processed)
        filters : extra Data Manager filter items (see :func:`data_filter`), and-ed
        fields : ``"all"`` (annotations and predictions included) or ``"task_only"``

        Yields
        ------
        TaskPage : ``list[dict]`` with ``.number``, ``.total`` (matching tasks at the start)
            and ``.last_id``
        """
        pid = _check_id(pid, "project")
        if isinstance(page_size, bool) or not isinstance(page_size, int) or page_size < 1:
            raise ValueError(f"page_size must be a positive int, got {page_size!r}")
        if updated_since is not None and updated_after is not None:
            raise TypeError("pass updated_since or its alias updated_after, not both")
        since = updated_since if updated_since is not None else updated_after
        items = [dict(f) for f in filters]
        if since is not None:
            if not isinstance(since, str) or not since[:4].isdigit():
                raise ValueError(f"updated_since must be an ISO time string, got {since!r}")
            items.append({"filter": "filter:tasks:updated_at", "operator": "greater_or_equal",
                          "type": "Datetime", "value": since})
        last = None if after_id is None else _check_id(after_id, "task")
        total: int | None = None
        number = 0
        while True:
            out = self._task_query(pid, page_size=page_size, after_id=last, items=items,
                                   extra={"fields": fields}, call="iter_tasks")
            tasks = out["tasks"]
            remaining = int(out.get("total", len(tasks)))
            if total is None:
                total = remaining
            if not tasks:
                return
            number += 1
            page = TaskPage(tasks, number=number, total=total)
            logger.debug("project %s: task page %d (%d tasks, %d remaining)", pid, number,
                         len(tasks), remaining - len(tasks))
            yield page
            if remaining <= len(tasks):
                return
            last = page.last_id

    def task_ids(self, pid: int, *, page_size: int = 1000) -> list[int]:
        """Every task id of a project, ascending (to detect deletions)."""
        pid = _check_id(pid, "project")
        ids: list[int] = []
        last: int | None = None
        while True:
            out = self._task_query(pid, page_size=page_size, after_id=last, items=(),
                                   extra={"include": "id"}, call="task_ids")
            got = [int(t["id"]) for t in out["tasks"]]
            ids.extend(got)
            if not got or int(out.get("total", len(got))) <= len(got):
                return ids
            last = got[-1]

    def export_tasks(self, pid: int, *, timeout: float = 600.0) -> list[dict[str, Any]]:
        """Full JSON export of a project (annotations and predictions as objects, not ids).

        Creates an export snapshot, waits for it (up to ``timeout`` s), downloads it and
        deletes the snapshot.
        """
        pid = _check_id(pid, "project")
        ident = f"project {pid}"
        exports = self._client.projects.exports
        snap = self._sdk("export_tasks", ident, exports.create, pid,
                         title="ner-quality export",
                         serialization_options={"predictions": {"only_id": False}})
        deadline = time.monotonic() + timeout
        delay = 0.2
        try:
            while True:
                status = str(getattr(snap, "status", "") or "")
                if status.endswith("completed"):
                    break
                if status.endswith("failed"):
                    raise LabelStudioError("export_tasks", ident, None,
                                           f"export snapshot {snap.id} failed")
                if time.monotonic() > deadline:
                    raise LabelStudioError("export_tasks", ident, None,
                                           f"export snapshot {snap.id} not ready after {timeout} s")
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
                snap = self._sdk("export_tasks", ident, exports.get, pid, snap.id,
                                 request_options=self._opts(idempotent=True))
            chunks = self._sdk("export_tasks", ident,
                               lambda **kw: b"".join(exports.download(pid, snap.id, **kw)),
                               export_type="JSON", request_options=self._opts(idempotent=True))
        finally:
            try:
                exports.delete(pid, snap.id, request_options=self._opts(idempotent=False))
            except Exception as exc:  # noqa: BLE001 - cleanup only
                logger.debug("project %s: could not delete export snapshot: %s", pid, exc)
        try:
            data = json.loads(chunks)
        except ValueError:
            raise LabelStudioError("export_tasks", ident, None, "export is not JSON") from None
        if not isinstance(data, list):
            raise LabelStudioError("export_tasks", ident, None, "export is not a JSON list")
        return data

    def merge_task_fields(
        self,
        tid: int,
        *,
        data: Mapping[str, Any] | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Read-merge-write ner-quality's fields into a task, keeping everything else.

        ``data`` keys must start with ``nerq_``; ``meta`` may only hold the key
        ``"ner_quality"`` (:mod:`analysis.labelstudio.fields`).  Given keys replace the task's values
        (top level); every other ``data`` / ``meta`` key, annotations and predictions are
        untouched.  When nothing would change, nothing is written (``updated_at`` stays).
        After the write, the server's answer is checked: every original data field must come
        back identical (as canonical JSON) and the new values must be there; otherwise
        :class:`LabelStudioError`.

        Returns
        -------
        the task as the server has it after the merge
        """
        tid = _check_id(tid, "task")
        data, meta = _checked_fields(tid, data, meta)
        return self._merge_into(self.get_task(tid), data, meta)

    def tasks_by_id(self, pid: int, ids: Sequence[int], *, page_size: int = 100,
                    fields: str = "all") -> dict[int, dict[str, Any]]:
        """Full tasks of project ``pid`` by id, read through the task list in pages.

        Unlike ``GET /api/tasks/<id>`` the list does not make Label Studio 1.23 call the ML
        backend for tasks without a prediction (unless the deprecated project setting
        ``evaluate_predictions_automatically`` is on; then once per page).  Ids that are not in
        the project are missing from the answer.
        """
        pid = _check_id(pid, "project")
        want = sorted({_check_id(t, "task") for t in ids})
        out: dict[int, dict[str, Any]] = {}
        for a in range(0, len(want), page_size):
            chunk = want[a:a + page_size]
            flt = [{"filter": "filter:tasks:id", "operator": "in_list", "type": "Number",
                    "value": chunk}]
            for page in self.iter_tasks(pid, page_size=len(chunk), filters=flt, fields=fields):
                out.update({int(t["id"]): t for t in page})
        return out

    def merge_many_task_fields(
        self,
        pid: int,
        updates: Mapping[int, tuple[Mapping[str, Any] | None, Mapping[str, Any] | None]],
        *,
        page_size: int = 100,
        workers: int = 4,
    ) -> Merged:
        """:meth:`merge_task_fields` for many tasks of one project, read in pages.

        The current tasks are read through the task *list* (``filter:tasks:id in_list``,
        ``fields=task_only``), ``page_size`` at a time — never through ``GET /api/tasks/<id>``,
        which makes Label Studio 1.23 call the ML backend for a task without a prediction — and
        each is then written with one PATCH (only when something changes), ``workers`` PATCHes
        at a time.

        Returns
        -------
        :class:`Merged`: tasks written, task ids already up to date (nothing sent), and the
        :class:`LabelStudioError` of each task that failed (deleted task, bad server answer).
        A connection failure raises for the whole batch.
        """
        pid = _check_id(pid, "project")
        checked = {_check_id(tid, "task"): _checked_fields(tid, d, m)
                   for tid, (d, m) in updates.items()}
        ids = sorted(checked)
        current = self.tasks_by_id(pid, ids, page_size=page_size, fields="task_only")
        out = Merged()
        present = [tid for tid in ids if tid in current]
        for tid in ids:
            if tid not in current:
                out.failed[tid] = LabelStudioError(
                    "merge_many_task_fields", f"task {tid}", 404,
                    f"task {tid} is not in project {pid} (deleted?)")

        def one(tid: int) -> tuple[int, dict[str, Any] | LabelStudioError]:
            try:
                return tid, self._merge_into(current[tid], *checked[tid])
            except LabelStudioError as exc:
                return tid, exc

        # the PATCHes run ``workers`` at a time: Label Studio's per-request cost is mostly
        # waiting (its database commit), which concurrent requests overlap; a connection
        # failure raises out of the pool for the whole batch
        if workers > 1 and len(present) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=min(workers, len(present))) as pool:
                done = list(pool.map(one, present))
        else:
            done = [one(tid) for tid in present]
        for tid, res in done:
            if isinstance(res, LabelStudioError):
                out.failed[tid] = res
            elif res is current[tid]:
                out.unchanged.add(tid)
            else:
                out.written[tid] = res
        return out

    def _merge_into(self, current: dict[str, Any], data: dict[str, Any] | None,
                    meta: dict[str, Any] | None) -> dict[str, Any]:
        """Merge ``data`` / ``meta`` into the task ``current`` as read from the server."""
        tid = int(current["id"])
        where = f"task {tid}"
        old_data = current.get("data")
        old_meta = current.get("meta")
        if old_meta is None:
            old_meta = {}
        if not isinstance(old_data, dict):
            raise LabelStudioError("merge_task_fields", where, None,
                                   f"task data is a {type(old_data).__name__}, not an object")
        if not isinstance(old_meta, dict):
            raise LabelStudioError("merge_task_fields", where, None,
                                   f"task meta is a {type(old_meta).__name__}, not an object")
        payload: dict[str, Any] = {}
        new_data = {**old_data, **(data or {})}
        new_meta = {**old_meta, **(meta or {})}
        if _canon(new_data) != _canon(old_data):
            payload["data"] = new_data
        if _canon(new_meta) != _canon(old_meta):
            payload["meta"] = new_meta
        if not payload:
            logger.debug("%s: fields already up to date, nothing written", where)
            return current  # the same object: "unchanged"
        out = self._raw("PATCH", f"api/tasks/{tid}/", call="merge_task_fields", ident=where,
                        body=payload)
        if not isinstance(out, dict) or "data" not in out or "meta" not in out:
            out = self.get_task(tid)
        got_data, got_meta = out.get("data") or {}, out.get("meta") or {}
        bad = [k for k, v in new_data.items()
               if k not in got_data or _canon(got_data[k]) != _canon(v)]
        bad += [k for k in got_data if k not in new_data]
        bad_meta = [k for k, v in new_meta.items()
                    if k not in got_meta or _canon(got_meta[k]) != _canon(v)]
        if bad or bad_meta:
            raise LabelStudioError(
                "merge_task_fields", where, None,
                f"the server's task differs after the write: data fields {sorted(bad)}, "
                f"meta keys {sorted(bad_meta)}",
            )
        return dict(out)


@dataclass
class Merged:
    """Outcome of :meth:`TasksMixin.merge_many_task_fields` (task id keyed)."""

    written: dict[int, dict[str, Any]] = field(default_factory=dict)
    unchanged: set[int] = field(default_factory=set)
    failed: dict[int, LabelStudioError] = field(default_factory=dict)


def _checked_fields(tid: int, data: Mapping[str, Any] | None, meta: Mapping[str, Any] | None
                    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """The fields ner-quality may write, as plain JSON (names checked)."""
    where = f"task {tid}"
    out_data = out_meta = None
    if data is not None:
        lsfields.check_data_keys(data, where=where)
        out_data = _plain(dict(data), where=f"{where} data")
    if meta is not None:
        lsfields.check_meta_keys(meta, where=where)
        out_meta = _plain(dict(meta), where=f"{where} meta")
    return out_data, out_meta
