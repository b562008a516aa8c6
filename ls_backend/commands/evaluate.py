"""``ner-quality evaluate``: span precision / recall / F1 of predictions against gold.

Inputs are CoNLL files or Label Studio JSON (full export / JSON-MIN).  ``--pred`` may be
omitted when the ``--gold`` file is a Label Studio export holding both annotations (gold) and
predictions.  The spans taken from the ``--pred`` file are its predictions when it has any,
otherwise its annotations / tags (a CoNLL file of model output, or another annotator's export).

Gold and pred must describe the same tasks: matched by Label Studio id when every task of both
files has one, else by position; a different number of tasks, a task id missing on one side,
or a task whose token count differs is an error naming the task.  When every matched task has
the same text on both sides the comparison uses character offsets; otherwise (e.g. CoNLL gold
against a re-tokenized export) it uses token offsets.  Tasks without a gold annotation are not
evaluated.

The tag scheme of CoNLL input is detected once for gold and pred *together* (``--scheme``
overrides) and reported; when one file alone would read differently, a note says so.  With a
valid IOB2 file pair the numbers equal ``seqeval`` strict mode with IOB2 (an invalid tag is an
error naming the file, sentence and line; ``--lenient`` repairs it the conlleval way, an orphan
``I-X`` beginning a span, and reports every repair).  When more than ``--max-repair-rate`` of a
file's entity tags had to be repaired the result would be meaningless: exit 2.

The loading and pairing helpers here are shared with ``ner-quality errors``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

FORMATS = ("auto", "conll", "ls-json", "json-min")


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``evaluate`` and ``errors``."""
    p.add_argument("--gold", required=True, metavar="G", help="gold file (CoNLL or LS JSON)")
    p.add_argument(
        "--pred",
        metavar="P",
        help="predictions file (CoNLL or LS JSON); omit when --gold is an LS export that also "
        "holds predictions",
    )
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--format", choices=FORMATS, default="auto", help="input format of both files"
    )
    p.add_argument("--label-config", metavar="XML", help="labeling config (file or XML text)")
    p.add_argument(
        "--scheme", help="CoNLL tag scheme (iob1, iob2, bioes, bilou); detected when omitted"
    )
    p.add_argument("--annotator", help="use this annotator's annotations as gold (id or email)")
    p.add_argument("--model-version", help="use predictions of this model version")
    p.add_argument(
        "--lenient",
        action="store_true",
        help="repair invalid tags / drop invalid spans (counted) instead of failing",
    )
    p.add_argument(
        "--max-repair-rate", type=float, default=0.5, metavar="R",
        help="with --lenient, fail when more than this share of a file's entity tags / regions "
        "had to be repaired (default 0.5)",
    )


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "evaluate",
        help="span P/R/F1 per class and micro/macro averages (equals seqeval strict IOB2)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(p)
    p.add_argument("--digits", type=int, default=4, help="digits in the text table (default 4)")
    return p


@dataclass
class Pair:
    """Gold and predicted spans of the same tasks, ready for ``analysis.errors.align``.

    Attributes
    ----------
    gold_ds : the gold Dataset (task indices below are its ``Task.index``)
    gold, pred : SpanTable   on ``gold_ds`` task indices; only annotated tasks
    n_tasks : ``len(gold_ds)``
    annotated : (n_tasks,) bool   tasks with a gold annotation (the evaluated ones)
    unit : ``"char"`` or ``"token"``   what the table offsets count
    """

    gold_ds: Any
    gold: Any
    pred: Any
    n_tasks: int
    annotated: np.ndarray
    unit: str
    gold_path: str
    pred_path: str | None
    scheme: dict[str, Any] | None = None
    repairs: dict[str, Any] | None = None

    def span_text(self, task_index: int, start: int, end: int) -> str:
        t = self.gold_ds.tasks[task_index]
        if self.unit == "char":
            return str(t.text[start:end])
        return " ".join(t.tokens.tokens[start:end])


def _is_conll(path: str, args: argparse.Namespace) -> bool:
    if args.format != "auto":
        return bool(args.format == "conll")
    from analysis.formats.conll import read_bytes
    from analysis.formats.files import detect_format

    return detect_format(read_bytes(path)[:4096].decode("utf-8", errors="ignore")) == "conll"


