"""The Ray engine: cross-fit, prediction and bulk pre-annotation on a local Ray.

A local Ray (``ray.init(num_cpus=2)``, no dashboard) runs for this module; the engine's
:func:`ls_backend.engine.cluster.ray_session` reuses it.  The bulk-prediction test drives
``ner-quality predict --project --engine ray`` as a subprocess against a real Label Studio,
connected to that Ray by its address, makes one prediction actor die on its first batch,
interrupts the run half way and runs it again.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

ray = pytest.importorskip("ray")
torch = pytest.importorskip("torch")

from analysis.dataset import Dataset  # noqa: E402
from ls_backend.cli import main  # noqa: E402
from ls_backend.engine import EngineOptions  # noqa: E402
from ls_backend.runtime import NerModel, crossfit_outputs, train  # noqa: E402
from ls_backend.runtime.embed import gold_spans_per_task  # noqa: E402

pytestmark = [pytest.mark.model, pytest.mark.slow]

from test_train import FAST, LABELS  # noqa: E402
from test_train import RAW as TRAIN_RAW  # noqa: E402
from test_train import make_dataset as train_dataset  # noqa: E402

RAW = [*TRAIN_RAW, ("Macron flew to Madrid .", [(0, 1, "PER"), (3, 4, "LOC")])]
RAY = EngineOptions(engine="ray")


def make_dataset() -> Dataset:
    """test_train's sentences and one more, then one unannotated task."""
    return train_dataset(RAW, unannotated=1)


@pytest.fixture(scope="module")
def local_ray() -> Any:
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ray_model")
    train(make_dataset(), out, epochs=1, seed=0, record_dynamics=False, **FAST)
    return out


def test_crossfit_on_ray_equals_local_bit_for_bit(local_ray: Any, tmp_path: Path) -> None:
    ds = make_dataset()
    spans = gold_spans_per_task(ds.corpus)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a Ray fold task runs with --ray-cpus-per-worker (1) threads
    try:
        local = crossfit_outputs(ds, folds=2, seed=3, epochs=1, spans=spans, **FAST)
    finally:
        torch.set_num_threads(threads)
    on_ray = crossfit_outputs(ds, folds=2, seed=3, epochs=1, spans=spans, engine="ray",
                              ray_options=RAY, **FAST)
    assert on_ray.engine == "ray" and len(on_ray.probs) == len(ds.tasks)
    assert [f.tolist() for f in on_ray.folds] == [f.tolist() for f in local.folds]
    assert local.probs[-1] is None and on_ray.probs[-1] is None  # unannotated: no probabilities
    for i in range(len(RAW)):
        a, b = local.probs[i], on_ray.probs[i]
        assert a is not None and b is not None and a.shape == (len(ds.tasks[i].tokens), 5)
        assert np.array_equal(a, b), f"task {i}: Ray probabilities differ from local"
        ea, eb = local.embeddings[i], on_ray.embeddings[i]  # type: ignore[index]
        assert ea is not None and eb is not None and ea.shape == (len(RAW[i][1]), 384)
        assert np.array_equal(ea, eb)
    # bad arguments fail before any fold starts; a fold that fails on Ray (its backbone is
    # not there) is named, with its cause, as a one-line error
    with pytest.raises(ValueError, match=r"^epochs must be >= 1"):
        crossfit_outputs(ds, folds=2, seed=3, epochs=0, engine="ray", ray_options=RAY, **FAST)
    with pytest.raises(OSError, match=r"fold \d/2 failed on Ray: FileNotFoundError: .*no-such"):
        crossfit_outputs(ds, folds=2, seed=3, epochs=1, engine="ray", ray_options=RAY,
                         model=str(tmp_path / "no-such-backbone"), **FAST)


def test_predict_on_ray_matches_the_local_model(local_ray: Any, model_dir: Path) -> None:
    from ls_backend.engine.predict import predict_items

    ds = make_dataset()
    items = [t.tokens for t in ds.tasks] * 5  # 35 items, 3 actor batches of 16
    spans = gold_spans_per_task(ds.corpus) * 5
    opts = {"labels": list(LABELS), "device": "cpu"}
    local = NerModel.load(model_dir, **opts).predict(items, spans=spans)
    on_ray = predict_items(EngineOptions(engine="ray", workers=2), str(model_dir), items,
                           spans=spans, load_options=opts, batch_size=16)
    assert len(on_ray) == len(items)
    for i, (a, b) in enumerate(zip(local, on_ray)):
        assert a.spans == b.spans, f"item {i}"
        np.testing.assert_allclose(a.probs, b.probs, atol=1e-5)
        assert a.extra_embeddings is not None and b.extra_embeddings is not None
        np.testing.assert_allclose(a.extra_embeddings, b.extra_embeddings, atol=1e-4)


