"""The columnar Label Studio reader equals the reference per-task reader on messy tasks."""

from __future__ import annotations

import random
import warnings
from typing import Any

import numpy as np
import pytest

from analysis.corpus import Corpus, task_name
from analysis.dataset import Dataset, Problems, choose_annotation, choose_prediction
from analysis.exceptions import DataError
from analysis.formats import ls_json
from analysis.formats.label_config import as_label_config
from analysis.formats.ls_json import from_ls_tasks

WORDS = ["EU", "rejects", "German", "call", ",", "Peter", "Blackburn", ".", "New", "York"]


def _region(rng: random.Random, text: str, rid: int) -> Any:
    n = len(text)
    s = rng.randint(-1, max(n - 1, 0))
    e = s + rng.randint(0, 8)
    value: dict[str, Any] = {"start": s, "end": e, "labels": [rng.choice(["PER", "ORG", "LOC"])]}
    quirk = rng.random()
    if quirk < 0.05:
        value["labels"] = ["PER", "ORG"]
    elif quirk < 0.08:
        value["start"] = float(s)
    elif quirk < 0.1:
        value["labels"] = []
    if rng.random() < 0.7 and 0 <= s < e <= n:
        value["text"] = text[s:e] if rng.random() < 0.97 else "zz"
    reg: dict[str, Any] = {"id": f"r{rid}", "from_name": "label", "to_name": "text",
                           "type": "labels", "value": value}
    q = rng.random()
    if q < 0.05:
        del reg["type"]
    elif q < 0.08:
        reg["type"] = "choices"
    return reg


def _task(rng: random.Random, i: int) -> dict[str, Any]:
    toks = [rng.choice(WORDS) for _ in range(rng.randint(1, 8))]
    text = " ".join(toks)
    data: dict[str, Any] = {"text": text}
    q = rng.random()
    if q < 0.5:
        data["tokens"] = toks
    elif q < 0.55:
        data["tokens"] = toks[:-1] + ["x"]  # does not match the text
    elif q < 0.6:
        data["text"] = text + "  (see  p.3)"  # no tokens: the tokenizer
    if rng.random() < 0.2:
        data["split"] = rng.choice(["train", "dev", None])
    t: dict[str, Any] = {"id": i + 1, "data": data, "meta": {"split": "test"}}
    anns = []
    for a in range(rng.randint(0, 2)):
        anns.append({"id": 10 * i + a, "result": [_region(rng, data["text"], r)
                                                 for r in range(rng.randint(0, 4))],
                     "was_cancelled": rng.random() < 0.1, "completed_by": {"id": a + 1,
                                                                           "email": f"a{a}@x"}})
    t["annotations"] = anns
    if rng.random() < 0.5:
        t["predictions"] = [{"result": [_region(rng, data["text"], r) for r in range(3)],
                             "score": rng.random(), "model_version": "m1"}]
    return t


CONFIG = """<View><Text name="text" value="$text"/>
<Labels name="label" toName="text"><Label value="PER"/><Label value="LOC"/></Labels></View>"""


def _reference(tasks: list[dict[str, Any]], strict: bool, cfg: Any = None
               ) -> tuple[Corpus, Problems, dict[int, str]]:
    """The per-task reader over every task: the semantics before the columnar pass."""
    allowed = None if cfg is None else set(cfg.labels)
    ctx = ls_json._Ctx("label", "text", cfg, allowed, strict, Problems())
    out, rejected = [], {}
    for idx, it in enumerate(tasks):
        where = task_name(it.get("id"), idx)
        try:
            out.append(ls_json._task(len(out), where, it, choose_annotation(it["annotations"]),
                                     choose_prediction(it.get("predictions")), ctx))
        except (DataError, TypeError) as exc:
            rejected[idx] = str(exc) if str(exc).startswith(where) else f"{where}: {exc}"
    labels = cfg.labels if cfg is not None else tuple(sorted(
        {s.label for t in out for sp in (t.gold, t.pred) if sp for s in sp}))
    ds = Dataset(out, labels, "label", "text", "text", None, ctx.problems)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.report_alignment(warn=False)
    return ds.corpus, ds.problems, rejected


def _same_corpus(a: Corpus, b: Corpus) -> None:
    assert a.labels == b.labels and list(a.texts) == list(b.texts)
    for f in ("task_ids", "has_id", "annotated", "token_offsets", "token_start", "token_end",
              "tokens", "split", "annotator", "load_problem_tasks"):
        assert np.array_equal(getattr(a, f), getattr(b, f)), f
    for which in ("gold", "pred"):
        x, y = getattr(a, which), getattr(b, which)
        assert (x is None) == (y is None), which
        if x is not None:
            for f in ("task", "start", "end", "label"):
                assert np.array_equal(getattr(x.chars, f), getattr(y.chars, f)), (which, f)
            assert np.array_equal(x.t0, y.t0) and np.array_equal(x.t1, y.t1)
    if a.pred_score is not None:
        assert np.array_equal(a.pred_score, b.pred_score, equal_nan=True)
    assert [i.message for i in a.issues] == [i.message for i in b.issues]


