"""Inference speed: stock HF pipeline (per task / batched) vs ner-quality's runtime, same model.

Modes, each run in its own subprocess (so peak RSS is per mode) on the same texts, the same
model weights, the same device and thread count:

``pipeline_per_task``
    ``transformers.pipeline("token-classification", aggregation_strategy="simple")`` called once
    per text: what a stock Label Studio ML backend example does per task.
``pipeline_batched``
    the same pipeline given the whole list with ``batch_size``.
``ours``
    ``NerModel.predict(texts)``: text in (``analysis.spans.tokenize``), spans with character
    offsets, scores and probabilities out; length-sorted token-budget batches.
``forward_only``
    only the model forward over exactly the batches ``ours`` builds (tensors prepared on the
    device before the clock starts, logits copied back): the ceiling for ``ours``;
    ``ours / forward_only`` is the share of time spent in the model.
``ours_compiled``, ``ours_eager_attention`` (only when named in ``--modes``)
    ``ours`` with ``TORCH_COMPILE=1`` (``warmup_s`` includes the compilation), or with eager
    attention instead of SDPA.

Each mode is warmed first (``warmup_s``) with one full pass over the texts (the first use of a
batch shape costs extra, on CPU too; kernel autotuning and compilation are not timed), except
``pipeline_per_task`` (64 texts: a full pass would double the slowest mode).

Texts: CoNLL-03 test sentences (tokens joined by one space).  The model: ``--model`` (any
token-classification dir) or, by default, the packaged MiniLM backbone with a fresh seeded head
(the comparison is about speed; the labels do not matter).  Prints JSON (and ``--out FILE``).

``--null-model``: the host overhead, no GPU needed.  The complete predict path (text in →
Label Studio regions out) with the model forward replaced by a stand-in that returns logits and
a last hidden state of the right shapes at ~zero cost (slices of pre-made random tensors whose
argmax gives entities at about CoNLL-03's rate).  Per stage µs per sentence
(``ls_backend.runtime.infer.STAGES`` + ``regions``) for the current path and the per-item path it
replaced (``tests/reference_infer.py``), and the ratio **host path / fast-tokenizer call alone**
(``tokenizer(words, is_split_into_words=True, add_special_tokens=False)``, the call the host
path makes) on the same sentences, all in one run; best of ``--repeat`` runs each, one thread
(``--threads``) for torch and for the Rust tokenizer.

``--quality``: additionally fine-tune the packaged (uncased) backbone on the first
``--train-limit`` CoNLL-03 train sentences for ``--epochs`` and report test span P/R/F1
(``analysis.metrics.span_prf``, = seqeval strict IOB2).

    .venv/bin/python bench/bench_inference.py --limit 1000 --out /tmp/bench_inference.json
    .venv/bin/python bench/bench_inference.py --quality --train-limit 2000 --epochs 1 --limit 0
    .venv/bin/python bench/bench_inference.py --null-model --limit 0 \
        --out bench/results/inference_null_model.json
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DATA = Path(os.environ.get("NERQ_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

MODES = ("pipeline_per_task", "pipeline_batched", "ours", "forward_only")
EXTRA_MODES = ("ours_compiled", "ours_eager_attention")


def load_texts(path: Path, limit: int) -> list[str]:
    from analysis.formats import load

    ds = load(path, format="conll")
    tasks = ds.tasks[:limit] if limit else ds.tasks
    return [t.text for t in tasks]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


def worker(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    from ls_backend.runtime import NerModel
    from ls_backend.runtime.forward import autocast_context

    texts = load_texts(Path(args.data), args.limit)
    mode = args.worker
    model = NerModel.load(args.model_dir, device=args.device,
                          attention="eager" if mode == "ours_eager_attention" else "auto",
                          compile=mode == "ours_compiled")
    dev = model.device
    out: dict[str, Any] = {"mode": mode, "n": len(texts),
                           "attention": model.hf_model.config._attn_implementation}
    if dev.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    full_warm = mode != "pipeline_per_task"  # new shapes cost extra on first use (CPU too)
    warm = texts if full_warm else texts[:64]
    sync = torch.cuda.synchronize if dev.startswith("cuda") else (lambda: None)
    t_warm = time.perf_counter()
    if mode.startswith("pipeline"):
        from transformers import pipeline

        pipe = pipeline("token-classification", model=model.hf_model, tokenizer=model.tokenizer,
                        aggregation_strategy="simple", device=torch.device(dev))
        pipe(warm, batch_size=args.batch_size)
        out["warmup_s"] = round(time.perf_counter() - t_warm, 2)
        t0 = time.perf_counter()
        if mode == "pipeline_per_task":
            res = [pipe(t) for t in texts]
        else:
            res = pipe(texts, batch_size=args.batch_size)
        dt = time.perf_counter() - t0
        out["spans"] = sum(len(r) for r in res)
    elif mode.startswith("ours"):
        model.predict(warm, batch_tokens=args.batch_tokens)
        sync()
        out["warmup_s"] = round(time.perf_counter() - t_warm, 2)
        t0 = time.perf_counter()
        preds = model.predict(texts, batch_tokens=args.batch_tokens)
        dt = time.perf_counter() - t0
        out["spans"] = sum(len(p.spans) for p in preds)
    else:
        from ls_backend.runtime.windows import (
            as_tokenized,
            build_batch,
            prepare_columns,
            window_batches,
        )

        cols = prepare_columns(model.tokenizer, as_tokenized(texts), window=model.window,
                               stride=model.stride)
        n_sp = len(model.prefix_ids) + len(model.suffix_ids)
        batches = []
        for wins in window_batches(cols, batch_tokens=args.batch_tokens, n_special=n_sp):
            ids, mask = build_batch(cols, wins, prefix=model.prefix_ids,
                                    suffix=model.suffix_ids, pad_id=model.pad_id)
            batches.append((torch.from_numpy(ids).to(dev), torch.from_numpy(mask).to(dev)))
        with torch.inference_mode(), autocast_context(dev):
            for ids_t, mask_t in batches if full_warm else batches[:1]:
                model.hf_model(input_ids=ids_t, attention_mask=mask_t)
            sync()
            out["warmup_s"] = round(time.perf_counter() - t_warm, 2)
            t0 = time.perf_counter()
            for ids_t, mask_t in batches:
                model.hf_model(input_ids=ids_t, attention_mask=mask_t).logits.float().cpu()
            sync()
            dt = time.perf_counter() - t0
        out["batches"] = len(batches)
        out["padded_tokens"] = int(sum(b[0].numel() for b in batches))
    out["seconds"] = round(dt, 3)
    out["sentences_per_s"] = round(len(texts) / dt, 1)
    out["peak_rss_mb"] = round(peak_rss_mb(), 1)
    if dev.startswith("cuda"):
        out["peak_gpu_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return out


class NullForward:
    """A stand-in for the HF model: logits (and a last hidden state) of the right shapes,
    views into tensors made once, so the forward costs ~nothing."""

    def __init__(self, real: Any, *, batch_tokens: int, seed: int = 0) -> None:
        import torch

        self.config = real.config
        n_tags = int(real.config.num_labels)
        g = torch.Generator().manual_seed(seed)
        n = batch_tokens * 2
        logits = torch.randn(n, n_tags, generator=g)
        # about 1 word in 7 gets an entity tag as argmax (CoNLL-03: 1.7 entities / 12.7 words)
        ent = torch.rand(n, generator=g) < 0.15
        tag = torch.randint(1, max(n_tags, 2), (n,), generator=g)
        logits[torch.arange(n), torch.where(ent, tag, torch.zeros_like(tag))] += 4.0
        self.logits = logits
        self.hidden = torch.randn(n, int(real.config.hidden_size), generator=g)
        self.calls = 0

    def eval(self) -> NullForward:
        return self

    def __call__(self, *, input_ids: Any, attention_mask: Any,
                 output_hidden_states: bool = False) -> Any:
        from types import SimpleNamespace

        r, w = input_ids.shape
        self.calls += 1
        logits = self.logits[: r * w].view(r, w, -1)
        hs = (self.hidden[: r * w].view(r, w, -1),) if output_hidden_states else None
        return SimpleNamespace(logits=logits, hidden_states=hs)


def null_model(args: argparse.Namespace) -> dict[str, Any]:
    """Host overhead by stage, current vs per-item path, against the bare tokenizer call."""
    os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # before tokenizers starts its pool
    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(REPO / "tests"))
    from reference_infer import reference_predict

    from analysis.formats import regions
    from analysis.spans import tokenize
    from ls_backend.runtime import NerModel
    from ls_backend.runtime.infer import STAGES

    texts = load_texts(Path(args.data), args.limit)
    model = NerModel.load(None, labels=["PER", "LOC", "ORG", "MISC"], device="cpu", seed=0)
    model.hf_model = NullForward(model.hf_model, batch_tokens=args.batch_tokens)
    tok = model.tokenizer
    words = [list(tokenize(t).tokens) for t in texts]
    n = len(texts)

    def bare_tokenizer() -> float:
        t0 = time.perf_counter()
        tok(words, is_split_into_words=True, add_special_tokens=False,
            return_attention_mask=False, return_token_type_ids=False, truncation=False)
        return time.perf_counter() - t0

    def rust_backend() -> float:
        t0 = time.perf_counter()
        tok._tokenizer.encode_batch(words, add_special_tokens=False, is_pretokenized=True)
        return time.perf_counter() - t0

    def host(fn: Any, emb: bool) -> tuple[float, dict[str, float], Any]:
        timings: dict[str, float] = {}
        gc.collect()  # no path pays for the garbage of the one before
        t0 = time.perf_counter()
        preds = fn(model, texts, batch_tokens=args.batch_tokens, return_embeddings=emb,
                   timings=timings)
        t1 = time.perf_counter()
        res = [regions(t, p.spans, from_name="label", to_name="text", scores=p.span_scores)
               for t, p in zip(texts, preds)]
        t2 = time.perf_counter()
        timings["regions"] = t2 - t1
        return t2 - t0, timings, (preds, res)

    paths = {"current": lambda m, items, **kw: m.predict(items, **kw),
             "per_item_before": reference_predict}
    best: dict[str, Any] = {}
    kept: dict[str, Any] = {}
    for _ in range(args.repeat):  # interleaved, best of N each
        for name, fn in (("bare_tokenizer", bare_tokenizer), ("rust_backend", rust_backend)):
            gc.collect()
            best[name] = min(best.get(name, float("inf")), fn())
        for emb in (False, True):
            for name, fn in paths.items():
                key = f"{name}{'_embeddings' if emb else ''}"
                total, timings, res = host(fn, emb)
                if not emb and key not in kept:
                    kept[key] = res[0]
                del res
                if key not in best or total < best[key][0]:
                    best[key] = (total, timings)
    # the two paths agree (the tests pin this on the real model)
    cur, old = kept["current"], kept["per_item_before"]
    same = all(a.spans == b.spans and np.array_equal(a.probs, b.probs) for a, b in zip(cur, old))
    us = 1e6 / n
    out: dict[str, Any] = {
        "sentences": n, "words": sum(map(len, words)), "threads": args.threads,
        "batch_tokens": args.batch_tokens, "spans_per_sentence": round(
            sum(len(p.spans) for p in cur) / n, 2),
        "same_spans_and_probs_as_before": bool(same),
        "bare_tokenizer_us": round(best["bare_tokenizer"] * us, 2),
        "rust_backend_encode_us": round(best["rust_backend"] * us, 2),
        "paths": {},
    }
    for key in ("current", "per_item_before", "current_embeddings",
                "per_item_before_embeddings"):
        total, timings = best[key]
        out["paths"][key] = {
            "total_us": round(total * us, 2),
            "ratio_to_bare_tokenizer": round(total / best["bare_tokenizer"], 3),
            "stages_us": {s: round(timings.get(s, 0.0) * us, 2) for s in (*STAGES, "regions")},
        }
    out["speedup_host_path"] = round(out["paths"]["per_item_before"]["total_us"]
                                     / out["paths"]["current"]["total_us"], 2)
    return out


def quality(args: argparse.Namespace) -> dict[str, Any]:
    """Fine-tune the packaged backbone on a CoNLL-03 train subset; test span P/R/F1."""
    import dataclasses

    import torch

    torch.set_num_threads(args.threads)
    from analysis.formats import load
    from analysis.metrics import span_prf
    from analysis.spans import SpanTable
    from ls_backend.runtime import NerModel, train

    tr = load(DATA / "conll2003" / "train.conll", format="conll")
    tr = dataclasses.replace(tr, tasks=tr.tasks[: args.train_limit])
    te = load(DATA / "conll2003" / "test.conll", format="conll")
    with tempfile.TemporaryDirectory(prefix="nerq-bench-q-") as tmp:
        t0 = time.perf_counter()
        res = train(tr, tmp, model=args.model, epochs=args.epochs, seed=0, lr=args.lr,
                    batch_size=16, device=args.device, progress=args.progress,
                    record_dynamics=False, resume=False)
        train_s = time.perf_counter() - t0
        m = NerModel.load(res.model_dir, device=args.device)
        t0 = time.perf_counter()
        preds = m.predict([t.tokens for t in te.tasks], batch_tokens=args.batch_tokens)
        pred_s = time.perf_counter() - t0
    rep = span_prf(te.gold_table(), SpanTable.from_spans([p.spans for p in preds], m.labels))
    d = rep.to_dict()
    return {
        "model": args.model or "packaged MiniLM-L6-H384 (uncased)",
        "train_sentences": len(tr.tasks), "epochs": args.epochs, "lr": args.lr,
        "train_seconds": round(train_s, 1), "train_steps": res.metrics["steps"],
        "test_sentences": len(te.tasks), "predict_seconds": round(pred_s, 1),
        "micro": d["micro avg"], "per_label": {k: round(v["f1-score"], 4) for k, v in d.items()
                                               if not k.endswith("avg")},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(DATA / "conll2003" / "test.conll"))
    ap.add_argument("--limit", type=int, default=1000, help="first N sentences (0 = all)")
    ap.add_argument("--model", default=os.environ.get("MODEL_NAME"),
                    help="token-classification model dir (default: packaged MiniLM, fresh head)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=max(1, min(os.cpu_count() or 1, 16)))
    ap.add_argument("--batch-size", type=int, default=32, help="pipeline_batched batch size")
    ap.add_argument("--batch-tokens", type=int, default=4096, help="ours: tokens per batch")
    ap.add_argument("--modes", default=",".join(MODES),
                    help=f"comma-separated, of {', '.join(MODES + EXTRA_MODES)}")
    ap.add_argument("--quality", action="store_true", help="also train + evaluate test F1")
    ap.add_argument("--null-model", action="store_true",
                    help="host overhead only: the forward replaced by a zero-cost stand-in")
    ap.add_argument("--repeat", type=int, default=5, help="--null-model: best of N runs")
    ap.add_argument("--train-limit", type=int, default=2000)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--mode-timeout", type=float, default=None,
                    help="seconds one mode may take (its subprocess is stopped after)")
    ap.add_argument("--out")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--model-dir", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return
    if args.null_model:
        if "--threads" not in sys.argv:
            args.threads = 1
        text = json.dumps(null_model(args), indent=1)
        print(text)
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        return

    import torch

    from ls_backend.runtime import NerModel, resolve_device

    device = resolve_device(args.device)
    report: dict[str, Any] = {
        "device": device, "threads": args.threads, "torch": torch.__version__,
        "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "data": args.data, "limit": args.limit,
    }
    with tempfile.TemporaryDirectory(prefix="nerq-bench-") as tmp:
        model_dir = args.model
        if not args.modes:
            pass
        elif model_dir is None or not (Path(model_dir) / "config.json").is_file() or \
                NerModel.load(model_dir, device="cpu").trained is False:
            labels = ["PER", "LOC", "ORG", "MISC"]
            m = NerModel.load(model_dir, labels=labels, device="cpu", seed=0)
            model_dir = m.save(Path(tmp) / "model")
            report["model"] = f"{args.model or 'packaged MiniLM'} + fresh head ({labels})"
        else:
            report["model"] = model_dir
        results = {}
        for mode in [m for m in args.modes.split(",") if m]:
            cmd = [sys.executable, __file__, "--worker", mode, "--model-dir", model_dir,
                   "--data", args.data, "--limit", str(args.limit), "--device", device,
                   "--threads", str(args.threads), "--batch-size", str(args.batch_size),
                   "--batch-tokens", str(args.batch_tokens)]
            try:
                proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                      timeout=args.mode_timeout)
            except subprocess.TimeoutExpired:
                results[mode] = {"error": f"timed out after {args.mode_timeout} s"}
                print(f"{mode}: timed out after {args.mode_timeout} s", file=sys.stderr)
                continue
            if proc.returncode != 0:
                results[mode] = {"error": proc.stderr.strip().splitlines()[-1:]}
                continue
            results[mode] = json.loads(proc.stdout.strip().splitlines()[-1])
            print(f"{mode}: {results[mode]}", file=sys.stderr)
    report["modes"] = results
    sps = {k: v.get("sentences_per_s") for k, v in results.items() if "sentences_per_s" in v}
    if "ours" in sps:
        report["ratios"] = {
            f"ours_vs_{k}": round(sps["ours"] / v, 2) for k, v in sps.items() if k != "ours"
        }
    if args.quality:
        report["quality"] = quality(args)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
