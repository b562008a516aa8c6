"""``analysis.labelstudio`` against a real Label Studio server (fixtures in ``conftest.py``).

Each test makes its own project on the shared server.  The few tests at the top need no
server (argument validation, unreachable server).
"""

from __future__ import annotations

import json
import math
import random
import time
from typing import Any

import numpy as np
import pytest
from conftest import free_port, ner_label_config

from analysis.labelstudio import (
    LabelStudioAPI,
    LabelStudioError,
    LabelStudioUnavailable,
    TaskPage,
    data_filter,
)
from analysis.labelstudio import fields as lsfields

# tricky original data: ints vs floats vs bools, unicode, nesting, null, long text, tokens
ORIGINAL_DATA: dict[str, Any] = {
    "text": "Müller met Ørsted in São Paulo 🙂 .",
    "tokens": ["Müller", "met", "Ørsted", "in", "São", "Paulo", "🙂", "."],
    "int": 1,
    "float": 1.0,
    "small": 1e-7,
    "flag": True,
    "none": None,
    "nested": {"b": [1, 2.5, {"c": "x\ty\n"}], "a": "z"},
    "long": "ab " * 700,
    "split": "dev",
}


def canon(v: Any) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def region(start: int, end: int, label: str) -> dict[str, Any]:
    return {"from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": start, "end": end, "labels": [label]}}


# ---------------------------------------------------------------------------- no server needed


@pytest.fixture
def offline_api() -> LabelStudioAPI:
    return LabelStudioAPI(f"http://127.0.0.1:{free_port()}", "token", retries=0, timeout=3)


@pytest.mark.parametrize(
    "kwargs, exc, msg",
    [
        ({"data": {"text": "x"}}, ValueError, "data key 'text'"),
        ({"data": {"nerq_": 1}}, ValueError, "data key 'nerq_'"),
        ({"data": {"nerq_dep": float("nan")}}, ValueError, "NaN"),
        ({"data": ["nerq_dep"]}, TypeError, "data must be a dict"),
        ({"meta": {"split": "dev"}}, ValueError, "meta key 'split'"),
        ({"meta": {"ner_quality": {"x": object()}}}, TypeError, "not JSON-serialisable"),
    ],
    ids=["imported-field", "bare-prefix", "nan", "not-a-dict", "foreign-meta", "unserialisable"],
)
def test_merge_refuses_bad_overlays_before_any_request(
    offline_api: LabelStudioAPI, kwargs: dict[str, Any], exc: type, msg: str
) -> None:
    # the server does not exist: a request would raise LabelStudioUnavailable instead
    with pytest.raises(exc, match=msg) as info:
        offline_api.merge_task_fields(17, **kwargs)
    assert "task 17" in str(info.value)


@pytest.mark.parametrize(
    "call",
    [
        lambda a: a.import_tasks(1, [{"text": "a"}, "b"]),
        lambda a: a.import_tasks(1, {"text": "a"}),
        lambda a: a.get_task(True),
        lambda a: a.upsert_view(1, "v", task_ids="1,2"),
        lambda a: a.iter_tasks(1, page_size=0).__next__(),
        lambda a: a.create_prediction(1, {"a": 1}, score=0.5, model_version="v"),
        lambda a: a.create_prediction(1, [], score=float("inf"), model_version="v"),
    ],
    ids=["task-not-dict", "tasks-not-list", "bool-id", "ids-string", "page-size-0",
         "result-not-list", "score-inf"],
)
def test_bad_arguments_raise_before_any_request(offline_api: LabelStudioAPI, call: Any) -> None:
    # nothing listens on offline_api's port: a request would raise LabelStudioUnavailable (a
    # ConnectionError, not caught here), an HTTP error answer LabelStudioError (a ValueError)
    with pytest.raises((ValueError, TypeError)) as info:
        call(offline_api)
    assert not isinstance(info.value, LabelStudioError)


def test_unreachable_server_names_the_url(offline_api: LabelStudioAPI) -> None:
    for call in (offline_api.health, lambda: offline_api.get_task(3),
                 lambda: offline_api.merge_task_fields(3, data={"nerq_dep": 0.5}),
                 lambda: list(offline_api.iter_tasks(1))):
        with pytest.raises(LabelStudioUnavailable) as info:
            call()
        assert isinstance(info.value, ConnectionError)
        assert offline_api.url in str(info.value)


