"""``ner-quality analyze``: dataset-wide metrics and alerts.

Input: ``--project ID`` (the local store filled by ``ner-quality sync``), ``--store PATH``, or
``--data FILE...`` (CoNLL / Label Studio JSON; several files are concatenated and a task
without ``data.split``/``meta.split`` takes the file's stem, e.g. ``train``, as its split).

Model output (optional; without it only annotation-side metrics and the stored predictions'
errors are reported):
``--probs P.npz --labels O,B-PER,...``  per-task probabilities, the ``ner-quality dep`` format;
``--model DIR``  the runtime predicts the probabilities (use a model that did not train on
these tasks — e.g. cross-fitted — for meaningful DEP).

``--json`` prints exactly one object ``{"metrics", "alerts", "tasks"}``; otherwise a short
text summary.  Environment: ``LABEL_STUDIO_URL`` (store location), ``NERQ_CACHE_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import sys
import warnings
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def add_input_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--project", type=int, metavar="ID", help="analyze the synced store of project ID")
    src.add_argument("--store", metavar="PATH", help="a store file written by ner-quality sync")
    src.add_argument("--data", nargs="+", metavar="FILE", help="dataset file(s): CoNLL or LS JSON")
    p.add_argument("--url", default=os.environ.get("LABEL_STUDIO_URL"),
                   help="Label Studio URL (default $LABEL_STUDIO_URL; locates the store)")
    p.add_argument("--format", default="auto", choices=("auto", "conll", "ls-json", "json-min"))
    p.add_argument("--label-config", metavar="XML", help="labeling config (file or XML text)")
    p.add_argument("--probs", metavar="P.npz", help="per-task probabilities (arr_0, arr_1, ...)")
    p.add_argument("--labels", metavar="TAGS", help="tag columns of --probs (default O,B-L1,I-L1,...)")
    p.add_argument("--model", metavar="DIR", help="model directory: predict the probabilities")
    p.add_argument("--device", default="auto", help="device for --model (default auto)")
    p.add_argument("--zero-diagonal", action="store_true",
                   help="normalise the confusion matrix without its diagonal (errors only)")
    p.add_argument("--dup-threshold", type=float, default=0.95,
                   help="cosine similarity of near-duplicate tasks (default 0.95)")
    p.add_argument("--seed", type=int, default=0)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("analyze", help="dataset metrics and alerts (store or files)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


@dataclasses.dataclass
class Inputs:
    dataset: Any
    url: str | None
    project_id: int | None
    probs: list[Any] | None = None
    tags: list[str] | None = None
    predictions: list[Any] | None = None
    span_vectors: Any = None
    dep_source: str | None = None


def _concat(datasets: list[Any], names: list[str]) -> Any:
    from analysis.dataset import Dataset

    if len(datasets) == 1:
        return datasets[0]
    labels: list[str] = []
    for d in datasets:
        labels.extend(x for x in d.labels if x not in labels)
    tasks: list[Any] = []
    for d, name in zip(datasets, names):
        for t in d.tasks:
            tasks.append(dataclasses.replace(t, index=len(tasks), split=t.split or name))
    first = datasets[0]
    return Dataset(tasks=tasks, labels=tuple(labels), from_name=first.from_name,
                   to_name=first.to_name)


def load_inputs(args: argparse.Namespace) -> Inputs:
    """Dataset (+ probabilities / predictions) from the command-line inputs."""
    from analysis.formats import from_ls_tasks, load
    from analysis.labelstudio.store import TaskStore, store_path

    url = getattr(args, "url", None)
    pid = None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # data caveats are reported as alerts instead
        if args.data:
            ds_list = [load(f, format=args.format, label_config=args.label_config, strict=False)
                       for f in args.data]
            ds = _concat(ds_list, [Path(f).stem for f in args.data])
        else:
            path = Path(args.store) if args.store else store_path(url, args.project)
            if not path.is_file():
                raise ValueError(
                    f"no synced store at {path}; run `ner-quality sync --project "
                    f"{args.project}` first (or pass --url / $LABEL_STUDIO_URL)"
                )
            with TaskStore(path) as st:
                tasks = st.tasks()
                info = st.get_state("project") or {}
            pid = args.project if args.project is not None else info.get("id")
            url = url or info.get("url")
            if not tasks:
                raise ValueError(f"the store {path} holds no tasks")
            cfg = args.label_config or info.get("label_config")
            ds = from_ls_tasks(tasks, label_config=cfg, strict=False)
    inp = Inputs(ds, url, pid)
    if args.probs and args.model:
        raise ValueError("give --probs or --model, not both")
    if args.probs:
        from analysis.tags import tag_names
        from analysis.dep import load_probs

        inp.probs = load_probs(args.probs)
        inp.tags = ([t.strip() for t in args.labels.split(",") if t.strip()] if args.labels
                    else list(tag_names(ds.labels)))
        inp.dep_source = f"probabilities {args.probs}"
    elif args.model:
        inp.predictions, inp.tags, inp.span_vectors = predict_with_model(
            ds, args.model, device=args.device)
        inp.dep_source = f"model {args.model}"
    return inp


def predict_with_model(ds: Any, model_dir: str | None, *, device: str = "auto") -> tuple[Any, ...]:
    """Runtime predictions for every task (+ gold span embeddings for the span map)."""
    import numpy as np

    from analysis.dataset import token_spans
    from ls_backend.runtime import NerModel

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    model = NerModel.load(model_dir, labels=list(ds.labels), device=device)
    gold_tok = [token_spans(t, "gold", warn=False) if t.gold else [] for t in ds.tasks]
    preds = model.predict([t.tokens for t in ds.tasks], spans=gold_tok, progress=True)
    embs = [p.extra_embeddings for p in preds if p.extra_embeddings is not None
            and len(p.extra_embeddings)]
    vecs = np.concatenate(embs) if embs else None
    return preds, list(model.tags), vecs


def run_analysis(args: argparse.Namespace) -> tuple[Any, Inputs]:
    from analysis.review.analyze import analyze_dataset

    inp = load_inputs(args)
    res = analyze_dataset(
        inp.dataset, probs=inp.probs, tags=inp.tags, predictions=inp.predictions,
        dep_source=inp.dep_source, zero_diagonal=args.zero_diagonal,
        dup_threshold=args.dup_threshold, seed=args.seed,
    )
    return res, inp


def summary_text(res: Any) -> str:
    m = res.metrics
    lines = [f"{m['n_tasks']} tasks, {m['n_annotated']} annotated, {m['n_gold_spans']} gold spans"]
    if "prf" in m:
        lines.append(f"micro F1 vs predictions: {m['prf']['micro avg']['f1-score']:.3f}")
    if "dep" in m:
        d = m["dep"]
        th = "n/a" if d["threshold"] is None else f"{d['threshold']:.3f}"
        lines.append(f"DEP: mean {d['mean']}, threshold {th}, above: {d['n_above_threshold']}")
    lines.append(f"{len(res.alerts)} alert(s), {m.get('n_flagged_tasks', 0)} flagged task(s):")
    for a in res.alerts:
        ids = ", ".join(str(t) for t in a.task_ids[:10]) + (" ..." if len(a.task_ids) > 10 else "")
        lines.append(f"  - {a.name} ({len(a.task_ids)}): {a.rule}\n      tasks: {ids}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    res, _ = run_analysis(args)
    if args.json:
        json.dump(res.to_dict(), sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        print(summary_text(res))
    return 0
