"""The report's shared vocabulary: error kinds in a data lead's words, colours, escaping.

Error kinds are named from the annotation's side (:data:`KIND_WORDS`): the library
(:mod:`analysis.errors`) names them from the model's side (``missed``: a gold span the model
does not predict), the report speaks of the annotation, which is what a reviewer fixes.
"""

from __future__ import annotations

import html
from typing import Any

__all__ = [
    "KIND_COLOURS",
    "KIND_LEGEND",
    "KIND_WORDS",
    "PALETTE",
    "empty",
    "esc",
    "fmt",
    "task_link",
]

KIND_WORDS = {
    "correct": "correct",
    "wrong_tag": "wrong type",
    "span_shift": "boundary",
    "missed": "extra entity",
    "ghost": "entity missing",
}
KIND_LEGEND = (
    "Error kinds, from the annotation's side: <b>wrong type</b> — same span, another type; "
    "<b>boundary</b> — the model's span overlaps the annotated one with other offsets; "
    "<b>extra entity</b> — the annotation has an entity the model does not find (a possible "
    "false annotation); <b>entity missing</b> — the model finds an entity the annotation lacks "
    "(a possibly overlooked one).  The CSV keeps the library's names (wrong_tag, span_shift, "
    "missed, ghost)."
)
#: categorical colours (Tableau 10), one order for every chart
PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
KIND_COLOURS = {
    "correct": "#59a14f",
    "wrong_tag": "#e15759",
    "span_shift": "#f28e2b",
    "missed": "#4e79a7",
    "ghost": "#b07aa1",
}


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def empty(msg: str) -> str:
    return f'<p class="empty">{esc(msg)}</p>'


def task_link(tid: int, ls_url: str | None, project_id: int | None) -> str:
    """A task id, linked to its Label Studio data page when the project is known."""
    if ls_url and project_id is not None:
        url = f"{ls_url.rstrip('/')}/projects/{int(project_id)}/data?task={int(tid)}"
        return f'<a href="{esc(url)}" target="_blank" rel="noopener">{tid}</a>'
    return str(tid)
