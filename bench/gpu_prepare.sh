#!/usr/bin/env bash
# Prepare what bench/gpu_run.sh needs on a GPU machine that reaches no package registry.
# Run HERE (a machine with pip access and ../shared/data), in the repo root:
#     bash bench/gpu_prepare.sh
# It writes .gpu/ (git-ignored, ~2 MB):
#   .gpu/whl/      wheels for Python 3.12 of the backend's web stack (flask and its helpers,
#                  gunicorn); the GPU image already has torch, transformers, numpy, pandas,
#                  requests, tqdm, scikit-learn (see /work/.library/device/KINDS.md)
#   .gpu/minilm/   the packaged MiniLM's config and tokenizer files (no weights: the bench uses
#                  random weights, and the 90 MB safetensors would not fit the 64 MiB carry)
#   .gpu/data/     CoNLL-03 test (from ../shared/data, which does not travel)
# Then carry .gpu with the run:  run(command="bash bench/gpu_run.sh", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=python3
DATA=${NERQ_SHARED_DATA:-../shared/data}
mkdir -p .gpu/whl .gpu/minilm .gpu/data
rm -f .gpu/whl/*.whl
WHEELS="flask==3.1.3 blinker==1.9.0 itsdangerous==2.2.0 werkzeug==3.1.9 gunicorn==27.0.1"
echo "gpu_prepare: downloading wheels for Python 3.12: $WHEELS"
# shellcheck disable=SC2086
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d .gpu/whl $WHEELS
src=$("$PY" -c "from ls_backend.runtime.env import default_model_path as d; print(d())")
for f in config.json tokenizer.json tokenizer_config.json special_tokens_map.json vocab.txt; do
    cp "$src/$f" .gpu/minilm/
done
if [ ! -f "$DATA/conll2003/test.conll" ]; then
    echo "gpu_prepare: $DATA/conll2003/test.conll not found (set NERQ_SHARED_DATA)" >&2
    exit 2
fi
cp "$DATA/conll2003/test.conll" .gpu/data/test.conll
du -sh .gpu
echo "gpu_prepare: done; carry .gpu with bench/gpu_run.sh"
