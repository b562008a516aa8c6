"""The HTML report: self-contained, and it draws in a real headless Chromium.

Chromium is ``/usr/bin/chromium`` (``apt-get install -y chromium``); the browser tests skip
cleanly when it is absent.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.dataset import Dataset, Task
from analysis.review.analyze import analyze_dataset
from analysis.review.report import flagged_rows, render_report, span_map, write_csv, write_report
from analysis.spans import Span, tokenize
from analysis.tags import tag_names

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _dataset() -> tuple[Dataset, list[np.ndarray], tuple[str, ...]]:
    """12 tasks; task 3 is annotated LOC where the model is sure of PER."""
    rows = [
        ("Mara Lindqvist visited Port Avalon .", [(0, 14, "PER"), (23, 34, "LOC")]),
        ("Helix Dynamics hired Tomas Okafor .", [(0, 14, "ORG"), (21, 33, "PER")]),
        ("Rain fell on Kestrel Bay today .", [(13, 24, "LOC")]),
        ("Ines Barrow joined Northwind Bank .", [(0, 11, "LOC"), (19, 33, "ORG")]),
    ] * 3
    labels = ("PER", "LOC", "ORG")
    tags = tag_names(labels)
    tasks, probs = [], []
    for i, (text, spans) in enumerate(rows):
        tt = tokenize(text)
        gold = tuple(Span(s, e, lab) for s, e, lab in spans)
        tasks.append(Task(index=i, id=100 + i, text=text, tokens=tt, gold=gold,
                          split="train" if i < 8 else "test",
                          annotator="a@x.org" if i % 2 else "b@x.org"))
        p = np.full((len(tt), len(tags)), 0.01, dtype=np.float32)
        p[:, 0] = 1.0
        for s, e, lab in spans:
            true = "PER" if (text.startswith("Ines") and s == 0) else lab
            toks = [k for k in range(len(tt)) if tt.starts[k] >= s and tt.ends[k] <= e]
            p[toks, 0] = 0.01
            p[toks[0], tags.index(f"B-{true}")] = 1.0
            for k in toks[1:]:
                p[k, tags.index(f"I-{true}")] = 1.0
        probs.append(p / p.sum(axis=1, keepdims=True))
    return Dataset(tasks=tasks, labels=labels), probs, tags


@pytest.fixture(scope="module")
def result() -> tuple[dict[str, Any], dict[str, Any]]:
    ds, probs, tags = _dataset()
    res = analyze_dataset(ds, probs=probs, tags=tags)
    corpus = res.corpus
    gold = corpus.gold.chars
    labels = [gold.labels[j] for j in gold.label.tolist()]
    vecs = np.random.default_rng(0).normal(size=(len(labels), 8))
    smap = span_map(vecs, labels, dep=res.task_dep[gold.task],
                    task_ids=corpus.ids[gold.task], texts=list(corpus.gold_text))
    return res.to_dict(), smap


def test_report_is_self_contained(result: tuple[dict[str, Any], dict[str, Any]]) -> None:
    d, smap = result
    html = render_report(d, ls_url="http://ls.example:8080", project_id=7, spanmap=smap)
    # no external resource of any kind: scripts, styles, images, fonts all inline
    assert not re.search(r"""(src|href)=["']?(https?:)?//(?!ls\.example)""", html)
    assert "@import" not in html and "url(" not in html
    # links into Label Studio for flagged tasks
    assert 'href="http://ls.example:8080/projects/7/data?task=103"' in html
    for cls in ("f1-by-class", "sample-count", "error-distribution", "top-confusions",
                "confusion", "dep-histogram", "loss-by-label", "span-map-label", "span-map-dep"):
        assert f'class="chart {cls}"' in html, cls


