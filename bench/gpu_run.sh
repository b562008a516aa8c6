#!/usr/bin/env bash
# Issue 12's GPU run, one script, <= 8 minutes, nothing from the network.
#
# On the GPU machine (repo root, .gpu carried — see bench/gpu_prepare.sh):
#     bash bench/gpu_run.sh            # writes $OUT/gpu_run.json (OUT defaults to /tmp/nerq-gpu)
# Steps: install the carried wheels into a private folder (pip --no-index), check every import
# and input and stop at the first missing one with one line saying what and how to fix it;
# then bench/bench_gpu.py (ours vs HF pipeline per task / batched vs forward-only, MiniLM and
# BERT-base size, random weights, CoNLL-03 test; one-task /predict p50/p99 through the real
# backend; peak GPU memory) and the host-overhead bench (--null-model) on that machine's CPU.
# Without a GPU it says so, skips the GPU part and runs the same steps on the CPU, small.
set -uo pipefail
cd "$(dirname "$0")/.."
REPO=$(pwd)
PY=${PYTHON:-python3}
OUT=${OUT:-/tmp/nerq-gpu}
BUDGET=${NERQ_GPU_BUDGET_S:-450}
CPU_LIMIT=${NERQ_GPU_CPU_LIMIT:-200}      # sentences of the CPU stand-in run (no GPU)
NULL_MODEL=${NERQ_GPU_NULL_MODEL:-1}      # 0: skip the host-overhead bench
DATA=${NERQ_GPU_DATA:-}
mkdir -p "$OUT"
t0=$(date +%s)
say() { echo "gpu_run: $*" >&2; }
fail() { echo "gpu_run: FAILED: $*" >&2; exit 2; }

command -v "$PY" >/dev/null || fail "no $PY on PATH (set PYTHON=/path/to/python)"
if compgen -G ".gpu/whl/*.whl" >/dev/null; then
    site=/tmp/nerq-gpu-site
    "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target "$site" .gpu/whl/*.whl || fail "installing the carried wheels in .gpu/whl"
    export PYTHONPATH="$site:$REPO${PYTHONPATH:+:$PYTHONPATH}"
else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
fi
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1
for mod in torch transformers tokenizers numpy pandas requests tqdm flask gunicorn; do
    "$PY" -c "import $mod" 2>/dev/null || fail "python package '$mod' is missing: run \
bash bench/gpu_prepare.sh on a machine with pip access and carry .gpu"
done
"$PY" -c "import ls_backend.app, analysis.formats" 2>"$OUT/import_error.txt" || \
    fail "importing ls_backend: $(tail -1 "$OUT/import_error.txt")"
if [ -z "$DATA" ]; then
    DATA=.gpu/data/test.conll
    [ -f "$DATA" ] || DATA="${NERQ_SHARED_DATA:-../shared/data}/conll2003/test.conll"
fi
[ -f "$DATA" ] || fail "no CoNLL-03 test file ($DATA): run bench/gpu_prepare.sh and carry .gpu"
tok=.gpu/minilm
[ -f $tok/config.json ] || tok=$("$PY" -c "from ls_backend.runtime.env import default_model_path \
as d; print(d())" 2>/dev/null) || fail "no tokenizer folder: run bench/gpu_prepare.sh and carry .gpu"

if "$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    say "GPU: $("$PY" -c 'import torch; print(torch.cuda.get_device_name(0))')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
        --format=csv,noheader >&2
    "$PY" bench/bench_gpu.py --tokenizer "$tok" --data "$DATA" --budget-s "$BUDGET" --out "$OUT/gpu_run.json" \
        >/dev/null || fail "bench_gpu.py (see the lines above)"
else
    say "no CUDA device: skipping the GPU part; the same steps run on the CPU, small (not GPU numbers)"
    "$PY" bench/bench_gpu.py --device cpu --tokenizer "$tok" --data "$DATA" \
        --limit "$CPU_LIMIT" --predict-calls 20 \
        --models minilm --modes pipeline_batched,ours,forward_only --budget-s "$BUDGET" \
        --out "$OUT/gpu_run.json" >/dev/null || fail "bench_gpu.py (see the lines above)"
fi
left=$(( BUDGET + 30 - ($(date +%s) - t0) ))
if [ "$NULL_MODEL" = 0 ]; then
    say "host-overhead bench skipped (NERQ_GPU_NULL_MODEL=0)"
elif [ "$left" -gt 60 ]; then
    say "host overhead on this machine's CPU (--null-model, 1 thread)"
    timeout "$left" "$PY" bench/bench_inference.py --null-model --limit 0 --repeat 3 \
        --data "$DATA" \
        --out "$OUT/null_model.json" >/dev/null || say "the --null-model bench did not finish"
else
    say "host-overhead bench skipped: over the time budget"
fi
"$PY" - "$OUT" <<'PY'
import json, sys, pathlib
out = pathlib.Path(sys.argv[1])
r = json.loads((out / "gpu_run.json").read_text())
nm = out / "null_model.json"
if nm.is_file():
    r["null_model_host"] = json.loads(nm.read_text())
    (out / "gpu_run.json").write_text(json.dumps(r, indent=1) + "\n")
print(f"device {r['device']} ({r['gpu']}), {r['seconds']} s; skipped: {r['skipped'] or 'nothing'}")
for size, res in r["models"].items():
    modes = res.get("modes", {})
    print(size, {m: v.get("sentences_per_s", v.get("error")) for m, v in modes.items()},
          res.get("ratios", res.get("error")))
print("predict one task:", r.get("predict_single_task"))
print("targets:", json.dumps(r["targets"]))
PY
say "done in $(( $(date +%s) - t0 )) s; JSON: $OUT/gpu_run.json"
