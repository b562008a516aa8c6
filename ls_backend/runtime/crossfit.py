"""Cross-fitting: out-of-sample probabilities for every annotated task.

The annotated tasks are shuffled with ``seed`` and split into ``folds`` near-equal parts; for
each part a model is trained on the other parts (:func:`ls_backend.runtime.train`) and predicts
the held-out part.  Every annotated task is thus scored by a model that never saw its labels,
which is what confident-learning style error detection needs.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .loading import NerModel
from .train import annotated_indices, train

log = logging.getLogger(__name__)

__all__ = ["crossfit", "fold_assignment"]


def fold_assignment(indices: list[int], folds: int, seed: int) -> list[np.ndarray]:
    """Split task indices into ``folds`` held-out parts (shuffled with ``seed``, sorted within)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(indices, dtype=np.int64))
    return [np.sort(part) for part in np.array_split(perm, folds)]


def crossfit(
    dataset: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    keep_models: bool = False,
    batch_tokens: int = 4096,
    **train_kwargs: Any,
) -> list[np.ndarray | None]:
    """K-fold out-of-sample probabilities over the annotated tasks.

    Parameters
    ----------
    dataset : ``analysis.dataset.Dataset``
    folds : number of parts (>= 2, at most the number of annotated tasks)
    seed : fold split and training seed
    out_dir : where fold models are trained (``out_dir/fold_k``); default a temporary directory.
        Fold models are deleted after predicting unless ``keep_models``.
    **train_kwargs : passed to :func:`train` (``model``, ``epochs``, ``lr``, ``device``,
        ``max_steps``, ``tasks`` (restricts the pool), ...); ``record_dynamics`` defaults to False

    Returns
    -------
    list, one entry per task of ``dataset.tasks`` in dataset order: ``(n_tokens, n_tags)``
    float32 out-of-sample probabilities (columns ``tag_names(dataset.labels)``) for annotated
    tasks, ``None`` for unannotated ones.
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    pool = annotated_indices(dataset, train_kwargs.pop("tasks", None))
    if len(pool) < folds:
        raise ValueError(
            f"cross-fitting with {folds} folds needs at least {folds} annotated tasks, "
            f"got {len(pool)}"
        )
    train_kwargs.setdefault("record_dynamics", False)
    device = train_kwargs.get("device", "auto")
    out: list[np.ndarray | None] = [None] * len(dataset.tasks)
    parts = fold_assignment(pool, folds, seed)
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nerq-crossfit-")
        base = Path(tmp.name)
    else:
        base = Path(out_dir)
    try:
        for k, held in enumerate(parts):
            held_set = set(held.tolist())
            train_idx = [i for i in pool if i not in held_set]
            fold_dir = base / f"fold_{k}"
            log.info("fold %d/%d: train %d tasks, predict %d", k + 1, folds, len(train_idx),
                     len(held))
            res = train(dataset, fold_dir, seed=seed, tasks=train_idx, **train_kwargs)
            if not res.model_dir:
                raise RuntimeError(f"fold {k}: training was stopped before it finished")
            model = NerModel.load(res.model_dir, labels=dataset.labels, device=device)
            preds = model.predict([dataset.tasks[i].tokens for i in held.tolist()],
                                  batch_tokens=batch_tokens)
            for i, p in zip(held.tolist(), preds):
                out[i] = p.probs
            del model
            gc.collect()
            if not keep_models:
                shutil.rmtree(fold_dir, ignore_errors=True)
    finally:
        if tmp is not None:
            tmp.cleanup()
    return out
