"""``ner-quality evaluate`` / ``errors`` through the installed console script (subprocess)."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2

REPO = Path(__file__).resolve().parents[1]
EXE = Path(sys.executable).parent / "ner-quality"

# three sentences; gold vs pred cover every error kind:
# s0: Obama PER correct, Biden PER -> LOC wrong_tag
# s1: New York City LOC -> "New York" span_shift; Paris LOC ghost
# s2: Angela Merkel PER missed
GOLD = [
    [("Obama", "B-PER"), ("met", "O"), ("Biden", "B-PER"), (".", "O")],
    [("New", "B-LOC"), ("York", "I-LOC"), ("City", "I-LOC"), ("and", "O"), ("Paris", "O")],
    [("Angela", "B-PER"), ("Merkel", "I-PER"), ("spoke", "O")],
]
PRED_TAGS = [
    ["B-PER", "O", "B-LOC", "O"],
    ["B-LOC", "I-LOC", "O", "O", "B-LOC"],
    ["O", "O", "O"],
]


def write_conll(path: Path, sents: list[list[tuple[str, str]]]) -> Path:
    path.write_text(
        "\n\n".join("\n".join(f"{t}\t{g}" for t, g in s) for s in sents) + "\n", encoding="utf-8"
    )
    return path


def pred_sents() -> list[list[tuple[str, str]]]:
    return [[(t, p) for (t, _), p in zip(s, tags)] for s, tags in zip(GOLD, PRED_TAGS)]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(EXE), *args], capture_output=True, text=True, timeout=120, cwd=REPO
    )


@pytest.fixture
def files(tmp_path: Path) -> tuple[Path, Path]:
    return write_conll(tmp_path / "gold.conll", GOLD), write_conll(
        tmp_path / "pred.conll", pred_sents()
    )


def test_evaluate_json_equals_seqeval(files):
    gold, pred = files
    r = cli("evaluate", "--gold", str(gold), "--pred", str(pred), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["n_tasks"] == 3 and out["n_evaluated"] == 3 and out["offsets"] == "char"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = classification_report(
            [[g for _, g in s] for s in GOLD], PRED_TAGS, mode="strict", scheme=IOB2,
            output_dict=True,
        )
    assert list(out["report"]) == list(ref)
    for name, row in ref.items():
        for key in ("precision", "recall", "f1-score"):
            assert out["report"][name][key] == pytest.approx(float(row[key]), abs=1e-12)
        assert out["report"][name]["support"] == int(row["support"])


def test_evaluate_text_table(files):
    gold, pred = files
    r = cli("evaluate", "--gold", str(gold), "--pred", str(pred), "--digits", "2")
    assert r.returncode == 0, r.stderr
    assert "micro avg" in r.stdout and "PER" in r.stdout and "LOC" in r.stdout
    # PER: 1 of 1 predicted correct, 1 of 3 gold found
    per = next(line for line in r.stdout.splitlines() if line.strip().startswith("PER"))
    assert per.split()[1:5] == ["1.00", "0.33", "0.50", "3"]


def test_errors_json_counts_and_pairs(files):
    gold, pred = files
    r = cli("errors", "--gold", str(gold), "--pred", str(pred), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["counts"] == {
        "correct": 1, "wrong_tag": 1, "span_shift": 1, "missed": 1, "ghost": 1
    }
    assert out["per_class"]["PER"] == {
        "correct": 1, "wrong_tag": 1, "span_shift": 0, "missed": 1, "ghost": 0
    }
    assert out["per_class"]["LOC"]["ghost"] == 1 and out["per_class"]["LOC"]["span_shift"] == 1
    assert {"gold": "PER", "pred": "LOC", "count": 1} in out["top_confusions"]
    by_task = {t["task"]: t for t in out["tasks"]}
    assert sorted(by_task) == [0, 1, 2]
    shift = by_task[1]["items"][0]
    assert shift["kind"] == "span_shift"
    assert shift["gold"] == {"start": 0, "end": 13, "label": "LOC", "text": "New York City"}
    assert shift["pred"] == [{"start": 0, "end": 8, "label": "LOC", "text": "New York"}]
    ghost = by_task[1]["items"][1]
    assert ghost["kind"] == "ghost" and ghost["pred"][0]["text"] == "Paris"
    assert by_task[2]["items"][0]["kind"] == "missed"


def test_errors_text_output(files):
    gold, pred = files
    r = cli("errors", "--gold", str(gold), "--pred", str(pred))
    assert r.returncode == 0, r.stderr
    assert "span_shift 1" in r.stdout and "ghost 1" in r.stdout
    assert "'New York City'" in r.stdout and "PER -> LOC: 1" in r.stdout


def _region(start: int, end: int, text: str, label: str) -> dict:
    return {
        "from_name": "label", "to_name": "text", "type": "labels",
        "value": {"start": start, "end": end, "text": text[start:end], "labels": [label]},
    }


def _ls_task(tid: int, text: str, gold: list, pred: list | None) -> dict:
    task = {
        "id": tid,
        "data": {"text": text},
        "annotations": [{"id": tid * 10, "result": [_region(*g[:2], text, g[2]) for g in gold]}],
    }
    if pred is not None:
        task["predictions"] = [{"result": [_region(*p[:2], text, p[2]) for p in pred]}]
    return task


def test_single_ls_export_with_annotations_and_predictions(tmp_path):
    tasks = [
        _ls_task(7, "Obama met Biden.", [(0, 5, "PER"), (10, 15, "PER")], [(0, 5, "PER")]),
        _ls_task(8, "Paris is nice", [(0, 5, "LOC")], [(0, 5, "ORG"), (9, 13, "MISC")]),
        # not annotated: not evaluated, so its prediction is no ghost
        {"id": 9, "data": {"text": "Rome too"}, "annotations": [],
         "predictions": [{"result": [_region(0, 4, "Rome too", "LOC")]}]},
    ]
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks), encoding="utf-8")
    r = cli("errors", "--gold", str(path), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["counts"] == {"correct": 1, "wrong_tag": 1, "span_shift": 0, "missed": 1, "ghost": 1}
    assert [(t["id"], t["name"]) for t in out["tasks"]] == [(7, "task 7"), (8, "task 8")]
    assert out["n_tasks"] == 3 and out["n_evaluated"] == 2
    r = cli("evaluate", "--gold", str(path), "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)["report"]
    assert rep["micro avg"]["precision"] == pytest.approx(1 / 3)
    assert rep["micro avg"]["recall"] == pytest.approx(1 / 3)


def test_ls_pred_matched_by_task_id_in_any_order(tmp_path):
    gold = [
        _ls_task(1, "Obama met Biden.", [(0, 5, "PER")], None),
        _ls_task(2, "Paris is nice", [(0, 5, "LOC")], None),
    ]
    pred = [
        _ls_task(2, "Paris is nice", [], [(0, 5, "LOC")]),
        _ls_task(1, "Obama met Biden.", [], [(0, 5, "PER")]),
    ]
    (tmp_path / "g.json").write_text(json.dumps(gold), encoding="utf-8")
    (tmp_path / "p.json").write_text(json.dumps(pred), encoding="utf-8")
    r = cli("errors", "--gold", str(tmp_path / "g.json"), "--pred", str(tmp_path / "p.json"),
            "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["counts"]["correct"] == 2
    # a pred file missing task 2 is an error naming it
    (tmp_path / "p1.json").write_text(json.dumps(pred[1:]), encoding="utf-8")
    r = cli("errors", "--gold", str(tmp_path / "g.json"), "--pred", str(tmp_path / "p1.json"))
    assert r.returncode == 2
    assert "task 2" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_conll_gold_against_retokenized_ls_pred_uses_tokens(tmp_path, files):
    gold, _ = files
    # same tokens, different text (no space before "."): compared on token offsets
    texts = ["Obama met Biden.", "New York City and Paris", "Angela Merkel spoke"]
    preds = [[(0, 5, "PER"), (10, 15, "PER")], [(0, 13, "LOC")], [(0, 13, "PER")]]
    pred = [_ls_task(i + 1, t, [], p) for i, (t, p) in enumerate(zip(texts, preds))]
    (tmp_path / "p.json").write_text(json.dumps(pred), encoding="utf-8")
    r = cli("evaluate", "--gold", str(gold), "--pred", str(tmp_path / "p.json"), "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["offsets"] == "token"
    assert out["report"]["micro avg"]["f1-score"] == 1.0


def test_no_predictions_is_a_one_line_error(tmp_path):
    path = tmp_path / "only_gold.json"
    path.write_text(json.dumps([_ls_task(1, "Obama met Biden.", [(0, 5, "PER")], None)]))
    r = cli("evaluate", "--gold", str(path))
    assert r.returncode == 2
    assert r.stdout == ""
    assert r.stderr.startswith("ner-quality: error: ") and "--pred" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("command", ["evaluate", "errors"])
def test_task_count_mismatch(tmp_path, files, command):
    gold, _ = files
    short = write_conll(tmp_path / "short.conll", pred_sents()[:2])
    r = cli(command, "--gold", str(gold), "--pred", str(short))
    assert r.returncode == 2
    assert r.stdout == ""
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("ner-quality: error: task #2 ")
    assert "gold has 3 tasks, pred has 2" in lines[0]


@pytest.mark.parametrize("command", ["evaluate", "errors"])
def test_token_count_mismatch(tmp_path, files, command):
    gold, _ = files
    sents = pred_sents()
    sents[1] = sents[1][:-1]  # sentence 1 loses a token
    bad = write_conll(tmp_path / "bad.conll", sents)
    r = cli(command, "--gold", str(gold), "--pred", str(bad))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1
    assert "task #1: gold has 5 tokens but pred has 4" in lines[0]


def test_missing_file(tmp_path, files):
    gold, _ = files
    r = cli("evaluate", "--gold", str(gold), "--pred", str(tmp_path / "nope.conll"))
    assert r.returncode == 2
    assert "nope.conll" in r.stderr and len(r.stderr.strip().splitlines()) == 1
