"""Fine-tune a token-classification model on a dataset's gold spans, recording training dynamics.

Labels are word level: a task's gold character spans are mapped onto its tokens
(:func:`analysis.spans.char_to_token_spans`; misaligned spans warn and cover the tokens they
touch), encoded as IOB2 and given to the **first subtoken** of each word (other subtokens and
special tokens get ``-100``).  Long tasks are cut into the same overlapping windows as
inference; a word is labelled only in the window that owns its first subtoken.

Determinism: ``torch.manual_seed``, ``numpy`` and ``random`` are seeded with ``seed``; the
epoch's shuffle is ``numpy.random.default_rng([seed, epoch])``; dropout draws from torch's global
generator, whose state is checkpointed; ``torch.use_deterministic_algorithms(True,
warn_only=True)`` is on while training (restored afterwards).  On one machine with the same
thread count, the same call gives bit-identical weights.

Layout of ``out_dir`` after a run::

    config.json, model.safetensors, tokenizer files   the model (NerModel.load(out_dir))
    nerq.json                 labels, tags, scheme, version, training config, dataset fingerprint
    trained_tasks.npz         hashes of the trained tasks' texts (+ labels): :mod:`analysis.fingerprint`
    dynamics/epoch_1.npz ...  per epoch (1-based; sort numerically), arr_k = (n_tokens, n_tags)
                              float16 probabilities of the k-th trained task (eval mode)
    dynamics/index.json       files in epoch order, trained task indices, tags
    checkpoint/               last finished epoch: weights, optimizer, scheduler, RNG states
                              (while training; removed after success unless keep_checkpoint)

``resume=True`` continues from ``checkpoint/`` when its fingerprint (data + training config)
matches; otherwise training starts over (logged).  A finished run with the same fingerprint is
returned as is.

The pieces: :mod:`ls_backend.runtime.train_plan` (checked arguments, tasks, gold tags, window
examples, batches, fingerprints; :func:`annotated_indices` and :func:`word_tag_ids` are
re-exported here) and :mod:`ls_backend.runtime.checkpoint` (save/restore of ``checkpoint/``).
"""

from __future__ import annotations

import json
import logging
import math
import os
import random
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from .checkpoint import CHECKPOINT, restore_checkpoint, save_checkpoint
from .infer import autocast_context
from .loading import NerModel
from .train_plan import (
    TrainRun,
    annotated_indices,
    collate,
    epoch_batches,
    new_run,
    window_examples,
    word_tag_ids,
)
from .windows import prepare

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "train", "word_tag_ids", "annotated_indices"]

DYNAMICS = "dynamics"


@dataclass
class TrainResult:
    """What :func:`train` produced.

    Attributes
    ----------
    model_dir : directory loadable with ``NerModel.load`` (empty string if stopped early)
    version : model version string ``nerq-<utc>-<hash of data+config>``
    epochs : epochs completed
    dynamics : paths of ``dynamics/epoch_k.npz`` in epoch order
    task_indices : ``Task.index`` of the trained tasks; ``arr_j`` in the npz files is task
        ``task_indices[j]``
    metrics : per-epoch ``train_loss`` and ``train_token_acc`` (argmax vs gold, from the
        dynamics), ``steps``, ``n_tasks``, ``n_windows``, ``seconds``, ``completed``
    """

    model_dir: str
    version: str
    epochs: int
    dynamics: list[str]
    task_indices: list[int]
    metrics: dict[str, Any] = field(default_factory=dict)



