"""One self-contained, offline HTML console of a dataset analysis.

The page is one file: its data (:func:`analysis.review.report.payload.console_payload`, a JSON
``<script>``), the charting library (plotly.js, its "cartesian" partial bundle, vendored and
inlined: 1.5 MB, no CDN, no web font, no network) and the console script (``console.js``, inlined),
which draws the charts and the task table and links them: clicking a class, a confusion
cell, a misclassified pair, a high-DEP word, a DEP bin, an alert, an annotator or a duplicate
group, the DEP range slider, the error-kind, split and text filters, and a lasso on the span
map all narrow one filter state shown in the filters bar (with reset); the filtered tasks
export as CSV and as the ``ner-quality push --view-tasks`` command that turns them into a
Label Studio review view.

Sections: summary, alerts (sentences with their figures and tasks), annotators (spans, error
rate, z-score), agreement, the chart grid (F1 by class, spans by class, error kinds by class,
top misclassified pairs, confusion, DEP distribution with its threshold, words of high-DEP
spans, loss by label), the span-embedding map, the task table (annotation and model lines
with the spans highlighted by error kind, per-span DEP, suggested fixes, the same surface form
annotated differently elsewhere, the link into Label Studio; paginated), inspect by id (spans,
subword tokens and windows as the model sees them), samples by loss, random samples, loss by
token, duplicates, activations (NMF of FFN activations) and probing.

Plotly was chosen over Vega-Lite/Altair because one bundled file draws every chart here (bars,
heat map, scatter with lasso selection) with click and selection events, and its partial
bundle is small enough to inline (Vega-Lite needs vega + vega-lite + vega-embed, ~1 MB, and
its selections would have to be re-wired into the shared filter state the same way).
"""

from __future__ import annotations

import csv
import functools
import importlib.resources
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from analysis.review.report.payload import MAX_TASKS, console_payload
from analysis.review.report.words import KIND_LEGEND, KIND_WORDS, empty, esc, fmt, task_link

logger = logging.getLogger(__name__)

__all__ = ["KIND_WORDS", "flagged_rows", "render_report", "write_csv", "write_report"]


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
        rows.append({"id": tid, "dep": t.get("dep"),
                     "n_errors": int(sum(v for k, v in errs.items() if k != "correct")),
                     "errors": errs, "alerts": names, "text": str(t.get("text", ""))})
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
            link = (f"{ls_url.rstrip('/')}/projects/{int(project_id)}/data?task={r['id']}"
                    if ls_url and project_id is not None else "")
            w.writerow([r["id"], "" if r["dep"] is None else f"{r['dep']:.4f}", r["n_errors"],
                        *[int(r["errors"].get(k, 0)) for k in kinds], "; ".join(r["alerts"]),
                        link, r["text"]])
    return path


# --------------------------------------------------------------------------- assets


@functools.cache
def _asset(name: str) -> str:
    return importlib.resources.files("analysis.review.report").joinpath(name).read_text(
        encoding="utf-8")


#: plotly.js's "cartesian" partial bundle (npm ``plotly.js-cartesian-dist-min``, MIT, the same
#: version as the full bundle): bar, heatmap, scatter with box/lasso selection — everything the
#: console draws, in 1.5 MB instead of the full bundle's 4.8 MB, which takes ~1.4 s less to
#: parse at each load on a small CPU.  Vendored (``vendor/``, with its licence): nothing is
#: fetched at install or run time.
PLOTLY_BUNDLE = "vendor/plotly-cartesian.min.js"


@functools.cache
def plotly_js() -> str:
    """The inlined plotly.js (see :data:`PLOTLY_BUNDLE`)."""
    return _asset(PLOTLY_BUNDLE)


def _json_script(obj: Any) -> str:
    """JSON safe inside ``<script>``: ``</`` and the HTML comment opener escaped."""
    return (json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
            .replace("</", "<\\/").replace("<!--", "<\\!--"))


# --------------------------------------------------------------------------- server-drawn parts


