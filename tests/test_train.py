"""Training (dynamics, determinism, resume), cross-fitting and the train/predict CLI.

Everything trains the packaged MiniLM backbone for a handful of steps on five hand-made
sentences (CPU, no downloads).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from analysis.dataset import Dataset, Task  # noqa: E402
from analysis.spans import Span, from_tokens, tokenize  # noqa: E402
from analysis.tags import tag_names  # noqa: E402
from ls_backend.cli import main  # noqa: E402
from ls_backend.runtime import NerModel, TrainResult, crossfit, train  # noqa: E402
from ls_backend.runtime.crossfit import fold_assignment  # noqa: E402

pytestmark = pytest.mark.model

LABELS = ("PER", "LOC")
TAGS = tag_names(LABELS)
RAW = [
    ("Obama met Biden in Paris .", [(0, 1, "PER"), (2, 3, "PER"), (4, 5, "LOC")]),
    ("Obama Biden spoke .", [(0, 1, "PER"), (1, 2, "PER")]),
    ("Merkel visited New York yesterday .", [(0, 1, "PER"), (2, 4, "LOC")]),
    ("Berlin and Rome are cities .", [(0, 1, "LOC"), (2, 3, "LOC")]),
    ("Nothing to see here .", []),
]
FAST = {"batch_size": 2, "lr": 1e-3, "max_length": 32, "progress": False, "device": "cpu"}


def make_dataset(raw=RAW, *, unannotated: int = 1) -> Dataset:
    tasks = []
    for i, (sent, gold) in enumerate(raw):
        tt = from_tokens(sent.split())
        spans = tuple(Span(int(tt.starts[a]), int(tt.ends[b - 1]), lab) for a, b, lab in gold)
        tasks.append(Task(i, None, tt.text, tt, spans))
    for k in range(unannotated):
        tt = tokenize(f"Unlabelled sentence {k} about Rome .")
        tasks.append(Task(len(tasks), None, tt.text, tt, None))
    return Dataset(tasks, LABELS)


def probe(model_dir: str) -> np.ndarray:
    m = NerModel.load(model_dir, device="cpu")
    return np.concatenate([p.probs for p in m.predict([t for t, _ in RAW])])


@pytest.fixture(scope="module")
def base(tmp_path_factory: pytest.TempPathFactory) -> TrainResult:
    """Two uninterrupted epochs, seed 0: the reference for determinism and resume."""
    return train(make_dataset(), tmp_path_factory.mktemp("base"), epochs=2, seed=0, **FAST)


def test_train_result_and_metadata(base: TrainResult) -> None:
    assert re.fullmatch(r"nerq-\d{8}T\d{6}Z-[0-9a-f]{8}", base.version)
    assert base.epochs == 2 and base.task_indices == [0, 1, 2, 3, 4]  # unannotated task 5 left out
    assert base.metrics["completed"] and len(base.metrics["train_loss"]) == 2
    assert base.metrics["steps"] == base.metrics["total_steps"] == 2 * 3  # 5 windows / 2 per step
    meta = json.loads((Path(base.model_dir) / "nerq.json").read_text())
    assert meta["labels"] == list(LABELS) and meta["tags"] == list(TAGS)
    assert meta["version"] == base.version and meta["trained"] is True
    assert meta["training"]["epochs"] == 2 and meta["training"]["seed"] == 0
    assert len(meta["dataset_fingerprint"]) == 64
    assert not (Path(base.model_dir) / "checkpoint").exists()
    m = NerModel.load(base.model_dir, device="cpu")
    assert m.trained and m.version == base.version and m.tags == TAGS


def test_dynamics_files(base: TrainResult) -> None:
    ds = make_dataset()
    assert [Path(p).name for p in base.dynamics] == ["epoch_1.npz", "epoch_2.npz"]
    for path in base.dynamics:
        with np.load(path) as z:
            assert sorted(z.files, key=lambda f: int(f[4:])) == [f"arr_{j}" for j in range(5)]
            for j, i in enumerate(base.task_indices):
                arr = z[f"arr_{j}"]
                assert arr.shape == (len(ds.tasks[i].tokens), len(TAGS))
                np.testing.assert_allclose(arr.astype(np.float32).sum(1), 1.0, atol=1e-2)
    index = json.loads((Path(base.model_dir) / "dynamics" / "index.json").read_text())
    assert index["files"] == ["epoch_1.npz", "epoch_2.npz"] and index["tags"] == list(TAGS)
    assert len(base.metrics["train_token_acc"]) == 2


def test_same_seed_same_model_other_seed_differs(tmp_path: Path) -> None:
    kw = {**FAST, "epochs": 1, "max_steps": 2, "record_dynamics": False}
    one = train(make_dataset(), tmp_path / "one", seed=0, **kw)
    again = train(make_dataset(), tmp_path / "again", seed=0, **kw)
    other = train(make_dataset(), tmp_path / "other", seed=1, **kw)
    np.testing.assert_array_equal(probe(again.model_dir), probe(one.model_dir))
    assert again.version.rsplit("-", 1)[1] == one.version.rsplit("-", 1)[1]
    assert not np.allclose(probe(other.model_dir), probe(one.model_dir))
    assert other.metrics["steps"] == 2


def test_resume_continues_after_interruption(base: TrainResult, tmp_path: Path) -> None:
    out = tmp_path / "resumed"
    calls: list[int] = []

    def stop_after_first(epoch: int, info: dict) -> bool:
        calls.append(epoch)
        return epoch < 1

    first = train(make_dataset(), out, epochs=2, seed=0, on_epoch_end=stop_after_first, **FAST)
    assert first.metrics["completed"] is False and first.model_dir == "" and first.epochs == 1
    assert (out / "checkpoint" / "state.pt").is_file() and not (out / "nerq.json").exists()
    second = train(make_dataset(), out, epochs=2, seed=0,
                   on_epoch_end=lambda e, i: calls.append(e), **FAST)
    assert calls == [1, 2]  # epoch 1 was not run again
    assert second.epochs == 2 and second.metrics["completed"]
    assert second.metrics["train_loss"] == base.metrics["train_loss"]
    np.testing.assert_array_equal(probe(second.model_dir), probe(base.model_dir))
    assert len(second.dynamics) == 2
    assert not (out / "checkpoint").exists()  # removed after success
    # a finished run with the same data and config is returned without training
    third = train(make_dataset(), out, epochs=2, seed=0,
                  on_epoch_end=lambda e, i: calls.append(e), **FAST)
    assert calls == [1, 2] and third.version == second.version
    assert third.dynamics == second.dynamics and third.task_indices == second.task_indices


def test_changed_config_does_not_resume(base: TrainResult, tmp_path: Path) -> None:
    out = tmp_path / "cfg"
    train(make_dataset(), out, epochs=1, seed=0, max_steps=1, record_dynamics=False, **FAST)
    calls: list[int] = []
    fast = {**FAST, "lr": 2e-3}
    res = train(make_dataset(), out, epochs=1, seed=0, max_steps=1, record_dynamics=False,
                on_epoch_end=lambda e, i: calls.append(e), **fast)
    assert calls == [1] and res.metrics["steps"] == 1


def test_long_tasks_train_in_windows(tmp_path: Path) -> None:
    raw = [(" ".join(["Obama met Biden in Paris ."] * 4), [(0, 1, "PER"), (9, 10, "LOC")]),
           *RAW[:2]]
    ds = make_dataset(raw, unannotated=0)
    res = train(ds, tmp_path / "long", epochs=1, seed=0, **{**FAST, "max_length": 8})
    assert res.metrics["n_windows"] > res.metrics["n_tasks"] == 3
    with np.load(res.dynamics[0]) as z:
        assert z["arr_0"].shape == (24, len(TAGS))


def test_tasks_subset_and_validation(tmp_path: Path) -> None:
    ds = make_dataset()
    res = train(ds, tmp_path / "sub", epochs=1, tasks=[3, 1], max_steps=1, **FAST)
    assert res.task_indices == [1, 3]
    with np.load(res.dynamics[0]) as z:
        assert len(z.files) == 2 and z["arr_1"].shape[0] == len(ds.tasks[3].tokens)
    with pytest.raises(ValueError, match="task 5 is not annotated"):
        train(ds, tmp_path / "x", tasks=[5], **FAST)
    with pytest.raises(ValueError, match="out of range"):
        train(ds, tmp_path / "x", tasks=[17], **FAST)
    with pytest.raises(ValueError, match="epochs must be >= 1"):
        train(ds, tmp_path / "x", epochs=0, **FAST)
    with pytest.raises(ValueError, match="no annotated tasks"):
        train(make_dataset([], unannotated=2), tmp_path / "x", **FAST)


@pytest.mark.parametrize(
    "spans,match",
    [
        ([Span(0, 5, "ORG")], r"task 0: gold span \[0, 5\) has label 'ORG'"),
        ([Span(0, 9, "PER"), Span(6, 9, "PER")], "task 0: .*overlaps"),
        ([Span(0, 99, "PER")], r"task 0: gold span \[0, 99\) is empty or outside"),
    ],
    ids=["unknown-label", "overlap", "past-end"],
)
def test_bad_gold_names_the_task(spans: list[Span], match: str, tmp_path: Path) -> None:
    tt = tokenize("Obama met Biden .")
    ds = Dataset([Task(0, None, tt.text, tt, tuple(spans))], LABELS)
    with pytest.raises(ValueError, match=match):
        train(ds, tmp_path / "bad", **FAST)


def test_crossfit_is_out_of_sample_for_every_annotated_task(tmp_path: Path) -> None:
    ds = make_dataset(unannotated=1)
    oof = crossfit(ds, folds=2, seed=0, epochs=1, out_dir=tmp_path / "cf", keep_models=True,
                   **FAST)
    assert len(oof) == len(ds.tasks) and oof[5] is None
    for i in range(5):
        assert oof[i].shape == (len(ds.tasks[i].tokens), len(TAGS))
        np.testing.assert_allclose(oof[i].sum(1), 1.0, atol=1e-5)
    held = fold_assignment(list(range(5)), 2, 0)
    assert sorted(np.concatenate(held).tolist()) == [0, 1, 2, 3, 4]
    for k, part in enumerate(held):
        meta = json.loads((tmp_path / "cf" / f"fold_{k}" / "nerq.json").read_text())
        assert set(meta["task_indices"]).isdisjoint(part.tolist())
        assert set(meta["task_indices"]) | set(part.tolist()) == {0, 1, 2, 3, 4}
        m = NerModel.load(tmp_path / "cf" / f"fold_{k}", device="cpu")
        preds = m.predict([ds.tasks[i].tokens for i in part.tolist()])
        for i, p in zip(part.tolist(), preds):
            np.testing.assert_allclose(oof[i], p.probs, atol=1e-6)
    with pytest.raises(ValueError, match="at least 6 annotated"):
        crossfit(ds, folds=6, **FAST)
    with pytest.raises(ValueError, match="folds must be >= 2"):
        crossfit(ds, folds=1, **FAST)


# ---------------------------------------------------------------------------------- CLI


def _write_conll(path: Path) -> None:
    lines = []
    for sent, gold in RAW:
        toks = sent.split()
        tags = ["O"] * len(toks)
        for a, b, lab in gold:
            tags[a] = f"B-{lab}"
            for k in range(a + 1, b):
                tags[k] = f"I-{lab}"
        lines += [f"{t}\t{g}" for t, g in zip(toks, tags)] + [""]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def test_cli_train_with_folds_then_predict(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "tiny.conll"
    _write_conll(data)
    mdir = tmp_path / "model"
    rc = main(["train", "--data", str(data), "--out", str(mdir), "--epochs", "1", "--folds", "2",
               "--batch-size", "2", "--lr", "1e-3", "--max-length", "32", "--device", "cpu",
               "--no-progress"])
    assert rc == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["epochs"] == 1 and summary["folds"] == 2
    ds_labels = (mdir / "labels.txt").read_text().split()
    tags = (mdir / "tags.txt").read_text().split()
    assert tags == list(tag_names(ds_labels)) and set(ds_labels) == set(LABELS)
    from analysis.probs import load_output

    oof = load_output(mdir / "oof_probs.npz")
    assert oof.has.tolist() == [True] * 5 and oof.tagset is not None
    assert list(oof.tagset.tags) == tags and oof.tagset.scheme == "iob2"
    for i, (sent, _) in enumerate(RAW):
        task = oof.task(i)
        assert task is not None and task.shape == (len(sent.split()), len(tags))
    assert (mdir / "dynamics" / "epoch_1.npz").is_file()
    assert not (mdir / "folds").exists()  # fold models are not kept

    # the out-of-sample file is the `dep --probs` format and says its own tag order
    rc = main(["dep", "--data", str(data), "--probs", str(mdir / "oof_probs.npz"), "--json"])
    assert rc == 0
    scored = json.loads(capsys.readouterr().out)
    assert [t["index"] for t in scored["tasks"]] == list(range(len(RAW)))
    assert all(0.0 <= t["dep"] <= 1.0 for t in scored["tasks"])

    out = tmp_path / "preds.json"
    rc = main(["predict", "--model", str(mdir), "--data", str(data), "--out", str(out),
               "--device", "cpu", "--probs", str(tmp_path / "pred_probs.npz")])
    assert rc == 0
    pred_probs = load_output(tmp_path / "pred_probs.npz")
    assert pred_probs.n_tasks == 5 and list(pred_probs.tagset.tags) == tags
    version = json.loads((mdir / "nerq.json").read_text())["version"]
    tasks = json.loads(out.read_text())
    assert len(tasks) == 5
    for task in tasks:
        (pred,) = task["predictions"]
        assert pred["model_version"] == version and 0.0 <= pred["score"] <= 1.0
        text = task["data"]["text"]
        for r in pred["result"]:
            assert r["from_name"] == "label" and r["to_name"] == "text" and r["type"] == "labels"
            v = r["value"]
            assert text[v["start"] : v["end"]] == v["text"] and v["labels"][0] in LABELS
            assert 0.0 <= r["score"] <= 1.0
        assert task["annotations"]  # the gold annotation is kept next to the prediction


def test_cli_probe(base: TrainResult, capsys: pytest.CaptureFixture) -> None:
    """``ner-quality probe``: the tags, probabilities and spans of the predict path, per word."""
    text = "Obama met Biden in Paris ."
    rc = main(["probe", text, "Rome .", "--model", base.model_dir, "--device", "cpu", "--json",
               "--top-k", "3"])
    assert rc == 0
    first, second = (json.loads(x) for x in capsys.readouterr().out.strip().splitlines())
    assert [w["word"] for w in second["words"]] == ["Rome", "."]
    (pred,) = NerModel.load(base.model_dir, device="cpu").predict([text])
    for i, w in enumerate(first["words"]):
        best = int(np.argmax(pred.probs[i]))
        assert w["tag"] == TAGS[best] and abs(w["p"] - float(pred.probs[i, best])) < 1e-4
        assert [t for t, _ in w["top"]][0] == w["tag"] and len(w["top"]) == 3
    assert [(s["start"], s["end"], s["label"]) for s in first["spans"]] == [
        (s.start, s.end, s.label) for s in pred.spans]
    # the table: one line per word, every word marked low below a threshold of 1.0
    rc = main(["probe", text, "--model", base.model_dir, "--device", "cpu", "--low", "1.0"])
    lines = capsys.readouterr().out.splitlines()
    assert rc == 0 and sum(line.startswith("? ") for line in lines) == len(text.split())
    rc = main(["probe", "  ", "--model", base.model_dir, "--device", "cpu"])
    assert rc == 2 and "the text is empty" in capsys.readouterr().err


def test_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "tiny.conll"
    _write_conll(data)
    rc = main(["train", "--data", str(data), "--out", str(tmp_path / "m"), "--folds", "1"])
    assert rc == 2 and "--folds must be >= 2" in capsys.readouterr().err
    rc = main(["predict", "--model", str(tmp_path / "missing"), "--data", str(data),
               "--out", str(tmp_path / "p.json")])
    assert rc == 2 and "downloads are disabled" in capsys.readouterr().err


# ------------------------------------------------------------------ in-sample fingerprints


def test_fingerprints_tell_the_trained_tasks_and_their_labels(base: TrainResult) -> None:
    from analysis import fingerprint

    fp = fingerprint.load(base.model_dir)
    assert fp is not None and len(fp) == len(RAW)  # the unannotated task is not trained on
    ds = make_dataset(unannotated=1)
    assert fingerprint.seen(fp, ds.corpus).tolist() == [True] * len(RAW) + [False]
    assert fingerprint.seen(fp, ds.corpus, labels=True).tolist() == [True] * len(RAW) + [False]
    # the same texts with one label changed: text seen, these labels not
    changed = [(s, [(a, b, "LOC" if lab == "PER" else "PER") for a, b, lab in g]) if i == 0
               else (s, g) for i, (s, g) in enumerate(RAW)]
    ds2 = make_dataset(changed, unannotated=0)
    assert fingerprint.seen(fp, ds2.corpus).all()
    assert fingerprint.seen(fp, ds2.corpus, labels=True).tolist() == [False] + [True] * 4


def test_analyze_refuses_an_in_sample_model(base: TrainResult, tmp_path: Path,
                                            capsys: pytest.CaptureFixture) -> None:
    data = tmp_path / "tiny.conll"
    _write_conll(data)
    rc = main(["analyze", "--data", str(data), "--model", str(base.model_dir), "--device", "cpu",
               "--json"])
    err = capsys.readouterr().err
    assert rc == 2 and f"trained on {len(RAW)} of these {len(RAW)} tasks" in err, err
    rc = main(["analyze", "--data", str(data), "--model", str(base.model_dir), "--device", "cpu",
               "--json", "--allow-in-sample"])
    out = json.loads(capsys.readouterr().out)
    assert rc == 0 and len(out["tasks"]) == len(RAW)
