"""The hand-drawn SVG charts of the HTML report (escaping, palette, bars, heat map, scatter).

Replaced by a charting library in the console rework; kept small and dependency-free here.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["PALETTE", "KIND_COLOURS", "hbar_chart", "stacked_bar_chart", "histogram_chart",
           "heatmap_chart", "scatter_chart", "span_map", "esc", "fmt", "empty"]

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


def esc(x: Any) -> str:
    return html.escape(str(x), quote=True)


def fmt(v: Any, digits: int = 3) -> str:
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


# --------------------------------------------------------------------------- SVG primitives


def empty(msg: str) -> str:
    return f'<p class="empty">{esc(msg)}</p>'


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
        return empty("no data")
    label_w = min(220, 12 + 7 * max(len(str(k)) for k, _ in items))
    plot_w = width - label_w - 70
    top = max(vmax or 0.0, max(float(v) for _, v in items), 1e-12)
    h = bar_h * len(items) + 10
    out = [f'<svg class="chart {cls}" width="{width}" height="{h}" role="img">']
    for i, (k, v) in enumerate(items):
        y = 5 + i * bar_h
        w = max(0.0, float(v)) / top * plot_w
        out.append(
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{esc(k)}</text>'
            f'<rect class="bar" x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{bar_h - 4}" '
            f'fill="{colour}"><title>{esc(k)}: {esc(fmt.format(v))}</title></rect>'
            f'<text x="{label_w + w + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{esc(fmt.format(v))}</text>'
        )
    out.append("</svg>")
    return "".join(out)


def stacked_bar_chart(
    rows: Mapping[str, Mapping[str, int]], kinds: Sequence[str], *, cls: str, width: int = 640,
    names: Mapping[str, str] | None = None,
) -> str:
    """One horizontal stacked bar per row; segments coloured by ``kinds`` with a legend
    (``names``: the words shown for each kind, default the kind itself)."""
    names = names or {}
    if not rows:
        return empty("no data")
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
            f'<text x="{label_w - 6}" y="{y + bar_h * 0.7:.1f}" text-anchor="end">{esc(name)}</text>'
        )
        for k in kinds:
            v = int(r.get(k, 0))
            if v <= 0:
                continue
            w = v / top * plot_w
            out.append(
                f'<rect class="bar seg-{esc(k)}" x="{x:.1f}" y="{y + 2}" width="{w:.1f}" '
                f'height="{bar_h - 4}" fill="{KIND_COLOURS.get(k, "#999")}">'
                f"<title>{esc(name)} {esc(names.get(k, k))}: {v}</title></rect>"
            )
            x += w
        total = sum(int(r.get(k, 0)) for k in kinds)
        out.append(f'<text x="{x + 4:.1f}" y="{y + bar_h * 0.7:.1f}">{total}</text>')
    ly = h - 18
    lx = float(label_w)
    for k in kinds:
        out.append(
            f'<rect x="{lx:.0f}" y="{ly}" width="12" height="12" '
            f'fill="{KIND_COLOURS.get(k, "#999")}"/><text x="{lx + 16:.0f}" y="{ly + 11}">{esc(names.get(k, k))}</text>'
        )
        lx += 24 + 7.5 * len(names.get(k, k))
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
        return empty("no values")
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
        return empty("no data")
    n = m.shape[0]
    label_w = min(160, 12 + 7 * max(len(x) for x in labels))
    w = label_w + n * cell + 10
    h = label_w + n * cell + 10
    vmax = float(m.max()) or 1.0
    out = [f'<svg class="chart {cls}" width="{w}" height="{h}" role="img">']
    for j, lab in enumerate(labels):
        x = label_w + j * cell + cell / 2
        out.append(
            f'<text transform="translate({x:.1f},{label_w - 6}) rotate(-60)">{esc(lab)}</text>'
        )
    for i, lab in enumerate(labels):
        y = label_w + i * cell
        out.append(
            f'<text x="{label_w - 6}" y="{y + cell * 0.62:.1f}" text-anchor="end">{esc(lab)}</text>'
        )
        for j in range(n):
            v = m[i, j]
            a = v / vmax
            r, g, b = int(255 - a * (255 - 78)), int(255 - a * (255 - 121)), int(255 - a * (255 - 167))
            cnt = "" if raw is None else f" ({int(raw[i][j])})"
            out.append(
                f'<rect class="cell" x="{label_w + j * cell}" y="{y}" width="{cell - 1}" '
                f'height="{cell - 1}" fill="rgb({r},{g},{b})"><title>gold {esc(lab)} → '
                f"pred {esc(labels[j])}: {v:.3f}{cnt}</title></rect>"
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
        return empty("no spans to map")
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
        t = f"<title>{esc(titles[i])}</title>" if titles is not None else ""
        out.append(
            f'<circle class="pt" cx="{px:.1f}" cy="{py:.1f}" r="3" fill="{col}" '
            f'fill-opacity="0.75">{t}</circle>'
        )
    lxp = pad
    for name, col in list(cats.items())[:12]:
        out.append(
            f'<circle cx="{lxp + 5}" cy="10" r="5" fill="{col}"/>'
            f'<text x="{lxp + 13}" y="14">{esc(name)}</text>'
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
