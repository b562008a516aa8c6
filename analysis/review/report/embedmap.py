"""The span-embedding map of the console: span embeddings projected to 2-D.

UMAP (umap-learn) by default, PCA on request.  UMAP keeps neighbourhoods (spans of one kind
cluster; an annotation error sits among the other label's spans), PCA only the widest variance,
and one outlier squashes it.  Both run on at most ``max_points`` spans — a seeded sample that
keeps the highest-DEP spans first, so the suspicious ones are always on the map — after a
PCA to 32 dimensions (UMAP's neighbour search is quadratic in the dimension on a small CPU).
The axis range is the 1st–99th percentile, padded; points outside it are drawn on its border.

Cost on 2 CPU cores: ~8 s for 2,000 spans, plus ~15 s once per process while numba compiles
UMAP's kernels.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

__all__ = ["MAP_METHODS", "span_map"]

log = logging.getLogger(__name__)

MAP_METHODS = ("umap", "pca")


def _pick(n: int, dep: np.ndarray | None, max_points: int, seed: int) -> np.ndarray:
    """Rows shown: all when ``n <= max_points``; else the top half by DEP and a seeded random
    sample of the rest, sorted."""
    if n <= max_points:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if dep is None:
        return np.sort(rng.choice(n, max_points, replace=False))
    d = np.nan_to_num(np.asarray(dep, np.float64), nan=-1.0)
    top = np.argsort(-d, kind="stable")[: max_points // 2]
    rest = np.setdiff1d(np.arange(n), top)
    more = rng.choice(rest, max_points - top.size, replace=False)
    return np.sort(np.concatenate([top, more]))


def _project(x: np.ndarray, method: str, seed: int) -> np.ndarray:
    from sklearn.decomposition import PCA

    n, dim = x.shape
    if n < 3 or dim < 2:
        return np.zeros((n, 2))
    if method == "pca" or n < 16:
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    import umap

    if dim > 32:
        x = PCA(n_components=min(32, n - 1), random_state=seed).fit_transform(x)
    with warnings.catch_warnings():  # "n_jobs overridden by random_state": seeded is the point
        warnings.simplefilter("ignore", UserWarning)
        return umap.UMAP(n_neighbors=min(15, n - 1), min_dist=0.1, random_state=seed,
                         init="pca" if n > 50 else "random").fit_transform(x)


def _range(v: np.ndarray) -> list[float]:
    if not v.size:
        return [0.0, 1.0]
    lo, hi = (float(q) for q in np.quantile(v, [0.01, 0.99]))
    pad = (hi - lo) * 0.05 or 1.0
    return [round(lo - pad, 4), round(hi + pad, 4)]


def span_map(
    embeddings: np.ndarray,
    *,
    dep: Sequence[float] | np.ndarray | None = None,
    method: Literal["umap", "pca"] = "umap",
    max_points: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Project gold-span embeddings to 2-D for the console's map.

    Parameters
    ----------
    embeddings : (n_gold, dim) float, one row per row of ``corpus.gold.chars`` (model
        embeddings, or TF-IDF / character n-gram vectors when no model is available)
    dep : (n_gold,) span DEP (NaN: none), to keep the suspicious spans when sampling
    method : ``"umap"`` or ``"pca"``
    max_points : spans drawn at most

    Returns
    -------
    ``{"x", "y", "g", "method", "xr", "yr"}``: coordinates, the gold row of each point, the
    method's name and the axis ranges.
    """
    if method not in MAP_METHODS:
        raise ValueError(f"map method must be one of {MAP_METHODS}, got {method!r}")
    x = np.asarray(embeddings, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"embeddings must be (n_spans, dim), got shape {x.shape}")
    n = x.shape[0]
    d = None if dep is None else np.asarray(dep, dtype=np.float64)
    if d is not None and d.shape != (n,):
        raise ValueError(f"dep must have one value per span ({n}), got shape {d.shape}")
    keep = _pick(n, d, max_points, seed)
    xy = _project(x[keep], method, seed)
    xr, yr = _range(xy[:, 0]), _range(xy[:, 1])
    xs, ys = np.clip(xy[:, 0], xr[0], xr[1]), np.clip(xy[:, 1], yr[0], yr[1])
    return {"x": np.round(xs, 4).tolist(), "y": np.round(ys, 4).tolist(), "g": keep.tolist(),
            "method": "UMAP" if method == "umap" and len(keep) >= 16 else "PCA",
            "xr": xr, "yr": yr}