def pair_scheme(args: argparse.Namespace) -> dict[str, Any] | None:
    """One tag scheme for the CoNLL files of the pair (given, or detected from both)."""
    from analysis.formats.conll import file_scheme_evidence, scheme_of

    paths = {"gold": args.gold, "pred": args.pred}
    conll = {side: p for side, p in paths.items() if p is not None and _is_conll(p, args)}
    if not conll:
        return None
    if args.scheme:
        return {"name": args.scheme.lower(), "detected": False}
    evidence = {side: file_scheme_evidence(p) for side, p in conll.items()}
    joint = scheme_of(*evidence.values())
    per_file = {side: scheme_of(e) for side, e in evidence.items()}
    if any(v != joint for v in per_file.values()):
        alone = ", ".join(f"{side} alone reads as {v.upper()}" for side, v in per_file.items())
        print(f"note: {alone}; both decoded as {joint.upper()} (detected from both files; "
              "--scheme overrides)", file=sys.stderr)
    return {"name": joint, "detected": True, "per_file": per_file}


def _load(path: str, args: argparse.Namespace, scheme: str | None) -> Any:
    from analysis.formats import load

    ds = load(path, format=args.format, label_config=args.label_config,
              annotator=args.annotator, model_version=args.model_version, scheme=scheme,
              strict=not args.lenient)
    rate = ds.problems.repair_rate
    if ds.problems.repairs and rate > args.max_repair_rate:
        first = next(p for p in ds.problems.items if p.kind in ("tag_repair", "dropped_span"))
        raise ValueError(
            f"{path}: {ds.problems.repairs} of {ds.problems.checked} entity tags / regions had "
            f"to be repaired ({rate:.0%} > --max-repair-rate {args.max_repair_rate:g}); the "
            f"result would be meaningless. First: {first.message}")
    return ds


def repairs_of(ds: Any) -> dict[str, Any]:
    """The repairs a reader made (counts by kind and the share of checked items)."""
    return {"counts": ds.problems.counts(), "checked": ds.problems.checked,
            "rate": round(ds.problems.repair_rate, 6)}


def _token_table(ds: Any, which: str, order: list[int] | None) -> Any:
    """Token-offset table of ``ds`` (the corpus's one mapping; ``order[i]`` = index in ``ds``
    of output task ``i``)."""
    from analysis.spans import SpanTable

    corpus = ds.corpus
    cols = corpus.gold if which == "gold" else corpus.pred
    if cols is None:
        z = np.zeros(0, dtype=np.int64)
        return SpanTable(z, z, z, np.zeros(0, dtype=np.int32), ds.labels)
    tok = cols.token_table(corpus.token_offsets)
    if order is None:
        return tok
    inv = np.empty(len(order), dtype=np.int64)
    inv[np.asarray(order, dtype=np.int64)] = np.arange(len(order))
    return SpanTable.from_arrays(inv[tok.task], tok.start, tok.end, tok.label, tok.labels)


