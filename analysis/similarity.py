"""A persisted faiss index over span embeddings, with a parallel metadata table.

Similarity is cosine: vectors are L2-normalised (``faiss.normalize_L2``) and searched by inner
product.  Below ``exact_max`` spans (default 50,000) the index is exact (``IndexFlatIP``): at
384 dimensions a brute-force scan of 50k vectors costs ~20 M multiply-adds per query, well under
a millisecond per query in batches, and needs no training.  Above it, :meth:`SpanIndex.build`
creates an ``IndexIVFFlat`` with ``nlist ≈ 4·sqrt(n)`` inverted lists, trained (k-means) on the
data before the vectors are added, searched with ``nprobe`` lists.  ``nprobe`` trades recall for
speed linearly: the fraction of the data scanned per query is about ``nprobe / nlist``.  The
default ``nprobe = max(16, nlist // 16)`` scans ~6 % of the data; ``bench/bench_similarity.py``
reports recall@10 and queries/s for several values (random, unclustered vectors are the worst
case for IVF; real span embeddings are strongly clustered and reach higher recall at the same
``nprobe``).

Either index is wrapped in ``IndexIDMap2`` so spans are added and removed by a stable int64 id.
Per-span metadata (task index and id, character offsets, text, gold label, DEP) lives in a
pandas table indexed by the same ids.  faiss pads missing neighbours with id ``-1``; those are
always dropped.

>>> import numpy as np
>>> idx = SpanIndex(4)
>>> vecs = np.eye(4, dtype=np.float32)
>>> ids = idx.add(vecs, {"task": [0, 0, 1, 2], "text": ["a", "b", "c", "d"],
...                      "label": ["PER", "LOC", "PER", "ORG"]})
>>> hits = idx.query(np.array([1.0, 0.1, 0.5, 0.2]), 2, exclude_task=0)
>>> hits["text"].tolist()
['c', 'd']
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, cast

import faiss
import numpy as np
import pandas as pd

__all__ = ["SpanIndex", "META_COLUMNS", "EXACT_MAX"]

logger = logging.getLogger(__name__)

#: Metadata columns every index carries (missing ones are filled with nulls).
META_COLUMNS = ("task", "task_id", "start", "end", "text", "label", "dep")
#: Above this many spans :meth:`SpanIndex.build` uses IVF instead of an exact index.
EXACT_MAX = 50_000

_INDEX_FILE = "spans.faiss"
_META_FILE = "spans_meta.jsonl"
_CONFIG_FILE = "spans_index.json"


def _as_matrix(vectors: Any, dim: int | None, what: str = "vectors") -> np.ndarray:
    """float32, C-contiguous, 2-D, L2-normalised copy of ``vectors``."""
    x = np.asarray(vectors)
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise ValueError(f"{what} must be a 2-D array (n, dim), got shape {x.shape}")
    if not np.issubdtype(x.dtype, np.number):
        raise TypeError(f"{what} must be numeric, got dtype {x.dtype}")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{what} have dimension {x.shape[1]}, the index has dimension {dim}")
    x = np.array(x, dtype=np.float32, order="C", copy=True)
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(f"{what}: row {bad} contains NaN or infinite values")
    faiss.normalize_L2(x)
    return x


def default_nlist(n: int) -> int:
    """``≈ 4·sqrt(n)`` inverted lists (at least 1)."""
    return max(1, int(round(4 * math.sqrt(max(n, 1)))))


def default_nprobe(nlist: int) -> int:
    """Lists searched per query: ``max(16, nlist // 16)`` capped at ``nlist``."""
    return min(nlist, max(16, nlist // 16))


class SpanIndex:
    """Cosine top-k search over span embeddings with add/remove by id and metadata.

    Parameters
    ----------
    dim : embedding dimension
    nlist : IVF lists; ``None`` (default) builds an exact ``IndexFlatIP``.  Use
        :meth:`build` to choose automatically from the data size.
    nprobe : IVF lists searched per query (default :func:`default_nprobe`)
    """

    def __init__(self, dim: int, *, nlist: int | None = None, nprobe: int | None = None) -> None:
        if not isinstance(dim, (int, np.integer)) or dim <= 0:
            raise ValueError(f"dim must be a positive int, got {dim!r}")
        self.dim = int(dim)
        self.nlist = None if nlist is None else int(nlist)
        if self.nlist is None:
            base: faiss.Index = faiss.IndexFlatIP(self.dim)
            self.nprobe: int | None = None
        else:
            quantizer = faiss.IndexFlatIP(self.dim)
            base = faiss.IndexIVFFlat(quantizer, self.dim, self.nlist, faiss.METRIC_INNER_PRODUCT)
            self._quantizer = quantizer  # the python wrapper owns it; keep it alive
            self.nprobe = default_nprobe(self.nlist) if nprobe is None else int(nprobe)
            base.nprobe = self.nprobe
        self._base = base
        self._index = faiss.IndexIDMap2(base)
        self.meta = pd.DataFrame({c: pd.Series(dtype=object) for c in META_COLUMNS})
        self.meta.index.name = "id"
        self._next_id = 0

    # ------------------------------------------------------------------ construction
    @property
    def kind(self) -> str:
        """``"flat"`` (exact) or ``"ivf"``."""
        return "flat" if self.nlist is None else "ivf"

    @property
    def is_trained(self) -> bool:
        return bool(self._index.is_trained)

    @classmethod
    def build(
        cls,
        vectors: Any,
        meta: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
        *,
        ids: Any = None,
        exact_max: int = EXACT_MAX,
        nlist: int | None = None,
        nprobe: int | None = None,
        train_size: int | None = None,
        seed: int = 0,
    ) -> SpanIndex:
        """Index ``vectors`` (n, dim): exact when ``n <= exact_max``, else IVF (trained first).

        ``train_size`` caps the k-means training sample (default ``64 * nlist``); training on a
        sample is what keeps a 1 M-span build within minutes on 2 cores.
        """
        x = _as_matrix(vectors, None)
        n = x.shape[0]
        if n <= exact_max and nlist is None:
            idx = cls(x.shape[1])
        else:
            nl = default_nlist(n) if nlist is None else int(nlist)
            if n < nl:
                raise ValueError(
                    f"IVF with nlist={nl} needs at least {nl} training vectors, got {n}"
                )
            idx = cls(x.shape[1], nlist=nl, nprobe=nprobe)
            m = min(n, train_size if train_size is not None else 64 * nl)
            sample = x if m >= n else x[np.random.default_rng(seed).choice(n, m, replace=False)]
            ivf = cast(faiss.IndexIVF, idx._base)
            ivf.cp.seed = seed
            ivf.cp.niter = 10
            idx._index.train(np.ascontiguousarray(sample))
        idx._add_normalised(x, meta, ids)
        return idx

    # ------------------------------------------------------------------ mutation
    def __len__(self) -> int:
        return int(self._index.ntotal)

    def add(
        self,
        vectors: Any,
        meta: Mapping[str, Sequence[Any]] | pd.DataFrame | None = None,
        *,
        ids: Any = None,
    ) -> np.ndarray:
        """Add spans; returns their ids, (n,) int64 (fresh consecutive ids unless ``ids`` given).

        ``meta`` maps column name → one value per vector (any of :data:`META_COLUMNS`, extra
        columns are kept too).  Raises ``ValueError`` on dimension mismatch, duplicate or
        already-present ids, or a metadata column of the wrong length.
        """
        x = _as_matrix(vectors, self.dim)
        return self._add_normalised(x, meta, ids)

    def _add_normalised(
        self, x: np.ndarray, meta: Mapping[str, Sequence[Any]] | pd.DataFrame | None, ids: Any
    ) -> np.ndarray:
        n = x.shape[0]
        new_ids: np.ndarray
        if ids is None:
            new_ids = np.arange(self._next_id, self._next_id + n, dtype=np.int64)
        else:
            new_ids = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).ravel())
            if new_ids.shape[0] != n:
                raise ValueError(f"got {new_ids.shape[0]} ids for {n} vectors")
            if (new_ids < 0).any():
                raise ValueError("ids must be non-negative (-1 is faiss' 'no result' marker)")
            if np.unique(new_ids).shape[0] != n:
                raise ValueError("ids contain duplicates")
            clash = np.intersect1d(new_ids, self.meta.index.to_numpy(dtype=np.int64))
            if clash.size:
                raise ValueError(f"ids already in the index: {clash[:5].tolist()}")
        table = pd.DataFrame(meta if meta is not None else {}, copy=True)
        if len(table.columns) and len(table) != n:
            raise ValueError(f"metadata has {len(table)} rows for {n} vectors")
        table = table.reindex(range(n)) if not len(table.columns) else table.reset_index(drop=True)
        for c in META_COLUMNS:
            if c not in table.columns:
                table[c] = None
        table.index = pd.Index(new_ids, name="id")
        if n == 0:
            return new_ids
        if not self._index.is_trained:
            raise ValueError("the IVF index is not trained; build it with SpanIndex.build(...)")
        self._index.add_with_ids(x, new_ids)
        self.meta = table if self.meta.empty else pd.concat([self.meta, table])
        self._next_id = max(self._next_id, int(new_ids.max()) + 1)
        return new_ids

    def remove(self, ids: Any) -> int:
        """Remove spans by id; unknown ids are ignored.  Returns the number removed."""
        arr = np.ascontiguousarray(np.asarray(ids, dtype=np.int64).ravel())
        if arr.size == 0:
            return 0
        # faiss' python wrapper accepts an int64 array here; the stub only lists IDSelector
        removed = int(self._index.remove_ids(arr))  # type: ignore[arg-type]
        self.meta = self.meta.drop(index=arr, errors="ignore")
        return removed

    # ------------------------------------------------------------------ search
    def search(self, vectors: Any, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Raw top-k: ``(similarity (m, k) float32, ids (m, k) int64)``; ``-1`` ids pad."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        q = _as_matrix(vectors, self.dim, "query vectors")
        if len(self) == 0 or q.shape[0] == 0:
            return (
                np.zeros((q.shape[0], k), dtype=np.float32),
                np.full((q.shape[0], k), -1, dtype=np.int64),
            )
        sim, ids = self._index.search(q, int(k))
        return sim, ids

    def query(
        self,
        vectors: Any,
        k: int,
        *,
        exclude_task: Any = None,
        label_differs_from: Any = None,
    ) -> pd.DataFrame:
        """Top-k most similar spans per query vector, after filters.

        Parameters
        ----------
        vectors : (m, dim) or (dim,) query embeddings
        k : neighbours per query
        exclude_task : a task index (or (m,) one per query) whose spans are skipped
        label_differs_from : a label (or (m,) one per query); only spans with another gold
            label are returned

        Returns
        -------
        DataFrame with one row per hit: ``query`` (row of ``vectors``), ``rank`` (0-based),
        ``id``, ``similarity`` (cosine) and the metadata columns, sorted by query then rank.
        Queries with fewer than ``k`` matching spans get fewer rows.
        """
        q = np.asarray(vectors)
        m = 1 if q.ndim == 1 else q.shape[0]
        ex = self._per_query(exclude_task, m, "exclude_task")
        lab = self._per_query(label_differs_from, m, "label_differs_from")
        filtered = ex is not None or lab is not None
        fetch = k if not filtered else min(max(2 * k, k + 16), max(len(self), 1))
        while True:
            sim, ids = self.search(q, fetch)
            hits = self._hits(sim, ids)
            if filtered and len(hits):
                keep = np.ones(len(hits), dtype=bool)
                qrow = hits["query"].to_numpy()
                if ex is not None:
                    keep &= hits["task"].to_numpy(dtype=object) != ex[qrow]
                if lab is not None:
                    keep &= hits["label"].to_numpy(dtype=object) != lab[qrow]
                hits = hits[keep]
            counts = np.bincount(hits["query"].to_numpy(dtype=np.int64), minlength=m)
            if not filtered or fetch >= len(self) or (counts >= k).all():
                break
            fetch = min(fetch * 4, len(self))
        hits = hits.copy()
        hits["rank"] = hits.groupby("query").cumcount()
        hits = hits[hits["rank"] < k]
        cols = ["query", "rank", "id", "similarity"]
        rest = [c for c in hits.columns if c not in cols]
        return hits[cols + rest].reset_index(drop=True)

    def _hits(self, sim: np.ndarray, ids: np.ndarray) -> pd.DataFrame:
        m, kk = ids.shape
        qrow: np.ndarray = np.repeat(np.arange(m), kk)
        flat_ids: np.ndarray = ids.ravel()
        flat_sim: np.ndarray = sim.ravel()
        ok = flat_ids >= 0  # drop faiss padding
        qrow, flat_ids, flat_sim = qrow[ok], flat_ids[ok], flat_sim[ok]
        meta = self.meta.reindex(flat_ids)
        out = pd.DataFrame(
            {"query": qrow, "id": flat_ids, "similarity": flat_sim.astype(np.float32)}
        )
        for c in meta.columns:
            out[c] = meta[c].to_numpy()
        return out

    @staticmethod
    def _per_query(value: Any, m: int, name: str) -> np.ndarray | None:
        if value is None:
            return None
        if isinstance(value, (str, bytes, int, np.integer)):
            return np.full(m, value, dtype=object)
        arr = np.asarray(value, dtype=object).ravel()
        if arr.shape[0] != m:
            raise ValueError(f"{name} has {arr.shape[0]} values for {m} query vectors")
        return arr

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``spans.faiss``, ``spans_meta.jsonl`` and ``spans_index.json`` to ``directory``."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        faiss.write_index(self._index, str(d / _INDEX_FILE))
        meta = self.meta.reset_index()
        meta.to_json(d / _META_FILE, orient="records", lines=True, force_ascii=False)
        cfg = {
            "dim": self.dim,
            "kind": self.kind,
            "nlist": self.nlist,
            "nprobe": self.nprobe,
            "next_id": self._next_id,
            "n": len(self),
        }
        (d / _CONFIG_FILE).write_text(json.dumps(cfg, indent=1))
        return d

    @classmethod
    def load(cls, directory: str | Path) -> SpanIndex:
        """Read an index written by :meth:`save`."""
        d = Path(directory)
        for f in (_INDEX_FILE, _META_FILE, _CONFIG_FILE):
            if not (d / f).is_file():
                raise FileNotFoundError(str(d / f))
        cfg = json.loads((d / _CONFIG_FILE).read_text())
        idx = cls.__new__(cls)
        idx.dim = int(cfg["dim"])
        idx.nlist = cfg["nlist"]
        idx.nprobe = cfg["nprobe"]
        idx._next_id = int(cfg["next_id"])
        idx._index = cast(faiss.IndexIDMap2, faiss.read_index(str(d / _INDEX_FILE)))
        idx._base = faiss.downcast_index(idx._index.index)
        if idx.nprobe is not None:
            faiss.extract_index_ivf(idx._index).nprobe = int(idx.nprobe)
        if idx._index.d != idx.dim:
            raise ValueError(f"{d}: index dimension {idx._index.d} != configured {idx.dim}")
        text = (d / _META_FILE).read_text()
        if text.strip():
            meta = pd.read_json(d / _META_FILE, orient="records", lines=True, dtype=False)
            meta = meta.set_index("id")
        else:
            meta = pd.DataFrame({c: pd.Series(dtype=object) for c in META_COLUMNS})
        meta.index = meta.index.astype(np.int64)
        meta.index.name = "id"
        if len(meta) != idx._index.ntotal:
            raise ValueError(
                f"{d}: metadata has {len(meta)} rows but the index holds {idx._index.ntotal}"
            )
        idx.meta = meta
        return idx

    def __repr__(self) -> str:
        extra = f", nlist={self.nlist}, nprobe={self.nprobe}" if self.nlist else ""
        return f"SpanIndex(dim={self.dim}, kind={self.kind!r}, n={len(self)}{extra})"
