"""The plan of a training run: validated arguments, trained tasks, gold tags, windows, batches.

Everything :func:`ls_backend.runtime.train` decides before and between optimizer steps, without
torch: the run itself (:class:`TrainRun` from :func:`new_run`: checked arguments, data and config
fingerprint), which tasks are trained (:func:`annotated_indices`), their IOB2 tag ids
(:func:`word_tag_ids`), ``(input_ids, labels)`` per window (:func:`window_examples`), the seeded
epoch order (:func:`epoch_batches`) and padding (:func:`collate`).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from analysis.schemes import encode
from analysis.spans import TokenizedText, char_to_token_spans
from analysis.tags import tag_names

from .env import default_model_path, resolve_device

__all__ = [
    "TrainRun",
    "annotated_indices",
    "check_args",
    "collate",
    "data_fingerprint",
    "epoch_batches",
    "hash_json",
    "new_run",
    "window_examples",
    "word_tag_ids",
]


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


@dataclass
class TrainRun:
    """One :func:`ls_backend.runtime.train` call: its arguments, trained tasks and fingerprint."""

    out: Path
    idx: list[int]
    tts: list[TokenizedText]
    gold: list[np.ndarray]
    tags: tuple[str, ...]
    labels: tuple[str, ...]
    model_path: str
    dev: str
    config: dict[str, Any]
    data_fp: str
    fingerprint: str
    t_start: float
    epochs: int
    seed: int
    lr: float
    batch_size: int
    max_steps: int | None
    max_length: int | None
    weight_decay: float
    warmup_ratio: float
    record_dynamics: bool
    resume: bool
    progress: bool
    on_epoch_end: Callable[[int, Mapping[str, Any]], bool | None] | None
    keep_checkpoint: bool


def check_args(epochs: int, batch_size: int, lr: float, max_steps: int | None) -> None:
    """Raise ``ValueError`` for an out-of-range training argument."""
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"max_steps must be >= 1 or None, got {max_steps}")


def new_run(
    dataset: Any,
    out_dir: str | os.PathLike[str],
    *,
    model: str | None,
    tasks: Sequence[int] | None,
    device: str,
    **kw: Any,
) -> TrainRun:
    """Validate the arguments, collect the trained tasks' gold tags and fingerprint the run.

    ``kw`` holds the remaining :func:`ls_backend.runtime.train` arguments (``epochs`` ...
    ``keep_checkpoint``), stored on the :class:`TrainRun`.
    """
    check_args(kw["epochs"], kw["batch_size"], kw["lr"], kw["max_steps"])
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
        "model": model_path, "epochs": kw["epochs"], "seed": kw["seed"], "lr": kw["lr"],
        "batch_size": kw["batch_size"], "max_steps": kw["max_steps"],
        "max_length": kw["max_length"], "weight_decay": kw["weight_decay"],
        "warmup_ratio": kw["warmup_ratio"], "labels": list(labels),
        "record_dynamics": kw["record_dynamics"],
    }
    data_fp = data_fingerprint(tts, gold, labels, idx)
    fingerprint = hash_json({"data": data_fp, "config": config})
    return TrainRun(out=out, idx=idx, tts=tts, gold=gold, tags=tags, labels=labels,
                    model_path=model_path, dev=dev, config=config, data_fp=data_fp,
                    fingerprint=fingerprint, t_start=t_start, **kw)


def hash_json(obj: Any) -> str:
    """SHA-256 (hex) of ``obj`` as sorted-key JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode("utf-8")).hexdigest()


def data_fingerprint(tts: Sequence[TokenizedText], gold: Sequence[np.ndarray],
                     labels: Sequence[str], idx: Sequence[int]) -> str:
    """SHA-256 (hex) of the labels and every trained task's index, tokens and gold tag ids."""
    h = hashlib.sha256(json.dumps(list(labels)).encode("utf-8"))
    for i, tt, g in zip(idx, tts, gold):
        h.update(str(i).encode())
        h.update(b"\x00".join(t.encode("utf-8") for t in tt.tokens))
        h.update(b"\x01")
        h.update(g.astype(np.int64).tobytes())
    return h.hexdigest()


def window_examples(preps: Sequence[Any], gold: Sequence[np.ndarray], prefix: Sequence[int],
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


def epoch_batches(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> list[np.ndarray]:
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


def collate(examples: Sequence[tuple[np.ndarray, np.ndarray]], idx: np.ndarray,
            pad_id: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Padded ``input_ids``, ``attention_mask`` and ``labels`` (-100 padding) of one batch."""
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
