"""Label Studio tasks straight into corpus columns: the fast path of :func:`from_ls_tasks`.

One lean pass per task takes its text, tokens and ``labels`` regions into flat lists; a task
whose shape is anything but the common clean one (a region without ``type``, an offset that
is not an int, several labels, an overlap, a span out of range, tokens that do not match the
text, ...) goes through the reference reader of :mod:`analysis.formats.ls_json` instead, so its
spans, problems and errors are exactly that reader's.  :class:`analysis.dataset.Task` objects
are made only when a caller asks for them (the reference reader on that one task).
"""

from __future__ import annotations

from array import array
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from analysis.corpus import Corpus, task_name
from analysis.dataset import Problems, Task, annotator_of
from analysis.exceptions import DataError
from analysis.spans import SpanTable, tokenize

__all__ = ["TaskColumns", "Reader", "is_labels_region"]

#: (index, where, item, annotation, prediction, problems) -> Task: the reference reader
ReadTask = Callable[[int, str, Mapping[str, Any], Any, Any, Problems], Task]


@dataclass
class _Spans:
    task: list[int] = field(default_factory=list)
    start: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    label: list[str] = field(default_factory=list)

    def add(self, k: int, spans: Sequence[tuple[int, int, str]]) -> None:
        for s, e, lab in spans:
            self.task.append(k)
            self.start.append(s)
            self.end.append(e)
            self.label.append(lab)

    def table(self, labels: tuple[str, ...], names: Sequence[str], which: str) -> SpanTable:
        ids = {lab: i for i, lab in enumerate(labels)}
        lab = np.empty(len(self.label), dtype=np.int32)
        for j, x in enumerate(self.label):
            i = ids.get(x)
            if i is None:
                raise DataError(f"{names[self.task[j]]}: {which} label {x!r} is not in the "
                                f"dataset labels {list(labels)}")
            lab[j] = i
        return SpanTable.from_arrays(np.asarray(self.task, np.int64),
                                     np.asarray(self.start, np.int64),
                                     np.asarray(self.end, np.int64), lab, labels)


def _vocab() -> defaultdict[str, int]:
    d: defaultdict[str, int] = defaultdict()
    d.default_factory = d.__len__  # a new token's code: the number of tokens before it
    return d


