"""``ner-quality push --project ID``: write the analysis back to Label Studio.

Analyses the synced store (``sync`` first; same ``--probs`` / ``--model`` options as
``analyze``) and, through ``analysis.labelstudio``:

* merges DEP and error counts into ``task.data`` (``nerq_*`` fields, the ones the ML backend
  writes) and a summary into ``task.meta["ner_quality"]`` — read-merge-write, original fields
  kept, annotations never touched;
* creates or updates one Data Manager view per alert, ``"Review: <alert>"``, showing exactly
  the flagged tasks ordered by DEP (highest first); the view of an alert that no longer fires
  is emptied (kept, so annotators' bookmarks still work, but showing no stale tasks);
* with ``--suggest``, attaches the model's labelling of each flagged task as a prediction
  under its own ``model_version`` (replacing the previous one, never duplicating).

Idempotent: a second push of the same analysis changes nothing.  ``--dry-run`` prints the plan.

``--view-tasks FILE --view TITLE`` does not analyse: it creates or updates one Data Manager
view showing exactly the task ids of FILE (the console's "download the filtered tasks" CSV, or
one id per line), in the file's order of DEP.  Titles starting with "Review:" are the alert
views (emptied when their alert stops firing) and are refused here; the console proposes
"Console: <its filters>".
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from .analyze import add_input_args, run_analysis


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("push", help="write DEP/errors to tasks and create review views",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_input_args(p)
    p.add_argument("--api-key", default=None, help="default $LABEL_STUDIO_API_KEY")
    p.add_argument("--model-version", default="ner-quality-analysis",
                   help="written to nerq_model_version (default ner-quality-analysis)")
    p.add_argument("--suggest", action="store_true",
                   help="attach the model's labelling of flagged tasks as a prediction")
    p.add_argument("--dry-run", action="store_true", help="print what would change; write nothing")
    p.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    p.add_argument("--view-tasks", metavar="FILE",
                   help="make one view of the task ids in FILE (the console's CSV, or one id "
                        "per line) instead of pushing an analysis; needs --view")
    p.add_argument("--view", metavar="TITLE", help="title of the --view-tasks view")
    return p


def read_task_ids(path: str) -> list[int]:
    """Task ids of a console CSV (its ``task_id`` column) or of a file with one id per line,
    in file order, duplicates dropped."""
    import csv
    import io
    from pathlib import Path

    text = Path(path).read_text(encoding="utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))  # quoted texts may hold commas and newlines
    col, start = 0, 0
    if rows and rows[0] and not rows[0][0].strip().lstrip("-").isdigit():
        head = [h.strip() for h in rows[0]]
        if "task_id" not in head:
            raise ValueError(f"{path}: the header has no task_id column (got {head[:6]})")
        col, start = head.index("task_id"), 1
    ids: list[int] = []
    for n, row in enumerate(rows[start:], start=start + 1):
        if not row or not "".join(row).strip():
            continue
        v = row[col].strip() if col < len(row) else ""
        if not v.isdigit() or int(v) < 1:
            raise ValueError(f"{path} row {n}: {v!r} is not a task id")
        ids.append(int(v))
    return list(dict.fromkeys(ids))


def push_view(args: argparse.Namespace) -> int:
    """``--view-tasks``: one view of the listed tasks; a task id the project lacks is named and
    the command exits 2 (the view shows the others)."""
    from analysis.review.alerts import VIEW_PREFIX

    from .sync import make_api

    if args.project is None or not args.view:
        raise ValueError("--view-tasks needs --project ID and --view TITLE")
    if args.view.startswith(VIEW_PREFIX):
        raise ValueError(f"view titles starting with {VIEW_PREFIX!r} are the alert views, "
                         f"emptied when their alert stops firing: choose another title "
                         f"(e.g. 'Console: ...')")
    ids = read_task_ids(args.view_tasks)
    if not ids:
        raise ValueError(f"{args.view_tasks}: no task ids")
    summary: dict[str, Any] = {"project": args.project, "view": args.view, "tasks": len(ids),
                               "dry_run": bool(args.dry_run)}
    if not args.dry_run:
        url = args.url or args.settings.label_studio_url
        api = make_api(url, args.api_key or args.settings.label_studio_api_key)
        vid = api.upsert_view(int(args.project), args.view, task_ids=ids)
        shown = set(api.view_task_ids(vid))
        summary.update(view_id=vid, shown=len(shown),
                       missing=[i for i in ids if i not in shown])
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        verb = "would show" if args.dry_run else "shows"
        print(f"view {args.view!r} {verb} {summary.get('shown', len(ids))} task(s)")
    if summary.get("missing"):
        m = summary["missing"]
        print(f"error: {len(m)} task id(s) of {args.view_tasks} are not in project "
              f"{args.project}: {', '.join(map(str, m[:20]))}{' ...' if len(m) > 20 else ''}",
              file=sys.stderr)
        return 2
    return 0


def apply_plan(api: Any, project_id: int, plan: Any, current: dict[int, dict[str, Any]],
               *, dry_run: bool = False) -> dict[str, Any]:
    """Send the changed parts of ``plan``; returns what was (or would be) written."""
    from analysis.labelstudio.push import META_KEY, pending_updates
    from analysis.labelstudio.records import keep_similar

    todo = pending_updates(plan, current)
    summary: dict[str, Any] = {
        "project": project_id,
        "tasks_changed": [u.task_id for u in todo],
        "views": {v.title: list(v.task_ids) for v in plan.views},
        "predictions": [p.task_id for p in plan.predictions],
        "dry_run": dry_run,
    }
    if dry_run:
        summary["plan"] = plan.to_dict()
        summary["plan"]["updates"] = [
            {"task_id": u.task_id, "data": u.data} for u in todo
        ]
        return summary
    for u in todo:
        have = ((current.get(u.task_id) or {}).get("meta") or {}).get(META_KEY) or {}
        meta = {**u.meta, "spans": keep_similar(list(u.meta.get("spans") or []), have)}
        api.merge_task_fields(u.task_id, data=u.data, meta={META_KEY: meta})
    for v in plan.views:
        api.upsert_view(project_id, v.title, task_ids=list(v.task_ids), ordering=list(v.ordering))
    # a review view of an alert that no longer fires is emptied, never left showing stale tasks
    from analysis.review.alerts import VIEW_PREFIX

    planned = {v.title for v in plan.views}
    cleared = []
    for view in api.list_views(project_id):
        title = str((view.get("data") or {}).get("title", ""))
        if title.startswith(VIEW_PREFIX) and title not in planned:
            if api.view_task_ids(int(view["id"])):
                api.upsert_view(project_id, title, task_ids=[])
                cleared.append(title)
    summary["views_cleared"] = cleared
    for p in plan.predictions:
        api.create_prediction(p.task_id, p.result, score=0.0 if p.score is None else p.score,
                              model_version=p.model_version,
                              replace=True)
    return summary


def run(args: argparse.Namespace) -> int:
    from analysis.labelstudio.push import plan_push
    from analysis.labelstudio.store import TaskStore, store_path

    from .sync import make_api

    if args.view_tasks:
        return push_view(args)
    if args.view:
        raise ValueError("--view names the view of --view-tasks FILE")
    if args.project is None and args.store is None:
        raise ValueError("push needs --project ID (a synced store); files have no Label Studio tasks")
    res, inp = run_analysis(args)
    if inp.project_id is None:
        raise ValueError("the store does not name its project; pass --project ID")
    plan = plan_push(res, model_version=args.model_version, dataset=inp.dataset,
                     suggest=args.suggest)
    path = (store_path(inp.url, args.project, root=args.settings.cache_dir) if args.store is None
            else args.store)
    with TaskStore(path) as st:
        current = {int(t["id"]): t for t in st.tasks()}
    api = None if args.dry_run else make_api(
        inp.url, args.api_key or args.settings.label_studio_api_key)
    summary = apply_plan(api, inp.project_id, plan, current, dry_run=args.dry_run)
    if not args.dry_run:
        # keep the store in step with what Label Studio now holds
        from analysis.labelstudio.store import sync_project

        with TaskStore(path) as st:
            sync_project(api, inp.project_id, st, progress=False,
                         clock_skew_s=args.settings.sync_skew_s)
    if args.json:
        json.dump(summary, sys.stdout)
        sys.stdout.write("\n")
    else:
        verb = "would change" if args.dry_run else "changed"
        print(f"{verb} {len(summary['tasks_changed'])} task(s); views: "
              + ", ".join(f"{k} ({len(v)})" for k, v in summary["views"].items()))
        if args.dry_run:
            for u in summary["plan"]["updates"][:50]:
                print(f"  task {u['task_id']}: {json.dumps(u['data'])}")
    return 0
