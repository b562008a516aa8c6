"""Task and Dataset containers, and choosing one annotation / prediction per task.

A :class:`Dataset` is what :mod:`analysis.formats` loads from CoNLL or Label Studio JSON: one
:class:`Task` per sentence / Label Studio task, with the text, its tokenization, the chosen
human annotation (``gold``) and the chosen prediction (``pred``) as character spans.
Offsets are half-open ``[start, end)`` code-point offsets into ``Task.text`` (Python ``str``
indices, as Label Studio stores them).

Data problems found while loading are collected in :class:`Problems` (``Dataset.problems``):
tag repairs (lenient CoNLL), spans dropped by lenient validation, and spans that do not line
up with token boundaries (reported, never moved).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import numpy as np

from analysis.corpus import Corpus, task_name
from analysis.spans import Span, SpanTable, TokenizedText, TokenSpan, char_to_token_spans

__all__ = [
    "Task",
    "Dataset",
    "Problems",
    "Problem",
    "token_spans",
    "choose_annotation",
    "choose_prediction",
    "task_name",
]

logger = logging.getLogger(__name__)

Which = Literal["gold", "pred"]

#: problem kinds found by mapping character spans onto tokens (:class:`analysis.corpus.Corpus`)
ALIGNMENT_KINDS = ("misaligned", "no_token", "shared_token")


@dataclass
class Task:
    """One sentence / Label Studio task.

    Attributes
    ----------
    index : 0-based position in the input
    id : Label Studio task id (``None`` for CoNLL)
    text : the task text
    tokens : ``data["tokens"]`` when present (CoNLL origin), else ``tokenize(text)``
    gold : chosen annotation's spans, sorted by ``(start, end)``; ``None`` when not annotated
    pred : chosen prediction's spans; ``None`` when there is none
    pred_score : the chosen prediction's ``score``
    annotator : who made the chosen annotation (email when known, else user id)
    split : ``data["split"]`` or ``meta["split"]``
    data, meta : the task's ``data`` and ``meta`` dicts as read
    annotation_id : Label Studio id of the chosen annotation
    model_version : ``model_version`` of the chosen prediction
    """

    index: int
    id: int | None
    text: str
    tokens: TokenizedText
    gold: tuple[Span, ...] | None = None
    pred: tuple[Span, ...] | None = None
    pred_score: float | None = None
    annotator: str | None = None
    split: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    annotation_id: int | None = None
    model_version: str | None = None

    @property
    def name(self) -> str:
        """How messages name this task (``"task 17"``, or ``"task #3"`` without an id)."""
        return task_name(self.id, self.index)


@dataclass(frozen=True)
class Problem:
    """One data problem found while loading or writing.

    kind : ``"tag_repair"`` (lenient CoNLL decoding), ``"dropped_span"`` (lenient span
        validation), ``"tag_whitespace"`` (whitespace around a CoNLL tag, removed),
        ``"misaligned"`` (span boundary inside a token), ``"no_token"`` (span
        covering no token, e.g. only whitespace) or ``"shared_token"`` (span sharing a token with
        an earlier span once mapped to tokens)
    task : ``Task.index``
    which : ``"gold"`` or ``"pred"``
    span : the span concerned (``None`` for tag repairs)
    message : human-readable detail naming the task and position
    """

    kind: str
    task: int
    which: str
    span: Span | None
    message: str


@dataclass
class Problems:
    """Counted data problems (counts *and* the offending items).

    ``checked`` is how many items the reader checked that could need a repair (entity tags of
    a CoNLL file, regions of a Label Studio export): the denominator of :attr:`repair_rate`.
    """

    items: list[Problem] = field(default_factory=list)
    checked: int = 0

    def add(self, problem: Problem) -> None:
        self.items.append(problem)

    def extend(self, problems: Sequence[Problem]) -> None:
        self.items.extend(problems)

    def of(self, kind: str) -> list[Problem]:
        return [p for p in self.items if p.kind == kind]

    def counts(self) -> dict[str, int]:
        """``{kind: count}`` for the kinds present."""
        out: dict[str, int] = {}
        for p in self.items:
            out[p.kind] = out.get(p.kind, 0) + 1
        return out

    @property
    def repairs(self) -> int:
        """Tag repairs plus spans dropped by lenient validation."""
        return sum(1 for p in self.items if p.kind in ("tag_repair", "dropped_span"))

    @property
    def repair_rate(self) -> float:
        """Repairs per checked item (0 when nothing was checked)."""
        return self.repairs / self.checked if self.checked else 0.0

    @property
    def misaligned(self) -> int:
        """Spans not lining up with token boundaries (including those covering no token)."""
        return sum(1 for p in self.items if p.kind in ALIGNMENT_KINDS)

    def __len__(self) -> int:
        return len(self.items)


class LazyTasks(Sequence[Task]):
    """The tasks of a dataset read straight into a corpus, each made on first access."""

    def __init__(self, n: int, make: Callable[[int], Task]) -> None:
        self._n = n
        self._make = make
        self._cache: dict[int, Task] = {}

    def __len__(self) -> int:
        return self._n

    def _get(self, i: int) -> Task:
        t = self._cache.get(i)
        if t is None:
            t = self._cache[i] = self._make(i)
        return t

    def __getitem__(self, i: int | slice) -> Any:
        if isinstance(i, slice):
            return [self._get(k) for k in range(*i.indices(self._n))]
        k = int(i) + (self._n if int(i) < 0 else 0)
        if not 0 <= k < self._n:
            raise IndexError(f"task index {i} out of range for {self._n} tasks")
        return self._get(k)

    def __iter__(self) -> Iterator[Task]:
        return (self._get(k) for k in range(self._n))

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled (e.g. sent to a Ray worker) as the plain list of its tasks: the factory is a
        # closure over the reader's columns and cannot travel
        return (list, (list(self),))


@dataclass
class Dataset:
    """A loaded NER dataset.

    Attributes
    ----------
    tasks : one :class:`Task` per sentence / Label Studio task, ``tasks[i].index == i``
    labels : entity types (label config order, else sorted)
    from_name, to_name : Label Studio control / object tag names used for regions
    value_key : task data key holding the text (``"text"`` for ``$text``)
    scheme : tag scheme the input was read in (CoNLL), else ``None``
    problems : repairs and misaligned spans found while loading
    annotation_sets : every annotator's spans of the tasks that two or more annotators
        labelled (:class:`analysis.agreement.AnnotationSet`, Label Studio input only)
    """

    tasks: Sequence[Task]
    labels: tuple[str, ...]
    from_name: str = "label"
    to_name: str = "text"
    value_key: str = "text"
    scheme: str | None = None
    problems: Problems = field(default_factory=Problems)
    annotation_sets: tuple[Any, ...] = ()

    def __len__(self) -> int:
        return len(self.tasks)

    def __getstate__(self) -> dict[str, Any]:
        # the cached corpus is rebuilt on the other side (a Ray worker) when it is needed;
        # its data issues were already reported here
        state = {k: v for k, v in self.__dict__.items() if k != "_corpus"}
        state["_issues_reported"] = True
        return state

    @property
    def corpus(self) -> Corpus:
        """The columnar view of the tasks (:class:`analysis.corpus.Corpus`), built once.

        Rebuilt only when ``tasks`` or ``labels`` are replaced; tasks are not to be mutated in
        place after loading.
        """
        cached = self.__dict__.get("_corpus")
        if cached is not None and cached[0] is self.tasks and cached[1] == self.labels:
            return cached[2]
        corpus = Corpus.from_tasks(
            self.tasks, self.labels,
            load_problem_tasks=[p.task for p in self.problems.items if p.which == "gold"])
        if cached is None and not self.__dict__.get("_issues_reported"):
            corpus.warn_issues(stacklevel=3)
        self.__dict__["_corpus"] = (self.tasks, self.labels, corpus)
        return corpus

    @classmethod
    def from_corpus(cls, corpus: Corpus, make_task: Callable[[int], Task], *, from_name: str,
                    to_name: str, value_key: str, scheme: str | None,
                    problems: Problems) -> Dataset:
        """A dataset whose corpus is built already (a reader's fast path); tasks are made lazily
        by ``make_task(i)``."""
        ds = cls(LazyTasks(corpus.n_tasks, make_task), corpus.labels, from_name, to_name,
                 value_key, scheme, problems)
        ds.__dict__["_issues_reported"] = True
        ds.__dict__["_corpus"] = (ds.tasks, ds.labels, corpus)
        return ds

    def report_alignment(self, *, warn: bool = True) -> None:
        """Build the corpus now and add its span alignment issues to ``problems`` (loaders)."""
        self.__dict__["_issues_reported"] = True
        corpus = self.corpus
        self.problems.extend([Problem(i.kind, i.task, i.which, i.span, i.message)
                              for i in corpus.issues])
        if warn:
            corpus.warn_issues(stacklevel=4)

    def gold_table(self) -> SpanTable:
        """All gold spans, character offsets, ``task = Task.index``; unannotated tasks skipped."""
        return self.corpus.gold.chars

    def pred_table(self) -> SpanTable:
        """All predicted spans, character offsets, ``task = Task.index``."""
        pred = self.corpus.pred
        if pred is None:
            z = np.zeros(0, dtype=np.int64)
            return SpanTable(z, z, z, np.zeros(0, dtype=np.int32), self.labels)
        return pred.chars

    def n_spans(self, which: Which = "gold") -> int:
        return sum(len((t.gold if which == "gold" else t.pred) or ()) for t in self.tasks)


def token_spans(task: Task, which: Which = "gold", *, warn: bool = True) -> list[TokenSpan]:
    """The task's gold or predicted spans as half-open token spans over ``task.tokens``.

    Misaligned spans are mapped to the tokens they touch and reported with a warning
    (``warn=True``); spans covering no token are left out.  Returns ``[]`` when the task has
    no such spans (unannotated / no prediction).
    """
    if which not in ("gold", "pred"):
        raise ValueError(f"which must be 'gold' or 'pred', got {which!r}")
    spans = task.gold if which == "gold" else task.pred
    if not spans:
        return []
    out, _ = char_to_token_spans(task.tokens, spans, where=task.name, warn=warn)
    return out


# ---------------------------------------------------------------------------------------------
# choosing one annotation / prediction per task


def _time_key(item: Mapping[str, Any]) -> tuple[float, str]:
    """Sort key of an annotation/prediction by ``updated_at`` then ``created_at``."""
    for key in ("updated_at", "created_at"):
        val = item.get(key)
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            return float(val), ""
        if isinstance(val, str) and val:
            try:
                return datetime.fromisoformat(val.replace("Z", "+00:00")).timestamp(), ""
            except ValueError:
                return float("-inf"), val  # unparseable: fall back to string order
    return float("-inf"), ""


def _id_key(item: Mapping[str, Any]) -> float:
    val = item.get("id")
    return float(val) if isinstance(val, (int, float)) and not isinstance(val, bool) else -1.0


def _latest(items: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    if not items:
        return None
    if len(items) == 1:  # the usual case: nothing to compare
        return items[0]
    # max keeps the first of equal keys; ties on time and id go to the last listed
    best_i = max(range(len(items)), key=lambda i: (_time_key(items[i]), _id_key(items[i]), i))
    return items[best_i]


def annotator_of(ann: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(user id as str, email)`` of an annotation's ``completed_by`` (either may be None)."""
    cb = ann.get("completed_by")
    uid: str | None = None
    email: str | None = None
    if isinstance(cb, Mapping):
        uid = None if cb.get("id") is None else str(cb.get("id"))
        email = cb.get("email") or None
    elif cb is not None and not isinstance(cb, bool):
        uid = str(cb)
    if email is None:
        for key in ("created_username", "annotator", "completed_by_email"):
            val = ann.get(key)
            if isinstance(val, str) and "@" in val:
                # created_username looks like "name email@x.org, 7"
                email = next((w.strip(",") for w in val.split() if "@" in w), None)
                break
    return uid, email


def choose_annotation(
    annotations: Sequence[Mapping[str, Any]] | None,
    *,
    annotator: str | int | None = None,
) -> Mapping[str, Any] | None:
    """The annotation to use: the latest non-cancelled one, or the latest by ``annotator``.

    Latest means greatest ``updated_at`` (else ``created_at``), then greatest ``id``.
    ``annotator`` matches ``completed_by`` (a user id, or an email).  Returns ``None`` when
    no annotation qualifies.
    """
    if not annotations:
        return None
    live = [a for a in annotations if isinstance(a, Mapping) and not a.get("was_cancelled")]
    if annotator is not None:
        want = str(annotator).strip()
        live = [a for a in live if want in {x for x in annotator_of(a) if x}]
    return _latest(live)


def choose_prediction(
    predictions: Sequence[Mapping[str, Any]] | None,
    *,
    model_version: str | None = None,
) -> Mapping[str, Any] | None:
    """The latest prediction, or the latest with ``model_version`` when given."""
    if not predictions:
        return None
    preds = [p for p in predictions if isinstance(p, Mapping)]
    if model_version is not None:
        preds = [p for p in preds if str(p.get("model_version")) == str(model_version)]
    return _latest(preds)
