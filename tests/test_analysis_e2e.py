"""End to end against a real Label Studio: import a noisy sample, sync, analyze, push.

The probabilities come from a file (no training): a "model" that agrees with the annotation
everywhere except on the planted tasks of the bundled sample, where it confidently
disagrees (wrong type on the first entity) or finds an entity the annotator left out.
"""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ls_backend.cli import main
from ls_backend.demo import planted, sample_tasks

pytestmark = pytest.mark.integration

N_TASKS = 120  # a slice of the sample keeps the test quick


def _cli(*argv: str) -> dict[str, Any]:
    buf = io.StringIO()
    with redirect_stdout(buf):
        rc = main(list(argv))
    assert rc == 0
    return json.loads(buf.getvalue())


def _title(view: dict[str, Any]) -> str:
    return str(view.get("title") or (view.get("data") or {}).get("title"))


def _probs(ds: Any, wrong: set[int], ghost: set[int]) -> list[np.ndarray]:
    from analysis.dataset import token_spans
    from analysis.schemes import encode
    from analysis.tags import tag_names

    tags = list(tag_names(ds.labels))
    out = []
    for t in ds.tasks:
        enc = encode(len(t.tokens), token_spans(t, "gold", warn=False), "iob2")
        # as confident as a trained model on clear cases (what the error model is fitted on)
        p = np.full((len(enc), len(tags)), 1e-4, np.float32)
        for k, tg in enumerate(enc):
            p[k, tags.index(tg)] = 1.0
        sid = t.meta.get("sample_index")
        if sid in wrong:  # first entity token: confidently another type
            k = next(i for i, tg in enumerate(enc) if tg != "O")
            typ = enc[k][2:]
            other = next(x for x in ds.labels if x != typ)
            p[k] = 1e-4
            p[k, tags.index(f"B-{other}")] = 1.0
        if sid in ghost:  # an O token the model is sure is an entity
            k = next(i for i, tg in enumerate(enc) if tg == "O" and t.tokens.tokens[i].istitle()
                     ) if any(tg == "O" and t.tokens.tokens[i].istitle() for i, tg in enumerate(enc)) \
                else next(i for i, tg in enumerate(enc) if tg == "O")
            p[k] = 1e-4
            p[k, tags.index("B-PER")] = 1.0
        out.append(p / p.sum(axis=1, keepdims=True))
    return out


