"""``ner-quality predict``: run a model over a dataset and write Label Studio predictions.

The output is an importable Label Studio JSON task list: each task keeps its ``data`` (and
its chosen annotation, if any) and gets one prediction
``{"model_version", "score", "result": [regions]}``; regions are ``labels`` results with the
config's ``from_name``/``to_name``, half-open character offsets ``value.start``/``value.end``,
the covered ``text``, the label and a per-region ``score`` (mean argmax probability of its
tokens).  The task ``score`` is the least-confident token's probability (sort ascending for
uncertainty sampling).

``--engine ray`` runs the model on Ray (``pip install 'ner-quality[ray]'``): Ray Data maps the
tasks over an actor pool (one model per actor, a GPU each when the cluster has GPUs); with
``--project`` the predictions are written by one bounded writer on this machine
(``--write-rate`` caps it), with the same skip-what-exists rule as the local engine.

``--model`` is a directory written by ``ner-quality train`` or any local Hugging Face
token-classification model (its entity types must match the dataset labels; ``--label-map
MODEL=LABEL`` renames or, with ``=O``, drops types).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

from ls_backend.engine import EngineOptions, add_engine_arguments

from .train import add_data_arguments, load_data

logger = logging.getLogger(__name__)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "predict",
        help="predict spans with a model; write Label Studio JSON with predictions",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", default=None, metavar="MODEL_DIR",
                   help="model directory (ner-quality train) or local HF token-classification model")
    add_data_arguments(p, required=False)
    p.add_argument("--out", default=None, metavar="PREDS_JSON", help="output file")
    p.add_argument("--probs", default=None, metavar="P.npz",
                   help="also write the per-token probabilities (columnar .npz with the tag "
                   "order), the input of dep / analyze / report / push")
    p.add_argument("--project", type=int, default=None,
                   help="instead of --data/--out: pre-annotate a whole Label Studio project through "
                   "LABEL_STUDIO_URL / LABEL_STUDIO_API_KEY (batched, resumable, no duplicates)")
    p.add_argument("--batch-size", type=int, default=64,
                   help="tasks per page / model pass with --project (default 64)")
    p.add_argument("--label-map", action="append", default=[], metavar="MODEL=LABEL",
                   help="map a model entity type onto a dataset label (repeatable; =O drops it)")
    p.add_argument("--batch-tokens", type=int, default=4096,
                   help="padded subtokens per forward pass (default 4096)")
    p.add_argument("--progress", action=argparse.BooleanOptionalAction, default=False,
                   help="progress bar on stderr")
    add_engine_arguments(p)
    p.add_argument("--write-rate", type=float, default=None, metavar="N",
                   help="with --project --engine ray: write at most N predictions per second "
                   "(default: as fast as Label Studio answers)")
    p.add_argument("--ray-window", type=int, default=2048, metavar="N",
                   help="with --project --engine ray: tasks read from Label Studio per Ray "
                   "Dataset (default 2048; the next window is read while one predicts)")
    return p


def parse_label_map(items: list[str]) -> dict[str, str]:
    out = {}
    for it in items:
        src, sep, dst = it.partition("=")
        if not sep or not src.strip() or not dst.strip():
            raise ValueError(f"--label-map {it!r}: expected MODEL_TYPE=LABEL")
        out[src.strip()] = dst.strip()
    return out


def predictions_json(ds: Any, preds: list[Any], version: str) -> list[dict[str, Any]]:
    """Label Studio tasks for ``ds`` with one prediction each (see the module docstring)."""
    from analysis.formats import regions, to_ls_tasks

    tasks = to_ls_tasks(ds, format="ls-json")
    for task, t, p in zip(tasks, ds.tasks, preds):
        task["predictions"] = [{
            "model_version": version,
            "score": round(float(p.score), 6),
            "result": regions(t.text, p.spans, from_name=ds.from_name, to_name=ds.to_name,
                              scores=p.span_scores, id_prefix="nerq"),
        }]
    return tasks


def run(args: argparse.Namespace) -> int:
    if args.project is not None:
        from ls_backend.service.bulk_predict import run_cli

        return int(run_cli(args) or 0)
    missing = [f"--{n}" for n in ("model", "data", "out") if not getattr(args, n, None)]
    if missing:
        raise ValueError(f"predict needs {', '.join(missing)} (or --project ID)")
    from ls_backend.runtime import NerModel

    engine = EngineOptions.from_args(args)
    if engine.is_ray:
        from ls_backend.engine.cluster import preflight

        preflight(engine)
    ds = load_data(args)
    load_options: dict[str, Any] = {
        # the labeling config defines the allowed labels; without one, keep the model's types
        "labels": list(ds.labels) if args.label_config else None,
        "label_map": parse_label_map(args.label_map) or None,
        "device": args.device or args.settings.device,
    }
    model = NerModel.load(args.model, **load_options)
    if not model.trained:
        logger.warning("model %s has an untrained head: predictions are random", args.model)
    items = [t.tokens for t in ds.tasks]
    if engine.is_ray:
        from ls_backend.engine.predict import predict_items

        preds = predict_items(engine, args.model, items, load_options=load_options,
                              batch_tokens=args.batch_tokens, progress=args.progress)
    else:
        preds = model.predict(items, batch_tokens=args.batch_tokens, progress=args.progress)
    tasks = predictions_json(ds, preds, model.version)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(tasks, ensure_ascii=False, indent=1), encoding="utf-8")
    if args.probs:
        from analysis.probs import ModelOutput, save_output
        from analysis.tags import TagSet

        save_output(args.probs, ModelOutput.from_arrays([p.probs for p in preds],
                                                        TagSet(model.tags, model.scheme)))
    n_spans = sum(len(p.spans) for p in preds)
    print(json.dumps({"out": str(out), "tasks": len(tasks), "spans": n_spans,
                      "model_version": model.version, "probs": args.probs,
                      "engine": engine.engine}))
    return 0
