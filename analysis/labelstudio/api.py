"""The one Label Studio adapter: :class:`LabelStudioAPI` (predictions, annotations, views,
ML backends, webhooks here; tasks in :mod:`.tasks`; plumbing and projects in :mod:`.client`)."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

from analysis.labelstudio.client import (
    REVIEW_VIEW_ORDERING,
    LabelStudioError,
    LabelStudioUnavailable,
    TaskPage,
    _check_id,
    _ids,
    _plain,
    data_filter,
)
from analysis.labelstudio.tasks import TasksMixin

__all__ = ["LabelStudioAPI", "LabelStudioError", "LabelStudioUnavailable", "TaskPage",
           "data_filter", "REVIEW_VIEW_ORDERING"]

logger = logging.getLogger(__name__)


class LabelStudioAPI(TasksMixin):
    """Adapter to one Label Studio server (see :class:`analysis.labelstudio.client.Client` for
    the parameters and error contract)."""

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