@dataclass
class TaskColumns:
    """What the pass over the tasks collected, one entry per kept task."""

    items: list[int] = field(default_factory=list)  # input position of each kept task
    ids: list[Any] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    vocab: defaultdict[str, int] = field(default_factory=_vocab)  # token -> code, first seen
    token_codes: array = field(default_factory=lambda: array("q"))
    n_tok: list[int] = field(default_factory=list)
    offsets: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    annotated: list[bool] = field(default_factory=list)
    gold: _Spans = field(default_factory=_Spans)
    pred: _Spans = field(default_factory=_Spans)
    has_pred: bool = False
    pred_score: list[float] = field(default_factory=list)
    split: list[Any] = field(default_factory=list)
    annotator: list[Any] = field(default_factory=list)
    made: dict[int, Task] = field(default_factory=dict)  # tasks the reference reader built

    def add_task(self, t: Task, item: int) -> None:
        """A task the reference reader built."""
        k = len(self.texts)
        self.made[k] = t
        self._row(item, t.id, t.text, list(t.tokens.tokens), t.split, t.annotator,
                  t.pred_score, t.gold is not None)
        self.offsets[k] = (np.asarray(t.tokens.starts, np.int64),
                           np.asarray(t.tokens.ends, np.int64))
        self.gold.add(k, [(s.start, s.end, s.label) for s in t.gold or ()])
        if t.pred is not None:
            self.has_pred = True
            self.pred.add(k, [(s.start, s.end, s.label) for s in t.pred])

    def _row(self, item: int, tid: Any, text: str, toks: list[str], split: Any, annotator: Any,
             score: float | None, annotated: bool) -> None:
        self.items.append(item)
        self.ids.append(tid)
        self.texts.append(text)
        # codes straight from a dict of the distinct tokens (a missing token gets the next
        # code): one string object per distinct token, 8 bytes per token
        self.token_codes.extend(map(self.vocab.__getitem__, toks))
        self.n_tok.append(len(toks))
        self.split.append(split)
        self.annotator.append(annotator)
        self.pred_score.append(np.nan if score is None else score)
        self.annotated.append(annotated)

    def corpus(self, labels: tuple[str, ...], load_problem_tasks: Sequence[int]) -> Corpus:
        n = len(self.texts)
        offsets = np.zeros(n + 1, dtype=np.int64)
        np.cumsum(np.asarray(self.n_tok, dtype=np.int64), out=offsets[1:])
        codes = np.frombuffer(self.token_codes, dtype=np.int64) if len(self.token_codes) \
            else np.zeros(0, dtype=np.int64)
        distinct = list(self.vocab)
        vocab = np.empty(len(distinct), dtype=object)
        vocab[:] = distinct
        tokens = vocab[codes]
        # default: the tokens joined by one space; tasks with their own offsets overwrite
        length = np.fromiter(map(len, distinct), dtype=np.int64, count=len(distinct))[codes]
        before = np.cumsum(length + 1) - length - 1
        starts = before - np.repeat(before[offsets[:-1][np.diff(offsets) > 0]],
                                    np.diff(offsets)[np.diff(offsets) > 0])
        ends = starts + length
        for k, (s, e) in self.offsets.items():
            starts[offsets[k]:offsets[k + 1]] = s
            ends[offsets[k]:offsets[k + 1]] = e
        names = [task_name(i, k) for k, i in enumerate(self.ids)]
        return Corpus.from_columns(
            labels, self.texts, self.ids, annotated=np.asarray(self.annotated, dtype=bool),
            token_offsets=offsets, token_start=starts, token_end=ends, tokens=tokens,
            gold=self.gold.table(labels, names, "gold"),
            pred=self.pred.table(labels, names, "pred") if self.has_pred else None,
            pred_score=np.asarray(self.pred_score, np.float64) if self.has_pred else None,
            split=np.array(self.split + [None], dtype=object)[:-1],
            annotator=np.array(self.annotator + [None], dtype=object)[:-1],
            load_problem_tasks=load_problem_tasks, names=names,
            token_factors=(codes, distinct))


class _Slow(Exception):
    """This task needs the reference reader."""


