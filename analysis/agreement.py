"""Annotator agreement for NER: span F1 between annotators, token-level Krippendorff's alpha,
per-task agreement, a majority-vote consensus and per-annotator figures.

Input is one :class:`AnnotationSet` per task that two or more annotators labelled (Label Studio
JSON: :func:`analysis.formats.ls_multi.annotation_sets`, attached to the loaded dataset as
``Dataset.annotation_sets``).  Every rule below is pinned by a test.

Rules
-----
* **Whitespace at span edges** is not a disagreement: each span is trimmed of leading and
  trailing whitespace (``str.isspace``) before anything is compared, and a span of whitespace
  only is dropped (counted in ``blank_spans``).  Punctuation is not trimmed: ``Obama,`` and
  ``Obama`` are different spans.
* **One vote per annotator and task**: the annotator's latest non-cancelled annotation
  (:func:`analysis.dataset.choose_annotation`); identical ``(start, end, label)`` spans of one
  annotator count once.
* **Overlapping labels** are kept: an annotator's spans may overlap or nest (Label Studio allows
  it).  Span measures compare sets of spans; the token-level alpha gives a token covered by
  several labels the value of all of them (``"LOC+ORG"``, a category of its own).
* **Exact match**: same trimmed half-open ``[start, end)`` and same label.  **Overlap match**:
  same label and the two half-open ranges share a character (``a.start < b.end and
  b.start < a.end``).
* **Pairwise F1** of annotators ``a`` and ``b`` on a task: exact ``F1 = 2|A ∩ B| / (|A| + |B|)``;
  overlap ``F1`` = harmonic mean of the share of ``A``'s spans that some ``B`` span overlaps and
  the share of ``B``'s spans that some ``A`` span overlaps.  Both are symmetric, so nothing
  depends on annotator or span order.  Pooled figures (overall, per label, per pair) sum the
  counts over tasks and pairs (micro average); a pair where neither marked anything adds nothing.
* **Per-task agreement** (``data.nerq_agreement``): the mean exact F1 over the task's annotator
  pairs, a pair that marked nothing counting 1.0 (they agree).
* **Consensus**: a span is kept when more than half of the task's annotators marked it exactly;
  a span marked by exactly half is a **tie**: listed, not kept.
* **Per annotator**: pooled exact F1 against each other annotator on shared tasks, and against
  the leave-one-out consensus of the others on tasks with two or more other annotators; the
  error rate is ``1 - F1`` against that consensus (ties of the others are left out of it).
* **Krippendorff's alpha** (nominal, the ``krippendorff`` package): units are the tokens of the
  multi-annotated tasks, a token's value is the ``+``-joined labels of the spans covering it
  (half-open overlap rule of :func:`analysis.spans.token_ranges`), ``"O"`` when none; per label,
  the binary "inside a span of this label" value.  ``nan`` when undefined (one value only).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import combinations
from typing import Any

import numpy as np

from analysis.spans import Span, TokenizedText, token_ranges

__all__ = ["AnnotationSet", "PairCounts", "Consensus", "AnnotatorAgreement", "Agreement",
           "trim_span", "make_annotation_set", "pair_counts", "pair_counts_by_label",
           "consensus", "agreement",
           "token_alpha"]


def trim_span(text: str, span: Span) -> Span | None:
    """``span`` without whitespace at its edges; None when it covers whitespace only.

    >>> trim_span(" Obama  met", Span(0, 7, "PER"))
    Span(start=1, end=6, label='PER')
    >>> trim_span("a   b", Span(1, 4, "X")) is None
    True
    """
    s, e = span.start, span.end
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if s >= e:
        return None
    return span if (s, e) == (span.start, span.end) else Span(s, e, span.label)


@dataclass(frozen=True)
class AnnotationSet:
    """Every annotator's spans on one task (two or more annotators).

    Attributes
    ----------
    task_id : Label Studio task id (None outside Label Studio)
    name : the task's name in messages (``"task 17"``)
    text, tokens : the task text and its tokenization
    annotators : sorted annotator names (email when known, else user id)
    spans : per annotator, the trimmed spans as a frozenset (same order as ``annotators``)
    blank_spans : spans dropped because they covered whitespace only
    """

    task_id: int | None
    name: str
    text: str
    tokens: TokenizedText
    annotators: tuple[str, ...]
    spans: tuple[frozenset[Span], ...]
    blank_spans: int = 0


def make_annotation_set(task_id: int | None, name: str, text: str, tokens: TokenizedText,
                        by_annotator: Mapping[str, Iterable[Span]]) -> AnnotationSet:
    """An :class:`AnnotationSet` from each annotator's raw spans (trimmed here)."""
    names = tuple(sorted(by_annotator))
    blank = 0
    per: list[frozenset[Span]] = []
    for a in names:
        kept = set()
        for sp in by_annotator[a]:
            t = trim_span(text, sp)
            if t is None:
                blank += 1
            else:
                kept.add(t)
        per.append(frozenset(kept))
    return AnnotationSet(task_id, name, text, tokens, names, tuple(per), blank)