@pytest.mark.parametrize("seed,with_config", [(s, s % 2 == 1) for s in range(6)])
def test_columnar_reader_equals_the_per_task_reader(seed: int, with_config: bool) -> None:
    rng = random.Random(seed)
    tasks = [_task(rng, i) for i in range(300)]
    cfg = as_label_config(CONFIG) if with_config else None  # ORG spans are refused with it
    ref, ref_problems, ref_rejected = _reference(tasks, strict=False, cfg=cfg)
    rejected: dict[int, str] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_ls_tasks(tasks, strict=False, rejected=rejected, label_config=cfg)
    assert rejected == ref_rejected and rejected  # the value.text mismatches are refused
    _same_corpus(ds.corpus, ref)
    assert ds.problems.checked == ref_problems.checked
    gold_problems = [p for p in ds.problems.items if p.which != "agreement"]
    assert [p.message for p in gold_problems] == [p.message for p in ref_problems.items]
    # a bad region of a second opinion (float offsets included) costs that region only, is
    # reported once, and never repeats what the gold reader said about the chosen annotation
    agreement_problems = [p for p in ds.problems.items if p.which == "agreement"]
    assert agreement_problems and all("left out of agreement" in p.message
                                      for p in agreement_problems)
    assert any("non-integer offsets" in p.message for p in agreement_problems)
    assert not {p.message.split(": ", 1)[1] for p in gold_problems} & {
        p.message.split(": ", 1)[1].removesuffix(" (left out of agreement)")
        for p in agreement_problems}
    multi = {s.task_id for s in ds.annotation_sets}
    assert {ds.corpus.task_ids[p.task] for p in agreement_problems} <= multi
    # the lazily made tasks are the reference reader's
    t = ds.tasks[len(ds.tasks) // 2]
    assert t.text == ds.corpus.texts[t.index]


def test_strict_reader_raises_the_first_error_in_task_order() -> None:
    rng = random.Random(7)
    tasks = [_task(rng, i) for i in range(200)]
    _, _, ref_rejected = _reference(tasks, strict=True)
    first = min(ref_rejected)
    with pytest.raises((DataError, TypeError)) as exc:
        from_ls_tasks(tasks, strict=True)
    assert str(exc.value).startswith(task_name(tasks[first]["id"], first))


@pytest.mark.parametrize("seed", range(3))
def test_file_read_task_by_task_equals_the_parsed_list(seed: int, tmp_path: Any) -> None:
    import json

    from analysis.formats import load

    rng = random.Random(100 + seed)
    tasks = [_task(rng, i) for i in range(200)]
    for t in tasks:  # mismatches are errors on both paths: keep the file readable
        if " ".join(t["data"].get("tokens", [])) != t["data"]["text"]:
            t["data"].pop("tokens", None)
        for a in t["annotations"] + t.get("predictions", []):
            for r in a["result"]:
                r["value"].pop("text", None)
                r["value"]["start"] = int(r["value"]["start"])
    path = tmp_path / "export.json"
    path.write_text(json.dumps(tasks, indent=1, ensure_ascii=False), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        streamed = load(path, strict=False)
        parsed = from_ls_tasks(json.loads(path.read_text(encoding="utf-8")), strict=False)
    _same_corpus(streamed.corpus, parsed.corpus)
    assert [p.message for p in streamed.problems.items] == \
        [p.message for p in parsed.problems.items]
    for k in (0, len(parsed.tasks) // 2, len(parsed.tasks) - 1):
        a, b = streamed.tasks[k], parsed.tasks[k]
        assert (a.id, a.text, a.tokens.tokens, a.gold, a.pred, a.data, a.meta, a.annotator,
                a.split, a.annotation_id) == (b.id, b.text, b.tokens.tokens, b.gold, b.pred,
                                              b.data, b.meta, b.annotator, b.split,
                                              b.annotation_id)
        assert np.array_equal(a.tokens.starts, b.tokens.starts)


def test_file_read_task_by_task_reports_bad_json_with_its_position(tmp_path: Any) -> None:
    from analysis.formats import load

    path = tmp_path / "bad.json"
    path.write_text('[{"data": {"text": "a"}}, {"data": {"text": "b"}} {"x": 1}]',
                    encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json: not valid JSON: expected ',' or ']'"):
        load(path)
