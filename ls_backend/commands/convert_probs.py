"""``ner-quality convert-probs OLD.npz NEW.npz --labels O,B-PER,...``: old -> columnar probabilities.

The older per-task format (``numpy.savez(path, *arrays)``: ``arr_0, arr_1, ...``, one
``(n_tokens, n_tags)`` array per task, optional ``annotated`` mask) stores no tag order and is
slow to read for big datasets.  This writes the columnar format of ``analysis.probs`` (one
float32 matrix, task offsets, the tag order and scheme; memory-mappable), which ``dep``,
``analyze``, ``report`` and ``push`` read without ``--labels``.  ``--data`` checks that the
arrays fit a dataset (one per task, token counts) before writing.
"""

from __future__ import annotations

import argparse
import json
from typing import Any


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("convert-probs", help="convert old per-task probability files to the "
                       "columnar format (with their tag order)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("input", metavar="OLD.npz", help="probabilities (old per-task or columnar)")
    p.add_argument("output", metavar="NEW.npz", help="columnar probability file to write")
    p.add_argument("--labels", required=True, metavar="TAGS",
                   help="the arrays' tag order, e.g. O,B-PER,I-PER,B-LOC,I-LOC")
    p.add_argument("--scheme", default="iob2", choices=("iob2", "iob1"),
                   help="scheme of the tags (default iob2)")
    p.add_argument("--data", metavar="D", help="dataset the probabilities belong to (checked)")
    return p


def run(args: argparse.Namespace) -> int:
    from analysis.probs import load_output, save_output
    from analysis.tags import TagSet

    tags = [t.strip() for t in args.labels.split(",") if t.strip()]
    tagset = TagSet(tuple(tags), args.scheme)
    out = load_output(args.input, tagset=tagset, mmap=False)
    if args.data:  # one array per task or per annotated task, each with the task's tokens
        from analysis.dep.inputs import as_output, check_probs
        from analysis.formats import load

        corpus = load(args.data).corpus
        out = as_output(corpus, out if out.n_tasks == corpus.n_tasks else out.per_task(), tagset)
        check_probs(corpus, out, tol=1e-3)
    path = save_output(args.output, out)
    print(json.dumps({"out": str(path), "tasks": out.n_tasks, "with_probabilities":
                      int(out.has.sum()), "rows": int(out.probs.shape[0]),
                      "tags": list(tagset.tags), "scheme": tagset.scheme}))
    return 0
