"""The HTML console: self-contained, and driven in a real headless Chromium.

The browser tests click Plotly's bars, a confusion cell, an alert, the DEP slider and a lasso
through Selenium with Debian's ``chromium`` + ``chromium-driver`` (``tests/browser.py``); they
skip cleanly when those are absent (and fail in CI, where NERQ_REQUIRE_BROWSER is set).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from browser import chromium, console_errors, need_browser, open_report

from analysis.dataset import Dataset, Task
from analysis.review.analyze import analyze_dataset
from analysis.review.report import (
    flagged_rows,
    render_report,
    span_columns,
    span_map,
    write_csv,
    write_report,
)
from analysis.spans import Span, tokenize
from analysis.tags import tag_names


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


def _build(ds: Dataset, probs: list[np.ndarray], tags: tuple[str, ...]) -> tuple[Any, dict]:
    """The analysis and the keyword arguments of ``render_report`` that ``build_report`` passes
    (span columns from the analysis's alignment, a PCA span map, samples, texts)."""
    from ls_backend.commands.report import report_samples

    res = analyze_dataset(ds, probs=probs, tags=tags)
    c = res.corpus
    dep = res.metrics.dep
    sd = dep.span_dep if dep.span_dep is not None else dep.task_dep[c.gold.chars.task]
    spans = span_columns(c, res.comparison, span_dep=sd, threshold=dep.threshold)
    vecs = np.random.default_rng(0).normal(size=(len(c.gold.chars), 8))
    smap = span_map(vecs, dep=sd, method="pca")
    d = res.to_dict()
    d["samples"] = report_samples(c, d["metrics"], seed=0)
    for t in d["tasks"]:
        i = t["index"]
        t.update(text=c.texts[i], annotator=c.annotator[i], split=c.split[i])
    return res, {"result": d, "spans": spans, "spanmap": smap}


@pytest.fixture(scope="module")
def built() -> tuple[Any, dict]:
    return _build(*_dataset())


def _payload(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="nerq-data">(.*?)</script>', html, re.DOTALL)
    assert m, "no data script"
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_report_is_self_contained(built: tuple[Any, dict]) -> None:
    _, kw = built
    html = render_report(kw["result"], spans=kw["spans"], spanmap=kw["spanmap"],
                         ls_url="http://ls.example:8080", project_id=7)
    # nothing loaded from anywhere: no src/href to another host, no @import, no url()
    page = html.split('<script type="application/json"')[0]
    assert not re.search(r"""(src|href)=["']?(https?:)?//(?!ls\.example)""", page)
    assert "<script src=" not in html and "@import" not in html
    assert "Plotly" in html and "<svg" not in page  # plotly draws; no hand-drawn SVG left
    # links into Label Studio from the alerts
    assert 'href="http://ls.example:8080/projects/7/data?task=103"' in html
    for sid in ("f1", "count", "errors", "pairs", "confusion", "dep", "words", "loss", "map"):
        assert f'id="ch-{sid}"' in html, sid
    data = _payload(html)
    assert data["tasks"]["key"] == [100 + i for i in range(12)]
    assert len(data["map"]["x"]) == len(data["spans"]["gold"]["t"])  # every span on the map


def test_flagged_rows_and_csv(built: tuple[Any, dict], tmp_path: Path) -> None:
    d = built[1]["result"]
    rows = flagged_rows(d)
    flagged = {t for a in d["alerts"] for t in a["task_ids"]}
    assert {r["id"] for r in rows} == flagged and 103 in flagged
    deps = [r["dep"] for r in rows if r["dep"] is not None]
    assert deps == sorted(deps, reverse=True)
    p = write_csv(d, tmp_path / "f.csv", ls_url="http://h", project_id=2)
    lines = p.read_text().splitlines()
    assert len(lines) == len(rows) + 1 and "http://h/projects/2/data?task=" in lines[1]


def test_span_map_keeps_the_high_dep_spans_and_validates() -> None:
    rng = np.random.default_rng(1)
    vecs = rng.normal(size=(50, 5))
    dep = rng.uniform(size=50)
    m = span_map(vecs, dep=dep, method="pca", max_points=20)
    assert len(m["x"]) == len(m["y"]) == len(m["g"]) == 20 and m["method"] == "PCA"
    # the 10 highest-DEP spans are always drawn, whatever the sample
    assert set(np.argsort(-dep)[:10].tolist()) <= set(m["g"])
    assert m["g"] == sorted(m["g"])
    xs = np.asarray(m["x"])
    assert xs.min() >= m["xr"][0] and xs.max() <= m["xr"][1]  # outliers sit on the border
    with pytest.raises(ValueError, match="one value per span"):
        span_map(vecs, dep=dep[:3])
    with pytest.raises(ValueError, match="map method"):
        span_map(vecs, method="tsne")  # type: ignore[arg-type]


def test_span_map_umap_separates_two_clusters() -> None:
    """UMAP keeps neighbourhoods: two well-separated groups stay apart in 2-D."""
    rng = np.random.default_rng(0)
    a = rng.normal(0, 1, size=(60, 16))
    b = rng.normal(8, 1, size=(60, 16))
    m = span_map(np.vstack([a, b]), method="umap")
    xy = np.c_[m["x"], m["y"]]
    assert m["method"] == "UMAP"
    ca, cb = xy[:60].mean(0), xy[60:].mean(0)
    spread = max(xy[:60].std(0).max(), xy[60:].std(0).max())
    assert np.linalg.norm(ca - cb) > 3 * spread


def test_span_columns_come_from_the_analysis_alignment(built: tuple[Any, dict]) -> None:
    """Task 103 (row 3) is annotated "Ines Barrow" LOC where the model says PER: its gold span
    [0, 11) is a wrong type paired with the model's [0, 11) PER; "Northwind Bank" is correct."""
    from analysis.errors import KINDS

    res, kw = built
    sp = kw["spans"]
    g, p = sp["gold"], sp["pred"]
    L = sp["labels"]
    rows = [i for i, t in enumerate(g["t"]) if t == 3]
    assert [(g["s"][i], g["e"][i], L[g["l"][i]], KINDS[g["k"][i]]) for i in rows] == [
        (0, 11, "LOC", "wrong_tag"), (19, 33, "ORG", "correct")]
    prow = [j for j, t in enumerate(p["t"]) if t == 3]
    assert [(p["s"][j], p["e"][j], L[p["l"][j]], KINDS[p["k"][j]]) for j in prow] == [
        (0, 11, "PER", "wrong_tag"), (19, 33, "ORG", "correct")]
    pairs = list(zip(sp["pairs"]["g"], sp["pairs"]["p"]))
    assert (rows[0], prow[0]) in pairs
    # one row per validated gold span, the DEP of each
    assert len(g["t"]) == len(res.corpus.gold.chars)
    assert g["dep"][rows[0]] == pytest.approx(res.metrics.dep.span_dep[rows[0]], abs=1e-4)


def test_capped_console_keeps_flagged_and_reindexes(built: tuple[Any, dict]) -> None:
    """Above ``max_tasks`` the console keeps the flagged tasks first and re-indexes the span
    columns, so every span still points at its own task's text."""
    from analysis.review.report.payload import console_payload

    _, kw = built
    data = console_payload(kw["result"], spans=kw["spans"], spanmap=kw["spanmap"], max_tasks=5)
    keys = data["tasks"]["key"]
    assert data["capped"] and data["n_all"] == 12 and len(keys) == 5
    assert {103, 107, 111} <= set(keys)
    texts = data["tasks"]["text"]
    g = data["spans"]["gold"]
    full = {t["id"]: t["text"] for t in kw["result"]["tasks"]}
    for t, s, e in zip(g["t"], g["s"], g["e"]):
        assert texts[t][s:e] == full[keys[t]][s:e] and texts[t][s:e].strip()
    p, pairs = data["spans"]["pred"], data["spans"]["pairs"]
    assert pairs["g"] and all(g["t"][a] == p["t"][b] for a, b in zip(pairs["g"], pairs["p"]))
    assert sorted(data["map"]["g"]) == list(range(len(g["t"])))  # the kept spans, re-indexed


def test_empty_analysis_renders() -> None:
    html = render_report({"metrics": {}, "alerts": [], "tasks": []})
    assert "no alert fired" in html and "</html>" in html


# --------------------------------------------------------------------------- in the browser

def _ids_with_label(sp: dict, label: str) -> set[int]:
    L = sp["labels"]
    return {t for t, lab in zip(sp["gold"]["t"] + sp["pred"]["t"],
                                sp["gold"]["l"] + sp["pred"]["l"]) if L[lab] == label}


@pytest.fixture(scope="module")
def console(built: tuple[Any, dict], tmp_path_factory: pytest.TempPathFactory) -> Any:
    need_browser()
    _, kw = built
    page = write_report(kw["result"], tmp_path_factory.mktemp("console") / "report.html",
                        spans=kw["spans"], spanmap=kw["spanmap"], ls_url="http://127.0.0.1:1",
                        project_id=1)
    with chromium() as driver:
        open_report(driver, page)
        yield driver


def _shown(driver: Any) -> list[int]:
    return [int(k) for k in driver.execute_script("return window.nerq.shownKeys()")]


def _click(driver: Any, element: Any) -> None:
    """A real pointer click (move, press, release) at the element's centre: Plotly hit-tests
    the pointer position on its drag layer, above the bars."""
    from selenium.webdriver import ActionChains

    v = driver.execute_script("return window.nerq.version")
    driver.execute_script("arguments[0].scrollIntoView({block: 'center'})", element)
    ActionChains(driver).move_to_element(element).pause(0.2).click().perform()
    _wait_version(driver, v)


def _wait_version(driver: Any, v: int) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, 10).until(lambda d: d.execute_script("return window.nerq.version") > v)


def _reset(driver: Any) -> None:
    driver.find_element("id", "reset").click()
    assert len(_shown(driver)) == 12


def test_console_draws_the_analysis_figures(console: Any, built: tuple[Any, dict]) -> None:
    """Unfiltered, the page's own aggregation of the span columns gives the analysis's P/R/F1
    per class, its confusion counts and its per-task error counts; no console error."""
    _res, kw = built
    d = kw["result"]
    agg = console.execute_script("return window.nerq.aggregate()")
    for row in agg["prf"]:
        ref = d["metrics"]["prf"][row["label"]]
        assert row["f1"] == pytest.approx(ref["f1-score"], abs=1e-6)
        assert row["precision"] == pytest.approx(ref["precision"], abs=1e-6)
        assert row["recall"] == pytest.approx(ref["recall"], abs=1e-6)
        assert row["support"] == ref["support"]
    conf = d["metrics"]["confusion"]
    labels = list(conf["labels"])
    L = kw["spans"]["labels"] + ["none"]
    raw = conf["raw"]
    for i, gl in enumerate(labels):
        for j, pl in enumerate(labels):
            assert agg["conf"][L.index(gl)][L.index(pl)] == raw[i][j], (gl, pl)
    # every chart drew (plotly's bars / heat map / WebGL points), the table lists every task
    for sid in ("f1", "count", "errors", "pairs", "dep", "words", "loss"):
        assert console.find_elements("css selector", f"#ch-{sid} .point path"), sid
    assert console.find_elements("css selector", "#ch-confusion .hm, #ch-confusion image")
    assert _shown(console) == sorted((t["id"] for t in d["tasks"]),
                                     key=lambda k: (-(d["tasks"][k - 100]["dep"] or 0), k))
    assert console_errors(console) == []


def test_clicking_a_class_bar_filters_to_its_tasks(console: Any, built: tuple[Any, dict]) -> None:
    _, kw = built
    sp = kw["spans"]
    bars = console.find_elements("css selector", "#ch-f1 .point path")
    labels = list(reversed(sp["labels"]))  # horizontal bars, first class on top
    _click(console, bars[labels.index("ORG")])
    want = {100 + r for r in _ids_with_label(sp, "ORG")}
    assert set(_shown(console)) == want and len(want) == 6
    assert "class ORG" in console.find_element("id", "chips").text
    # the other charts follow: spans of ORG only in the class counts of the filtered tasks
    agg = console.execute_script("return window.nerq.last")
    assert agg["spans"][sp["labels"].index("LOC")] < 9
    _reset(console)


def test_clicking_a_confusion_cell_filters_to_that_confusion(console: Any) -> None:
    """The cell annotated LOC → predicted PER holds the three copies of the planted task."""
    from selenium.webdriver import ActionChains

    el = console.find_element("id", "ch-confusion")
    console.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    drag = el.find_element("css selector", ".nsewdrag")
    box = drag.rect
    L = console.execute_script(
        "return JSON.parse(document.getElementById('nerq-data').textContent).spans.labels")
    cats = L + ["none"]
    n = len(cats)
    gi, pj = cats.index("LOC"), cats.index("PER")
    x = box["width"] * (pj + 0.5) / n - box["width"] / 2
    y = box["height"] * (gi + 0.5) / n - box["height"] / 2
    v = console.execute_script("return window.nerq.version")
    ActionChains(console).move_to_element_with_offset(drag, int(x), int(y)).pause(0.2) \
        .click().perform()
    _wait_version(console, v)
    assert sorted(_shown(console)) == [103, 107, 111]
    assert "LOC → PER" in console.find_element("id", "chips").text
    _reset(console)


def test_clicking_an_alert_filters_to_its_tasks(console: Any, built: tuple[Any, dict]) -> None:
    d = built[1]["result"]
    i = next(k for k, a in enumerate(d["alerts"]) if a["name"] == "likely mislabeled")
    el = console.find_element("css selector", f'[data-alert="{i}"] button.filter-alert')
    v = console.execute_script("return window.nerq.version")
    console.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    el.click()
    _wait_version(console, v)
    assert sorted(_shown(console)) == sorted(d["alerts"][i]["task_ids"]) == [103, 107, 111]
    # the filtered set exports as CSV, one line per shown task
    csv_text = console.execute_script("return window.nerq.csv()")
    assert [int(line.split(",")[0]) for line in csv_text.splitlines()[1:]] == _shown(console)
    assert "--view-tasks" in console.find_element("id", "push-cmd").text
    _reset(console)


def test_the_dep_slider_narrows_the_table(console: Any, built: tuple[Any, dict]) -> None:
    from selenium.webdriver.common.keys import Keys

    d = built[1]["result"]
    slider = console.find_element("id", "dep-min")
    console.execute_script("arguments[0].scrollIntoView({block: 'center'})", slider)
    v = console.execute_script("return window.nerq.version")
    slider.send_keys(Keys.ARROW_RIGHT)  # 0.00 -> 0.01: a real input event
    _wait_version(console, v)
    want = {t["id"] for t in d["tasks"] if t["dep"] is not None and t["dep"] >= 0.01}
    assert set(_shown(console)) == want and 0 < len(want) < 12
    assert "DEP 0.01–1.00" in console.find_element("id", "chips").text
    _reset(console)


def test_highlighted_spans_match_the_offsets_of_a_known_task(console: Any) -> None:
    """Task 103: the annotation line marks [0, 11) LOC (wrong type) and [19, 33) ORG, the model
    line [0, 11) PER and [19, 33) ORG; the fix reads LOC → PER."""
    row = console.find_element("css selector", '#tasks-body tr[data-key="103"]')

    def marks(line: str) -> list[tuple[str, str, str, str]]:
        return [(m.get_attribute("class").split()[-1], m.get_attribute("data-start"),
                 m.get_attribute("data-end"), m.get_attribute("data-label"))
                for m in row.find_elements("css selector", f".line.{line} mark")]

    assert marks("ann") == [("k-wrong_tag", "0", "11", "LOC"), ("k-correct", "19", "33", "ORG")]
    assert marks("mod") == [("k-wrong_tag", "0", "11", "PER"), ("k-correct", "19", "33", "ORG")]
    text = "Ines Barrow joined Northwind Bank ."
    ann = row.find_element("css selector", ".line.ann")
    first = ann.find_elements("css selector", "mark")[0]
    assert first.text.startswith("Ines Barrow")
    assert text.split()[2] in ann.text
    assert "wrong type: “Ines Barrow” LOC → PER" in row.text
    assert "extra entity" not in row.find_element("css selector", "td:nth-child(4)").text
    assert row.find_element("css selector", "a").get_attribute("href") == \
        "http://127.0.0.1:1/projects/1/data?task=103"


def test_inspect_by_id_and_the_samples(console: Any, built: tuple[Any, dict]) -> None:
    d = built[1]["result"]
    box = console.find_element("id", "inspect-id")
    console.execute_script("arguments[0].scrollIntoView({block: 'center'})", box)
    box.clear()
    box.send_keys("107")
    console.find_element("id", "inspect-go").click()
    out = console.find_element("id", "inspect-out")
    cells = [r.text for r in out.find_elements("css selector", ".inspect-spans tbody tr")]
    assert cells[0].split()[:3] == ["annotation", "0", "11"] and "wrong type" in cells[0]
    assert "--model" in out.text  # no subword view without a model, and it says why
    body = console.find_element("id", "samples-loss-body")
    shown = [int(r.get_attribute("data-key")) for r in body.find_elements("css selector", "tr")]
    assert shown == [x["id"] for x in d["metrics"]["samples_by_loss"]]
    assert console_errors(console) == []


def test_annotators_table_filters(console: Any, built: tuple[Any, dict]) -> None:
    d = built[1]["result"]
    rows = console.find_elements("css selector", "#annotators-body tr")
    names = [r.find_element("css selector", "td").text for r in rows]
    assert sorted(names) == ["a@x.org", "b@x.org"]
    btn = rows[names.index("a@x.org")].find_element("css selector", "button")
    v = console.execute_script("return window.nerq.version")
    console.execute_script("arguments[0].scrollIntoView({block: 'center'})", btn)
    btn.click()
    _wait_version(console, v)
    assert set(_shown(console)) == {t["id"] for t in d["tasks"] if t["index"] % 2}
    _reset(console)


def test_lasso_on_the_map_filters_to_the_selected_spans(console: Any) -> None:
    """A lasso drawn around the whole map selects every drawn span: the table keeps the tasks
    that have a span on the map."""
    from selenium.webdriver import ActionChains

    el = console.find_element("id", "ch-map")
    console.execute_script("arguments[0].scrollIntoView({block: 'center'})", el)
    drag = el.find_element("css selector", ".nsewdrag")
    w, h = drag.rect["width"], drag.rect["height"]
    v = console.execute_script("return window.nerq.version")
    a = ActionChains(console).move_to_element_with_offset(drag, int(-w / 2 + 3), int(-h / 2 + 3))
    a.click_and_hold()
    for dx, dy in ((w - 6, 0), (0, h - 6), (-(w - 6), 0), (0, -(h - 6) + 2)):
        for _ in range(4):
            a.move_by_offset(int(dx / 4), int(dy / 4))
    a.release().perform()
    _wait_version(console, v)
    assert "map selection" in console.find_element("id", "chips").text
    assert len(_shown(console)) == 12  # every task has a gold span drawn on the map
    _reset(console)


def test_agreement_section_draws_in_headless_chromium(tmp_path: Path) -> None:
    need_browser()
    from test_agreement import CFG, three_annotators

    from analysis.formats import from_ls_tasks

    ds = from_ls_tasks(three_annotators(), label_config=CFG)
    d = analyze_dataset(ds).to_dict()
    ag = d["metrics"]["agreement"]
    page = write_report(d, tmp_path / "report.html")
    with chromium() as driver:
        open_report(driver, page)
        sec = driver.find_element("id", "agreement")
        rows = [r.find_element("css selector", "td").text for r in
                sec.find_elements("css selector", "table.agreement-annotators tbody tr")]
        assert rows == [a["annotator"] for a in ag["per_annotator"]] == [
            "u1@example.com", "u2@example.com", "u3@example.com"]
        assert len(sec.find_elements("css selector", "#ch-agreement .point path")) == 3
        assert f"{ag['alpha']:.3f}" in sec.text and "consensus ties" in sec.text
        assert console_errors(driver) == []


def test_long_texts_are_cut_visibly_and_kinds_read_from_the_annotation(tmp_path: Path) -> None:
    """A task whose annotation lacks an entity reads "entity missing" (the library's ghost),
    one with an extra entity "extra entity" (missed); long texts end in an ellipsis."""
    need_browser()
    long_text = "Rome " + "and more words " * 60 + "END"
    d = {"metrics": {"labels": ["LOC", "PER"]}, "alerts": [
        {"name": "likely mislabeled", "rule": "r", "numbers": {}, "task_ids": [1, 2]}],
         "tasks": [{"index": 0, "id": 1, "dep": 0.9, "text": "Obama spoke ."},
                   {"index": 1, "id": 2, "dep": 0.8, "text": long_text}]}
    spans = {"labels": ["LOC", "PER"],
             "gold": {"t": [1], "s": [0], "e": [4], "l": [0], "k": [3], "dep": [0.8]},
             "pred": {"t": [0], "s": [0], "e": [5], "l": [1], "k": [4]},
             "pairs": {"g": [], "p": []}, "words": {"vocab": [], "rows": [], "ids": []}}
    page = write_report(d, tmp_path / "r.html", spans=spans)
    with chromium() as driver:
        open_report(driver, page)
        rows = {r.get_attribute("data-key"): r for r in
                driver.find_elements("css selector", "#tasks-body tr")}
        assert "entity missing 1" in rows["1"].text and "entity missing: “Obama”" in rows["1"].text
        assert "extra entity 1" in rows["2"].text
        ann = rows["2"].find_element("css selector", ".line.ann")
        assert ann.text.endswith("…") and "END" not in ann.text
        assert "Obama spoke ." in rows["1"].text
        assert console_errors(driver) == []


def test_alerts_read_as_sentences() -> None:
    d = {"metrics": {"n_tasks": 40}, "tasks": [], "alerts": [{
        "name": "annotator error rates", "rule": "annotator error rate above the pooled rate",
        "numbers": {"pooled_rate": 0.12,
                    "annotators": {"kim": {"rate": 0.1, "spans": 200, "z": -0.4},
                                   "sam": {"rate": 0.31, "spans": 150, "z": 3.42}},
                    "flagged_annotators": ["sam"]},
        "task_ids": list(range(20))}]}
    html = render_report(d, ls_url="http://ls:8080", project_id=3)
    alert = html[html.index('<div class="alert"'):html.index('</section>', html.index(
        '<div class="alert"'))]
    assert "<b>annotator error rates</b>: 20 task(s) (50.0 % of 40) — annotator error rate " \
        "above the pooled rate." in alert
    assert "pooled rate: <b>0.120</b>" in alert and "<pre>" not in alert  # no raw JSON
    assert "Annotator(s) flagged: <b>sam</b>" in alert
    assert _payload(html)["annotator_z"] == {"kim": {"z": -0.4, "flagged": False},
                                             "sam": {"z": 3.42, "flagged": True}}
    # the first tasks, linked into Label Studio, and how many more there are
    assert 'href="http://ls:8080/projects/3/data?task=0"' in alert and "and 8 more" in alert


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
    # the sample sections: by loss in the order of metrics.loss.samples_by_loss; a seeded
    # random sample (all 12 tasks here, in task order); drawn in the browser test below
    data = _payload(out.read_text(encoding="utf-8"))
    keys = data["tasks"]["key"]
    by_loss = [x["id"] for x in obj["metrics"]["samples_by_loss"]]
    assert by_loss and [keys[r] for r in data["samples"]["by_loss"]] == by_loss
    assert set(by_loss[:3]) == {obj["tasks"][i]["id"] for i in (3, 7, 11)}  # the planted ones
    assert [keys[r] for r in data["samples"]["random"]] == [t["id"] for t in obj["tasks"]]
    assert 'class="loss-by-token"' in out.read_text(encoding="utf-8")
    # bad input: a clear one-line error, exit 2
    with redirect_stdout(io.StringIO()):
        assert main(["analyze", "--data", str(data), "--probs", str(tmp_path / "nope.npz")]) == 2




def test_push_reads_the_consoles_csv(tmp_path: Path) -> None:
    """``push --view-tasks`` reads the task ids of the console's CSV (quoted texts with commas
    and line breaks) in order, or one id per line; a bad id is named with its row."""
    from ls_backend.commands.push import read_task_ids

    f = tmp_path / "filtered_tasks.csv"
    f.write_text('task_id,dep,text\n7,0.9,"a, b"\n3,0.5,"two\nlines"\n7,0.9,again\n')
    assert read_task_ids(str(f)) == [7, 3]
    f.write_text("12\n\n5\n")
    assert read_task_ids(str(f)) == [12, 5]
    f.write_text("task_id\n4\nx1\n")
    with pytest.raises(ValueError, match="row 3: 'x1' is not a task id"):
        read_task_ids(str(f))
    f.write_text("id,dep\n4,0.1\n")
    with pytest.raises(ValueError, match="no task_id column"):
        read_task_ids(str(f))


def test_gold_only_console_has_no_model_charts(tmp_path: Path) -> None:
    """Without probabilities or stored predictions there is no F1 or confusion to draw: the
    console says so instead of showing zeros, and the annotation-side views still filter."""
    need_browser()
    ds, _, _ = _dataset()
    res = analyze_dataset(ds)
    d = res.to_dict()
    for t in d["tasks"]:
        t["text"] = res.corpus.texts[t["index"]]
    spans = span_columns(res.corpus, None)
    page = write_report(d, tmp_path / "r.html", spans=spans)
    html = page.read_text(encoding="utf-8")
    assert 'id="ch-f1"' not in html and 'id="ch-confusion"' not in html
    assert "no model output" in html
    with chromium() as driver:
        open_report(driver, page)
        bars = driver.find_elements("css selector", "#ch-count .point path")
        labels = list(reversed(spans["labels"]))
        _click(driver, bars[labels.index("ORG")])
        assert set(_shown(driver)) == {100 + r for r in _ids_with_label(spans, "ORG")}
        row = driver.find_element("css selector", "#tasks-body tr")
        assert not row.find_elements("css selector", ".line.mod")  # no model line
        assert console_errors(driver) == []