def _write_conll(path: Path) -> None:
    blocks = []
    for sent, gold in RAW:
        tags = ["O"] * len(sent.split())
        for a, b, lab in gold:
            tags[a] = f"B-{lab}"
            for k in range(a + 1, b):
                tags[k] = f"I-{lab}"
        blocks.append("\n".join(f"{w}\t{t}" for w, t in zip(sent.split(), tags)))
    path.write_text("\n\n".join(blocks) + "\n", encoding="utf-8")


def test_cli_engine_ray_train_predict_and_analyze(local_ray: Any, model_dir: Path,
                                                  tmp_path: Path,
                                                  capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "tiny.conll"
    _write_conll(data)
    common = ["--batch-size", "2", "--lr", "1e-3", "--max-length", "32", "--device", "cpu",
              "--no-progress", "--epochs", "1"]
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--folds", "2",
               "--engine", "ray", *common])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["engine"] == "ray" and summary["folds"] == 2
    from analysis.probs import load_output

    oof = load_output(tmp_path / "m" / "oof_probs.npz")
    assert oof.has.tolist() == [True] * len(RAW)

    outs = {}
    for engine in ("local", "ray"):
        out = tmp_path / f"preds_{engine}.json"
        rc = main(["predict", "--model", str(model_dir), "--data", str(data), "--out", str(out),
                   "--device", "cpu", "--engine", engine])
        assert rc == 0 and json.loads(capsys.readouterr().out)["engine"] == engine
        outs[engine] = [[(r["value"]["start"], r["value"]["end"], r["value"]["labels"])
                         for r in t["predictions"][0]["result"]]
                        for t in json.loads(out.read_text())]
    assert outs["ray"] == outs["local"]

    # analyze --model: the model pass on Ray gives the same DEP ranking as the local one
    deps = {}
    for engine in ("local", "ray"):
        rc = main(["analyze", "--data", str(data), "--model", str(model_dir), "--device", "cpu",
                   "--allow-in-sample", "--json", "--engine", engine])
        assert rc == 0
        res = json.loads(capsys.readouterr().out)
        deps[engine] = [round(t["dep"], 4) for t in res["tasks"]]
    assert deps["ray"] == deps["local"] and len(deps["ray"]) == len(RAW)


def test_engine_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "tiny.conll"
    _write_conll(data)
    rc = main(["predict", "--model", "x", "--data", str(data), "--out", str(tmp_path / "p"),
               "--engine", "ray", "--ray-address", "127.0.0.1:1"])
    err = capsys.readouterr().err
    assert rc == 2 and "no Ray cluster answers at 127.0.0.1:1" in err and "Traceback" not in err
    rc = main(["predict", "--model", "x", "--data", str(data), "--out", str(tmp_path / "p"),
               "--ray-address", "127.0.0.1:1"])
    assert rc == 2 and "--ray-address needs --engine ray" in capsys.readouterr().err
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--engine", "ray"])
    assert rc == 2 and "give --folds K" in capsys.readouterr().err
    rc = main(["predict", "--model", "x", "--data", str(data), "--out", str(tmp_path / "p"),
               "--engine", "ray", "--ray-workers", "0"])
    assert rc == 2 and "--ray-workers must be >= 1" in capsys.readouterr().err


# ------------------------------------------------------- bulk predict against Label Studio


def _version_counts(api: Any, pid: int, version: str) -> dict[int, int]:
    out: dict[int, int] = {}
    for page in api.iter_tasks(pid):
        for t in page:
            out[int(t["id"])] = sum(p.get("model_version") == version
                                    for p in t.get("predictions") or [])
    return out


def _bulk_cmd(pid: int, model: Path, address: str) -> list[str]:
    return [sys.executable, "-m", "ls_backend.cli", "predict", "--project", str(pid),
            "--model", str(model), "--device", "cpu", "--engine", "ray", "--ray-address",
            address, "--batch-size", "8", "--ray-window", "24", "--ray-workers", "1",
            "--write-rate", "15"]


