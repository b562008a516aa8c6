"""The per-project span index of the backend: gold span embeddings, similar-span look-ups.

faiss indexes are not safe for concurrent add + search: every operation here holds one lock.
The index rows are the corpus's kept gold spans (``analysis.corpus.Corpus.gold_tokens``), whose
embeddings the runtime returns in the same order (``TaskPrediction.extra_embeddings``).
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["update_index", "remove_tasks", "save_index", "similar_spans"]

_INDEX_LOCK = threading.RLock()


def _gold_rows(prepared: Any, preds: Sequence[Any]) -> tuple[np.ndarray | None, dict[str, list]]:
    corpus = prepared.dataset.corpus
    gold = corpus.gold
    kept = gold.kept_rows
    ch = gold.chars
    task_of = ch.task[kept]
    vecs: list[np.ndarray] = []
    meta: dict[str, list[Any]] = {"task": [], "task_id": [], "start": [], "end": [], "text": [],
                                  "label": []}
    bounds = np.searchsorted(task_of, np.arange(corpus.n_tasks + 1))
    for k, (t, pred) in enumerate(zip(prepared.dataset.tasks, preds)):
        rows = kept[bounds[k]:bounds[k + 1]]
        emb = getattr(pred, "extra_embeddings", None)
        if t.id is None or not len(rows) or emb is None or len(emb) != len(rows):
            continue
        vecs.append(np.asarray(emb, dtype=np.float32))
        for r in rows.tolist():
            s, e = int(ch.start[r]), int(ch.end[r])
            meta["task"].append(t.id)
            meta["task_id"].append(t.id)
            meta["start"].append(s)
            meta["end"].append(e)
            meta["text"].append(t.text[s:e])
            meta["label"].append(ch.labels[int(ch.label[r])])
    if not vecs:
        return None, meta
    return np.concatenate(vecs, axis=0), meta


def remove_tasks(index: Any, task_ids: Sequence[int]) -> int:
    """Remove every span of ``task_ids`` from ``index``; returns the number removed."""
    if index is None or len(index) == 0 or not task_ids:
        return 0
    with _INDEX_LOCK:
        meta = index.meta
        ids = meta.index[meta["task_id"].isin(list(task_ids))].to_numpy(dtype=np.int64)
        return int(index.remove(ids))


def update_index(index: Any, prepared: Any, preds: Sequence[Any]) -> Any:
    """Replace the gold spans of the prepared annotated tasks in ``index`` (``None``: build one).

    Returns the index (a new one when ``index`` was ``None`` and there are spans).
    """
    from analysis.similarity import SpanIndex

    vecs, meta = _gold_rows(prepared, preds)
    tids = [t.id for t in prepared.dataset.tasks if t.id is not None and t.gold is not None]
    with _INDEX_LOCK:
        if index is None:
            return None if vecs is None else SpanIndex.build(vecs, meta)
        remove_tasks(index, tids)
        if vecs is not None:
            index.add(vecs, meta)
        return index


def save_index(index: Any, directory: Path) -> None:
    """Persist ``index``: write a sibling directory, then swap it in."""
    if index is None:
        return
    directory = Path(directory)
    tmp = directory.with_name(directory.name + ".tmp")
    with _INDEX_LOCK:
        index.save(tmp)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        if old.exists():
            shutil.rmtree(old, ignore_errors=True)
        directory.rename(old)
    tmp.rename(directory)
    if old.exists():
        shutil.rmtree(old, ignore_errors=True)


def similar_spans(index: Any, spans: list[dict[str, Any]], embeddings: Any, task_id: int | None,
                  k: int) -> None:
    """Fill each span record's ``similar`` with the ``k`` nearest spans of *other* tasks whose
    gold label differs (records and embeddings in the same order)."""
    if index is None or k <= 0 or len(index) == 0 or embeddings is None or not spans:
        return
    vecs = np.asarray(embeddings, dtype=np.float32)
    if vecs.shape[0] != len(spans):
        return
    with _INDEX_LOCK:
        hits = index.query(vecs, k, exclude_task=task_id,
                           label_differs_from=[s["label"] for s in spans])
    for row in hits.itertuples(index=False):
        spans[int(row.query)]["similar"].append({
            "task_id": None if row.task_id is None else int(row.task_id),
            "start": int(row.start), "end": int(row.end), "text": row.text,
            "label": row.label, "similarity": round(float(row.similarity), 4)})
