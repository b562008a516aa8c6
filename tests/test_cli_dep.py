"""``ner-quality dep`` end to end (subprocess)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, shared_file

SMALL = """John\tB-PER
lives\tO
in\tO
Paris\tB-LOC
.\tO

Paris\tB-PER
is\tO
nice\tO

He\tO
went\tO
to\tO
Rome\tO

Anna\tB-PER
Smith\tI-PER
sings\tO
"""
# dataset labels are sorted: LOC, PER -> tags O, B-LOC, I-LOC, B-PER, I-PER
O, BL, IL, BP, IP = range(5)


def onehot(cols: list[int], p: float = 0.9, n: int = 5) -> np.ndarray:
    a = np.full((len(cols), n), (1 - p) / (n - 1), dtype=np.float32)
    a[np.arange(len(cols)), cols] = p
    return a


TAGS5 = "O,B-LOC,I-LOC,B-PER,I-PER"


def save_probs(path: Path, arrays: list[np.ndarray]) -> Path:
    """The columnar probability format, with its tag order (what train/predict write)."""
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet

    return save_output(path, ModelOutput.from_arrays(arrays, TagSet(tuple(TAGS5.split(",")))))


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "ls_backend.cli", "dep", *args],
        capture_output=True, text=True, cwd=cwd or REPO, env=env, timeout=300,
    )


@pytest.fixture
def small(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "small.conll"
    data.write_text(SMALL, encoding="utf-8")
    probs = save_probs(tmp_path / "p.npz", [onehot([BP, O, O, BL, O]), onehot([BL, O, O]),
                                            onehot([O, O, O, BL]), onehot([BP, IP, O])])
    return data, probs


def test_json_lines(small: tuple[Path, Path]) -> None:
    data, probs = small
    res = cli("--data", str(data), "--probs", str(probs))
    assert res.returncode == 0, res.stderr
    recs = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["index"] for r in recs] == [0, 1, 2, 3]
    assert all(r["id"] is None for r in recs)
    for r in recs:
        assert 0.0 <= r["dep"] <= 1.0
        assert {"index", "id", "dep", "spans", "category"} <= set(r)
    by_dep = sorted(recs, key=lambda r: -r["dep"])
    assert {by_dep[0]["index"], by_dep[1]["index"]} == {1, 2}
    wrong = recs[1]["spans"][0]
    assert (wrong["start"], wrong["end"], wrong["text"], wrong["gold_label"], wrong["kind"]) == (
        0, 5, "Paris", "PER", "wrong_tag")
    ghost = recs[2]["spans"][0]
    assert (ghost["text"], ghost["gold_label"], ghost["pred_label"], ghost["kind"]) == (
        "Rome", None, "LOC", "ghost")
    anna = recs[3]["spans"][0]
    assert (anna["text"], anna["kind"]) == ("Anna Smith", "correct")


def test_json_object_and_out_file(small: tuple[Path, Path], tmp_path: Path) -> None:
    data, probs = small
    res = cli("--data", str(data), "--probs", str(probs), "--json", "--labels", TAGS5)
    assert res.returncode == 0, res.stderr
    obj = json.loads(res.stdout)
    assert set(obj) == {"tasks", "thresholds", "summary"}
    assert len(obj["tasks"]) == 4
    assert obj["thresholds"]["easy"] <= obj["thresholds"]["mislabeled"]
    assert obj["summary"]["scored"] == 4 and obj["summary"]["epochs"] == 1
    out = tmp_path / "scores.jsonl"
    res2 = cli("--data", str(data), "--probs", str(probs), "--probs", str(probs),
               "--out", str(out))
    assert res2.returncode == 0, res2.stderr
    assert res2.stdout == ""
    lines = out.read_text().splitlines()
    assert [json.loads(x)["dep"] for x in lines] == [t["dep"] for t in obj["tasks"]]


def test_errors_exit_2_with_one_line(small: tuple[Path, Path], tmp_path: Path) -> None:
    data, _ = small
    bad = save_probs(tmp_path / "bad.npz", [onehot([BP, O, O, BL, O]), onehot([BL, O]),
                                            onehot([O, O, O, BL]), onehot([BP, IP, O])])
    res = cli("--data", str(data), "--probs", str(bad))
    assert res.returncode == 2
    assert res.stderr.strip().count("\n") == 0
    assert "task #1: 2 probability rows for 3 tokens" in res.stderr


def _main(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    from ls_backend.cli import main

    rc = main(["dep", *args])
    return rc, capsys.readouterr().err


def test_more_errors_in_process(small: tuple[Path, Path], tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = small
    good = tmp_path / "good.npz"
    np.savez(good, *[onehot([O] * n) for n in (5, 3, 4, 3)])
    rc, err = _main(capsys, "--data", str(data), "--probs", str(good),
                    "--labels", "O,B-PER,I-PER,B-ORG,I-ORG")
    assert rc == 2 and "not dataset labels" in err and err.count("\n") == 1

    notsum = tmp_path / "logits.npz"
    np.savez(notsum, *[onehot([O] * n) * 3 for n in (5, 3, 4, 3)])
    rc, err = _main(capsys, "--data", str(data), "--probs", str(notsum), "--labels", TAGS5)
    assert rc == 2 and "sum to" in err

    rc, err = _main(capsys, "--data", str(data), "--probs", str(tmp_path / "missing.npz"))
    assert rc == 2 and "no such file" in err

    rc, err = _main(capsys, "--data", str(data), "--probs", str(good), "--labels", " , ")
    assert rc == 2 and "--labels is empty" in err


def test_old_format_needs_its_tag_order(small: tuple[Path, Path], tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """An old per-task file stores no tag order: refuse to guess, read it with --labels, and
    convert it once into a file that says its order."""
    data, columnar = small
    arrays = [onehot([BP, O, O, BL, O]), onehot([BL, O, O]), onehot([O, O, O, BL]),
              onehot([BP, IP, O])]
    old = tmp_path / "old.npz"
    np.savez(old, *arrays)
    rc, err = _main(capsys, "--data", str(data), "--probs", str(old))
    assert rc == 2 and "tag order" in err and "--labels" in err and "convert-probs" in err
    rc, err = _main(capsys, "--data", str(data), "--probs", str(old), "--labels", TAGS5, "--json")
    assert rc == 0 and "convert-probs" in err  # read, with one line saying how to convert
    want = cli("--data", str(data), "--probs", str(columnar), "--json")
    new = tmp_path / "new.npz"
    from ls_backend.cli import main

    assert main(["convert-probs", str(old), str(new), "--labels", TAGS5, "--data", str(data)]) == 0
    got = cli("--data", str(data), "--probs", str(new), "--json")
    assert json.loads(got.stdout)["tasks"] == json.loads(want.stdout)["tasks"]
    # a wrong order is refused as soon as the file says its own
    rc, err = _main(capsys, "--data", str(data), "--probs", str(new), "--labels",
                    "O,B-PER,I-PER,B-LOC,I-LOC")
    assert rc == 2 and "differ" in err


@pytest.mark.parametrize("confidence", ["near one-hot", "moderate"])
def test_conll2003_test_with_synthetic_probabilities(tmp_path: Path, confidence: str) -> None:
    """30 CoNLL-03 test sentences whose first span the "model" reads as another type, DEP
    from the probabilities alone.  Near one-hot: every token at 0.99-0.9999.  Moderate: the
    model sure of O (0.99-0.9999, as a trained tagger is) but only 0.6-0.9 on entity tokens,
    flipped ones included.  Both times DEP ranks the flipped tasks first."""
    from analysis.dataset import token_spans
    from analysis.formats import load
    from analysis.tags import tag_names

    path = shared_file("conll2003", "test.conll")
    ds = load(path)
    tags = tag_names(ds.labels)
    col = {t: i for i, t in enumerate(tags)}
    rng = np.random.default_rng(0)
    with_spans = [t.index for t in ds.tasks if t.gold]
    flipped = set(rng.choice(with_spans, 30, replace=False).tolist())
    arrays = []
    for t in ds.tasks:
        cols = [col["O"]] * len(t.tokens)
        for k, s in enumerate(token_spans(t, "gold", warn=False)):
            lab = s.label
            if k == 0 and t.index in flipped:  # the "model" believes another type
                lab = next(x for x in ds.labels if x != s.label)
            cols[s.start] = col[f"B-{lab}"]
            for i in range(s.start + 1, s.end):
                cols[i] = col[f"I-{lab}"]
        a = onehot(cols, p=float(rng.uniform(0.99, 0.9999)), n=len(tags))
        ent = np.asarray(cols) != col["O"]
        if confidence == "moderate" and ent.any():
            a[ent] = onehot([c for c, e in zip(cols, ent) if e], p=float(rng.uniform(0.6, 0.9)),
                            n=len(tags))
        arrays.append(a)
    probs = tmp_path / "test_probs.npz"
    np.savez(probs, *arrays)
    out = tmp_path / "scores.jsonl"
    # (--no-embed: here the probabilities carry the errors and the labels are right, so the
    # neighbour signal rightly finds every label consistent; the embedding path has its tests)
    res = cli("--data", str(path), "--probs", str(probs), "--out", str(out),
              "--labels", ",".join(tags), "--no-embed")
    assert res.returncode == 0, res.stderr
    recs = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(recs) == len(ds.tasks)
    by_index = {r["index"]: r for r in recs}
    # every planted disagreement is a wrong_tag span the model reads as the other type
    for i in flipped:
        first = next(s for s in by_index[i]["spans"] if s["gold_label"])
        assert first["kind"] == "wrong_tag"
        assert first["pred_label"] == next(x for x in ds.labels if x != first["gold_label"])
    # they rank first: nearly all in the top 30 of 3,453, every one in the top 60 (the surface
    # signal also lifts a few genuinely inconsistent CoNLL-03 annotations)
    rank = {r["index"]: k for k, r in enumerate(sorted(recs, key=lambda r: -r["dep"]))}
    assert sum(rank[i] < len(flipped) for i in flipped) >= 0.85 * len(flipped)
    assert max(rank[i] for i in flipped) < 2 * len(flipped)
    # "mislabeled" (the per-dataset threshold, expected F2 of the error probabilities) holds
    # what it flags nearly all planted; with a confident model it flags nearly all of them, with
    # a hesitant one only the clearest (the threshold is calibrated, the ranking is the signal)
    flagged = {r["index"] for r in recs if r["category"] == "mislabeled"}
    assert flagged and len(flagged & flipped) >= 0.8 * len(flagged)
    if confidence == "near one-hot":
        assert len(flagged & flipped) >= 0.9 * len(flipped)


def test_scorer_and_error_model_options(small: tuple[Path, Path], tmp_path: Path) -> None:
    from analysis.dep.errormodel import default_error_model

    data, probs = small
    default = cli("--data", str(data), "--probs", str(probs), "--json")
    assert default.returncode == 0, default.stderr
    d = json.loads(default.stdout)
    assert d["summary"]["scorer"] == "model"
    assert d["thresholds"]["method"] == "expected_fbeta"
    assert all("suspect" in s for t in d["tasks"] for s in t["spans"])
    # the same model given as a file scores the same
    path = tmp_path / "em.json"
    default_error_model().save(path)
    same = cli("--data", str(data), "--probs", str(probs), "--json", "--error-model", str(path))
    assert same.returncode == 0, same.stderr
    assert [t["dep"] for t in json.loads(same.stdout)["tasks"]] == [t["dep"] for t in d["tasks"]]
    sig = cli("--data", str(data), "--probs", str(probs), "--json", "--scorer", "signals")
    assert sig.returncode == 0, sig.stderr
    s = json.loads(sig.stdout)
    assert s["summary"]["scorer"] == "signals" and s["thresholds"]["method"] == "youden"
    assert [t["dep"] for t in s["tasks"]] != [t["dep"] for t in d["tasks"]]
    # a broken model file: one clear line, exit 2
    path.write_text('{"format": "ner-quality-error-model/1", "units": {}}')
    bad = cli("--data", str(data), "--probs", str(probs), "--error-model", str(path))
    assert bad.returncode == 2
    assert str(path) in bad.stderr and "no model for unit type" in bad.stderr
    assert "Traceback" not in bad.stderr


# ----------------------------------------------------------- bring-your-own probabilities


def _repeated_form(tmp_path: Path) -> tuple[Path, Path, int]:
    """12 sentences "<City> beat <Team> 2 - 1 ." where the team is ORG, one of them labelled
    LOC (a repeated surface form mislabelled in one context); the "model" agrees with every
    label (p = 0.9), so only the dataset itself can tell."""
    teams = ["Leeds", "Chelsea", "Arsenal", "Everton", "Fulham", "Wigan"]
    rows, arrays, wrong = [], [], 7
    tags = ["O", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    for i in range(12):
        lab = "LOC" if i == wrong else "ORG"
        toks = [("Boston", "O"), ("beat", "O"), (teams[i % len(teams)], f"B-{lab}"),
                ("2", "O"), ("-", "O"), ("1", "O"), (".", "O")]
        rows += [f"{w}\t{t}" for w, t in toks] + [""]
        arrays.append(onehot([tags.index(t) for _, t in toks]))
    data = tmp_path / "teams.conll"
    data.write_text("\n".join(rows) + "\n", encoding="utf-8")
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet

    probs = save_output(tmp_path / "teams.npz", ModelOutput.from_arrays(arrays, TagSet(tuple(tags))))
    return data, probs, wrong


@pytest.mark.model
def test_probs_only_path_embeds_the_spans_unless_told_not_to(tmp_path: Path) -> None:
    data, probs, wrong = _repeated_form(tmp_path)
    res = cli("--data", str(data), "--probs", str(probs), "--json", "--device", "cpu")
    assert res.returncode == 0, res.stderr
    assert "embedding 12 gold spans with the packaged MiniLM backbone" in res.stderr
    assert json.loads(res.stdout)["summary"]["span_embeddings"] == 12
    res = cli("--data", str(data), "--probs", str(probs), "--json", "--no-embed")
    assert res.returncode == 0, res.stderr
    assert "embedding" not in res.stderr
    assert json.loads(res.stdout)["summary"]["span_embeddings"] is None
    # by construction: the surface vote alone cannot tell the mislabelled "Chelsea" (LOC) from
    # its twin labelled ORG (each is half of the form's votes); the neighbour signal over the
    # embeddings (every similar span is ORG) ranks the mislabelled one strictly first
    runs = {}
    for flag in ("--embed", "--no-embed"):
        res = cli("--data", str(data), "--probs", str(probs), "--json", "--scorer", "signals",
                  "--device", "cpu", flag)
        assert res.returncode == 0, res.stderr
        runs[flag] = {t["index"]: t["dep"] for t in json.loads(res.stdout)["tasks"]}
    twin = 1  # the other "Chelsea", labelled ORG
    assert runs["--no-embed"][wrong] == runs["--no-embed"][twin]
    dep = runs["--embed"]
    assert dep[wrong] > max(d for i, d in dep.items() if i != wrong), dep


def test_bad_probabilities_fail_before_the_embedding(small: tuple[Path, Path],
                                                     tmp_path: Path) -> None:
    data, _ = small
    bad = save_probs(tmp_path / "bad.npz", [onehot([BP, O, O, BL, O]), onehot([BL, O]),
                                            onehot([O, O, O, BL]), onehot([BP, IP, O])])
    res = cli("--data", str(data), "--probs", str(bad))
    assert res.returncode == 2 and "embedding" not in res.stderr
