"""Domain errors of the backend service, each mapped to one HTTP status by ``app.py``.

Anything else raised while serving a request is a bug: the app logs it with its traceback and
answers 500.
"""

from __future__ import annotations

from analysis.exceptions import DataError

__all__ = ["BadRequest", "TaskError", "LabelMismatch", "QueueFull", "NoLabelStudio", "Busy",
           "UnknownProject"]


class BadRequest(DataError):
    """The request itself is malformed (HTTP 400)."""


class TaskError(DataError):
    """Every task of a request is invalid (HTTP 422); the message names each task."""


class UnknownProject(DataError):
    """The project is unknown to the backend or has no model for the request (HTTP 404)."""


class LabelMismatch(DataError):
    """The trained model and the label config disagree on labels (HTTP 409)."""


class QueueFull(RuntimeError):
    """The scoring queue is at ``QUEUE_SIZE`` (HTTP 503)."""


class NoLabelStudio(RuntimeError):
    """An operation needs LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY, which are not set (HTTP 503)."""


class Busy(RuntimeError):
    """``PREDICT_CONCURRENCY`` model passes are running and none finished within
    ``PREDICT_WAIT_S`` (HTTP 503 with Retry-After): refused early instead of answering after
    Label Studio has given up."""
