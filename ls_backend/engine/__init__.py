"""Where the heavy jobs run: in this process (``local``, the default) or on Ray (``ray``).

The heavy jobs are the k-fold cross-fit (``train --folds``), bulk prediction (``predict
--project`` / ``--data``) and the model pass of ``analyze --model`` (probabilities and span
embeddings for DEP).  With ``--engine ray`` they run on a Ray cluster — a local one started for
the command, or the one at ``--ray-address`` / ``$RAY_ADDRESS``:

* cross-fit: one Ray task per fold (:mod:`.folds`), each asking for a GPU when the cluster has
  one, all calling the same :func:`ls_backend.runtime.crossfit.run_fold` as the local engine;
* prediction: Ray Data ``map_batches`` over an actor pool that loads the model once per actor
  (:mod:`.predict`); results come back to the driver in input order;
* writes to Label Studio stay on the driver, in one bounded, rate-limited writer
  (:mod:`.writer`), so a worker that Ray retries never writes twice.

Ray is an optional extra (``pip install 'ner-quality[ray]'``); nothing here imports it until a
job asks for the Ray engine.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["ENGINES", "EngineOptions", "add_engine_arguments"]

ENGINES = ("local", "ray")


@dataclass(frozen=True)
class EngineOptions:
    """The engine of one command.

    Attributes
    ----------
    engine : ``local`` or ``ray``
    address : Ray cluster address (``host:port``, ``ray://host:10001`` or ``auto``); None
        starts a local Ray for the command (``$RAY_ADDRESS`` when set)
    workers : prediction actors (default: one per GPU, else one per ``cpus_per_worker`` CPUs)
    cpus_per_worker : CPUs (and torch threads) of each fold task or prediction actor
    gpus_per_worker : GPUs of each; None = 1 when the cluster has GPUs, else 0
    num_cpus : CPUs of a local Ray started for the command (default all of this machine's)
    """

    engine: Literal["local", "ray"] = "local"
    address: str | None = None
    workers: int | None = None
    cpus_per_worker: int = 1
    gpus_per_worker: float | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {self.engine!r}")
        if self.workers is not None and self.workers < 1:
            raise ValueError(f"--ray-workers must be >= 1, got {self.workers}")
        if self.cpus_per_worker < 1:
            raise ValueError(f"--ray-cpus-per-worker must be >= 1, got {self.cpus_per_worker}")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise ValueError(f"--ray-gpus-per-worker must be >= 0, got {self.gpus_per_worker}")

    @property
    def is_ray(self) -> bool:
        return self.engine == "ray"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> EngineOptions:
        """From :func:`add_engine_arguments`' options (``$RAY_ADDRESS`` fills ``address``)."""
        engine: Literal["local", "ray"] = "ray" if getattr(args, "engine", None) == "ray" else "local"
        address = getattr(args, "ray_address", None) or os.environ.get("RAY_ADDRESS") or None
        if address and engine == "local" and getattr(args, "ray_address", None):
            raise ValueError("--ray-address needs --engine ray")
        return cls(engine=engine, address=address if engine == "ray" else None,
                   workers=getattr(args, "ray_workers", None),
                   cpus_per_worker=getattr(args, "ray_cpus_per_worker", None) or 1,
                   gpus_per_worker=getattr(args, "ray_gpus_per_worker", None))


def add_engine_arguments(p: argparse.ArgumentParser) -> None:
    """``--engine`` and the Ray options (shared by train, predict, analyze/report/push)."""
    g = p.add_argument_group("engine (where the heavy job runs)")
    g.add_argument("--engine", choices=ENGINES, default="local",
                   help="local: in this process (default); ray: on a Ray cluster "
                   "(pip install 'ner-quality[ray]')")
    g.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="Ray cluster to use (host:port, ray://host:10001 or auto; default "
                   "$RAY_ADDRESS, else a local Ray is started for the command)")
    g.add_argument("--ray-workers", type=int, default=None, metavar="N",
                   help="prediction actors (default: one per GPU, else one per CPU)")
    g.add_argument("--ray-cpus-per-worker", type=int, default=1, metavar="N",
                   help="CPUs and torch threads per fold task / prediction actor (default 1)")
    g.add_argument("--ray-gpus-per-worker", type=float, default=None, metavar="G",
                   help="GPUs per fold task / actor (default 1 when the cluster has GPUs, else 0)")


def describe(opts: EngineOptions, resources: dict[str, Any] | None = None) -> str:
    """One line for logs and summaries."""
    if not opts.is_ray:
        return "local"
    where = opts.address or "a local Ray"
    if resources:
        return (f"ray ({where}: {int(resources.get('CPU', 0))} CPU, "
                f"{int(resources.get('GPU', 0))} GPU)")
    return f"ray ({where})"
