"""Fingerprints of the tasks a model trained on: did this model see these tasks?

A model that trained on a task has memorised its labels, so its probabilities make the task look
clean whatever its labels are: DEP from it is *in-sample* and misses the errors it is meant to
find.  A training therefore stores, next to the model (:data:`FILE`), two sorted ``uint64``
arrays:

``texts``     a hash of each training task's text (the model saw this text);
``labelled``  a hash of the text *and* its gold spans (the model saw this text with these labels).

:func:`seen` tells, for the tasks of a corpus, which the model saw; ``analyze --model`` refuses an
in-sample model with one line, and the backend does not overwrite a cross-fitted DEP with an
in-sample one.  Hashes are BLAKE2b (8 bytes) of UTF-8; 1 M tasks take 16 MB.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .corpus import Corpus

__all__ = ["FILE", "Fingerprints", "labelled_hashes", "load", "save", "seen", "text_hashes"]

#: file name inside a model directory
FILE = "trained_tasks.npz"


def _h(payload: str) -> int:
    return int.from_bytes(hashlib.blake2b(payload.encode("utf-8", "surrogatepass"),
                                          digest_size=8).digest(), "little")


def text_hashes(texts: list[str]) -> np.ndarray:
    """(n,) uint64 hash of each text."""
    return np.fromiter((_h(t) for t in texts), dtype=np.uint64, count=len(texts))


def labelled_hashes(corpus: Corpus, tasks: np.ndarray | list[int] | None = None) -> np.ndarray:
    """(n,) uint64 hash of each task's text with its gold spans (character offsets + label);
    ``tasks``: corpus positions (default all)."""
    idx = np.arange(corpus.n_tasks) if tasks is None else np.asarray(tasks, dtype=np.int64)
    g = corpus.gold.chars
    bounds = np.searchsorted(g.task, np.arange(corpus.n_tasks + 1))
    starts, ends, labs = g.start.tolist(), g.end.tolist(), g.label.tolist()
    names = g.labels
    out = np.empty(len(idx), dtype=np.uint64)
    for j, t in enumerate(idx.tolist()):
        spans = ";".join(f"{starts[r]},{ends[r]},{names[labs[r]]}"
                         for r in range(bounds[t], bounds[t + 1]))
        out[j] = _h(f"{corpus.texts[t]}\x00{spans}")
    return out


@dataclass(frozen=True)
class Fingerprints:
    """Sorted hashes of a model's training tasks (see the module docstring)."""

    texts: np.ndarray
    labelled: np.ndarray

    @classmethod
    def of(cls, corpus: Corpus, tasks: np.ndarray | list[int]) -> Fingerprints:
        idx = np.asarray(tasks, dtype=np.int64)
        return cls(np.unique(text_hashes([corpus.texts[i] for i in idx.tolist()])),
                   np.unique(labelled_hashes(corpus, idx)))

    def __len__(self) -> int:
        return int(self.texts.size)


def save(fp: Fingerprints, model_dir: str | os.PathLike[str]) -> Path:
    path = Path(model_dir) / FILE
    np.savez_compressed(path, texts=fp.texts, labelled=fp.labelled)
    return path


def load(model_dir: str | os.PathLike[str]) -> Fingerprints | None:
    """The model's fingerprints, or None when it has none (trained elsewhere, or before they
    were written)."""
    path = Path(model_dir) / FILE
    if not path.is_file():
        return None
    with np.load(path) as z:
        return Fingerprints(np.asarray(z["texts"], dtype=np.uint64),
                            np.asarray(z["labelled"], dtype=np.uint64))


def _member(sorted_hashes: np.ndarray, values: np.ndarray) -> np.ndarray:
    if not sorted_hashes.size:
        return np.zeros(len(values), dtype=bool)
    pos = np.minimum(np.searchsorted(sorted_hashes, values), sorted_hashes.size - 1)
    return np.asarray(sorted_hashes[pos] == values)


def seen(fp: Fingerprints, corpus: Corpus, *, labels: bool = False) -> np.ndarray:
    """(n_tasks,) bool: the model trained on this task's text (``labels=True``: on this text
    with exactly these gold spans)."""
    if labels:
        return _member(fp.labelled, labelled_hashes(corpus))
    return _member(fp.texts, text_hashes(list(corpus.texts)))
