"""``ner-quality analyze``: dataset-wide metrics and alerts.

Input: ``--project ID`` (the local store filled by ``ner-quality sync``), ``--store PATH``, or
``--data FILE...`` (CoNLL / Label Studio JSON; several files are concatenated and a task
without ``data.split``/``meta.split`` takes the file's stem, e.g. ``train``, as its split).

Model output (optional; without it only annotation-side metrics and the stored predictions'
errors are reported):
``--probs P.npz``  probabilities in the columnar format (``train --folds``, ``predict`` and
``convert-probs`` write it; its tag order is stored in the file), or the older per-task format
with ``--labels O,B-PER,...``;
``--model DIR``  the runtime predicts the probabilities.  A model that trained on these tasks
with these labels has learnt their errors: ``analyze`` refuses it (the model directory's
``trained_tasks.npz`` tells) unless ``--allow-in-sample``; use cross-fitted probabilities
(``train --folds K`` → ``--probs``) or a model trained on other data.  ``--engine ray`` runs
that model pass (probabilities and gold-span embeddings) on Ray Data; the analysis itself
stays here (1 M tasks take ~10 s on one core).

``--json`` prints exactly one object ``{"metrics", "alerts", "tasks"}``; otherwise a short
text summary.  Settings: ``LABEL_STUDIO_URL`` (store location), ``NERQ_CACHE_DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import warnings
from pathlib import Path
from typing import Any

from ls_backend.engine import EngineOptions, add_engine_arguments

log = logging.getLogger(__name__)


def add_embed_args(p: argparse.ArgumentParser, *, prefix: str = "") -> None:
    """``--no-embed`` / ``--embed``: the gold span embedding of :func:`embed_for_dep`."""
    emb = p.add_mutually_exclusive_group()
    emb.add_argument("--no-embed", action="store_true",
                     help=f"{prefix}do not embed the gold spans with the packaged backbone (the "
                          "DEP neighbour signal; automatic up to 20,000 tasks, ~25 s per 5,000 "
                          "sentences on 2 CPU cores)")
    emb.add_argument("--embed", action="store_true",
                     help=f"{prefix}embed the gold spans whatever the dataset's size")


def add_input_args(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--project", type=int, metavar="ID", help="analyze the synced store of project ID")
    src.add_argument("--store", metavar="PATH", help="a store file written by ner-quality sync")
    src.add_argument("--data", nargs="+", metavar="FILE", help="dataset file(s): CoNLL or LS JSON")
    p.add_argument("--url", default=None,
                   help="Label Studio URL (default $LABEL_STUDIO_URL; locates the store)")
    p.add_argument("--format", default="auto", choices=("auto", "conll", "ls-json", "json-min"))
    p.add_argument("--label-config", metavar="XML", help="labeling config (file or XML text)")
    p.add_argument("--probs", metavar="P.npz", help="probabilities (columnar .npz, see above)")
    p.add_argument("--labels", metavar="TAGS",
                   help="tag columns of an old-format --probs file (O,B-L1,I-L1,...)")
    p.add_argument("--model", metavar="DIR", help="model directory: predict the probabilities")
    p.add_argument("--device", default=None, help="device for --model (default $DEVICE or auto)")
    add_engine_arguments(p)
    add_embed_args(p, prefix="with --probs: ")
    p.add_argument("--allow-in-sample", action="store_true",
                   help="use a --model that trained on these very tasks (its DEP is in-sample: "
                        "it has learnt their labels, errors included, and misses most of them)")
    p.add_argument("--zero-diagonal", action="store_true",
                   help="normalise the confusion matrix without its diagonal (errors only)")
    p.add_argument("--dup-threshold", type=float, default=0.95,
                   help="cosine similarity of near-duplicate tasks (default 0.95)")
    p.add_argument("--seed", type=int, default=0)


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("analyze", help="dataset metrics and alerts (store or files)",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


@dataclasses.dataclass
class Inputs:
    """What ``analyze`` / ``report`` / ``push`` read: the dataset, its Label Studio origin and
    the model output over it."""

    dataset: Any
    url: str | None
    project_id: int | None
    output: Any = None  # analysis.probs.ModelOutput
    span_vectors: Any = None
    dep_source: str | None = None
    model: Any = None  # the NerModel --model loaded (report's model views reuse it)


def concat_datasets(datasets: list[Any], names: list[str]) -> Any:
    """One dataset of several files' tasks; a task without a split gets its file's name."""
    from analysis.dataset import Dataset

    if len(datasets) == 1:
        return datasets[0]
    labels: list[str] = []
    for d in datasets:
        labels.extend(x for x in d.labels if x not in labels)
    tasks: list[Any] = []
    for d, name in zip(datasets, names):
        for t in d.tasks:
            tasks.append(dataclasses.replace(t, index=len(tasks), split=t.split or name))
    first = datasets[0]
    return Dataset(tasks=tasks, labels=tuple(labels), from_name=first.from_name,
                   to_name=first.to_name,
                   annotation_sets=tuple(s for d in datasets for s in d.annotation_sets))


def _load_dataset(args: argparse.Namespace) -> tuple[Any, str | None, int | None]:
    from analysis.formats import from_ls_tasks, load
    from analysis.labelstudio.store import TaskStore, store_path

    settings = args.settings
    url = args.url or settings.label_studio_url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # data caveats are reported as alerts instead
        if args.data:
            ds_list = [load(f, format=args.format, label_config=args.label_config, strict=False)
                       for f in args.data]
            return concat_datasets(ds_list, [Path(f).stem for f in args.data]), url, None
        path = Path(args.store) if args.store else store_path(url, args.project,
                                                              root=settings.cache_dir)
        if not path.is_file():
            raise ValueError(
                f"no synced store at {path}; run `ner-quality sync --project {args.project}` "
                "first (or pass --url / $LABEL_STUDIO_URL)")
        with TaskStore(path) as st:
            tasks = st.tasks()
            info = st.get_state("project") or {}
        if not tasks:
            raise ValueError(f"the store {path} holds no tasks")
        ds = from_ls_tasks(tasks, label_config=args.label_config or info.get("label_config"),
                           strict=False)
        pid = args.project if args.project is not None else info.get("id")
        return ds, url or info.get("url"), pid


def read_probs(path: str, labels: str | None, *, dataset: Any) -> Any:
    """A probability file as a ModelOutput with its tag set (refuses to guess the tag order)."""
    from analysis.exceptions import DataError
    from analysis.probs import load_output
    from analysis.tags import TagSet

    tagset = None
    if labels:
        tags = [t.strip() for t in labels.split(",") if t.strip()]
        if not tags:
            raise ValueError("--labels is empty; give the tag list, e.g. O,B-PER,I-PER")
        tagset = TagSet(tuple(tags))
    out = load_output(path, tagset=tagset)
    if out.tagset is None:
        sidecar = Path(path).with_name("tags.txt")  # written next to old train --folds output
        if sidecar.is_file():
            tags = [t for t in sidecar.read_text(encoding="utf-8").split() if t]
            out = out.with_tagset(TagSet(tuple(tags)))
            log.info("%s: tag order from %s", path, sidecar)
        else:
            raise DataError(
                f"{path}: the file does not say its tag order (old per-task format); pass "
                f"--labels (e.g. {','.join(TagSet.for_labels(dataset.labels).tags)}) or convert "
                f"it once: ner-quality convert-probs {path} NEW.npz --labels ...")
    return out


def legacy_note(inp: Inputs, path: str | None) -> None:
    """Tell the user once how to convert an old-format probability file."""
    if inp.output is not None and getattr(inp.output, "legacy", False) and path:
        tags = ",".join(inp.output.tagset.tags)
        print(f"note: {path} is in the old per-task format (slow to read at scale); convert it "
              f"once: ner-quality convert-probs {path} {Path(path).with_suffix('')}-columnar.npz "
              f"--labels {tags}", file=sys.stderr)


def load_inputs(args: argparse.Namespace) -> Inputs:
    """Dataset (+ model output) from the command-line inputs."""
    import gc

    engine = EngineOptions.from_args(args)
    if engine.is_ray and not args.model:
        log.warning("--engine ray runs the model pass of --model; without --model there is "
                    "nothing to run on Ray (the analysis itself is local)")
    elif engine.is_ray:
        from ls_backend.engine.cluster import preflight

        preflight(engine)  # a missing Ray or a dead cluster fails before the data is read
    ds, url, pid = _load_dataset(args)
    # the loaded tasks live until the command ends: keep the cyclic collector from walking
    # their millions of objects again on every full collection (~1 s per 140k LS tasks)
    gc.freeze()
    inp = Inputs(ds, url, pid)
    if args.probs and args.model:
        raise ValueError("give --probs or --model, not both")
    if args.probs:
        inp.output = read_probs(args.probs, args.labels, dataset=ds)
        inp.dep_source = f"probabilities {args.probs}"
        if not args.no_embed and ds.corpus.annotated.any():
            check_output(ds.corpus, inp.output, args.probs)  # bad input fails before the wait
            inp.span_vectors = embed_for_dep(ds.corpus, ds.labels, force=args.embed,
                                             device=args.device or args.settings.device)
    elif args.model:
        n_seen = check_in_sample(ds, args.model, allow=getattr(args, "allow_in_sample", False))
        inp.output, inp.span_vectors, inp.model = predict_with_model(
            ds, args.model, device=args.device or args.settings.device,
            engine=engine)
        inp.dep_source = f"model {args.model}" + (
            f" (in-sample on {n_seen} of {ds.corpus.n_tasks} tasks)" if n_seen else "")
    return inp


#: above this many tasks the automatic embedding is skipped (it runs at ~200 sentences/s on
#: 2 CPU cores: 20,000 tasks take ~2 min); ``--embed`` forces it
EMBED_AUTO_MAX_TASKS = 20_000


def check_output(corpus: Any, output: Any, path: str) -> None:
    """The checks :func:`analysis.dep.compute_dep` makes on ``output``, raised naming ``path``."""
    from analysis.dep.inputs import as_output, check_probs
    from analysis.exceptions import DataError

    try:
        check_probs(corpus, as_output(corpus, output, None), tol=1e-3)
    except DataError as exc:
        raise DataError(f"{path}: {exc}") from None


def embed_for_dep(corpus: Any, labels: Any, *, device: str = "auto",
                  force: bool = False) -> Any:
    """Gold span embeddings from the packaged backbone for the DEP neighbour signal, or None
    (no gold span; more than :data:`EMBED_AUTO_MAX_TASKS` tasks without ``force``; or the
    backbone cannot load: each said in one line, DEP goes on without)."""
    import time

    from ls_backend.runtime.embed import embed_gold_spans

    n = len(corpus.gold_tokens.task)
    if not n:
        return None
    if corpus.n_tasks > EMBED_AUTO_MAX_TASKS and not force:
        print(f"note: {corpus.n_tasks} tasks: not embedding the gold spans for the DEP "
              f"neighbour signal (automatic up to {EMBED_AUTO_MAX_TASKS}; --embed forces it, "
              f"~{corpus.n_tasks / 200 / 60:.0f} min on 2 CPU cores)", file=sys.stderr)
        return None
    print(f"note: embedding {n} gold spans with the packaged MiniLM backbone for the DEP "
          "neighbour signal (--no-embed skips it) ...", file=sys.stderr, flush=True)
    t0 = time.time()
    try:
        out = embed_gold_spans(corpus, labels, device=device)
    except (OSError, ValueError, RuntimeError, ImportError) as exc:
        log.warning("no span embeddings (%s: %s); DEP without the neighbour signal",
                    type(exc).__name__, exc)
        return None
    print(f"note: embedded {n} spans in {time.time() - t0:.1f} s", file=sys.stderr, flush=True)
    return out


def check_in_sample(ds: Any, model_dir: str, *, allow: bool) -> int:
    """How many of ``ds``'s tasks the model in ``model_dir`` trained on with these very labels
    (0 when it keeps no fingerprints); raises ``ValueError`` for any unless ``allow``."""
    from analysis import fingerprint

    fp = fingerprint.load(model_dir)
    if fp is None:
        return 0
    n = int(fingerprint.seen(fp, ds.corpus, labels=True).sum())
    if n and not allow:
        raise ValueError(
            f"--model {model_dir} trained on {n} of these {ds.corpus.n_tasks} tasks with these "
            "very labels: its DEP would be in-sample (it has learnt their errors). Use "
            "cross-fitted probabilities (`ner-quality train --folds 5 ...`, then --probs) or a "
            "model trained on other data; --allow-in-sample uses it anyway")
    if n:
        log.warning("--model %s trained on %d of these tasks: their DEP is in-sample", model_dir, n)
    return n


def predict_with_model(ds: Any, model_dir: str | None, *, device: str = "auto",
                       engine: EngineOptions | None = None) -> tuple[Any, Any, Any]:
    """Runtime probabilities of every task (+ gold span embeddings for DEP and the span map,
    + the loaded model); with ``engine`` on Ray, the model pass runs on Ray Data."""
    import numpy as np

    from analysis.probs import ModelOutput
    from analysis.tags import TagSet
    from ls_backend.runtime import NerModel
    from ls_backend.runtime.embed import gold_spans_per_task

    model = NerModel.load(model_dir, labels=list(ds.labels), device=device)
    per_task = gold_spans_per_task(ds.corpus)
    items = [t.tokens for t in ds.tasks]
    if engine is not None and engine.is_ray:
        from ls_backend.engine.predict import predict_items

        from ls_backend.runtime import default_model_path

        preds = predict_items(engine, str(model_dir or default_model_path()), items, spans=per_task, progress=True,
                              load_options={"labels": list(ds.labels), "device": device})
    else:
        preds = model.predict(items, spans=per_task, progress=True)
    embs = [p.extra_embeddings for p in preds if p.extra_embeddings is not None
            and len(p.extra_embeddings)]
    vecs = np.concatenate(embs) if embs else None
    out = ModelOutput.from_arrays([p.probs for p in preds], TagSet(model.tags, model.scheme))
    return out, vecs, model


def run_analysis(args: argparse.Namespace) -> tuple[Any, Inputs]:
    from analysis.dep import compute_dep
    from analysis.review import analyze
    from analysis.review.analyze import dataset_agreement

    inp = load_inputs(args)
    corpus = inp.dataset.corpus
    dep = None
    if inp.output is not None and corpus.annotated.any():
        dep = compute_dep(corpus, inp.output, span_embeddings=inp.span_vectors)
    res = analyze(corpus, dep=dep, dep_source=inp.dep_source, zero_diagonal=args.zero_diagonal,
                  dup_threshold=args.dup_threshold, seed=args.seed,
                  agreement=dataset_agreement(inp.dataset))
    return res, inp


def summary_text(res: Any) -> str:
    m = res.metrics.to_dict()
    lines = [f"{m['n_tasks']} tasks, {m['n_annotated']} annotated, {m['n_gold_spans']} gold spans"]
    if "prf" in m:
        lines.append(f"micro F1 vs predictions: {m['prf']['micro avg']['f1-score']:.3f}")
    if "dep" in m:
        d = m["dep"]
        th = "n/a" if d["threshold"] is None else f"{d['threshold']:.3f}"
        mean = "n/a" if d["mean"] is None else f"{d['mean']:.3f}"
        lines.append(f"DEP: mean {mean}, threshold {th}, above: {d['n_above_threshold']}")
    ag = getattr(res, "agreement", None)
    if ag is not None and ag.n_tasks:
        f1 = ag.overall.f1_exact
        lines.append(f"annotator agreement: {ag.n_tasks} task(s) with several annotators, span F1 "
                     f"{'n/a' if f1 != f1 else f'{f1:.3f}'} (exact), token alpha "
                     f"{'n/a' if ag.alpha != ag.alpha else f'{ag.alpha:.3f}'}")
    lines.append(f"{len(res.alerts)} alert(s), {m.get('n_flagged_tasks', 0)} flagged task(s):")
    for a in res.alerts:
        ids = ", ".join(str(t) for t in a.task_ids[:10]) + (" ..." if len(a.task_ids) > 10 else "")
        lines.append(f"  - {a.name} ({len(a.task_ids)}): {a.rule}\n      tasks: {ids}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    res, inp = run_analysis(args)
    if args.json:
        res.write_json(sys.stdout)  # the task records a chunk at a time
        sys.stdout.write("\n")
    else:
        print(summary_text(res))
    legacy_note(inp, args.probs)
    return 0