@dataclass(frozen=True)
class PairCounts:
    """Counts behind a pairwise F1 (pooled over tasks and pairs when summed).

    ``n_a``/``n_b``: spans of each side; ``exact``: spans both marked exactly;
    ``overlap_a``/``overlap_b``: spans of one side that a same-label span of the other overlaps.
    """

    n_a: int = 0
    n_b: int = 0
    exact: int = 0
    overlap_a: int = 0
    overlap_b: int = 0

    def __add__(self, o: PairCounts) -> PairCounts:
        return PairCounts(self.n_a + o.n_a, self.n_b + o.n_b, self.exact + o.exact,
                          self.overlap_a + o.overlap_a, self.overlap_b + o.overlap_b)

    def swapped(self) -> PairCounts:
        """The same counts seen from the other annotator."""
        return PairCounts(self.n_b, self.n_a, self.exact, self.overlap_b, self.overlap_a)

    @property
    def f1_exact(self) -> float:
        n = self.n_a + self.n_b
        return 2.0 * self.exact / n if n else math.nan

    @property
    def f1_overlap(self) -> float:
        if not self.n_a or not self.n_b:
            return 0.0 if self.n_a + self.n_b else math.nan
        r, p = self.overlap_a / self.n_a, self.overlap_b / self.n_b
        return 2 * p * r / (p + r) if p + r else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"spans_a": self.n_a, "spans_b": self.n_b, "exact": self.exact,
                "overlap_a": self.overlap_a, "overlap_b": self.overlap_b,
                "f1_exact": _num(self.f1_exact), "f1_overlap": _num(self.f1_overlap)}


def _overlapped(xs: Iterable[Span], ys: Sequence[Span]) -> int:
    """How many of ``xs`` a span of ``ys`` overlaps (half-open rule; callers pass one label)."""
    return sum(any(x.start < y.end and y.start < x.end for y in ys) for x in xs)


def _group(spans: frozenset[Span]) -> dict[str, list[Span]]:
    out: dict[str, list[Span]] = {}
    for x in spans:
        out.setdefault(x.label, []).append(x)
    return out


def pair_counts_by_label(a: frozenset[Span], b: frozenset[Span]) -> dict[str, PairCounts]:
    """The counts of one task and one annotator pair, per label (labels either side used)."""
    ga, gb = _group(a), _group(b)
    out = {}
    for lab in ga.keys() | gb.keys():
        xa, xb = ga.get(lab, []), gb.get(lab, [])
        out[lab] = PairCounts(len(xa), len(xb), sum(x in b for x in xa), _overlapped(xa, xb),
                              _overlapped(xb, xa))
    return out


def _total(by_label: Mapping[str, PairCounts]) -> PairCounts:
    t = PairCounts()
    for c in by_label.values():
        t = t + c
    return t


def pair_counts(a: frozenset[Span], b: frozenset[Span]) -> PairCounts:
    """The counts of one task and one annotator pair (see the module rules)."""
    return _total(pair_counts_by_label(a, b))


@dataclass(frozen=True)
class Consensus:
    """Majority vote of one task: ``spans`` marked by more than half of its ``n_annotators``,
    ``ties`` marked by exactly half (sorted by ``(start, end, label)``)."""

    spans: tuple[Span, ...]
    ties: tuple[Span, ...]
    n_annotators: int


def consensus(span_sets: Sequence[frozenset[Span]]) -> Consensus:
    """Strict-majority consensus of several annotators' span sets.

    >>> c = consensus([frozenset({Span(0, 3, "PER")}), frozenset({Span(0, 3, "PER")}),
    ...                frozenset({Span(0, 3, "ORG")})])
    >>> c.spans, c.ties
    ((Span(start=0, end=3, label='PER'),), ())
    """
    n = len(span_sets)
    votes = Counter(s for ss in span_sets for s in ss)
    kept = tuple(sorted(s for s, v in votes.items() if 2 * v > n))
    ties = tuple(sorted(s for s, v in votes.items() if 2 * v == n))
    return Consensus(kept, ties, n)


