"""bench/gpu_run.sh on a machine without a GPU: it says it skipped the GPU part and runs the same
steps on the CPU (models, HF pipeline, our path, forward-only, one-task /predict through a real
backend process on loopback), writing one JSON.  Sizes are tiny: this checks the script works,
the numbers belong to bench/."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.integration


def test_gpu_run_without_gpu_skips_the_gpu_part_and_runs_the_rest(tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is present: bench/gpu_run.sh would run the full GPU bench")
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(out),
           "NERQ_GPU_DATA": str(REPO / "tests" / "data" / "tiny.conll"),
           "NERQ_GPU_CPU_LIMIT": "0", "NERQ_GPU_NULL_MODEL": "0", "NERQ_GPU_BUDGET_S": "300"}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "no CUDA device: skipping the GPU part" in proc.stderr
    rep = json.loads((out / "gpu_run.json").read_text())
    assert rep["device"] == "cpu" and rep["gpu"] is None
    assert any("GPU part" in s for s in rep["skipped"])
    modes = rep["models"]["minilm"]["modes"]
    n = modes["ours"]["n"]
    assert n > 0
    for mode in ("pipeline_batched", "ours", "forward_only"):
        assert modes[mode]["n"] == n and modes[mode]["sentences_per_s"] > 0, modes[mode]
    lat = rep["predict_single_task"]
    assert "error" not in lat, lat
    assert lat["calls"] == 20 and 0 < lat["p50_ms"] <= lat["p99_ms"]
    assert rep["targets"]["predict_p50_ms"]["met"] is None  # not judged off a GPU


def test_gpu_run_fails_fast_naming_what_is_missing(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path / "out"),
           "NERQ_GPU_DATA": str(tmp_path / "nope.conll")}
    proc = subprocess.run(["bash", str(REPO / "bench" / "gpu_run.sh")], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 2
    assert f"no CoNLL-03 test file ({tmp_path / 'nope.conll'})" in proc.stderr
