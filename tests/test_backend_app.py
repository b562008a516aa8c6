"""The ML-backend Flask app on plain data (Flask test client; no Label Studio needed).

Covers the protocol (health, setup, predict, webhook, versions, status), every bad-input case
of issue 4 (each must answer a JSON error and leave the server serving), basic auth, the
de-duplicating bounded queue, persistence across a restart, and — with a tiny model trained on
CPU in a module fixture — predictions with exact offsets and live scoring of a planted error.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKEND_SENTS

from ls_backend.app import create_app
from ls_backend.service.queue import QueueFull, ScoreJob, ScoreQueue
from ls_backend.service.state import base_version, project_id
from ls_backend.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CONLL_XML = (REPO / "label_config" / "conll2003.xml").read_text(encoding="utf-8")
NO_LABELS_XML = '<View><Text name="text" value="$text"/></View>'
TWO_LABELS_XML = """<View>
  <Labels name="label" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>
  <Text name="text" value="$text"/>
</View>"""

SENTS = BACKEND_SENTS


def region(text: str, word: str, label: str, k: int = 0) -> dict[str, Any]:
    s = text.index(word)
    return {"id": f"r{k}", "from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": s, "end": s + len(word), "text": word, "labels": [label]}}


def annotated_task(tid: int, text: str, ents: list[tuple[str, str]]) -> dict[str, Any]:
    return {"id": tid, "project": 3, "data": {"text": text},
            "annotations": [{"id": 1000 + tid, "task": tid,
                             "result": [region(text, w, lab, k) for k, (w, lab) in
                                        enumerate(ents)]}]}


def make_app(tmp: Path, **env: str) -> Any:
    base = {"MODEL_DIR": str(tmp), "DEVICE": "cpu", "LOG_LEVEL": "INFO"}
    base.update(env)
    return create_app(Settings.from_env(base))


@pytest.fixture
def client(tmp_path: Path) -> Any:
    return make_app(tmp_path).test_client()


def setup_project(c: Any, pid: str = "3.1712345678", xml: str = CONLL_XML) -> str:
    r = c.post("/setup", json={"project": pid, "schema": xml, "hostname": "http://x",
                               "access_token": "t", "extra_params": None})
    assert r.status_code == 200, r.json
    return r.json["model_version"]


# ---------------------------------------------------------------------------- settings


@pytest.mark.parametrize(
    "env, message",
    [
        ({"BATCH_SIZE": "zero"}, "BATCH_SIZE"),
        ({"BATCH_SIZE": "0"}, "BATCH_SIZE"),
        ({"DEVICE": "tpu"}, "DEVICE"),
        ({"LOG_LEVEL": "LOUD"}, "LOG_LEVEL"),
        ({"BASIC_AUTH_USER": "u"}, "BASIC_AUTH_PASS"),
        ({"LABEL_STUDIO_URL": "localhost:8080"}, "LABEL_STUDIO_URL"),
        ({"TRAIN_LR": "-1"}, "TRAIN_LR"),
    ],
    ids=["not-int", "below-min", "device", "log-level", "auth-half", "url-scheme", "lr"],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Settings.from_env(env)


def test_settings_defaults_and_secrets_hidden() -> None:
    s = Settings.from_env({"LABEL_STUDIO_API_KEY": "secret", "BASIC_AUTH_USER": "u",
                           "BASIC_AUTH_PASS": "p", "TRAIN_MAX_STEPS": "0"})
    assert s.train_max_steps is None and s.auth_enabled and not s.label_studio_enabled
    assert "secret" not in json.dumps(s.public_dict()) and "p" != s.public_dict()["basic_auth_pass"]


def test_project_id_forms() -> None:
    assert project_id("12.1700000000") == project_id(12) == project_id({"id": 12}) == "12"
    with pytest.raises(ValueError, match="not a valid project id"):
        project_id("../../etc")


# ---------------------------------------------------------------------------- protocol


def test_health_setup_versions_untrained_predict(client: Any) -> None:
    assert client.get("/health").json["status"] == "UP"
    v = setup_project(client)
    assert v == base_version(None, ("PER", "ORG", "LOC", "MISC"))
    assert setup_project(client) == v  # stable: LS never duplicates predictions for it
    tasks = [{"id": 1, "data": {"text": "Obama met Biden ."}},
             {"id": 2, "data": {"text": "Paris"}}]
    r = client.post("/predict", json={"project": "3.1712345678", "label_config": CONLL_XML,
                                      "tasks": tasks, "params": {"context": None}})
    assert r.status_code == 200
    res = r.json["results"]
    # one item per task, in order, no regions from a random head, same version as /setup
    assert [x["result"] for x in res] == [[], []]
    assert {x["model_version"] for x in res} == {v}
    # LS sends GET /versions with a JSON body {project: "<pid>.<ts>"}
    r = client.open("/versions", method="GET", json={"project": "3.1712345678"})
    assert r.status_code == 200 and r.json["versions"] == [v]
    st = client.get("/status?project=3").json
    assert st["projects"]["3"]["trained"] is False
    assert client.get("/train_status").json["projects"]["3"]["train"]["status"] == "idle"


def test_state_persists_across_restart(tmp_path: Path) -> None:
    c1 = make_app(tmp_path).test_client()
    v = setup_project(c1, "5.1", TWO_LABELS_XML)
    assert (tmp_path / "5" / "state.json").is_file()
    c2 = make_app(tmp_path).test_client()  # a new process on the same MODEL_DIR
    assert c2.get("/health").json["projects"]["5"]["model_version"] == v
    # predict without label_config: the persisted config is used
    r = c2.post("/predict", json={"project": "5.1", "tasks": [{"id": 9, "data": {"text": "x"}}]})
    assert r.status_code == 200 and r.json["results"][0]["model_version"] == v


def test_projects_are_independent(client: Any) -> None:
    v3 = setup_project(client, "3.1", CONLL_XML)
    v4 = setup_project(client, "4.1", TWO_LABELS_XML)
    assert v3 != v4
    assert set(client.get("/health").json["projects"]) == {"3", "4"}


# ---------------------------------------------------------------------------- bad input

BAD_PREDICT = [
    ("not-json", dict(data="{oops", content_type="application/json"), 400, "not valid JSON"),
    ("empty-body", dict(data="", content_type="application/json"), 400, "empty request body"),
    ("json-list", dict(json=[1, 2]), 400, "expected a JSON object"),
    ("no-tasks", dict(json={"project": "3.1"}), 400, "missing 'tasks'"),
    ("tasks-not-list", dict(json={"project": "3.1", "tasks": {"id": 1}}), 400, "must be a list"),
    ("empty-batch", dict(json={"project": "3.1", "tasks": []}), 400, "'tasks' is empty"),
    ("no-project", dict(json={"tasks": [{"id": 1, "data": {"text": "a"}}]}), 400,
     "missing 'project'"),
    ("config-without-labels", dict(json={"project": "3.1", "label_config": NO_LABELS_XML,
                                         "tasks": [{"id": 1, "data": {"text": "a"}}]}), 400,
     "bad label config"),
    ("config-not-xml", dict(json={"project": "3.1", "label_config": "<View",
                                  "tasks": [{"id": 1, "data": {"text": "a"}}]}), 400,
     "bad label config"),
    ("missing-text", dict(json={"project": "3.1", "label_config": CONLL_XML,
                                "tasks": [{"id": 17, "data": {"body": "a"}}]}), 422,
     "task 17: no 'text' in data"),
    ("text-not-string", dict(json={"project": "3.1", "label_config": CONLL_XML,
                                   "tasks": [{"id": 17, "data": {"text": 5}}]}), 422,
     "task 17: data\\['text'\\] must be a string"),
    ("task-not-object", dict(json={"project": "3.1", "label_config": CONLL_XML,
                                   "tasks": ["just a string"]}), 422, "task #0: expected a JSON"),
    ("huge-text", dict(json={"project": "3.1", "label_config": CONLL_XML,
                             "tasks": [{"id": 8, "data": {"text": "a " * 100_000}}]}), 422,
     "task 8: text has 200000 characters, more than MAX_TEXT_CHARS"),
    ("unknown-label-in-annotation", dict(json={
        "project": "3.1", "label_config": CONLL_XML,
        "tasks": [{"id": 4, "data": {"text": "Obama"},
                   "annotations": [{"id": 1, "result": [region("Obama", "Obama", "PERSON")]}]}]}),
     422, "task 4"),
    ("span-past-text", dict(json={
        "project": "3.1", "label_config": CONLL_XML,
        "tasks": [{"id": 6, "data": {"text": "Obama"},
                   "annotations": [{"id": 1, "result": [{
                       "from_name": "label", "to_name": "text", "type": "labels",
                       "value": {"start": 0, "end": 40, "labels": ["PER"]}}]}]}]}),
     422, "task 6"),
]


@pytest.mark.parametrize("kwargs, status, message", [b[1:] for b in BAD_PREDICT],
                         ids=[b[0] for b in BAD_PREDICT])
def test_bad_predict_input_gives_json_error_and_server_keeps_serving(
    client: Any, kwargs: dict[str, Any], status: int, message: str
) -> None:
    r = client.post("/predict", **kwargs)
    assert r.status_code == status, r.get_data(as_text=True)
    assert r.is_json and "error" in r.json
    import re

    assert re.search(message, r.json["error"]), r.json["error"]
    assert client.get("/health").status_code == 200


def test_unknown_project_without_config_is_a_clear_error(client: Any) -> None:
    r = client.post("/predict", json={"project": "99.1", "tasks": [{"id": 1, "data": {"text": "a"}}]})
    assert r.status_code == 400 and "project 99: no label config known" in r.json["error"]


def test_one_bad_task_in_a_batch_gets_its_own_error(client: Any) -> None:
    v = setup_project(client)
    tasks = [{"id": 1, "data": {"text": "fine"}}, {"id": 2, "data": {}},
             {"id": 3, "data": {"text": "also fine"}}]
    r = client.post("/predict", json={"project": "3.1712345678", "tasks": tasks})
    assert r.status_code == 200
    res = r.json["results"]
    assert len(res) == 3
    assert "result" in res[0] and "result" in res[2]
    # no 'result' key: Label Studio stores nothing for it and retries on the next retrieval
    assert "result" not in res[1] and res[1]["error"].startswith("task 2:")
    assert all(x["model_version"] == v for x in res)


def test_too_many_tasks_is_413(tmp_path: Path) -> None:
    c = make_app(tmp_path, MAX_TASKS_PER_REQUEST="2").test_client()
    setup_project(c)
    tasks = [{"id": i, "data": {"text": "a"}} for i in range(3)]
    r = c.post("/predict", json={"project": "3.1", "tasks": tasks})
    assert r.status_code == 413 and "MAX_TASKS_PER_REQUEST" in r.json["error"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"project": {"id": 3}}, 400, "missing 'action'"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 3}, "annotation": {"result": []}},
         400, "no task with an integer 'id'"),
        ({"action": "ANNOTATION_CREATED", "project": {"id": 3}, "task": {"id": 5}}, 400,
         "task 5: payload has no annotation"),
        ({"action": "ANNOTATION_CREATED", "task": {"id": 5}, "annotation": {"result": []}}, 400,
         "missing project id"),
    ],
    ids=["no-action", "no-task", "no-annotation", "no-project"],
)
def test_bad_webhooks(client: Any, body: dict[str, Any], status: int, message: str) -> None:
    r = client.post("/webhook", json=body)
    assert r.status_code == status and message in r.json["error"]


def test_webhooks_for_other_actions_and_deleted_tasks_are_answered(client: Any) -> None:
    setup_project(client)
    r = client.post("/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 3}})
    assert r.status_code == 200 and r.json["status"] == "ignored"
    r = client.post("/webhook", json={"action": "TASKS_DELETED", "project": {"id": 3},
                                      "tasks": [{"id": 123456}]})
    assert r.status_code == 200 and r.json["tasks"] == [123456]


def test_annotation_webhook_on_untrained_project_counts_and_never_touches_annotation(
    client: Any,
) -> None:
    setup_project(client)
    task = annotated_task(1, *SENTS[0])
    ann = task["annotations"][0]
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 3, "label_config": CONLL_XML},
            "task": {k: v for k, v in task.items() if k != "annotations"}, "annotation": ann}
    before = copy.deepcopy(body)
    r = client.post("/webhook", json=body)
    assert r.status_code == 200 and r.json["scoring"].startswith("skipped")
    assert body == before
    assert client.get("/status").json["projects"]["3"]["annotations_since_train"] == 1


def test_label_studio_unreachable_training_fails_cleanly(tmp_path: Path) -> None:
    c = make_app(tmp_path, LABEL_STUDIO_URL="http://127.0.0.1:9", LABEL_STUDIO_API_KEY="k",
                 TRAIN_EVERY_N_ANNOTATIONS="0").test_client()
    setup_project(c)
    r = c.post("/webhook", json={"action": "START_TRAINING",
                                 "project": {"id": 3, "label_config": CONLL_XML}})
    assert r.status_code == 201
    backend = c.application.extensions["nerq_backend"]
    assert backend.wait_training("3", 120)
    st = c.get("/status?project=3").json
    assert st["projects"]["3"]["train"]["status"] == "failed"
    assert "127.0.0.1:9" in st["projects"]["3"]["train"]["error"]
    assert c.get("/health").status_code == 200  # still serving, still the base version
    assert st["projects"]["3"]["trained"] is False


def test_basic_auth(tmp_path: Path) -> None:
    c = make_app(tmp_path, BASIC_AUTH_USER="lab", BASIC_AUTH_PASS="s3cret").test_client()
    r = c.get("/health")
    assert r.status_code == 401 and "authentication" in r.json["error"]
    import base64

    bad = base64.b64encode(b"lab:wrong").decode()
    assert c.get("/health", headers={"Authorization": f"Basic {bad}"}).status_code == 401
    good = base64.b64encode(b"lab:s3cret").decode()
    assert c.get("/health", headers={"Authorization": f"Basic {good}"}).status_code == 200


def test_unknown_route_and_method_are_json(client: Any) -> None:
    r = client.get("/nope")
    assert r.status_code == 404 and "error" in r.json
    r = client.get("/predict")
    assert r.status_code == 405 and "error" in r.json


# ---------------------------------------------------------------------------- queue


def test_queue_deduplicates_per_task_and_is_bounded() -> None:
    q = ScoreQueue(None, 2)
    assert q.put(ScoreJob("1", 10, task={"v": 1}))
    assert not q.put(ScoreJob("1", 10, task={"v": 2}))  # same task: replaced, not added
    assert q.put(ScoreJob("2", 10, task={"v": 3}))      # other project, same task id
    with pytest.raises(QueueFull, match="2 pending"):
        q.put(ScoreJob("1", 11))
    jobs = q.take(10, timeout=0)
    assert [(j.project, j.task_id, j.task) for j in jobs] == [("1", 10, {"v": 2}),
                                                           ("2", 10, {"v": 3})]
    assert not q.idle()
    q.done(jobs)
    assert q.idle() and q.deduplicated == 1


# ---------------------------------------------------------------------------- with a model


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A backend whose project 3 was trained briefly (CPU) on 8 hand-made sentences."""
    tmp = tmp_path_factory.mktemp("models")
    app = make_app(tmp, TRAIN_EPOCHS="8", TRAIN_BATCH_SIZE="2", TRAIN_LR="5e-4",
                   TRAIN_MAX_STEPS="32", TRAIN_EVERY_N_ANNOTATIONS="0", SIMILAR_K="3")
    c = app.test_client()
    v0 = setup_project(c)
    tasks = train_project(app)
    return {"app": app, "client": c, "backend": app.extensions["nerq_backend"], "v0": v0,
            "tasks": tasks, "dir": tmp}


