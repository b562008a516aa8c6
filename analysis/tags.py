"""From per-token tag probabilities to spans: the one decoding used by runtime and DEP.

``probs`` rows are the task's tokens, columns are ``tags`` (``tags[0] == "O"`` by convention of
:func:`tag_names`, but any order works).  Decoding takes the argmax tag of every token and runs
the scheme decoder leniently (an orphan ``I-X`` begins a span, as conlleval does), so a new span
always starts at ``B-``/``S-``/``U-`` and adjacent same-type entities stay separate.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .schemes import decode, get_scheme, split_tag
from .spans import TokenSpan

__all__ = ["tag_names", "decode_probs", "task_confidence", "task_entropy", "types_of_tags"]


def tag_names(labels: Sequence[str], scheme: str = "iob2") -> tuple[str, ...]:
    """The model tag set for entity ``labels``: ``("O", "B-L1", "I-L1", "B-L2", ...)``.

    >>> tag_names(["PER", "LOC"])
    ('O', 'B-PER', 'I-PER', 'B-LOC', 'I-LOC')
    """
    sc = get_scheme(scheme)
    prefixes = [p for p in ("B", sc.inside, sc.end, sc.single) if p]
    if sc.name == "iob1":
        prefixes = ["B", "I"]
    out = ["O"]
    for lab in labels:
        out.extend(f"{p}-{lab}" for p in prefixes)
    return tuple(out)


def types_of_tags(tags: Sequence[str]) -> tuple[str, ...]:
    """Entity types named by a tag set, in first-seen order."""
    seen: dict[str, None] = {}
    for t in tags:
        p, typ = split_tag(t)
        if p != "O":
            seen.setdefault(typ, None)
    return tuple(seen)


def decode_probs(
    probs: np.ndarray, tags: Sequence[str], *, scheme: str = "iob2"
) -> tuple[list[TokenSpan], np.ndarray]:
    """Argmax-decode one task.

    Parameters
    ----------
    probs : (n_tokens, n_tags) float
    tags : tag name of each column

    Returns
    -------
    spans : half-open token spans
    scores : (n_spans,) float32, mean over the span's tokens of the argmax probability
    """
    probs = np.asarray(probs)
    if probs.ndim != 2 or probs.shape[1] != len(tags):
        raise ValueError(f"probs must have shape (n_tokens, {len(tags)}), got {probs.shape}")
    if probs.shape[0] == 0:
        return [], np.zeros(0, dtype=np.float32)
    best = probs.argmax(axis=1)
    conf = probs[np.arange(len(best)), best]
    dec = decode([tags[i] for i in best.tolist()], scheme, strict=False, repair="begin")
    spans = list(dec.spans)
    csum = np.concatenate([[0.0], np.cumsum(conf, dtype=np.float64)])
    scores = np.array(
        [(csum[s.end] - csum[s.start]) / (s.end - s.start) for s in spans], dtype=np.float32
    )
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
