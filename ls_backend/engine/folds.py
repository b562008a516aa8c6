"""Cross-fit folds as Ray tasks: one task per fold, in parallel.

Each task runs :func:`ls_backend.runtime.crossfit.run_fold` — the function the local engine
runs — with the dataset from Ray's object store, ``cpus_per_worker`` torch threads and, when
the cluster has GPUs, one GPU (``num_gpus``).  Same seeds, same fold plan, same code: on CPU the
probabilities equal the local engine's bit for bit when the thread count per fold is the same
(torch reductions depend on the thread count; run the local engine with ``OMP_NUM_THREADS`` /
``torch.set_num_threads`` set to ``--ray-cpus-per-worker`` to compare).  On GPU, cuBLAS and
atomics make training nondeterministic at the last bits on either engine.

A worker process that dies (OOM, node lost) is retried by Ray (``max_retries``); the fold then
trains again (resuming from its checkpoint when it lands on the same machine and ``out_dir``
is given).  An exception in the fold itself is not retried: it is re-raised here naming the
fold.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from . import EngineOptions
from .cluster import import_ray, ray_session

log = logging.getLogger(__name__)

__all__ = ["run_folds_on_ray"]

#: retries of a fold whose worker process died (not of an exception raised by the fold)
FOLD_RETRIES = 2


def _fold_task(dataset: Any, fold: int, held: np.ndarray, train_idx: list[int], base: str,
               threads: int, common: dict[str, Any]) -> Any:
    """Body of one fold's Ray task (runs in a Ray worker process)."""
    import torch

    from ls_backend.runtime.crossfit import run_fold

    torch.set_num_threads(threads)
    return run_fold(dataset, fold, held, train_idx, base, **common)


def _cancel(ray: Any, refs: list[Any]) -> None:
    """Cancel the folds still running and collect their results, so Ray does not report their
    errors later as unhandled."""
    for ref in refs:
        ray.cancel(ref, force=True)
    for ref in refs:
        try:
            ray.get(ref, timeout=30)
        except Exception:  # noqa: BLE001 - cancelled or failed: the first error is the one raised
            pass


def _raise_fold_error(ray: Any, exc: BaseException, k: int, n: int) -> NoReturn:
    """One line naming the fold: its own exception (a ``ValueError`` or ``OSError`` stays one),
    or a worker lost after :data:`FOLD_RETRIES` retries."""
    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = getattr(exc, "cause", None) or exc
        # the user's errors keep their kind (the CLI prints them as one line, exit 2)
        kind: type[Exception] = (ValueError if isinstance(cause, ValueError) else
                                 OSError if isinstance(cause, OSError) else RuntimeError)
        raise kind(f"cross-fit fold {k + 1}/{n} failed on Ray: {type(cause).__name__}: "
                   f"{cause}") from None
    raise RuntimeError(f"cross-fit fold {k + 1}/{n}: its Ray worker was lost "
                       f"{FOLD_RETRIES + 1} times: {exc}") from None


def run_folds_on_ray(dataset: Any, plan: Sequence[tuple[int, np.ndarray, list[int]]],
                     base: str | os.PathLike[str], *, options: EngineOptions | None = None,
                     **common: Any) -> list[Any]:
    """Run ``plan`` (``(fold, held, train_idx)`` per fold) as Ray tasks; ``FoldOutput`` per fold.

    At most ``workers`` folds run at a time (``--ray-workers``; default what the cluster's GPUs
    or CPUs hold at ``--ray-cpus-per-worker`` / ``--ray-gpus-per-worker`` each).

    ``common``: the keyword arguments of ``run_fold`` (seed, spans, train settings).  The
    ``progress`` bars of the trainings are off on the workers; the driver logs each finished
    fold with the elapsed time and an estimate of the rest.
    """
    ray = import_ray()
    opts = options or EngineOptions(engine="ray")
    show = bool(common.pop("progress", False))
    common["progress"] = False
    with ray_session(opts) as session:
        gpus = session.gpus_per_worker(opts)
        if gpus > 0 and common.get("device", "auto") in ("cpu",):
            gpus = 0.0
        slots = session.workers(opts, cap=len(plan))
        log.info("cross-fit on Ray: %d folds, %d at a time (%d CPU%s each)", len(plan),
                 slots, opts.cpus_per_worker, f", {gpus:g} GPU" if gpus else "")
        task = ray.remote(_fold_task).options(
            num_cpus=opts.cpus_per_worker, num_gpus=gpus, max_retries=FOLD_RETRIES,
            retry_exceptions=False, name="nerq-crossfit-fold")
        ds_ref = ray.put(dataset)
        t0 = time.time()
        todo = list(plan)
        refs: dict[Any, int] = {}
        outs: list[Any] = []
        pending: list[Any] = []
        while todo or pending:
            while todo and len(pending) < slots:  # at most `slots` folds in flight
                k, held, train_idx = todo.pop(0)
                ref = task.remote(ds_ref, k, held, list(train_idx), str(Path(base)),
                                  opts.cpus_per_worker, common)
                refs[ref] = k
                pending.append(ref)
            done, pending = ray.wait(pending, num_returns=1)
            for ref in done:
                k = refs[ref]
                try:
                    outs.append(ray.get(ref))
                except ray.exceptions.RayError as exc:
                    _cancel(ray, pending)  # one failed fold fails the cross-fit: stop the rest
                    _raise_fold_error(ray, exc, k, len(plan))

                elapsed = time.time() - t0
                left = elapsed / len(outs) * (len(plan) - len(outs))
                msg = (f"cross-fit: fold {k + 1} done ({len(outs)}/{len(plan)}), "
                       f"{elapsed:.0f} s elapsed, ~{left:.0f} s left")
                log.info(msg)
                if show:
                    print(msg, file=sys.stderr, flush=True)
    return outs
