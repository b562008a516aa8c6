"""The model forward of inference batches (step 4 of :mod:`ls_backend.runtime.infer`).

Autocast on CUDA, inputs in pinned memory with non-blocking copies, and only the last hidden
state kept when embeddings are asked for: read at the input of the model's ``classifier`` when
that is the last hidden state (checked once per model), else from ``output_hidden_states``.
"""

from __future__ import annotations

import contextlib
from typing import Any

import numpy as np

__all__ = ["Forward", "autocast_context", "classifier_reads_last_hidden", "gather"]


def autocast_context(device: str) -> contextlib.AbstractContextManager[Any]:
    """bf16 (or fp16) autocast on CUDA, nothing on CPU."""
    import torch

    if device.startswith("cuda"):
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.autocast("cuda", dtype=dtype)
    return contextlib.nullcontext()


class Forward:
    """The model forward of one batch: logits and (when asked) the last hidden state, as
    tensors on the model's device."""

    def __init__(self, model: Any, *, want_emb: bool) -> None:
        import torch

        self.hf = model.hf_model
        self.hf.eval()
        self.dev = torch.device(model.device)
        self.cuda = self.dev.type == "cuda"
        self.want_emb = want_emb
        self._captured: list[Any] = []
        self._hook: Any = None
        # a compiled model keeps its graph: no hooks added per call, the hidden states come back
        self.use_hook = (want_emb and not getattr(model, "compiled", False)
                         and classifier_reads_last_hidden(model))

    def __enter__(self) -> Forward:
        if self.use_hook:
            self._hook = self.hf.classifier.register_forward_pre_hook(
                lambda _mod, args: self._captured.append(args[0]))
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._hook is not None:
            self._hook.remove()

    def to_device(self, arr: np.ndarray) -> Any:
        import torch

        t = torch.from_numpy(arr)
        if self.cuda:
            return t.pin_memory().to(self.dev, non_blocking=True)
        return t

    def __call__(self, ids: Any, mask: Any) -> tuple[Any, Any]:
        self._captured.clear()
        out = self.hf(input_ids=ids, attention_mask=mask,
                      output_hidden_states=self.want_emb and not self.use_hook)
        states = None
        if self.want_emb:
            states = self._captured[-1] if self.use_hook else out.hidden_states[-1]
        return out.logits, states


def classifier_reads_last_hidden(model: Any) -> bool:
    """Whether the input of ``hf_model.classifier`` is the last hidden state (so hidden states
    of the other layers need not be returned).  Checked once per model on a tiny input and
    remembered on the model object."""
    cached = getattr(model, "_nerq_hook_ok", None)
    if cached is not None:
        return bool(cached)
    import torch

    hf = model.hf_model
    ok = False
    clf = getattr(hf, "classifier", None)
    if isinstance(clf, torch.nn.Module):
        seen: list[Any] = []
        h = clf.register_forward_pre_hook(lambda _m, args: seen.append(args[0]))
        try:
            ids = torch.tensor([model.prefix_ids + [model.pad_id] * 3 + model.suffix_ids],
                               device=torch.device(model.device))
            with torch.inference_mode():
                out = hf(input_ids=ids, attention_mask=torch.ones_like(ids),
                         output_hidden_states=True)
            ok = len(seen) == 1 and torch.equal(seen[0], out.hidden_states[-1])
        finally:
            h.remove()
    try:
        model._nerq_hook_ok = ok
    except AttributeError:  # pragma: no cover - a model object that takes no attributes
        pass
    return ok


def gather(states: Any, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """``states[rows, cols]`` as float32 numpy (gathered on the device)."""
    import torch

    dev = states.device
    return states[torch.from_numpy(rows).to(dev), torch.from_numpy(cols).to(dev)].float().cpu(
    ).numpy()
