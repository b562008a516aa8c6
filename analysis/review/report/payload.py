"""The console's data: one JSON object the page's script draws everything from.

:func:`console_payload` packs the analysis dict (``metrics``, ``alerts``, ``tasks`` with their
``text``, ``annotator`` and ``split``), the span columns (:func:`.spans.span_columns`), the span
map (:func:`.embedmap.span_map`) and the runtime's extras (subword view, activations) into
column lists: one entry per task, per gold span, per predicted span.  The page aggregates those
columns over the filtered tasks, so nothing is precomputed per filter and the unfiltered
figures equal the analysis's own (pinned by the browser tests).

Scale: per task ~100 bytes plus its text (cut at :data:`TEXT_CHARS`), per span ~25 bytes; a
14,041-task CoNLL-03 report is ~3 MB of data next to 1.5 MB of plotly.js.  Above
``max_tasks`` tasks the console keeps the flagged tasks, the sample sections and then the
highest-DEP tasks up to the cap, says so in a banner, and computes its charts over those; the
summary and the alerts stay whole-dataset figures.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from analysis.errors import KINDS
from analysis.review.report.words import KIND_COLOURS, KIND_WORDS, PALETTE

__all__ = ["MAX_TASKS", "TEXT_CHARS", "console_payload"]

#: tasks the console holds at most (see the module docstring)
MAX_TASKS = 200_000
#: characters of a task's text in the console (its link opens the whole task)
TEXT_CHARS = 2000


def _key(t: Mapping[str, Any]) -> int:
    return int(t["id"]) if t.get("id") is not None else int(t["index"])


def _codes(values: Sequence[Any]) -> tuple[list[int | None], list[str]]:
    """Category codes (None for a missing value) and the category names, first-seen order."""
    names: dict[str, int] = {}
    codes: list[int | None] = []
    for v in values:
        codes.append(None if v in (None, "") else names.setdefault(str(v), len(names)))
    return codes, list(names)


def _empty_spans(labels: Sequence[str]) -> dict[str, Any]:
    cols: dict[str, list[Any]] = {"t": [], "s": [], "e": [], "l": [], "k": []}
    return {"labels": list(labels), "gold": {**cols, "dep": []}, "pred": dict(cols),
            "pairs": {"g": [], "p": []}, "words": {"vocab": [], "rows": [], "ids": []}}


def _keep_rows(tasks: list[Mapping[str, Any]], flagged: set[int], sample_rows: Sequence[int],
               max_tasks: int) -> np.ndarray | None:
    """Task rows the console keeps when there are more than ``max_tasks`` (None: all): the
    flagged ones by DEP, the samples, then the rest by DEP."""
    n = len(tasks)
    if n <= max_tasks:
        return None
    dep = np.array([-1.0 if t.get("dep") is None else float(t["dep"]) for t in tasks])
    order = np.argsort(-dep, kind="stable")
    first = [i for i in order.tolist() if _key(tasks[i]) in flagged] + list(sample_rows)
    keep = list(dict.fromkeys(first))[:max_tasks]
    seen = set(keep)
    for r in order.tolist():
        if len(keep) >= max_tasks:
            break
        if r not in seen:
            keep.append(r)
            seen.add(r)
    return np.sort(np.asarray(keep, dtype=np.int64))


def _subset_spans(sp: dict[str, Any], keep: np.ndarray, n: int) -> tuple[dict[str, Any],
                                                                        np.ndarray]:
    """The span columns of the kept task rows, re-indexed; and the old→new gold row map."""
    new_task = np.full(n, -1, dtype=np.int64)
    new_task[keep] = np.arange(keep.size)
    out: dict[str, Any] = {"labels": sp["labels"]}
    maps = {}
    for side in ("gold", "pred"):
        cols = sp[side]
        t = np.asarray(cols["t"], dtype=np.int64)
        rows = np.flatnonzero(new_task[t] >= 0) if t.size else np.zeros(0, np.int64)
        m = np.full(t.size, -1, dtype=np.int64)
        m[rows] = np.arange(rows.size)
        maps[side] = m
        out[side] = {k: ([int(x) for x in new_task[t[rows]]] if k == "t"
                         else [v[i] for i in rows.tolist()]) for k, v in cols.items()}
    g = np.asarray(sp["pairs"]["g"], dtype=np.int64)
    p = np.asarray(sp["pairs"]["p"], dtype=np.int64)
    ok = (maps["gold"][g] >= 0) if g.size else np.zeros(0, bool)
    out["pairs"] = {"g": maps["gold"][g[ok]].tolist(), "p": maps["pred"][p[ok]].tolist()}
    w = sp["words"]
    wr = np.asarray(w["rows"], dtype=np.int64)
    wk = (maps["gold"][wr] >= 0) if wr.size else np.zeros(0, bool)
    out["words"] = {"vocab": w["vocab"], "rows": maps["gold"][wr[wk]].tolist(),
                    "ids": [w["ids"][i] for i in np.flatnonzero(wk).tolist()]}
    return out, maps["gold"]


def _annotator_z(alerts: list[Mapping[str, Any]]) -> dict[str, Any]:
    """Per annotator, the z-score of the annotator alert (when it fired) and whether it
    flagged them."""
    out: dict[str, Any] = {}
    for a in alerts:
        nums = a.get("numbers", {}) or {}
        per = nums.get("annotators")
        if isinstance(per, Mapping):
            flagged = set(nums.get("flagged_annotators") or [])
            for name, v in per.items():
                out[str(name)] = {"z": v.get("z"), "flagged": name in flagged}
    return out


def console_payload(
    result: Mapping[str, Any],
    *,
    spans: Mapping[str, Any] | None = None,
    spanmap: Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
    ls_url: str | None = None,
    project_id: int | None = None,
    max_tasks: int = MAX_TASKS,
) -> dict[str, Any]:
    """The console's JSON object (see the module docstring)."""
    m = result.get("metrics", {}) or {}
    alerts = list(result.get("alerts", []) or [])
    tasks = list(result.get("tasks", []) or [])
    samples = dict(result.get("samples") or {})
    extras = dict(extras or {})
    sp: dict[str, Any] = dict(spans) if spans is not None else _empty_spans(m.get("labels") or [])
    flagged = {int(t) for a in alerts for t in a.get("task_ids", [])}
    sample_rows = list(samples.get("by_loss") or []) + list(samples.get("random") or [])
    keep = _keep_rows(tasks, flagged, sample_rows, max_tasks)
    n_all = len(tasks)
    gold_map = None
    row_map: dict[int, int] = {i: i for i in range(n_all)}
    if keep is not None:
        sp, gold_map = _subset_spans(sp, keep, n_all)
        row_map = {int(r): i for i, r in enumerate(keep.tolist())}
        tasks = [tasks[r] for r in keep.tolist()]

    def rows(xs: Sequence[Any]) -> list[int]:
        return [row_map[int(r)] for r in xs if int(r) in row_map]

    ann, annotators = _codes([t.get("annotator") for t in tasks])
    split, splits = _codes([t.get("split") for t in tasks])
    by_loss = {int(x["id"]): float(x["loss"]) for x in m.get("samples_by_loss") or []}
    keys_all = [_key(t) for t in result.get("tasks", []) or []]  # before the cap
    loss_rows = [int(r) for r in samples.get("by_loss") or []]
    keys = [_key(t) for t in tasks]
    smap = None
    if spanmap and spanmap.get("x"):
        g = np.asarray(spanmap["g"], dtype=np.int64)
        ok = np.ones(g.size, bool) if gold_map is None else gold_map[g] >= 0
        gg = g if gold_map is None else gold_map[g]
        smap = {"x": [spanmap["x"][i] for i in np.flatnonzero(ok).tolist()],
                "y": [spanmap["y"][i] for i in np.flatnonzero(ok).tolist()],
                "g": gg[ok].tolist(), "method": spanmap.get("method", "PCA"),
                "xr": spanmap.get("xr"), "yr": spanmap.get("yr")}
    dep = m.get("dep", {}) or {}
    dups = m.get("duplicates") or {}
    mv = extras.get("model_view") or {}
    act = extras.get("activations")
    if act:
        act = dict(act)
        act["tasks"] = {str(row_map[int(r)]): v for r, v in (act.get("tasks") or {}).items()
                        if int(r) in row_map}
        act["words"] = {str(row_map[int(r)]): v for r, v in (act.get("words") or {}).items()
                        if int(r) in row_map}
    return {
        "kinds": list(KINDS), "kind_words": KIND_WORDS, "colours": list(PALETTE),
        "kind_colours": KIND_COLOURS,
        "ls_url": ls_url.rstrip("/") if ls_url else None, "project": project_id,
        "n_all": n_all, "capped": keep is not None,
        "spans": {**sp, "has_pred": bool(sp["pred"]["t"]) or m.get("n_pred_spans") is not None},
        "tasks": {"key": keys,
                  "dep": [None if t.get("dep") is None else round(float(t["dep"]), 4)
                          for t in tasks],
                  "text": [str(t.get("text", ""))[:TEXT_CHARS] for t in tasks],
                  "ann": ann, "split": split},
        "annotators": annotators, "splits": splits, "annotator_z": _annotator_z(alerts),
        "alerts": [{"name": a["name"], "task_ids": [int(t) for t in a.get("task_ids", [])]}
                   for a in alerts],
        "dep_threshold": dep.get("threshold"),
        "loss_by_label": {k: {"mean": v["mean"]} for k, v in
                          ((m.get("loss", {}) or {}).get("by_label", {}) or {}).items()} or None,
        "samples": {"by_loss": rows(samples.get("by_loss") or []),
                    "random": rows(samples.get("random") or []),
                    "loss": {str(row_map[r]): by_loss[keys_all[r]] for r in loss_rows
                             if r in row_map and keys_all[r] in by_loss}},
        "map": smap,
        "duplicates": {"groups": list(dups.get("groups") or [])},
        "agreement": [{"annotator": a["annotator"], "f1": a.get("f1_vs_others")} for a in
                      ((m.get("agreement") or {}).get("per_annotator") or [])],
        "model_view": {str(row_map[int(r)]): v for r, v in mv.items() if int(r) in row_map},
        "model_view_note": extras.get("model_view_note") or (
            None if mv else "the subword view needs the report made with --model DIR"),
        "activations": act,
    }
