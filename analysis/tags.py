"""Tag sets of model probabilities, and tags <-> spans over whole columns of tokens.

A :class:`TagSet` is the column order of a probability matrix *with its scheme*: a tag list alone
cannot say whether ``I-X`` opens a span (IOB1) or continues one (IOB2), so the two always travel
together (in :class:`analysis.probs.ModelOutput` and in the ``.npz`` files of
:mod:`analysis.probs`).

Column functions work on all tokens of a dataset at once (flattened, task boundaries given by
``offsets``): :func:`encode_columns` turns gold token spans into tag ids of a tag set,
:func:`decode_columns` turns argmax tag ids back into spans — the one decoding the runtime, DEP
and the analysis share.  :func:`decode_probs` is its one-task form.

>>> ts = TagSet.for_labels(["PER", "LOC"])
>>> ts.tags, ts.scheme
(('O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC'), 'iob2')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from analysis.exceptions import DataError
from analysis.schemes import get_scheme, split_tag
from analysis.spans import TokenSpan

__all__ = [
    "TagSet",
    "DECODABLE",
    "tag_names",
    "types_of_tags",
    "encode_columns",
    "decode_columns",
    "decode_probs",
    "task_confidence",
    "task_entropy",
]

#: schemes whose argmax tags :func:`decode_columns` decodes (BIOES/BILOU model outputs are
#: folded onto IOB2 by the runtime, so probabilities are always one of these)
DECODABLE: tuple[str, ...] = ("iob2", "iob1")


def tag_names(labels: Sequence[str], scheme: str = "iob2") -> tuple[str, ...]:
    """The model tag set for entity ``labels``: ``("O", "B-L1", "I-L1", "B-L2", ...)``.

    >>> tag_names(["PER", "LOC"])
    ('O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC')
    >>> tag_names(["PER"], "bioes")
    ('O', 'B-PER', 'I-PER', 'E-PER', 'S-PER')
    """
    sc = get_scheme(scheme)
    prefixes = ["B", "I"] if sc.name in ("iob1", "iob2") else ["B", sc.inside, sc.end, sc.single]
    out = ["O"]
    for lab in labels:
        out.extend(f"{p}-{lab}" for p in prefixes if p)
    return tuple(out)


def types_of_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """Entity types named by a tag set, in first-seen order."""
    seen: dict[str, None] = {}
    for t in tags:
        p, typ = split_tag(t)
        if p != "O":
            seen.setdefault(typ, None)
    return tuple(seen)


@dataclass(frozen=True)
class TagSet:
    """The columns of a probability matrix: tag names and the scheme they are written in.

    Validated on construction (:class:`analysis.exceptions.DataError` naming the problem): tags
    are unique, include ``O``, parse as ``<prefix>-<TYPE>``, use only the scheme's prefixes, and
    every type has the prefixes its scheme needs (``B-`` and ``I-`` for IOB2, ``I-`` for IOB1,
    all four for BIOES / BILOU).
    """

    tags: tuple[str, ...]
    scheme: str = "iob2"
    _col: dict[str, int] = field(default_factory=dict, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        tags = tuple(self.tags)
        object.__setattr__(self, "tags", tags)
        try:
            object.__setattr__(self, "scheme", get_scheme(self.scheme).name)
        except ValueError as exc:
            raise DataError(str(exc)) from None
        if not tags or not all(isinstance(t, str) for t in tags):
            raise DataError(f"tags must be a non-empty sequence of str, got {tags!r}")
        if len(set(tags)) != len(tags):
            dup = sorted({t for t in tags if tags.count(t) > 1})
            raise DataError(f"tag list has duplicates: {dup}")
        if "O" not in tags:
            raise DataError(f"tag list {list(tags)} has no 'O' tag")
        allowed = {"iob1": "BI", "iob2": "BI", "bioes": "BIES", "bilou": "BILU"}[self.scheme]
        need = {"iob1": "I", "iob2": "BI", "bioes": "BIES", "bilou": "BILU"}[self.scheme]
        have: dict[str, set[str]] = {}
        for t in tags:
            try:
                prefix, typ = split_tag(t)
            except ValueError as exc:
                raise DataError(f"tag list: {exc}") from None
            if prefix == "O":
                continue
            if prefix not in allowed:
                raise DataError(f"tag {t!r}: prefix {prefix!r} is not part of "
                                f"{self.scheme.upper()} (tags {list(tags)[:8]})")
            have.setdefault(typ, set()).add(prefix)
        for typ, prefixes in have.items():
            for p in need:
                if p not in prefixes:
                    raise DataError(f"tag list has {typ} tags but no {p}-{typ} "
                                    f"({self.scheme.upper()})")
        self._col.update({t: j for j, t in enumerate(tags)})

    @classmethod
    def for_labels(cls, labels: Sequence[str], scheme: str = "iob2") -> TagSet:
        """The canonical tag set of ``labels`` (:func:`tag_names`)."""
        return cls(tag_names(labels, scheme), scheme)

    def __len__(self) -> int:
        return len(self.tags)

    @property
    def types(self) -> tuple[str, ...]:
        """Entity types, in first-seen order of the tags."""
        return types_of_tags(self.tags)

    @property
    def o(self) -> int:
        """Column of ``O``."""
        return self._col["O"]

    def column(self, tag: str) -> int:
        """Column of ``tag``, or -1 when the tag set has no such tag."""
        return self._col.get(tag, -1)

    def type_columns(self, labels: Sequence[str]) -> np.ndarray:
        """(n_tags,) int64: index into ``labels`` of each column's type (-1: ``O`` / other)."""
        pos = {lab: i for i, lab in enumerate(labels)}
        out = np.full(len(self.tags), -1, dtype=np.int64)
        for j, t in enumerate(self.tags):
            p, typ = split_tag(t)
            if p != "O":
                out[j] = pos.get(typ, -1)
        return out

    def check_labels(self, labels: Sequence[str]) -> None:
        """Raise :class:`DataError` when the tags name types that are not ``labels``."""
        extra = sorted(set(self.types) - set(labels))
        if extra and labels:
            raise DataError(f"tag list names entity types {extra} that are not dataset labels "
                            f"{list(labels)}")

    def to_dict(self) -> dict[str, object]:
        return {"tags": list(self.tags), "scheme": self.scheme}


