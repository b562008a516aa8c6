"""The one module that talks to the Label Studio API (SDK adapter).

Everything else in ner-quality receives plain JSON data (``dict`` / ``list``) from here.  The
adapter is built on :class:`label_studio_sdk.LabelStudio` (SDK 2.x), imported lazily so that
``import analysis`` works without the SDK.  Typed SDK calls are used for the writes listed in
the project notes (create project / prediction / annotation / view / ML backend, import,
actions, export); reads go through the SDK's own HTTP client (auth, base URL, retries) and
return the server's JSON unchanged, because the typed models re-serialise it (datetimes,
dropped unknown keys) and the contract here is "the task as the server has it".

Errors
------
* server unreachable (connection refused, DNS, timeout, HTTP 502/503/504):
  :class:`LabelStudioUnavailable` (a ``ConnectionError``), the URL in the message;
* any other HTTP error: :class:`LabelStudioError` (a ``ValueError``) naming the call, the id
  and the server's message (``detail`` / ``validation_errors``);
* bad arguments: ``ValueError`` / ``TypeError`` before anything is sent.

Only GETs are retried (exponential backoff, ``retries`` times); writes are sent once.

What Label Studio 1.23 supports (checked by ``tests/test_ls_api.py`` against a real server)
-------------------------------------------------------------------------------------------
* Task lists are filtered with the Data Manager ``query`` parameter of ``GET /api/tasks/``
  (``{"filters": {"conjunction": "and", "items": [...]}, "ordering": [...]}``); no view is
  needed.  ``filter:tasks:updated_at`` with operator ``greater_or_equal`` and type
  ``Datetime`` compares at microsecond precision (the value is read as a naive time in the
  server's ``TIME_ZONE``, UTC by default: pass ``updated_at`` values as the server wrote
  them), so the incremental sync (``iter_tasks(updated_since=<max updated_at seen>)``)
  returns exactly the tasks created or changed at or after that time.  Annotating a task,
  adding a prediction and writing ``task.data`` / ``task.meta`` all move its ``updated_at``
  (so ner-quality's own writes show up in the next incremental sync); deleted tasks simply
  disappear (compare :meth:`LabelStudioAPI.task_ids` to detect them).
* :meth:`LabelStudioAPI.iter_tasks` pages by id (``filter:tasks:id greater <last id>``,
  ordering ``tasks:id``, always page 1) instead of page numbers, so tasks added or changed
  during the iteration neither shift pages nor get skipped, and an interrupted iteration can
  resume with ``after_id``.  A page past the end would be HTTP 404 ("Invalid page").
* A view shows exactly a set of tasks with ``filter:tasks:id in_list [ids]`` (type
  ``Number``); its ``ordering`` (e.g. ``["-tasks:data.nerq_dep"]``) orders by a data field
  (descending; tasks without the field come last).  ``GET /api/tasks/?view=<id>`` lists them
  in that order.  ``filter:tasks:data.<field>`` ``greater`` / ``less`` work on numbers.
* ``PATCH /api/tasks/<id>/`` replaces the whole ``data`` / ``meta`` dict, hence
  :meth:`LabelStudioAPI.merge_task_fields` (read, merge, write, verify).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from analysis.labelstudio import fields as lsfields

if TYPE_CHECKING:  # the SDK is imported lazily at runtime
    from label_studio_sdk.core.request_options import RequestOptions

__all__ = [
    "LabelStudioAPI",
    "LabelStudioError",
    "LabelStudioUnavailable",
    "TaskPage",
    "data_filter",
    "REVIEW_VIEW_ORDERING",
]

logger = logging.getLogger(__name__)

#: default ordering of the views :meth:`LabelStudioAPI.upsert_view` writes: highest DEP first
REVIEW_VIEW_ORDERING: tuple[str, ...] = lsfields.DEP_ORDERING

#: import in chunks of this many tasks (one POST each)
IMPORT_CHUNK = 1000


class LabelStudioUnavailable(ConnectionError):
    """Label Studio cannot be reached (connection refused, timeout, 502/503/504)."""


class LabelStudioError(ValueError):
    """Label Studio answered a call with an HTTP error (or an answer that breaks a contract).

    Attributes
    ----------
    call : the adapter method (``"merge_task_fields"``)
    ident : what it was about (``"task 17"``, ``"project 3"``), may be empty
    status : the HTTP status, or None for a contract violation detected here
    detail : the server's message
    """

    def __init__(self, call: str, ident: str, status: int | None, detail: str) -> None:
        self.call, self.ident, self.status, self.detail = call, ident, status, detail
        where = f"{call} {ident}".strip()
        code = f"HTTP {status}: " if status is not None else ""
        super().__init__(f"Label Studio {where}: {code}{detail}")


class TaskPage(list):
    """One page of full task dicts from :meth:`LabelStudioAPI.iter_tasks` (a ``list``).

    Attributes
    ----------
    number : 1-based page number within this iteration
    total : tasks matching the query when the iteration started (for progress bars)
    last_id : id of the last task of the page (resume with ``after_id=last_id``), or None
    """

    number: int
    total: int
    last_id: int | None

    def __init__(self, tasks: Iterable[dict[str, Any]], *, number: int, total: int) -> None:
        super().__init__(tasks)
        self.number = number
        self.total = total
        self.last_id = int(self[-1]["id"]) if self else None


def data_filter(
    field: str, operator: str, value: Any, *, type: str | None = None  # noqa: A002
) -> dict[str, Any]:
    """A Data Manager filter item on ``task.data[field]`` (for ``iter_tasks(filters=...)``).

    ``type`` defaults from ``value``: ``Number`` for numbers (and ``{"min", "max"}`` ranges or
    lists of numbers), ``Boolean`` for bools, else ``String``.

    >>> data_filter("nerq_dep", "greater", 0.5)
    {'filter': 'filter:tasks:data.nerq_dep', 'operator': 'greater', 'type': 'Number', 'value': 0.5}
    """
    if not isinstance(field, str) or not field or "." in field or "__" in field:
        raise ValueError(f"data field name must be a plain key, got {field!r}")
    if type is None:
        sample = value
        if isinstance(value, Mapping):
            sample = value.get("min", value.get("max"))
        elif isinstance(value, (list, tuple)) and value:
            sample = value[0]
        if isinstance(sample, bool):
            type = "Boolean"
        elif isinstance(sample, (int, float)):
            type = "Number"
        else:
            type = "String"
    return {"filter": f"filter:tasks:data.{field}", "operator": operator, "type": type,
            "value": value}


def _canon(value: Any) -> str:
    """Canonical JSON text: equal iff same JSON value (1 != 1.0 != True)."""
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def _plain(value: Any, *, where: str) -> Any:
    """JSON-ready copy of ``value`` (numpy scalars / arrays -> Python); NaN/inf refused."""

    def default(o: Any) -> Any:
        if hasattr(o, "tolist"):  # numpy scalar or array
            return o.tolist()
        raise TypeError(f"{where}: {type(o).__name__} value {o!r} is not JSON-serialisable")

    try:
        text = json.dumps(value, default=default, allow_nan=False)
    except ValueError:
        raise ValueError(f"{where}: NaN or infinity is not valid JSON") from None
    return json.loads(text)


def _check_id(value: Any, what: str) -> int:
    if isinstance(value, bool) or not hasattr(value, "__index__"):
        if isinstance(value, str) and value.isdigit():
            return int(value)
        raise TypeError(f"{what} id must be an int, got {type(value).__name__}: {value!r}")
    v = int(value)
    if v < 0:
        raise ValueError(f"{what} id must be >= 0, got {v}")
    return v


def _ids(values: Iterable[Any], what: str) -> list[int]:
    if isinstance(values, (str, bytes, Mapping)):
        raise TypeError(f"{what} ids must be a sequence of ints, got {type(values).__name__}")
    return [_check_id(v, what) for v in values]


class LabelStudioAPI:
    """Adapter to one Label Studio server.

    Parameters
    ----------
    url : server URL, e.g. ``http://127.0.0.1:8080`` (``LABEL_STUDIO_URL``)
    api_key : legacy token or personal access (refresh) token (``LABEL_STUDIO_API_KEY``)
    timeout : seconds per HTTP request
    retries : how often an idempotent GET is retried (exponential backoff from 0.5 s) on a
        connection error or HTTP 5xx / 408 / 409 / 429

    Examples
    --------
    >>> api = LabelStudioAPI("http://127.0.0.1:9", "token", retries=0, timeout=2)
    >>> api.health()
    Traceback (most recent call last):
    ...
    analysis.labelstudio.api.LabelStudioUnavailable: Label Studio at http://127.0.0.1:9 is unreachable ...
    """

    def __init__(
        self, url: str, api_key: str, *, timeout: float = 30.0, retries: int = 3
    ) -> None:
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"Label Studio URL must start with http:// or https://, got {url!r}")
        if not isinstance(api_key, str) or not api_key.strip():
            raise ValueError("Label Studio API key is empty (set LABEL_STUDIO_API_KEY)")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        if retries < 0:
            raise ValueError(f"retries must be >= 0, got {retries}")
        try:
            import httpx
            from label_studio_sdk import LabelStudio
            from label_studio_sdk.core.api_error import ApiError
        except ImportError as exc:  # pragma: no cover - the SDK is a declared dependency
            raise ImportError(
                "the Label Studio adapter needs label-studio-sdk>=2.0 "
                "(pip install label-studio-sdk)"
            ) from exc
        self.url = url.rstrip("/")
        self.timeout = float(timeout)
        self.retries = int(retries)
        self._transport_errors: tuple[type[BaseException], ...] = (httpx.TransportError,)
        self._api_error: type[Exception] = ApiError
        self._client = LabelStudio(base_url=self.url, api_key=api_key.strip(), timeout=timeout)
        self._http = self._client._client_wrapper.httpx_client

    def __repr__(self) -> str:
        return f"LabelStudioAPI({self.url!r})"

    # ------------------------------------------------------------------ plumbing

    def _opts(self, *, idempotent: bool) -> RequestOptions:
        return {"max_retries": self.retries if idempotent else 0, "timeout": self.timeout}

    def _unavailable(self, call: str, ident: str, exc: BaseException) -> LabelStudioUnavailable:
        where = f"{call} {ident}".strip()
        return LabelStudioUnavailable(
            f"Label Studio at {self.url} is unreachable ({where}): {type(exc).__name__}: {exc}"
        )

    def _http_error(
        self, call: str, ident: str, status: int, body: Any
    ) -> LabelStudioError | LabelStudioUnavailable:
        if status in (502, 503, 504):
            where = f"{call} {ident}".strip()
            return LabelStudioUnavailable(
                f"Label Studio at {self.url} is unavailable ({where}): HTTP {status}"
            )
        detail: str
        if isinstance(body, Mapping):
            parts = []
            if body.get("detail"):
                parts.append(str(body["detail"]))
            if body.get("validation_errors"):
                parts.append(_canon(body["validation_errors"]))
            detail = "; ".join(parts) or _canon(body)
        else:
            detail = str(body).strip()
        detail = detail[:1000] or "(no message)"
        if status in (401, 403):
            detail += (
                " (check LABEL_STUDIO_API_KEY; a legacy token needs "
                "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN=true on the server)"
            )
        return LabelStudioError(call, ident, status, detail)

    def _raw(
        self,
        method: str,
        path: str,
        *,
        call: str,
        ident: str = "",
        params: Mapping[str, Any] | None = None,
        body: Any = None,
    ) -> Any:
        """One HTTP call through the SDK's client; returns the parsed JSON (or None)."""
        logger.debug("%s %s params=%s", method, path, params)
        try:
            resp = self._http.request(
                path,
                method=method,
                params=dict(params) if params else None,
                json=body,
                request_options=self._opts(idempotent=method == "GET"),
            )
        except self._transport_errors as exc:
            raise self._unavailable(call, ident, exc) from exc
        if resp.status_code >= 400:
            try:
                err_body: Any = resp.json()
            except ValueError:
                err_body = resp.text
            raise self._http_error(call, ident, resp.status_code, err_body)
        if not resp.content:
            return None
        try:
            return resp.json()
        except ValueError:
            raise LabelStudioError(call, ident, resp.status_code,
                                   f"answer is not JSON: {resp.text[:200]!r}") from None

    def _sdk(self, call: str, ident: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """A typed SDK call (a write: sent once) with the error mapping of this module."""
        kwargs.setdefault("request_options", self._opts(idempotent=False))
        try:
            return fn(*args, **kwargs)
        except self._transport_errors as exc:
            raise self._unavailable(call, ident, exc) from exc
        except self._api_error as exc:
            status = getattr(exc, "status_code", None) or 0
            raise self._http_error(call, ident, int(status), getattr(exc, "body", None)) from None

    # ------------------------------------------------------------------ server, projects

    def health(self) -> dict[str, Any]:
        """``GET /health``; the server's JSON (``{"status": "UP"}``)."""
        out = self._raw("GET", "health", call="health")
        if not isinstance(out, Mapping) or out.get("status") != "UP":
            raise LabelStudioUnavailable(f"Label Studio at {self.url} is not UP: {out!r}")
        return dict(out)

    def create_project(self, title: str, label_config: str) -> int:
        """Create a project; returns its id."""
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"project title must be a non-empty string, got {title!r}")
        if not isinstance(label_config, str) or "<View" not in label_config:
            raise ValueError("label_config must be a Label Studio labeling config XML (<View>...)")
        p = self._sdk("create_project", repr(title), self._client.projects.create,
                      title=title, label_config=label_config)
        return int(p.id)

    def get_project(self, pid: int) -> dict[str, Any]:
        """The project as JSON (``id``, ``title``, ``label_config``, ``model_version``, ...)."""
        pid = _check_id(pid, "project")
        out: dict[str, Any] = self._raw("GET", f"api/projects/{pid}/", call="get_project",
                                        ident=f"project {pid}")
        return out

    def delete_project(self, pid: int) -> None:
        """Delete a project with all its tasks (tests and demo clean-up)."""
        pid = _check_id(pid, "project")
        self._raw("DELETE", f"api/projects/{pid}/", call="delete_project", ident=f"project {pid}")

    def set_model_version(self, pid: int, version: str) -> None:
        """Set ``project.model_version`` (what ``predictions_score`` averages over).

        Label Studio 1.23 accepts only a version that exists: the connected ML backend's, or
        one that stored predictions carry (HTTP 400 otherwise).
        """
        pid = _check_id(pid, "project")
        if not isinstance(version, str):
            raise TypeError(f"model version must be a string, got {type(version).__name__}")
        self._raw("PATCH", f"api/projects/{pid}/", call="set_model_version",
                  ident=f"project {pid}", body={"model_version": version})

    # ------------------------------------------------------------------ tasks

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
        where = f"task {tid}"
        if data is not None:
            lsfields.check_data_keys(data, where=where)
            data = _plain(dict(data), where=f"{where} data")
        if meta is not None:
            lsfields.check_meta_keys(meta, where=where)
            meta = _plain(dict(meta), where=f"{where} meta")
        current = self.get_task(tid)
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
            return current
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

    # ------------------------------------------------------------------ predictions, annotations

    def create_prediction(
        self,
        tid: int,
        result: Sequence[Mapping[str, Any]],
        *,
        score: float,
        model_version: str,
        replace: bool = False,
    ) -> int:
        """Add a prediction to a task; returns its id.

        ``replace=True`` first deletes this task's predictions with the same
        ``model_version`` (ner-quality's own), so re-pushing does not duplicate them.
        """
        tid = _check_id(tid, "task")
        where = f"task {tid}"
        if isinstance(result, Mapping) or not isinstance(result, Sequence):
            raise TypeError(f"{where}: prediction result must be a list of regions")
        for i, r in enumerate(result):
            if not isinstance(r, Mapping):
                raise TypeError(f"{where}: prediction region #{i} is a {type(r).__name__}")
        s = float(score)
        if not math.isfinite(s):
            raise ValueError(f"{where}: prediction score must be finite, got {score!r}")
        if not isinstance(model_version, str) or not model_version:
            raise ValueError(f"{where}: model_version must be a non-empty string")
        if replace:
            for p in self.list_predictions(tid):
                if p.get("model_version") == model_version:
                    self.delete_prediction(int(p["id"]))
        p = self._sdk("create_prediction", where, self._client.predictions.create, task=tid,
                      result=_plain(list(result), where=f"{where} prediction"), score=s,
                      model_version=model_version)
        return int(p.id)

    def list_predictions(self, tid: int) -> list[dict[str, Any]]:
        """The task's predictions as JSON (``id``, ``result``, ``score``, ``model_version``)."""
        tid = _check_id(tid, "task")
        out = self._raw("GET", "api/predictions/", call="list_predictions", ident=f"task {tid}",
                        params={"task": tid})
        return [p for p in (out or []) if int(p.get("task", tid)) == tid]

    def delete_prediction(self, pred_id: int) -> None:
        """Delete one prediction (callers only delete their own)."""
        pred_id = _check_id(pred_id, "prediction")
        self._raw("DELETE", f"api/predictions/{pred_id}/", call="delete_prediction",
                  ident=f"prediction {pred_id}")

    def create_annotation(self, tid: int, result: Sequence[Mapping[str, Any]]) -> int:
        """Create an annotation as the token's user (tests and demo simulate annotators)."""
        tid = _check_id(tid, "task")
        where = f"task {tid}"
        if isinstance(result, Mapping) or not isinstance(result, Sequence):
            raise TypeError(f"{where}: annotation result must be a list of regions")
        a = self._sdk("create_annotation", where, self._client.annotations.create, tid,
                      result=_plain(list(result), where=f"{where} annotation"))
        return int(a.id)

    # ------------------------------------------------------------------ views

    def list_views(self, pid: int) -> list[dict[str, Any]]:
        """Data Manager views (tabs) of a project: ``id``, ``data`` (title, filters, ordering)."""
        pid = _check_id(pid, "project")
        out = self._raw("GET", "api/dm/views/", call="list_views", ident=f"project {pid}",
                        params={"project": pid})
        return [v for v in (out or []) if int(v.get("project", pid)) == pid]

    def upsert_view(
        self,
        pid: int,
        title: str,
        *,
        task_ids: Sequence[int],
        ordering: Sequence[str] = REVIEW_VIEW_ORDERING,
    ) -> int:
        """Create or update the view titled ``title`` to show exactly ``task_ids``.

        Filter ``filter:tasks:id in_list task_ids``, ordered by ``ordering`` (default: highest
        ``nerq_dep`` first).  Extra views with the same title are deleted.  An empty
        ``task_ids`` gives an empty view.  Returns the view id.
        """
        pid = _check_id(pid, "project")
        if not isinstance(title, str) or not title.strip():
            raise ValueError(f"project {pid}: view title must be a non-empty string")
        ids = _ids(task_ids, "task")
        if isinstance(ordering, str):
            raise TypeError(
                f"project {pid}: ordering must be a list like {list(REVIEW_VIEW_ORDERING)}"
            )
        # id 0 never exists: an empty in_list would not filter at all
        value = ids if ids else [0]
        view = {
            "title": title,
            "filters": {"conjunction": "and", "items": [
                {"filter": "filter:tasks:id", "operator": "in_list", "type": "Number",
                 "value": value}]},
            "ordering": list(ordering),
        }
        same = [v for v in self.list_views(pid) if (v.get("data") or {}).get("title") == title]
        ident = f"project {pid} view {title!r}"
        if same:
            vid = int(same[0]["id"])
            self._sdk("upsert_view", ident, self._client.views.update, str(vid), project=pid,
                      data=view)
            for extra in same[1:]:
                self.delete_view(int(extra["id"]))
            return vid
        v = self._sdk("upsert_view", ident, self._client.views.create, project=pid, data=view)
        return int(v.id)

    def view_task_ids(self, view_id: int, *, page_size: int = 1000) -> list[int]:
        """Ids of the tasks a view shows, in the view's order."""
        view_id = _check_id(view_id, "view")
        ids: list[int] = []
        page = 1
        while True:
            out = self._raw("GET", "api/tasks/", call="view_task_ids", ident=f"view {view_id}",
                            params={"view": view_id, "page": page, "page_size": page_size,
                                    "include": "id"})
            got = [int(t["id"]) for t in out.get("tasks", [])]
            ids.extend(got)
            if not got or len(ids) >= int(out.get("total", 0)):
                return ids
            page += 1

    def delete_view(self, view_id: int) -> None:
        """Delete a view."""
        view_id = _check_id(view_id, "view")
        self._raw("DELETE", f"api/dm/views/{view_id}/", call="delete_view",
                  ident=f"view {view_id}")

    # ------------------------------------------------------------------ ML backend, webhooks

    def connect_ml_backend(
        self, pid: int, url: str, *, title: str, is_interactive: bool = False
    ) -> int:
        """Connect an ML backend to a project (reuses one already connected at ``url``).

        Label Studio calls the backend's ``/health`` and ``/setup`` while connecting; a
        backend on 127.0.0.1 needs ``LABEL_STUDIO_ML_BLOCK_LOCAL_IP=false`` and
        ``LABEL_STUDIO_SSRF_PROTECTION_ENABLED=false`` on the server.  Returns its id.
        """
        pid = _check_id(pid, "project")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ValueError(f"project {pid}: ML backend URL must be http(s)://..., got {url!r}")
        ident = f"project {pid} backend {url}"
        have = self._raw("GET", "api/ml/", call="connect_ml_backend", ident=ident,
                         params={"project": pid}) or []
        for b in have:
            same_url = str(b.get("url", "")).rstrip("/") == url.rstrip("/")
            if same_url and int(b.get("project", pid)) == pid:
                return int(b["id"])
        m = self._sdk("connect_ml_backend", ident, self._client.ml.create, project=pid, url=url,
                      title=title, is_interactive=is_interactive)
        return int(m.id)

    def retrieve_predictions(self, pid: int, task_ids: Sequence[int]) -> dict[str, Any]:
        """Run the Data Manager action "Retrieve predictions" on these tasks.

        Label Studio sends them to the connected ML backend's ``/predict`` in one request and
        stores the replies as predictions.  Returns the server's answer.
        """
        pid = _check_id(pid, "project")
        ids = _ids(task_ids, "task")
        if not ids:
            return {"processed_items": 0}
        out = self._raw("POST", "api/dm/actions", call="retrieve_predictions",
                        ident=f"project {pid}",
                        params={"id": "retrieve_tasks_predictions", "project": pid},
                        body={"selectedItems": {"all": False, "included": ids}})
        return dict(out) if isinstance(out, Mapping) else {"answer": out}

    def list_webhooks(self, pid: int) -> list[dict[str, Any]]:
        """Webhooks of a project (Label Studio creates one at ``<backend>/webhook``)."""
        pid = _check_id(pid, "project")
        out = self._raw("GET", "api/webhooks/", call="list_webhooks", ident=f"project {pid}",
                        params={"project": pid})
        return [w for w in (out or []) if w.get("project") in (None, pid)]