@dataclass(frozen=True)
class AnnotatorAgreement:
    """One annotator's figures.

    ``tasks``: multi-annotated tasks they labelled; ``spans``: their spans there;
    ``vs_others``: pooled counts against every other annotator (they are side ``a``);
    ``vs_consensus``: pooled counts against the leave-one-out consensus of the others
    (tasks with >= 2 other annotators; ``consensus_tasks`` of them).
    """

    annotator: str
    tasks: int
    spans: int
    vs_others: PairCounts
    vs_consensus: PairCounts
    consensus_tasks: int

    @property
    def error_rate(self) -> float:
        """``1 - exact F1`` against the others' consensus (nan without such tasks)."""
        f = self.vs_consensus.f1_exact
        return 1.0 - f if math.isfinite(f) else math.nan

    def to_dict(self) -> dict[str, Any]:
        return {"annotator": self.annotator, "tasks": self.tasks, "spans": self.spans,
                "f1_vs_others": _num(self.vs_others.f1_exact),
                "f1_overlap_vs_others": _num(self.vs_others.f1_overlap),
                "consensus_tasks": self.consensus_tasks,
                "f1_vs_consensus": _num(self.vs_consensus.f1_exact),
                "error_rate": _num(self.error_rate)}


@dataclass(frozen=True)
class Agreement:
    """Agreement over the multi-annotated tasks (``task_*`` arrays in input order).

    ``overall`` / ``per_label`` / ``pairs``: pooled :class:`PairCounts`; ``alpha`` /
    ``alpha_per_label``: token-level Krippendorff's alpha; ``task_agreement``: (n_tasks,) mean
    pairwise exact F1 per task; ``task_consensus``: the majority vote per task.
    """

    labels: tuple[str, ...]
    annotators: tuple[str, ...]
    task_ids: tuple[int | None, ...]
    task_names: tuple[str, ...]
    task_annotators: tuple[tuple[str, ...], ...]
    task_agreement: np.ndarray
    task_consensus: tuple[Consensus, ...]
    overall: PairCounts
    per_label: Mapping[str, PairCounts]
    pairs: Mapping[tuple[str, str], PairCounts]
    alpha: float
    alpha_per_label: Mapping[str, float]
    per_annotator: Mapping[str, AnnotatorAgreement]
    blank_spans: int = 0
    n_tokens: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def n_tasks(self) -> int:
        return len(self.task_ids)

    def to_dict(self) -> dict[str, Any]:
        return {
            "tasks": self.n_tasks, "tokens": self.n_tokens, "annotators": list(self.annotators),
            "overall": self.overall.to_dict(),
            "per_label": {k: v.to_dict() for k, v in self.per_label.items()},
            "pairs": [{"a": a, "b": b, **c.to_dict()} for (a, b), c in self.pairs.items()],
            "alpha": _num(self.alpha),
            "alpha_per_label": {k: _num(v) for k, v in self.alpha_per_label.items()},
            "per_annotator": [v.to_dict() for v in self.per_annotator.values()],
            "ties": int(sum(len(c.ties) for c in self.task_consensus)),
            "blank_spans": self.blank_spans, "notes": list(self.notes),
        }


def _num(x: float) -> float | None:
    return round(float(x), 6) if math.isfinite(x) else None


Pairs = dict[tuple[int, int], PairCounts]


def _task_agreement(n: int, pairs: Pairs) -> float:
    vals = [1.0 if math.isnan(c.f1_exact) else c.f1_exact
            for (i, j), c in pairs.items() if i < j]
    return float(np.mean(vals)) if vals and n >= 2 else math.nan


def _annotator_figures(sets: Sequence[AnnotationSet], task_pairs: Sequence[Pairs]
                       ) -> dict[str, AnnotatorAgreement]:
    acc: dict[str, list[Any]] = {}
    for s, pairs in zip(sets, task_pairs):
        k = len(s.annotators)
        for i, a in enumerate(s.annotators):
            row = acc.setdefault(a, [0, 0, PairCounts(), PairCounts(), 0])
            row[0] += 1
            row[1] += len(s.spans[i])
            for j in range(k):
                if j != i:
                    row[2] = row[2] + (pairs[(i, j)] if i < j else pairs[(j, i)].swapped())
            if k >= 3:  # the others' leave-one-out consensus (ties left out)
                c = consensus([s.spans[j] for j in range(k) if j != i])
                ties = set(c.ties)
                row[3] = row[3] + pair_counts(frozenset(x for x in s.spans[i] if x not in ties),
                                              frozenset(c.spans))
                row[4] += 1
    return {a: AnnotatorAgreement(a, r[0], r[1], r[2], r[3], r[4]) for a, r in sorted(acc.items())}


