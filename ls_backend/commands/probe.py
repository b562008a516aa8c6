"""``ner-quality probe "TEXT" ...``: what the model makes of a free text, word by word.

For each word: the predicted tag and its probability, the next best tags, the subword tokens
the model sees, and a mark on low-confidence words (``--low`` below 0.6 by default); then the
decoded spans.  ``--model`` is a model directory (``ner-quality train``) or local Hugging Face
model; default ``$MODEL_NAME`` or the packaged MiniLM (whose untrained head is random: the
command says so).  The ML backend answers the same JSON at ``POST /probe`` with the
project's serving model.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("probe", help="per-word tags, probabilities and subwords for free text",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("text", nargs="+", help="text(s) to probe (each argument is one text)")
    p.add_argument("--model", default=None, metavar="DIR", help="model directory or HF path")
    p.add_argument("--labels", default=None, metavar="L1,L2",
                   help="entity types of an untrained backbone (default: the model's)")
    p.add_argument("--device", default=None, help="auto, cpu, cuda (default $DEVICE or auto)")
    p.add_argument("--top-k", type=int, default=3, help="tags listed per word (default 3)")
    p.add_argument("--low", type=float, default=0.6,
                   help="mark words whose best probability is below this (default 0.6)")
    p.add_argument("--json", action="store_true", help="one JSON object per text on stdout")
    return p


def _table(res: Any) -> str:
    d = res.to_dict()
    lines = [f"model {d['model_version']}: {len(d['words'])} words, {d['n_subtokens']} subtokens, "
             f"{d['windows']} window(s); '?' = best probability below {d['low_confidence']}"]
    width = max([len(w["word"]) for w in d["words"]] + [4])
    lines.append(f"  {'word':<{width}}  {'tag':<8} {'p':>6}  next best            subwords")
    for w in d["words"]:
        nxt = ", ".join(f"{t} {p:.2f}" for t, p in w["top"][1:]) or "-"
        mark = "?" if w["low"] else " "
        lines.append(f"{mark} {w['word']:<{width}}  {w['tag']:<8} {w['p']:>6.3f}  {nxt:<20} "
                     f"{' '.join(w['subwords'])}")
    spans = ", ".join(f"{s['text']!r} {s['label']} ({s['score']:.2f})" for s in d["spans"])
    lines.append(f"spans: {spans or 'none'}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    from ls_backend.runtime import NerModel
    from ls_backend.runtime.probe import probe

    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    model = NerModel.load(args.model or args.settings.model_name, labels=labels,
                          device=args.device or args.settings.device)
    if not model.trained:
        print(f"note: {model.source} has an untrained head: its tags are random; probe a "
              "trained model (--model DIR)", file=sys.stderr)
    for text in args.text:
        res = probe(model, text, top_k=args.top_k, low_confidence=args.low)
        print(json.dumps(res.to_dict(), ensure_ascii=False) if args.json else _table(res))
    return 0