def train(
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    model: str | None = None,
    epochs: int = 3,
    seed: int = 0,
    lr: float = 3e-4,
    batch_size: int = 16,
    device: str = "auto",
    max_steps: int | None = None,
    progress: bool = True,
    resume: bool = True,
    record_dynamics: bool = True,
    tasks: Sequence[int] | None = None,
    max_length: int | None = None,
    weight_decay: float = 0.01,
    warmup_ratio: float = 0.1,
    on_epoch_end: Callable[[int, Mapping[str, Any]], bool | None] | None = None,
    keep_checkpoint: bool = False,
) -> TrainResult:
    """Fine-tune on the annotated tasks of ``dataset`` and save the model to ``out_dir``.

    Parameters
    ----------
    dataset : ``analysis.dataset.Dataset`` (uses ``tasks[i].tokens``, ``.gold``, ``.index``
        and ``labels``)
    out_dir : model directory (created); see the module docstring for its layout
    model : backbone or model to start from (default: the packaged MiniLM); a head whose tags
        are not ``tag_names(dataset.labels)`` is replaced by a fresh one
    epochs, seed, lr, batch_size : AdamW with a linear schedule (``warmup_ratio`` warm-up),
        gradient norm clipped at 1.0, ``batch_size`` windows per step
    max_steps : stop after this many optimizer steps in total (the last epoch may be partial)
    resume : continue from ``out_dir/checkpoint`` when it matches this data and config
    record_dynamics : after each epoch, write every trained task's per-word probabilities
    tasks : train only these task indices (all must be annotated); default all annotated
    max_length : window length in subtokens (default the model's limit)
    on_epoch_end : ``callback(epoch, info)`` after each epoch's checkpoint; returning ``False``
        stops training there (the checkpoint stays; a later ``resume=True`` call continues)
    keep_checkpoint : keep ``checkpoint/`` (weights + optimizer, ~3x the model size) after a
        finished run; by default it is deleted.  A finished run is recognised by ``nerq.json``:
        calling again with ``resume=True`` and the same data and config returns it untrained.

    Returns
    -------
    TrainResult
    """
    import torch

    run = new_run(
        dataset, out_dir, model=model, tasks=tasks, device=device, epochs=epochs, seed=seed,
        lr=lr, batch_size=batch_size, max_steps=max_steps, max_length=max_length,
        weight_decay=weight_decay, warmup_ratio=warmup_ratio, record_dynamics=record_dynamics,
        resume=resume, progress=progress, on_epoch_end=on_epoch_end,
        keep_checkpoint=keep_checkpoint,
    )
    if resume:
        done = _finished(run.out, run.fingerprint)
        if done is not None:
            log.info("%s already holds the finished model for this data and config", run.out)
            return done
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        result = _fit(run)
    finally:
        torch.use_deterministic_algorithms(det_before)
    if result.model_dir and getattr(dataset, "corpus", None) is not None:
        # which tasks this model saw: analyze --model and the backend refuse in-sample DEP
        from analysis import fingerprint

        fingerprint.save(fingerprint.Fingerprints.of(dataset.corpus, result.task_indices),
                         result.model_dir)
    return result


def _load_model(run: TrainRun) -> NerModel:
    """The start model; a fresh head when its tags are not ``run.tags``."""
    nm = NerModel.load(run.model_path, labels=run.labels, device=run.dev, seed=run.seed,
                       max_length=run.max_length)
    if nm.native_tags != run.tags:
        log.info("model %s has tags %s; adding a fresh head for %s", run.model_path,
                 nm.native_tags, run.tags)
        nm = NerModel.load(run.model_path, labels=run.labels, device=run.dev, seed=run.seed,
                           max_length=run.max_length, fresh_head=True)
    return nm