@dataclass
class Reader:
    """Reads tasks one at a time into :class:`TaskColumns` (see the module docstring).

    ``from_name=None`` (no label config) keeps every ``labels`` region and collects the
    ``(from_name, to_name)`` pairs in ``pairs``; the caller refuses several.
    """

    value_key: str
    from_name: str | None
    canonical: Callable[[str], str] | None
    allowed: set[str] | None
    problems: Problems
    read_task: ReadTask
    rejected: dict[int, str] | None
    cols: TaskColumns = field(default_factory=TaskColumns)
    pairs: set[tuple[str, str]] = field(default_factory=set)

    def add(self, idx: int, it: Mapping[str, Any], ann: Any, pr: Any) -> None:
        """Task ``idx`` (input position) with its chosen annotation and prediction."""
        cols = self.cols
        k = len(cols.texts)
        try:
            data = it["data"]
            text = data.get(self.value_key) if type(data) is dict else None
            if type(text) is not str:
                raise _Slow
            toks, own = _tokens(data, text)
            gold = None if ann is None else self._regions(ann.get("result") or [], text)
            pred = None if pr is None else self._regions(pr.get("result") or [], text)
        except _Slow:
            self._slow(idx, k, it, ann, pr)
            return
        meta = it.get("meta")
        if "split" in data:
            split = data["split"]
        else:
            split = meta.get("split") if isinstance(meta, Mapping) else None
        who = None
        if ann is not None:
            uid, email = annotator_of(ann)
            who = email or uid
        score = None
        if pr is not None:
            sc = pr.get("score")
            score = float(sc) if isinstance(sc, (int, float)) and not isinstance(sc, bool) \
                else None
        cols._row(idx, it.get("id"), text, toks, None if split is None else str(split), who,
                  score, gold is not None)
        if own is not None:
            cols.offsets[k] = own
        if gold:
            cols.gold.add(k, gold)
        if pred is not None:
            cols.has_pred = True
            cols.pred.add(k, pred)
        self.problems.checked += len(gold or ()) + len(pred or ())

    def _slow(self, idx: int, k: int, it: Mapping[str, Any], ann: Any, pr: Any) -> None:
        if self.from_name is None:  # its regions' names, before the reference reader
            for src in (ann, pr):
                result = (src or {}).get("result")
                for reg in result if isinstance(result, list) else ():
                    if is_labels_region(reg):
                        self.pairs.add((str(reg.get("from_name")), str(reg.get("to_name"))))
        where = task_name(it.get("id"), idx)
        try:
            self.cols.add_task(self.read_task(k, where, it, ann, pr, self.problems), idx)
        except (DataError, TypeError) as exc:
            if self.rejected is None:
                raise
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            self.rejected[idx] = msg if msg.startswith(where) else f"{where}: {msg}"

    def _regions(self, result: Any, text: str) -> list[tuple[int, int, str]]:
        """The ``labels`` spans of one clean result, sorted; :class:`_Slow` for anything else."""
        if type(result) is not list:
            raise _Slow
        n = len(text)
        from_name, canonical, allowed = self.from_name, self.canonical, self.allowed
        out = []
        for reg in result:
            if type(reg) is not dict:
                raise _Slow
            typ = reg.get("type")
            if typ != "labels":
                if typ is None:
                    raise _Slow
                continue  # another control (choices, relations, ...)
            if from_name is None:
                self.pairs.add((str(reg.get("from_name")), str(reg.get("to_name"))))
            elif reg.get("from_name", from_name) != from_name:
                continue
            val = reg.get("value")
            if type(val) is not dict:
                raise _Slow
            s, e, labs = val.get("start"), val.get("end"), val.get("labels")
            if (type(s) is not int or type(e) is not int or type(labs) is not list
                    or len(labs) != 1):
                raise _Slow
            lab = labs[0]
            if type(lab) is not str:
                raise _Slow
            if canonical is not None:
                lab = canonical(lab)
            if not 0 <= s < e <= n or (allowed is not None and lab not in allowed):
                raise _Slow
            vt = val.get("text")
            if vt is not None and vt != text[s:e]:
                raise _Slow
            out.append((s, e, lab))
        if len(out) > 1:
            out.sort()
            for i in range(1, len(out)):
                if out[i][0] < out[i - 1][1]:
                    raise _Slow  # overlapping spans
        return out


def is_labels_region(reg: Any) -> bool:
    """A ``labels`` region: ``type == "labels"``, or (no type) a value with labels and start."""
    if type(reg) is not dict and not isinstance(reg, Mapping):  # dict first: ABC checks are slow
        return False
    typ = reg.get("type")
    if typ is not None:
        return bool(typ == "labels")
    val = reg.get("value")
    return isinstance(val, Mapping) and "labels" in val and "start" in val


def _tokens(data: Mapping[str, Any], text: str) -> tuple[list[str], Any]:
    """The task's tokens, and their offsets when they are not the tokens joined by spaces."""
    toks = data.get("tokens")
    if toks is None:
        tt = tokenize(text)
        return list(tt.tokens), (tt.starts, tt.ends)
    if type(toks) is not list or "" in toks:
        raise _Slow
    try:
        if " ".join(toks) != text:
            raise _Slow
    except TypeError:
        raise _Slow from None
    return toks, None