def test_flagged_rows_and_csv(result: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path) -> None:
    d, _ = result
    rows = flagged_rows(d)
    flagged = {t for a in d["alerts"] for t in a["task_ids"]}
    assert {r["id"] for r in rows} == flagged and 103 in flagged
    deps = [r["dep"] for r in rows if r["dep"] is not None]
    assert deps == sorted(deps, reverse=True)
    p = write_csv(d, tmp_path / "f.csv", ls_url="http://h", project_id=2)
    lines = p.read_text().splitlines()
    assert len(lines) == len(rows) + 1 and "http://h/projects/2/data?task=" in lines[1]


def test_span_map_subsamples_and_validates() -> None:
    vecs = np.random.default_rng(1).normal(size=(50, 5))
    m = span_map(vecs, ["A"] * 50, max_points=20)
    assert len(m["x"]) == len(m["y"]) == len(m["label"]) == 20
    with pytest.raises(ValueError, match="one row per label"):
        span_map(vecs, ["A"] * 3)


def test_empty_analysis_renders() -> None:
    html = render_report({"metrics": {}, "alerts": [], "tasks": []})
    assert "no alert fired" in html and "</html>" in html


def _need_browser() -> str:
    if CHROMIUM is None:
        # CI installs Debian's chromium and sets NERQ_REQUIRE_BROWSER: there a missing browser
        # is a failure, never a silent skip
        if os.environ.get("NERQ_REQUIRE_BROWSER"):
            pytest.fail("chromium is required (NERQ_REQUIRE_BROWSER) but not installed")
        pytest.skip("chromium not installed (apt-get install -y chromium)")
    return CHROMIUM


