"""Reading and writing datasets: CoNLL 2/4 columns, Label Studio JSON export, JSON-MIN,
choosing annotations/predictions, round trips, and the ``convert`` CLI."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from analysis import formats as io
from analysis.dataset import Dataset, Task, choose_annotation, token_spans
from analysis.formats.label_config import label_config_xml
from analysis.spans import Span, TokenSpan, tokenize

DATA = Path(__file__).resolve().parent / "data"
REPO = Path(__file__).resolve().parents[1]
CONLL_CFG = REPO / "label_config" / "conll2003.xml"


def spans(task: Task, which: str = "gold") -> list[tuple[int, int, str]] | None:
    got = task.gold if which == "gold" else task.pred
    return None if got is None else [(s.start, s.end, s.label) for s in got]


# ---------------------------------------------------------------------------------- CoNLL


def test_read_conll_two_columns() -> None:
    ds = io.load(DATA / "tiny.conll")
    assert len(ds) == 3 and ds.scheme == "iob2"
    assert ds.labels == ("LOC", "ORG", "PER")
    t0 = ds.tasks[0]
    assert t0.text == "Obama met Biden in New York ."
    assert t0.data["tokens"] == ["Obama", "met", "Biden", "in", "New", "York", "."]
    assert spans(t0) == [(0, 5, "PER"), (10, 15, "PER"), (19, 27, "LOC")]
    assert spans(ds.tasks[2]) == []  # annotated, no entities
    assert t0.id is None and t0.index == 0
    assert token_spans(t0) == [
        TokenSpan(0, 1, "PER"),
        TokenSpan(2, 3, "PER"),
        TokenSpan(4, 6, "LOC"),
    ]


def test_read_conll_text_and_path_equivalent() -> None:
    text = (DATA / "tiny.conll").read_text(encoding="utf-8")
    a, b = io.parse_conll(text), io.read_conll(str(DATA / "tiny.conll"))
    assert [t.gold for t in a.tasks] == [t.gold for t in b.tasks]


def test_conll_four_columns_docstart_iob1_roundtrip() -> None:
    raw = (DATA / "conll4_iob1.conll").read_text(encoding="utf-8")
    ds = io.parse_conll(raw)
    assert ds.scheme == "iob1"
    assert len(ds) == 3  # -DOCSTART- lines are not sentences
    assert [t.data.get("conll_docstart") is not None for t in ds.tasks] == [True, False, True]
    assert ds.tasks[0].data["conll_extra"][0] == ["NNP", "B-NP"]
    # IOB1 "I-PER B-PER": two adjacent PER entities
    assert spans(ds.tasks[2]) == [(0, 5, "PER"), (6, 11, "PER")]
    assert spans(ds.tasks[0]) == [(0, 2, "ORG"), (11, 17, "MISC")]
    assert io.write_conll(ds, scheme="iob1").text == raw
    iob2 = io.write_conll(ds, scheme="iob2").text
    assert "Obama NNP B-NP B-PER\nBiden NNP I-NP B-PER\n" in iob2
    assert "EU NNP B-NP B-ORG\n" in iob2
    # through LS JSON as well
    again = io.from_ls_tasks(json.loads(json.dumps(io.to_ls_tasks(ds))))
    assert io.write_conll(again, scheme="iob1").text == raw


def test_conll_scheme_given_overrides_detection() -> None:
    ds = io.parse_conll("A\tS-PER\nB\tO\n\nC\tB-LOC\nD\tE-LOC\n\n", scheme="bioes")
    assert [spans(t) for t in ds.tasks] == [[(0, 1, "PER")], [(0, 3, "LOC")]]
    assert io.write_conll(ds, scheme="bilou").text == "A\tU-PER\nB\tO\n\nC\tB-LOC\nD\tL-LOC\n\n"


def test_conll_strict_error_names_sentence_line_token() -> None:
    text = "A\tO\n\nB\tB-PER\nC\tO\nD\tI-LOC\n\n"
    with pytest.raises(
        ValueError, match=r"sentence 2 \(line 5\): invalid IOB2 tag 'I-LOC' at token 2"
    ):
        io.parse_conll(text, scheme="iob2")


def test_conll_lenient_counts_repairs() -> None:
    text = "A\tO\n\nB\tB-PER\nC\tO\nD\tI-LOC\nE\tI-LOC\n\nF\tI-ORG\n\n"
    with pytest.warns(UserWarning, match="2 tag"):
        ds = io.parse_conll(text, scheme="iob2", strict=False)
    assert ds.problems.counts() == {"tag_repair": 2}
    assert ds.problems.repairs == 2
    assert [p.task for p in ds.problems.items] == [1, 2]
    assert spans(ds.tasks[1]) == [(0, 1, "PER"), (4, 7, "LOC")]  # "B C D E": orphan run begins


def test_conll_malformed_tag_strict_and_lenient() -> None:
    text = "A\tB-PER\nB\tPERSON\n\n"
    with pytest.raises(ValueError, match=r"sentence 1 \(line 2\): invalid tag 'PERSON' at token 1"):
        io.parse_conll(text)
    with pytest.warns(UserWarning):
        ds = io.parse_conll(text, strict=False)
    assert spans(ds.tasks[0]) == [(0, 1, "PER")] and ds.problems.repairs == 1


@pytest.mark.parametrize(
    "text,needle",
    [
        ("A\tO\nB\n\n", r"line 2: expected 'token<TAB>tag'"),
        ("A\tX\tO\nB\tO\n\n", r"line 2: 2 columns, but line 1 has 3"),
        ("\tO\n\n", r"line 1: empty token"),
    ],
    ids=["one-column", "column-count-changes", "empty-token"],
)
def test_conll_structure_errors(text: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        io.parse_conll(text)


def test_conll_crlf_and_bom_are_read() -> None:
    ds = io.parse_conll("\ufeffA\tB-PER\r\nb\tO\r\n\r\n")
    assert ds.tasks[0].data["tokens"] == ["A", "b"] and spans(ds.tasks[0]) == [(0, 1, "PER")]


def test_conll_label_config_check() -> None:
    text = "A\tB-PER\n\nB\tB-FOOD\n\n"
    with pytest.raises(
        ValueError, match=r"sentence 2: labels \['FOOD'\] are not in the label config"
    ):
        io.parse_conll(text, label_config=CONLL_CFG)
    ds = io.parse_conll("A\tB-PER\n\n", label_config=CONLL_CFG)
    assert ds.labels == ("PER", "ORG", "LOC", "MISC")


# ----------------------------------------------------------------------------- LS JSON


def test_ls_export_chooses_latest_annotation_and_prediction() -> None:
    ds = io.load(DATA / "ls_export.json")
    assert len(ds) == 3
    assert ds.labels == ("LOC", "ORG", "PER")
    assert (ds.from_name, ds.to_name, ds.value_key) == ("label", "text", "text")
    t = ds.tasks[0]
    assert t.id == 101 and t.split == "train"
    # annotation 13 is later but cancelled; 12 is updated after 11
    assert t.annotation_id == 12 and t.annotator == "2"
    assert spans(t) == [(0, 15, "PER"), (19, 27, "ORG")]
    assert t.model_version == "v2" and t.pred_score == 0.75
    assert spans(t, "pred") == [(0, 5, "PER"), (19, 27, "LOC")]
    emoji = ds.tasks[1]
    assert [emoji.text[s.start : s.end] for s in emoji.gold or ()] == ["Paris", "\u6771\u4eac"]
    assert ds.tasks[2].gold is None and ds.tasks[2].pred is None
    assert ds.tasks[2].split == "test"  # from meta
    assert len(ds.problems) == 0


def test_ls_export_choose_by_annotator_and_model_version() -> None:
    ds = io.load(DATA / "ls_export.json", annotator=1, model_version="v1")
    t = ds.tasks[0]
    assert t.annotation_id == 11
    # the choices region of the verdict control is not an NER span
    assert spans(t) == [(0, 5, "PER"), (10, 15, "PER"), (19, 27, "LOC")]
    assert spans(t, "pred") == [(0, 5, "PER")] and t.model_version == "v1"
    assert ds.tasks[1].annotation_id == 21
    ds3 = io.load(DATA / "ls_export.json", annotator=3)  # only a cancelled annotation
    assert ds3.tasks[0].gold is None


def test_ls_export_with_label_config_keeps_config_order() -> None:
    ds = io.load(DATA / "ls_export.json", label_config=CONLL_CFG)
    assert ds.labels == ("PER", "ORG", "LOC", "MISC")
    tab = ds.gold_table()
    assert tab.labels == ds.labels
    assert tab.task.tolist() == [0, 0, 1, 1]
    assert [tab.labels[i] for i in tab.label.tolist()] == ["PER", "ORG", "LOC", "LOC"]
    assert tab.start.tolist() == [0, 19, 5, 17]
    pt = ds.pred_table()
    assert pt.task.tolist() == [0, 0] and pt.end.tolist() == [5, 27]


def test_json_min_is_detected_and_read() -> None:
    ds = io.load(DATA / "ls_min.json")
    assert [t.id for t in ds.tasks] == [101, 102]
    t = ds.tasks[0]
    assert t.annotator == "ann@example.com" and t.annotation_id == 11
    assert spans(t) == [(0, 5, "PER"), (19, 27, "LOC")]
    assert "lead_time" not in t.data and "label" not in t.data
    with pytest.raises(ValueError, match="has no 'data' object"):
        io.load(DATA / "ls_min.json", format="ls-json")


def test_json_min_rows_of_one_task_choose_annotator() -> None:
    rows = [
        {
            "id": 1,
            "text": "Ann Lee",
            "label": [{"start": 0, "end": 3, "labels": ["PER"]}],
            "annotator": "a@x.org",
            "updated_at": "2024-01-02T00:00:00Z",
        },
        {
            "id": 1,
            "text": "Ann Lee",
            "label": [{"start": 0, "end": 7, "labels": ["PER"]}],
            "annotator": "b@x.org",
            "updated_at": "2024-01-01T00:00:00Z",
        },
    ]
    ds = io.from_ls_tasks(rows)
    assert len(ds) == 1 and spans(ds.tasks[0]) == [(0, 3, "PER")]  # latest
    ds_b = io.from_ls_tasks(rows, annotator="b@x.org")
    assert spans(ds_b.tasks[0]) == [(0, 7, "PER")] and ds_b.tasks[0].annotator == "b@x.org"


def test_ls_json_roundtrip_via_files(tmp_path: Path) -> None:
    ds = io.load(DATA / "ls_export.json")
    out = tmp_path / "x.json"
    rep = io.save(ds, out, format="auto")
    assert rep.n_tasks == 3 and rep.n_spans == 4 + 2
    back = io.load(out)
    for a, b in zip(ds.tasks, back.tasks):
        assert (a.id, a.text, a.gold, a.pred, a.pred_score, a.model_version, a.split) == (
            b.id,
            b.text,
            b.gold,
            b.pred,
            b.pred_score,
            b.model_version,
            b.split,
        )
    mini = tmp_path / "m.json"
    io.save(ds, mini, format="json-min")
    back_min = io.load(mini)
    assert [t.gold for t in back_min.tasks] == [t.gold for t in ds.tasks]


def test_from_name_inferred_and_mixed_is_an_error() -> None:
    def task(fn: str) -> dict[str, Any]:
        return {
            "data": {"doc": "Ann"},
            "annotations": [
                {
                    "result": [
                        {
                            "from_name": fn,
                            "to_name": "doc",
                            "type": "labels",
                            "value": {"start": 0, "end": 3, "labels": ["PER"]},
                        }
                    ]
                }
            ],
        }

    ds = io.from_ls_tasks([task("ner")])
    assert (ds.from_name, ds.to_name, ds.value_key) == ("ner", "doc", "doc")
    with pytest.raises(ValueError, match=r"several \(from_name, to_name\) pairs"):
        io.from_ls_tasks([task("ner"), task("ner2")])
    cfg = label_config_xml(["PER"], from_name="ner2", to_name="doc", value="$doc")
    ds2 = io.from_ls_tasks([task("ner"), task("ner2")], label_config=cfg)
    assert spans(ds2.tasks[0]) == [] and spans(ds2.tasks[1]) == [(0, 3, "PER")]


def test_alias_in_results_maps_to_label_value() -> None:
    cfg = """<View><Labels name="label" toName="text"><Label value="Person" alias="PER"/></Labels>
             <Text name="text" value="$text"/></View>"""
    task = {
        "data": {"text": "Ann"},
        "annotations": [
            {
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "text",
                        "type": "labels",
                        "value": {"start": 0, "end": 3, "text": "Ann", "labels": ["PER"]},
                    }
                ]
            }
        ],
    }
    assert spans(io.from_ls_tasks([task], label_config=cfg).tasks[0]) == [(0, 3, "Person")]


def test_tokens_field_must_match_text() -> None:
    good = {"data": {"text": "New York", "tokens": ["New", "York"]}}
    assert io.from_ls_tasks([good]).tasks[0].tokens.tokens == ("New", "York")
    bad = {"id": 9, "data": {"text": "New  York", "tokens": ["New", "York"]}}
    with pytest.raises(ValueError, match=r"task 9: data\['tokens'\] joined by single spaces"):
        io.from_ls_tasks([bad])
    with pytest.raises(ValueError, match=r"task 9: data\['tokens'\] must be a list of non-empty"):
        io.from_ls_tasks([{"id": 9, "data": {"text": "a", "tokens": ["a", ""]}}])


def test_prediction_ids_only_are_ignored_with_warning() -> None:
    task = {"id": 1, "data": {"text": "Ann"}, "predictions": [17]}
    with pytest.warns(UserWarning, match="ids only"):
        ds = io.from_ls_tasks([task])
    assert ds.tasks[0].pred is None


def test_misaligned_spans_reported_not_moved() -> None:
    task = {
        "id": 4,
        "data": {"text": "ObamaCare is law"},
        "annotations": [
            {
                "result": [
                    {
                        "from_name": "label",
                        "to_name": "text",
                        "type": "labels",
                        "value": {"start": 0, "end": 5, "text": "Obama", "labels": ["PER"]},
                    }
                ]
            }
        ],
    }
    with pytest.warns(UserWarning, match="do not line up"):
        ds = io.from_ls_tasks([task])
    assert spans(ds.tasks[0]) == [(0, 5, "PER")]  # kept as given
    assert ds.problems.misaligned == 1
    assert ds.problems.items[0].kind == "misaligned" and "task 4" in ds.problems.items[0].message
    with pytest.warns(UserWarning, match="span problem"):
        rep = io.write_conll(ds)
    assert rep.misaligned == 1 and rep.text == "ObamaCare\tB-PER\nis\tO\nlaw\tO\n\n"


def test_write_conll_skips_unannotated_and_writes_predictions() -> None:
    ds = io.load(DATA / "ls_export.json")
    with pytest.warns(UserWarning, match="1 task"):
        gold = io.write_conll(ds)
    assert gold.skipped == [(2, "unannotated")] and gold.n_tasks == 2
    with pytest.warns(UserWarning):
        pred = io.write_conll(ds, which="pred")
    assert pred.n_tasks == 1
    assert pred.text == ("Obama\tB-PER\nmet\tO\nBiden\tO\nin\tO\nNew\tB-LOC\nYork\tI-LOC\n.\tO\n\n")


def test_dataset_token_spans_and_tables_on_conll() -> None:
    ds = io.load(DATA / "tiny.conll")
    tab = ds.gold_table()
    assert len(tab) == 5 == ds.n_spans()
    assert tab.labels == ds.labels
    assert len(ds.pred_table()) == 0
    assert token_spans(ds.tasks[1], "pred") == []
    with pytest.raises(ValueError, match="which must be"):
        token_spans(ds.tasks[1], "silver")  # type: ignore[arg-type]


def test_choose_annotation_ties_and_missing_times() -> None:
    anns = [{"id": 1, "result": []}, {"id": 3, "result": []}, {"id": 2, "result": []}]
    assert choose_annotation(anns)["id"] == 3  # type: ignore[index]
    anns2 = [{"id": 5, "completed_by": {"id": 7, "email": "z@x.org"}, "result": []}]
    assert choose_annotation(anns2, annotator="z@x.org") is anns2[0]
    assert choose_annotation(anns2, annotator=7) is anns2[0]
    assert choose_annotation(anns2, annotator=8) is None


# hypothesis: random texts (with emoji / CJK / zero-width) and aligned spans survive
# Dataset -> LS JSON -> Dataset and Dataset -> CoNLL -> Dataset
_ALPHABET = st.sampled_from(["Ann", "Lee", "\U0001f600", "\u6771\u4eac", "\u200b", ".", "x1", "é"])


@st.composite
def datasets(draw: st.DrawFn) -> Dataset:
    tasks = []
    for i in range(draw(st.integers(min_value=1, max_value=4))):
        words = draw(st.lists(_ALPHABET, min_size=1, max_size=8))
        text = " ".join(words)
        tt = tokenize(text)
        n = len(tt)
        chosen: list[Span] = []
        k = 0
        while k < n:
            k += draw(st.integers(min_value=0, max_value=2))
            if k >= n:
                break
            ln = draw(st.integers(min_value=1, max_value=min(3, n - k)))
            lab = draw(st.sampled_from(["PER", "LOC"]))
            chosen.append(Span(int(tt.starts[k]), int(tt.ends[k + ln - 1]), lab))
            k += ln
        tasks.append(Task(i, 100 + i, text, tt, gold=tuple(chosen), data={"text": text}))
    return Dataset(tasks, ("LOC", "PER"))


@settings(max_examples=60, deadline=None)
@given(ds=datasets())
def test_roundtrip_property(ds: Dataset) -> None:
    back = io.from_ls_tasks(json.loads(json.dumps(io.to_ls_tasks(ds), ensure_ascii=False)))
    assert [t.gold for t in back.tasks] == [t.gold for t in ds.tasks]
    assert [t.text for t in back.tasks] == [t.text for t in ds.tasks]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # aligned spans: no warnings at all
        conll = io.parse_conll(io.write_conll(ds).text)
    assert len(conll.tasks) == len(ds.tasks)
    for a, b in zip(ds.tasks, conll.tasks):
        assert token_spans(a) == token_spans(b)
        assert list(b.tokens.tokens) == list(a.tokens.tokens)


# -------------------------------------------------------------------------------- CLI


def test_convert_cli_roundtrip(tmp_path: Path) -> None:
    src = DATA / "tiny.conll"
    js, back = tmp_path / "t.json", tmp_path / "t.conll"
    cmd = [sys.executable, "-m", "ls_backend.cli", "convert"]
    r1 = subprocess.run(
        cmd + [str(src), str(js), "--to", "ls-json"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r1.returncode == 0, r1.stderr
    assert "3 tasks, 5 spans, 0 repairs, 0 misaligned" in r1.stderr
    tasks = json.loads(js.read_text(encoding="utf-8"))
    assert tasks[0]["data"]["tokens"][0] == "Obama"
    assert tasks[0]["annotations"][0]["result"][0]["value"]["labels"] == ["PER"]
    r2 = subprocess.run(
        cmd + [str(js), str(back), "--to", "conll"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r2.returncode == 0, r2.stderr
    assert back.read_bytes() == src.read_bytes()
    bad = tmp_path / "bad.conll"
    bad.write_text("A\tI-PER\nB\tO\n\nC\tB-PER\nD\tI-LOC\n\n", encoding="utf-8")
    r3 = subprocess.run(
        cmd + [str(bad), str(tmp_path / "o.json"), "--to", "ls-json", "--in-scheme", "iob2"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r3.returncode == 2
    assert "sentence 1 (line 1): invalid IOB2 tag 'I-PER' at token 0" in r3.stderr
    assert "Traceback" not in r3.stderr
    r4 = subprocess.run(
        cmd
        + [
            str(bad),
            str(tmp_path / "o.json"),
            "--to",
            "ls-json",
            "--in-scheme",
            "iob2",
            "--lenient",
        ],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert r4.returncode == 0, r4.stderr
    assert "2 repairs" in r4.stderr


def test_a_lazily_read_dataset_pickles_as_plain_tasks() -> None:
    """Datasets travel to Ray workers by pickle: the lazy task list (a closure over the
    reader's columns) goes as its tasks, the cached corpus is rebuilt on the other side."""
    import pickle

    from analysis.dataset import LazyTasks

    ds = io.parse_conll("EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n\nPeter\tB-PER\n"
                       "Blackburn\tI-PER\n")
    assert isinstance(ds.tasks, LazyTasks) and ds.corpus.n_tasks == 2  # cached now
    back = pickle.loads(pickle.dumps(ds))
    assert isinstance(back.tasks, list) and len(back.tasks) == 2
    assert [(t.text, t.gold) for t in back.tasks] == [(t.text, t.gold) for t in ds.tasks]
    assert back.labels == ds.labels and "_corpus" not in back.__dict__
    assert back.corpus.gold.chars.start.tolist() == ds.corpus.gold.chars.start.tolist()
