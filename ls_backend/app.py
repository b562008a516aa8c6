"""The Label Studio ML-backend HTTP app (Flask), speaking Label Studio 1.23's protocol.

Routes and JSON contract are those of ``label-studio-ml`` (which is not used: its PyPI release
pins Flask 1.1.2), implemented on current Flask:

==================  =======================================================================
``GET /health``     ``{"status": "UP", "model_class", "projects": {pid: {model_version, train}}}``
``POST /setup``     ``{project: "<pid>.<ts>", schema: <label config XML>, ...}`` → ``{model_version}``
``POST /predict``   ``{tasks, project, label_config, params}`` → ``{results: [...]}`` one per task
``POST /webhook``   ``{action, annotation, task, project}`` → answered at once, work queued
``POST /train``     legacy training call (``{annotations, project, label_config}``)
``GET /versions``   ``{versions: [...], model_version}`` (project from JSON body or ``?project=``)
``GET /status``     queue, per-project train status and versions, recent errors
                    (also ``/train_status``; ``?project=`` narrows it)
``GET /score``      ``?project=&task=``: the last scores computed for a task (debugging)
``POST /probe``     ``{"project", "text"[, "top_k", "low_confidence"]}``: per-word tags, probabilities,
                    subwords of a free text with the serving model (``ner-quality probe``)
==================  =======================================================================

Every error is a JSON ``{"error": message}`` with a 4xx/5xx status and a log line; the server
keeps serving.  With ``BASIC_AUTH_USER``/``BASIC_AUTH_PASS`` set every route requires them.
The app is thin: validation and routing here, the work in :mod:`.jobs` and :mod:`.scoring`.
Creating the app loads no model and opens no connection.
"""

from __future__ import annotations

import hmac
import logging
import time
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from analysis.exceptions import DataError

from .service.backend import Backend
from .service.errors import (
    Busy,
    LabelMismatch,
    NoLabelStudio,
    QueueFull,
    TaskError,
    UnknownProject,
)
from .service.state import project_id
from .settings import Settings

logger = logging.getLogger(__name__)

__all__ = ["create_app"]


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _json_body() -> dict[str, Any]:
    if not request.get_data(cache=True):
        raise ApiError(400, f"{request.path}: empty request body; expected a JSON object")
    try:
        body = request.get_json(silent=True, force=True)
    except RecursionError:
        raise ApiError(400, f"{request.path}: request JSON is nested too deeply") from None
    if body is None:
        raise ApiError(400, f"{request.path}: request body is not valid JSON")
    if not isinstance(body, dict):
        raise ApiError(400, f"{request.path}: expected a JSON object, got {type(body).__name__}")
    return body


def _request_chars(tasks: list[Any]) -> int:
    """Characters of text in a /predict request (every string value of each task's data)."""
    n = 0
    for t in tasks:
        data = t.get("data") if isinstance(t, dict) else None
        if isinstance(data, dict):
            n += sum(len(v) for v in data.values() if isinstance(v, str))
    return n


