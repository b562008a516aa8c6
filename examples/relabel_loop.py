"""A relabeling loop with the ner-quality library (no raw HTTP: everything goes through
``analysis.labelstudio.LabelStudioAPI``).

1. sync the project into the local store;
2. analyse with out-of-sample probabilities (``--probs``, e.g. from ``ner-quality dep``'s
   cross-fitting, or ``--model DIR``);
3. push DEP / error counts and one review view per alert (annotators work through
   "Review: likely mislabeled" etc. in the Data Manager);
4. ``--after``: re-sync once the fixes are in, analyse again and print before/after metrics.

    LABEL_STUDIO_URL=http://localhost:8080 LABEL_STUDIO_API_KEY=... \\
        python examples/relabel_loop.py --project 3 --probs probs.npz --state loop.json
    # ... annotators fix the flagged tasks in Label Studio ...
    python examples/relabel_loop.py --project 3 --probs probs.npz --state loop.json --after

(Probabilities are per task in task-id order; after fixes the tokens are unchanged, so the
same file still lines up.  Re-run cross-fitting for a fresh model view of the fixed data.)
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path

from analysis.formats import from_ls_tasks
from analysis.labelstudio import LabelStudioAPI
from analysis.labelstudio.push import plan_push
from analysis.labelstudio.store import TaskStore, store_path, sync_project
from analysis.probs import load_probs
from analysis.review.analyze import analyze_dataset
from ls_backend.commands.push import apply_plan


def summary(res) -> dict:  # type: ignore[no-untyped-def]
    m = res.metrics
    return {
        "micro_f1_vs_model": (m.get("prf", {}).get("micro avg", {}) or {}).get("f1-score"),
        "mean_dep": (m.get("dep") or {}).get("mean"),
        "errors": m.get("error_totals"),
        "alerts": {a.name: len(a.task_ids) for a in res.alerts},
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=int, required=True)
    ap.add_argument("--probs", required=True)
    ap.add_argument("--state", default="relabel_loop.json", help="before-metrics file")
    ap.add_argument("--after", action="store_true", help="re-sync and compare with before")
    a = ap.parse_args()
    url, key = os.environ["LABEL_STUDIO_URL"], os.environ["LABEL_STUDIO_API_KEY"]
    api = LabelStudioAPI(url, key)
    project = api.get_project(a.project)
    with TaskStore(store_path(url, a.project)) as st:
        r = sync_project(api, a.project, st, progress=True,
                         project_info={"id": a.project, "url": url,
                                       "label_config": project["label_config"]})
        print(f"synced: {r.fetched} fetched, {r.written} changed, {r.deleted} deleted")
        tasks = st.tasks()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = from_ls_tasks(tasks, label_config=project["label_config"], strict=False)
    res = analyze_dataset(ds, probs=load_probs(a.probs))
    state = Path(a.state)
    if a.after:
        before = json.loads(state.read_text())
        after = summary(res)
        for k in after:
            print(f"{k}:\n  before: {before.get(k)}\n  after:  {after[k]}")
        return
    state.write_text(json.dumps(summary(res), indent=1))
    plan = plan_push(res, model_version="relabel-loop", dataset=ds)
    done = apply_plan(api, a.project, plan, {int(t["id"]): t for t in tasks})
    print(f"pushed {len(done['tasks_changed'])} task updates; review queues:")
    for title, ids in done["views"].items():
        print(f"  {title}: {len(ids)} tasks  ({url}/projects/{a.project}/data)")


if __name__ == "__main__":
    main()
