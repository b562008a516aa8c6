"""One self-contained, offline HTML report of a dataset analysis.

Every chart is inline SVG drawn here in Python (no CDN, no external file, no web font); the only
script is a few lines of inline JavaScript that filter and sort the flagged-task table.  The
report reads the dict produced by :func:`analysis.review.analyze.Analysis.to_dict` (keys ``metrics``,
``alerts``, ``tasks``) plus an optional 2-D span map (:func:`span_map`).

Sections: summary, alerts, F1 by class, sample count by class, error distribution, top
misclassified pairs, confusion heat map, DEP distribution, high-DEP words, loss by label, span
embedding map (coloured by label, or by DEP), flagged tasks with links into Label Studio
(``<LS_URL>/projects/<pid>/data?task=<id>``), and :func:`write_csv` writes the same table.
"""

from __future__ import annotations

import csv
import html
import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["render_report", "write_report", "write_csv", "flagged_rows", "span_map", "PALETTE"]

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f",
    "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac",
)
KIND_COLOURS = {
    "correct": "#59a14f",
    "wrong_tag": "#e15759",
    "span_shift": "#f28e2b",
    "missed": "#4e79a7",
    "ghost": "#b07aa1",
}


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# --------------------------------------------------------------------------- SVG primitives


def _empty(msg: str) -> str:
    return f'<p class="empty">{_e(msg)}</p>'


def hbar_chart(
    items: Sequence[tuple[str, float]],
    *,
    cls: str,
    vmax: float | None = None,
    fmt: str = "{:.3f}",
    colour: str = PALETTE[0],
    width: int = 560,
    bar_h: int = 20,
) -> str:
    """Horizontal bar chart: one ``<rect class="bar">`` per item, value labels on the right."""
    if not items:
        return _empty("no data")
    label_w = min(220, 12 + 7 * max(len(str(k)) for k, _ in items))
    plot_w = width - label_w - 70
    top = max(vmax or 0.0, max(float(v) for _, v in items), 1e-12)
    h = bar_h * len(items) + 10
    out = [f'<svg class="chart {cls}" width="{width}" height="{h}" role="img">']
    for i, (k, v) in enumerate(items):
        y = 5 + i * bar_h
        w = max(0.0, float(v)) / top * plot_w
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{_e(k)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" '
            f'fill="{colour}"><title>{_e(k)}: {_e(fmt.format(v))}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{_e(fmt.format(v))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def stacked_bar_chart(
    rows: Mapping[str, Mapping[str, int]], kinds: Sequence[str], *, cls: str, width: int = 640
) -> str:
    """One horizontal stacked bar per row; segments coloured by ``kinds`` with a legend."""
    if not rows:
        return _empty("no data")
    bar_h = 22
    label_w = min(220, 12 + 7 * max(len(k) for k in rows))
    plot_w = width - label_w - 60
    top = max(max(sum(r.get(k, 0) for k in kinds) for r in rows.values()), 1)
    h = bar_h * len(rows) + 40
    out = [f'<svg class="chart {cls}" width="{width}" height="{h}" role="img">']
    for i, (name, r) in enumerate(rows.items()):
        y = 5 + i * bar_h
        x = float(label_w)
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{_e(name)}</text>'
        )
        for k in kinds:
            v = int(r.get(k, 0))
            if v <= 0:
                continue
            w = v / top * plot_w
            out.append(
                f'<rect class="bar seg-{_e(k)}" x="{x:.1f}" y="{y + 2}" width="{w:.1f}" '
                f'height="{bar_h - 4}" fill="{KIND_COLOURS.get(k, "#999")}">'
                f"<title>{_e(name)} {_e(k)}: {v}</title></rect>"
            )
            x += w
        total = sum(int(r.get(k, 0)) for k in kinds)
        out.append(f'<text x="{x + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{total}</text>')
    ly = h - 18
    lx = float(label_w)
    for k in kinds:
        out.append(
            f'<rect x="{lx:.0f}" y="{ly}" width="12" height="12" '
            f'fill="{KIND_COLOURS.get(k, "#999")}"/><text x="{lx + 16:.0f}" y="{ly + 11}">{_e(k)}</text>'
        )
        lx += 24 + 7.5 * len(k)
    out.append("</svg>")
    return "".join(out)


