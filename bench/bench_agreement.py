"""Annotator agreement at project scale: reading every annotation and computing the figures.

Synthetic Label Studio tasks (CoNLL-03 sentences when ``../shared/data`` is there, else
generated ones) with ``--annotators`` annotators each, every annotator copying the gold labels
with a per-span chance of a wrong tag or a dropped span.  Times ``from_ls_tasks`` (which now
also reads every annotation of the multi-annotated tasks) and ``analysis.agreement.agreement``
separately, and checks the pooled exact F1 against seqeval on the same pairs.

    .venv/bin/python bench/bench_agreement.py --tasks 10000 --annotators 3 --out bench/results/agreement.json
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from itertools import combinations
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import emit  # noqa: E402

CFG = ('<View><Labels name="label" toName="text"><Label value="PER"/><Label value="ORG"/>'
       '<Label value="LOC"/><Label value="MISC"/></Labels><Text name="text" value="$text"/>'
       '</View>')
LABELS = ("PER", "ORG", "LOC", "MISC")


def sentences(n: int, seed: int) -> list[tuple[list[str], list[tuple[int, int, str]]]]:
    """``n`` (tokens, token spans) from CoNLL-03 train when available, else generated."""
    from analysis.formats import load

    path = Path(__file__).resolve().parents[2] / "shared" / "data" / "conll2003" / "train.txt"
    rng = random.Random(seed)
    out = []
    if path.is_file():
        ds = load(str(path), strict=False)
        base = []
        for t in ds.tasks:
            toks = list(t.tokens.tokens)
            from analysis.dataset import token_spans
            sp = [(s.start, s.end, s.label) for s in token_spans(t, "gold", warn=False)]
            if toks:
                base.append((toks, sp))
        while len(out) < n:
            out.append(base[len(out) % len(base)])
        return out
    words = ["Ada", "met", "Bo", "in", "Rome", "and", "the", "bank", "of", "Oslo", ","]
    for _ in range(n):
        toks = [rng.choice(words) for _ in range(rng.randint(5, 25))]
        sp, i = [], 0
        while i < len(toks):
            if rng.random() < 0.2:
                k = rng.randint(1, min(3, len(toks) - i))
                sp.append((i, i + k, rng.choice(LABELS)))
                i += k + 1
            else:
                i += 1
        out.append((toks, sp))
    return out


def build(n: int, n_ann: int, noise: float, seed: int) -> tuple[list[dict], list, list]:
    rng = random.Random(seed)
    tasks, tags_by_pair_a, tags_by_pair_b = [], [], []
    for tid, (toks, spans) in enumerate(sentences(n, seed), start=1):
        starts, pos = [], 0
        for t in toks:
            starts.append(pos)
            pos += len(t) + 1
        text = " ".join(toks)
        per = []
        for u in range(n_ann):
            mine = []
            for s, e, lab in spans:
                r = rng.random()
                if r < noise / 2:
                    continue  # dropped
                if r < noise:
                    lab = rng.choice([x for x in LABELS if x != lab])
                mine.append((s, e, lab))
            per.append(mine)
        anns = []
        for u, mine in enumerate(per):
            res = [{"from_name": "label", "to_name": "text", "type": "labels",
                    "value": {"start": starts[s], "end": starts[e - 1] + len(toks[e - 1]),
                              "text": text[starts[s]:starts[e - 1] + len(toks[e - 1])],
                              "labels": [lab]}} for s, e, lab in mine]
            anns.append({"id": tid * 10 + u, "completed_by": {"id": u + 1,
                                                             "email": f"a{u}@example.com"},
                         "result": res})
        tasks.append({"id": tid, "data": {"text": text}, "annotations": anns})
        tag = []
        for mine in per:
            t = ["O"] * len(toks)
            for s, e, lab in mine:
                t[s] = f"B-{lab}"
                for k in range(s + 1, e):
                    t[k] = f"I-{lab}"
            tag.append(t)
        for i, j in combinations(range(n_ann), 2):
            tags_by_pair_a.append(tag[i])
            tags_by_pair_b.append(tag[j])
    return tasks, tags_by_pair_a, tags_by_pair_b


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--tasks", type=int, default=10_000)
    ap.add_argument("--annotators", type=int, default=3)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    from analysis.agreement import agreement
    from analysis.formats import from_ls_tasks

    tasks, ya, yb = build(args.tasks, args.annotators, args.noise, args.seed)
    t0 = time.perf_counter()
    ds = from_ls_tasks(tasks, label_config=CFG, strict=False, warn=False)
    t_read = time.perf_counter() - t0
    t0 = time.perf_counter()
    ag = agreement(ds.annotation_sets, ds.labels)
    t_agree = time.perf_counter() - t0
    t0 = time.perf_counter()
    ref = f1_score(ya, yb, mode="strict", scheme=IOB2)
    t_seqeval = time.perf_counter() - t0
    emit({
        "tasks": args.tasks, "annotators": args.annotators, "noise": args.noise,
        "tokens": ag.n_tokens, "multi_annotated": ag.n_tasks,
        "read_s": round(t_read, 3), "agreement_s": round(t_agree, 3),
        "seqeval_f1_s": round(t_seqeval, 3),
        "f1_exact": round(ag.overall.f1_exact, 6), "seqeval_f1": round(float(ref), 6),
        "equal": bool(abs(ag.overall.f1_exact - ref) < 1e-9),
        "alpha": round(ag.alpha, 6), "f1_overlap": round(ag.overall.f1_overlap, 6),
    }, args.out)


if __name__ == "__main__":
    main()