def _section(name: str, body: str, sid: str) -> str:
    return f'<section id="{sid}"><h2>{esc(name)}</h2>{body}</section>'


def _kpis(items: list[tuple[str, Any]]) -> str:
    return "".join(f'<span class="kpi"><b>{esc(fmt(v) if v is not None else "–")}</b>'
                   f"{esc(k)}</span>" for k, v in items)


def _summary(m: Mapping[str, Any], alerts: list[Mapping[str, Any]]) -> str:
    body = _kpis([
        ("tasks", m.get("n_tasks", 0)), ("annotated", m.get("n_annotated", 0)),
        ("gold spans", m.get("n_gold_spans", 0)),
        ("micro F1", (m.get("prf", {}).get("micro avg", {}) or {}).get("f1-score")),
        ("alerts", len(alerts)),
        ("flagged tasks", len({t for a in alerts for t in a.get("task_ids", [])}))])
    if m.get("dep", {}).get("source"):
        body += f'<p>DEP from: <code>{esc(m["dep"]["source"])}</code></p>'
    return _section("Summary", body, "summary")


#: task ids listed (linked) under each alert; clicking the alert shows them all in the table
ALERT_TASKS_SHOWN = 12


def _num(v: Any) -> str:
    """An alert figure: whole floats as integers (a threshold of 1000 chars, not 1000.000)."""
    if v is None:
        return "–"
    if isinstance(v, float) and v.is_integer() and abs(v) < 1e15:
        return str(int(v))
    return fmt(v)


def _alert(i: int, a: Mapping[str, Any], n_tasks: int, ls_url: str | None,
           project_id: int | None) -> str:
    """One alert as a sentence: what fired for how many tasks, the rule, its figures, the
    first tasks; the whole alert is a filter of the console."""
    ids = [int(t) for t in a.get("task_ids", [])]
    nums = dict(a.get("numbers", {}) or {})
    nums.pop("annotators", None)
    flagged = nums.pop("flagged_annotators", None) or []
    scalars = [(k, v) for k, v in nums.items()
               if isinstance(v, (int, float, str, bool)) or v is None]
    share = f" ({100 * len(ids) / n_tasks:.1f} % of {n_tasks})" if n_tasks else ""
    out = [f'<div class="alert" data-alert="{i}" title="click: show these tasks">',
           f"<b>{esc(a['name'])}</b>: {len(ids)} task(s){esc(share)} — {esc(a['rule'])}."]
    if flagged:
        out.append(f" Annotator(s) flagged: <b>{esc(', '.join(map(str, flagged)))}</b> "
                   "(see Annotators).")
    if scalars:
        out.append('<ul class="numbers">' + "".join(
            f"<li>{esc(k.replace('_', ' '))}: <b>{esc(_num(v))}</b></li>" for k, v in scalars)
            + "</ul>")
    if ids:
        shown = ", ".join(task_link(t, ls_url, project_id) for t in ids[:ALERT_TASKS_SHOWN])
        more = f" and {len(ids) - ALERT_TASKS_SHOWN} more" if len(ids) > ALERT_TASKS_SHOWN else ""
        out.append(f'<div class="alert-tasks">tasks: {shown}{more} '
                   f'<button class="filter-alert">show all {len(ids)} in the table</button></div>')
    return "".join(out) + "</div>"


def _alerts(m: Mapping[str, Any], alerts: list[Mapping[str, Any]], ls_url: str | None,
            project_id: int | None) -> str:
    n = int(m.get("n_tasks", 0) or 0)
    body = "".join(_alert(i, a, n, ls_url, project_id) for i, a in enumerate(alerts)) \
        if alerts else empty("no alert fired")
    return _section("Alerts", body, "alerts")


def _table(head: tuple[str, ...], rows: list[tuple[Any, ...]], cls: str) -> str:
    h = "".join(f"<th>{esc(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td>{esc(fmt(v) if v is not None else '–')}</td>" for v in r)
                + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table>'