def histogram_chart(
    edges: Sequence[float],
    counts: Sequence[int],
    *,
    cls: str,
    threshold: float | None = None,
    width: int = 560,
    height: int = 220,
) -> str:
    """Vertical histogram with an optional dashed threshold line."""
    if not counts or sum(counts) == 0:
        return _empty("no values")
    pad_l, pad_b, pad_t = 44, 30, 10
    pw, ph = width - pad_l - 10, height - pad_b - pad_t
    lo, hi = float(edges[0]), float(edges[-1])
    span = hi - lo or 1.0
    top = max(counts)
    # log-ish scale keeps small bins visible next to a huge first bin
    scale = (lambda c: math.log1p(c) / math.log1p(top)) if top > 50 else (lambda c: c / top)
    out = [f'<svg class="chart {cls}" width="{width}" height="{height}" role="img">']
    for i, c in enumerate(counts):
        x0 = pad_l + (float(edges[i]) - lo) / span * pw
        x1 = pad_l + (float(edges[i + 1]) - lo) / span * pw
        bh = scale(c) * ph
        out.append(
            f'<rect class="bar" x="{x0:.1f}" y="{pad_t + ph - bh:.1f}" width="{max(x1 - x0 - 1, 0.5):.1f}" '
            f'height="{bh:.1f}" fill="{PALETTE[0]}"><title>[{float(edges[i]):.2f}, '
            f"{float(edges[i + 1]):.2f}): {c}</title></rect>"
        )
    out.append(
        f'<line x1="{pad_l}" y1="{pad_t + ph}" x2="{pad_l + pw}" y2="{pad_t + ph}" stroke="#333"/>'
    )
    for t in np.linspace(lo, hi, 6):
        x = pad_l + (t - lo) / span * pw
        out.append(f'<text x="{x:.1f}" y="{height - 10}" text-anchor="middle">{t:.1f}</text>')
    out.append(f'<text x="4" y="{pad_t + 10}">{top}</text>')
    if top > 50:
        out.append(f'<text x="4" y="{pad_t + 24}" class="note">log</text>')
    if threshold is not None and lo <= threshold <= hi:
        x = pad_l + (threshold - lo) / span * pw
        out.append(
            f'<line class="threshold" x1="{x:.1f}" y1="{pad_t}" x2="{x:.1f}" y2="{pad_t + ph}" '
            f'stroke="#e15759" stroke-dasharray="4 3"><title>threshold {threshold:.3f}</title></line>'
        )
    out.append("</svg>")
    return "".join(out)


def heatmap_chart(
    matrix: Sequence[Sequence[float]],
    labels: Sequence[str],
    *,
    cls: str,
    raw: Sequence[Sequence[int]] | None = None,
    cell: int = 34,
) -> str:
    """Confusion heat map: rows gold, columns predicted; colour = row-normalised value."""
    m = np.asarray(matrix, dtype=np.float64)
    if m.size == 0:
        return _empty("no data")
    n = m.shape[0]
    label_w = min(160, 12 + 7 * max(len(x) for x in labels))
    w = label_w + n * cell + 10
    h = label_w + n * cell + 10
    vmax = float(m.max()) or 1.0
    out = [f'<svg class="chart {cls}" width="{w}" height="{h}" role="img">']
    for j, lab in enumerate(labels):
        x = label_w + j * cell + cell / 2
        out.append(
            f'<text transform="translate({x:.1f},{label_w - 6}) rotate(-60)">{_e(lab)}</text>'
        )
    for i, lab in enumerate(labels):
        y = label_w + i * cell
        out.append(
            f'<text x="{label_w - 6}" y="{y + cell * 0.62:.1f}" text-anchor="end">{_e(lab)}</text>'
        )
        for j in range(n):
            v = m[i, j]
            a = v / vmax
            r, g, b = int(255 - a * (255 - 78)), int(255 - a * (255 - 121)), int(255 - a * (255 - 167))
            cnt = "" if raw is None else f" ({int(raw[i][j])})"
            out.append(
                f'<rect class="cell" x="{label_w + j * cell}" y="{y}" width="{cell - 1}" '
                f'height="{cell - 1}" fill="rgb({r},{g},{b})"><title>gold {_e(lab)} → '
                f"pred {_e(labels[j])}: {v:.3f}{cnt}</title></rect>"
            )
            if v > 0:
                txt_col = "#fff" if a > 0.55 else "#222"
                out.append(
                    f'<text x="{label_w + j * cell + cell / 2:.1f}" y="{y + cell * 0.62:.1f}" '
                    f'text-anchor="middle" fill="{txt_col}" class="small">{v:.2f}</text>'
                )
    out.append("</svg>")
    return "".join(out)


