"""Gold span embeddings from the packaged backbone, for the DEP ``neighbour`` signal.

When the user brings only probabilities (``dep --probs``, ``analyze --probs``), the spans still
get contextual embeddings: the mean last hidden state of the packaged MiniLM over each gold
span's subwords (no trained head needed).  On the real CleanCoNLL errors this moves DEP from
1.10× to 1.23× cleanlab's AP (``bench/bench_real_errors.py`` with and without
``--no-embeddings``).
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def gold_spans_per_task(corpus: Any) -> list[list[Any]]:
    """Each task's gold spans as ``TokenSpan`` lists, in ``corpus.gold_tokens`` order (the row
    order :func:`analysis.dep.compute_dep` expects for ``span_embeddings``)."""
    from analysis.spans import TokenSpan

    gold = corpus.gold_tokens
    per_task: list[list[Any]] = [[] for _ in range(corpus.n_tasks)]
    for t, a, b, lab in zip(gold.task.tolist(), gold.start.tolist(), gold.end.tolist(),
                            gold.label.tolist()):
        per_task[t].append(TokenSpan(a, b, gold.labels[lab]))
    return per_task


def embed_gold_spans(corpus: Any, labels: Any, *, device: str = "auto",
                     model: str | None = None, progress: bool = False) -> np.ndarray:
    """``(n_gold_spans, dim)`` float32, one row per gold span in ``corpus.gold_tokens`` order
    (the order :func:`analysis.dep.compute_dep` expects for ``span_embeddings``).

    ``model``: a backbone path or name (default the packaged MiniLM); loaded offline.
    """
    from .loading import NerModel

    n_gold = len(corpus.gold_tokens.task)
    per_task = gold_spans_per_task(corpus)
    nm = NerModel.load(model, labels=list(labels), device=device, fresh_head=True)
    keep = [i for i, sp in enumerate(per_task) if sp]
    preds = nm.predict([corpus.task_tokens(i) for i in keep], spans=[per_task[i] for i in keep],
                       batch_tokens=8192, progress=progress)
    rows = [np.asarray(p.extra_embeddings, dtype=np.float32) for p in preds]
    out = np.concatenate(rows) if rows else np.zeros((0, nm.embedding_dim), dtype=np.float32)
    if out.shape[0] != n_gold:
        raise ValueError(f"{out.shape[0]} span embeddings for {n_gold} gold spans")
    return out
