"""Domain errors of ner-quality.

:class:`DataError` is what bad *input* raises — a file, a task, a span, a tag list or a
probability array that breaks a contract — with a message that names the task (or file, line,
column) and the problem.  It subclasses ``ValueError``, so ``except ValueError`` keeps working;
the HTTP app answers it with 400 and the CLI with one line and exit 2, while any other exception
is a bug and is reported as such (HTTP 500 with a logged traceback).
"""

from __future__ import annotations

__all__ = ["DataError"]


class DataError(ValueError):
    """Invalid input data; the message names where and what (``"task 17: span [40, 52) ..."``)."""
