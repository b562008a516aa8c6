"""The ML backend as a real process (``ner-quality serve``) against a real Label Studio.

One scenario, in order (module-scoped state; the tests depend on their predecessors):

1. create a project from ``label_config/conll2003.xml``, import tasks, connect the backend
   through Label Studio's ``ml`` API (LS calls /health and /setup and creates the project
   webhook itself);
2. annotate a handful of tasks (LS sends ANNOTATION_CREATED webhooks), train through Label
   Studio's "Start training" (START_TRAINING webhook), tiny and on CPU;
3. retrieve predictions through the Data Manager action and check the stored predictions
   (offsets, labels, model_version == the /setup version) and that a second retrieval adds
   no duplicates;
4. submit an annotation with a planted error and poll until DEP, error types and similar spans
   land on that task (data.nerq_* and meta.ner_quality), with the original data fields and the
   annotation unchanged;
5. ``predict_project`` (``ner-quality predict --project``) fills the remaining tasks with the
   same version and a second run creates nothing;
6. restart the backend on the same MODEL_DIR: the trained version is still served and a
   retrieval still adds no duplicates.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import BACKEND_SENTS, free_port, http_get, ner_label_config, start_process

pytestmark = [pytest.mark.integration, pytest.mark.model]

REPO = Path(__file__).resolve().parents[1]

SENTS = BACKEND_SENTS
UNLABELLED = ["Merkel visited Moscow on Friday .", "Obama and Putin met in Geneva .",
              "Samsung hired Macron ."]
PLANTED_TEXT = "Putin met Merkel in Paris ."


def region(text: str, word: str, label: str, k: int = 0) -> dict[str, Any]:
    s = text.index(word)
    return {"id": f"r{k}", "from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": s, "end": s + len(word), "text": word, "labels": [label]}}


def wait_for(fn: Any, timeout: float, what: str, interval: float = 0.5) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}; last: {last!r}")


def holds_for(fn: Any, seconds: float, what: str, interval: float = 0.5) -> None:
    """Check ``fn()`` again and again for ``seconds``: fail as soon as it is false.

    For "nothing happens" conditions (no duplicate prediction shows up): a duplicate would come
    from a late ``/predict`` or be removed by the backend's clean-up a few seconds after the
    answer (``janitor.DEDUP_DELAY_S``), so the check watches a window longer than that.
    """
    deadline = time.monotonic() + seconds
    while True:
        if not fn():
            raise AssertionError(f"{what} stopped holding")
        if time.monotonic() >= deadline:
            return
        time.sleep(interval)


def backend_json(url: str) -> dict[str, Any]:
    status, body = http_get(url, timeout=5)
    assert status == 200, (status, body[:300])
    return json.loads(body)


@pytest.fixture(scope="module")
def world(ls_server: Any, tmp_path_factory: pytest.TempPathFactory) -> Any:
    """Label Studio, the backend process and the project, shared by the tests below."""
    from analysis.labelstudio import LabelStudioAPI

    ls = ls_server.start()
    api = LabelStudioAPI(ls.url, ls.token)
    port = free_port()
    env = {
        "LABEL_STUDIO_URL": ls.url, "LABEL_STUDIO_API_KEY": ls.token,
        "MODEL_DIR": str(tmp_path_factory.mktemp("backend-models")), "DEVICE": "cpu",
        "TRAIN_EVERY_N_ANNOTATIONS": "0", "TRAIN_EPOCHS": "8", "TRAIN_BATCH_SIZE": "2",
        "TRAIN_LR": "5e-4", "TRAIN_MAX_STEPS": "32", "SIMILAR_K": "3", "LOG_LEVEL": "INFO",
        "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
    }
    cmd = [str(Path(sys.executable).with_name("ner-quality")), "serve", "--host", "127.0.0.1",
           "--port", str(port)]
    backend = start_process(cmd, env, f"http://127.0.0.1:{port}/health", timeout=90,
                            name="nerq-backend", cwd=REPO)

    class World:
        pass

    w = World()
    w.ls, w.api, w.backend, w.url = ls, api, backend, f"http://127.0.0.1:{port}"
    w.env = env
    w.pid = api.create_project("nerq backend integration", ner_label_config())
    data = [{"text": t, "source": "integration-test"} for t, _ in SENTS]
    data += [{"text": t, "source": "integration-test"} for t in UNLABELLED + [PLANTED_TEXT]]
    w.task_ids = api.import_tasks(w.pid, data)
    assert len(w.task_ids) == len(data)
    yield w
    backend.stop()
    try:
        api.delete_project(w.pid)
    except Exception:  # noqa: BLE001 - cleanup only
        pass


def test_connect_annotate_train(world: Any) -> None:
    api, pid = world.api, world.pid
    world.ml_id = api.connect_ml_backend(pid, world.url, title="ner-quality")
    hooks = api.list_webhooks(pid)
    assert any(h["url"].rstrip("/") == world.url + "/webhook" for h in hooks), hooks
    st = backend_json(world.url + f"/status?project={pid}")["projects"][str(pid)]
    assert st["trained"] is False  # /setup reached us
    for tid, (text, ents) in zip(world.task_ids, SENTS):
        api.create_annotation(tid, [region(text, w, lab, k) for k, (w, lab) in enumerate(ents)])
    # LS -> /webhook ANNOTATION_CREATED for each (counted; nothing to score yet)
    wait_for(lambda: backend_json(world.url + f"/status?project={pid}")["projects"][str(pid)]
             ["annotations_since_train"] >= len(SENTS), 30, "annotation webhooks")
    # the "Start training" button: LS -> /webhook START_TRAINING
    from label_studio_sdk import LabelStudio

    LabelStudio(base_url=world.ls.url, api_key=world.ls.token).ml.train(id=world.ml_id)
    st = wait_for(lambda: (s := backend_json(world.url + f"/status?project={pid}")["projects"]
                           [str(pid)])["train"]["status"] in ("done", "failed") and s,
                  400, "training", interval=2)
    assert st["train"]["status"] == "done", st
    world.version = st["model_version"]
    assert world.version.startswith("nerq-") and st["trained"]
    assert st["train"]["crossfit"]["status"] == "done", st["train"]  # TRAIN_FOLDS default 3
    # every annotated task's DEP in Label Studio comes from a fold model that did not train on it
    annotated = world.task_ids[:len(SENTS)]

    def crossfitted() -> Any:
        metas = [(t.get("meta") or {}).get("ner_quality") or {}
                 for t in world.api.tasks_by_id(pid, annotated).values()]
        return len(metas) == len(annotated) and all(
            m.get("dep_source") == "cross-fit" and m.get("model_version") == world.version
            for m in metas) and metas

    wait_for(crossfitted, 120, "cross-fitted DEP on the annotated tasks", interval=2)


def _predictions(api: Any, pid: int) -> dict[int, list[dict[str, Any]]]:
    out = {}
    for page in api.iter_tasks(pid):
        for t in page:
            out[t["id"]] = t.get("predictions") or []
    return out


def test_retrieve_predictions_through_label_studio(world: Any) -> None:
    api, pid = world.api, world.pid
    ids = world.task_ids[len(SENTS):len(SENTS) + len(UNLABELLED)]
    api.retrieve_predictions(pid, ids)
    preds = wait_for(lambda: (p := _predictions(api, pid)) and all(p[i] for i in ids) and p, 60,
                     "stored predictions")
    texts = dict(zip(world.task_ids, [t for t, _ in SENTS] + UNLABELLED + [PLANTED_TEXT]))
    labels = {"PER", "ORG", "LOC", "MISC"}
    n_regions = 0
    for tid in ids:
        mine = [p for p in preds[tid] if p["model_version"] == world.version]
        assert len(mine) == 1, preds[tid]
        assert 0.0 <= mine[0]["score"] <= 1.0
        for r in mine[0]["result"]:
            v = r["value"]
            assert texts[tid][v["start"]:v["end"]] == v["text"]
            assert v["labels"][0] in labels and r["from_name"] == "label"
            n_regions += 1
    assert n_regions >= 3
    merkel = {(r["value"]["text"], r["value"]["labels"][0]) for r in
              next(p for p in preds[ids[0]] if p["model_version"] == world.version)["result"]}
    assert ("Merkel", "PER") in merkel
    # the project's model_version follows the served one (predictions_score sorts on it)
    wait_for(lambda: api.get_project(pid).get("model_version") == world.version, 30,
             "project.model_version")
    # the /setup version equals the per-prediction version: a second retrieval adds nothing
    out = api.retrieve_predictions(pid, ids)
    assert out.get("processed_items") == len(ids)
    holds_for(lambda: all(len(v) == len(preds[i]) for i, v in _predictions(api, pid).items()
                          if i in ids), 6.0, "no duplicate predictions after a second retrieval")


def test_planted_error_is_scored_on_the_task(world: Any) -> None:
    api = world.api
    tid = world.task_ids[-1]
    text = PLANTED_TEXT
    # planted: Merkel annotated as LOC (the model says PER)
    api.create_annotation(tid, [region(text, "Putin", "PER", 0), region(text, "Merkel", "LOC", 1),
                                region(text, "Paris", "LOC", 2)])
    before = api.get_task(tid)
    ann_before = json.dumps(before["annotations"], sort_keys=True)

    def scored() -> Any:
        t = api.get_task(tid)
        return t if "nerq_dep" in t["data"] and "ner_quality" in (t.get("meta") or {}) else None

    task = wait_for(scored, 90, "DEP fields on the planted task", interval=1.0)
    data, meta = task["data"], task["meta"]["ner_quality"]
    # original fields kept exactly
    assert data["text"] == text and data["source"] == "integration-test"
    assert data["nerq_model_version"] == world.version and 0.0 <= data["nerq_dep"] <= 1.0
    assert data["nerq_wrong_tag"] >= 1 and data["nerq_errors"] >= 1
    spans = {s["text"]: s for s in meta["spans"]}
    assert spans["Merkel"]["error"] == "wrong_tag" and spans["Merkel"]["label"] == "LOC"
    assert spans["Merkel"]["dep"] > spans["Putin"]["dep"]
    # the error model's most likely error class of each gold span
    assert all(s["suspect"] in ("wrong_tag", "span_shift", "ghost") for s in meta["spans"])
    sim = spans["Merkel"]["similar"]
    assert sim and all(s["label"] != "LOC" and s["task_id"] != tid for s in sim)
    # the annotation itself is untouched, byte for byte
    assert json.dumps(api.get_task(tid)["annotations"], sort_keys=True) == ann_before
    # the Data Manager can filter on it
    world.planted = tid


def test_predict_project_is_resumable_without_duplicates(world: Any) -> None:
    """``ner-quality predict --project``: same version as the backend, nothing duplicated."""
    from ls_backend.service.bulk_predict import predict_project
    from ls_backend.settings import Settings

    settings = Settings.from_env(world.env)
    first = predict_project(settings, world.pid, batch_size=5, progress=False, api=world.api)
    assert first["model_version"] == world.version and first["failed"] == 0
    n = len(world.task_ids)
    # tasks already predicted by the Label Studio retrieval are skipped
    assert first["tasks"] == n and first["skipped_existing"] >= len(UNLABELLED)
    assert first["predicted"] == n - first["skipped_existing"]
    second = predict_project(settings, world.pid, batch_size=5, progress=False, api=world.api)
    assert second["predicted"] == 0 and second["skipped_existing"] == n
    # exactly one prediction of the served version per task (Label Studio's own race of two
    # /predict calls on quick task opens is cleaned up by the backend a few seconds later)
    wait_for(lambda: all(sum(p["model_version"] == world.version for p in preds[t]) == 1
                         for preds in [_predictions(world.api, world.pid)]
                         for t in world.task_ids), 30,
             "one prediction of the served version per task", interval=1.0)


def test_restart_keeps_state_and_no_duplicate_predictions(world: Any) -> None:
    api, pid = world.api, world.pid
    world.backend.stop()
    world.backend.start(timeout=90)
    health = backend_json(world.url + "/health")
    assert health["projects"][str(pid)]["model_version"] == world.version
    vers = backend_json(world.url + f"/versions?project={pid}")
    assert world.version in vers["versions"]
    ids = world.task_ids[len(SENTS):len(SENTS) + len(UNLABELLED)]
    before = _predictions(api, pid)
    api.retrieve_predictions(pid, ids)
    holds_for(lambda: all(len(v) == len(before[i]) for i, v in _predictions(api, pid).items()
                          if i in ids), 6.0, "no duplicate predictions after the restart")


def _status(world: Any) -> dict[str, Any]:
    return backend_json(world.url + f"/status?project={world.pid}")


def test_rescore_after_training_writes_without_label_studio_calling_back(world: Any) -> None:
    """A training re-scores every annotated task; the writes read tasks through the task list,
    so Label Studio never sends the backend a /predict for them (the old per-task GET did)."""
    api, pid = world.api, world.pid
    from label_studio_sdk import LabelStudio

    before = _status(world)
    predicted0, written0 = before["stats"]["predicted_tasks"], before["stats"]["written"]
    n_annotated = sum(1 for t in api.tasks_by_id(pid, world.task_ids).values()
                      if t.get("annotations"))
    LabelStudio(base_url=world.ls.url, api_key=world.ls.token).ml.train(id=world.ml_id)
    st = wait_for(lambda: (s := _status(world))["projects"][str(pid)]["train"]["status"] == "done"
                  and s["projects"][str(pid)]["model_version"] != world.version and s, 400,
                  "the second training", interval=2)
    world.version = st["projects"][str(pid)]["model_version"]
    done = wait_for(lambda: (s := _status(world))["queue"]["pending"] == 0
                    and s["stats"]["written"] >= written0 + n_annotated and s, 120,
                    "the re-score write-back", interval=1)
    assert done["stats"]["predicted_tasks"] == predicted0  # no /predict caused by the writes
    assert done["queue"]["failed"] == 0
    tasks = api.tasks_by_id(pid, world.task_ids)
    scored = [t for t in tasks.values() if t.get("annotations")]
    assert scored and all(t["data"]["nerq_model_version"] == world.version for t in scored)
    # categories come from the project's thresholds (one fit over every annotated task)
    cats = {t["meta"]["ner_quality"]["category"] for t in scored}
    assert cats <= {"easy", "hard", "mislabeled"} and None not in cats
    th = st["projects"][str(pid)]["thresholds"]
    assert 0.0 <= th["easy"] <= th["mislabeled"] <= 1.0


def test_label_studio_unreachable_then_back_nothing_lost(world: Any) -> None:
    """Writes fail while the backend cannot reach Label Studio (retried with backoff, the queue
    pauses instead of hammering); the jobs survive a kill -9 of the backend and land once
    Label Studio is reachable again."""
    import os
    import signal

    api, pid = world.api, world.pid
    good_url = world.backend.env["LABEL_STUDIO_URL"]
    world.backend.stop()
    world.backend.env["LABEL_STUDIO_URL"] = f"http://127.0.0.1:{free_port()}"  # nobody there
    world.backend.start(timeout=90)
    ids = world.task_ids[len(SENTS):len(SENTS) + len(UNLABELLED)]
    for tid, text in zip(ids, UNLABELLED):
        first = text.split()[0]
        api.create_annotation(tid, [region(text, first, "PER", 0)])  # LS -> /webhook
    st = wait_for(lambda: (s := _status(world))["queue"]["retrying"] >= 1 and s, 60,
                  "failed writes waiting for a retry", interval=0.5)
    assert st["queue"]["pending"] >= 1 and st["stats"]["written"] == 0
    time.sleep(3.0)
    st = _status(world)
    # backoff, not a storm: a handful of attempts in these seconds, nothing given up
    assert st["queue"]["failed"] == 0 and st["stats"]["retried"] <= 4 * len(ids)
    assert any(e["where"].startswith(f"project {pid}") for e in st["recent_errors"])
    # kill -9 with the jobs still queued, restart with Label Studio reachable again
    proc = world.backend.proc
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(10)
    world.backend.proc = None
    world.backend.env["LABEL_STUDIO_URL"] = good_url
    world.backend.start(timeout=90)

    def landed() -> bool:
        tasks = api.tasks_by_id(pid, ids)
        return all(tasks[t]["data"].get("nerq_model_version") == world.version
                   and tasks[t]["meta"].get("ner_quality", {}).get("annotation_id") is not None
                   for t in ids)

    wait_for(landed, 90, "the queued scores after the restart", interval=1)
    st = _status(world)
    assert st["queue"]["pending"] == 0 and st["queue"]["failed"] == 0
    tasks = api.tasks_by_id(pid, ids)
    for tid, text in zip(ids, UNLABELLED):
        assert tasks[tid]["data"]["text"] == text  # original data kept
        assert len(tasks[tid]["annotations"]) == 1  # human annotation untouched
