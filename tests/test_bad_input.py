"""Bad input: every case gives a clear error naming the task/sentence and the problem, or a
documented, counted repair (``strict=False``)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from analysis import formats as io
from analysis.formats.label_config import label_config_xml


def region(start: int, end: int, label: str, text: str | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"start": start, "end": end, "labels": [label]}
    if text is not None:
        value["text"] = text
    return {"from_name": "label", "to_name": "text", "type": "labels", "value": value}


def task(tid: int, text: str, *regions: dict[str, Any]) -> dict[str, Any]:
    return {"id": tid, "data": {"text": text}, "annotations": [{"id": 1, "result": list(regions)}]}


@pytest.mark.parametrize(
    "name,content",
    [("e.conll", b""), ("e.json", b"  \n\n"), ("l.json", b"[]")],
    ids=["empty-conll", "whitespace-json", "empty-list"],
)
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(ValueError, match=rf"{name}: (file is empty|contains no tasks)"):
        io.load(p)


def test_empty_text() -> None:
    ds = io.from_ls_tasks([task(3, "")])
    assert len(ds.tasks[0].tokens) == 0 and ds.tasks[0].gold == ()
    with pytest.warns(UserWarning, match="skipped"):
        rep = io.write_conll(ds)
    assert rep.skipped == [(0, "no tokens")] and rep.text == ""
    with pytest.raises(
        ValueError, match=r"task 3: gold span \[0, 1\) 'PER' ends past text length 0"
    ):
        io.from_ls_tasks([task(3, "", region(0, 1, "PER"))])


def test_whitespace_only_text() -> None:
    with pytest.warns(UserWarning, match="do not line up"):
        ds = io.from_ls_tasks([task(4, " \t\n ", region(0, 3, "PER"))])
    assert len(ds.tasks[0].tokens) == 0
    assert ds.problems.counts() == {"no_token": 1}
    assert (
        "task 4" in ds.problems.items[0].message
        and "covers no token" in ds.problems.items[0].message
    )


def test_unicode_emoji_cjk_zero_width_offsets_are_code_points() -> None:
    text = "\U0001f600 Paris \u6771\u4eac a\u200bb \ufeffLee"
    p, c, lee = text.index("Paris"), text.index("\u6771"), text.index("Lee")
    assert (p, c) == (2, 8)  # one code point per emoji, as Python and Label Studio count
    ds = io.from_ls_tasks(
        [
            task(
                5,
                text,
                region(p, p + 5, "LOC", "Paris"),
                region(c, c + 2, "LOC", "\u6771\u4eac"),
                region(lee, lee + 3, "PER", "Lee"),
            )
        ]
    )
    t = ds.tasks[0]
    assert [t.text[s.start : s.end] for s in t.gold or ()] == ["Paris", "\u6771\u4eac", "Lee"]
    assert "\u200b" in t.tokens.tokens and "\ufeff" in t.tokens.tokens
    assert len(ds.problems) == 0
    back = io.parse_conll(io.write_conll(ds).text or "")
    assert back.tasks[0].tokens.tokens == t.tokens.tokens
    # UTF-16 offsets (what a JS client would count) are caught by the value.text check
    with pytest.raises(
        ValueError, match=r"task 5: gold span \[3, 8\) 'LOC' has value.text 'Paris'"
    ):
        io.from_ls_tasks([task(5, text, region(3, 8, "LOC", "Paris"))])


def test_span_end_past_text_end() -> None:
    text = "x" * 45
    with pytest.raises(
        ValueError, match=r"task 7: gold span \[40, 52\) 'PER' ends past text length 45"
    ):
        io.from_ls_tasks([task(7, text, region(40, 52, "PER"))])
    with pytest.warns(UserWarning, match="1 invalid span"):
        ds = io.from_ls_tasks([task(7, text, region(40, 52, "PER"))], strict=False)
    assert ds.tasks[0].gold == () and ds.problems.counts() == {"dropped_span": 1}


@pytest.mark.parametrize("start,end", [(5, 5), (6, 2)], ids=["empty", "reversed"])
def test_start_not_before_end(start: int, end: int) -> None:
    with pytest.raises(
        ValueError, match=rf"task 8: gold span \[{start}, {end}\) 'PER' is empty or reversed"
    ):
        io.from_ls_tasks([task(8, "Obama met Biden", region(start, end, "PER"))])


def test_negative_start_and_bad_offsets() -> None:
    with pytest.raises(ValueError, match="task 2: gold span .* negative start"):
        io.from_ls_tasks([task(2, "Obama", region(-1, 3, "PER"))])
    with pytest.raises(TypeError, match="task 2: gold region .* non-integer offsets"):
        io.from_ls_tasks(
            [
                task(
                    2,
                    "Obama",
                    {
                        "type": "labels",
                        "from_name": "label",
                        "value": {"start": "0", "end": 5, "labels": ["PER"]},
                    },
                )
            ]
        )


def test_overlapping_spans_in_one_annotation() -> None:
    t = task(9, "New York City", region(0, 8, "LOC"), region(4, 13, "LOC"))
    with pytest.raises(
        ValueError, match=r"task 9: gold spans \[0, 8\) 'LOC' and \[4, 13\) 'LOC' overlap"
    ):
        io.from_ls_tasks([t])
    with pytest.warns(UserWarning, match="dropped"):
        ds = io.from_ls_tasks([t], strict=False)
    assert [(s.start, s.end) for s in ds.tasks[0].gold or ()] == [(0, 8)]
    assert ds.problems.repairs == 1


def test_i_tag_without_b_strict_vs_lenient(tmp_path: Path) -> None:
    p = tmp_path / "orphan.conll"
    p.write_text("Peter\tB-PER\nlives\tO\nin\tO\nNew\tI-LOC\nYork\tI-LOC\n\n", encoding="utf-8")
    with pytest.raises(
        ValueError,
        match=r"orphan.conll: sentence 1 \(line 4\): invalid IOB2 tag 'I-LOC' at token 3",
    ):
        io.load(p, scheme="iob2")
    with pytest.warns(UserWarning, match="repaired"):
        ds = io.load(p, scheme="iob2", strict=False)
    assert ds.problems.counts() == {"tag_repair": 1}
    assert [(s.start, s.end, s.label) for s in ds.tasks[0].gold or ()] == [
        (0, 5, "PER"),
        (15, 23, "LOC"),
    ]


def test_unknown_label_not_in_config() -> None:
    cfg = label_config_xml(["PER", "LOC"])
    t = task(11, "Apple hired Tim", region(0, 5, "ORG"), region(12, 15, "PER"))
    with pytest.raises(
        ValueError,
        match=r"task 11: gold span \[0, 5\) has label 'ORG' which is not in the label config",
    ):
        io.from_ls_tasks([t], label_config=cfg)
    with pytest.warns(UserWarning):
        ds = io.from_ls_tasks([t], label_config=cfg, strict=False)
    assert [s.label for s in ds.tasks[0].gold or ()] == ["PER"] and ds.problems.repairs == 1


def test_region_with_several_or_no_labels() -> None:
    multi = {
        "type": "labels",
        "from_name": "label",
        "value": {"start": 0, "end": 5, "labels": ["PER", "ORG"]},
    }
    with pytest.raises(ValueError, match=r"task 12: gold region \[0, 5\) has several labels"):
        io.from_ls_tasks([task(12, "Apple", multi)])
    none = {"type": "labels", "from_name": "label", "value": {"start": 0, "end": 5, "labels": []}}
    with pytest.raises(ValueError, match=r"task 12: gold region \[0, 5\) has no label"):
        io.from_ls_tasks([task(12, "Apple", none)])


def test_non_utf8_bytes(tmp_path: Path) -> None:
    p = tmp_path / "latin1.conll"
    p.write_bytes(b"Peter\tB-PER\n" + "M\xfcller\tI-PER\n\n".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin1.conll: not valid UTF-8 at byte 13 \(line 2\)"):
        io.load(p)


def test_task_shape_errors() -> None:
    with pytest.raises(TypeError, match=r"task #1: expected a JSON object, got str"):
        io.from_ls_tasks([{"data": {"text": "a"}}, "oops"])  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"task 6: data has no 'text' field"):
        io.from_ls_tasks([{"id": 6, "data": {"body": "a"}}])
    with pytest.raises(TypeError, match=r"task 6: data\['text'\] must be a string, got int"):
        io.from_ls_tasks([{"id": 6, "data": {"text": 42}}])
    with pytest.raises(TypeError, match="list of task dicts"):
        io.from_ls_tasks({"data": {"text": "a"}})  # type: ignore[arg-type]


def test_not_json_and_not_conll(tmp_path: Path) -> None:
    p = tmp_path / "broken.json"
    p.write_text('[{"data": {"text": "a"}', encoding="utf-8")
    with pytest.raises(ValueError, match="broken.json: not valid JSON"):
        io.load(p)


@pytest.mark.timeout(120)  # a hang guard, not a timing assertion: quadratic code would hit it
def test_200k_character_task() -> None:
    unit = "Obama met Biden in New York . "
    reps = 200_000 // len(unit) + 1
    text = (unit * reps)[:200_000]
    regions = []
    for k in range(reps):
        base = k * len(unit)
        if base + 27 <= len(text):
            regions += [
                region(base, base + 5, "PER"),
                region(base + 10, base + 15, "PER"),
                region(base + 19, base + 27, "LOC"),
            ]
    ds = io.from_ls_tasks([task(1, text, *regions)])
    t = ds.tasks[0]
    assert len(t.text) == 200_000 and len(t.gold or ()) == len(regions)
    assert len(ds.problems) == 0
    rep = io.write_conll(ds)
    assert rep.n_spans == len(regions)
    back = io.parse_conll(rep.text or "")
    assert len(back.tasks) == 1 and len(back.tasks[0].gold or ()) == len(regions)
    blob = json.dumps(io.to_ls_tasks(ds))
    assert len(io.from_ls_tasks(json.loads(blob)).tasks[0].gold or ()) == len(regions)