def test_sync_analyze_push_roundtrip(label_studio: Any, ls_project: Any, ls_api: Any,
                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from analysis.formats import from_ls_tasks
    from analysis.labelstudio.store import TaskStore

    monkeypatch.setenv("NERQ_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", label_studio.token)
    tasks, config = sample_tasks()
    tasks = [{k: v for k, v in t.items() if k != "id"} for t in tasks[:N_TASKS]]
    pl = planted()
    wrong = {i for i in pl["wrong_tag"] if i < N_TASKS}
    ghost = {i for i in pl["missed"] if i < N_TASKS}
    pid = ls_project(config, tasks=tasks)
    url = label_studio.url
    store = str(tmp_path / "store.sqlite3")

    r1 = _cli("sync", "--project", str(pid), "--url", url, "--api-key", label_studio.token,
              "--store", store, "--no-progress", "--json")
    assert r1["fetched"] == N_TASKS and r1["total"] == N_TASKS

    with TaskStore(store) as st:
        ds = from_ls_tasks(st.tasks(), label_config=config, strict=False)
    from analysis.probs import ModelOutput, save_output
    from analysis.tags import TagSet

    npz = save_output(tmp_path / "p.npz", ModelOutput.from_arrays(_probs(ds, wrong, ghost),
                                                                  TagSet.for_labels(ds.labels)))
    by_sid = {t.meta["sample_index"]: t.id for t in ds.tasks}

    # (--no-embed: near one-hot synthetic probabilities; the embedding path is pinned in
    # test_cli_dep.py; what this test is about is the round trip)
    res = _cli("analyze", "--store", store, "--probs", str(npz), "--json", "--no-embed")
    alerts = {a["name"]: a for a in res["alerts"]}
    assert {by_sid[i] for i in wrong} <= set(alerts["likely mislabeled"]["task_ids"])
    assert {by_sid[i] for i in ghost} <= set(alerts["overlooked spans"]["task_ids"])

    before = {t["id"]: t for t in ls_api.export_tasks(pid)}
    push_args = ["push", "--store", store, "--probs", str(npz), "--url", url, "--suggest", "--json",
                 "--no-embed"]
    p1 = _cli(*push_args)
    assert len(p1["tasks_changed"]) == N_TASKS

    # views: one per alert, exactly the flagged tasks, highest DEP first
    views = {_title(v): v for v in ls_api.list_views(pid)}
    for name, a in alerts.items():
        if not a["task_ids"]:
            continue
        v = views[f"Review: {name}"]
        shown = ls_api.view_task_ids(v["id"])
        assert sorted(shown) == sorted(a["task_ids"]), name
    after = {t["id"]: t for t in ls_api.export_tasks(pid)}
    tid = by_sid[min(wrong)]
    t = after[tid]
    assert t["data"]["text"] == before[tid]["data"]["text"]
    assert t["data"]["nerq_errors"] >= 1 and t["data"]["nerq_dep"] > 0.5
    assert "likely mislabeled" in t["meta"]["ner_quality"]["alerts"]
    # annotations untouched everywhere; one suggestion prediction on flagged tasks
    for k, task in after.items():
        assert [a["result"] for a in task["annotations"]] == \
            [a["result"] for a in before[k]["annotations"]]
    assert sum(1 for p in after[tid]["predictions"] if p["model_version"].endswith("-suggest")) == 1

    # a review view whose alert no longer fires (left by an earlier push) gets emptied
    stale = ls_api.upsert_view(pid, "Review: an alert that stopped firing", task_ids=[tid])
    assert ls_api.view_task_ids(stale) == [tid]

    # second push: nothing changes, no duplicate views or predictions
    p2 = _cli(*push_args)
    assert p2["tasks_changed"] == []
    assert p2["views_cleared"] == ["Review: an alert that stopped firing"]
    assert ls_api.view_task_ids(stale) == []
    again = {t["id"]: t for t in ls_api.export_tasks(pid)}
    assert {k: (t["data"], t["meta"]) for k, t in again.items()} == \
        {k: (t["data"], t["meta"]) for k, t in after.items()}
    titles = [_title(v) for v in ls_api.list_views(pid)]
    assert len(titles) == len(set(titles))
    assert sum(1 for p in again[tid]["predictions"] if p["model_version"].endswith("-suggest")) == 1

    # the console's filtered set as a view: the CSV's task ids, exactly, once; re-run = same view
    chosen = sorted(alerts["likely mislabeled"]["task_ids"])[:5]
    csv_file = tmp_path / "filtered_tasks.csv"
    csv_file.write_text("task_id,dep,text\n" + "".join(f'{i},0.9,"a, b"\n' for i in chosen))
    view_args = ["push", "--project", str(pid), "--url", url, "--view-tasks", str(csv_file),
                 "--view", "Console: likely mislabeled", "--json"]
    v1 = _cli(*view_args)
    assert v1["shown"] == len(chosen) and v1["missing"] == []
    v2 = _cli(*view_args)
    assert v2["view_id"] == v1["view_id"]
    assert sorted(ls_api.view_task_ids(v1["view_id"])) == chosen
    assert [_title(v) for v in ls_api.list_views(pid)].count("Console: likely mislabeled") == 1
    # an id the project lacks is named, exit 2; an alert-view title is refused
    csv_file.write_text("task_id\n" + f"{chosen[0]}\n99999999\n")
    with redirect_stdout(io.StringIO()):
        assert main(view_args) == 2
        assert main([*view_args[:-3], "--view", "Review: mine"]) == 2


def test_interrupted_sync_resumes(label_studio: Any, ls_project: Any, ls_api: Any,
                                  tmp_path: Path) -> None:
    from analysis.labelstudio import LabelStudioAPI, LabelStudioUnavailable
    from analysis.labelstudio.store import TaskStore, sync_project

    tasks, config = sample_tasks()
    tasks = [{k: v for k, v in t.items() if k != "id"} for t in tasks[:100]]
    pid = ls_project(config, tasks=tasks)
    api = LabelStudioAPI(label_studio.url, label_studio.token)
    pages = {"n": 0}

    def stop_after_two(n: int) -> None:
        pages["n"] += 1
        if pages["n"] == 2:
            label_studio.stop()  # Label Studio goes down mid-sync

    with TaskStore(tmp_path / "s.sqlite3") as st:
        with pytest.raises(LabelStudioUnavailable):
            sync_project(api, pid, st, page_size=20, progress=stop_after_two)
        assert st.check() == [] and len(st) == 40
        assert st.get_state("run") is not None
        label_studio.start()
        api = LabelStudioAPI(label_studio.url, label_studio.token)
        r = sync_project(api, pid, st, page_size=20, clock_skew_s=0)
        assert r.resumed and r.fetched == 60
        assert st.ids() == api.task_ids(pid) and st.check() == []
        # incremental: after a sync, the next one fetches only what changed since (plus the
        # tasks sharing the newest updated_at, which the >= watermark includes)
        first, second = st.ids()[5], st.ids()[70]
        api.create_annotation(first, [])
        sync_project(api, pid, st, page_size=20, clock_skew_s=0)
        assert len(st.get(first)["annotations"]) == 2
        api.create_annotation(second, [])
        r3 = sync_project(api, pid, st, page_size=20, clock_skew_s=0)
        assert not r3.resumed and 1 <= r3.fetched <= 2 and r3.written == 1
        assert len(st.get(second)["annotations"]) == 2
