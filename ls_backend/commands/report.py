"""``ner-quality report``: one self-contained offline HTML report (+ optional CSV).

Same inputs as ``ner-quality analyze`` (``--project`` / ``--store`` / ``--data``, ``--probs`` /
``--model``).  The span map uses the model's gold-span embeddings with ``--model``, otherwise
character n-gram TF-IDF vectors of the span texts; both are projected to 2-D with PCA.
Flagged-task links point to ``<LS_URL>/projects/<pid>/data?task=<id>`` when the input is a
project (``--ls-url`` overrides the URL).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .analyze import add_input_args, run_analysis


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("report", help="self-contained HTML report of a dataset analysis",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--csv", metavar="FILE", help="also write the flagged tasks as CSV")
    p.add_argument("--ls-url", help="Label Studio URL for task links (default: the input's)")
    p.add_argument("--title", default=None, help="report title")
    return p


def span_vectors_tfidf(texts: list[str], *, seed: int = 0) -> Any:
    """(n, <=32) float32 character 2-4-gram TF-IDF vectors of span texts, SVD-reduced."""
    import numpy as np
    from sklearn.decomposition import TruncatedSVD
    from sklearn.feature_extraction.text import TfidfVectorizer

    if len(texts) < 3:
        return np.zeros((len(texts), 2), dtype=np.float32)
    X = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 4), lowercase=True).fit_transform(texts)
    k = int(min(32, X.shape[1] - 1, len(texts) - 1))
    if k < 2:
        return np.zeros((len(texts), 2), dtype=np.float32)
    return TruncatedSVD(k, random_state=seed).fit_transform(X).astype(np.float32)


#: tasks drawn in the "random samples" section of the report
RANDOM_SAMPLES = 20


def report_samples(corpus: Any, metrics: dict[str, Any], *, seed: int) -> dict[str, Any]:
    """Task rows (0-based) of the report's sample sections: the highest mean token loss (from
    ``metrics["samples_by_loss"]``, in that order) and a seeded random sample."""
    import numpy as np

    id_to_row = {int(x): i for i, x in enumerate(corpus.ids.tolist())}
    by_loss = [id_to_row[int(s["id"])] for s in metrics.get("samples_by_loss") or []
               if int(s["id"]) in id_to_row]
    n = corpus.n_tasks
    rnd = np.random.default_rng(seed).choice(n, size=min(RANDOM_SAMPLES, n), replace=False) \
        if n else np.zeros(0, dtype=np.int64)
    return {"by_loss": by_loss, "random": sorted(int(i) for i in rnd), "seed": seed}


def build_report(res: Any, inp: Any, *, out: str | Path, csv: str | None = None,
                 ls_url: str | None = None, title: str | None = None, seed: int = 0) -> Path:
    from analysis.review.report import span_map, write_csv, write_report
    from analysis.review.report.spans import task_spans

    corpus = res.corpus
    gold = corpus.gold.chars
    smap = None
    if len(gold):
        labels = [gold.labels[j] for j in gold.label.tolist()]
        vecs = inp.span_vectors
        if vecs is None or len(vecs) != len(labels):
            vecs = span_vectors_tfidf([str(x) for x in corpus.gold_text], seed=seed)
        dep = None if res.dep is None else res.dep.gold_span_dep
        if dep is None and res.task_dep is not None:
            dep = res.task_dep[gold.task]
        smap = span_map(vecs, labels, dep=dep, task_ids=corpus.ids[gold.task],
                        texts=list(corpus.gold_text), seed=seed)
    url = ls_url or inp.url
    d = res.to_dict()
    # the flagged tasks and the samples are drawn with their gold and model spans
    flagged = {int(t) for a in d["alerts"] for t in a["task_ids"]}
    rows = [t["index"] for t in d["tasks"]
            if (t["id"] if t["id"] is not None else t["index"]) in flagged]
    d["samples"] = report_samples(corpus, d["metrics"], seed=seed)
    spans = task_spans(corpus, res.comparison,
                       rows + d["samples"]["by_loss"] + d["samples"]["random"])
    for t in d["tasks"]:
        t["text"] = corpus.texts[t["index"]]
        if t["index"] in spans:
            t.update(spans[t["index"]])
    path = write_report(d, out, ls_url=url, project_id=inp.project_id, spanmap=smap,
                        title=title or "ner-quality report")
    if csv:
        write_csv(d, csv, ls_url=url, project_id=inp.project_id)
    return path


def run(args: argparse.Namespace) -> int:
    from .analyze import legacy_note

    res, inp = run_analysis(args)
    legacy_note(inp, args.probs)
    path = build_report(res, inp, out=args.out, csv=args.csv, ls_url=args.ls_url,
                        title=args.title, seed=args.seed)
    print(str(Path(path).resolve()))
    if args.csv:
        print(f"flagged tasks CSV: {Path(args.csv).resolve()}", file=sys.stderr)
    return 0