def _guards(app: Flask, settings: Settings, backend: Backend) -> None:
    """Basic auth on every route, and the mapping of errors to JSON answers."""

    @app.before_request
    def _auth() -> Response | None:
        request.environ["nerq.t0"] = time.perf_counter()
        if not settings.auth_enabled:
            return None
        auth = request.authorization
        # bytes, not str: compare_digest refuses non-ASCII str (a 'pässwort' locked everyone out)
        ok = (
            auth is not None
            and auth.type == "basic"
            and hmac.compare_digest((auth.username or "").encode("utf-8", "surrogatepass"),
                                    (settings.basic_auth_user or "").encode("utf-8"))
            and hmac.compare_digest((auth.password or "").encode("utf-8", "surrogatepass"),
                                    (settings.basic_auth_pass or "").encode("utf-8"))
        )
        if ok:
            return None
        logger.warning("%s %s: rejected, bad or missing basic auth", request.method, request.path)
        resp = jsonify({"error": "authentication required"})
        resp.status_code = 401
        resp.headers["WWW-Authenticate"] = 'Basic realm="ner-quality"'
        return resp

    @app.errorhandler(ApiError)
    def _api_error(exc: ApiError) -> tuple[Response, int]:
        logger.warning("%s %s -> %d: %s", request.method, request.path, exc.status, exc)
        return jsonify({"error": str(exc)}), exc.status

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException) -> tuple[Response, int]:
        code = exc.code or 500
        logger.warning("%s %s -> %d: %s", request.method, request.path, code, exc.description)
        return jsonify({"error": f"{request.path}: {exc.description}"}), code

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception) -> tuple[Response, int]:
        # domain errors, most specific first; anything else is a bug: logged with its
        # traceback and answered 500, never passed off as the client's fault
        from analysis.labelstudio import LabelStudioError

        if isinstance(exc, Busy):
            resp, code = _api_error(ApiError(503, str(exc)))
            resp.headers["Retry-After"] = "10"
            return resp, code
        for kind, status in ((LabelMismatch, 409), (UnknownProject, 404), (TaskError, 422),
                             (QueueFull, 503),
                             (NoLabelStudio, 503), (DataError, 400)):
            if isinstance(exc, kind):
                return _api_error(ApiError(status, str(exc)))
        if isinstance(exc, (ConnectionError, LabelStudioError)):
            return _api_error(ApiError(502, f"Label Studio: {exc}"))
        logger.exception("%s %s: unexpected error", request.method, request.path)
        return jsonify({"error": f"internal error: {type(exc).__name__}: {exc}"}), 500

    @app.after_request
    def _log(resp: Response) -> Response:
        t0 = request.environ.get("nerq.t0")
        if t0 is not None:
            ms = 1000 * (time.perf_counter() - t0)
            logger.debug("%s %s %d %.1f ms", request.method, request.path, resp.status_code, ms)
            if request.path == "/webhook":
                backend.record_webhook_ms(ms)
        return resp


def _protocol_routes(app: Flask, backend: Backend, settings: Settings) -> None:
    """The ML-backend protocol Label Studio speaks: health, setup, predict, webhook, train."""

    @app.get("/")
    @app.get("/health")
    def health() -> Response:
        return jsonify(backend.health())

    @app.post("/setup")
    def setup() -> Response:
        body = _json_body()
        if "project" not in body:
            raise ApiError(400, "setup: missing 'project'")
        schema = body.get("schema") or body.get("label_config")
        if schema is not None and not isinstance(schema, str):
            raise ApiError(400, "setup: 'schema' must be the label config XML string")
        st, _ = backend.ensure_project(project_id(body["project"]), schema)
        return jsonify({"model_version": st.model_version})

    @app.post("/predict")
    def predict() -> Response:
        body = _json_body()
        tasks = body.get("tasks")
        if tasks is None:
            raise ApiError(400, "predict: missing 'tasks' (a list of Label Studio tasks)")
        if not isinstance(tasks, list):
            raise ApiError(400, f"predict: 'tasks' must be a list, got {type(tasks).__name__}")
        if not tasks:
            raise ApiError(400, "predict: 'tasks' is empty; send at least one task")
        if len(tasks) > settings.max_tasks_per_request:
            raise ApiError(413, f"predict: {len(tasks)} tasks, more than MAX_TASKS_PER_REQUEST="
                                f"{settings.max_tasks_per_request}")
        n_chars = _request_chars(tasks)
        if n_chars > settings.max_request_chars:
            raise ApiError(413, f"predict: {len(tasks)} task(s) with {n_chars} characters of "
                                f"text, more than MAX_REQUEST_CHARS={settings.max_request_chars}; "
                                f"send fewer tasks per request")
        project = body.get("project")
        if project is None:
            ids = {t.get("project") for t in tasks if isinstance(t, dict)} - {None}
            if len(ids) != 1:
                raise ApiError(400, "predict: missing 'project'")
            project = ids.pop()
        label_config = body.get("label_config")
        if label_config is not None and not isinstance(label_config, str):
            raise ApiError(400, "predict: 'label_config' must be the label config XML string")
        t0 = time.perf_counter()
        results = backend.predict(project_id(project), tasks, label_config)
        logger.info("predict: project %s, %d task(s), %d error(s) in %.3f s",
                    project_id(project), len(tasks),
                    sum(1 for r in results if "error" in r), time.perf_counter() - t0)
        return jsonify({"results": results})

    @app.post("/webhook")
    def webhook() -> tuple[Response, int]:
        reply, status = backend.webhook(_json_body())
        if reply.get("status") != "ignored":
            logger.info("webhook %s project %s -> %s", reply.get("action"), reply.get("project"),
                        {k: v for k, v in reply.items() if k in ("task", "scoring", "train")})
        return jsonify(reply), status

    @app.post("/train")
    def train() -> tuple[Response, int]:
        body = _json_body()
        if "project" not in body:
            raise ApiError(400, "train: missing 'project'")
        pid = project_id(body["project"])
        backend.ensure_project(pid, body.get("label_config"))
        tasks = body.get("annotations")
        if tasks is not None and not isinstance(tasks, list):
            raise ApiError(400, "train: 'annotations' must be a list of tasks")
        status = backend.start_training(pid, reason="/train", tasks=tasks)
        return jsonify({"status": "ok", "project": pid, "train": status}), 201



