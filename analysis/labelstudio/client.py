"""The Label Studio adapter's plumbing: errors, HTTP calls through the SDK, projects.

The adapter (:class:`analysis.labelstudio.LabelStudioAPI`) is split by what it talks about:
this module (errors, requests, projects), :mod:`.tasks` (tasks, export, field writes) and
:mod:`.api` (predictions, annotations, views, ML backends, webhooks).

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
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from analysis.labelstudio import fields as lsfields

if TYPE_CHECKING:  # the SDK is imported lazily at runtime
    from label_studio_sdk.core.request_options import RequestOptions

__all__ = ["Client", "LabelStudioError", "LabelStudioUnavailable", "TaskPage", "data_filter",
           "REVIEW_VIEW_ORDERING", "IMPORT_CHUNK"]

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


class Client:
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
    >>> from analysis.labelstudio import LabelStudioAPI
    >>> api = LabelStudioAPI("http://127.0.0.1:9", "token", retries=0, timeout=2)
    >>> api.health()
    Traceback (most recent call last):
    ...
    analysis.labelstudio.client.LabelStudioUnavailable: Label Studio at http://127.0.0.1:9 is unreachable ...
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

    # ------------------------------------------------------------------ users

    def list_users(self) -> list[dict[str, Any]]:
        """The users of the organisation (``id``, ``email``, ``username``, ...)."""
        out = self._raw("GET", "api/users/", call="list_users")
        if isinstance(out, Mapping):  # paginated answers
            out = out.get("results", [])
        return [dict(u) for u in out or []]

    def ensure_users(self, emails: Sequence[str]) -> dict[str, int]:
        """Make sure a user exists for each email (created in the organisation when missing,
        ``POST /api/users/``, without a password: an annotator account an admin can invite);
        returns email -> user id.  Import annotations with ``completed_by: {"email": ...}``
        to credit them to these users."""
        for e in emails:
            if not isinstance(e, str) or "@" not in e:
                raise ValueError(f"user email must look like name@host, got {e!r}")
        have = {str(u.get("email")): int(u["id"]) for u in self.list_users()}
        for e in emails:
            if e in have:
                continue
            name = e.split("@", 1)[0]
            u = self._raw("POST", "api/users/", call="create_user", ident=repr(e),
                          body={"email": e, "username": e, "first_name": name.title(),
                                "last_name": ""})
            have[e] = int(u["id"])
        return {e: have[e] for e in emails}

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
