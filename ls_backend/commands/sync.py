"""``ner-quality sync``: pull a project's tasks into the local store (incremental, resumable).

``ner-quality sync --project ID`` reads ``LABEL_STUDIO_URL`` / ``LABEL_STUDIO_API_KEY`` (or
``--url`` / ``--api-key``) and writes ``$NERQ_CACHE_DIR/<host>/<project>/store.sqlite3``
(default cache dir ``~/.cache/ner-quality``; ``--store`` overrides the path).  The first run
fetches every task (paged, progress bar on stderr); later runs fetch only tasks whose
``updated_at`` moved since the last complete sync and drop tasks deleted in Label Studio.  An
interrupted run (Label Studio down, Ctrl-C) leaves whole tasks only; the next run resumes.

``--from-file export.json`` (a Label Studio JSON export) or a CoNLL file fills a store from a
file instead (tasks without ids get ``index + 1``); the store then holds exactly that file.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> argparse.ArgumentParser:
    p = sub.add_parser("sync", help="pull project tasks into the local store",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--project", type=int, metavar="ID", help="Label Studio project id")
    p.add_argument("--from-file", metavar="FILE", help="fill the store from an export / CoNLL file")
    p.add_argument("--url", default=None, help="Label Studio URL (default $LABEL_STUDIO_URL)")
    p.add_argument("--api-key", default=None, help="API token (default $LABEL_STUDIO_API_KEY)")
    p.add_argument("--store", metavar="PATH", help="store file (default: under $NERQ_CACHE_DIR)")
    p.add_argument("--page-size", type=int, default=100)
    p.add_argument("--full", action="store_true", help="ignore the watermark, fetch everything")
    p.add_argument("--label-config", metavar="XML", help="for --from-file CoNLL input")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    return p


def tasks_from_file(path: str, *, label_config: str | None = None
                    ) -> tuple[list[dict[str, Any]], str | None]:
    """Label Studio task dicts (with ids) and a label config from an export or CoNLL file."""
    from analysis.formats import load, to_ls_tasks
    from analysis.formats.conll import read_bytes
    from analysis.formats.files import detect_format, parse_json
    from analysis.formats.label_config import label_config_xml

    raw = read_bytes(path)
    text = raw.decode("utf-8")
    if detect_format(text) == "json":
        tasks = [dict(t) for t in parse_json(text, str(path))]
    else:
        ds = load(path, format="conll", label_config=label_config)
        tasks = to_ls_tasks(ds)
        if label_config is None:
            label_config = label_config_xml(ds.labels)
    for i, t in enumerate(tasks):
        if t.get("id") is None:
            t["id"] = i + 1
    return tasks, label_config


def make_api(url: str | None, key: str | None) -> Any:
    if not url or not key:
        raise ValueError(
            "Label Studio is not configured: set LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY "
            "(or pass --url / --api-key)"
        )
    from analysis.labelstudio import LabelStudioAPI

    return LabelStudioAPI(url, key)


def project_info(api: Any, pid: int, url: str) -> dict[str, Any]:
    info: dict[str, Any] = {"id": pid, "url": url}
    get = getattr(api, "get_project", None)
    if get is not None:
        proj = get(pid)
        if not isinstance(proj, dict):
            proj = getattr(proj, "__dict__", {}) or {}
        info["title"] = proj.get("title")
        info["label_config"] = proj.get("label_config")
    return info


def run(args: argparse.Namespace) -> int:
    from analysis.labelstudio.store import TaskStore, store_path

    settings = args.settings
    url = args.url or settings.label_studio_url
    key = args.api_key or settings.label_studio_api_key
    if args.from_file:
        tasks, cfg = tasks_from_file(args.from_file, label_config=args.label_config)
        path = Path(args.store) if args.store else store_path(None, args.project or Path(args.from_file).stem,
                                                          root=settings.cache_dir)
        with TaskStore(path) as st:
            n = st.replace_all(tasks)
            st.set_state("project", {"id": args.project, "url": None, "label_config": cfg,
                                     "source": str(args.from_file)})
        out = {"store": str(path), "tasks": n, "source": str(args.from_file)}
    else:
        if args.project is None:
            raise ValueError("give --project ID (or --from-file FILE)")
        from analysis.labelstudio.store import sync_project

        api = make_api(url, key)
        path = Path(args.store) if args.store else store_path(url, args.project,
                                                              root=settings.cache_dir)
        with TaskStore(path) as st:
            res = sync_project(api, args.project, st, page_size=args.page_size, full=args.full,
                               progress=not args.no_progress,
                               project_info=project_info(api, args.project, url),
                               clock_skew_s=settings.sync_skew_s)
        out = {"store": str(path), **res.to_dict()}
    if args.json:
        json.dump(out, sys.stdout)
        sys.stdout.write("\n")
    else:
        print(" ".join(f"{k}={v}" for k, v in out.items()))
    return 0
