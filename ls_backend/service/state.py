"""Per-project backend state, persisted under ``MODEL_DIR/<project>/state.json``.

One backend process serves many Label Studio projects.  Each project keeps its label config,
the model version it currently serves (and the trained model directory behind it), the
training status and a counter of annotations since the last training.  Writes are atomic
(temporary file + ``os.replace``) so a crash never leaves a half-written state file; a
training that was running when the process died is reported as ``interrupted`` after the
restart and the previous version keeps serving.

Project ids are Label Studio's numeric ids as strings.  Label Studio sends ``"<id>.<ts>"`` in
``/setup`` and ``/predict``; :func:`project_id` strips the timestamp.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .errors import BadRequest

logger = logging.getLogger(__name__)

__all__ = ["ProjectState", "StateStore", "project_id", "base_version", "TRAIN_STATUSES"]

TRAIN_STATUSES = ("idle", "queued", "running", "crossfit", "done", "failed", "interrupted")
_PID_RE = re.compile(r"[A-Za-z0-9_-]{1,64}")


def project_id(raw: object) -> str:
    """Normalise a project reference from a request into a safe id string.

    Accepts ``17``, ``"17"``, ``"17.1712345678"`` (Label Studio's ``<id>.<created_at>``) and a
    project dict ``{"id": 17, ...}`` (webhook payloads).

    >>> project_id("17.1712345678"), project_id(17), project_id({"id": 3})
    ('17', '17', '3')
    >>> project_id("__base__")
    Traceback (most recent call last):
    ...
    ls_backend.service.errors.BadRequest: project: '__base__' is reserved (ids starting with '__' or '-' are the backend's own)
    >>> project_id("../etc")
    Traceback (most recent call last):
    ...
    ls_backend.service.errors.BadRequest: project: '../etc' is not a valid project id (letters, digits, _ and - only)
    """
    if isinstance(raw, dict):
        raw = raw.get("id")
    if raw is None or isinstance(raw, bool):
        raise BadRequest("project: missing project id")
    if isinstance(raw, int):
        return str(raw)
    if not isinstance(raw, str):
        raise BadRequest(f"project: expected a string or integer id, got {type(raw).__name__}")
    pid = raw.split(".", 1)[0].strip()
    if not _PID_RE.fullmatch(pid):
        raise BadRequest(
            f"project: {raw!r} is not a valid project id (letters, digits, _ and - only)"
        )
    if pid.startswith("__") or pid.startswith("-"):
        raise BadRequest(f"project: {raw!r} is reserved (ids starting with '__' or '-' are "
                         f"the backend's own)")
    return pid


def base_version(model_name: str | None, labels: tuple[str, ...]) -> str:
    """Model version served before the first training of a project.

    Stable for a (backbone, label set) pair, so Label Studio never stores duplicate
    predictions for it (its retrieval skips tasks that already carry the ``/setup`` version).

    >>> base_version(None, ("PER",)) == base_version(None, ("PER",))
    True
    """
    h = hashlib.sha1(f"{model_name or 'packaged-minilm'}|{'|'.join(labels)}".encode()).hexdigest()
    return f"nerq-base-{h[:8]}"


@dataclass
class ProjectState:
    """Everything the backend remembers about one project (JSON-serialisable)."""

    project: str
    label_config: str | None = None
    labels: tuple[str, ...] = ()
    from_name: str = "label"
    to_name: str = "text"
    value_key: str = "text"
    model_version: str = ""
    model_path: str | None = None  # trained model dir; None: base model
    model_labels: tuple[str, ...] = ()  # labels the trained model knows
    versions: list[dict[str, Any]] = field(default_factory=list)
    annotations_since_train: int = 0
    train: dict[str, Any] = field(default_factory=lambda: {"status": "idle"})
    #: DEP thresholds fitted on the whole project by the last training's scoring (categories
    #: of later live scores come from these, never from a one-task fit)
    thresholds: dict[str, Any] | None = None
    updated_at: float = 0.0

    @property
    def trained(self) -> bool:
        return self.model_path is not None

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["labels"] = list(self.labels)
        d["model_labels"] = list(self.model_labels)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> ProjectState:
        known = {f for f in cls.__dataclass_fields__}
        kw = {k: v for k, v in d.items() if k in known}
        kw["labels"] = tuple(kw.get("labels", ()))
        kw["model_labels"] = tuple(kw.get("model_labels", ()))
        return cls(**kw)

    def public(self) -> dict[str, Any]:
        """Summary for /health and /status (no label config XML)."""
        return {
            "project": self.project,
            "labels": list(self.labels),
            "model_version": self.model_version,
            "trained": self.trained,
            "annotations_since_train": self.annotations_since_train,
            "train": dict(self.train),
            "versions": [v.get("version") for v in self.versions
                         if not v.get("removed")],
            "thresholds": self.thresholds,
        }


class StateStore:
    """Thread-safe map ``project id -> ProjectState`` backed by ``root/<project>/state.json``.

    States are loaded lazily on first access (no disk I/O at import time).  Callers get
    *copies*; changes go through :meth:`update`, which applies a function under the lock and
    persists the result atomically.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._lock = threading.RLock()
        self._states: dict[str, ProjectState] | None = None

    def _load_all(self) -> dict[str, ProjectState]:
        if self._states is not None:
            return self._states
        states: dict[str, ProjectState] = {}
        if self.root.is_dir():
            for path in sorted(self.root.glob("*/state.json")):
                try:
                    st = ProjectState.from_json(json.loads(path.read_text(encoding="utf-8")))
                except (OSError, ValueError, TypeError) as exc:
                    logger.error("ignoring unreadable project state %s: %s", path, exc)
                    continue
                if st.train.get("status") == "crossfit":
                    logger.warning("project %s: the cross-fit of %s was cut short when the "
                                   "backend stopped; it runs again", st.project, st.model_version)
                    st.train = {**st.train, "status": "interrupted",
                                "crossfit": {**(st.train.get("crossfit") or {}),
                                             "status": "interrupted"}}
                elif st.train.get("status") in ("queued", "running"):
                    logger.warning(
                        "project %s: training %s when the backend stopped; marked interrupted, "
                        "version %s keeps serving", st.project, st.train.get("status"),
                        st.model_version,
                    )
                    st.train = {**st.train, "status": "interrupted"}
                states[st.project] = st
            if states:
                logger.info("loaded state of %d project(s) from %s", len(states), self.root)
        self._states = states
        return states

    def project_dir(self, pid: str) -> Path:
        return self.root / project_id(pid)

    def get(self, pid: str) -> ProjectState | None:
        with self._lock:
            st = self._load_all().get(pid)
            return copy.deepcopy(st) if st is not None else None

    def all(self) -> list[ProjectState]:
        with self._lock:
            return [copy.deepcopy(s) for s in self._load_all().values()]

    def update(
        self, pid: str, fn: Callable[[ProjectState], None], *, create: bool = False
    ) -> ProjectState:
        """Apply ``fn`` to the project's state under the lock, persist, return a copy.

        Raises ``KeyError`` when the project is unknown and ``create`` is false.
        """
        pid = project_id(pid)
        with self._lock:
            states = self._load_all()
            st = states.get(pid)
            if st is None:
                if not create:
                    raise KeyError(pid)
                st = ProjectState(project=pid)
            new = copy.deepcopy(st)
            fn(new)
            new.updated_at = time.time()
            self._write(new)
            states[pid] = new
            return copy.deepcopy(new)

    def _write(self, st: ProjectState) -> None:
        d = self.project_dir(st.project)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f".state.json.{os.getpid()}.{threading.get_ident()}.tmp"
        tmp.write_text(json.dumps(st.to_json(), indent=1, sort_keys=True), encoding="utf-8")
        os.replace(tmp, d / "state.json")

    def __iter__(self) -> Iterator[str]:
        with self._lock:
            return iter(list(self._load_all()))
