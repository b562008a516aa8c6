"""Admission control and state hygiene of the backend (Flask test client, no Label Studio).

Each test pins one defect found by probing the running backend: no request budget, a poison
task failing its batch, rejected requests changing stored state, non-ASCII basic auth, nested
JSON, failed trainings restarting on every webhook, model folders kept forever.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

from test_defects import agreeing_request

from analysis.labelstudio import fields as lsf
from ls_backend.app import create_app
from ls_backend.service.scoring import score_tasks
from ls_backend.service.state import ProjectState
from ls_backend.settings import Settings

REPO = Path(__file__).resolve().parents[1]
CONLL_XML = (REPO / "label_config" / "conll2003.xml").read_text(encoding="utf-8")
TWO_LABELS_XML = """<View>
  <Labels name="label" toName="text"><Label value="PER"/><Label value="LOC"/></Labels>
  <Text name="text" value="$text"/>
</View>"""


def make_app(tmp: Path, **env: str) -> Any:
    base = {"MODEL_DIR": str(tmp), "DEVICE": "cpu", "LOG_LEVEL": "INFO"}
    base.update(env)
    return create_app(Settings.from_env(base))


def predict_body(texts: list[str], pid: str = "5") -> dict[str, Any]:
    return {"project": pid, "label_config": CONLL_XML,
            "tasks": [{"id": i + 1, "data": {"text": t}} for i, t in enumerate(texts)]}


def test_request_budgets_answer_413_with_the_numbers(tmp_path: Path) -> None:
    app = make_app(tmp_path, MAX_REQUEST_CHARS="1000", MAX_BODY_BYTES="4096")
    c = app.test_client()
    r = c.post("/predict", json=predict_body(["x" * 600, "y" * 600]))
    assert r.status_code == 413
    assert "1200 characters" in r.json["error"] and "MAX_REQUEST_CHARS=1000" in r.json["error"]
    r = c.post("/predict", data=json.dumps(predict_body(["z" * 900] * 6)),
               content_type="application/json")
    assert r.status_code == 413 and "error" in r.json
    assert not (tmp_path / "5").exists()  # refused requests leave no state behind
    assert c.get("/health").status_code == 200


def test_nested_json_is_a_400(tmp_path: Path) -> None:
    c = make_app(tmp_path).test_client()
    body = "[" * 100_000 + "]" * 100_000
    r = c.post("/predict", data=body, content_type="application/json")
    assert r.status_code == 400 and "nested too deeply" in r.json["error"]


def test_non_ascii_basic_auth(tmp_path: Path) -> None:
    c = make_app(tmp_path, BASIC_AUTH_USER="jörg", BASIC_AUTH_PASS="pässwort").test_client()

    def hdr(user: str, pw: str) -> dict[str, str]:
        tok = base64.b64encode(f"{user}:{pw}".encode()).decode()
        return {"Authorization": f"Basic {tok}"}

    assert c.get("/health", headers=hdr("jörg", "pässwort")).status_code == 200
    assert c.get("/health", headers=hdr("jörg", "passwort")).status_code == 401
    assert c.get("/health", headers=hdr("joerg", "pässwort")).status_code == 401
    assert c.get("/health").status_code == 401


def test_reserved_project_ids_are_refused(tmp_path: Path) -> None:
    c = make_app(tmp_path).test_client()
    for pid in ("__base__", "__x", "-1"):
        r = c.post("/setup", json={"project": pid, "schema": CONLL_XML})
        assert r.status_code == 400 and "reserved" in r.json["error"]
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no project state was made


def test_a_request_of_only_bad_tasks_stores_nothing(tmp_path: Path) -> None:
    c = make_app(tmp_path).test_client()
    r = c.post("/predict", json={"project": "6", "label_config": CONLL_XML,
                                 "tasks": [{"id": 1, "data": {"other": "x"}}]})
    assert r.status_code == 422 and "task 1" in r.json["error"]
    assert not (tmp_path / "6").exists()


def test_poison_task_fails_alone_and_is_named(tmp_path: Path) -> None:
    c = make_app(tmp_path).test_client()
    r = c.post("/predict", json=predict_body(["Good text .", "bad \ud800 text", "Also good ."]))
    assert r.status_code == 200
    res = r.json["results"]
    assert len(res) == 3 and "error" not in res[0] and "error" not in res[2]
    assert "task 2" in res[1]["error"] and "U+D800" in res[1]["error"]


def test_a_409_leaves_the_stored_config_alone(tmp_path: Path) -> None:
    app = make_app(tmp_path)
    c = app.test_client()
    assert c.post("/setup", json={"project": "7", "schema": CONLL_XML}).status_code == 200
    backend = app.extensions["nerq_backend"]

    def trained(s: ProjectState) -> None:  # as after a training on the four CoNLL labels
        s.model_path, s.model_version = str(tmp_path / "m"), "v-trained"
        s.model_labels = ("PER", "ORG", "LOC", "MISC")

    backend.store.update("7", trained)
    r = c.post("/predict", json={"project": "7", "label_config": TWO_LABELS_XML,
                                 "tasks": [{"id": 1, "data": {"text": "Anna went home ."}}]})
    assert r.status_code == 409 and "ORG" in r.json["error"]
    assert backend.store.get("7").label_config == CONLL_XML


def _webhook(tid: int) -> dict[str, Any]:
    return {"action": "ANNOTATION_CREATED", "project": {"id": 8, "label_config": CONLL_XML},
            "task": {"id": tid, "data": {"text": "Anna went home ."}},
            "annotation": {"id": tid, "result": []}}


def test_a_failed_training_backs_off_and_resets_its_counter(tmp_path: Path) -> None:
    # no Label Studio configured: a training cannot read its tasks and fails
    app = make_app(tmp_path, TRAIN_EVERY_N_ANNOTATIONS="2")
    c = app.test_client()
    backend = app.extensions["nerq_backend"]
    for tid in (1, 2):
        assert c.post("/webhook", json=_webhook(tid)).status_code == 200
    assert backend.wait_training("8", 60)
    st = backend.store.get("8")
    assert st.train["status"] == "failed" and st.train["failures"] == 1
    assert st.annotations_since_train == 0 and st.train["retry_after"] > time.time()
    for tid in range(3, 40):  # many more annotations: no training storm during the backoff
        reply = c.post("/webhook", json=_webhook(tid)).json
        assert reply["train"] is None
    st = backend.store.get("8")
    assert st.train["failures"] == 1
    status = c.get("/status?project=8").json["projects"]["8"]
    assert status["train"]["status"] == "failed"


def test_old_model_versions_and_crash_leftovers_are_removed(tmp_path: Path) -> None:
    app = make_app(tmp_path, KEEP_MODEL_VERSIONS="2")
    backend = app.extensions["nerq_backend"]
    models = tmp_path / "9" / "models"
    names = ["20260101T000000", "20260102T000000", "20260103T000000", "20260104T000000"]
    for n in names + ["20260105T000000-crashed"]:
        (models / n).mkdir(parents=True)
        (models / n / "weights.bin").write_bytes(b"x" * 10)

    def state(s: ProjectState) -> None:
        s.versions = [{"version": f"v{i}", "path": str(models / n)} for i, n in enumerate(names)]
        s.model_path, s.model_version = str(models / names[-1]), "v3"

    st = backend.store.update("9", state, create=True)
    assert backend.trainer.prune_versions(st) == ["v0", "v1"]
    assert sorted(p.name for p in models.iterdir()) == names[2:] + ["20260105T000000-crashed"]
    assert [v.get("removed", False) for v in backend.store.get("9").versions] == [
        True, True, False, False]
    removed = backend.trainer.remove_leftovers()
    assert [Path(p).name for p in removed] == ["20260105T000000-crashed"]
    assert sorted(p.name for p in models.iterdir()) == names[2:]


def test_live_categories_use_the_project_thresholds() -> None:
    _, prepared, _, preds, model = agreeing_request("iob2")

    def cats(th: Any) -> list[Any]:
        s = score_tasks(prepared, preds, model=model, version="v1", index=None, similar_k=0,
                        thresholds=th)
        return [w["meta"][lsf.META_KEY]["category"] for w in s.overlays.values()]

    assert set(cats(None)) == {None}
    assert set(cats({"easy": 1.1, "mislabeled": 1.2})) == {"easy"}        # all below easy
    assert set(cats({"easy": -1.0, "mislabeled": -0.5})) == {"mislabeled"}
    fitted = score_tasks(prepared, preds, model=model, version="v1", index=None, similar_k=0,
                         thresholds="fit")
    assert fitted.thresholds is not None
    assert all(c in ("easy", "hard", "mislabeled") for c in cats("fit"))
