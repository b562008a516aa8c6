"""``ner-quality dep``: Data Error Potential of every annotated task from saved probabilities.

``--probs`` is an ``.npz`` written by ``numpy.savez(path, *arrays)``: ``arr_0, arr_1, ...`` one
``(n_tokens, n_tags)`` array per task (or per annotated task) in task order, columns in the order
of ``--labels`` (the TAG list, e.g. ``O,B-PER,I-PER,B-LOC,I-LOC``; default
``tag_names(dataset labels)``).  Repeat ``--probs`` for several training epochs: the margin is
averaged over all of them (AUM) and the LAST file is the final model (argmax predictions, error
types).

Output: JSON lines on stdout (or ``--out FILE``), one object per task with ``index``, ``id``,
``dep`` (null for unannotated tasks), ``category`` (easy / hard / mislabeled), ``errors`` and
``spans`` (start, end, text, gold_label, pred_label, kind, dep, suspect); ``--json`` prints
one object with ``tasks``, ``thresholds`` and ``summary``.

Scoring (``--scorer``): ``model`` (default) gives every gold span and ``O`` token its error
probability under the learned error model (``analysis/errormodel.py``; ``--error-model FILE``
for your own fit) and ``suspect`` its most likely error class; ``signals`` is the weighted
noisy-OR of the signals with per-unit-type calibration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import numpy as np


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "dep",
        help="DEP (how likely each annotation is wrong) from saved per-token probabilities",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--data", required=True, metavar="D", help="dataset (CoNLL or LS JSON)")
    p.add_argument(
        "--probs",
        required=True,
        action="append",
        metavar="P.npz",
        help="per-task probabilities (.npz, arr_0..); repeat for epochs, last = final model",
    )
    p.add_argument(
        "--labels",
        metavar="TAGS",
        help="comma-separated tag list = column order of the arrays (default O,B-L1,I-L1,...)",
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=("auto", "conll", "ls-json", "json-min"),
        help="dataset format (default: auto)",
    )
    p.add_argument("--label-config", metavar="XML", help="labeling config (file or XML text)")
    p.add_argument(
        "--aggregate",
        default="max",
        choices=("max", "mean", "noisy_or", "top2", "length_weighted"),
        help="task aggregation of span/token scores (default max; see bench/README.md)",
    )
    p.add_argument(
        "--scorer",
        default="model",
        choices=("model", "signals"),
        help="model: learned error model (default); signals: weighted signals + calibration",
    )
    p.add_argument(
        "--error-model",
        metavar="JSON",
        help="error model file (default: the packaged one; fit your own with "
             "bench/fit_error_model.py or bench/bench_detection.py --write-error-model)",
    )
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    out.add_argument("--out", metavar="FILE", help="write the JSON lines to FILE")
    return p


def build(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Run the scoring: ``(task records, thresholds, summary)``."""
    from analysis.tags import tag_names
    from analysis.dep import compute_dep, load_probs
    from analysis.dep.errormodel import ErrorModel
    from analysis.formats import load

    if args.error_model and args.scorer != "model":
        raise ValueError("--error-model needs --scorer model")
    em = ErrorModel.load(args.error_model) if args.error_model else None

    ds = load(args.data, format=args.format, label_config=args.label_config)
    if args.labels:
        tags = [t.strip() for t in args.labels.split(",") if t.strip()]
        if not tags:
            raise ValueError("--labels is empty; give the tag list, e.g. O,B-PER,I-PER")
    else:
        tags = list(tag_names(ds.labels))
    sets = []
    for path in args.probs:
        arrays = load_probs(path)
        sets.append((path, arrays))
    final_path, final = sets[-1]
    epochs = [a for _, a in sets] if len(sets) > 1 else None
    try:
        # load_probs gives None for tasks without probabilities; compute_dep accepts those
        # (unannotated tasks) and raises a ValueError naming the task otherwise
        res = compute_dep(ds, cast("list[np.ndarray]", final), tags=tags,
                          epochs_probs=cast("list[list[np.ndarray]] | None", epochs),
                          aggregate=args.aggregate, scorer=args.scorer, error_model=em)
    except ValueError as exc:
        raise ValueError(f"{final_path}: {exc}") from None
    summary = res.summary()
    summary.update({"data": str(args.data), "probs": [str(p) for p in args.probs],
                    "tags": list(tags), "epochs": len(sets)})
    return res.task_records(ds.tasks), res.thresholds.to_dict(), summary


def run(args: argparse.Namespace) -> int:
    records, thresholds, summary = build(args)
    if args.json:
        json.dump({"tasks": records, "thresholds": thresholds, "summary": summary},
                  sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
        return 0
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            for rec in records:
                fh.write(json.dumps(rec, ensure_ascii=False) + "\n")
        print(
            f"wrote {len(records)} task scores to {args.out}; thresholds easy<"
            f"{thresholds['easy']:.3f} mislabeled>={thresholds['mislabeled']:.3f}; "
            f"{summary['categories']['mislabeled']} likely mislabeled",
            file=sys.stderr,
        )
        return 0
    for rec in records:
        sys.stdout.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return 0