def _agreement(ag: Mapping[str, Any]) -> str:
    """Annotator agreement: pooled figures, per label, per annotator, per pair."""
    ov = ag.get("overall", {}) or {}
    body = _kpis([("multi-annotated tasks", ag.get("tasks")), ("annotators", len(ag["annotators"])),
                  ("span F1 (exact)", ov.get("f1_exact")), ("span F1 (overlap)", ov.get("f1_overlap")),
                  ("token alpha", ag.get("alpha")), ("consensus ties", ag.get("ties"))])
    body += ("<p>Pairwise span F1 between annotators (exact: same trimmed offsets and label; "
             "overlap: same label, ranges share a character) and nominal Krippendorff's alpha "
             "over tokens.  Error rate: 1 − F1 against the majority of the other annotators."
             "</p>")
    alpha = ag.get("alpha_per_label", {}) or {}
    body += _table(("label", "F1 exact", "F1 overlap", "token alpha"),
                   [(k, v.get("f1_exact"), v.get("f1_overlap"), alpha.get(k))
                    for k, v in (ag.get("per_label", {}) or {}).items()], "agreement-labels")
    per = ag.get("per_annotator", []) or []
    body += '<div class="chart" id="ch-agreement"></div>'
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


def _chart(sid: str, title: str, note: str = "", extra: str = "") -> str:
    return (f'<section id="{sid}"><h2>{esc(title)}</h2>{extra}'
            f'<div class="chart" id="ch-{sid}"></div>'
            + (f'<p class="legend">{note}</p>' if note else "") + "</section>")


def _charts(m: Mapping[str, Any], has_dep: bool, has_map: bool, map_note: str,
            has_pred: bool) -> str:
    loss = (m.get("loss", {}) or {}).get("by_label")
    no_pred = "no model output: analyze with --probs or --model, or tasks with predictions"
    model_side = [
        _chart("f1", "F1 by class", "Click a bar: only tasks with a span of that class."),
        _chart("errors", "Error kinds by class", KIND_LEGEND),
        _chart("pairs", "Top misclassified pairs (annotated → predicted)",
               "Click a bar: only tasks with that confusion."),
        _chart("confusion", "Confusion (annotated rows, predicted columns; colour: share of the "
               "row, number: spans)", "Click a cell: only tasks with that confusion.",
               '<label class="opt"><input type="checkbox" id="conf-diag"'
               + (" checked" if (m.get("confusion") or {}).get("zero_diagonal") else "")
               + "> errors only (diagonal removed)</label>"),
    ] if has_pred else [_section("F1, error kinds, confusion", empty(no_pred), "f1")]
    out = [
        *model_side[:1],
        _chart("count", "Annotated spans by class"),
        *model_side[1:],
        _chart("dep", "DEP distribution (tasks)", "Click a bin: that DEP range.")
        if has_dep else _section("DEP distribution", empty("no DEP: analyze with --probs or "
                                                           "--model"), "dep"),
        _chart("words", "Words of high-DEP spans", "Click a bar: only tasks with that word in a "
               "high-DEP span.") if has_dep else "",
        _chart("loss", "Mean token loss by gold label") if loss
        else _section("Mean token loss by gold label",
                      empty("no loss: analyze with --probs or --model"), "loss"),
    ]
    grid = '<div class="grid">' + "".join(out) + "</div>"
    if has_map:
        grid += _chart(
            "map", "Span embeddings", map_note + " Lasso or box-select points to filter; "
            "grey points are outside the current filter.",
            '<label class="opt">colour by <select id="map-colour"><option value="dep">DEP'
            '</option><option value="label">gold label</option><option value="kind">error kind'
            "</option></select></label>")
    return grid