def _optimizer(hf: Any, run: TrainRun, total: int) -> tuple[Any, Any]:
    """AdamW (no decay on biases and layer norms) and its linear warm-up schedule."""
    import torch

    no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
    groups = [
        {"params": [p for n, p in hf.named_parameters() if not any(k in n for k in no_decay)],
         "weight_decay": run.weight_decay},
        {"params": [p for n, p in hf.named_parameters() if any(k in n for k in no_decay)],
         "weight_decay": 0.0},
    ]
    try:  # fused AdamW is ~10x faster on CPU (torch >= 2.4) and elementwise-deterministic
        opt = torch.optim.AdamW(groups, lr=run.lr, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.AdamW(groups, lr=run.lr)
    from transformers import get_linear_schedule_with_warmup

    sched = get_linear_schedule_with_warmup(opt, int(run.warmup_ratio * total), total)
    return opt, sched


@dataclass
class _Loop:
    """The state carried from epoch to epoch."""

    nm: NerModel
    opt: Any
    sched: Any
    examples: list[tuple[np.ndarray, np.ndarray]]
    lengths: np.ndarray
    total: int
    n_epochs: int
    history: dict[str, list[float]]
    start_epoch: int = 0
    step: int = 0
    bar: Any = None


def _setup(run: TrainRun) -> _Loop:
    """Load the model, build the window examples, the optimizer and the step budget."""
    nm = _load_model(run)
    preps = prepare(nm.tokenizer, run.tts, window=nm.window, stride=nm.stride)
    examples = window_examples(preps, run.gold, nm.prefix_ids, nm.suffix_ids)
    if not examples:
        raise ValueError(f"the {len(run.idx)} annotated task(s) selected have no tokens")
    lengths = np.array([len(e[0]) for e in examples], dtype=np.int64)
    steps_per_epoch = math.ceil(len(examples) / run.batch_size)
    total = run.epochs * steps_per_epoch
    if run.max_steps is not None:
        total = min(total, run.max_steps)
    n_epochs = math.ceil(total / steps_per_epoch)
    opt, sched = _optimizer(nm.hf_model, run, total)
    history: dict[str, list[float]] = {"train_loss": [], "train_token_acc": []}
    return _Loop(nm, opt, sched, examples, lengths, total, n_epochs, history)


def _resume(run: TrainRun, loop: _Loop) -> None:
    """Continue from ``checkpoint/`` when it matches this run (logged either way)."""
    ckpt = run.out / CHECKPOINT
    if run.resume and (ckpt / "state.pt").is_file():
        restored = restore_checkpoint(ckpt, loop.nm.hf_model, loop.opt, loop.sched,
                                      run.fingerprint, run.dev)
        if restored is not None:
            loop.start_epoch, loop.step, loop.history = restored
            log.info("resuming %s after epoch %d (step %d)", run.out, loop.start_epoch, loop.step)
        else:
            log.warning("%s: checkpoint is for other data or settings; training from scratch",
                        ckpt)


def _train_epoch(run: TrainRun, loop: _Loop, epoch: int, torch_dev: Any) -> list[float]:
    """One epoch of optimizer steps (stops at the step budget); returns the step losses."""
    import torch

    hf = loop.nm.hf_model
    hf.train()
    losses = []
    for bidx in epoch_batches(loop.lengths, run.batch_size, run.seed, epoch):
        if loop.step >= loop.total:
            break
        ids, mask, lab = collate(loop.examples, bidx, loop.nm.pad_id)
        with autocast_context(run.dev):
            outp = hf(
                input_ids=torch.from_numpy(ids).to(torch_dev),
                attention_mask=torch.from_numpy(mask).to(torch_dev),
                labels=torch.from_numpy(lab).to(torch_dev),
            )
        loss = outp.loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
        loop.opt.step()
        loop.sched.step()
        loop.opt.zero_grad(set_to_none=True)
        loop.step += 1
        losses.append(float(loss.detach()))
        if loop.bar is not None:
            loop.bar.update(1)
            loop.bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}")
    return losses


def _record_dynamics(run: TrainRun, nm: NerModel, epoch: int) -> float:
    """Write ``dynamics/epoch_<epoch>.npz``; returns the token accuracy against the gold."""
    dyn_dir = run.out / DYNAMICS
    preds = nm.predict(run.tts)
    dyn_dir.mkdir(parents=True, exist_ok=True)
    arrs = [p.probs.astype(np.float16) for p in preds]
    np.savez(dyn_dir / f"epoch_{epoch}.npz", *arrs)
    correct = sum(int((p.probs.argmax(1) == g).sum()) for p, g in zip(preds, run.gold))
    n_tok = sum(len(g) for g in run.gold)
    return correct / max(n_tok, 1)


