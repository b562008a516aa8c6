"""The columnar corpus: a dataset's tokens and spans as flat arrays, built once per input.

Everything that works over a whole dataset — DEP, error types, metrics, alerts, training
labels, the backend's scoring — reads a :class:`Corpus` instead of re-deriving its facts from
tasks:

* tokens of all tasks flattened (``token_offsets``: task ``i`` owns rows
  ``[token_offsets[i], token_offsets[i + 1])``), with their half-open character offsets and text;
* gold spans (and stored predictions) as a :class:`SpanColumns`: the validated character spans in
  :meth:`analysis.dataset.Dataset.gold_table` order, each with its global token range — the
  **one** character → token mapping of the project;
* gold tag ids for any :class:`analysis.tags.TagSet` (:meth:`Corpus.gold_tags`, cached).

Character spans that do not line up with token boundaries are *reported* (``issues``, one
aggregated warning) and scored on the tokens they touch; a span that covers no token, or that
shares a token with an earlier span once mapped to tokens, is left out of the token view and
reported too.  Offsets are half-open everywhere.
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd

from analysis.exceptions import DataError
from analysis.spans import Span, SpanTable, TokenizedText, token_ranges
from analysis.tags import TagSet, encode_columns

if TYPE_CHECKING:  # pragma: no cover
    from analysis.dataset import Task

__all__ = ["Corpus", "SpanColumns", "SpanIssue", "task_name", "map_to_tokens", "lower_codes"]

IssueKind = Literal["misaligned", "no_token", "shared_token"]


def lower_codes(token_text: Sequence[str] | np.ndarray) -> np.ndarray:
    """(N,) int64 id of every token's lower-cased form (equal ids = equal lower-cased strings).

    Factorises the raw strings first and lower-cases only the distinct ones.

    >>> lower_codes(["Paris", "paris", "Rome", "PARIS"]).tolist()
    [0, 0, 1, 0]
    """
    arr = np.asarray(token_text, dtype=object)
    if not arr.size:
        return np.zeros(0, dtype=np.int64)
    raw_codes, uniques = pd.factorize(arr)
    low_codes, _ = pd.factorize(np.array([u.lower() for u in uniques], dtype=object))
    return np.asarray(low_codes, dtype=np.int64)[raw_codes]


def task_name(task_id: object, index: int) -> str:
    """How messages name a task: ``"task 17"`` (Label Studio id), ``"task #3"`` (0-based position).

    >>> task_name(17, 0), task_name(None, 3)
    ('task 17', 'task #3')
    """
    return f"task {task_id}" if task_id is not None else f"task #{index}"


@dataclass(frozen=True)
class SpanIssue:
    """A span whose boundaries are not token boundaries (``misaligned``: kept, scored on the
    tokens it touches), that covers no token (``no_token``: left out) or that shares a token with
    an earlier span after mapping (``shared_token``: left out)."""

    kind: IssueKind
    task: int
    which: str
    span: Span
    message: str


@dataclass(frozen=True, eq=False)
class SpanColumns:
    """Spans of one kind (gold, or stored predictions) with their token ranges.

    Attributes
    ----------
    chars : SpanTable, every validated character span, sorted by ``(task, start, end)``
    t0, t1 : (n,) int64, global half-open token range of each span (``t0 == t1`` when it covers
        no token)
    kept : (n,) bool, the span is part of the token view (covers a token, shares none)
    misaligned : (n,) bool, a boundary falls inside a token (kept; reported)
    """

    chars: SpanTable
    t0: np.ndarray
    t1: np.ndarray
    kept: np.ndarray
    misaligned: np.ndarray

    def __len__(self) -> int:
        return len(self.chars)

    @functools.cached_property
    def kept_rows(self) -> np.ndarray:
        """(n_kept,) int64 rows of ``chars`` in the token view."""
        return np.flatnonzero(self.kept)

    def token_table(self, offsets: np.ndarray) -> SpanTable:
        """Kept spans in *task-local* token units (``task`` = task index)."""
        r = self.kept_rows
        task = self.chars.task[r]
        base = offsets[task]
        return SpanTable(task, self.t0[r] - base, self.t1[r] - base, self.chars.label[r],
                         self.chars.labels)


def map_to_tokens(
    table: SpanTable, offsets: np.ndarray, token_start: np.ndarray, token_end: np.ndarray,
    text_len: np.ndarray,
) -> SpanColumns:
    """Map character spans onto tokens, vectorised over the dataset.

    ``table`` rows are sorted by ``(task, start, end)`` and do not overlap within a task.  Every
    task is put on one number line (``task i``'s characters at ``[base_i, base_i + len_i)``) so
    that two ``searchsorted`` calls find each span's first and last token.
    """
    n_tasks = len(offsets) - 1
    base = np.zeros(n_tasks, dtype=np.int64)
    if n_tasks > 1:
        np.cumsum(np.asarray(text_len[:-1], dtype=np.int64) + 1, out=base[1:])
    tok_base = np.repeat(base, np.diff(offsets))
    task = table.task
    t0, t1, mis = token_ranges(token_start + tok_base, token_end + tok_base,
                               table.start + base[task], table.end + base[task],
                               lo=offsets[task], hi=offsets[task + 1])
    has_tok = t1 > t0
    shared = np.zeros(len(task), dtype=bool)
    if len(task) > 1:  # two spans snapped onto the same token: keep the first
        prev_end = np.maximum.accumulate(np.where(has_tok, t1, -1))
        shared[1:] = (task[1:] == task[:-1]) & (t0[1:] < prev_end[:-1])
    shared &= has_tok
    return SpanColumns(table, t0.astype(np.int64), t1.astype(np.int64), has_tok & ~shared,
                       mis & ~shared)


def _issues(cols: SpanColumns, which: str, texts: Sequence[str],
            names: Sequence[str]) -> list[SpanIssue]:
    out: list[SpanIssue] = []
    ch = cols.chars
    bad = np.flatnonzero(~cols.kept | cols.misaligned)
    for r in bad.tolist():
        t, s, e = int(ch.task[r]), int(ch.start[r]), int(ch.end[r])
        span = Span(s, e, ch.labels[int(ch.label[r])])
        where = f"{names[t]}: {which} span [{s}, {e}) {span.label!r}"
        if cols.t1[r] <= cols.t0[r]:
            out.append(SpanIssue("no_token", t, which, span, f"{where} covers no token"))
        elif not cols.kept[r]:
            out.append(SpanIssue("shared_token", t, which, span,
                                 f"{where} shares a token with an earlier span once mapped to "
                                 "tokens; left out"))
        else:
            out.append(SpanIssue("misaligned", t, which, span,
                                 f"{where} ({texts[t][s:e]!r}) does not line up with token "
                                 "boundaries"))
    return out


@dataclass(frozen=True, eq=False)
class Corpus:
    """A dataset as columns (see the module docstring).

    Attributes
    ----------
    labels : entity types (index space of every span table's ``label``)
    texts : (n_tasks,) task texts
    task_ids : (n_tasks,) int64 Label Studio ids, -1 where a task has none (``has_id``)
    annotated : (n_tasks,) bool, the task has a chosen annotation (gold, possibly empty)
    token_offsets : (n_tasks + 1,) int64
    token_start, token_end : (N,) int64 half-open character offsets in the task's text
    tokens : (N,) object, the token strings
    gold : SpanColumns of the chosen annotations
    pred : SpanColumns of the chosen stored predictions, or None when no task has one
    pred_score : (n_tasks,) float64 score of the chosen prediction (NaN: none), or None
    split, annotator : (n_tasks,) object or None
    load_problem_tasks : (k,) int64 tasks whose gold the loader had to repair or drop spans of
    issues : span alignment issues (gold and stored predictions)
    token_factors : ``(codes, distinct)`` of ``tokens`` when the loader already has them (the
        CoNLL reader does); else :attr:`token_factors` factorises ``tokens`` once
    """

    labels: tuple[str, ...]
    texts: Sequence[str]
    task_ids: np.ndarray
    has_id: np.ndarray
    annotated: np.ndarray
    token_offsets: np.ndarray
    token_start: np.ndarray
    token_end: np.ndarray
    tokens: np.ndarray
    gold: SpanColumns
    pred: SpanColumns | None = None
    pred_score: np.ndarray | None = None
    split: np.ndarray | None = None
    annotator: np.ndarray | None = None
    load_problem_tasks: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    issues: tuple[SpanIssue, ...] = ()
    _gold_tags: dict[TagSet, np.ndarray] = field(default_factory=dict, repr=False)
    _token_factors: tuple[np.ndarray, Sequence[str]] | None = field(default=None, repr=False)

    # ------------------------------------------------------------------ sizes, names
    @property
    def n_tasks(self) -> int:
        return int(self.token_offsets.shape[0] - 1)

    @property
    def n_tokens(self) -> int:
        return int(self.token_offsets[-1])

    @functools.cached_property
    def n_task_tokens(self) -> np.ndarray:
        """(n_tasks,) int64 tokens per task."""
        return np.diff(self.token_offsets)

    @functools.cached_property
    def token_task(self) -> np.ndarray:
        """(N,) int64 task of every token."""
        return np.repeat(np.arange(self.n_tasks, dtype=np.int64), self.n_task_tokens)

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """(n_tasks,) int64: the Label Studio id, else the 0-based position."""
        return np.where(self.has_id, self.task_ids, np.arange(self.n_tasks, dtype=np.int64))

    def name(self, i: int) -> str:
        """``"task 17"`` / ``"task #3"`` (see :func:`task_name`)."""
        return task_name(int(self.task_ids[i]) if self.has_id[i] else None, i)

    @functools.cached_property
    def names(self) -> list[str]:
        return [task_name(t if h else None, i)
                for i, (t, h) in enumerate(zip(self.task_ids.tolist(), self.has_id.tolist()))]

    def task_tokens(self, i: int) -> TokenizedText:
        """Task ``i``'s tokens as a :class:`TokenizedText` (views of the columns)."""
        a, b = int(self.token_offsets[i]), int(self.token_offsets[i + 1])
        return TokenizedText(self.texts[i], tuple(self.tokens[a:b].tolist()),
                             self.token_start[a:b], self.token_end[a:b])

    @functools.cached_property
    def token_factors(self) -> tuple[np.ndarray, Sequence[str]]:
        """``(codes, distinct)``: (N,) int64 code of every token into its distinct strings."""
        if self._token_factors is not None:
            return self._token_factors
        if not self.n_tokens:
            return np.zeros(0, dtype=np.int64), []
        codes, uniques = pd.factorize(np.asarray(self.tokens, dtype=object))
        return np.asarray(codes, dtype=np.int64), list(uniques)

    @functools.cached_property
    def lower_codes(self) -> np.ndarray:
        """(N,) int64 ids of the lower-cased tokens (equal ids = equal lower-cased strings, as
        :func:`lower_codes`); each distinct token is lower-cased once."""
        codes, uniques = self.token_factors
        if not len(uniques):
            return np.zeros(0, dtype=np.int64)
        low, _ = pd.factorize(np.array([u.lower() for u in uniques], dtype=object))
        return np.asarray(low, dtype=np.int64)[codes]

    @functools.cached_property
    def capitalized(self) -> np.ndarray:
        """(N,) bool: a token's first character is upper-case."""
        codes, uniques = self.token_factors
        if not len(uniques):
            return np.zeros(0, dtype=bool)
        up = np.fromiter((u[:1].isupper() for u in uniques), dtype=bool, count=len(uniques))
        return up[codes]

    # ------------------------------------------------------------------ gold views
    @functools.cached_property
    def gold_tokens(self) -> SpanTable:
        """Kept gold spans in task-local token units (``task`` = task index)."""
        return self.gold.token_table(self.token_offsets)

    def gold_tags(self, tagset: TagSet) -> np.ndarray:
        """(N,) int64 gold tag of every token as a column of ``tagset`` (cached per tag set)."""
        got = self._gold_tags.get(tagset)
        if got is None:
            r = self.gold.kept_rows
            try:
                got = encode_columns(self.n_tokens, self.gold.t0[r], self.gold.t1[r],
                                     self.gold.chars.label[r], self.labels, tagset)
            except DataError as exc:
                row = int(str(exc).split(":")[0].split()[-1])
                t = int(self.gold.chars.task[r[row]])
                lab = self.labels[int(self.gold.chars.label[r[row]])]
                raise DataError(f"{self.name(t)}: gold label {lab!r} has no column in the tag "
                                f"list {list(tagset.tags)}") from None
            got.setflags(write=False)
            self._gold_tags[tagset] = got
        return got

    @functools.cached_property
    def gold_text(self) -> np.ndarray:
        """(n_gold,) object: the text of every gold span (all rows of ``gold.chars``)."""
        ch = self.gold.chars
        texts = self.texts
        return np.array([texts[t][s:e] for t, s, e in zip(ch.task.tolist(), ch.start.tolist(),
                                                          ch.end.tolist())], dtype=object)

    def warn_issues(self, *, stacklevel: int = 3) -> None:
        """One aggregated warning for the span alignment issues (when there are any)."""
        if self.issues:
            warnings.warn(
                f"{len(self.issues)} span(s) do not line up with token boundaries (reported, "
                "not moved); first: " + "; ".join(i.message for i in self.issues[:3]),
                stacklevel=stacklevel,
            )

    # ------------------------------------------------------------------ building
    @classmethod
    def from_tasks(cls, tasks: Sequence[Task], labels: Sequence[str], *,
                   load_problem_tasks: Sequence[int] = ()) -> Corpus:
        """Build the columns of ``tasks`` (``tasks[i].index == i``), vectorised over tasks."""
        labels = tuple(labels)
        n = len(tasks)
        texts = [t.text for t in tasks]
        n_tok = np.fromiter((len(t.tokens) for t in tasks), dtype=np.int64, count=n)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(n_tok, out=offsets[1:])
        if offsets[-1]:
            starts = np.concatenate([t.tokens.starts for t in tasks]).astype(np.int64)
            ends = np.concatenate([t.tokens.ends for t in tasks]).astype(np.int64)
        else:
            starts = ends = np.zeros(0, dtype=np.int64)
        tokens = np.empty(int(offsets[-1]), dtype=object)
        tokens[:] = [w for t in tasks for w in t.tokens.tokens]
        ids = [t.id for t in tasks]
        names = [task_name(t.id, k) for k, t in enumerate(tasks)]
        gold = _span_table([t.gold for t in tasks], labels, names, "gold")
        have_pred = any(t.pred is not None for t in tasks)
        pred = _span_table([t.pred for t in tasks], labels, names, "pred") if have_pred else None
        pscore = np.array([np.nan if t.pred_score is None else t.pred_score for t in tasks],
                          dtype=np.float64) if have_pred else None
        return cls.from_columns(
            labels, texts, ids,
            annotated=np.fromiter((t.gold is not None for t in tasks), dtype=bool, count=n),
            token_offsets=offsets, token_start=starts, token_end=ends, tokens=tokens,
            gold=gold, pred=pred, pred_score=pscore,
            split=np.array([t.split for t in tasks], dtype=object),
            annotator=np.array([t.annotator for t in tasks], dtype=object),
            load_problem_tasks=load_problem_tasks, names=names)

    @classmethod
    def from_columns(cls, labels: Sequence[str], texts: Sequence[str], ids: Sequence[Any], *,
                     annotated: np.ndarray, token_offsets: np.ndarray, token_start: np.ndarray,
                     token_end: np.ndarray, tokens: np.ndarray, gold: SpanTable,
                     pred: SpanTable | None, pred_score: np.ndarray | None, split: np.ndarray,
                     annotator: np.ndarray, load_problem_tasks: Sequence[int] = (),
                     names: Sequence[str] | None = None,
                     token_factors: tuple[np.ndarray, Sequence[str]] | None = None) -> Corpus:
        """The corpus of per-task columns and character span tables (``task`` = row): spans
        mapped onto the tokens once, alignment issues collected."""
        n = len(texts)
        has_id = np.array([i is not None for i in ids], dtype=bool)
        task_ids = np.array([-1 if i is None else int(i) for i in ids], dtype=np.int64)
        names = [task_name(i, k) for k, i in enumerate(ids)] if names is None else names
        text_len = np.fromiter(map(len, texts), dtype=np.int64, count=n)
        gcols = map_to_tokens(gold, token_offsets, token_start, token_end, text_len)
        pcols = (map_to_tokens(pred, token_offsets, token_start, token_end, text_len)
                 if pred is not None else None)
        issues = _issues(gcols, "gold", texts, names)
        if pcols is not None:
            issues += _issues(pcols, "pred", texts, names)
        issues.sort(key=lambda i: (i.which != "gold", i.task, i.span.start))
        return cls(
            labels=tuple(labels), texts=texts, task_ids=task_ids, has_id=has_id,
            annotated=annotated, token_offsets=token_offsets, token_start=token_start,
            token_end=token_end, tokens=tokens, gold=gcols, pred=pcols, pred_score=pred_score,
            split=split, annotator=annotator,
            load_problem_tasks=np.asarray(sorted(set(load_problem_tasks)), dtype=np.int64),
            issues=tuple(issues), _token_factors=token_factors,
        )


def _span_table(per_task: Sequence[Sequence[Span] | None], labels: tuple[str, ...],
                names: Sequence[str], which: str) -> SpanTable:
    """One table of the spans of every task; a label outside ``labels`` is a DataError."""
    lab_id = {lab: i for i, lab in enumerate(labels)}
    task, start, end, lab = [], [], [], []
    for k, spans in enumerate(per_task):
        if not spans:
            continue
        for s in spans:
            j = lab_id.get(s.label)
            if j is None:
                raise DataError(f"{names[k]}: {which} label {s.label!r} is not in the dataset "
                                f"labels {list(labels)}")
            task.append(k)
            start.append(s.start)
            end.append(s.end)
            lab.append(j)
    return SpanTable.from_arrays(np.asarray(task, np.int64), np.asarray(start, np.int64),
                                 np.asarray(end, np.int64), np.asarray(lab, np.int32), labels)
