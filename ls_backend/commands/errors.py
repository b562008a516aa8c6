"""``ner-quality errors``: span error types of predictions against gold.

Every gold span is ``correct``, ``wrong_tag`` (same boundaries, other label), ``span_shift``
(overlapped, boundaries differ) or ``missed``; every prediction overlapping no gold span is a
``ghost``.  Prints counts overall, per class, the most frequent label confusions, and per task
the exact span pairs (``--json``: one JSON object with all of it, every task with an error).
Inputs and task matching are those of ``ner-quality evaluate``.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .evaluate import Pair, add_common_arguments, load_pair


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "errors",
        help="error types (wrong tag, span shift, missed, ghost) overall, per class, per task",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_common_arguments(p)
    p.add_argument(
        "--max-tasks",
        type=int,
        default=20,
        help="tasks listed in the text output (default 20; --json lists every task with errors)",
    )
    p.add_argument("--top", type=int, default=10, help="top label confusions to show (default 10)")
    return p


def _with_text(pair: Pair, task_index: int, item: dict[str, Any]) -> dict[str, Any]:
    for span in ([item["gold"]] if item["gold"] else []) + item["pred"]:
        span["text"] = pair.span_text(task_index, span["start"], span["end"])
    return item


def build(pair: Pair, *, top: int = 10) -> dict[str, Any]:
    """All error information as one JSON-ready dict."""
    from analysis.errors import KINDS, align, task_errors
    from analysis.metrics import confusion, error_distribution, top_confusions

    al = align(pair.gold, pair.pred, n_tasks=pair.n_tasks)
    dist = error_distribution(pair.gold, pair.pred, al)
    conf = confusion(pair.gold, pair.pred, al)
    n_err = al.task_error_counts()
    tasks = []
    for i in (n_err > 0).nonzero()[0].tolist():
        t = pair.gold_ds.tasks[i]
        te = task_errors(al, i)
        tasks.append(
            {
                "task": i,
                "id": t.id,
                "name": t.name,
                "counts": te["counts"],
                "n_errors": te["n_errors"],
                "items": [_with_text(pair, i, it) for it in te["items"]],
            }
        )
    return {
        "gold": pair.gold_path,
        "pred": pair.pred_path,
        "n_tasks": pair.n_tasks,
        "n_evaluated": int(pair.annotated.sum()),
        "offsets": pair.unit,
        "kinds": list(KINDS),
        "counts": al.counts(),
        "n_tasks_with_errors": len(tasks),
        "per_class": dist.to_dict(),
        "confusion": conf.to_dict(),
        "top_confusions": [
            {"gold": g, "pred": p, "count": c} for g, p, c in top_confusions(conf, k=top)
        ],
        "tasks": tasks,
    }


def _fmt_span(span: dict[str, Any] | None) -> str:
    if span is None:
        return "-"
    return f"[{span['start']}, {span['end']}) {span['label']} {span['text']!r}"


def render(out: dict[str, Any], *, max_tasks: int) -> str:
    kinds = out["kinds"]
    lines = [
        f"gold: {out['gold']}  pred: {out['pred'] or out['gold'] + ' (predictions)'}",
        f"tasks evaluated: {out['n_evaluated']} of {out['n_tasks']}; tasks with errors: "
        f"{out['n_tasks_with_errors']} ({out['offsets']} offsets)",
        "",
        "error types: " + ", ".join(f"{k} {out['counts'][k]}" for k in kinds),
        "",
    ]
    names = list(out["per_class"])
    width = max([len(n) for n in names] + [5])
    lines.append(f"{'class':<{width}s} " + " ".join(f"{k:>10s}" for k in kinds))
    for lab in names:
        row = out["per_class"][lab]
        lines.append(f"{lab:<{width}s} " + " ".join(f"{row[k]:>10d}" for k in kinds))
    if out["top_confusions"]:
        lines += ["", "top confusions (gold -> pred):"]
        for c in out["top_confusions"]:
            lines.append(f"  {c['gold']} -> {c['pred']}: {c['count']}")
    if out["tasks"] and max_tasks > 0:
        shown = out["tasks"][:max_tasks]
        lines += ["", f"tasks with errors (first {len(shown)} of {len(out['tasks'])}):"]
        for t in shown:
            lines.append(f"{t['name']}: {t['n_errors']} error(s)")
            for it in t["items"]:
                preds = "; ".join(_fmt_span(p) for p in it["pred"]) or "-"
                lines.append(f"  {it['kind']:<10s} gold {_fmt_span(it['gold'])}  pred {preds}")
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    if args.max_tasks < 0 or args.top < 0:
        raise ValueError("--max-tasks and --top must be >= 0")
    pair = load_pair(args)
    out = build(pair, top=args.top)
    if args.json:
        json.dump(out, sys.stdout, ensure_ascii=False)
        sys.stdout.write("\n")
    else:
        sys.stdout.write(render(out, max_tasks=args.max_tasks))
    return 0