def _filters_bar(kinds: list[str], splits: list[str]) -> str:
    kind_boxes = "".join(
        f'<label><input type="checkbox" class="kind-filter" value="{i}"> {esc(KIND_WORDS[k])}'
        "</label>" for i, k in enumerate(kinds) if k != "correct")
    split_opts = "".join(f'<option value="{i}">{esc(s)}</option>' for i, s in enumerate(splits))
    return (
        '<div id="filters"><b>Filters:</b> <span id="chips"></span> '
        '<button id="reset">reset</button>'
        '<div class="controls">DEP <input type="range" id="dep-min" min="0" max="1" step="0.01" '
        'value="0" aria-label="lowest DEP"><input type="range" id="dep-max" min="0" max="1" '
        'step="0.01" value="1" aria-label="highest DEP"> <span id="dep-label"></span>'
        f' · kinds {kind_boxes}'
        f' · split <select id="split-filter"><option value="">all</option>{split_opts}</select>'
        ' · <label><input type="checkbox" id="flagged-only"> flagged only</label>'
        ' · <input id="text-filter" placeholder="text contains…" size="18"></div></div>')


def _tasks_section() -> str:
    head = ("<th>task</th><th>DEP</th><th>errors</th><th>kinds</th><th>alerts</th>"
            "<th>annotator</th><th>annotation and model</th>")
    return _section("Tasks", (
        f'<p class="legend">Sorted by DEP. {KIND_LEGEND}</p>'
        '<div class="pager"><span id="tasks-count"></span> <button id="prev">‹ prev</button> '
        '<span id="page-label"></span> <button id="next">next ›</button> '
        '<button id="csv">download the filtered tasks (CSV)</button></div>'
        '<p class="push">Into a Label Studio review view: <code id="push-cmd"></code></p>'
        f'<table id="task-table"><thead><tr>{head}</tr></thead><tbody id="tasks-body"></tbody>'
        "</table>"), "tasks")


def _inspect() -> str:
    return _section("Inspect a task", (
        '<input id="inspect-id" placeholder="task id" size="10"> <button id="inspect-go">'
        'inspect</button><div id="inspect-out"></div>'), "inspect")


def _samples(result: Mapping[str, Any]) -> str:
    samples = result.get("samples") or {}
    head = ("<th>task</th><th>DEP</th>{x}<th>errors</th><th>kinds</th><th>alerts</th>"
            "<th>annotator</th><th>annotation and model</th>")
    out = []
    if samples.get("by_loss"):
        out.append(_section("Samples by loss (highest mean token loss)", (
            f'<table class="samples-by-loss"><thead><tr>{head.format(x="<th>loss</th>")}</tr>'
            '</thead><tbody id="samples-loss-body"></tbody></table>'), "samples-by-loss"))
    if samples.get("random"):
        out.append(_section(f"Random samples (seed {samples.get('seed', 0)})", (
            f'<table class="random-samples"><thead><tr>{head.format(x="")}</tr></thead>'
            '<tbody id="samples-random-body"></tbody></table>'), "random-samples"))
    loss = (result.get("metrics", {}) or {}).get("loss", {}) or {}
    if loss.get("by_token"):
        out.append(_section("Loss by token (highest mean, seen 3+ times)", _table(
            ("token", "count", "mean loss", "median loss"),
            [(x["token"], x["count"], x["mean"], x["median"]) for x in loss["by_token"]],
            "loss-by-token"), "loss-by-token"))
    return "".join(out)


def _annotators(has: bool) -> str:
    if not has:
        return ""
    return _section("Annotators", (
        '<p class="legend">Error rate: disagreements with the model (wrong type, boundary, extra '
        "entity, entity missing) per annotated span; z-score from the annotator alert. ⚑: "
        "flagged by it.</p><table class=\"annotators\"><thead><tr><th>annotator</th><th>tasks"
        "</th><th>spans</th><th>disagreements</th><th>error rate</th><th>z-score</th><th></th>"
        '</tr></thead><tbody id="annotators-body"></tbody></table>'), "annotators")