def train_project(app: Any) -> list[dict[str, Any]]:
    """Train project 3 on the annotated :data:`SENTS` through ``/train`` and wait until the
    training, its cross-fit and the writes are done; returns the tasks."""
    c = app.test_client()
    tasks = [annotated_task(i + 1, t, e) for i, (t, e) in enumerate(SENTS)]
    r = c.post("/train", json={"project": "3.1712345678", "label_config": CONLL_XML,
                               "annotations": tasks})
    assert r.status_code == 201
    backend = app.extensions["nerq_backend"]
    assert backend.wait_training("3", 600)
    backend.drain(60)
    return tasks


@pytest.mark.model
def test_training_switches_version_and_records_dynamics(trained: dict[str, Any]) -> None:
    c = trained["client"]
    st = c.get("/status?project=3").json["projects"]["3"]
    assert st["train"]["status"] == "done", st
    assert st["trained"] and st["model_version"] != trained["v0"]
    assert setup_project(c) == st["model_version"]
    state = json.loads((trained["dir"] / "3" / "state.json").read_text())
    entry = state["versions"][-1]
    assert entry["version"] == st["model_version"] and entry["n_tasks"] == len(SENTS)
    assert entry["dynamics"] and all(Path(p).is_file() for p in entry["dynamics"])
    assert (Path(entry["path"]) / "span_index").is_dir()


