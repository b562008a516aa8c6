"""The GPU run of issue 12 in one JSON: ours vs the HF pipeline vs forward-only, two model sizes,
single-task ``/predict`` latency through the real backend, peak GPU memory.

Started by ``bench/gpu_run.sh`` (which installs the carried wheels first); runs on a CPU too
(``--device cpu``, used by ``gpu_run.sh`` when there is no GPU and by the smoke test of the
script), then with smaller defaults.

Models (random weights, seeded: the comparison is about speed, the labels do not matter), both
with the packaged MiniLM's uncased WordPiece tokenizer:

``minilm``     MiniLM-L6-H384 (the packaged backbone's config: 6 layers, 384 hidden, 12 heads)
``bert-base``  BERT-base size (12 layers, 768 hidden, 12 heads, 3072 intermediate)

For each: ``bench_inference.py``'s modes (``pipeline_per_task``, ``pipeline_batched`` with batch
64, ``ours``, ``forward_only``, optionally ``ours_compiled``), each in its own subprocess with
its own peak GPU memory.  Then ``ner-quality``'s backend (gunicorn, one worker, no Label
Studio) serving the MiniLM model: ``--predict-calls`` sequential one-task ``/predict`` requests
(CoNLL-03 test sentences, after 20 warm-up calls), p50/p90/p99 in ms, and the backend's GPU
memory (nvidia-smi).  ``--budget-s`` bounds the whole run: a step that would start after it is
skipped and says so.

    python3 bench/bench_gpu.py --out /tmp/gpu.json                     # on the GPU machine
    .venv/bin/python bench/bench_gpu.py --device cpu --limit 200 --predict-calls 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.common import stop_process  # noqa: E402
DATA = Path(os.environ.get("NERQ_SHARED_DATA", REPO.parent / "shared" / "data"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

LABELS = ["PER", "LOC", "ORG", "MISC"]
SIZES = {
    "minilm": {},  # the tokenizer folder's own config
    "bert-base": {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
                  "intermediate_size": 3072},
}
TARGETS = {"ours_vs_forward_only": 0.5, "ours_vs_pipeline_per_task": 100.0,
           "predict_p50_ms": 15.0}


def tokenizer_dir(arg: str | None) -> Path:
    """The folder with ``config.json`` and the tokenizer files (weights not needed)."""
    if arg:
        return Path(arg)
    carried = REPO / ".gpu" / "minilm"
    if (carried / "config.json").is_file():
        return carried
    from ls_backend.runtime.env import default_model_path

    return Path(default_model_path())


def make_model(size: str, tok_dir: Path, out: Path, seed: int = 0) -> Path:
    """A token-classification model of ``size`` with random (seeded) weights, saved to ``out``
    with the tokenizer of ``tok_dir``."""
    import torch
    from transformers import AutoConfig, AutoModelForTokenClassification, AutoTokenizer

    from analysis.tags import tag_names

    tags = tag_names(LABELS)
    cfg = AutoConfig.from_pretrained(str(tok_dir), local_files_only=True)
    for k, v in SIZES[size].items():
        setattr(cfg, k, v)
    cfg.num_labels = len(tags)
    cfg.id2label = dict(enumerate(tags))
    cfg.label2id = {t: i for i, t in enumerate(tags)}
    cfg.architectures = ["BertForTokenClassification"]
    torch.manual_seed(seed)
    model = AutoModelForTokenClassification.from_config(cfg)
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True).save_pretrained(out)
    n_params = sum(p.numel() for p in model.parameters())
    del model
    (out / "params.txt").write_text(str(n_params))
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def gpu_memory_of(pid: int) -> float | None:
    """MiB the process holds on the GPU (nvidia-smi), or None where it cannot be read."""
    smi = shutil.which("nvidia-smi")
    if not smi:
        return None
    try:
        out = subprocess.run([smi, "--query-compute-apps=pid,used_memory",
                              "--format=csv,noheader,nounits"], capture_output=True, text=True,
                             timeout=10, check=False).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in out.splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) == 2 and parts[0] == str(pid):
            try:
                return float(parts[1])
            except ValueError:
                return None
    return None


def predict_latency(model_dir: Path, texts: list[str], *, device: str, calls: int,
                    tmp: Path) -> dict[str, Any]:
    """Sequential one-task ``/predict`` calls against the real backend serving ``model_dir``."""
    import numpy as np
    import requests

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MODEL_DIR": str(tmp / "backend"), "MODEL_NAME": str(model_dir),
           "DEVICE": device, "LOG_LEVEL": "WARNING", "TRAIN_EVERY_N_ANNOTATIONS": "0",
           "TRAIN_FOLDS": "0", "PYTHONPATH": os.pathsep.join(
               p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p)}
    env.pop("LABEL_STUDIO_URL", None)
    log_path = tmp / "backend.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "4", "-k", "gthread",
             "--timeout", "300", "-b", f"127.0.0.1:{port}", "ls_backend.wsgi:app"],
            cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.perf_counter()
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the backend exited ({proc.returncode}): "
                                   f"{log_path.read_text()[-600:]}")
            try:
                if requests.get(base + "/health", timeout=1).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.perf_counter() - t0 > 120:
                raise RuntimeError("the backend did not answer /health within 120 s")
            time.sleep(0.2)
        start_s = time.perf_counter() - t0
        xml = (REPO / "label_config" / "conll2003.xml").read_text()
        session = requests.Session()

        def call(i: int) -> float:
            body = {"project": "1.1700000000", "label_config": xml,
                    "tasks": [{"id": i + 1, "data": {"text": texts[i % len(texts)]}}]}
            t = time.perf_counter()
            r = session.post(base + "/predict", json=body, timeout=120)
            dt = time.perf_counter() - t
            r.raise_for_status()
            res = r.json()["results"]
            if len(res) != 1 or "result" not in res[0]:
                raise RuntimeError(f"/predict answered {str(res)[:300]}")
            return dt

        t1 = time.perf_counter()
        call(0)  # loads the model
        first_s = time.perf_counter() - t1
        for i in range(1, 21):
            call(i)
        ms = np.array([call(21 + i) for i in range(calls)]) * 1000.0
        return {
            "calls": calls, "backend_start_s": round(start_s, 2),
            "first_call_s": round(first_s, 2),
            "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p90_ms": round(float(np.percentile(ms, 90)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "mean_ms": round(float(ms.mean()), 2),
            "backend_gpu_mib": gpu_memory_of(proc.pid),
        }
    finally:
        stop_process(proc)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--data", default=None, help="CoNLL file (default: .gpu/data/test.conll, "
                    "else ../shared/data/conll2003/test.conll)")
    ap.add_argument("--limit", type=int, default=None,
                    help="first N sentences (0 = all; default all on CUDA, 300 on CPU)")
    ap.add_argument("--models", default="minilm,bert-base")
    ap.add_argument("--modes", default="pipeline_per_task,pipeline_batched,ours,forward_only,"
                    "ours_compiled")
    ap.add_argument("--batch-tokens", type=int, default=None,
                    help="ours / forward_only tokens per batch (default 16384 on CUDA, 4096)")
    ap.add_argument("--predict-calls", type=int, default=None,
                    help="timed /predict calls (default 300 on CUDA, 30 on CPU; 0 = skip)")
    ap.add_argument("--tokenizer", default=None, help="folder with config.json + tokenizer "
                    "(default: .gpu/minilm, else the packaged MiniLM)")
    ap.add_argument("--budget-s", type=float, default=450.0,
                    help="no step starts after this many seconds")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    t_start = time.perf_counter()

    import torch

    from ls_backend.runtime import resolve_device

    device = resolve_device(args.device)
    cuda = device.startswith("cuda")
    limit = args.limit if args.limit is not None else (0 if cuda else 300)
    calls = args.predict_calls if args.predict_calls is not None else (300 if cuda else 30)
    batch_tokens = args.batch_tokens or (16384 if cuda else 4096)
    data = Path(args.data) if args.data else REPO / ".gpu" / "data" / "test.conll"
    if not data.is_file():
        data = DATA / "conll2003" / "test.conll"
    if not data.is_file():
        print(f"bench_gpu: no CoNLL-03 test file (looked for .gpu/data/test.conll and {data}); "
              "run bench/gpu_prepare.sh or pass --data", file=sys.stderr)
        return 2
    tok = tokenizer_dir(args.tokenizer)
    if not (tok / "config.json").is_file():
        print(f"bench_gpu: {tok} has no config.json (run bench/gpu_prepare.sh or pass "
              "--tokenizer)", file=sys.stderr)
        return 2
    import transformers

    report: dict[str, Any] = {
        "bench": "gpu_run", "device": device, "limit": limit, "batch_tokens": batch_tokens,
        "torch": torch.__version__, "transformers": transformers.__version__,
        "python": platform.python_version(), "cpu_count": os.cpu_count(), "data": str(data),
        "gpu": torch.cuda.get_device_name(0) if cuda else None, "models": {}, "skipped": [],
    }
    if not cuda:
        report["skipped"].append("GPU part: no CUDA device; the same steps ran on the CPU with "
                                 "smaller defaults, so these numbers are not GPU numbers")
    threads = max(1, min(os.cpu_count() or 1, 16))

    def left() -> float:
        return args.budget_s - (time.perf_counter() - t_start)

    with tempfile.TemporaryDirectory(prefix="nerq-gpu-bench-") as tmp_s:
        tmp = Path(tmp_s)
        dirs: dict[str, Path] = {}
        for size in [m for m in args.models.split(",") if m]:
            if size not in SIZES:
                print(f"bench_gpu: unknown model size {size!r} (one of {', '.join(SIZES)})",
                      file=sys.stderr)
                return 2
            if left() < 30:
                report["skipped"].append(f"{size}: over the time budget")
                continue
            dirs[size] = make_model(size, tok, tmp / size)
            print(f"[{time.perf_counter() - t_start:5.0f} s] {size}: "
                  f"{int((dirs[size] / 'params.txt').read_text()):,} parameters", file=sys.stderr)
            out_json = tmp / f"{size}.json"
            cmd = [sys.executable, str(REPO / "bench" / "bench_inference.py"),
                   "--model", str(dirs[size]), "--device", device, "--data", str(data),
                   "--limit", str(limit), "--threads", str(threads), "--batch-size", "64",
                   "--batch-tokens", str(batch_tokens), "--modes", args.modes,
                   "--mode-timeout", str(max(30, int(left() / 4))), "--out", str(out_json)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False,
                                  timeout=max(60, left()))
            sys.stderr.write(proc.stderr)
            if proc.returncode != 0 or not out_json.is_file():
                report["models"][size] = {"error": proc.stderr.strip().splitlines()[-3:]}
                continue
            res = json.loads(out_json.read_text())
            res["parameters"] = int((dirs[size] / "params.txt").read_text())
            report["models"][size] = res
        if calls and "minilm" in dirs:
            if left() < 60:
                report["skipped"].append("/predict latency: over the time budget")
            else:
                texts_p = [t for t in _texts(data, 2000) if t.strip()]
                try:
                    report["predict_single_task"] = predict_latency(
                        dirs["minilm"], texts_p, device=device, calls=calls, tmp=tmp)
                except Exception as exc:  # noqa: BLE001 - reported in the JSON, not lost
                    report["predict_single_task"] = {"error": str(exc)[:800]}
    report["targets"] = _targets(report, cuda)
    report["seconds"] = round(time.perf_counter() - t_start, 1)
    text = json.dumps(report, indent=1)
    print(text)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    return 0


def _texts(data: Path, n: int) -> list[str]:
    from analysis.formats import load

    return [t.text for t in load(data, format="conll").tasks[:n]]


def _targets(report: dict[str, Any], cuda: bool) -> dict[str, Any]:
    """Each target of the issue with the measured value (and whether it holds, on CUDA)."""
    out: dict[str, Any] = {}
    for size, res in report["models"].items():
        ratios = res.get("ratios", {})
        for key in ("ours_vs_forward_only", "ours_vs_pipeline_per_task"):
            if key in ratios:
                out[f"{size}.{key}"] = {"value": ratios[key], "target": TARGETS[key],
                                        "met": ratios[key] >= TARGETS[key] if cuda else None}
    p50 = report.get("predict_single_task", {}).get("p50_ms")
    if p50 is not None:
        out["predict_p50_ms"] = {"value": p50, "target": TARGETS["predict_p50_ms"],
                                 "met": p50 <= TARGETS["predict_p50_ms"] if cuda else None}
    return out


if __name__ == "__main__":
    raise SystemExit(main())
