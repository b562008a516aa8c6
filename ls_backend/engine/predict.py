"""Model inference on Ray Data: ``map_batches`` over an actor pool, one model per actor.

:func:`predict_on_ray` takes the items (``TokenizedText``) of one job — a file, or one window of
Label Studio pages — puts them in a Ray Dataset and maps it with :class:`Predictor` actors.
Each actor loads the model once (``NerModel.load`` with the serving options: device, attention,
compile) and runs the same batched :meth:`NerModel.predict` as the local engine; the driver gets
``(index, TaskPrediction)`` pairs back as batches finish and puts them in input order.

Rows travel as pickled bytes (an item and its given spans in, a ``TaskPrediction`` out): the
probabilities are ragged ``(n_tokens, n_tags)`` arrays, which Arrow would otherwise convert
row by row.  An actor whose process dies is restarted by Ray and its batch retried; nothing
here writes anywhere, so a retried batch cannot write twice (writes are the driver's job).
"""

from __future__ import annotations

import logging
import os
import pickle
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from . import EngineOptions
from .cluster import RaySession, import_ray

log = logging.getLogger(__name__)

__all__ = ["Predictor", "predict_on_ray"]

#: test switch: when set to a path that does not exist yet, the first actor batch creates it
#: and kills its own process (``os._exit``), so tests can watch Ray restart the actor and
#: retry the batch.  Never set in production.
FAULT_ENV = "NERQ_RAY_FAULT_ONCE"


class Predictor:
    """A Ray Data actor: one loaded model, batches of pickled items in, predictions out."""

    def __init__(self, model: str, load_options: dict[str, Any], threads: int,
                 batch_tokens: int) -> None:
        import torch

        from ls_backend.runtime import NerModel

        torch.set_num_threads(threads)
        self.model = NerModel.load(model, **load_options)
        self.batch_tokens = batch_tokens

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        marker = os.environ.get(FAULT_ENV)
        if marker and not os.path.exists(marker):
            with open(marker, "w", encoding="utf-8") as fh:
                fh.write(str(os.getpid()))
            os._exit(17)
        rows = [pickle.loads(b) for b in batch["x"]]
        items = [r[0] for r in rows]
        spans = [r[1] for r in rows]
        preds = self.model.predict(items, batch_tokens=self.batch_tokens,
                                   spans=None if all(s is None for s in spans) else
                                   [s or [] for s in spans])
        blobs = np.empty(len(preds), dtype=object)
        blobs[:] = [pickle.dumps(p, protocol=5) for p in preds]
        return {"i": np.asarray(batch["i"], dtype=np.int64), "p": blobs}


def plan_batches(n_items: int, workers: int, batch_size: int) -> tuple[int, int, int]:
    """``(actors, items per actor call, calls)`` for ``n_items``: at most ``batch_size`` items
    per call, the same number of calls for every actor, calls of near-equal size.

    Large calls matter: the runtime sorts a call's items by length and packs them into
    forward passes, so on CPU 256 items per call run at ~0.65x the speed of 2,000
    (``bench/bench_ray.py``).

    >>> plan_batches(3453, 2, 1024)
    (2, 864, 4)
    >>> plan_batches(10, 4, 1024)
    (4, 3, 4)
    """
    workers = max(1, min(workers, n_items))
    rounds = -(-n_items // (workers * batch_size))
    calls = workers * rounds
    return workers, -(-n_items // calls), calls


def predict_on_ray(
    session: RaySession,
    options: EngineOptions,
    model: str,
    items: Sequence[Any],
    *,
    load_options: dict[str, Any],
    spans: Sequence[Sequence[Any]] | None = None,
    batch_size: int = 1024,
    batch_tokens: int = 4096,
) -> Iterator[tuple[int, Any]]:
    """Predict ``items`` on Ray; yields ``(index into items, TaskPrediction)`` as batches finish
    (in no particular order; every index exactly once).

    Parameters
    ----------
    session : from :func:`ls_backend.engine.cluster.ray_session` (inside its ``with`` block)
    model : model directory or HF path, readable at the same path on every worker
    load_options : ``NerModel.load`` keywords (``labels``, ``label_map``, ``device``, ...)
    spans : per item, token spans whose embeddings come back in ``extra_embeddings``
    batch_size : items per actor call at most (see :func:`plan_batches`)
    """
    ray = import_ray()
    if not items:
        return
    if spans is not None and len(spans) != len(items):
        raise ValueError(f"spans has {len(spans)} entries for {len(items)} items")
    gpus = session.gpus_per_worker(options)
    if str(load_options.get("device") or "auto").startswith("cpu"):
        gpus = 0.0
    workers, batch_size, n_batches = plan_batches(len(items), session.workers(options),
                                                  batch_size)
    rows = [{"i": i, "x": pickle.dumps((it, None if spans is None else list(spans[i])),
                                       protocol=5)} for i, it in enumerate(items)]
    ds = ray.data.from_items(rows, override_num_blocks=n_batches)
    out = ds.map_batches(
        Predictor,
        fn_constructor_kwargs={"model": model, "load_options": dict(load_options),
                               "threads": options.cpus_per_worker,
                               "batch_tokens": batch_tokens},
        compute=ray.data.ActorPoolStrategy(size=workers),
        batch_size=batch_size, batch_format="numpy", num_cpus=options.cpus_per_worker,
        num_gpus=gpus, zero_copy_batch=True,
    )
    log.debug("Ray Data: %d items, %d actor(s), batches of %d", len(items), workers, batch_size)
    for b in out.iter_batches(batch_size=None, batch_format="numpy"):
        for i, blob in zip(b["i"].tolist(), b["p"]):
            yield int(i), pickle.loads(blob)


def predict_all_on_ray(session: RaySession, options: EngineOptions, model: str,
                       items: Sequence[Any], *, progress: Any = None,
                       **kwargs: Any) -> list[Any]:
    """:func:`predict_on_ray` gathered into a list in input order (``progress``: a callable
    given the number of items each finished batch held)."""
    out: list[Any] = [None] * len(items)
    for i, pred in predict_on_ray(session, options, model, items, **kwargs):
        if out[i] is not None:
            raise RuntimeError(f"Ray returned item {i} twice")
        out[i] = pred
        if progress is not None:
            progress(1)
    missing = [i for i, p in enumerate(out) if p is None]
    if missing:
        raise RuntimeError(f"Ray returned no prediction for {len(missing)} item(s), e.g. "
                           f"#{missing[0]}")
    return out


def predict_items(options: EngineOptions, model: str, items: Sequence[Any], *,
                  load_options: dict[str, Any], spans: Sequence[Sequence[Any]] | None = None,
                  batch_size: int = 1024, batch_tokens: int = 4096,
                  progress: bool = False) -> list[Any]:
    """One job on Ray, start to end: connect (:func:`ray_session`), predict every item, return
    the ``TaskPrediction`` list in input order; ``progress``: a tqdm bar on stderr (items done
    / total, rate, ETA)."""
    import sys

    from .cluster import ray_session

    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=len(items), unit="task", desc="predict (ray)", file=sys.stderr)
    try:
        with ray_session(options) as session:
            return predict_all_on_ray(session, options, model, items,
                                      progress=bar.update if bar is not None else None,
                                      load_options=load_options, spans=spans,
                                      batch_size=batch_size, batch_tokens=batch_tokens)
    finally:
        if bar is not None:
            bar.close()