def _dump_dom(page: Path, tmp_path: Path) -> str:
    """The page's DOM after its script ran in headless Chromium (no console error allowed)."""
    proc = subprocess.run(
        [_need_browser(), "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--no-first-run",
         f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr",
         "--v=0", "--virtual-time-budget=3000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    console = [ln for ln in proc.stderr.splitlines() if "CONSOLE" in ln or "Uncaught" in ln]
    assert console == [], console
    # the inline script ran to its end
    assert 'data-report-ready="1"' in proc.stdout
    return proc.stdout


def test_agreement_section_draws_in_headless_chromium(tmp_path: Path) -> None:
    from test_agreement import CFG, three_annotators

    from analysis.formats import from_ls_tasks

    ds = from_ls_tasks(three_annotators(), label_config=CFG)
    d = analyze_dataset(ds).to_dict()
    ag = d["metrics"]["agreement"]
    page = write_report(d, tmp_path / "report.html")
    dom = _dump_dom(page, tmp_path)
    section = re.search(r'<section id="agreement">(.*?)</section>', dom, re.S)
    assert section, "no agreement section"
    body = section.group(1)
    rows = re.findall(r"<tr><td>(u\d@example\.com)</td>", body.split('class="agreement-annotators"')[1]
                      .split("</table>")[0])
    assert rows == [a["annotator"] for a in ag["per_annotator"]] == ["u1@example.com",
                                                                      "u2@example.com",
                                                                      "u3@example.com"]
    assert len(re.findall(r'<rect class="bar', body)) == 3  # F1 vs the others, per annotator
    assert f"{ag['alpha']:.3f}" in body and "consensus ties" in body


def test_report_draws_in_headless_chromium(
    result: tuple[dict[str, Any], dict[str, Any]], tmp_path: Path
) -> None:
    d, smap = result
    page = write_report(d, tmp_path / "report.html", ls_url="http://127.0.0.1:1", project_id=1,
                        spanmap=smap)
    dom = _dump_dom(page, tmp_path)
    # charts drew: bars, heat-map cells, histogram bars, map points
    n_bars = len(re.findall(r'<rect class="bar', dom))
    assert n_bars >= len(d["metrics"]["labels"]) * 2
    assert len(re.findall(r'<rect class="cell"', dom)) == len(d["metrics"]["confusion"]["labels"]) ** 2
    assert len(re.findall(r'<circle class="pt"', dom)) == 2 * len(smap["x"])
    assert re.search(r'<svg class="chart dep-histogram"[^>]*>.*?<rect class="bar"', dom, re.S)


def test_cli_report_and_analyze_json(tmp_path: Path) -> None:
    """``analyze --json`` prints one object with the contract keys; ``report`` writes HTML."""
    import io
    from contextlib import redirect_stdout

    from analysis.formats import save
    from ls_backend.cli import main

    ds, probs, tags = _dataset()
    data = tmp_path / "d.json"
    save(ds, data, format="ls-json")
    # the columnar format stores its tag order: report and analyze read it without --labels
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet

    npz = save_output(tmp_path / "p.npz", ModelOutput.from_arrays(probs, TagSet(tuple(tags))))
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(["analyze", "--data", str(data), "--probs", str(npz), "--json"])
    assert rc == 0
    obj = json.loads(buf.getvalue())
    assert set(obj) == {"metrics", "alerts", "tasks"}
    assert len(obj["tasks"]) == len(ds.tasks)
    assert set(obj["tasks"][0]) == {"index", "id", "dep", "errors"}
    names = {a["name"] for a in obj["alerts"]}
    assert "likely mislabeled" in names
    lm = next(a for a in obj["alerts"] if a["name"] == "likely mislabeled")
    # the three copies of the planted task (rows 3, 7, 11) and nothing else
    assert sorted(lm["task_ids"]) == [obj["tasks"][i]["id"] for i in (3, 7, 11)]
    out = tmp_path / "r.html"
    with redirect_stdout(io.StringIO()):
        rc = main(["report", "--data", str(data), "--probs", str(npz), "--out", str(out),
                   "--csv", str(tmp_path / "f.csv")])
    assert rc == 0 and out.stat().st_size > 1000 and (tmp_path / "f.csv").is_file()
    # the sample sections: by loss in the order of metrics.loss.samples_by_loss, each task
    # drawn with both lines; a seeded random sample (all 12 tasks here, in task order)
    html = out.read_text(encoding="utf-8")

    def section_ids(cls: str) -> list[int]:
        body = html.split(f'<table class="{cls}">')[1].split("</table>")[0]
        assert body.count('<div class="line ann">') == body.count("<tr>") - 1  # minus the head
        return [int(x) for x in re.findall(r"<tr><td>(\d+)</td>", body)]

    by_loss = [x["id"] for x in obj["metrics"]["samples_by_loss"]]
    assert by_loss and section_ids("samples-by-loss") == by_loss
    assert set(by_loss[:3]) == {obj["tasks"][i]["id"] for i in (3, 7, 11)}  # the planted ones
    assert section_ids("random-samples") == [t["id"] for t in obj["tasks"]]
    assert 'class="loss-by-token"' in html
    # bad input: a clear one-line error, exit 2
    with redirect_stdout(io.StringIO()):
        assert main(["analyze", "--data", str(data), "--probs", str(tmp_path / "nope.npz")]) == 2


def test_error_kinds_in_the_annotations_words_and_long_text_cut_visibly() -> None:
    """A task whose annotation lacks an entity shows it under "entity missing" (the library's
    ``ghost``), one with an extra entity under "extra entity" (``missed``); long texts end in
    an ellipsis with the whole text as the tooltip."""
    from analysis.review.report import page

    long_text = "Rome " + "and more words " * 20 + "END"
    d = {"metrics": {}, "alerts": [{"name": "likely mislabeled", "rule": "r",
                                    "numbers": {}, "task_ids": [1, 2]}],
         "tasks": [{"id": 1, "dep": 0.9, "errors": {"ghost": 1}, "text": "Obama spoke ."},
                   {"id": 2, "dep": 0.8, "errors": {"missed": 2}, "text": long_text}]}
    html = render_report(d)
    table = html[html.index('<table id="flagged"'):]
    heads = re.findall(r"<th>([^<]*)</th>", table[:table.index("</thead>")])
    assert heads[3:7] == ["wrong type", "boundary", "extra entity", "entity missing"]
    rows = re.findall(r"<tr>(.*?)</tr>", table[table.index("<tbody>"):])
    cells = [re.findall(r"<td[^>]*>(.*?)</td>", r) for r in rows]
    by_id = {re.sub("<[^>]+>", "", c[0]): c for c in cells}
    assert by_id["1"][heads.index("entity missing")] == "1"
    assert by_id["2"][heads.index("extra entity")] == "2"
    assert 'class="cut">…</span>' in by_id["2"][-1] and "END" not in by_id["2"][-1]
    assert f'title="{long_text}"' in table
    assert "Obama spoke ." == by_id["1"][-1]  # short texts are not cut
    assert page.KIND_WORDS["ghost"] in html and "annotation lacks" in html  # the legend


def test_alerts_read_as_sentences_with_annotators_as_a_table() -> None:
    d = {"metrics": {}, "tasks": [], "alerts": [{
        "name": "annotator error rates", "rule": "annotator error rate above the pooled rate",
        "numbers": {"pooled_rate": 0.12,
                    "annotators": {"kim": {"rate": 0.1, "spans": 200, "z": -0.4},
                                   "sam": {"rate": 0.31, "spans": 150, "z": 3.42}},
                    "flagged_annotators": ["sam"]},
        "task_ids": list(range(20))}]}
    html = render_report(d, ls_url="http://ls:8080", project_id=3)
    alert = html[html.index('<div class="alert">'):html.index('</section>', html.index(
        '<div class="alert">'))]
    assert "pooled rate: <b>0.120</b>" in alert and "<pre>" not in alert  # no raw JSON
    rows = re.findall(r'<tr class="([^"]*)"><td>([^<]*)</td><td>([^<]*)</td><td>([^<]*)</td>'
                      r"<td>([^<]*)</td></tr>", alert)
    assert [(r[0], r[1].split()[0], r[4]) for r in rows] == [("flagged", "sam", "3.420"),
                                                            ("", "kim", "-0.400")]
    # the first tasks, linked into Label Studio, and how many more there are
    assert 'href="http://ls:8080/projects/3/data?task=0"' in alert and "and 8 more" in alert


def test_flagged_tasks_show_gold_and_model_spans_with_the_fix(
        result: tuple[dict[str, Any], dict[str, Any]]) -> None:
    """Task 103 is annotated "Ines Barrow" LOC where the model says PER: the annotation line
    marks [0, 11) LOC as a wrong type, the model line marks [0, 11) PER, the fix reads
    LOC → PER; correct spans are marked correct."""
    from analysis.review.report.spans import task_spans

    ds, probs, tags = _dataset()
    res = analyze_dataset(ds, probs=probs, tags=tags)
    d = res.to_dict()
    spans = task_spans(res.corpus, res.comparison, [t["index"] for t in d["tasks"]])
    for t in d["tasks"]:
        t["text"] = res.corpus.texts[t["index"]]
        t.update(spans[t["index"]])
    assert spans[3]["gold"] == [[0, 11, "LOC", "wrong_tag", [0, 11, "PER"]],
                                [19, 33, "ORG", "correct", None]]
    assert spans[3]["pred"] == [[0, 11, "PER", "wrong_tag"], [19, 33, "ORG", "correct"]]
    html = render_report(d)
    row = re.search(r'<tr><td data-v="103">.*?</tr>', html, re.S)
    assert row is not None
    ann, mod = re.findall(r'<div class="line (?:ann|mod)">(.*?)</div>', row.group(0))
    marks = r'<mark class="sp k-([a-z_]+)" data-start="(\d+)" data-end="(\d+)" data-label="(\w+)"'
    assert re.findall(marks, ann) == [("wrong_tag", "0", "11", "LOC"),
                                      ("correct", "19", "33", "ORG")]
    assert re.findall(marks, mod) == [("wrong_tag", "0", "11", "PER"),
                                      ("correct", "19", "33", "ORG")]
    text = "Ines Barrow joined Northwind Bank ."
    assert re.sub("<sub>.*?</sub>|<[^>]+>", "", ann).split(" ", 1)[1].strip() == text
    assert "wrong type: “Ines Barrow” LOC → PER" in row.group(0)
