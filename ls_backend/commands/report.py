"""``ner-quality report``: one self-contained offline HTML report (+ optional CSV).

Same inputs as ``ner-quality analyze`` (``--project`` / ``--store`` / ``--data``, ``--probs`` /
``--model``).  The page is an interactive console (linked charts, filters, the task table with
the annotation and the model side by side, inspect by id, samples, duplicates): see
``analysis/review/report/page.py``.  The span map uses the model's gold-span embeddings (with
``--model``, or the packaged backbone's with ``--probs``), otherwise character n-gram TF-IDF
vectors of the span texts, projected to 2-D with UMAP (``--map pca``: PCA).  With ``--model``
the console also holds the subword view of the flagged and sampled tasks and the NMF
components of one layer's FFN activations (``--activations-layer``).
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
    p = sub.add_parser("report", help="self-contained interactive HTML report (the console)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--out", default="report.html", help="HTML file to write (default report.html)")
    p.add_argument("--csv", metavar="FILE", help="also write the flagged tasks as CSV")
    p.add_argument("--ls-url", help="Label Studio URL for task links (default: the input's)")
    p.add_argument("--title", default=None, help="report title")
    p.add_argument("--map", choices=("umap", "pca"), default="umap",
                   help="projection of the span-embedding map (default umap; pca is instant)")
    p.add_argument("--map-points", type=int, default=2000, metavar="N",
                   help="spans drawn on the map at most (default 2000, highest DEP kept)")
    p.add_argument("--activations-layer", type=int, default=None, metavar="L",
                   help="with --model: the layer whose FFN activations are factorised "
                        "(default the middle one)")
    p.add_argument("--no-model-views", action="store_true",
                   help="with --model: skip the subword view and the activations")
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


#: tasks whose subword view is stored (inspect by id shows it), and whose activations are
#: factorised, with --model
MODEL_VIEW_TASKS = 300
ACTIVATION_TASKS = 400


def model_extras(model: Any, corpus: Any, rows: list[int], *, layer: int | None = None,
                 seed: int = 0) -> dict[str, Any]:
    """The runtime's views for the console: the subword view of ``rows`` (first
    :data:`MODEL_VIEW_TASKS`) and the NMF components of one layer's FFN activations over those
    rows plus a seeded sample (:data:`ACTIVATION_TASKS` tasks in all)."""
    import numpy as np

    from ls_backend.runtime.activations import activation_components, model_view

    n = corpus.n_tasks
    words = [list(corpus.task_tokens(i).tokens) for i in range(n)]
    view_rows = [r for r in dict.fromkeys(rows) if words[r]][:MODEL_VIEW_TASKS]
    extras: dict[str, Any] = {"model_view": model_view(model, words, rows=view_rows)}
    rng = np.random.default_rng(seed)
    more = rng.permutation(n)[:ACTIVATION_TASKS].tolist() if n else []
    act_rows = [r for r in dict.fromkeys(view_rows[:20] + more) if words[r]][:ACTIVATION_TASKS]
    n_words = sum(len(words[r]) for r in act_rows)
    if n_words >= 8:
        comps = activation_components(model, words, rows=act_rows, layer=layer,
                                      n_components=min(8, n_words), seed=seed)
        act: dict[str, Any] = dict(comps)
        act["words"] = {r: words[int(r)] for r in comps["tasks"]}
        extras["activations"] = act
    else:
        extras["activations_note"] = "too few words for the activations view"
    return extras


def build_report(res: Any, inp: Any, *, out: str | Path, csv: str | None = None,
                 ls_url: str | None = None, title: str | None = None, seed: int = 0,
                 map_method: str = "umap", map_points: int = 2000, model_dir: str | None = None,
                 device: str = "auto", activations_layer: int | None = None) -> Path:
    """Write the console for one analysis: span columns from the analysis's own alignment, the
    span map, the sample sections, and with ``model_dir`` the runtime's subword and activation
    views."""
    import logging

    from analysis.review.report import span_columns, span_map, write_csv, write_report

    log = logging.getLogger(__name__)
    corpus = res.corpus
    gold = corpus.gold.chars
    dep = res.metrics.dep
    span_dep = None
    if dep is not None:
        span_dep = dep.span_dep if dep.span_dep is not None else dep.task_dep[gold.task]
    spans = span_columns(corpus, res.comparison, span_dep=span_dep,
                         threshold=None if dep is None else dep.threshold)
    smap, source = None, None
    if len(gold):
        vecs = inp.span_vectors
        source = ("the model's gold-span embeddings" if model_dir else
                  "gold-span embeddings of the packaged MiniLM backbone")
        if vecs is None or len(vecs) != len(gold):
            vecs = span_vectors_tfidf([str(x) for x in corpus.gold_text], seed=seed)
            source = "character n-gram TF-IDF of the span texts (no model embeddings)"
        smap = span_map(vecs, dep=span_dep, method=map_method,  # type: ignore[arg-type]
                        max_points=map_points, seed=seed)
    url = ls_url or inp.url
    d = res.to_dict()
    d["samples"] = report_samples(corpus, d["metrics"], seed=seed)
    for t in d["tasks"]:
        i = t["index"]
        t["text"] = corpus.texts[i]
        t["annotator"] = None if corpus.annotator is None else corpus.annotator[i]
        t["split"] = None if corpus.split is None else corpus.split[i]
    extras: dict[str, Any] = {"map_source": source}
    if model_dir:
        flagged = {int(t) for a in d["alerts"] for t in a["task_ids"]}
        key_rows = [t["index"] for t in sorted(d["tasks"], key=lambda t: -(t["dep"] or 0.0))
                    if (t["id"] if t["id"] is not None else t["index"]) in flagged]
        rows = key_rows + d["samples"]["by_loss"] + d["samples"]["random"]
        log.info("report: subword view and activations of %d tasks with %s", len(rows), model_dir)
        model = inp.model  # loaded once by the analysis's model pass
        if model is None:
            from ls_backend.runtime import NerModel

            model = NerModel.load(model_dir, labels=list(corpus.labels), device=device)
        extras.update(model_extras(model, corpus, rows, layer=activations_layer, seed=seed))
    else:
        extras["model_view_note"] = ("the subword view needs --model (the tokens the model "
                                     "reads are not known without it)")
        extras["activations_note"] = "no model given: the activations view needs --model DIR"
    path = write_report(d, out, ls_url=url, project_id=inp.project_id, spans=spans,
                        spanmap=smap, extras=extras, title=title or "ner-quality report")
    if csv:
        write_csv(d, csv, ls_url=url, project_id=inp.project_id)
    return path


def run(args: argparse.Namespace) -> int:
    from .analyze import legacy_note

    res, inp = run_analysis(args)
    legacy_note(inp, args.probs)
    if args.activations_layer is not None and not args.model:
        raise ValueError("--activations-layer needs --model DIR")
    path = build_report(res, inp, out=args.out, csv=args.csv, ls_url=args.ls_url,
                        title=args.title, seed=args.seed, map_method=args.map,
                        map_points=args.map_points,
                        model_dir=None if args.no_model_views else args.model,
                        device=args.device or args.settings.device,
                        activations_layer=args.activations_layer)
    print(str(Path(path).resolve()))
    if args.csv:
        print(f"flagged tasks CSV: {Path(args.csv).resolve()}", file=sys.stderr)
    return 0
