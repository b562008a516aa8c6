"""``ner-quality convert IN OUT --to {ls-json,json-min,conll}``: convert between dataset formats.

Prints one summary line to stderr: tasks, spans, repairs and misaligned spans.  Bad input
raises ``ValueError`` (the CLI prints it as one line and exits 2).
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "convert",
        help="convert CoNLL <-> Label Studio JSON",
        description=(
            "Convert a dataset between CoNLL (2-column or CoNLL-2003 4-column), Label Studio "
            "JSON (full export) and JSON-MIN. CoNLL -> ls-json -> CoNLL is byte-identical."
        ),
    )
    p.add_argument("input", metavar="IN", help="input file (CoNLL, LS JSON export or JSON-MIN)")
    p.add_argument("output", metavar="OUT", help="output file")
    p.add_argument(
        "--to", required=True, choices=["ls-json", "json-min", "conll"], help="output format"
    )
    p.add_argument(
        "--format",
        default="auto",
        choices=["auto", "conll", "ls-json", "json-min"],
        help="input format (default: detect from content)",
    )
    p.add_argument(
        "--scheme",
        default="iob2",
        choices=["iob2", "iob1", "bioes", "bilou"],
        help="tag scheme written to CoNLL (default iob2)",
    )
    p.add_argument(
        "--in-scheme",
        default=None,
        choices=["iob2", "iob1", "bioes", "bilou"],
        help="tag scheme of a CoNLL input (default: detect)",
    )
    p.add_argument(
        "--label-config",
        default=None,
        metavar="XML",
        help="Label Studio labeling config file (labels, from_name/to_name)",
    )
    p.add_argument(
        "--annotator",
        default=None,
        help="use this annotator's annotation (user id or email) instead of the latest",
    )
    p.add_argument(
        "--which",
        default="gold",
        choices=["gold", "pred"],
        help="spans written to CoNLL: the annotation (gold) or the prediction",
    )
    p.add_argument(
        "--lenient",
        action="store_true",
        help="repair invalid tags / drop invalid spans and count them instead of failing",
    )
    return p


def run(args: argparse.Namespace) -> int:
    from analysis.formats import load, save

    src, dst = Path(args.input), Path(args.output)
    if src.resolve() == dst.resolve():
        raise ValueError(f"output {dst} is the input file; choose another path")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # everything is counted in the summary line
        ds = load(
            src,
            format=args.format,
            label_config=args.label_config,
            annotator=args.annotator,
            scheme=args.in_scheme,
            strict=not args.lenient,
        )
        rep = save(ds, dst, format=args.to, scheme=args.scheme, which=args.which)
    counts = ds.problems.counts()
    repairs = ds.problems.repairs
    misaligned = ds.problems.misaligned + (rep.misaligned if args.to == "conll" else 0)
    parts = [
        f"{rep.n_tasks} tasks",
        f"{rep.n_spans} spans",
        f"{repairs} repairs",
        f"{misaligned} misaligned",
    ]
    if rep.skipped:
        parts.append(f"{len(rep.skipped)} skipped")
    print(
        f"convert: {src} -> {dst} ({args.to}): "
        + ", ".join(parts)
        + (f" [{', '.join(f'{k}={v}' for k, v in sorted(counts.items()))}]" if counts else ""),
        file=sys.stderr,
    )
    return 0
