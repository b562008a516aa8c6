"""``ner-quality report --model DIR``: the console's model views, from the runtime.

A tiny model trained for one epoch on test_train's sentences; the report holds the subword
view of the flagged and sampled tasks (inspect by id shows it) and the NMF components of one
layer's FFN activations, and both draw in headless Chromium.
"""

from __future__ import annotations

import io
import json
import re
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

from browser import chromium, console_errors, need_browser, open_report
from test_ray_engine import _write_conll, make_dataset
from test_train import FAST

from ls_backend.cli import main
from ls_backend.runtime import train

pytestmark = [pytest.mark.model]


def _payload(html: str) -> dict[str, Any]:
    m = re.search(r'<script type="application/json" id="nerq-data">(.*?)</script>', html, re.DOTALL)
    assert m
    return json.loads(m.group(1).replace("<\\/", "</"))


def test_report_with_a_model_holds_subwords_and_activations(tmp_path: Path) -> None:
    mdir = tmp_path / "m"
    train(make_dataset(), mdir, epochs=1, seed=0, record_dynamics=False, **FAST)
    data = tmp_path / "tiny.conll"
    _write_conll(data)
    out = tmp_path / "r.html"
    with redirect_stdout(io.StringIO()):
        rc = main(["report", "--data", str(data), "--model", str(mdir), "--device", "cpu",
                   "--allow-in-sample", "--map", "pca", "--activations-layer", "2",
                   "--out", str(out)])
    assert rc == 0
    d = _payload(out.read_text(encoding="utf-8"))
    texts = d["tasks"]["text"]
    mv = d["model_view"]
    assert mv, "no subword view stored"
    for row, view in mv.items():
        words = texts[int(row)].split()
        # every word is covered by its subwords, specials belong to no word
        assert sorted({w for w in view["word_ids"] if w is not None}) == list(range(len(words)))
        assert view["word_ids"][0] is None and view["word_ids"][-1] is None
        assert "".join(s.removeprefix("##") for s, w in zip(view["subwords"], view["word_ids"])
                       if w is not None) == "".join(words).lower()
    act = d["activations"]
    assert act["layer"] == 2 and len(act["components"]) >= 1
    assert all(c["top_words"] for c in act["components"])
    for row, weights in act["tasks"].items():
        assert len(weights) == len(act["words"][row]) == len(texts[int(row)].split())
    with redirect_stdout(io.StringIO()):
        assert main(["report", "--data", str(data), "--probs", str(tmp_path / "x.npz"),
                     "--activations-layer", "1", "--out", str(out)]) == 2  # needs --model

    need_browser()
    with chromium() as driver:
        open_report(driver, out)
        key = d["tasks"]["key"][int(next(iter(mv)))]
        driver.find_element("id", "inspect-id").send_keys(str(key))
        driver.find_element("id", "inspect-go").click()
        sub = driver.find_element("css selector", "#inspect-out table.subwords")
        assert "[CLS]" in sub.text and "[SEP]" in sub.text
        comps = driver.find_elements("css selector", "#activations-out table.components tbody tr")
        assert len(comps) == len(act["components"])
        assert driver.find_elements("css selector", "#ch-activations .hm, #ch-activations image")
        assert console_errors(driver) == []
