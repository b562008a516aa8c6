"""The inputs of DEP, checked once: a corpus, and the probabilities of its annotated tasks.

:func:`prepare` turns a dataset (or :class:`analysis.corpus.Corpus`) and model output (a
:class:`analysis.probs.ModelOutput`, or one array per task / per annotated task) into a
:class:`Scored` view: the flat probabilities of the *scored* (annotated) tasks with their gold
tag ids and the kept gold spans in the same row space.  Every problem is a
:class:`analysis.exceptions.DataError` naming the task.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any, Union, cast

import numpy as np

from analysis.corpus import Corpus
from analysis.dep.rows import CHUNK, argmax_conf, gold_and_other
from analysis.exceptions import DataError
from analysis.probs import ModelOutput
from analysis.tags import TagSet, range_positions

if TYPE_CHECKING:  # pragma: no cover
    from analysis.dataset import Dataset

__all__ = ["Scored", "prepare", "as_corpus", "as_output", "check_probs", "ProbsLike"]

#: what the DEP entry points accept as probabilities
ProbsLike = Union[ModelOutput, Sequence[Any]]


def as_corpus(data: Corpus | Dataset) -> Corpus:
    """The corpus of ``data`` (a :class:`Corpus`, or a dataset's cached one)."""
    if isinstance(data, Corpus):
        return data
    corpus = getattr(data, "corpus", None)
    if not isinstance(corpus, Corpus):
        raise TypeError(f"expected an analysis Dataset or Corpus, got {type(data).__name__}")
    return corpus


def _tagset(tags: Sequence[str] | TagSet | None, stored: TagSet | None) -> TagSet:
    if isinstance(tags, TagSet):
        ts = tags
    elif tags is not None:
        if isinstance(tags, str):
            raise TypeError("tags must be a sequence of tag names, not one string")
        ts = TagSet(tuple(tags), stored.scheme if stored is not None else "iob2")
    elif stored is not None:
        return stored
    else:
        raise DataError("the probabilities do not say their tag order; pass tags= (the column "
                        "names, e.g. O,B-PER,I-PER,...)")
    if stored is not None and stored.tags != ts.tags:
        raise DataError(f"the given tags {list(ts.tags)} differ from the probabilities' own tag "
                        f"order {list(stored.tags)}")
    return ts


def as_output(corpus: Corpus, probs: ProbsLike, tags: Sequence[str] | TagSet | None) -> ModelOutput:
    """Probabilities as one :class:`ModelOutput` over every task of ``corpus``.

    A list may hold one array per task (None allowed for unannotated tasks) or one per annotated
    task, in task order.
    """
    if isinstance(probs, ModelOutput):
        out = probs
        if out.n_tasks != corpus.n_tasks:
            raise DataError(f"the probabilities cover {out.n_tasks} tasks but the dataset has "
                            f"{corpus.n_tasks}")
        return out.with_tagset(_tagset(tags, out.tagset))
    if isinstance(probs, np.ndarray) and probs.dtype != object:
        raise TypeError("probs must be a list of per-task arrays, not one array")
    arrays = list(probs)
    ann = np.flatnonzero(corpus.annotated)
    if len(arrays) == corpus.n_tasks:
        per_task: list[Any] = arrays
    elif len(arrays) == ann.size:
        per_task = [None] * corpus.n_tasks
        for k, i in enumerate(ann.tolist()):
            per_task[i] = arrays[k]
    else:
        raise DataError(
            f"got {len(arrays)} probability arrays for {corpus.n_tasks} tasks ({ann.size} "
            "annotated); expected one per task or one per annotated task, in task order")
    ts = _tagset(tags, None)
    _check_shapes(corpus, per_task, len(ts))
    return ModelOutput.from_arrays(per_task, ts)


def _check_shapes(corpus: Corpus, per_task: Sequence[Any], n_tags: int) -> None:
    for i, a in enumerate(per_task):
        if a is None:
            if corpus.annotated[i]:
                raise DataError(f"{corpus.name(i)}: annotated task has no probabilities (None)")
            continue
        a = np.asarray(a)
        if a.ndim != 2:
            raise DataError(f"{corpus.name(i)}: probabilities must be 2-D (n_tokens, n_tags), "
                            f"got shape {a.shape}")
        if not np.issubdtype(a.dtype, np.number):
            raise TypeError(f"{corpus.name(i)}: probabilities must be numeric, got {a.dtype}")
        _check_task_shape(corpus, i, a.shape[0], a.shape[1], n_tags)


def _check_task_shape(corpus: Corpus, i: int, rows: int, cols: int, n_tags: int) -> None:
    n_tok = int(corpus.n_task_tokens[i])
    if rows != n_tok:
        raise DataError(f"{corpus.name(i)}: {rows} probability rows for {n_tok} tokens")
    if cols != n_tags:
        raise DataError(f"{corpus.name(i)}: {cols} probability columns but {n_tags} tags")


@dataclass(frozen=True, eq=False)
class Scored:
    """The scored (annotated) tasks of a corpus, flattened.

    Attributes
    ----------
    corpus : the corpus
    tagset : columns of ``probs``
    tasks : (n_scored,) int64 task indices
    offsets : (n_tasks + 1,) int64 rows of each task in the flat arrays (empty: not scored)
    rows : (N_flat,) int64 corpus token row of every flat row (see :meth:`take`)
    probs : (N_flat, n_tags) float32
    gold : (N_flat,) int64 gold tag column
    tok_task : (N_flat,) int64 task of every flat row
    span_rows : (n_spans,) int64 rows of ``corpus.gold.chars`` of the kept gold spans
    span_task, span_t0, span_t1, span_label : (n_spans,) their task, flat token range and label
    """

    corpus: Corpus
    tagset: TagSet
    tasks: np.ndarray
    offsets: np.ndarray
    rows: np.ndarray
    probs: np.ndarray
    gold: np.ndarray
    tok_task: np.ndarray
    span_rows: np.ndarray
    span_task: np.ndarray
    span_t0: np.ndarray
    span_t1: np.ndarray
    span_label: np.ndarray

    @property
    def n_tokens(self) -> int:
        return int(self.probs.shape[0])

    def take(self, per_token: np.ndarray) -> np.ndarray:
        """A per-corpus-token array in flat-row order (the array itself when every token of
        the corpus is scored, in order: no copy)."""
        if self.rows.size == self.corpus.n_tokens:
            return per_token
        return per_token[self.rows]

    @cached_property
    def _best(self) -> tuple[np.ndarray, np.ndarray]:
        return argmax_conf(self.probs)

    @property
    def best(self) -> np.ndarray:
        """(N_flat,) the argmax tag column of every row (computed once)."""
        return self._best[0]

    @property
    def best_prob(self) -> np.ndarray:
        """(N_flat,) float32 ``p(argmax)`` of every row."""
        return self._best[1]

    @cached_property
    def _gold_other(self) -> tuple[np.ndarray, np.ndarray]:
        return gold_and_other(self.probs, self.gold)

    @property
    def gold_prob(self) -> np.ndarray:
        """(N_flat,) float32 ``p(gold)`` of every row."""
        return self._gold_other[0]

    @property
    def other_prob(self) -> np.ndarray:
        """(N_flat,) float32 ``max p(other)`` of every row (the best tag that is not gold)."""
        return self._gold_other[1]

    @property
    def span_base(self) -> np.ndarray:
        """(n_spans,) flat row of the first token of each span's task."""
        return self.offsets[self.span_task]


def check_probs(corpus: Corpus, out: ModelOutput, *, tol: float) -> np.ndarray:
    """Validate the probabilities of the annotated tasks; return those task indices."""
    ts = cast(TagSet, out.tagset)
    ts.check_labels(corpus.labels)
    scored = np.flatnonzero(corpus.annotated)
    missing = scored[~out.has[scored]]
    if missing.size:
        raise DataError(f"{corpus.name(int(missing[0]))}: annotated task has no probabilities")
    have = np.flatnonzero(out.has)
    n_rows = np.diff(out.offsets)[have]
    bad = np.flatnonzero(n_rows != corpus.n_task_tokens[have])
    if bad.size:
        i = int(have[bad[0]])
        _check_task_shape(corpus, i, int(n_rows[bad[0]]), out.probs.shape[1], len(ts))
    if out.probs.shape[1] != len(ts):
        raise DataError(f"{out.probs.shape[1]} probability columns but {len(ts)} tags")
    return scored


def _flat_rows(corpus: Corpus, out: ModelOutput, scored: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Flat offsets and corpus token rows of the scored tasks, and the rows of ``out.probs``
    they read (None: all of them, in order)."""
    n_per = np.zeros(corpus.n_tasks, dtype=np.int64)
    n_per[scored] = corpus.n_task_tokens[scored]
    offsets = np.zeros(corpus.n_tasks + 1, dtype=np.int64)
    np.cumsum(n_per, out=offsets[1:])
    if scored.size == corpus.n_tasks and np.array_equal(out.offsets, corpus.token_offsets):
        return offsets, np.arange(corpus.n_tokens, dtype=np.int64), None
    lens = n_per[scored]
    rows = range_positions(corpus.token_offsets[scored], corpus.token_offsets[scored] + lens)[0]
    return offsets, rows, range_positions(out.offsets[scored], out.offsets[scored] + lens)[0]


def _check_values(corpus: Corpus, flat: np.ndarray, offsets: np.ndarray, tok_task: np.ndarray,
                  tol: float) -> None:
    for a in range(0, flat.shape[0], CHUNK):  # in blocks: no full-size temporaries
        blk = flat[a:a + CHUNK]
        bad = ~np.isfinite(blk).all(axis=1)
        bad |= (blk < -tol).any(axis=1)
        sums = blk.sum(axis=1, dtype=np.float64)
        rows = np.flatnonzero(bad | (np.abs(sums - 1.0) > tol))
        if not rows.size:
            continue
        r = int(rows[0])
        t = int(tok_task[a + r])
        tok = a + r - int(offsets[t])
        if bad[r]:
            raise DataError(f"{corpus.name(t)}: token {tok} has NaN, infinite or negative "
                            "probabilities")
        raise DataError(f"{corpus.name(t)}: token {tok} probabilities sum to {sums[r]:.4f}, not "
                        f"1 (tolerance {tol}); pass softmax probabilities, not logits")


def prepare(corpus: Corpus, out: ModelOutput, *, tol: float = 1e-3) -> Scored:
    """The :class:`Scored` view of ``corpus`` under ``out`` (validated)."""
    ts = cast(TagSet, out.tagset)
    scored = check_probs(corpus, out, tol=tol)
    offsets, rows, prow = _flat_rows(corpus, out, scored)
    probs = np.ascontiguousarray(out.probs if prow is None else out.probs[prow],
                                 dtype=np.float32)
    identity = rows.size == corpus.n_tokens  # every task scored: the corpus's own arrays
    tok_task = corpus.token_task if identity else corpus.token_task[rows]
    _check_values(corpus, probs, offsets, tok_task, tol)
    gold = corpus.gold_tags(ts) if identity else corpus.gold_tags(ts)[rows]
    r = corpus.gold.kept_rows
    span_task = corpus.gold.chars.task[r]
    shift = offsets[span_task] - corpus.token_offsets[span_task]
    return Scored(corpus, ts, scored, offsets, rows, probs, gold, tok_task, r, span_task,
                  corpus.gold.t0[r] + shift, corpus.gold.t1[r] + shift,
                  corpus.gold.chars.label[r].astype(np.int64))