@pytest.mark.model
def test_probe_route_explains_the_serving_model(trained: dict[str, Any]) -> None:
    """``POST /probe``: per word the serving model's tags (best first) and subwords; its
    spans are those ``/predict`` answers for the same text; bad requests are 4xx."""
    c = trained["client"]
    v = setup_project(c)
    text = "Obama met Merkel in London ."
    r = c.post("/probe", json={"project": 3, "text": text, "top_k": 2, "low_confidence": 0.9})
    assert r.status_code == 200, r.json
    d = r.json
    assert d["model_version"] == v and d["windows"] == 1
    assert [w["word"] for w in d["words"]] == text.split()
    for w in d["words"]:
        assert text[w["start"]:w["end"]] == w["word"]
        assert "".join(sw.removeprefix("##") for sw in w["subwords"]) == w["word"].lower()
        assert len(w["top"]) == 2 and w["top"][0][0] == w["tag"] and w["top"][0][1] == w["p"]
        assert w["top"][0][1] >= w["top"][1][1] and w["low"] == (w["p"] < 0.9)
    assert d["n_subtokens"] == sum(len(w["subwords"]) for w in d["words"])
    pr = c.post("/predict", json={"project": 3, "tasks": [{"id": 1, "data": {"text": text}}]})
    regions = [(g["value"]["start"], g["value"]["end"], g["value"]["labels"][0])
               for g in pr.json["results"][0]["result"]]
    assert [(s["start"], s["end"], s["label"]) for s in d["spans"]] == regions
    for body, status, msg in (
            ({"project": 999, "text": "Obama"}, 404, "unknown"),
            ({"project": 3, "text": "   "}, 400, "empty"),
            ({"project": 3, "text": text, "top_k": 0}, 400, "top_k"),
            ({"text": text}, 400, "missing 'project'")):
        r = c.post("/probe", json=body)
        assert r.status_code == status and msg in r.json["error"], (body, r.json)


