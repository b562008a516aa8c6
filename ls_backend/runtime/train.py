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
    dynamics/epoch_1.npz ...  per epoch (1-based; sort numerically), arr_k = (n_tokens, n_tags)
                              float16 probabilities of the k-th trained task (eval mode)
    dynamics/index.json       files in epoch order, trained task indices, tags
    checkpoint/               last finished epoch: weights, optimizer, scheduler, RNG states
                              (while training; removed after success unless keep_checkpoint)

``resume=True`` continues from ``checkpoint/`` when its fingerprint (data + training config)
matches; otherwise training starts over (logged).  A finished run with the same fingerprint is
returned as is.
"""

from __future__ import annotations

import hashlib
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

from analysis.tags import tag_names
from analysis.schemes import encode
from analysis.spans import TokenizedText, char_to_token_spans

from .infer import autocast_context, prepare
from .loading import NerModel, default_model_path, resolve_device

log = logging.getLogger(__name__)

__all__ = ["TrainResult", "train", "word_tag_ids", "annotated_indices"]

CHECKPOINT = "checkpoint"
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


def annotated_indices(dataset: Any, tasks: Sequence[int] | None = None) -> list[int]:
    """``Task.index`` of the annotated tasks (``gold is not None``), in dataset order.

    With ``tasks``, only those (validated: in range and annotated).
    """
    all_tasks = dataset.tasks
    if tasks is None:
        return [k for k, t in enumerate(all_tasks) if t.gold is not None]
    out = sorted(set(int(i) for i in tasks))
    for i in out:
        if not 0 <= i < len(all_tasks):
            raise ValueError(f"task index {i} is out of range for {len(all_tasks)} tasks")
        if all_tasks[i].gold is None:
            raise ValueError(f"task {i} is not annotated (no gold spans); it cannot be trained on")
    return out


def word_tag_ids(task: Any, labels: Sequence[str]) -> np.ndarray:
    """IOB2 tag ids ``(n_tokens,) int64`` (columns of ``tag_names(labels)``) for a task's gold."""
    where = f"task {task.index}" + (f" (id {task.id})" if getattr(task, "id", None) else "")
    tt: TokenizedText = task.tokens
    lab = set(labels)
    for s in task.gold:
        if s.label not in lab:
            raise ValueError(
                f"{where}: gold span [{s.start}, {s.end}) has label {s.label!r} which is not in "
                f"the dataset labels {list(labels)}"
            )
        if s.start < 0 or s.end > len(tt.text) or s.start >= s.end:
            raise ValueError(
                f"{where}: gold span [{s.start}, {s.end}) is empty or outside the text "
                f"(length {len(tt.text)})"
            )
    tok_spans, _ = char_to_token_spans(tt, task.gold, where=where)
    try:
        tags = encode(len(tt), tok_spans, "iob2")
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None
    col = {t: j for j, t in enumerate(tag_names(labels))}
    return np.array([col[t] for t in tags], dtype=np.int64)


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def _data_fingerprint(tts: Sequence[TokenizedText], gold: Sequence[np.ndarray],
                      labels: Sequence[str], idx: Sequence[int]) -> str:
    h = hashlib.sha256(json.dumps(list(labels)).encode("utf-8"))
    for i, tt, g in zip(idx, tts, gold):
        h.update(str(i).encode())
        h.update(b"\x00".join(t.encode("utf-8") for t in tt.tokens))
        h.update(b"\x01")
        h.update(g.astype(np.int64).tobytes())
    return h.hexdigest()


def _examples(preps: Sequence[Any], gold: Sequence[np.ndarray], prefix: Sequence[int],
              suffix: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """(input_ids, labels) per window; labels -100 except owned first subtokens."""
    pre = np.asarray(prefix, dtype=np.int64)
    suf = np.asarray(suffix, dtype=np.int64)
    out = []
    for p, g in zip(preps, gold):
        firsts = p.word_first[:-1]
        for w, (a, b) in enumerate(p.windows.tolist()):
            ids = np.concatenate([pre, p.ids[a:b], suf])
            lab = np.full(len(ids), -100, dtype=np.int64)
            words = np.flatnonzero((firsts >= a) & (firsts < b) & (p.owner[firsts] == w))
            lab[len(pre) + firsts[words] - a] = g[words]
            out.append((ids, lab))
    return out


def _epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
    """Shuffled batches of example indices, length-grouped inside chunks of 50 batches."""
    rng = np.random.default_rng([seed, epoch])
    perm = rng.permutation(len(lengths))
    chunk = batch_size * 50
    batches: list[np.ndarray] = []
    for c in range(0, len(perm), chunk):
        part = perm[c : c + chunk]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[k : k + batch_size] for k in range(0, len(part), batch_size))
    order = rng.permutation(len(batches))
    return [batches[k] for k in order]


