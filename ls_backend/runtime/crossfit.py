"""Cross-fitting: out-of-sample probabilities for every annotated task.

The annotated tasks are shuffled with ``seed`` and split into ``folds`` near-equal parts; for
each part a model is trained on the other parts (:func:`ls_backend.runtime.train`) and predicts
the held-out part.  Every annotated task is thus scored by a model that never saw its labels,
which is what confident-learning style error detection needs.

One fold is :func:`run_fold` (train, load, predict, clean up); :func:`crossfit_outputs` runs the
folds one after another in this process (``engine="local"``) or as parallel Ray tasks
(``engine="ray"``, :mod:`ls_backend.engine.folds`), which call the very same :func:`run_fold`.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .loading import NerModel
from .train import annotated_indices, train
from .train_plan import check_args

log = logging.getLogger(__name__)

__all__ = ["CrossfitResult", "FoldOutput", "crossfit", "crossfit_outputs", "fold_assignment",
           "run_fold"]


def fold_assignment(indices: list[int], folds: int, seed: int) -> list[np.ndarray]:
    """Split task indices into ``folds`` held-out parts (shuffled with ``seed``, sorted within)."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(np.asarray(indices, dtype=np.int64))
    return [np.sort(part) for part in np.array_split(perm, folds)]


@dataclass(frozen=True)
class FoldOutput:
    """What one fold returns.

    Attributes
    ----------
    fold : 0-based fold number
    held : (n_held,) int64 task indices the fold model predicted (it never trained on them)
    probs : per held task, ``(n_tokens, n_tags)`` float32
    embeddings : per held task, ``(n_spans, hidden)`` float32 embeddings of the caller's spans
        (``run_fold(..., spans=...)``), else None
    seconds : wall time of the fold
    """

    fold: int
    held: np.ndarray
    probs: list[np.ndarray]
    embeddings: list[np.ndarray] | None
    seconds: float


@dataclass(frozen=True)
class CrossfitResult:
    """Out-of-fold outputs in dataset order.

    Attributes
    ----------
    probs : one entry per task of ``dataset.tasks``: ``(n_tokens, n_tags)`` float32 for
        annotated tasks (columns ``tag_names(dataset.labels)``), ``None`` for unannotated ones
    embeddings : with ``spans=``: per task the out-of-fold embeddings of its given spans
        (``None`` for unannotated tasks); else None
    folds : held-out task indices of each fold
    seconds : wall time of each fold
    engine : ``local`` or ``ray``
    """

    probs: list[np.ndarray | None]
    embeddings: list[np.ndarray | None] | None
    folds: list[np.ndarray]
    seconds: list[float]
    engine: str


def run_fold(
    dataset: Any,
    fold: int,
    held: np.ndarray,
    train_idx: Sequence[int],
    base: str | os.PathLike[str],
    *,
    seed: int,
    spans: Sequence[Sequence[Any]] | None = None,
    keep_models: bool = False,
    batch_tokens: int = 4096,
    **train_kwargs: Any,
) -> FoldOutput:
    """Train fold ``fold`` on ``train_idx`` under ``base/fold_<fold>`` and predict ``held``.

    ``spans``: per task of ``dataset`` (all of them, indexed like ``dataset.tasks``), token
    spans whose embeddings the fold model returns for the held tasks.  The fold model is deleted
    afterwards unless ``keep_models``.
    """
    import time

    t0 = time.time()
    device = train_kwargs.get("device", "auto")
    fold_dir = Path(base) / f"fold_{fold}"
    log.info("fold %d: train %d tasks, predict %d", fold + 1, len(train_idx), len(held))
    res = train(dataset, fold_dir, seed=seed, tasks=list(train_idx), **train_kwargs)
    if not res.model_dir:
        raise RuntimeError(f"fold {fold}: training was stopped before it finished")
    model = NerModel.load(res.model_dir, labels=dataset.labels, device=device)
    rows = held.tolist()
    preds = model.predict([dataset.tasks[i].tokens for i in rows], batch_tokens=batch_tokens,
                          spans=None if spans is None else [spans[i] for i in rows])
    probs = [p.probs for p in preds]
    embs = None if spans is None else [
        p.extra_embeddings if p.extra_embeddings is not None
        else np.zeros((0, model.embedding_dim), np.float32) for p in preds]
    del model, preds
    gc.collect()
    if not keep_models:
        shutil.rmtree(fold_dir, ignore_errors=True)
    return FoldOutput(fold, np.asarray(held, np.int64), probs, embs, time.time() - t0)