def test_predict_regions_have_exact_offsets(trained: dict[str, Any]) -> None:
    c = trained["client"]
    v = setup_project(c)
    texts = ["Obama met Merkel in London .", "Apple and Google are in California .",
             "nothing here", ""]
    tasks = [{"id": 100 + i, "data": {"text": t}} for i, t in enumerate(texts)]
    r = c.post("/predict", json={"project": "3.1712345678", "label_config": CONLL_XML,
                                 "tasks": tasks})
    assert r.status_code == 200
    res = r.json["results"]
    assert len(res) == len(tasks)
    n_regions = 0
    for task, item in zip(tasks, res):
        assert item["model_version"] == v
        assert 0.0 <= item["score"] <= 1.0
        text = task["data"]["text"]
        prev_end = 0
        for reg in item["result"]:
            val = reg["value"]
            assert (reg["from_name"], reg["to_name"], reg["type"]) == ("label", "text", "labels")
            assert text[val["start"]:val["end"]] == val["text"] and val["text"].strip() == val["text"]
            assert val["start"] >= prev_end  # sorted, non-overlapping
            prev_end = val["end"]
            assert val["labels"][0] in ("PER", "ORG", "LOC", "MISC")
            assert 0.0 <= reg["score"] <= 1.0
            n_regions += 1
    assert n_regions >= 3  # the tiny model learned something (not a random head)
    found = {(r["value"]["text"], r["value"]["labels"][0]) for r in res[0]["result"]}
    assert ("Obama", "PER") in found