def _fit(run: TrainRun) -> TrainResult:
    """Train epoch by epoch (resuming when possible), checkpointing after each; then finish."""
    import torch

    loop = _setup(run)
    _resume(run, loop)
    hf, history = loop.nm.hf_model, loop.history
    if run.progress:
        from tqdm.auto import tqdm

        loop.bar = tqdm(total=loop.total, initial=loop.step, desc="train", unit="step")
    torch_dev = torch.device(run.dev)
    stopped = False
    done_epochs = loop.start_epoch
    for epoch in range(loop.start_epoch + 1, loop.n_epochs + 1):
        losses = _train_epoch(run, loop, epoch, torch_dev)
        hf.eval()
        history["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
        if run.record_dynamics:
            history["train_token_acc"].append(_record_dynamics(run, loop.nm, epoch))
        save_checkpoint(run.out / CHECKPOINT, hf, loop.opt, loop.sched, run.fingerprint, epoch,
                        loop.step, history, run.dev)
        done_epochs = epoch
        info = {"epoch": epoch, "step": loop.step, "total_steps": loop.total,
                "loss": history["train_loss"][-1]}
        log.info("epoch %d/%d: %s", epoch, loop.n_epochs, info)
        if (run.on_epoch_end is not None and run.on_epoch_end(epoch, info) is False
                and epoch < loop.n_epochs):
            stopped = True
            break
    if loop.bar is not None:
        loop.bar.close()
    return _finish(run, loop, done_epochs, stopped)


def _finish(run: TrainRun, loop: _Loop, done_epochs: int, stopped: bool) -> TrainResult:
    """The result; unless stopped early, save the model, drop the checkpoint, index dynamics."""
    out, idx, dyn_dir = run.out, run.idx, run.out / DYNAMICS
    dyn_files = [str(dyn_dir / f"epoch_{k}.npz") for k in range(1, done_epochs + 1)
                 if (dyn_dir / f"epoch_{k}.npz").is_file()]
    metrics: dict[str, Any] = {
        **loop.history, "steps": loop.step, "total_steps": loop.total, "n_tasks": len(idx),
        "n_windows": len(loop.examples), "seconds": round(time.time() - run.t_start, 3),
        "completed": not stopped, "device": run.dev,
    }
    if stopped:
        return TrainResult("", "", done_epochs, dyn_files, list(idx), metrics)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    version = f"nerq-{stamp}-{run.fingerprint[:8]}"
    nm = loop.nm
    nm.version = version
    nm.trained = True
    nm.save(out, extra={
        "training": run.config, "dataset_fingerprint": run.data_fp,
        "fingerprint": run.fingerprint, "created": stamp, "metrics": metrics,
        "task_indices": list(idx),
    })
    if not run.keep_checkpoint:
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    if run.record_dynamics:
        (dyn_dir / "index.json").write_text(json.dumps({
            "files": [os.path.basename(f) for f in dyn_files], "task_indices": list(idx),
            "tags": list(run.tags), "version": version,
        }, indent=1), encoding="utf-8")
    return TrainResult(str(out), version, done_epochs, dyn_files, list(idx), metrics)


def _finished(out: Path, fingerprint: str) -> TrainResult | None:
    """The result of a finished run in ``out`` with this fingerprint, else None."""
    try:
        meta = json.loads((out / "nerq.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if meta.get("fingerprint") != fingerprint or not meta.get("trained"):
        return None
    metrics = dict(meta.get("metrics") or {})
    epochs = len(metrics.get("train_loss") or [])
    dyn = [str(out / DYNAMICS / f"epoch_{k}.npz") for k in range(1, epochs + 1)
           if (out / DYNAMICS / f"epoch_{k}.npz").is_file()]
    return TrainResult(str(out), str(meta["version"]), epochs, dyn,
                       [int(i) for i in meta.get("task_indices") or []], metrics)

