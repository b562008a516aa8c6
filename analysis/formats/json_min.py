"""Label Studio JSON-MIN: flat rows ``{"id", "text", "label": [{start, end, text, labels}],
"annotator", ...}`` to full-export-shaped tasks, and a task back to a row."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from analysis.dataset import Task
from analysis.exceptions import DataError
from analysis.formats.label_config import LabelConfig

__all__ = ["min_to_full", "min_row"]

# JSON-MIN row keys that are annotation bookkeeping, not task data
_MIN_META_KEYS = frozenset(
    {"id", "annotator", "annotation_id", "created_at", "updated_at", "lead_time", "drafts",
     "predictions", "meta"}
)


def _is_region_list(val: Any) -> bool:
    if isinstance(val, Mapping):
        val = [val]
    return (
        isinstance(val, list)
        and bool(val)
        and all(
            isinstance(r, Mapping) and "start" in r and "end" in r and "labels" in r for r in val
        )
    )


def min_to_full(
    rows: Sequence[Mapping[str, Any]], cfg: LabelConfig | None
) -> tuple[list[dict[str, Any]], str]:
    """Turn JSON-MIN rows into full-export-shaped tasks (rows of one id merged)."""
    keys: set[str] = set()
    for r in rows:
        keys.update(k for k, v in r.items() if k not in _MIN_META_KEYS and _is_region_list(v))
    if cfg is not None:
        key = cfg.from_name
        if key not in keys and keys:
            raise DataError(
                f"JSON-MIN rows hold regions under {sorted(keys)}, but the label config's "
                f"Labels name is {key!r}"
            )
    elif len(keys) > 1:
        raise DataError(
            f"JSON-MIN rows hold regions under several keys {sorted(keys)}; pass a label config "
            "to choose one"
        )
    else:
        key = next(iter(keys)) if keys else "label"
    to_name = cfg.to_name if cfg is not None else "text"
    out: list[dict[str, Any]] = []
    by_id: dict[Any, dict[str, Any]] = {}
    for r in rows:
        data = {k: v for k, v in r.items() if k not in _MIN_META_KEYS and k != key}
        annotated = key in r or "annotator" in r or "annotation_id" in r
        task: dict[str, Any] = {"data": data, "meta": r.get("meta") or {}, "annotations": []}
        if r.get("id") is not None:
            task["id"] = r["id"]
        if annotated:
            regs = r.get(key)
            if isinstance(regs, Mapping):
                regs = [regs]
            result = [
                {"from_name": key, "to_name": to_name, "type": "labels", "value": reg}
                for reg in (regs or [])
            ]
            ann: dict[str, Any] = {"result": result}
            if r.get("annotation_id") is not None:
                ann["id"] = r["annotation_id"]
            annotator = r.get("annotator")
            if annotator is not None:
                ann["completed_by"] = (
                    {"email": annotator}
                    if isinstance(annotator, str) and "@" in annotator
                    else {"id": annotator}
                )
            for k in ("created_at", "updated_at"):
                if k in r:
                    ann[k] = r[k]
            task["annotations"].append(ann)
        tid = r.get("id")
        if tid is not None and tid in by_id:
            by_id[tid]["annotations"].extend(task["annotations"])
            continue
        if tid is not None:
            by_id[tid] = task
        out.append(task)
    return out, key


def min_row(t: Task, data: dict[str, Any], from_name: str) -> dict[str, Any]:
    """The JSON-MIN row of one task: its data, and the gold regions under ``from_name``."""
    row: dict[str, Any] = {}
    if t.id is not None:
        row["id"] = t.id
    row.update(data)
    if t.gold is not None:
        row[from_name] = [{"start": s.start, "end": s.end, "text": t.text[s.start:s.end],
                           "labels": [s.label]} for s in t.gold]
        if t.annotator is not None:
            row["annotator"] = t.annotator
        if t.annotation_id is not None:
            row["annotation_id"] = t.annotation_id
    return row
