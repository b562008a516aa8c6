"""``ner-quality train``: fine-tune a model on a dataset's annotations (optionally cross-fit).

Trains on every annotated task of ``--data`` (CoNLL or Label Studio JSON) and writes a model
directory loadable by ``ner-quality predict --model`` and the ML backend: weights, tokenizer,
``nerq.json`` (labels, tags, version, training config), ``dynamics/epoch_k.npz`` (per-epoch
training-set probabilities for AUM/DEP) and ``checkpoint/`` (re-running the same command resumes
after the last finished epoch; ``--no-resume`` starts over).

With ``--folds K`` it also cross-fits: K models, each trained on K-1 parts of the annotated
tasks, predict the held-out part, and ``MODEL_DIR/oof_probs.npz`` holds the out-of-sample
probabilities in the columnar format of :mod:`analysis.probs` (one float32 matrix, task offsets,
which tasks have probabilities — the annotated ones —, the tag order and scheme); the tags are
also in ``MODEL_DIR/tags.txt`` and the entity types in ``labels.txt``.

``--engine ray`` trains the folds in parallel on Ray, one Ray task per fold (a GPU each when
the cluster has GPUs; ``pip install 'ner-quality[ray]'``); the model on all tasks is trained
here first.  The same seeds give the same out-of-sample probabilities as ``--engine local``
(bit for bit on CPU with the same threads per fold).

The backbone is ``--model`` or ``$MODEL_NAME`` (a local path or cached Hugging Face name, never
downloaded), else the packaged MiniLM (uncased).  Prints one JSON summary line on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

from ls_backend.engine import EngineOptions, add_engine_arguments

logger = logging.getLogger(__name__)

FORMATS = ("auto", "conll", "ls-json", "json-min")


def _positive(text: str) -> int:
    try:
        val = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if val < 1:
        raise argparse.ArgumentTypeError(f"{val} must be >= 1")
    return val


def add_data_arguments(p: argparse.ArgumentParser, *, required: bool = True) -> None:
    """``--data`` and how to read it (shared with ``predict``)."""
    p.add_argument("--data", required=required, metavar="D", help="CoNLL or Label Studio JSON file")
    p.add_argument("--format", choices=FORMATS, default="auto", help="input format")
    p.add_argument("--label-config", metavar="XML", help="labeling config (file or XML text)")
    p.add_argument("--scheme", help="CoNLL tag scheme; detected when omitted")
    p.add_argument("--limit", type=_positive, metavar="N", help="use only the first N tasks")
    p.add_argument("--device", default=None,
                   help="auto, cpu, cuda or cuda:N (default: $DEVICE or auto)")


def load_data(args: argparse.Namespace) -> Any:
    """Load ``--data`` (``analysis.formats.load``), cut to ``--limit`` tasks."""
    from analysis.formats import load

    ds = load(args.data, format=args.format, label_config=args.label_config, scheme=args.scheme)
    if args.limit is not None and args.limit < len(ds.tasks):
        ds = dataclasses.replace(ds, tasks=ds.tasks[: args.limit])
    return ds


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "train",
        help="fine-tune a NER model on annotated tasks (training dynamics, optional cross-fit)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_data_arguments(p)
    p.add_argument("--out", required=True, metavar="MODEL_DIR", help="model directory to write")
    p.add_argument("--model", default=None, metavar="NAME_OR_PATH",
                   help="backbone or model to start from (default: $MODEL_NAME or packaged MiniLM)")
    p.add_argument("--epochs", type=_positive, default=3, help="epochs (default 3)")
    p.add_argument("--folds", type=int, default=0, metavar="K",
                   help="also cross-fit with K folds and write oof_probs.npz (K >= 2)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--lr", type=float, default=3e-4, help="peak learning rate (default 3e-4, measured best for the packaged MiniLM; ~5e-5 for BERT-base-size models)")
    p.add_argument("--batch-size", type=_positive, default=16, help="batch size (default 16)")
    p.add_argument("--max-steps", type=_positive, help="stop after this many optimizer steps")
    p.add_argument("--max-length", type=_positive, help="window length in subtokens")
    p.add_argument("--no-resume", action="store_true", help="ignore an existing checkpoint")
    p.add_argument("--no-dynamics", action="store_true", help="do not record training dynamics")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=True,
                   help="progress bar on stderr (default on)")
    add_engine_arguments(p)
    return p


def run(args: argparse.Namespace) -> int:
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet
    from ls_backend.runtime import crossfit, train

    if args.folds and args.folds < 2:
        raise ValueError(f"--folds must be >= 2 (or 0 for no cross-fitting), got {args.folds}")
    engine = EngineOptions.from_args(args)
    if engine.is_ray and not args.folds:
        raise ValueError("--engine ray runs the cross-fit folds: give --folds K (K >= 2)")
    if engine.is_ray:
        from ls_backend.engine.cluster import preflight

        preflight(engine)  # fail before the first training when Ray is missing or unreachable
    ds = load_data(args)
    out = Path(args.out)
    common: dict[str, Any] = {
        "model": args.model or args.settings.model_name, "epochs": args.epochs, "lr": args.lr,
        "batch_size": args.batch_size, "device": args.device or args.settings.device,
        "max_steps": args.max_steps,
        "max_length": args.max_length, "progress": args.progress,
    }
    result = train(ds, out, seed=args.seed, resume=not args.no_resume,
                   record_dynamics=not args.no_dynamics, **common)
    summary: dict[str, Any] = {
        "model_dir": result.model_dir, "version": result.version, "epochs": result.epochs,
        "n_tasks": len(result.task_indices), "dynamics": len(result.dynamics),
        "metrics": result.metrics,
    }
    if args.folds:
        oof = crossfit(ds, folds=args.folds, seed=args.seed, out_dir=out / "folds",
                       resume=not args.no_resume, engine=engine.engine, ray_options=engine,
                       **common)
        tagset = TagSet.for_labels(ds.labels)
        output = ModelOutput.from_arrays(oof, tagset)
        save_output(out / "oof_probs.npz", output)
        tags = tagset.tags
        (out / "tags.txt").write_text("\n".join(tags) + "\n", encoding="utf-8")
        (out / "labels.txt").write_text("\n".join(ds.labels) + "\n", encoding="utf-8")
        try:
            (out / "folds").rmdir()  # fold models are deleted after predicting; drop the dir
        except OSError:
            pass
        summary["oof_probs"] = str(out / "oof_probs.npz")
        summary["folds"] = args.folds
        summary["engine"] = engine.engine
        logger.info("wrote out-of-sample probabilities for %d tasks", int(output.has.sum()))
    print(json.dumps(summary, default=float))
    return 0
