"""``ner-quality dep``: Data Error Potential of every annotated task from saved probabilities.

``--probs`` is a probability file in the columnar format (``train --folds``, ``predict
--probs`` and ``convert-probs`` write it; it stores its tag order and scheme), or the older
per-task format (``numpy.savez(path, *arrays)``: ``arr_0, arr_1, ...`` one ``(n_tokens, n_tags)``
array per task or per annotated task) together with ``--labels`` (the TAG list, e.g.
``O,B-PER,I-PER,B-LOC,I-LOC``): the tag order is never guessed.  Repeat ``--probs`` for several
training epochs: the margin is averaged over all of them (AUM) and the LAST file is the final
model (argmax predictions, error types).

Output: JSON lines on stdout (or ``--out FILE``), one object per task with ``index``, ``id``,
``dep`` (null for unannotated tasks), ``category`` (easy / hard / mislabeled), ``errors`` and
``spans`` (start, end, text, gold_label, pred_label, kind, dep, suspect); ``--json`` prints
one object with ``tasks``, ``thresholds`` and ``summary``.

The gold spans are embedded with the packaged MiniLM backbone (offline) for the neighbour
signal unless ``--no-embed`` (automatic up to 20,000 tasks; ``--embed`` forces it beyond); a
backbone that cannot load is said in one warning and DEP goes on without it.

Scoring (``--scorer``): ``model`` (default) gives every gold span and ``O`` token its error
probability under the learned error model (``analysis/dep/errormodel.py``; ``--error-model FILE``
for your own fit) and ``suspect`` its most likely error class; ``signals`` is the weighted
noisy-OR of the signals with per-unit-type calibration.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    from .analyze import add_embed_args

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
        help="probabilities (.npz, see above); repeat for epochs, the last is the final model",
    )
    p.add_argument(
        "--labels",
        metavar="TAGS",
        help="tag list (column order) of an old-format --probs file, e.g. O,B-PER,I-PER",
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
    add_embed_args(p)
    p.add_argument("--device", default=None, help="device for the embedding (default $DEVICE)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    out.add_argument("--out", metavar="FILE", help="write the JSON lines to FILE")
    return p


def build(args: argparse.Namespace) -> tuple[list[dict[str, Any]], dict[str, Any], dict[str, Any]]:
    """Run the scoring: ``(task records, thresholds, summary)``."""
    from analysis.dep import compute_dep
    from analysis.dep.errormodel import ErrorModel
    from analysis.exceptions import DataError
    from analysis.formats import load

    from .analyze import check_output, embed_for_dep, read_probs

    if args.error_model and args.scorer != "model":
        raise ValueError("--error-model needs --scorer model")
    em = ErrorModel.load(args.error_model) if args.error_model else None
    ds = load(args.data, format=args.format, label_config=args.label_config)
    outputs = [read_probs(path, args.labels, dataset=ds) for path in args.probs]
    args._legacy = [p for p, o in zip(args.probs, outputs) if o.legacy]
    final_path, final = args.probs[-1], outputs[-1]
    emb = None
    if not args.no_embed and ds.corpus.annotated.any():
        check_output(ds.corpus, final, final_path)  # bad input fails before the wait
        emb = embed_for_dep(ds.corpus, ds.labels, device=args.device or args.settings.device,
                            force=args.embed)
    try:
        res = compute_dep(ds.corpus, final, epochs_probs=outputs if len(outputs) > 1 else None,
                          aggregate=args.aggregate, scorer=args.scorer, error_model=em,
                          span_embeddings=emb)
    except DataError as exc:
        raise DataError(f"{final_path}: {exc}") from None
    summary = res.summary()
    summary.update({"data": str(args.data), "probs": [str(p) for p in args.probs],
                    "tags": list(res.tags), "scheme": res.tagset.scheme if res.tagset else None,
                    "epochs": len(outputs),
                    "span_embeddings": None if emb is None else int(emb.shape[0])})
    return res.task_records(), res.thresholds.to_dict(), summary


def _legacy_notes(args: argparse.Namespace) -> None:
    for path in getattr(args, "_legacy", []):
        print(f"note: {path} is in the old per-task format (slow to read at scale); convert it "
              f"once: ner-quality convert-probs {path} NEW.npz --labels {args.labels}",
              file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    records, thresholds, summary = build(args)
    if args.json:
        sys.stdout.write(json.dumps({"tasks": records, "thresholds": thresholds,
                                     "summary": summary}, ensure_ascii=False) + "\n")
    elif args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
        print(
            f"wrote {len(records)} task scores to {args.out}; thresholds easy<"
            f"{thresholds['easy']:.3f} mislabeled>={thresholds['mislabeled']:.3f}; "
            f"{summary['categories']['mislabeled']} likely mislabeled",
            file=sys.stderr,
        )
    else:
        sys.stdout.writelines(json.dumps(rec, ensure_ascii=False) + "\n" for rec in records)
    _legacy_notes(args)
    return 0
