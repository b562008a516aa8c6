"""One self-contained, offline HTML report of a dataset analysis.

Every chart is inline SVG drawn here in Python (no CDN, no external file, no web font); the only
script is a few lines of inline JavaScript that filter and sort the flagged-task table.  The
report reads the dict produced by :func:`analysis.review.analyze.Analysis.to_dict` (keys ``metrics``,
``alerts``, ``tasks``) plus an optional 2-D span map (:func:`span_map`).

Sections: summary, alerts, F1 by class, sample count by class, error distribution, top
misclassified pairs, confusion heat map, DEP distribution, high-DEP words, loss by label, span
embedding map (coloured by label, or by DEP), annotator agreement (when several annotators
labelled tasks: per label, per annotator, per pair), flagged tasks with links into Label Studio
(``<LS_URL>/projects/<pid>/data?task=<id>``), and :func:`write_csv` writes the same table.
A task record with ``gold`` / ``pred`` span lists (:func:`analysis.review.report.spans.task_spans`)
is drawn as two highlighted lines, the annotation and the model, with the suggested fixes;
error kinds are named from the annotation's side (:data:`KIND_WORDS`).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.review.report.charts import (
    PALETTE,
    empty,
    esc,
    fmt,
    hbar_chart,
    heatmap_chart,
    histogram_chart,
    scatter_chart,
    stacked_bar_chart,
)
from analysis.review.report.tasks import KIND_LEGEND, KIND_WORDS, task_cell, task_link

logger = logging.getLogger(__name__)

__all__ = ["KIND_WORDS", "render_report", "write_report", "write_csv", "flagged_rows"]


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
                "text": str(t.get("text", "")),
                "gold": t.get("gold"),
                "pred": t.get("pred", []),
            }
        )
    rows.sort(key=lambda r: (-(r["dep"] if r["dep"] is not None else -1.0), r["id"]))
    return rows


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
code{background:#f6f8fa;padding:1px 4px}.legend{color:#555;font-size:12px}.cut{color:#999}
ul.numbers{margin:4px 0;padding-left:18px;columns:2}.alert-annotators{width:auto;margin:4px 0}
.alert-annotators tr.flagged td{color:#b31d28;font-weight:600}.alert-tasks{color:#444;margin:4px 0}
td.spans{min-width:420px}.line{margin:1px 0}.who{display:inline-block;width:74px;color:#777;font-size:11px}
mark.sp{padding:0 2px;border-radius:3px;background:#e6f4ea}mark.sp sub{font-size:9px;color:#555;margin-left:2px}
mark.k-wrong_tag{background:#fde2c8}mark.k-span_shift{background:#e8dcf7}mark.k-missed{background:#f9d0d0}
mark.k-ghost{background:#d4e6fb;outline:1px dashed #4e79a7}mark.k-none{background:#eee}
ul.fixes{margin:2px 0 0 74px;padding-left:14px;color:#8a3b00;font-size:12px}
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


def _summary(m: Mapping[str, Any], alerts: list[Mapping[str, Any]], ls_url: str | None = None,
             project_id: int | None = None) -> list[str]:
    """The summary and the alerts sections."""
    kpis = [
        ("tasks", m.get("n_tasks", 0)),
        ("annotated", m.get("n_annotated", 0)),
        ("gold spans", m.get("n_gold_spans", 0)),
        ("micro F1", (m.get("prf", {}).get("micro avg", {}) or {}).get("f1-score")),
        ("alerts", len(alerts)),
        ("flagged tasks", len({t for a in alerts for t in a.get("task_ids", [])})),
    ]
    summary = "".join(
        f'<span class="kpi"><b>{esc(fmt(v) if v is not None else "–")}</b>{esc(k)}</span>'
        for k, v in kpis)
    if m.get("dep", {}).get("source"):
        summary += f'<p>DEP from: <code>{esc(m["dep"]["source"])}</code></p>'
    body = "".join(_alert(a, ls_url, project_id) for a in alerts) if alerts \
        else empty("no alert fired")
    return [_section("Summary", summary, "summary"), _section("Alerts", body, "alerts")]


#: task ids listed (linked) under each alert; the rest are in the flagged-task table and CSV
ALERT_TASKS_SHOWN = 12


def _num(v: Any) -> str:
    """An alert figure: whole floats as integers (a threshold of 1000 chars, not 1000.000)."""
    if v is None:
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return fmt(v)


def _alert(a: Mapping[str, Any], ls_url: str | None, project_id: int | None) -> str:
    """One alert as a person reads it: what fired, the rule, its figures, the first tasks."""
    ids = [int(t) for t in a.get("task_ids", [])]
    nums = dict(a.get("numbers", {}) or {})
    annotators = nums.pop("annotators", None)
    flagged = set(nums.pop("flagged_annotators", None) or [])
    scalars = [(k, v) for k, v in nums.items() if isinstance(v, (int, float, str, bool))
               or v is None]
    rest = {k: v for k, v in nums.items() if (k, v) not in scalars}
    out = [f'<div class="alert"><b>{esc(a["name"])}</b> — {len(ids)} task(s) flagged',
           f'<div class="rule">{esc(a["rule"])}</div>']
    if scalars:
        out.append('<ul class="numbers">' + "".join(
            f"<li>{esc(k.replace('_', ' '))}: <b>{esc(_num(v))}</b></li>"
            for k, v in scalars) + "</ul>")
    if isinstance(annotators, Mapping) and annotators:
        rows = sorted(annotators.items(), key=lambda kv: -float(kv[1].get("z", 0.0)))
        out.append('<table class="alert-annotators"><thead><tr><th>annotator</th><th>spans</th>'
                   "<th>error rate</th><th>z-score</th></tr></thead><tbody>" + "".join(
                       f'<tr class="{"flagged" if name in flagged else ""}"><td>{esc(name)}'
                       f'{" ⚑" if name in flagged else ""}</td><td>{esc(fmt(v.get("spans")))}'
                       f'</td><td>{esc(fmt(v.get("rate")))}</td><td>{esc(fmt(v.get("z")))}</td>'
                       "</tr>" for name, v in rows) + "</tbody></table>")
    if rest:
        out.append("<details><summary>more figures</summary><pre>"
                   f"{esc(json.dumps(rest, indent=1)[:4000])}</pre></details>")
    if ids:
        shown = ", ".join(task_link(t, ls_url, project_id) for t in ids[:ALERT_TASKS_SHOWN])
        more = f" and {len(ids) - ALERT_TASKS_SHOWN} more" if len(ids) > ALERT_TASKS_SHOWN else ""
        out.append(f'<div class="alert-tasks">tasks: {shown}{more}</div>')
    return "".join(out) + "</div>"


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]], cls: str) -> str:
    h = "".join(f"<th>{esc(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{esc(fmt(v) if v is not None else '–')}</td>" for v in r)
                + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def _agreement(ag: Mapping[str, Any]) -> str:
    """Annotator agreement: pooled figures, per label, per annotator, per pair."""
    ov = ag.get("overall", {}) or {}
    kpis = [("multi-annotated tasks", ag.get("tasks")), ("annotators", len(ag["annotators"])),
            ("span F1 (exact)", ov.get("f1_exact")), ("span F1 (overlap)", ov.get("f1_overlap")),
            ("token alpha", ag.get("alpha")), ("consensus ties", ag.get("ties"))]
    body = "".join(f'<span class="kpi"><b>{esc(fmt(v) if v is not None else "–")}</b>'
                   f"{esc(k)}</span>" for k, v in kpis)
    body += ("<p>Pairwise span F1 between annotators (exact: same trimmed offsets and label; "
             "overlap: same label, ranges share a character) and nominal Krippendorff's alpha "
             "over tokens.  Error rate: 1 − F1 against the majority of the other annotators."
             "</p>")
    alpha = ag.get("alpha_per_label", {}) or {}
    body += _table(("label", "F1 exact", "F1 overlap", "token alpha"),
                   [(k, v.get("f1_exact"), v.get("f1_overlap"), alpha.get(k))
                    for k, v in (ag.get("per_label", {}) or {}).items()], "agreement-labels")
    per = ag.get("per_annotator", []) or []
    body += hbar_chart([(a["annotator"], a.get("f1_vs_others") or 0.0) for a in per],
                       cls="annotator-f1", vmax=1.0, colour=PALETTE[3])
    body += _table(("annotator", "tasks", "spans", "F1 vs others", "F1 vs consensus",
                    "error rate"),
                   [(a["annotator"], a["tasks"], a["spans"], a.get("f1_vs_others"),
                     a.get("f1_vs_consensus"), a.get("error_rate")) for a in per],
                   "agreement-annotators")
    body += _table(("annotator A", "annotator B", "spans A", "spans B", "F1 exact", "F1 overlap"),
                   [(p["a"], p["b"], p["spans_a"], p["spans_b"], p.get("f1_exact"),
                     p.get("f1_overlap")) for p in ag.get("pairs", []) or []],
                   "agreement-pairs")
    return _section("Annotator agreement", body, "agreement")


def _section(name: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{esc(name)}</h2>{body}</section>'


def _span_map_chart(spanmap: Mapping[str, Any]) -> str:
    n = len(spanmap["x"])
    titles = [f"{lab} {txt!r} (task {tid})" for lab, txt, tid in zip(
        spanmap["label"], spanmap.get("text") or [""] * n, spanmap.get("task_id") or ["?"] * n)]
    body = scatter_chart(spanmap["x"], spanmap["y"], cls="span-map-label",
                         colour_by=spanmap["label"], titles=titles)
    if spanmap.get("dep") is not None:
        body += scatter_chart(spanmap["x"], spanmap["y"], cls="span-map-dep",
                              value=spanmap["dep"], titles=titles)
    return _section("Span embedding map (PCA)", f'<div class="grid">{body}</div>', "map")


def _charts(m: Mapping[str, Any], spanmap: Mapping[str, Any] | None) -> str:
    """The chart grid."""
    prf = m.get("prf", {}) or {}
    f1 = [(k, float(v.get("f1-score", 0.0))) for k, v in prf.items()
          if not k.endswith(" avg") and isinstance(v, Mapping)]
    sc = m.get("sample_count", {}) or {}
    tc = m.get("top_confusions", []) or []
    conf = m.get("confusion", {}) or {}
    dep = m.get("dep", {}) or {}
    hist = dep.get("histogram") or {}
    hw = m.get("high_dep_words", []) or []
    loss = (m.get("loss", {}) or {}).get("by_label", {}) or {}
    out = [
        _section("F1 by class", hbar_chart(f1, cls="f1-by-class", vmax=1.0), "f1"),
        _section("Sample count by class (spans)", hbar_chart(
            [(k, v.get("spans", 0)) for k, v in sc.items()], cls="sample-count", fmt="{:.0f}",
            colour=PALETTE[4]), "samples"),
        _section("Error distribution by class", stacked_bar_chart(
            m.get("error_distribution", {}) or {},
            ("correct", "wrong_tag", "span_shift", "missed", "ghost"), cls="error-distribution",
            names=KIND_WORDS) + f'<p class="legend">{KIND_LEGEND}</p>', "errors"),
        _section("Top misclassified pairs (gold → predicted)", hbar_chart(
            [(f"{p['gold']} → {p['pred']}", p["count"]) for p in tc[:15]], cls="top-confusions",
            fmt="{:.0f}", colour=PALETTE[2]), "pairs"),
    ]
    if conf.get("labels"):
        out.append(_section(
            "Confusion (row-normalised" + (", diagonal removed)" if conf.get("zero_diagonal")
                                           else ")"),
            heatmap_chart(conf["normalized"], conf["labels"], cls="confusion",
                          raw=conf.get("raw")), "confusion"))
    out.append(_section("DEP distribution (tasks)", histogram_chart(
        hist.get("edges", []), hist.get("counts", []), cls="dep-histogram",
        threshold=dep.get("threshold")) if hist
        else empty("no DEP: analyze with --probs or --model"), "dep"))
    out.append(_section("Words most frequent in high-DEP spans", hbar_chart(
        [(w["word"], w["count"]) for w in hw[:20]], cls="high-dep-words", fmt="{:.0f}",
        colour=PALETTE[1]), "words"))
    out.append(_section("Mean token loss by gold label", hbar_chart(
        [(k, v["mean"]) for k, v in loss.items()], cls="loss-by-label", colour=PALETTE[6])
        if loss else empty("no loss: analyze with --probs or --model"), "loss"))
    if spanmap and spanmap.get("x"):
        out.append(_span_map_chart(spanmap))
    return '<div class="grid">' + "".join(out) + "</div>"


def _flagged(result: Mapping[str, Any], ls_url: str | None, project_id: int | None,
             max_rows: int) -> str:
    """The sortable, filterable table of flagged tasks."""
    rows = flagged_rows(result)
    kinds = ("wrong_tag", "span_shift", "missed", "ghost")
    head = "".join(f"<th>{esc(h)}</th>" for h in (
        "task", "DEP", "errors", *(KIND_WORDS[k] for k in kinds), "alerts", "text"))
    trs = []
    for r in rows[:max_rows]:
        dep_v = "" if r["dep"] is None else f"{r['dep']:.3f}"
        trs.append(
            "<tr>"
            f'<td data-v="{r["id"]}">{task_link(r["id"], ls_url, project_id)}</td>'
            f'<td data-v="{dep_v}">{dep_v}</td><td>{r["n_errors"]}</td>'
            + "".join(f"<td>{int(r['errors'].get(k, 0))}</td>" for k in kinds)
            + f"<td>{esc(', '.join(r['alerts']))}</td>"
            + task_cell(r["text"], r.get("gold"), r.get("pred")) + "</tr>")
    more = (f"<p>showing {max_rows} of {len(rows)}; the CSV has all</p>"
            if len(rows) > max_rows else "")
    return _section(
        f"Flagged tasks ({len(rows)})",
        f'<p class="legend">{KIND_LEGEND}</p>'
        '<input id="flag-filter" placeholder="filter rows…" size="40"> '
        f'<table id="flagged"><thead><tr>{head}</tr></thead><tbody>{"".join(trs)}</tbody></table>'
        + more, "flagged-tasks")


def _samples(result: Mapping[str, Any], ls_url: str | None, project_id: int | None) -> str:
    """Samples by loss, a seeded random sample and the tokens with the highest loss, each task
    drawn with its annotation and model lines (as ExplaiNER's sample views)."""
    samples = result.get("samples") or {}
    tasks = {int(t["index"]): t for t in result.get("tasks", []) if t.get("index") is not None}
    loss = (result.get("metrics", {}) or {}).get("loss", {}) or {}
    by_loss = {int(x["id"]): x["loss"]
               for x in (result.get("metrics", {}) or {}).get("samples_by_loss") or []}

    def rows(idx: list[int], with_loss: bool) -> str:
        trs = []
        for i in idx:
            t = tasks.get(int(i))
            if t is None:
                continue
            tid = int(t["id"]) if t.get("id") is not None else int(t["index"])
            cells = [f'<td>{task_link(tid, ls_url, project_id)}</td>']
            if with_loss:
                cells.append(f"<td>{esc(fmt(by_loss.get(tid)))}</td>")
            dep = t.get("dep")
            cells.append(f"<td>{'' if dep is None else f'{dep:.3f}'}</td>")
            cells.append(task_cell(str(t.get("text", "")), t.get("gold"), t.get("pred")))
            trs.append("<tr>" + "".join(cells) + "</tr>")
        return "".join(trs)

    out = []
    if samples.get("by_loss"):
        out.append(_section("Samples by loss (highest mean token loss)", (
            '<table class="samples-by-loss"><thead><tr><th>task</th><th>loss</th><th>DEP</th>'
            f'<th>text</th></tr></thead><tbody>{rows(samples["by_loss"], True)}</tbody></table>'),
            "samples-by-loss"))
    if loss.get("by_token"):
        out.append(_section("Loss by token (highest mean, seen 3+ times)", _table(
            ("token", "count", "mean loss", "median loss"),
            [(x["token"], x["count"], x["mean"], x["median"]) for x in loss["by_token"]],
            "loss-by-token"), "loss-by-token"))
    if samples.get("random"):
        out.append(_section(f"Random samples (seed {samples.get('seed', 0)})", (
            '<table class="random-samples"><thead><tr><th>task</th><th>DEP</th><th>text</th>'
            f'</tr></thead><tbody>{rows(samples["random"], False)}</tbody></table>'),
            "random-samples"))
    return "".join(out)


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
    parts = _summary(m, alerts, ls_url, project_id)
    if m.get("agreement") and m["agreement"].get("tasks"):
        parts.append(_agreement(m["agreement"]))
    parts += [_charts(m, spanmap), _flagged(result, ls_url, project_id, max_rows),
              _samples(result, ls_url, project_id)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f"<title>{esc(title)}</title><style>{_CSS}</style></head><body>"
        f"<header><h1>{esc(title)}</h1></header><main>{''.join(parts)}</main>"
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