def test_bulk_predict_on_ray_writes_once_and_resumes(local_ray: Any, model_dir: Path,
                                                    label_studio: Any, ls_project: Any,
                                                    ls_api: Any, tmp_path: Path) -> None:
    """A worker dies once (Ray retries its batch), the run is interrupted half way, a second
    run finishes: every task ends with exactly one prediction of the model's version."""
    sents = [s for s, _ in RAW]
    n = 96
    pid = ls_project(tasks=[{"text": f"{sents[i % len(sents)]} ({i})"} for i in range(n)])
    version = NerModel.load(model_dir, device="cpu").version
    address = ray.get_runtime_context().gcs_address
    marker = tmp_path / "actor_died"
    env = {**os.environ, "LABEL_STUDIO_URL": label_studio.url,
           "LABEL_STUDIO_API_KEY": label_studio.token, "NERQ_RAY_FAULT_ONCE": str(marker),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    log1 = (tmp_path / "run1.log").open("w")
    proc = subprocess.Popen(_bulk_cmd(pid, model_dir, address), env=env, stdout=log1,
                            stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        written = 0
        while time.monotonic() < deadline and proc.poll() is None:
            written = sum(_version_counts(ls_api, pid, version).values())
            if written >= 20:
                break
            time.sleep(0.5)
        assert proc.poll() is None, (tmp_path / "run1.log").read_text()[-3000:]
        assert written >= 20, f"only {written} predictions after 240 s"
        proc.send_signal(signal.SIGINT)  # Ctrl-C half way
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log1.close()
    assert marker.is_file(), "the fault switch did not kill an actor"
    first = _version_counts(ls_api, pid, version)
    assert max(first.values()) == 1, "a task was written twice"
    done_first = sum(first.values())
    assert 20 <= done_first < n, f"{done_first} of {n} written before the interruption"

    env.pop("NERQ_RAY_FAULT_ONCE")
    r = subprocess.run(_bulk_cmd(pid, model_dir, address), env=env, capture_output=True,
                       text=True, timeout=400)
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["engine"] == "ray" and summary["tasks"] == n and summary["failed"] == 0
    assert summary["skipped_existing"] == done_first
    assert summary["predicted"] == n - done_first
    assert summary["writes"]["duplicates_skipped"] == 0
    final = _version_counts(ls_api, pid, version)
    assert len(final) == n and set(final.values()) == {1}
    # each prediction has regions the label config accepts
    task = next(iter(ls_api.iter_tasks(pid)))[0]
    (pred,) = task["predictions"]
    assert pred["model_version"] == version
    for reg in pred["result"]:
        v = reg["value"]
        assert task["data"]["text"][v["start"]:v["end"]] == v["text"]


# ------------------------------------------------- the backend's cross-fit on Ray (TRAIN_ENGINE)


def test_backend_cross_fits_on_ray(local_ray: Any, tmp_path: Path) -> None:
    """``TRAIN_ENGINE=ray``: after "Start training" the backend trains its fold models as Ray
    tasks (this module's Ray, reused) and every annotated task gets its out-of-sample DEP."""
    from test_backend_app import SENTS, make_app, setup_project, train_project

    app = make_app(tmp_path, TRAIN_EPOCHS="2", TRAIN_BATCH_SIZE="2", TRAIN_LR="5e-4",
                   TRAIN_MAX_STEPS="8", TRAIN_EVERY_N_ANNOTATIONS="0", TRAIN_FOLDS="2",
                   TRAIN_ENGINE="ray")
    c = app.test_client()
    setup_project(c)
    tasks = train_project(app)
    assert app.extensions["nerq_backend"].drain(120)
    st = c.get("/status?project=3").json["projects"]["3"]
    cf = st["train"]["crossfit"]
    assert cf["status"] == "done" and cf["folds"] == 2 and cf["tasks"] == len(SENTS), cf
    metas = [c.get(f"/score?project=3&task={t['id']}").json["meta"]["ner_quality"]
             for t in tasks]
    assert {m["dep_source"] for m in metas} == {"cross-fit"}
    assert all(0.0 <= m["dep"] <= 1.0 for m in metas)


def test_backend_refuses_train_engine_ray_with_a_bad_value(tmp_path: Path) -> None:
    from ls_backend.settings import Settings

    with pytest.raises(ValueError, match="TRAIN_ENGINE: 'spark' is not one of local, ray"):
        Settings.from_env({"MODEL_DIR": str(tmp_path), "TRAIN_ENGINE": "spark"})