@pytest.mark.model
def test_predict_refuses_early_when_every_model_pass_is_busy(trained: dict[str, Any]) -> None:
    import dataclasses

    c, backend = trained["client"], trained["backend"]
    saved = backend.settings
    backend.settings = dataclasses.replace(saved, predict_concurrency=1, predict_wait_s=0.2)
    slots = backend._predict_slots
    for _ in range(saved.predict_concurrency):
        assert slots.acquire(timeout=5)  # every model pass taken (as by long requests)
    try:
        r = c.post("/predict", json={"project": "3.1712345678", "label_config": CONLL_XML,
                                     "tasks": [{"id": 1, "data": {"text": "Obama met Merkel ."}}]})
        assert r.status_code == 503 and r.headers["Retry-After"] == "10"
        assert "PREDICT_WAIT_S" in r.json["error"]
        assert c.get("/health").status_code == 200
    finally:
        for _ in range(saved.predict_concurrency):
            slots.release()
        backend.settings = saved
    r = c.post("/predict", json={"project": "3.1712345678", "label_config": CONLL_XML,
                                 "tasks": [{"id": 1, "data": {"text": "Obama met Merkel ."}}]})
    assert r.status_code == 200


@pytest.mark.model
def test_labels_unknown_to_config_is_409(trained: dict[str, Any]) -> None:
    c = trained["client"]
    r = c.post("/predict", json={"project": "3.1712345678", "label_config": TWO_LABELS_XML,
                                 "tasks": [{"id": 1, "data": {"text": "Obama"}}]})
    assert r.status_code == 409
    assert "['ORG', 'MISC']" in r.json["error"] and "retrain" in r.json["error"]
    # restore the project's config for the other tests
    setup_project(c)