def load_pair(args: argparse.Namespace) -> Pair:
    """Load ``--gold`` / ``--pred`` and pair their tasks (see the module docstring)."""
    from analysis.dataset import Dataset

    scheme = pair_scheme(args)
    name = None if scheme is None else scheme["name"]
    gold_ds: Dataset = _load(args.gold, args, name)
    if args.pred is None:
        if not any(t.pred is not None for t in gold_ds.tasks):
            raise ValueError(
                f"{args.gold}: holds no predictions; pass --pred with the predictions file"
            )
        pred_ds, which = gold_ds, "pred"
    else:
        pred_ds = _load(args.pred, args, name)
        which = "pred" if any(t.pred is not None for t in pred_ds.tasks) else "gold"
    gt, pt = gold_ds.tasks, pred_ds.tasks

    # ---- match tasks: by Label Studio id when all have one, else by position
    order: list[int] | None = None  # order[i] = index in pred_ds of gold task i
    if pred_ds is not gold_ds:
        if all(t.id is not None for t in gt) and all(t.id is not None for t in pt):
            pos = {t.id: t.index for t in pt if t.id is not None}  # all have one here
            missing = [t for t in gt if t.id not in pos]
            if missing:
                raise ValueError(
                    f"{missing[0].name} of the gold file is not in the pred file "
                    f"({len(missing)} gold task(s) missing there)"
                )
            extra = sorted(set(pos) - {t.id for t in gt})
            if extra:
                raise ValueError(
                    f"task {extra[0]} of the pred file is not in the gold file "
                    f"({len(extra)} extra pred task(s))"
                )
            order = [pos[t.id] for t in gt if t.id is not None]  # all have one here
        elif len(gt) != len(pt):
            n = min(len(gt), len(pt))
            side = "gold" if len(gt) > len(pt) else "pred"
            raise ValueError(
                f"task #{n} is in the {side} file only: gold has {len(gt)} tasks, pred has "
                f"{len(pt)} (gold and pred must describe the same tasks)"
            )
        else:
            order = list(range(len(gt)))
        for t in gt:
            q = pt[order[t.index]]
            if len(t.tokens) != len(q.tokens):
                raise ValueError(
                    f"{t.name}: gold has {len(t.tokens)} tokens but pred has {len(q.tokens)} "
                    "(gold and pred must describe the same texts)"
                )
        same_text = all(t.text == pt[order[t.index]].text for t in gt)
        identity = order == list(range(len(gt)))
    else:
        same_text, identity = True, True

    n_tasks = len(gt)
    annotated = np.fromiter((t.gold is not None for t in gt), dtype=bool, count=n_tasks)
    if same_text:
        unit = "char"
        gold = gold_ds.gold_table()
        pred = pred_ds.gold_table() if which == "gold" else pred_ds.pred_table()
        if not identity:
            assert order is not None  # internal: identity is False only for a real order
            inv = np.empty(n_tasks, dtype=np.int64)
            inv[np.asarray(order, dtype=np.int64)] = np.arange(n_tasks)
            from analysis.spans import SpanTable

            pred = SpanTable.from_arrays(inv[pred.task], pred.start, pred.end, pred.label,
                                         pred.labels)
    else:
        unit = "token"
        logger.info("gold and pred texts differ; comparing token offsets")
        gold = _token_table(gold_ds, "gold", None)
        pred = _token_table(pred_ds, which, order)
    # evaluate annotated tasks only
    keep = annotated[pred.task] if len(pred) else np.zeros(0, dtype=bool)
    if not keep.all():
        from analysis.spans import SpanTable

        pred = SpanTable(pred.task[keep], pred.start[keep], pred.end[keep], pred.label[keep],
                         pred.labels)
    n_unannotated = int((~annotated).sum())
    if n_unannotated:
        logger.warning("%d of %d tasks have no gold annotation and are not evaluated",
                       n_unannotated, n_tasks)
    if which == "pred" and pred_ds is gold_ds:
        n_nopred = sum(1 for t in gt if t.gold is not None and t.pred is None)
        if n_nopred:
            logger.warning("%d annotated tasks have no prediction (counted as predicting nothing)",
                           n_nopred)
    return Pair(gold_ds, gold, pred, n_tasks, annotated, unit, args.gold, args.pred, scheme,
                {"gold": repairs_of(gold_ds),
                 **({"pred": repairs_of(pred_ds)} if pred_ds is not gold_ds else {})})


def run(args: argparse.Namespace) -> int:
    from analysis.metrics import span_prf

    if args.digits < 0:
        raise ValueError(f"--digits must be >= 0, got {args.digits}")
    pair = load_pair(args)
    report = span_prf(pair.gold, pair.pred)
    if args.json:
        out = {
            "gold": pair.gold_path,
            "pred": pair.pred_path,
            "n_tasks": pair.n_tasks,
            "n_evaluated": int(pair.annotated.sum()),
            "offsets": pair.unit,
            "n_gold_spans": len(pair.gold),
            "n_pred_spans": len(pair.pred),
            "scheme": pair.scheme,
            "repairs": pair.repairs,
            "report": report.to_dict(),
        }
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(
            f"gold: {pair.gold_path}  pred: {pair.pred_path or pair.gold_path + ' (predictions)'}\n"
            f"tasks evaluated: {int(pair.annotated.sum())} of {pair.n_tasks}; gold spans "
            f"{len(pair.gold)}, predicted spans {len(pair.pred)} ({pair.unit} offsets)\n"
            + (f"scheme: {pair.scheme['name'].upper()}"
               + (" (detected from both files)" if pair.scheme.get("detected") else " (given)")
               + "\n" if pair.scheme else "")
            + "".join(f"{side} repairs: {r['counts']} of {r['checked']} checked\n"
                      for side, r in (pair.repairs or {}).items() if r["counts"])
            + "\n"
        )
        sys.stdout.write(report.to_text(digits=args.digits))
    return 0