def scatter_chart(
    x: Sequence[float],
    y: Sequence[float],
    *,
    cls: str,
    colour_by: Sequence[str] | None = None,
    value: Sequence[float] | None = None,
    titles: Sequence[str] | None = None,
    width: int = 560,
    height: int = 420,
) -> str:
    """2-D scatter: categorical colours (``colour_by``) or a 0..1 ``value`` ramp (blue → red)."""
    xs, ys = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if xs.size == 0:
        return _empty("no spans to map")
    pad = 12
    # robust axis range (2nd-98th percentile): a few outliers must not squash the map;
    # points outside are drawn on the border
    lx, hx = (float(v) for v in np.quantile(xs, [0.02, 0.98]))
    ly, hy = (float(v) for v in np.quantile(ys, [0.02, 0.98]))
    xs, ys = np.clip(xs, lx, hx), np.clip(ys, ly, hy)
    sx = (width - 2 * pad) / ((hx - lx) or 1.0)
    sy = (height - 2 * pad - 20) / ((hy - ly) or 1.0)
    cats: dict[str, str] = {}
    if colour_by is not None:
        for c in colour_by:
            cats.setdefault(str(c), PALETTE[len(cats) % len(PALETTE)])
    out = [f'<svg class="chart {cls}" width="{width}" height="{height}" role="img">']
    for i in range(xs.size):
        px = pad + (xs[i] - lx) * sx
        py = pad + 20 + (hy - ys[i]) * sy
        if colour_by is not None:
            col = cats[str(colour_by[i])]
        elif value is not None:
            v = float(np.clip(np.nan_to_num(value[i], nan=0.0), 0.0, 1.0))
            col = f"rgb({int(60 + 195 * v)},{int(110 - 70 * v)},{int(220 - 190 * v)})"
        else:
            col = PALETTE[0]
        t = f"<title>{_e(titles[i])}</title>" if titles is not None else ""
        out.append(
            f'<circle class="pt" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{col}" '
            f'fill-opacity="0.75">{t}</circle>'
        )
    lxp = pad
    for name, col in list(cats.items())[:12]:
        out.append(
            f'<circle cx="{lxp + 5}" cy="10" r="5" fill="{col}"/>'
            f'<text x="{lxp + 13}" y="14">{_e(name)}</text>'
        )
        lxp += 26 + 7 * len(name)
    if value is not None and colour_by is None:
        out.append('<text x="12" y="14">colour: DEP (blue 0 → red 1)</text>')
    out.append("</svg>")
    return "".join(out)


# --------------------------------------------------------------------------- span map