# ------------------------------------------------------------------------------ encoding


def _prefix_columns(tagset: TagSet, labels: Sequence[str], prefix: str) -> np.ndarray:
    return np.array([tagset.column(f"{prefix}-{lab}") for lab in labels], dtype=np.int64)


def encode_columns(
    n_tokens: int,
    t0: np.ndarray,
    t1: np.ndarray,
    label: np.ndarray,
    labels: Sequence[str],
    tagset: TagSet,
) -> np.ndarray:
    """Gold tag ids (columns of ``tagset``) of every token, from its gold token spans.

    Parameters
    ----------
    n_tokens : total tokens (flattened over the dataset)
    t0, t1 : (n_spans,) int, global half-open token ranges, sorted, non-overlapping, non-empty
    label : (n_spans,) int, index into ``labels``
    labels : entity types
    tagset : the columns; spans are written in its scheme

    Returns
    -------
    (n_tokens,) int64; ``O`` outside spans.  Raises :class:`DataError` (with the span's row) when
    the tag set has no column for a tag the spans need.

    >>> ts = TagSet.for_labels(["PER"], "bioes")
    >>> [ts.tags[i] for i in encode_columns(5, np.array([0, 2]), np.array([1, 5]),
    ...                                     np.array([0, 0]), ["PER"], ts)]
    ['S-PER', 'O', 'B-PER', 'I-PER', 'E-PER']
    """
    t0 = np.asarray(t0, dtype=np.int64)
    t1 = np.asarray(t1, dtype=np.int64)
    lab = np.asarray(label, dtype=np.int64)
    out = np.full(n_tokens, tagset.o, dtype=np.int64)
    if not len(t0):
        return out
    sc = get_scheme(tagset.scheme)
    length = t1 - t0
    cols = {p: _prefix_columns(tagset, labels, p) for p in ("B", "I", sc.end, sc.single) if p}
    begin = "I" if sc.name == "iob1" else "B"
    first = cols[begin][lab]
    if sc.name == "iob1":  # B- only right after an adjacent span of the same type
        adj = np.zeros(len(t0), dtype=bool)
        adj[1:] = (t0[1:] == t1[:-1]) & (lab[1:] == lab[:-1])
        first = np.where(adj, cols["B"][lab], first)
    if sc.single is not None:
        first = np.where(length == 1, cols[sc.single][lab], first)
    inner_pos, owner = range_positions(t0 + 1, t1)
    inner = cols["I"][lab][owner]
    if sc.end is not None:
        last = (inner_pos == t1[owner] - 1)
        inner = np.where(last, cols[sc.end][lab][owner], inner)
    bad = np.flatnonzero(first < 0)
    bad_inner = np.flatnonzero(inner < 0)
    if bad.size or bad_inner.size:
        row = int(bad[0]) if bad.size else int(owner[bad_inner[0]])
        raise DataError(f"span row {row}: label {labels[lab[row]]!r} has no "
                        f"{tagset.scheme.upper()} columns in the tag list {list(tagset.tags)}")
    out[t0] = first
    out[inner_pos] = inner
    return out