@pytest.mark.model
def test_webhook_scores_planted_error_in_background(trained: dict[str, Any]) -> None:
    c, backend = trained["client"], trained["backend"]
    setup_project(c)
    text = SENTS[0][0]
    planted = [region(text, "Obama", "ORG", 0), region(text, "Paris", "LOC", 1)]
    ann = {"id": 5001, "task": 1, "result": planted, "was_cancelled": False}
    body = {"action": "ANNOTATION_UPDATED", "project": {"id": 3, "label_config": CONLL_XML},
            "task": {"id": 1, "project": 3, "data": {"text": text}}, "annotation": ann}
    before = copy.deepcopy(body)
    r = c.post("/webhook", json=body)
    assert r.status_code == 200 and r.json["scoring"] == "queued"
    assert body == before
    assert backend.drain(120)
    sc = c.get("/score?project=3&task=1").json
    data, meta = sc["data"], sc["meta"]["ner_quality"]
    assert data["nerq_model_version"] == meta["model_version"]
    assert 0.0 <= data["nerq_dep"] <= 1.0 and data["nerq_wrong_tag"] == 1
    spans = {s["text"]: s for s in meta["spans"]}
    assert spans["Obama"]["error"] == "wrong_tag" and spans["Obama"]["label"] == "ORG"
    assert spans["Paris"]["error"] == "correct"
    assert spans["Obama"]["dep"] > spans["Paris"]["dep"]
    assert data["nerq_dep"] >= spans["Obama"]["dep"] - 1e-6
    sim = spans["Obama"]["similar"]
    assert 0 < len(sim) <= 3
    assert all(s["label"] != "ORG" and s["task_id"] != 1 for s in sim)
    assert meta["annotation_id"] == 5001