def span_map(
    embeddings: np.ndarray,
    labels: Sequence[str],
    *,
    dep: Sequence[float] | None = None,
    task_ids: Sequence[int] | None = None,
    texts: Sequence[str] | None = None,
    max_points: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Project span embeddings to 2-D with PCA for the report's map.

    Parameters
    ----------
    embeddings : (n_spans, dim) float, one row per gold span (model embeddings, or TF-IDF /
        character n-gram vectors when no model is available)
    labels : (n_spans,) gold label of each span
    max_points : a seeded random subsample above this many spans keeps the HTML small

    Returns
    -------
    ``{"x", "y", "label", "dep", "task_id", "text"}`` lists of equal length.
    """
    from sklearn.decomposition import PCA

    x = np.asarray(embeddings, dtype=np.float32)
    n = x.shape[0]
    if x.ndim != 2 or n != len(labels):
        raise ValueError(
            f"embeddings must be (n_spans, dim) with one row per label; got {x.shape} and "
            f"{len(labels)} labels"
        )
    keep: np.ndarray = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    x = x[keep]
    if x.shape[0] >= 2 and x.shape[1] >= 2:
        xy = PCA(n_components=2, random_state=seed).fit_transform(x)
    else:
        xy = np.zeros((x.shape[0], 2))
    pick = keep.tolist()
    return {
        "x": xy[:, 0].round(4).tolist(),
        "y": xy[:, 1].round(4).tolist(),
        "label": [str(labels[i]) for i in pick],
        "dep": None if dep is None else [float(np.nan_to_num(dep[i], nan=0.0)) for i in pick],
        "task_id": None if task_ids is None else [int(task_ids[i]) for i in pick],
        "text": None if texts is None else [str(texts[i])[:60] for i in pick],
    }


# --------------------------------------------------------------------------- flagged tasks


def flagged_rows(result: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per flagged task: id, DEP, error counts, the alerts that flagged it."""
    by_id: dict[int, list[str]] = {}
    for a in result.get("alerts", []):
        for tid in a.get("task_ids", []):
            by_id.setdefault(int(tid), []).append(str(a["name"]))
    info = {}
    for t in result.get("tasks", []):
        key = t.get("id") if t.get("id") is not None else t.get("index")
        info[int(key)] = t
    rows = []
    for tid, names in by_id.items():
        t = info.get(tid, {})
        errs = t.get("errors", {}) or {}
        rows.append(
            {
                "id": tid,
                "dep": t.get("dep"),
                "n_errors": int(sum(v for k, v in errs.items() if k != "correct")),
                "errors": errs,
                "alerts": names,
                "text": str(t.get("text", ""))[:120],
            }
        )
    rows.sort(key=lambda r: (-(r["dep"] if r["dep"] is not None else -1.0), r["id"]))
    return rows


def _task_link(tid: int, ls_url: str | None, project_id: int | None) -> str:
    if ls_url and project_id is not None:
        url = f"{ls_url.rstrip('/')}/projects/{int(project_id)}/data?task={int(tid)}"
        return f'<a href="{_e(url)}" target="_blank" rel="noopener">{tid}</a>'
    return str(tid)


def write_csv(
    result: Mapping[str, Any],
    path: str | Path,
    *,
    ls_url: str | None = None,
    project_id: int | None = None,
) -> Path:
    """Write the flagged-task table as CSV (id, dep, error counts, alerts, link)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    kinds = ("wrong_tag", "span_shift", "missed", "ghost")
    with path.open("w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["task_id", "dep", "n_errors", *kinds, "alerts", "link", "text"])
        for r in flagged_rows(result):
            link = (
                f"{ls_url.rstrip('/')}/projects/{int(project_id)}/data?task={r['id']}"
                if ls_url and project_id is not None
                else ""
            )
            w.writerow(
                [
                    r["id"],
                    "" if r["dep"] is None else f"{r['dep']:.4f}",
                    r["n_errors"],
                    *[int(r["errors"].get(k, 0)) for k in kinds],
                    "; ".join(r["alerts"]),
                    link,
                    r["text"],
                ]
            )
    return path


# --------------------------------------------------------------------------- the page

_CSS = """
body{font:14px/1.4 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#222;background:#fafafa}
header{background:#24292f;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}
main{padding:8px 24px;max-width:1280px}section{background:#fff;border:1px solid #e1e4e8;border-radius:6px;
padding:12px 16px;margin:12px 0}h2{font-size:16px;margin:4px 0 10px}.grid{display:flex;flex-wrap:wrap;gap:12px}
.grid section{flex:1 1 560px}svg text{font-size:12px;fill:#222}svg text.small{font-size:10px}
svg text.note{fill:#777;font-size:10px}.empty{color:#777;font-style:italic}
table{border-collapse:collapse;width:100%}th,td{border-bottom:1px solid #eee;padding:4px 6px;text-align:left;
vertical-align:top}th{cursor:pointer;background:#f6f8fa}.alert{border-left:4px solid #e15759;padding:4px 10px;
margin:6px 0}.alert .rule{color:#555}.kpi{display:inline-block;margin-right:24px}.kpi b{font-size:20px;display:block}
code{background:#f6f8fa;padding:1px 4px}
"""

_JS = """
(function(){
  var input=document.getElementById('flag-filter');
  var table=document.getElementById('flagged');
  if(!input||!table){return;}
  var rows=Array.prototype.slice.call(table.tBodies[0].rows);
  input.addEventListener('input',function(){
    var q=input.value.toLowerCase();
    rows.forEach(function(r){r.style.display=r.textContent.toLowerCase().indexOf(q)>=0?'':'none';});
  });
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,col){
    th.addEventListener('click',function(){
      var asc=th.getAttribute('data-asc')!=='1';th.setAttribute('data-asc',asc?'1':'0');
      rows.sort(function(a,b){
        var x=a.cells[col].getAttribute('data-v')||a.cells[col].textContent;
        var y=b.cells[col].getAttribute('data-v')||b.cells[col].textContent;
        var nx=parseFloat(x),ny=parseFloat(y);
        var c=(!isNaN(nx)&&!isNaN(ny))?nx-ny:(x<y?-1:x>y?1:0);return asc?c:-c;});
      rows.forEach(function(r){table.tBodies[0].appendChild(r);});
    });
  });
  document.body.setAttribute('data-report-ready','1');
})();
"""


def render_report(
    result: Mapping[str, Any],
    *,
    ls_url: str | None = None,
    project_id: int | None = None,
    spanmap: Mapping[str, Any] | None = None,
    title: str = "ner-quality report",
    max_rows: int = 2000,
) -> str:
    """The report as one HTML string (see the module docstring)."""
    m = result.get("metrics", {}) or {}
    alerts = list(result.get("alerts", []) or [])
    parts: list[str] = []

    def sec(name: str, body: str, sid: str) -> None:
        parts.append(f'<section id="{sid}"><h2>{_e(name)}</h2>{body}</section>')

    # summary
    kpis = [
        ("tasks", m.get("n_tasks", 0)),
        ("annotated", m.get("n_annotated", 0)),
        ("gold spans", m.get("n_gold_spans", 0)),
        ("micro F1", (m.get("prf", {}).get("micro avg", {}) or {}).get("f1-score")),
        ("alerts", len(alerts)),
        ("flagged tasks", len({t for a in alerts for t in a.get("task_ids", [])})),
    ]
    summary = "".join(
        f'<span class="kpi"><b>{_e(_fmt(v) if v is not None else "–")}</b>{_e(k)}</span>'
        for k, v in kpis
    )
    if m.get("dep", {}).get("source"):
        summary += f'<p>DEP from: <code>{_e(m["dep"]["source"])}</code></p>'
    sec("Summary", summary, "summary")

    # alerts
    if alerts:
        body = "".join(
            f'<div class="alert"><b>{_e(a["name"])}</b> — {len(a.get("task_ids", []))} task(s)'
            f'<div class="rule">rule: {_e(a["rule"])}</div>'
            f"<details><summary>numbers</summary><pre>{_e(json.dumps(a.get('numbers', {}), indent=1)[:4000])}</pre></details></div>"
            for a in alerts
        )
    else:
        body = _empty("no alert fired")
    sec("Alerts", body, "alerts")

    charts: list[str] = []

    def chart(name: str, body: str, sid: str) -> None:
        charts.append(f'<section id="{sid}"><h2>{_e(name)}</h2>{body}</section>')

    prf = m.get("prf", {}) or {}
    f1_items = [
        (k, float(v.get("f1-score", 0.0)))
        for k, v in prf.items()
        if not k.endswith(" avg") and isinstance(v, Mapping)
    ]
    chart("F1 by class", hbar_chart(f1_items, cls="f1-by-class", vmax=1.0), "f1")
    sc = m.get("sample_count", {}) or {}
    chart(
        "Sample count by class (spans)",
        hbar_chart([(k, v.get("spans", 0)) for k, v in sc.items()], cls="sample-count", fmt="{:.0f}",
                   colour=PALETTE[4]),
        "samples",
    )
    ed = m.get("error_distribution", {}) or {}
    chart(
        "Error distribution by class",
        stacked_bar_chart(ed, ("correct", "wrong_tag", "span_shift", "missed", "ghost"),
                          cls="error-distribution"),
        "errors",
    )
    tc = m.get("top_confusions", []) or []
    chart(
        "Top misclassified pairs (gold → predicted)",
        hbar_chart([(f"{p['gold']} → {p['pred']}", p["count"]) for p in tc[:15]],
                   cls="top-confusions", fmt="{:.0f}", colour=PALETTE[2]),
        "pairs",
    )
    conf = m.get("confusion", {}) or {}
    if conf.get("labels"):
        chart(
            "Confusion (row-normalised" + (", diagonal removed)" if conf.get("zero_diagonal") else ")"),
            heatmap_chart(conf["normalized"], conf["labels"], cls="confusion", raw=conf.get("raw")),
            "confusion",
        )
    dep = m.get("dep", {}) or {}
    hist = dep.get("histogram") or {}
    chart(
        "DEP distribution (tasks)",
        histogram_chart(hist.get("edges", []), hist.get("counts", []), cls="dep-histogram",
                        threshold=dep.get("threshold"))
        if hist
        else _empty("no DEP: analyze with --probs or --model"),
        "dep",
    )
    hw = m.get("high_dep_words", []) or []
    chart(
        "Words most frequent in high-DEP spans",
        hbar_chart([(w["word"], w["count"]) for w in hw[:20]], cls="high-dep-words", fmt="{:.0f}",
                   colour=PALETTE[1]),
        "words",
    )
    loss = (m.get("loss", {}) or {}).get("by_label", {}) or {}
    chart(
        "Mean token loss by gold label",
        hbar_chart([(k, v["mean"]) for k, v in loss.items()], cls="loss-by-label",
                   colour=PALETTE[6])
        if loss
        else _empty("no loss: analyze with --probs or --model"),
        "loss",
    )
    if spanmap and spanmap.get("x"):
        titles = [
            f"{lab} {txt!r} (task {tid})"
            for lab, txt, tid in zip(
                spanmap["label"],
                spanmap.get("text") or [""] * len(spanmap["x"]),
                spanmap.get("task_id") or ["?"] * len(spanmap["x"]),
            )
        ]
        body = scatter_chart(spanmap["x"], spanmap["y"], cls="span-map-label",
                             colour_by=spanmap["label"], titles=titles)
        if spanmap.get("dep") is not None:
            body += scatter_chart(spanmap["x"], spanmap["y"], cls="span-map-dep",
                                  value=spanmap["dep"], titles=titles)
        chart("Span embedding map (PCA)", f'<div class="grid">{body}</div>', "map")
    parts.append('<div class="grid">' + "".join(charts) + "</div>")

    # flagged tasks
    rows = flagged_rows(result)
    kinds = ("wrong_tag", "span_shift", "missed", "ghost")
    head = "".join(f"<th>{_e(h)}</th>" for h in ("task", "DEP", "errors", *kinds, "alerts", "text"))
    trs = []
    for r in rows[:max_rows]:
        dep_v = "" if r["dep"] is None else f"{r['dep']:.3f}"
        trs.append(
            "<tr>"
            f'<td data-v="{r["id"]}">{_task_link(r["id"], ls_url, project_id)}</td>'
            f'<td data-v="{dep_v}">{dep_v}</td><td>{r["n_errors"]}</td>'
            + "".join(f"<td>{int(r['errors'].get(k, 0))}</td>" for k in kinds)
            + f"<td>{_e(', '.join(r['alerts']))}</td><td>{_e(r['text'])}</td></tr>"
        )
    more = (
        f"<p>showing {max_rows} of {len(rows)}; the CSV has all</p>" if len(rows) > max_rows else ""
    )
    sec(
        f"Flagged tasks ({len(rows)})",
        '<input id="flag-filter" placeholder="filter rows…" size="40"> '
        f'<table id="flagged"><thead><tr>{head}</tr></thead><tbody>{"".join(trs)}</tbody></table>'
        + more,
        "flagged-tasks",
    )
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{_e(title)}</h1></header><main>{''.join(parts)}</main>"
        f"<script>{_JS}</script></body></html>\n"
    )


def write_report(
    result: Mapping[str, Any],
    path: str | Path,
    **kwargs: Any,
) -> Path:
    """Render and write atomically (temp file + rename); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(render_report(result, **kwargs), encoding="utf-8")
    tmp.replace(path)
    return path