def range_positions(t0: np.ndarray, t1: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """All positions of half-open ranges ``[t0_i, t1_i)`` and the range each belongs to.

    >>> [a.tolist() for a in range_positions(np.array([0, 5]), np.array([2, 6]))]
    [[0, 1, 5], [0, 0, 1]]
    """
    start = np.asarray(t0, dtype=np.int64)
    length = np.maximum(np.asarray(t1, dtype=np.int64) - start, 0)
    owner = np.repeat(np.arange(len(length), dtype=np.int64), length)
    # position = row number + (range start - the range's first row): one gather, no repeats
    pos = np.arange(owner.shape[0], dtype=np.int64)
    pos += (start - (np.cumsum(length) - length))[owner]
    return pos, owner


# ------------------------------------------------------------------------------ decoding


def decode_columns(
    tag_ids: np.ndarray, offsets: np.ndarray, tagset: TagSet, labels: Sequence[str] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Spans of argmax tags over all tasks at once (lenient: an orphan ``I-X`` begins a span).

    A span starts at every ``B-X``, and at an ``I-X`` that does not continue an ``X`` span of
    the same task (what conlleval and seqeval's default mode do); it runs over the following
    ``I-X`` tokens.  For lenient decoding IOB1 and IOB2 give the same spans (IOB1 only differs
    in which inputs count as valid), so both schemes decode here.

    Parameters
    ----------
    tag_ids : (N,) int, column of each token in ``tagset``
    offsets : (n_tasks + 1,) int, task ``i`` owns tokens ``[offsets[i], offsets[i + 1])``
    tagset : an IOB1 or IOB2 tag set
    labels : label vocabulary of the result (default ``tagset.types``)

    Returns
    -------
    t0, t1 : (n_spans,) int64 global half-open token ranges, sorted
    label : (n_spans,) int64 index into ``labels``

    >>> ts = TagSet.for_labels(["PER"])
    >>> [a.tolist() for a in decode_columns(np.array([1, 2, 2, 0, 2, 1]), np.array([0, 4, 6]),
    ...                                     ts)]
    [[0, 4, 5], [3, 5, 6], [0, 0, 0]]
    """
    if tagset.scheme not in DECODABLE:
        raise DataError(f"cannot decode {tagset.scheme.upper()} probabilities; give IOB2 or IOB1 "
                        "tags (BIOES/BILOU model outputs are folded onto IOB2 by the runtime)")
    labels = tuple(tagset.types if labels is None else labels)
    ids = np.asarray(tag_ids, dtype=np.int64)
    n = ids.shape[0]
    typ_of_col = tagset.type_columns(labels)
    is_b_col = np.array([t.startswith("B-") for t in tagset.tags], dtype=bool)
    typ = typ_of_col[ids] if n else np.zeros(0, dtype=np.int64)
    is_b = is_b_col[ids] if n else np.zeros(0, dtype=bool)
    task_start = np.zeros(n, dtype=bool)
    off = np.asarray(offsets, dtype=np.int64)
    task_start[off[:-1][off[:-1] < n]] = True
    prev_typ = np.empty(n, dtype=np.int64)
    if n:
        prev_typ[0] = -1
        prev_typ[1:] = typ[:-1]
    start = (typ >= 0) & (is_b | task_start | (prev_typ != typ))
    brk = (typ < 0) | start | task_start
    starts = np.flatnonzero(start)
    brk_pos = np.flatnonzero(brk)
    nxt = np.searchsorted(brk_pos, starts, side="right")
    ends = np.where(nxt < brk_pos.size, brk_pos[np.minimum(nxt, max(brk_pos.size - 1, 0))], n)
    return starts.astype(np.int64), ends.astype(np.int64), typ[starts].astype(np.int64)


def decode_probs(
    probs: np.ndarray, tags: Sequence[str] | TagSet, *, scheme: str = "iob2"
) -> tuple[list[TokenSpan], np.ndarray]:
    """Argmax-decode one task (:func:`decode_columns` on its rows).

    Parameters
    ----------
    probs : (n_tokens, n_tags) float
    tags : tag name of each column (with ``scheme``), or a :class:`TagSet`

    Returns
    -------
    spans : half-open token spans
    scores : (n_spans,) float32, mean over the span's tokens of the argmax probability
    """
    ts = tags if isinstance(tags, TagSet) else TagSet(tuple(tags), scheme)
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(ts):
        raise DataError(f"probs must have shape (n_tokens, {len(ts)}), got {probs.shape}")
    if probs.shape[0] == 0:
        return [], np.zeros(0, dtype=np.float32)
    best = probs.argmax(axis=1)
    conf = probs[np.arange(len(best)), best]
    labels = ts.types
    t0, t1, lab = decode_columns(best, np.array([0, len(best)]), ts, labels)
    spans = [TokenSpan(a, b, labels[k]) for a, b, k in zip(t0.tolist(), t1.tolist(), lab.tolist())]
    csum = np.concatenate([[0.0], np.cumsum(conf, dtype=np.float64)])
    scores = ((csum[t1] - csum[t0]) / (t1 - t0)).astype(np.float32) if len(t0) else (
        np.zeros(0, dtype=np.float32))
    return spans, scores


def task_confidence(probs: np.ndarray) -> float:
    """Confidence of a whole task: the argmax probability of its least confident token.

    1.0 for an empty task.  Sorting tasks ascending by this value gives an
    uncertainty-sampling queue (least-confidence sampling).
    """
    probs = np.asarray(probs)
    if probs.shape[0] == 0:
        return 1.0
    return float(probs.max(axis=1).min())


def task_entropy(probs: np.ndarray) -> float:
    """Mean per-token entropy normalised by ``log(n_tags)``, in ``[0, 1]`` (0 for empty)."""
    probs = np.asarray(probs, dtype=np.float64)
    if probs.shape[0] == 0 or probs.shape[1] < 2:
        return 0.0
    p = np.clip(probs, 1e-12, 1.0)
    ent = -(p * np.log(p)).sum(axis=1) / np.log(probs.shape[1])
    return float(np.clip(ent.mean(), 0.0, 1.0))