@pytest.mark.model
def test_training_dep_is_cross_fitted_and_never_overwritten_in_sample(
        trained: dict[str, Any]) -> None:
    """After a training every annotated task's DEP comes from a fold model that did not train
    on it; a later live scoring of the same labels (the serving model trained on them) leaves
    it alone, changed labels are scored and marked in-sample."""
    c, backend = trained["client"], trained["backend"]
    st = c.get("/status?project=3").json["projects"]["3"]
    cf = st["train"]["crossfit"]
    assert cf["status"] == "done" and cf["folds"] == 3 and cf["tasks"] == len(SENTS), cf
    scores = {t["id"]: c.get(f"/score?project=3&task={t['id']}").json for t in trained["tasks"]}
    # (earlier tests reuse some task ids for other texts: those carry no annotation meta)
    metas = {tid: s["meta"]["ner_quality"] for tid, s in scores.items() if "meta" in s}
    # tasks still carrying their training annotation (earlier tests re-annotate some)
    orig = {t["id"] for t in trained["tasks"] if t["id"] in metas
            and metas[t["id"]]["annotation_id"] == t["annotations"][0]["id"]}
    assert len(orig) >= len(SENTS) - 2
    assert {metas[i]["dep_source"] for i in orig} == {"cross-fit"}
    assert {m["model_version"] for m in metas.values()} == {st["model_version"]}
    assert st["thresholds"] is not None
    t = next(t for t in trained["tasks"] if t["id"] in orig)
    same = {"action": "ANNOTATION_UPDATED", "project": {"id": 3},
            "task": {"id": t["id"], "project": 3, "data": t["data"]},
            "annotation": t["annotations"][0]}
    # (a pending write of the cross-fit, Label Studio being absent here, is replaced by the
    # live job; the live scoring finds the labels trained on and writes the cross-fit overlay)
    assert c.post("/webhook", json=same).json["scoring"] in ("queued", "deduplicated")
    assert backend.drain(120)
    assert c.get(f"/score?project=3&task={t['id']}").json["meta"]["ner_quality"] == metas[t["id"]]
    text = t["data"]["text"]
    word = t["annotations"][0]["result"][0]["value"]["text"]
    other = "MISC" if t["annotations"][0]["result"][0]["value"]["labels"][0] != "MISC" else "ORG"
    changed = {**same, "annotation": {"id": 9001, "result": [region(text, word, other)]}}
    assert c.post("/webhook", json=changed).json["scoring"] in ("queued", "deduplicated")
    assert backend.drain(120)
    meta = c.get(f"/score?project=3&task={t['id']}").json["meta"]["ner_quality"]
    assert meta["dep_source"] == "in-sample" and meta["annotation_id"] == 9001
    # changed back to the trained labels: the in-sample score of 9001 is stale, not skipped
    assert c.post("/webhook", json=same).json["scoring"] in ("queued", "deduplicated")
    assert backend.drain(120)
    meta = c.get(f"/score?project=3&task={t['id']}").json["meta"]["ner_quality"]
    assert meta["annotation_id"] == t["annotations"][0]["id"]
    assert meta["dep_source"] == "in-sample"


@pytest.mark.model
def test_predict_on_annotated_task_scores_it_too(trained: dict[str, Any]) -> None:
    c, backend = trained["client"], trained["backend"]
    setup_project(c)
    t = annotated_task(2, *SENTS[1])
    r = c.post("/predict", json={"project": "3.1712345678", "tasks": [t]})
    assert r.status_code == 200 and r.json["results"][0]["result"]
    backend.drain(60)
    sc = c.get("/score?project=3&task=2").json
    counts = {k: sc["data"][f"nerq_{k}"] for k in ("wrong_tag", "span_shift", "missed", "ghost")}
    meta = sc["meta"]["ner_quality"]
    assert sum(counts.values()) == sum(1 for s in meta["spans"] if s["error"] != "correct") + \
        len(meta["ghosts"])
    assert [s["text"] for s in meta["spans"]] == ["Merkel", "Macron", "Berlin"]


@pytest.mark.model
def test_restart_serves_trained_version_with_its_index(trained: dict[str, Any]) -> None:
    v = setup_project(trained["client"])
    c2 = make_app(trained["dir"], SIMILAR_K="3").test_client()
    assert c2.get("/health").json["projects"]["3"]["model_version"] == v
    text = "Microsoft hired Anna Berg in Oslo ."  # not a training task: scored live
    body = {"action": "ANNOTATION_CREATED", "project": {"id": 3},
            "task": {"id": 50, "project": 3, "data": {"text": text}},
            "annotation": {"id": 7001, "result": [region(text, "Microsoft", "ORG"),
                                                  region(text, "Anna Berg", "PER", 1)]}}
    assert c2.post("/webhook", json=body).json["scoring"] == "queued"
    assert c2.application.extensions["nerq_backend"].drain(120)
    meta = c2.get("/score?project=3&task=50").json["meta"]["ner_quality"]
    assert meta["model_version"] == v and meta["dep_source"] == "unseen"
    assert any(s["similar"] for s in meta["spans"])  # the persisted index was loaded
