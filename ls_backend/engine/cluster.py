"""Connecting to Ray: a local Ray for one command, or an existing cluster.

``ray_session(options)`` is a context manager.  It

* fails with one line when Ray is not installed (the extra to install named) or when no
  cluster answers at the address (a TCP check first: ``ray.init`` on a dead address waits for
  minutes);
* starts a local Ray (no dashboard, ``num_cpus`` of the options or the machine) when no address
  is given, and shuts it down afterwards; a Ray this process had already started is reused and
  left running;
* passes the offline switches (``HF_HUB_OFFLINE`` ...) to every worker, so no worker tries a
  model hub download.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from . import EngineOptions

log = logging.getLogger(__name__)

__all__ = ["RaySession", "check_reachable", "import_ray", "preflight", "ray_session"]

#: environment every worker gets: offline model loading, the driver's thread settings
WORKER_ENV = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_DISABLE_TELEMETRY", "HF_HOME",
              "MODEL_NAME", "NERQ_DEFAULT_MODEL", "NERQ_RAY_FAULT_ONCE")


@dataclass(frozen=True)
class RaySession:
    """A connected Ray: its resources and whether this command started it."""

    resources: dict[str, float]
    started_here: bool
    address: str | None

    @property
    def gpus(self) -> float:
        return float(self.resources.get("GPU", 0.0))

    @property
    def cpus(self) -> float:
        return float(self.resources.get("CPU", 0.0))

    def gpus_per_worker(self, options: EngineOptions) -> float:
        """The options' GPUs per worker, or 1 when the cluster has GPUs."""
        if options.gpus_per_worker is not None:
            return float(options.gpus_per_worker)
        return 1.0 if self.gpus >= 1 else 0.0

    def workers(self, options: EngineOptions, *, cap: int | None = None) -> int:
        """Parallel workers: the options' count, else what the cluster's GPUs/CPUs hold."""
        if options.workers is not None:
            n = options.workers
        else:
            gpw = self.gpus_per_worker(options)
            n = int(self.gpus // gpw) if gpw > 0 else int(self.cpus // options.cpus_per_worker)
        n = max(1, n)
        return min(n, cap) if cap else n


def import_ray() -> Any:
    """``ray``, or a one-line error naming the extra to install."""
    try:
        import ray
    except ImportError:
        raise ValueError("--engine ray needs Ray, which is not installed: "
                         "pip install 'ner-quality[ray]'") from None
    return ray


def check_reachable(address: str, *, timeout: float = 5.0) -> None:
    """Raise ``ValueError`` (one line) when nothing listens at ``address`` (``host:port`` or
    ``ray://host:port``); ``auto`` / ``local`` are left to Ray."""
    if address in ("auto", "local"):
        return
    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    host, port = parts.hostname, parts.port
    if not host or not port:
        raise ValueError(f"--ray-address {address!r}: expected host:port, ray://host:port or auto")
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise ValueError(
            f"--ray-address {address}: no Ray cluster answers at {host}:{port} ({exc}); start "
            f"one with `ray start --head`, or leave --ray-address and $RAY_ADDRESS unset to "
            f"run a local Ray") from None


def preflight(options: EngineOptions) -> None:
    """Before any long step of a Ray job: Ray is installed and the cluster answers (one-line
    ``ValueError`` otherwise)."""
    if options.is_ray:
        import_ray()
        if options.address:
            check_reachable(options.address)


def _worker_env() -> dict[str, str]:
    env = {k: os.environ[k] for k in WORKER_ENV if k in os.environ}
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("TRANSFORMERS_OFFLINE", "1")
    return env


def _quiet(ray: Any) -> None:
    """Ray Data logs every execution at INFO and draws bars of its own; the driver shows one."""
    for name in ("ray", "ray.data"):
        logging.getLogger(name).setLevel(max(logging.WARNING, logging.getLogger().level))
    ctx = ray.data.DataContext.get_current()
    ctx.enable_progress_bars = False
    ctx.print_on_execution_start = False


@contextmanager
def ray_session(options: EngineOptions) -> Iterator[RaySession]:
    """Connect to (or start) Ray for the duration of a ``with`` block."""
    ray = import_ray()
    if ray.is_initialized():
        _quiet(ray)
        yield RaySession(dict(ray.cluster_resources()), False, options.address)
        return
    runtime_env = {"env_vars": _worker_env()}
    if options.address:
        check_reachable(options.address)
        try:
            ray.init(address=options.address, runtime_env=runtime_env, log_to_driver=False,
                     configure_logging=False)
        except ConnectionError as exc:
            raise ValueError(f"--ray-address {options.address}: {exc}") from None
    else:
        ray.init(num_cpus=options.num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 runtime_env=runtime_env, log_to_driver=False, configure_logging=False)
    try:
        _quiet(ray)
        session = RaySession(dict(ray.cluster_resources()), True, options.address)
        log.info("Ray: %d CPU, %d GPU (%s)", session.cpus, session.gpus,
                 options.address or "local, started for this command")
        yield session
    finally:
        ray.shutdown()
