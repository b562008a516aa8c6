"""Planted errors through the backend: what a data lead finds in Label Studio after a training.

Against a real Label Studio and the real backend process (127.0.0.1, temporary data):

1. a project with the bundled sample (``ls_backend/sample_data``: 323 tasks, 29 planted wrong
   tags, 8 span shifts, 8 missed and 8 extra entities; ``planted.json``), imported with its
   annotations; the backend connected through Label Studio's ML API;
2. "Start training" (``ml.train``) with ``TRAIN_FOLDS=--folds`` (0: the DEP written comes from
   the model trained on the tasks, in-sample; K ≥ 2: the backend cross-fits K fold models after
   the training and writes their out-of-sample DEP);
3. when the training (and its cross-fit) is done and every write has landed, the tasks are read
   back from Label Studio: per planted kind, how many tasks carry ``category: mislabeled`` in
   ``meta.ner_quality`` (the backend's "likely mislabeled"), their DEP rank, and the
   ``dep_source`` written.

Next to it, the same counts from the cross-fitted path of ``ner-quality demo`` (its analysis of
the same sample, ``--demo-analysis``, optional)::

    .venv/bin/python bench/bench_backend_planted.py --folds 3 --out bench/results/backend_planted_k3.json
    .venv/bin/python bench/bench_backend_planted.py --folds 0 --out bench/results/backend_planted_k0.json

Needs ``.venv-ls/bin/label-studio`` (or ``NERQ_LS_BIN``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from bench.bench_live_loop import Backend, log, train_and_wait, wait  # noqa: E402
from bench.common import emit  # noqa: E402

KINDS = ("wrong_tag", "span_shift", "missed", "extra")


def caught(tasks: dict[int, dict[str, Any]], ids_by_kind: dict[str, list[int]]) -> dict[str, Any]:
    """Per kind: planted tasks the backend categorised ``mislabeled``, and their mean DEP rank."""
    metas = {tid: (t.get("meta") or {}).get("ner_quality") or {} for tid, t in tasks.items()}
    dep = {tid: m.get("dep") for tid, m in metas.items() if m.get("dep") is not None}
    order = sorted(dep, key=lambda t: -dep[t])
    rank = {tid: r + 1 for r, tid in enumerate(order)}
    planted = {i for ids in ids_by_kind.values() for i in ids}
    flagged = {tid for tid, m in metas.items() if m.get("category") == "mislabeled"}
    out: dict[str, Any] = {
        "mislabeled_flagged": len(flagged),
        "mislabeled_precision_planted": round(len(flagged & planted) / len(flagged), 3)
        if flagged else None,
        "dep_sources": {s: sum(1 for m in metas.values() if m.get("dep_source") == s)
                        for s in sorted({str(m.get("dep_source")) for m in metas.values()})},
        "scored_tasks": len(dep),
    }
    for kind, ids in ids_by_kind.items():
        ranks = [rank[i] for i in ids if i in rank]
        out[kind] = {"planted": len(ids), "mislabeled": sum(i in flagged for i in ids),
                     "in_top_k": sum(r <= len(planted) for r in ranks),
                     "mean_dep_rank": round(sum(ranks) / len(ranks), 1) if ranks else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--folds", type=int, default=3, help="TRAIN_FOLDS (0 = in-sample)")
    ap.add_argument("--epochs", type=int, default=3, help="TRAIN_EPOCHS")
    ap.add_argument("--timeout", type=float, default=3600)
    ap.add_argument("--demo-analysis", help="analysis.json of `ner-quality demo` (same sample)")
    ap.add_argument("--out", help="also write the JSON result here")
    a = ap.parse_args(argv)

    from analysis.labelstudio import LabelStudioAPI
    from label_studio_sdk import LabelStudio
    from bench.common import label_studio_or_say
    from ls_backend.demo import (
        free_port,
        planted,
        sample_tasks,
        start_label_studio,
        stop,
    )

    exe = label_studio_or_say()
    if not exe:
        return 2
    work = Path(tempfile.mkdtemp(prefix="nerq-planted-"))
    ls_proc = backend = None
    result: dict[str, Any] = {"bench": "backend_planted", "train_folds": a.folds,
                              "train_epochs": a.epochs, "machine": f"{os.cpu_count()} cores"}
    try:
        (work / "ls").mkdir()
        ls_proc, ls_url, key = start_label_studio(exe, work / "ls")
        api = LabelStudioAPI(ls_url, key)
        sdk = LabelStudio(base_url=ls_url, api_key=key)
        tasks, config = sample_tasks()
        pid = api.create_project("nerq planted bench", config)
        ids = api.import_tasks(pid, [{"data": t["data"], "annotations": t["annotations"]}
                                     for t in tasks])
        log(f"imported {len(ids)} sample tasks into project {pid}")
        plant = planted()
        ids_by_kind = {k: [ids[i] for i in plant[k]] for k in KINDS}
        env = {**os.environ, "LABEL_STUDIO_URL": ls_url, "LABEL_STUDIO_API_KEY": key,
               "MODEL_DIR": str(work / "models"), "DEVICE": "cpu", "HF_HUB_OFFLINE": "1",
               "TRANSFORMERS_OFFLINE": "1", "TRAIN_EVERY_N_ANNOTATIONS": "0",
               "TRAIN_EPOCHS": str(a.epochs), "TRAIN_FOLDS": str(a.folds), "LOG_LEVEL": "INFO"}
        backend = Backend(env, free_port(), work / "backend.log")
        backend.start()
        ml_id = api.connect_ml_backend(pid, backend.url, title="ner-quality")
        v0 = backend.status(pid)["projects"][str(pid)]["model_version"]
        t0 = time.time()
        version, t_switch = train_and_wait(api, sdk, ml_id, backend, pid, v0, a.timeout)
        log(f"serving {version} after {t_switch - t0:.0f} s")

        def finished() -> Any:
            st = backend.status(pid)
            p = st["projects"][str(pid)]
            if p["train"]["status"] == "failed" or (p["train"].get("crossfit") or {}).get(
                    "status") == "failed":
                raise RuntimeError(f"training failed: {p['train']}")
            q = st.get("queue") or {}
            return (p["train"]["status"] == "done" and not q.get("pending")
                    and not q.get("running") and p)

        p = wait(finished, a.timeout, "the cross-fit and its writes", interval=1.0)
        t_done = time.time()
        result.update(version=version, train_s=round(t_switch - t0, 1),
                      crossfit=p["train"].get("crossfit"),
                      total_s=round(t_done - t0, 1),
                      queue_failed=backend.status(pid)["queue"]["failed"])
        log(f"done after {t_done - t0:.0f} s: {p['train'].get('crossfit')}")
        got = api.tasks_by_id(pid, ids)
        result["backend"] = caught(got, ids_by_kind)
        if a.demo_analysis:
            res = json.loads(Path(a.demo_analysis).read_text())
            id2idx = {t["id"]: t["index"] for t in res["tasks"]}
            alert = next((x for x in res["alerts"] if x["name"] == "likely mislabeled"), None)
            likely = {id2idx[i] for i in (alert["task_ids"] if alert else [])}
            cat = {t["index"] for t in res["tasks"] if t.get("category") == "mislabeled"}
            result["demo_crossfit"] = {
                k: {"planted": len(plant[k]), "likely_mislabeled_alert":
                    sum(i in likely for i in plant[k]),
                    "category_mislabeled": sum(i in cat for i in plant[k])} for k in KINDS}
    finally:
        if backend is not None:
            backend.stop()
        stop(ls_proc)
    emit(result, a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
