"""Every gold and predicted span of a dataset, with its error kind, as the console draws them.

:func:`span_columns` reads the alignment the analysis already made (``comparison.alignment``:
DEP's, or the stored predictions') — nothing is aligned again — and returns plain columns for
the page: one row per validated gold span (``corpus.gold.chars``, character offsets, half-open
``[start, end)``), one per predicted span, and the aligned (gold, predicted) pairs.  The page
derives every chart and the task table from these columns, so a filter re-computes F1,
confusion and error kinds over the chosen tasks with the same rules as :mod:`analysis.metrics`
(a gold span of kind ``correct`` is an exact match; a pair is one confusion count; a ``missed``
gold span counts against ``none``, a ``ghost`` prediction from ``none``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["WORDS", "span_columns"]

#: the words of a span text, as :func:`analysis.review.sections.high_dep_words` splits them
WORDS = re.compile(r"\w+")


def _labels(corpus: Any, comparison: Any) -> list[str]:
    """One label vocabulary for gold and predictions: the alignment's (sorted union) or the
    corpus's when there is no model output."""
    if comparison is not None:
        return list(comparison.alignment.labels)
    return list(corpus.gold.chars.labels)


def _words(texts: Sequence[str], rows: np.ndarray) -> dict[str, Any]:
    """Word ids of the span texts of ``rows`` over one vocabulary (first-seen order)."""
    vocab: dict[str, int] = {}
    ids = []
    for r in rows.tolist():
        ids.append([vocab.setdefault(w, len(vocab)) for w in WORDS.findall(str(texts[r]).lower())])
    return {"vocab": list(vocab), "rows": rows.tolist(), "ids": ids}


def span_columns(corpus: Any, comparison: Any, *, span_dep: np.ndarray | None = None,
                 threshold: float | None = None) -> dict[str, Any]:
    """The span columns of the console (see the module docstring).

    Parameters
    ----------
    corpus : :class:`analysis.corpus.Corpus`
    comparison : :class:`analysis.review.comparison.Comparison` or None (gold only: kinds -1)
    span_dep : (n_gold,) float, DEP of every row of ``corpus.gold.chars`` (NaN: none)
    threshold : DEP at or above which a span is "high DEP" (its words are listed)

    Returns
    -------
    ``{"labels": [...], "gold": {"t", "s", "e", "l", "k", "dep"}, "pred": {"t", "s", "e", "l",
    "k"}, "pairs": {"g", "p"}, "words": {"vocab", "rows", "ids"}}``: ``t`` the task row, ``l``
    an index into ``labels``, ``k`` an index into :data:`analysis.errors.KINDS` (-1: the span is
    not in the token view, or there is no model output), ``pairs`` rows into ``gold`` and
    ``pred``; ``words``: for each high-DEP gold span row, the ids of its words in ``vocab``.
    """
    gold = corpus.gold.chars
    labels = _labels(corpus, comparison)
    index = {lab: i for i, lab in enumerate(labels)}
    g_map = np.array([index[lab] for lab in gold.labels], dtype=np.int64)
    g_lab = g_map[gold.label] if len(gold) else np.zeros(0, np.int64)
    kind = np.full(len(gold), -1, dtype=np.int64)
    dep = np.full(len(gold), np.nan) if span_dep is None else np.asarray(span_dep, np.float64)
    if dep.shape != (len(gold),):
        raise ValueError(f"span_dep must have one value per gold span ({len(gold)}), got "
                         f"shape {dep.shape}")
    out: dict[str, Any] = {"labels": labels}
    empty: dict[str, list[int]] = {"t": [], "s": [], "e": [], "l": [], "k": []}
    out["pred"], out["pairs"] = empty, {"g": [], "p": []}
    if comparison is not None:
        al = comparison.alignment
        kept = np.asarray(corpus.gold.kept_rows, dtype=np.int64)
        pred = comparison.pred_chars
        if len(kept) != len(al.gold) or len(pred) != len(al.pred):
            raise RuntimeError(f"internal: the alignment has {len(al.gold)} gold / "
                               f"{len(al.pred)} predicted spans, the corpus {len(kept)} kept "
                               f"gold spans and {len(pred)} predicted ones")
        kind[kept] = al.gold_kind
        out["pred"] = {"t": pred.task.tolist(), "s": pred.start.tolist(),
                       "e": pred.end.tolist(), "l": al.pred.label.tolist(),
                       "k": al.pred_kind.tolist()}
        out["pairs"] = {"g": kept[al.pair_gold].tolist(), "p": al.pair_pred.tolist()}
    finite = np.isfinite(dep)
    out["gold"] = {"t": gold.task.tolist(), "s": gold.start.tolist(), "e": gold.end.tolist(),
                   "l": g_lab.tolist(), "k": kind.tolist(),
                   "dep": [round(v, 4) if ok else None
                           for v, ok in zip(dep.tolist(), finite.tolist())]}
    hi = np.zeros(len(gold), dtype=bool) if threshold is None else \
        finite & (np.nan_to_num(dep, nan=0.0) >= threshold)
    out["words"] = _words(corpus.gold_text, np.flatnonzero(hi))
    return out