def crossfit_outputs(
    dataset: Any,
    *,
    folds: int = 5,
    seed: int = 0,
    out_dir: str | os.PathLike[str] | None = None,
    keep_models: bool = False,
    batch_tokens: int = 4096,
    spans: Sequence[Sequence[Any]] | None = None,
    engine: Literal["local", "ray"] = "local",
    ray_options: Any = None,
    **train_kwargs: Any,
) -> CrossfitResult:
    """K-fold out-of-sample probabilities (and span embeddings) over the annotated tasks.

    Parameters
    ----------
    dataset : ``analysis.dataset.Dataset``
    folds : number of parts (>= 2, at most the number of annotated tasks)
    seed : fold split and training seed
    out_dir : where fold models are trained (``out_dir/fold_k``); default a temporary directory.
        Fold models are deleted after predicting unless ``keep_models``.
    spans : optional, per task, token spans whose out-of-fold embeddings are returned
    engine : ``local`` (folds one after another here) or ``ray`` (one Ray task per fold, see
        :mod:`ls_backend.engine.folds`; ``ray_options`` an ``EngineOptions``); the same seeds
        give the same results on both
    **train_kwargs : passed to :func:`train` (``model``, ``epochs``, ``lr``, ``device``,
        ``max_steps``, ``tasks`` (restricts the pool), ...); ``record_dynamics`` defaults to False

    Returns
    -------
    CrossfitResult
    """
    if folds < 2:
        raise ValueError(f"folds must be >= 2, got {folds}")
    if engine not in ("local", "ray"):
        raise ValueError(f"engine must be 'local' or 'ray', got {engine!r}")
    pool = annotated_indices(dataset, train_kwargs.pop("tasks", None))
    if len(pool) < folds:
        raise ValueError(
            f"cross-fitting with {folds} folds needs at least {folds} annotated tasks, "
            f"got {len(pool)}"
        )
    if spans is not None and len(spans) != len(dataset.tasks):
        raise ValueError(f"spans has {len(spans)} entries for {len(dataset.tasks)} tasks")
    train_kwargs.setdefault("record_dynamics", False)
    # bad training arguments fail here, before any fold starts (here or on Ray)
    check_args(train_kwargs.get("epochs", 3), train_kwargs.get("batch_size", 16),
               train_kwargs.get("lr", 3e-4), train_kwargs.get("max_steps"))
    parts = fold_assignment(pool, folds, seed)
    plan = [(k, held, [i for i in pool if i not in set(held.tolist())])
            for k, held in enumerate(parts)]
    tmp = None
    if out_dir is None:
        tmp = tempfile.TemporaryDirectory(prefix="nerq-crossfit-")
        base = Path(tmp.name)
    else:
        base = Path(out_dir)
    common: dict[str, Any] = dict(seed=seed, spans=spans, keep_models=keep_models,
                                  batch_tokens=batch_tokens, **train_kwargs)
    try:
        if engine == "ray":
            from ls_backend.engine.folds import run_folds_on_ray

            outs = run_folds_on_ray(dataset, plan, base, options=ray_options, **common)
        else:
            outs = [run_fold(dataset, k, held, train_idx, base, **common)
                    for k, held, train_idx in plan]
    finally:
        if tmp is not None:
            tmp.cleanup()
    probs: list[np.ndarray | None] = [None] * len(dataset.tasks)
    embs: list[np.ndarray | None] | None = None if spans is None else [None] * len(dataset.tasks)
    for fo in sorted(outs, key=lambda o: o.fold):
        for j, i in enumerate(fo.held.tolist()):
            probs[i] = fo.probs[j]
            if embs is not None and fo.embeddings is not None:
                embs[i] = fo.embeddings[j]
    return CrossfitResult(probs, embs, list(parts), [o.seconds for o in outs], engine)


def crossfit(dataset: Any, **kwargs: Any) -> list[np.ndarray | None]:
    """:func:`crossfit_outputs` without embeddings: the out-of-fold probabilities per task of
    ``dataset.tasks`` (``None`` for unannotated tasks)."""
    return crossfit_outputs(dataset, **kwargs).probs
