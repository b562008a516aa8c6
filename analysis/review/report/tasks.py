"""How the report draws one task: its text, or its annotation and model lines with the spans
highlighted by error kind, the suggested fixes, and the link into Label Studio.

Error kinds are named from the annotation's side (:data:`KIND_WORDS`); spans are the lists of
:func:`analysis.review.report.spans.task_spans` (half-open character offsets).
"""

from __future__ import annotations

from typing import Any

from analysis.review.report.charts import esc

__all__ = ["KIND_LEGEND", "KIND_WORDS", "task_cell", "task_link"]

#: the error kinds of :mod:`analysis.errors` in a data lead's words: the kinds are named from
#: the model's side (``missed``: a gold span the model does not predict), the report speaks
#: of the annotation, which is what a reviewer fixes
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
#: characters of a task's text shown in the table (the full text is in the cell's tooltip)
TEXT_CHARS = 160


def task_link(tid: int, ls_url: str | None, project_id: int | None) -> str:
    if ls_url and project_id is not None:
        url = f"{ls_url.rstrip('/')}/projects/{int(project_id)}/data?task={int(tid)}"
        return f'<a href="{esc(url)}" target="_blank" rel="noopener">{tid}</a>'
    return str(tid)


def _text_cell(text: str) -> str:
    """The text cell: the first :data:`TEXT_CHARS` characters, an ellipsis when cut, the whole
    text (up to 2,000 characters) as the tooltip."""
    if len(text) <= TEXT_CHARS:
        return f"<td>{esc(text)}</td>"
    return (f'<td title="{esc(text[:2000])}">{esc(text[:TEXT_CHARS].rstrip())}'
            '<span class="cut">…</span></td>')


#: characters of a text drawn with its spans (longer texts are cut with an ellipsis)
SPAN_TEXT_CHARS = 600


def _marked(text: str, spans: list[list[Any]], who: str) -> str:
    """``text`` (cut at :data:`SPAN_TEXT_CHARS`) with ``spans`` ``[start, end, label, kind,
    ...]`` as ``<mark>`` elements carrying their offsets, label and kind."""
    cut = len(text) > SPAN_TEXT_CHARS
    shown = text[:SPAN_TEXT_CHARS]
    out, pos = [], 0
    for sp in sorted(spans, key=lambda x: x[0]):
        s, e, lab, kind = int(sp[0]), int(sp[1]), str(sp[2]), sp[3]
        if s >= len(shown):
            break
        e_shown = min(e, len(shown))
        words = KIND_WORDS.get(kind, "") if kind else ""
        tip = f"{who}: {lab} [{s}, {e})" + (f" — {words}" if words and kind != "correct" else "")
        out.append(esc(shown[pos:s]))
        out.append(f'<mark class="sp k-{esc(kind or "none")}" data-start="{s}" data-end="{e}" '
                   f'data-label="{esc(lab)}" title="{esc(tip)}">{esc(shown[s:e_shown])}'
                   f'<sub>{esc(lab)}</sub></mark>')
        pos = e_shown
    out.append(esc(shown[pos:]))
    return "".join(out) + ('<span class="cut">…</span>' if cut else "")


def _fixes(text: str, gold: list[list[Any]], pred: list[list[Any]]) -> list[str]:
    """What the model suggests, in the annotation's words, one line per disagreement."""
    out = []
    for s, e, lab, kind, prop in gold:
        if kind == "wrong_tag" and prop:
            out.append(f"wrong type: “{text[s:e]}” {lab} → {prop[2]}")
        elif kind == "span_shift" and prop:
            out.append(f"boundary: “{text[s:e]}” → “{text[prop[0]:prop[1]]}” ({prop[2]})")
        elif kind == "missed":
            out.append(f"extra entity? “{text[s:e]}” ({lab}): the model finds none")
    for s, e, lab, kind in pred:
        if kind == "ghost":
            out.append(f"entity missing: “{text[s:e]}” ({lab})")
    return out


def task_cell(text: str, gold: list[list[Any]] | None, pred: list[list[Any]] | None) -> str:
    """The ``<td>`` of a task: :func:`_spans_cell` when its spans are known, else its text."""
    return _text_cell(text) if gold is None else _spans_cell(text, gold, pred or [])


def _spans_cell(text: str, gold: list[list[Any]], pred: list[list[Any]]) -> str:
    """The task as a person reads it: the annotation and the model, one line each, and the
    suggested fixes."""
    fixes = _fixes(text, gold, pred)
    return (f'<td class="spans"><div class="line ann"><span class="who">annotation</span> '
            f'{_marked(text, gold, "annotated")}</div><div class="line mod"><span class="who">'
            f'model</span> {_marked(text, pred, "model")}</div>'
            + ('<ul class="fixes">' + "".join(f"<li>{esc(f)}</li>" for f in fixes) + "</ul>"
               if fixes else "") + "</td>")
