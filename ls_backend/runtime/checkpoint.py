"""The training checkpoint: weights, optimizer, scheduler and RNG states after an epoch.

``out_dir/checkpoint/`` holds ``model.pt`` (the state dict) and ``state.pt`` (fingerprint,
epoch, step, optimizer and scheduler states, torch/numpy/python (and CUDA) RNG states, loss
history).  It is written atomically after every epoch by :func:`save_checkpoint` and read back
by :func:`restore_checkpoint` when :func:`ls_backend.runtime.train` resumes.
"""

from __future__ import annotations

import random
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["CHECKPOINT", "restore_checkpoint", "save_checkpoint"]

CHECKPOINT = "checkpoint"


def restore_checkpoint(
    ckpt: Path, hf: Any, opt: Any, sched: Any, fingerprint: str, dev: str
) -> tuple[int, int, dict[str, list[float]]] | None:
    """Restore the run in ``ckpt`` (``state.pt`` must exist) when it has this fingerprint.

    Loads the weights into ``hf``, the optimizer and scheduler states and all RNG states, and
    returns ``(epoch, step, history)``; returns ``None`` and restores nothing when the
    checkpoint is for other data or settings.
    """
    import torch

    # our own file, written below: it holds RNG states (numpy tuples) -> weights_only=False
    state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
    if state.get("fingerprint") != fingerprint:
        return None
    hf.load_state_dict(torch.load(ckpt / "model.pt", map_location=dev))
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_torch"])
    np.random.set_state(state["rng_numpy"])
    random.setstate(state["rng_python"])
    if dev.startswith("cuda") and state.get("rng_cuda") is not None:
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    history: dict[str, list[float]] = state["history"]
    return int(state["epoch"]), int(state["step"]), history


def save_checkpoint(ckpt: Path, hf: Any, opt: Any, sched: Any, fingerprint: str, epoch: int,
                    step: int, history: Mapping[str, Any], dev: str) -> None:
    """Write the checkpoint atomically (temp dir, then rename over the old one)."""
    import torch

    tmp = ckpt.with_name(ckpt.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    torch.save(hf.state_dict(), tmp / "model.pt")
    torch.save({
        "fingerprint": fingerprint, "epoch": epoch, "step": step,
        "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
        "rng_torch": torch.get_rng_state(), "rng_numpy": np.random.get_state(),
        "rng_python": random.getstate(),
        "rng_cuda": torch.cuda.get_rng_state_all() if dev.startswith("cuda") else None,
        "history": dict(history),
    }, tmp / "state.pt")
    if ckpt.exists():
        old = ckpt.with_name(ckpt.name + ".old")
        if old.exists():
            shutil.rmtree(old)
        ckpt.rename(old)
        tmp.rename(ckpt)
        shutil.rmtree(old)
    else:
        tmp.rename(ckpt)
