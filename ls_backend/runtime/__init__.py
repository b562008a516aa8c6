"""The torch model runtime: load, batched inference, training with dynamics, cross-fitting.

Importing this package imports torch lazily (inside functions) where possible and never loads
a model; call :meth:`NerModel.load`.

>>> from ls_backend.runtime import NerModel, default_model_path  # doctest: +SKIP
>>> model = NerModel.load(default_model_path(), labels=["PER", "LOC"])  # doctest: +SKIP
"""

from .crossfit import CrossfitResult, crossfit, crossfit_outputs
from .infer import TaskPrediction
from .loading import NerModel, default_model_path, resolve_device
from .train import TrainResult, train

__all__ = [
    "NerModel",
    "TaskPrediction",
    "TrainResult",
    "CrossfitResult",
    "crossfit",
    "crossfit_outputs",
    "default_model_path",
    "resolve_device",
    "train",
]