def _duplicates(m: Mapping[str, Any], ls_url: str | None, project_id: int | None) -> str:
    d = m.get("duplicates") or {}
    groups = d.get("groups") or []
    if not groups:
        return ""
    items = "".join(
        f"<li>{', '.join(task_link(t, ls_url, project_id) for t in g[:12])}"
        f"{' …' if len(g) > 12 else ''} <button class=\"filter-group\" data-group=\"{i}\">"
        "show</button></li>" for i, g in enumerate(groups[:50]))
    return _section(f"Duplicates ({d.get('n_groups', len(groups))} groups, {esc(d.get('method'))}"
                    f" ≥ {esc(fmt(d.get('threshold')))})", f"<ol>{items}</ol>", "duplicates")


def _model_sections(extras: Mapping[str, Any]) -> str:
    act = extras.get("activations")
    note = extras.get("activations_note") or "no model given: activations need --model"
    body = ('<div id="activations-out"></div><div class="chart" id="ch-activations"></div>'
            if act else empty(note))
    probe = ("<p>Type a sentence, see the model's tokens, the top tags of each with their "
             "probabilities, low-confidence words marked:</p>"
             '<pre>ner-quality probe --model DIR "Leeds beat Chelsea at Elland Road"</pre>'
             "<p>or, against the running backend, <code>POST /probe</code> with "
             '<code>{"text": "..."}</code>.</p>')
    return (_section("Activations (NMF of the FFN neurons)", body, "activations")
            + _section("Probing", probe, "probing"))


_CSS_FILE = "console.css"


def render_report(
    result: Mapping[str, Any],
    *,
    ls_url: str | None = None,
    project_id: int | None = None,
    spans: Mapping[str, Any] | None = None,
    spanmap: Mapping[str, Any] | None = None,
    extras: Mapping[str, Any] | None = None,
    title: str = "ner-quality report",
    max_tasks: int = MAX_TASKS,
) -> str:
    """The console as one HTML string (see the module docstring).

    ``result`` is :meth:`analysis.review.analyze.Analysis.to_dict` with, per task, ``text``
    (and ``annotator`` / ``split`` when known) and optional ``samples``; ``spans`` the
    :func:`~analysis.review.report.spans.span_columns`; ``spanmap`` the
    :func:`~analysis.review.report.embedmap.span_map`; ``extras`` the runtime's
    ``model_view`` / ``activations`` (and notes when they were skipped).
    """
    m = result.get("metrics", {}) or {}
    alerts = list(result.get("alerts", []) or [])
    extras = dict(extras or {})
    data = console_payload(result, spans=spans, spanmap=spanmap, extras=extras, ls_url=ls_url,
                           project_id=project_id, max_tasks=max_tasks)
    has_dep = any(d is not None for d in data["tasks"]["dep"])
    banner = (f'<p class="banner">This console holds {len(data["tasks"]["key"])} of '
              f'{data["n_all"]} tasks (the flagged ones, the samples, then the highest DEP); '
              "its charts are over those, the summary and alerts over all.</p>"
              if data["capped"] else "")
    parts = [banner, _summary(m, alerts), _alerts(m, alerts, ls_url, project_id),
             _annotators(bool(data["annotators"]))]
    if m.get("agreement") and m["agreement"].get("tasks"):
        parts.append(_agreement(m["agreement"]))
    map_note = (f"{(spanmap or {}).get('method', 'PCA')} of {len(data['map']['x'])} gold-span "
                f"embeddings ({esc(extras.get('map_source') or 'span vectors')})."
                if data["map"] else "")
    parts += [_charts(m, has_dep, bool(data["map"]), map_note, data["spans"]["has_pred"]),
              _tasks_section(), _inspect(),
              _samples(result), _duplicates(m, ls_url, project_id), _model_sections(extras)]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{esc(title)}</title><style>{_asset(_CSS_FILE)}</style></head><body>"
        f"<header><h1>{esc(title)}</h1></header>"
        f"{_filters_bar(data['kinds'], data['splits'])}<main>{''.join(parts)}</main>"
        f'<script type="application/json" id="nerq-data">{_json_script(data)}</script>'
        f"<script>{plotly_js()}</script><script>{_asset('console.js')}</script>"
        "</body></html>\n"
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
