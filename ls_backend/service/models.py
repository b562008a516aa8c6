"""One loaded model (and span index) per ``(project, version)``, loaded lazily behind a lock."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ls_backend.settings import Settings

from .state import base_version

logger = logging.getLogger(__name__)

__all__ = ["ModelCache"]


class ModelCache:
    """One loaded model per ``(project, version)`` key, loaded lazily behind a per-key lock."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._key_locks: dict[tuple[str, str], threading.Lock] = {}
        self._models: dict[tuple[str, str], Any] = {}
        self._indexes: dict[tuple[str, str], Any] = {}
        self._base_trained: dict[tuple[str, ...], bool] = {}
        self._fingerprints: dict[str, Any] = {}

    def _key_lock(self, key: tuple[str, str]) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def get(self, key: tuple[str, str], path: str | None, labels: Sequence[str]) -> Any:
        """The model for ``key``, loading ``path`` (None: ``MODEL_NAME``) on first use."""
        with self._lock:
            if key in self._models:
                return self._models[key]
        with self._key_lock(key):
            with self._lock:
                if key in self._models:
                    return self._models[key]
            from ls_backend.runtime import (
                NerModel,  # heavy import (torch), only when a model is needed
            )

            t0 = time.perf_counter()
            model = NerModel.load(
                path if path is not None else self.settings.model_name,
                labels=list(labels),
                **self.settings.serving_model_options,
            )
            logger.info(
                "loaded model %s for project %s from %s in %.1f s (device %s)",
                key[1], key[0], path or self.settings.model_name or "packaged backbone",
                time.perf_counter() - t0, getattr(model, "device", "?"),
            )
            with self._lock:
                self._models[key] = model
            return model

    def base_is_trained(self, labels: tuple[str, ...]) -> bool:
        """Whether ``MODEL_NAME`` is already a token-classification model for ``labels``.

        The packaged backbone (MODEL_NAME unset) never is: it is not loaded just to find out.
        """
        if self.settings.model_name is None:
            return False
        with self._lock:
            if labels in self._base_trained:
                return self._base_trained[labels]
        try:
            model = self.get(("__base__", base_version(self.settings.model_name, labels)),
                             None, labels)
            ok = bool(getattr(model, "trained", False))
        except ValueError as exc:
            logger.warning("MODEL_NAME %s does not fit labels %s: %s",
                           self.settings.model_name, list(labels), exc)
            ok = False
        with self._lock:
            self._base_trained[labels] = ok
        return ok

    def get_index(self, key: tuple[str, str], path: str | None) -> Any:
        """The span index of ``key`` (loaded from ``path/span_index`` or empty), cached."""
        with self._lock:
            if key in self._indexes:
                return self._indexes[key]
        from analysis.similarity import SpanIndex

        idx = None
        if path is not None and (Path(path) / "span_index").is_dir():
            try:
                idx = SpanIndex.load(Path(path) / "span_index")
            except (OSError, ValueError) as exc:
                logger.error("project %s: cannot load span index from %s: %s", key[0], path, exc)
        with self._lock:
            if key not in self._indexes:
                self._indexes[key] = idx
            return self._indexes[key]

    def fingerprints(self, path: str | None) -> Any:
        """The training-task fingerprints of the model at ``path``
        (:mod:`analysis.fingerprint`; None for the base model or a model without them)."""
        if path is None:
            return None
        with self._lock:
            if path in self._fingerprints:
                return self._fingerprints[path]
        from analysis import fingerprint

        try:
            fp = fingerprint.load(path)
        except (OSError, ValueError, KeyError) as exc:
            logger.error("cannot read the training fingerprints of %s: %s", path, exc)
            fp = None
        with self._lock:
            self._fingerprints[path] = fp
        return fp

    def set_index(self, key: tuple[str, str], index: Any) -> None:
        with self._lock:
            self._indexes[key] = index

    def put(self, key: tuple[str, str], model: Any) -> None:
        with self._lock:
            self._models[key] = model

    def evict_project(self, project: str, *, keep: str) -> None:
        """Drop every cached model/index of ``project`` except version ``keep``."""
        with self._lock:
            for d in (self._models, self._indexes):
                for k in [k for k in d if k[0] == project and k[1] != keep]:
                    del d[k]
            self._fingerprints.clear()  # cheap to reload; removed versions must not linger

    def loaded(self) -> list[str]:
        with self._lock:
            return [f"{p}:{v}" for p, v in self._models]