def _collate(examples: Sequence[tuple[np.ndarray, np.ndarray]], idx: np.ndarray,
             pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max(len(examples[k][0]) for k in idx)
    ids = np.full((len(idx), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(idx), width), dtype=np.int64)
    lab = np.full((len(idx), width), -100, dtype=np.int64)
    for r, k in enumerate(idx.tolist()):
        e_ids, e_lab = examples[k]
        ids[r, : len(e_ids)] = e_ids
        mask[r, : len(e_ids)] = 1
        lab[r, : len(e_ids)] = e_lab
    return ids, mask, lab


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

    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")
    labels = tuple(dataset.labels)
    if not labels:
        raise ValueError("the dataset has no entity labels to train on")
    idx = annotated_indices(dataset, tasks)
    if not idx:
        raise ValueError("the dataset has no annotated tasks (Task.gold is None for all)")
    t_start = time.time()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    task_objs = [dataset.tasks[i] for i in idx]
    tts: list[TokenizedText] = [t.tokens for t in task_objs]
    gold = [word_tag_ids(t, labels) for t in task_objs]
    tags = tag_names(labels)
    model_path = str(model) if model is not None else default_model_path()
    dev = resolve_device(device)
    config = {
        "model": model_path, "epochs": epochs, "seed": seed, "lr": lr,
        "batch_size": batch_size, "max_steps": max_steps, "max_length": max_length,
        "weight_decay": weight_decay, "warmup_ratio": warmup_ratio, "labels": list(labels),
        "record_dynamics": record_dynamics,
    }
    data_fp = _data_fingerprint(tts, gold, labels, idx)
    fingerprint = _hash({"data": data_fp, "config": config})

    if resume:
        done = _finished(out, fingerprint)
        if done is not None:
            log.info("%s already holds the finished model for this data and config", out)
            return done
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    det_before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        nm = NerModel.load(model_path, labels=labels, device=dev, seed=seed, max_length=max_length)
        if nm.native_tags != tags:
            log.info("model %s has tags %s; adding a fresh head for %s", model_path,
                     nm.native_tags, tags)
            nm = NerModel.load(model_path, labels=labels, device=dev, seed=seed,
                               max_length=max_length, fresh_head=True)
        preps = prepare(nm.tokenizer, tts, window=nm.window, stride=nm.stride)
        examples = _examples(preps, gold, nm.prefix_ids, nm.suffix_ids)
        if not examples:
            raise ValueError(f"the {len(idx)} annotated task(s) selected have no tokens")
        lengths = np.array([len(e[0]) for e in examples], dtype=np.int64)
        steps_per_epoch = math.ceil(len(examples) / batch_size)
        total = epochs * steps_per_epoch
        if max_steps is not None:
            total = min(total, max_steps)
        n_epochs = math.ceil(total / steps_per_epoch)

        hf = nm.hf_model
        no_decay = ("bias", "LayerNorm.weight", "layer_norm.weight")
        groups = [
            {"params": [p for n, p in hf.named_parameters() if not any(k in n for k in no_decay)],
             "weight_decay": weight_decay},
            {"params": [p for n, p in hf.named_parameters() if any(k in n for k in no_decay)],
             "weight_decay": 0.0},
        ]
        try:  # fused AdamW is ~10x faster on CPU (torch >= 2.4) and elementwise-deterministic
            opt = torch.optim.AdamW(groups, lr=lr, fused=True)
        except (RuntimeError, TypeError, ValueError):
            opt = torch.optim.AdamW(groups, lr=lr)
        from transformers import get_linear_schedule_with_warmup

        sched = get_linear_schedule_with_warmup(opt, int(warmup_ratio * total), total)
        history: dict[str, list[float]] = {"train_loss": [], "train_token_acc": []}
        start_epoch, step = 0, 0
        ckpt = out / CHECKPOINT
        if resume and (ckpt / "state.pt").is_file():
            # our own file, written below: it holds RNG states (numpy tuples) -> weights_only=False
            state = torch.load(ckpt / "state.pt", map_location="cpu", weights_only=False)
            if state.get("fingerprint") == fingerprint:
                hf.load_state_dict(torch.load(ckpt / "model.pt", map_location=dev))
                opt.load_state_dict(state["optimizer"])
                sched.load_state_dict(state["scheduler"])
                torch.set_rng_state(state["rng_torch"])
                np.random.set_state(state["rng_numpy"])
                random.setstate(state["rng_python"])
                if dev.startswith("cuda") and state.get("rng_cuda") is not None:
                    torch.cuda.set_rng_state_all(state["rng_cuda"])
                start_epoch, step = int(state["epoch"]), int(state["step"])
                history = state["history"]
                log.info("resuming %s after epoch %d (step %d)", out, start_epoch, step)
            else:
                log.warning("%s: checkpoint is for other data or settings; training from scratch",
                            ckpt)

        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(total=total, initial=step, desc="train", unit="step")
        torch_dev = torch.device(dev)
        stopped = False
        done_epochs = start_epoch
        dyn_dir = out / DYNAMICS
        for epoch in range(start_epoch + 1, n_epochs + 1):
            hf.train()
            losses = []
            for bidx in _epoch_batches(lengths, batch_size, seed, epoch):
                if step >= total:
                    break
                ids, mask, lab = _collate(examples, bidx, nm.pad_id)
                with autocast_context(dev):
                    outp = hf(
                        input_ids=torch.from_numpy(ids).to(torch_dev),
                        attention_mask=torch.from_numpy(mask).to(torch_dev),
                        labels=torch.from_numpy(lab).to(torch_dev),
                    )
                loss = outp.loss
                loss.backward()
                torch.nn.utils.clip_grad_norm_(hf.parameters(), 1.0)
                opt.step()
                sched.step()
                opt.zero_grad(set_to_none=True)
                step += 1
                losses.append(float(loss.detach()))
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4f}")
            hf.eval()
            history["train_loss"].append(float(np.mean(losses)) if losses else float("nan"))
            if record_dynamics:
                preds = nm.predict(tts)
                dyn_dir.mkdir(parents=True, exist_ok=True)
                arrs = [p.probs.astype(np.float16) for p in preds]
                np.savez(dyn_dir / f"epoch_{epoch}.npz", *arrs)
                correct = sum(int((p.probs.argmax(1) == g).sum()) for p, g in zip(preds, gold))
                n_tok = sum(len(g) for g in gold)
                history["train_token_acc"].append(correct / max(n_tok, 1))
            _save_checkpoint(ckpt, hf, opt, sched, fingerprint, epoch, step, history, dev)
            done_epochs = epoch
            info = {"epoch": epoch, "step": step, "total_steps": total,
                    "loss": history["train_loss"][-1]}
            log.info("epoch %d/%d: %s", epoch, n_epochs, info)
            if on_epoch_end is not None and on_epoch_end(epoch, info) is False and epoch < n_epochs:
                stopped = True
                break
        if bar is not None:
            bar.close()
        dyn_files = [str(dyn_dir / f"epoch_{k}.npz") for k in range(1, done_epochs + 1)
                     if (dyn_dir / f"epoch_{k}.npz").is_file()]
        metrics: dict[str, Any] = {
            **history, "steps": step, "total_steps": total, "n_tasks": len(idx),
            "n_windows": len(examples), "seconds": round(time.time() - t_start, 3),
            "completed": not stopped, "device": dev,
        }
        if stopped:
            return TrainResult("", "", done_epochs, dyn_files, list(idx), metrics)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
        version = f"nerq-{stamp}-{fingerprint[:8]}"
        nm.version = version
        nm.trained = True
        nm.save(out, extra={
            "training": config, "dataset_fingerprint": data_fp, "fingerprint": fingerprint,
            "created": stamp, "metrics": metrics, "task_indices": list(idx),
        })
        if not keep_checkpoint:
            shutil.rmtree(ckpt, ignore_errors=True)
        if record_dynamics:
            (dyn_dir / "index.json").write_text(json.dumps({
                "files": [os.path.basename(f) for f in dyn_files], "task_indices": list(idx),
                "tags": list(tags), "version": version,
            }, indent=1), encoding="utf-8")
        return TrainResult(str(out), version, done_epochs, dyn_files, list(idx), metrics)
    finally:
        torch.use_deterministic_algorithms(det_before)


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


def _save_checkpoint(ckpt: Path, hf: Any, opt: Any, sched: Any, fingerprint: str, epoch: int,
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