def _token_values(s: AnnotationSet, spans: frozenset[Span]) -> list[frozenset[str]]:
    """Per token, the labels of the spans covering it."""
    out: list[set[str]] = [set() for _ in range(len(s.tokens))]
    if spans and len(s.tokens):
        sp = sorted(spans)
        t0, t1, _ = token_ranges(s.tokens.starts, s.tokens.ends,
                                 np.array([x.start for x in sp]), np.array([x.end for x in sp]))
        for x, a, b in zip(sp, t0.tolist(), t1.tolist()):
            for k in range(a, b):
                out[k].add(x.label)
    return [frozenset(v) for v in out]


def token_alpha(sets: Sequence[AnnotationSet], labels: Sequence[str]
                ) -> tuple[float, dict[str, float], int]:
    """Nominal Krippendorff's alpha over tokens, overall and per label; and the token count.

    Builds the (annotators x tokens) reliability matrix (``nan`` where an annotator did not
    label the task) and hands it to ``krippendorff.alpha``.
    """
    import krippendorff

    names = sorted({a for s in sets for a in s.annotators})
    row = {a: i for i, a in enumerate(names)}
    n_tok = sum(len(s.tokens) for s in sets)
    values: dict[frozenset[str], int] = {frozenset(): 0}
    mat = np.full((len(names), n_tok), np.nan)
    per_label = {lab: np.full((len(names), n_tok), np.nan) for lab in labels}
    off = 0
    for s in sets:
        n = len(s.tokens)
        for a, spans in zip(s.annotators, s.spans):
            vals = _token_values(s, spans)
            mat[row[a], off:off + n] = [values.setdefault(v, len(values)) for v in vals]
            for lab, m in per_label.items():
                m[row[a], off:off + n] = [lab in v for v in vals]
        off += n

    def alpha(m: np.ndarray, domain: Sequence[int]) -> float:
        seen = np.unique(m[~np.isnan(m)])
        if n_tok == 0 or seen.size < 2:
            return math.nan
        return float(krippendorff.alpha(reliability_data=m, value_domain=list(domain),
                                        level_of_measurement="nominal"))

    return (alpha(mat, range(len(values))),
            {lab: alpha(m, (0, 1)) for lab, m in per_label.items()}, n_tok)


def agreement(sets: Sequence[AnnotationSet], labels: Sequence[str]) -> Agreement:
    """All agreement figures of the multi-annotated tasks ``sets`` (see the module rules).

    Parameters
    ----------
    sets : one :class:`AnnotationSet` per task with two or more annotators (others are skipped)
    labels : the entity types (per-label figures in this order; other labels count overall)
    """
    sets = [s for s in sets if len(s.annotators) >= 2]
    labels = tuple(labels)
    overall = PairCounts()
    per_label = {lab: PairCounts() for lab in labels}
    pairs: dict[tuple[str, str], PairCounts] = {}
    task_pairs: list[Pairs] = []
    for s in sets:
        tp: Pairs = {}
        for i, j in combinations(range(len(s.annotators)), 2):
            by_lab = pair_counts_by_label(s.spans[i], s.spans[j])
            c = tp[(i, j)] = _total(by_lab)
            overall = overall + c
            key = (s.annotators[i], s.annotators[j])  # annotators are sorted: a < b
            pairs[key] = pairs.get(key, PairCounts()) + c
            for lab, cl in by_lab.items():
                if lab in per_label:
                    per_label[lab] = per_label[lab] + cl
        task_pairs.append(tp)
    alpha, alpha_lab, n_tok = token_alpha(sets, labels)
    notes = []
    if not sets:
        notes.append("no task has annotations by two or more annotators")
    return Agreement(
        labels=labels,
        annotators=tuple(sorted({a for s in sets for a in s.annotators})),
        task_ids=tuple(s.task_id for s in sets),
        task_names=tuple(s.name for s in sets),
        task_annotators=tuple(s.annotators for s in sets),
        task_agreement=np.array([_task_agreement(len(s.annotators), tp)
                                 for s, tp in zip(sets, task_pairs)], dtype=np.float64),
        task_consensus=tuple(consensus(s.spans) for s in sets),
        overall=overall, per_label=per_label, pairs=dict(sorted(pairs.items())),
        alpha=alpha, alpha_per_label=alpha_lab,
        per_annotator=_annotator_figures(sets, task_pairs),
        blank_spans=sum(s.blank_spans for s in sets), n_tokens=n_tok, notes=tuple(notes))