def _ops_routes(app: Flask, backend: Backend) -> None:
    """Versions, status and last scores (operators and debugging)."""

    @app.get("/versions")
    def versions() -> Response:
        body = request.get_json(silent=True, force=True) if request.get_data() else None
        pid = request.args.get("project") or (body.get("project") if isinstance(body, dict)
                                              else None)
        return jsonify(backend.versions(None if pid is None else project_id(pid)))

    @app.get("/status")
    @app.get("/train_status")
    def status() -> Response:
        pid = request.args.get("project")
        return jsonify(backend.status(None if pid is None else project_id(pid)))

    @app.post("/probe")
    def probe() -> Response:
        body = _json_body()
        if "project" not in body:
            raise ApiError(400, "probe: missing 'project'")
        text = body.get("text")
        if not isinstance(text, str):
            raise ApiError(400, "probe: 'text' must be a string")
        top_k, low = body.get("top_k", 3), body.get("low_confidence", 0.6)
        if not isinstance(top_k, int) or isinstance(top_k, bool) or not 1 <= top_k <= 20:
            raise ApiError(400, f"probe: 'top_k' must be an integer in [1, 20], got {top_k!r}")
        if not isinstance(low, (int, float)) or isinstance(low, bool):
            raise ApiError(400, f"probe: 'low_confidence' must be a number, got {low!r}")
        return jsonify(backend.probe(project_id(body["project"]), text, top_k=top_k,
                                     low_confidence=float(low)))

    @app.get("/score")
    def score() -> Response:
        pid, tid = request.args.get("project"), request.args.get("task")
        if pid is None or tid is None or not tid.isdigit():
            raise ApiError(400, "score: pass ?project=<id>&task=<integer id>")
        res = backend.task_score(project_id(pid), int(tid))
        if res is None:
            raise ApiError(404, f"score: no scores for task {tid} of project {pid} yet")
        return jsonify(res)



def create_app(settings: Settings | None = None, *, backend: Backend | None = None) -> Flask:
    """Build the Flask app; ``settings`` default to :meth:`Settings.from_env`."""
    settings = settings or (backend.settings if backend else Settings.from_env())
    if settings.train_engine == "ray":
        from ls_backend.engine.cluster import import_ray

        import_ray()  # TRAIN_ENGINE=ray without Ray fails at start, not after a training
    backend = backend or Backend(settings)
    app = Flask("ner_quality_backend")
    app.config["JSON_SORT_KEYS"] = False
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes  # larger bodies: 413 at once
    app.json.sort_keys = False  # type: ignore[attr-defined]
    app.extensions["nerq_backend"] = backend
    _guards(app, settings, backend)
    _protocol_routes(app, backend, settings)
    _ops_routes(app, backend)
    backend.resume()
    if backend.settings.label_studio_enabled and backend.settings.label_studio_url:
        backend.trainer.resume_crossfits()  # they read the project's tasks from Label Studio
    return app