def test_constructor_validates_url_and_key() -> None:
    with pytest.raises(ValueError, match="http"):
        LabelStudioAPI("127.0.0.1:8080", "k")
    with pytest.raises(ValueError, match="API key"):
        LabelStudioAPI("http://127.0.0.1:8080", " ")


def test_task_fields_match_design_names() -> None:
    f = lsfields.task_fields(np.float32(0.25), {"wrong_tag": np.int64(2), "missed": 1,
                                                "correct": 9}, "v3")
    assert f == {"nerq_dep": 0.25, "nerq_errors": 3, "nerq_wrong_tag": 2, "nerq_span_shift": 0,
                 "nerq_missed": 1, "nerq_ghost": 0, "nerq_model_version": "v3"}
    assert all(type(v) in (float, int, str) for v in f.values())
    lsfields.check_data_keys(f)
    for bad, exc in [((1.5, {}, "v"), ValueError), ((float("nan"), {}, "v"), ValueError),
                     ((0.5, {"typo": 1}, "v"), ValueError),
                     ((0.5, {"missed": -1}, "v"), ValueError),
                     ((0.5, {"missed": 1.5}, "v"), TypeError), ((0.5, {}, ""), ValueError),
                     (("high", {}, "v"), TypeError)]:
        with pytest.raises(exc):
            lsfields.task_fields(*bad)


# ---------------------------------------------------------------------------- real server


