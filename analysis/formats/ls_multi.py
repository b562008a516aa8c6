"""Every annotator's spans of the Label Studio tasks that several annotators labelled.

:func:`analysis.formats.ls_json.from_ls_tasks` chooses one annotation per task for the gold
labels; agreement needs all of them.  :func:`annotation_sets` reads, for each loaded task with
live (non-cancelled) annotations by two or more annotators, each annotator's latest annotation
into an :class:`analysis.agreement.AnnotationSet`.  Regions are read with the same rules as the
chosen annotation (:func:`analysis.formats.ls_json._region_span`: the label config's control,
one label per region, canonical label names); a region of another annotator's annotation that
is not a valid span (non-integer offsets, no label, out of range, unknown label) is left out of
that annotator's set and reported in ``Dataset.problems`` as a ``dropped_span`` with
``which="agreement"``, whatever ``strict`` says: the gold labels are read already, and one bad
region in a second opinion should cost that region, not the task.  The regions of the annotation
chosen for the gold labels were checked (and reported) by the gold reader and are not reported
twice.  Overlapping spans are kept (agreement handles them, see :mod:`analysis.agreement`).

Annotators are named by email when the export has one, else by user id; an annotation with
neither is named ``"unknown #k"`` (its position ``k`` in the task's list, 1-based).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from analysis.agreement import AnnotationSet, make_annotation_set
from analysis.corpus import Corpus
from analysis.dataset import Problem, annotator_of, choose_annotation
from analysis.spans import Span, span_problem

__all__ = ["annotation_sets", "annotator_name", "is_multi"]


def annotator_name(ann: Mapping[str, Any], k: int) -> str:
    """Email, else user id, else ``"unknown #k"`` (``k`` 1-based position in the task)."""
    uid, email = annotator_of(ann)
    return email or uid or f"unknown #{k}"


def _live(item: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    anns = item.get("annotations")
    if anns is None:
        anns = item.get("completions")
    return [a for a in anns or () if isinstance(a, Mapping) and not a.get("was_cancelled")]


def is_multi(item: Mapping[str, Any]) -> bool:
    """Whether a task has two or more live annotations (a cheap first test: the annotators
    may still be one person)."""
    return len(_live(item)) >= 2


def annotation_sets(tasks: Iterable[tuple[int, Mapping[str, Any], Mapping[str, Any] | None]],
                    corpus: Corpus, ctx: Any) -> tuple[AnnotationSet, ...]:
    """The :class:`AnnotationSet` of every multi-annotated task.

    Parameters
    ----------
    tasks : ``(k, item, gold)``: the dataset's task ``k``, its full-export task as read and the
        annotation chosen for its gold labels (tasks with fewer than two annotators are skipped)
    corpus : the dataset's corpus (task texts and tokens)
    ctx : the reader context of :func:`analysis.formats.ls_json.from_ls_tasks` (control name,
        label config, allowed labels, problems)
    """
    from analysis.formats.ls_json import _region_span

    out = []
    for k, item, gold in tasks:
        live = _live(item)
        if len(live) < 2:
            continue
        groups: dict[str, list[Mapping[str, Any]]] = {}
        for j, ann in enumerate(live):
            groups.setdefault(annotator_name(ann, j + 1), []).append(ann)
        if len(groups) < 2:
            continue
        text = corpus.texts[k]
        where = corpus.name(k)
        by_annotator: dict[str, list[Span]] = {}
        for name, anns in groups.items():
            chosen = choose_annotation(anns)
            spans: list[Span] = []
            result = (chosen or {}).get("result")
            for reg in result if isinstance(result, list) else ():
                try:
                    sp, msg, _ = _region_span(reg, where, f"annotation by {name}", ctx)
                except TypeError as exc:  # non-integer offsets: a whole task for the gold reader
                    sp, msg = None, str(exc)
                if sp is not None:
                    msg = span_problem(sp, len(text), ctx.allowed, where=where,
                                       what=f"span by {name}", label_source="label config labels")
                if msg is not None:
                    if chosen is not gold:
                        ctx.problems.add(Problem("dropped_span", k, "agreement", sp,
                                                 f"{msg} (left out of agreement)"))
                    continue
                if sp is not None:
                    spans.append(sp)
            by_annotator[name] = spans
        out.append(make_annotation_set(item.get("id"), where, text, corpus.task_tokens(k),
                                       by_annotator))
    return tuple(out)