def test_health_and_project_from_label_config(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    assert ls_api.health()["status"] == "UP"
    config = ner_label_config()
    pid = ls_project(config, title="conll config")
    proj = ls_api.get_project(pid)
    assert proj["id"] == pid and proj["title"] == "conll config"
    for label in ("PER", "ORG", "LOC", "MISC"):
        assert f'value="{label}"' in proj["label_config"]
    with pytest.raises(LabelStudioError, match="label_config") as info:
        ls_api.create_project("broken config", "<View><Labels name='x'")
    assert info.value.status == 400


def test_import_and_paged_iteration(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    tasks = [{"text": f"Sentence {i} about Paris .", "i": i} for i in range(23)]
    ids = ls_api.import_tasks(pid, tasks, chunk=10)  # three import requests
    assert len(ids) == 23 and len(set(ids)) == 23
    pages = list(ls_api.iter_tasks(pid, page_size=5))
    assert all(isinstance(p, TaskPage) for p in pages)
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [p.number for p in pages] == [1, 2, 3, 4, 5]
    assert {p.total for p in pages} == {23}
    got = [t for p in pages for t in p]
    assert [t["id"] for t in got] == sorted(ids)
    by_id = {t["id"]: t for t in got}
    for tid, src in zip(ids, tasks):
        assert by_id[tid]["data"] == src
        assert {"annotations", "predictions", "meta", "updated_at"} <= set(by_id[tid])
    # resume after the second page
    rest = [t["id"] for p in ls_api.iter_tasks(pid, page_size=5, after_id=pages[1].last_id)
            for t in p]
    assert rest == sorted(ids)[10:]
    assert ls_api.task_ids(pid, page_size=7) == sorted(ids)


def test_merge_preserves_original_fields_and_is_idempotent(
    ls_api: LabelStudioAPI, ls_project: Any
) -> None:
    pid = ls_project()
    (tid,) = ls_api.import_tasks(pid, [dict(ORIGINAL_DATA)])
    before = ls_api.get_task(tid)
    assert canon(before["data"]) == canon(ORIGINAL_DATA)
    fields = lsfields.task_fields(np.float64(0.8125), {"wrong_tag": 1, "ghost": 2}, "v1")
    meta = {lsfields.META_KEY: {"spans": [{"start": 0, "end": 6, "dep": 0.9}], "version": "v1"}}
    after = ls_api.merge_task_fields(tid, data=fields, meta=meta)
    # every original field byte-for-byte (canonical JSON), plus exactly ner-quality's fields
    for key, value in ORIGINAL_DATA.items():
        assert canon(after["data"][key]) == canon(value), key
    assert set(after["data"]) == set(ORIGINAL_DATA) | set(lsfields.DATA_FIELDS)
    assert after["data"][lsfields.DEP] == 0.8125 and after["data"][lsfields.ERRORS] == 3
    assert after["meta"] == meta
    fresh = ls_api.get_task(tid)
    assert canon(fresh["data"]) == canon(after["data"])
    # second identical call: nothing written, the task is identical (updated_at included)
    again = ls_api.merge_task_fields(tid, data=fields, meta=meta)
    assert canon(again) == canon(ls_api.get_task(tid)) == canon(fresh)
    # re-scoring replaces ner-quality's values, still keeping the originals
    fields2 = lsfields.task_fields(0.1, {}, "v2")
    third = ls_api.merge_task_fields(tid, data=fields2)
    assert third["data"][lsfields.DEP] == 0.1 and third["data"][lsfields.MODEL_VERSION] == "v2"
    assert third["meta"] == meta
    for key, value in ORIGINAL_DATA.items():
        assert canon(third["data"][key]) == canon(value), key


def test_meta_merge_keeps_other_meta_keys(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    (tid,) = ls_api.import_tasks(
        pid, [{"data": {"text": "Obama met Biden ."}, "meta": {"split": "dev", "source": "x"}}]
    )
    assert ls_api.get_task(tid)["meta"] == {"split": "dev", "source": "x"}
    t = ls_api.merge_task_fields(tid, meta={"ner_quality": {"dep": 0.5, "pairs": [1, 2]}})
    assert t["meta"] == {"split": "dev", "source": "x",
                         "ner_quality": {"dep": 0.5, "pairs": [1, 2]}}
    assert t["data"] == {"text": "Obama met Biden ."}
    t = ls_api.merge_task_fields(tid, meta={"ner_quality": {"dep": 0.25}})
    assert t["meta"] == {"split": "dev", "source": "x", "ner_quality": {"dep": 0.25}}


def test_annotations_and_predictions_untouched_by_merges(
    ls_api: LabelStudioAPI, ls_project: Any
) -> None:
    pid = ls_project()
    (tid,) = ls_api.import_tasks(pid, [{"text": "Obama met Biden ."}])
    ann_id = ls_api.create_annotation(tid, [region(0, 5, "PER"), region(10, 15, "PER")])
    pred_id = ls_api.create_prediction(tid, [region(0, 5, "PER")], score=0.75,
                                       model_version="nerq-test")
    before = ls_api.get_task(tid)
    assert [a["id"] for a in before["annotations"]] == [ann_id]
    for dep in (0.9, 0.3, 0.3):
        ls_api.merge_task_fields(tid, data=lsfields.task_fields(dep, {"missed": 1}, "v"),
                                 meta={"ner_quality": {"dep": dep}})
    after = ls_api.get_task(tid)
    assert canon(after["annotations"]) == canon(before["annotations"])
    assert after["annotations"][0]["result"] == [region(0, 5, "PER"), region(10, 15, "PER")]
    assert [p["id"] for p in ls_api.list_predictions(tid)] == [pred_id]
    assert canon(after["predictions"]) == canon(before["predictions"])


def test_predictions_create_list_replace_delete(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    tid, other = ls_api.import_tasks(pid, [{"text": "Obama met Biden ."}, {"text": "Paris ."}])
    p1 = ls_api.create_prediction(tid, [region(0, 5, "PER")], score=0.5, model_version="a")
    p2 = ls_api.create_prediction(tid, [region(10, 15, "LOC")], score=np.float32(0.25),
                                  model_version="b")
    preds = {p["id"]: p for p in ls_api.list_predictions(tid)}
    assert set(preds) == {p1, p2}
    assert preds[p1]["result"] == [region(0, 5, "PER")] and preds[p1]["model_version"] == "a"
    assert math.isclose(preds[p2]["score"], 0.25)
    assert ls_api.list_predictions(other) == []
    # re-push of version "a": replaces a's prediction, leaves b's alone
    p3 = ls_api.create_prediction(tid, [region(10, 15, "PER")], score=0.6, model_version="a",
                                  replace=True)
    preds = {p["id"]: p for p in ls_api.list_predictions(tid)}
    assert set(preds) == {p2, p3}
    ls_api.delete_prediction(p3)
    assert [p["id"] for p in ls_api.list_predictions(tid)] == [p2]


def _set_deps(api: LabelStudioAPI, ids: list[int], deps: list[float]) -> None:
    for tid, dep in zip(ids, deps):
        api.merge_task_fields(tid, data=lsfields.task_fields(dep, {}, "v"))


def test_upsert_view_shows_exactly_the_ids_in_dep_order(
    ls_api: LabelStudioAPI, ls_project: Any
) -> None:
    pid = ls_project()
    ids = ls_api.import_tasks(pid, [{"text": f"t{i}"} for i in range(12)])
    rng = random.Random(7)
    deps = [round(rng.random(), 4) for _ in ids]
    _set_deps(ls_api, ids, deps)
    dep_of = dict(zip(ids, deps))
    chosen = rng.sample(ids, 7)
    vid = ls_api.upsert_view(pid, "nerq: review", task_ids=chosen)
    expected = sorted(chosen, key=lambda t: -dep_of[t])
    assert ls_api.view_task_ids(vid) == expected
    # second upsert with another set: same single view, new content
    chosen2 = rng.sample(ids, 4)
    vid2 = ls_api.upsert_view(pid, "nerq: review", task_ids=chosen2)
    assert vid2 == vid
    views = [v for v in ls_api.list_views(pid) if v["data"]["title"] == "nerq: review"]
    assert len(views) == 1
    f = views[0]["data"]["filters"]["items"]
    assert f == [{"filter": "filter:tasks:id", "operator": "in_list", "type": "Number",
                  "value": chosen2}]
    assert views[0]["data"]["ordering"] == ["-tasks:data.nerq_dep"]
    assert ls_api.view_task_ids(vid) == sorted(chosen2, key=lambda t: -dep_of[t])
    # an empty set is an empty view, not "no filter"
    empty = ls_api.upsert_view(pid, "nerq: nothing", task_ids=[])
    assert ls_api.view_task_ids(empty) == []
    ls_api.delete_view(empty)
    assert [v["id"] for v in ls_api.list_views(pid)] == [vid]


def test_data_manager_filter_on_dep(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    ids = ls_api.import_tasks(pid, [{"text": f"t{i}"} for i in range(9)])
    deps = [0.05, 0.95, 0.5, 0.51, 0.49, 1.0, 0.0, 0.7, 0.3]
    _set_deps(ls_api, ids[:8], deps[:8])  # the last task has no nerq_dep at all
    high = [data_filter("nerq_dep", "greater", 0.5)]
    got = [t["id"] for p in ls_api.iter_tasks(pid, filters=high) for t in p]
    assert got == [t for t, d in zip(ids, deps[:8]) if d > 0.5]
    got = [t["id"] for p in ls_api.iter_tasks(pid, page_size=2,
                                               filters=[data_filter("nerq_dep", "less", 0.5)])
           for t in p]
    assert got == [t for t, d in zip(ids, deps[:8]) if d < 0.5]


def test_updated_since_returns_only_changed_tasks(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    ids = ls_api.import_tasks(pid, [{"text": f"Task {i} ."} for i in range(8)])
    everything = [t for p in ls_api.iter_tasks(pid) for t in p]
    assert len(everything) == 8
    time.sleep(0.05)
    changed = ls_api.merge_task_fields(ids[2], data={"nerq_dep": 0.4})
    since = changed["updated_at"]
    assert since > max(t["updated_at"] for t in everything)
    ls_api.create_annotation(ids[5], [region(0, 4, "MISC")])
    ls_api.create_prediction(ids[6], [region(0, 4, "PER")], score=0.1, model_version="p")
    pages = list(ls_api.iter_tasks(pid, updated_since=since, page_size=1))
    got = [t["id"] for p in pages for t in p]
    # merged data, a new annotation and a new prediction all move updated_at
    assert got == [ids[2], ids[5], ids[6]]
    assert pages[0].total == 3
    assert [t["id"] for p in ls_api.iter_tasks(pid, updated_after=since) for t in p] == got
    later = max(t["updated_at"] for p in pages for t in p)
    assert [t["id"] for p in ls_api.iter_tasks(pid, updated_since=later) for t in p] == [ids[6]]


def test_export_has_full_predictions(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    a, b = ls_api.import_tasks(pid, [{"text": "Obama met Biden ."}, {"text": "In Paris ."}])
    ls_api.create_annotation(a, [region(0, 5, "PER")])
    ls_api.create_prediction(b, [region(3, 8, "LOC")], score=0.9, model_version="m1")
    exported = {t["id"]: t for t in ls_api.export_tasks(pid)}
    assert set(exported) == {a, b}
    assert exported[a]["annotations"][0]["result"][0]["value"]["labels"] == ["PER"]
    (pred,) = exported[b]["predictions"]
    assert isinstance(pred, dict) and pred["result"] == [region(3, 8, "LOC")]
    assert pred["model_version"] == "m1"


def test_model_version_and_errors_name_the_call(ls_api: LabelStudioAPI, ls_project: Any) -> None:
    pid = ls_project()
    (tid,) = ls_api.import_tasks(pid, [{"text": "Obama ."}])
    # the server accepts only a version that exists (live backend or stored predictions)
    with pytest.raises(LabelStudioError, match="set_model_version project .*HTTP 400"):
        ls_api.set_model_version(pid, "nerq-v7")
    ls_api.create_prediction(tid, [region(0, 5, "PER")], score=0.5, model_version="nerq-v7")
    ls_api.set_model_version(pid, "nerq-v7")
    assert ls_api.get_project(pid)["model_version"] == "nerq-v7"
    assert ls_api.list_webhooks(pid) == []
    with pytest.raises(LabelStudioError, match=r"get_task task 987654: HTTP 404") as info:
        ls_api.get_task(987654)
    assert info.value.status == 404 and info.value.ident == "task 987654"
    bad = LabelStudioAPI(ls_api.url, "not-the-token", retries=0)
    with pytest.raises(LabelStudioError, match="HTTP 401"):
        bad.get_project(pid)


def test_server_stop_and_restart_keep_the_data(
    label_studio: Any, ls_api: LabelStudioAPI, ls_project: Any
) -> None:
    pid = ls_project()
    ids = ls_api.import_tasks(pid, [{"text": "kept across restarts"}])
    ls_api.merge_task_fields(ids[0], data={"nerq_dep": 0.33})
    port = label_studio.port
    label_studio.stop()
    quick = LabelStudioAPI(label_studio.url, label_studio.token, retries=0, timeout=3)
    with pytest.raises(LabelStudioUnavailable, match=f"127.0.0.1:{port}"):
        quick.get_task(ids[0])
    label_studio.start()
    assert label_studio.port == port and label_studio.url.endswith(f":{port}")
    t = ls_api.get_task(ids[0])
    assert t["data"] == {"text": "kept across restarts", "nerq_dep": 0.33}


@pytest.fixture
def backend(label_studio: Any, tmp_path: Any) -> Any:
    """The real ML backend (``ner-quality serve``) as a process, wired to the test server."""
    import sys
    from pathlib import Path

    from conftest import start_process

    port = free_port()
    exe = Path(sys.executable).with_name("ner-quality")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "ls_backend.cli"]
    h = start_process(
        [*cmd, "serve", "--host", "127.0.0.1", "--port", str(port), "--threads", "4"],
        {"MODEL_DIR": str(tmp_path / "models"), "LABEL_STUDIO_URL": label_studio.url,
         "LABEL_STUDIO_API_KEY": label_studio.token, "HF_HUB_OFFLINE": "1",
         "TRANSFORMERS_OFFLINE": "1"},
        f"http://127.0.0.1:{port}/health", 120, name="nerq-backend",
    )
    h.url = f"http://127.0.0.1:{port}"
    yield h
    h.stop()


def test_connect_ml_backend_is_idempotent_and_adds_webhook(
    ls_api: LabelStudioAPI, ls_project: Any, backend: Any
) -> None:
    pid = ls_project()
    ids = ls_api.import_tasks(pid, [{"text": "Obama met Biden in Paris ."}])
    bid = ls_api.connect_ml_backend(pid, backend.url, title="ner-quality")
    assert ls_api.connect_ml_backend(pid, backend.url + "/", title="again") == bid
    hooks = ls_api.list_webhooks(pid)
    assert [h["url"].rstrip("/") for h in hooks] == [backend.url + "/webhook"]
    # "Retrieve predictions" is accepted for the selected tasks (what the backend answers is
    # tested with the backend)
    out = ls_api.retrieve_predictions(pid, ids)
    assert out.get("processed_items") == len(ids)
    with pytest.raises(LabelStudioError, match="connect_ml_backend project"):
        ls_api.connect_ml_backend(pid, f"http://127.0.0.1:{free_port()}", title="nothing there")
