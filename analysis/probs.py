"""Model output as columns: per-token tag probabilities with their tag set, and its file format.

:class:`ModelOutput` holds one ``(n_rows, n_tags)`` float32 matrix for a whole dataset, the
task offsets into it, which tasks have probabilities, and the :class:`analysis.tags.TagSet`
(tag order *and* scheme).  Training, cross-fitting and prediction write it; DEP, ``analyze``,
``report`` and ``push`` read it.

File format (``.npz``, format ``ner-quality-probs/1``, written uncompressed so that ``probs``
can be memory-mapped):

``probs``    (n_rows, n_tags) float32 — the rows of the tasks that have probabilities, in task
             order (task ``i``'s rows are ``probs[offsets[i]:offsets[i + 1]]``)
``offsets``  (n_tasks + 1,) int64
``has``      (n_tasks,) bool — task ``i`` has probabilities (an empty range otherwise)
``tags``     (n_tags,) str — the tag order; ``scheme`` () str — ``iob2`` or ``iob1``
``format``   () str — ``ner-quality-probs/1``

The older per-task format (``numpy.savez(path, *arrays)``: ``arr_0, arr_1, ...``, optional
``annotated`` mask) is still read, in one pass over the archive (``ModelOutput.legacy`` is set,
and the CLI says how to convert it: ``ner-quality convert-probs OLD.npz NEW.npz --labels ...``);
it carries no tag order.
"""

from __future__ import annotations

import logging
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analysis.exceptions import DataError
from analysis.tags import TagSet

__all__ = ["ModelOutput", "FORMAT", "save_output", "load_output", "load_probs"]

log = logging.getLogger(__name__)

FORMAT = "ner-quality-probs/1"


@dataclass(frozen=True, eq=False)
class ModelOutput:
    """Per-token probabilities of a dataset (see the module docstring).

    Attributes
    ----------
    probs : (n_rows, n_tags) float32, C-contiguous (may be a read-only memory map)
    offsets : (n_tasks + 1,) int64
    has : (n_tasks,) bool
    tagset : TagSet, or None when a file did not say (then the caller must supply one)
    legacy : read from the older per-task file format (callers tell the user to convert it)
    """

    probs: np.ndarray
    offsets: np.ndarray
    has: np.ndarray
    tagset: TagSet | None
    legacy: bool = False

    def __post_init__(self) -> None:
        p, off, has = self.probs, self.offsets, self.has
        if p.ndim != 2:
            raise DataError(f"probabilities must be 2-D (n_tokens, n_tags), got shape {p.shape}")
        if off.ndim != 1 or off.shape[0] != has.shape[0] + 1 or off[0] != 0 or \
                off[-1] != p.shape[0] or np.any(np.diff(off) < 0):
            raise DataError(f"probability offsets do not index the {p.shape[0]} rows "
                            f"({has.shape[0]} tasks)")
        if np.any(~has & (np.diff(off) > 0)):
            raise DataError("a task marked as having no probabilities owns rows")
        if self.tagset is not None and p.shape[1] != len(self.tagset):
            raise DataError(f"{p.shape[1]} probability columns but {len(self.tagset)} tags "
                            f"({', '.join(self.tagset.tags[:6])}"
                            f"{', ...' if len(self.tagset) > 6 else ''})")

    @property
    def n_tasks(self) -> int:
        return int(self.has.shape[0])

    def task(self, i: int) -> np.ndarray | None:
        """Task ``i``'s ``(n_tokens, n_tags)`` rows, or None without probabilities."""
        if not self.has[i]:
            return None
        return self.probs[self.offsets[i]: self.offsets[i + 1]]

    def with_tagset(self, tagset: TagSet) -> ModelOutput:
        return ModelOutput(self.probs, self.offsets, self.has, tagset, self.legacy)

    def per_task(self) -> list[np.ndarray | None]:
        """One array (a view) per task, None without probabilities."""
        return [self.task(i) for i in range(self.n_tasks)]

    @classmethod
    def from_arrays(cls, arrays: Sequence[np.ndarray | None], tagset: TagSet | None, *,
                    n_cols: int | None = None) -> ModelOutput:
        """Stack one ``(n_tokens, n_tags)`` array (or None) per task."""
        if isinstance(arrays, np.ndarray) and arrays.dtype != object:
            raise TypeError("probs must be a list of per-task arrays, not one array")
        arrays = list(arrays)
        has = np.array([a is not None for a in arrays], dtype=bool)
        lens = np.array([0 if a is None else np.shape(a)[0] for a in arrays], dtype=np.int64)
        offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
        np.cumsum(lens, out=offsets[1:])
        width = n_cols if n_cols is not None else (len(tagset) if tagset is not None else None)
        present = [np.asarray(a) for a in arrays if a is not None]
        for a in present:
            if a.ndim != 2:
                raise DataError(f"probabilities must be 2-D (n_tokens, n_tags), got shape "
                                f"{a.shape}")
        if width is None:
            width = present[0].shape[1] if present else 0
        for k, arr in enumerate(arrays):
            if arr is not None and np.shape(arr)[1] != width:
                raise DataError(f"array {k}: {np.shape(arr)[1]} probability columns, expected "
                                f"{width}")
        if present:
            probs = np.ascontiguousarray(np.concatenate(
                [a.astype(np.float32, copy=False) for a in present if a.shape[0]]
                or [np.zeros((0, width), np.float32)], axis=0), dtype=np.float32)
        else:
            probs = np.zeros((0, width), dtype=np.float32)
        return cls(probs, offsets, has, tagset)


# ---------------------------------------------------------------------------------- files


def save_output(path: str | Path, out: ModelOutput) -> Path:
    """Write ``out`` in the columnar format (uncompressed ``.npz``)."""
    if out.tagset is None:
        raise DataError("cannot save probabilities without their tag set")
    p = Path(path)
    np.savez(p, probs=np.ascontiguousarray(out.probs, dtype=np.float32),
             offsets=out.offsets.astype(np.int64), has=out.has.astype(bool),
             tags=np.asarray(out.tagset.tags, dtype=str), scheme=np.asarray(out.tagset.scheme),
             format=np.asarray(FORMAT))
    return p if p.suffix == ".npz" else p.with_name(p.name + ".npz")


def _open_npz(p: Path) -> zipfile.ZipFile:
    if not p.exists():
        raise FileNotFoundError(2, "no such file", str(p))
    if p.is_dir():
        raise DataError(f"{p}: is a directory, not an .npz file")
    try:
        return zipfile.ZipFile(p)
    except (OSError, zipfile.BadZipFile) as exc:
        raise DataError(f"{p}: not a readable .npz file ({str(exc).splitlines()[0]})") from None


def _member_array(zf: zipfile.ZipFile, name: str, path: Path, *, mmap: bool) -> np.ndarray:
    """One ``.npy`` member; memory-mapped when it is stored uncompressed and ``mmap``."""
    info = zf.getinfo(name)
    if mmap and info.compress_type == zipfile.ZIP_STORED:
        with zf.open(info) as fh:
            version = np.lib.format.read_magic(fh)
            shape, fortran, dtype = np.lib.format._read_array_header(fh, version)  # type: ignore[attr-defined]
            header = fh.tell()
        # the member's data starts after its local file header
        with open(path, "rb") as raw:
            raw.seek(info.header_offset)
            local = raw.read(30)
            skip = 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30],
                                                                                "little")
        if not fortran and not dtype.hasobject and int(np.prod(shape)) > 0:
            return np.memmap(path, dtype=dtype, mode="r", offset=info.header_offset + skip + header,
                             shape=shape)
    with zf.open(info) as fh:
        return np.lib.format.read_array(fh, allow_pickle=False)


def load_output(path: str | Path, *, tagset: TagSet | None = None, mmap: bool = True) -> ModelOutput:
    """Read probabilities written by :func:`save_output` (or the older per-task format).

    ``tagset`` overrides (and is checked against) the file's tag order; the old format has none,
    so its ``tagset`` is what the caller gives (None otherwise).
    """
    p = Path(path)
    with _open_npz(p) as zf:
        names = {n[:-4] if n.endswith(".npy") else n: n for n in zf.namelist()}
        if "probs" in names and "offsets" in names:
            return _load_columnar(zf, names, p, tagset, mmap=mmap)
        return _load_per_task(zf, names, p, tagset)


def _load_columnar(zf: zipfile.ZipFile, names: dict[str, str], p: Path, tagset: TagSet | None,
                   *, mmap: bool) -> ModelOutput:
    def arr(key: str) -> np.ndarray:
        if key not in names:
            raise DataError(f"{p}: columnar probability file lacks {key!r}")
        return _member_array(zf, names[key], p, mmap=mmap and key == "probs")

    fmt = str(arr("format")) if "format" in names else FORMAT
    if fmt != FORMAT:
        raise DataError(f"{p}: unknown probability format {fmt!r} (this version reads {FORMAT!r})")
    probs = arr("probs")
    if probs.dtype != np.float32:
        probs = probs.astype(np.float32)
    offsets, has = arr("offsets").astype(np.int64), arr("has").astype(bool)
    stored = None
    if "tags" in names:
        scheme = str(arr("scheme")) if "scheme" in names else "iob2"
        stored = TagSet(tuple(str(t) for t in arr("tags").tolist()), scheme)
    if tagset is not None and stored is not None and stored != tagset:
        raise DataError(f"{p}: the file's tags {list(stored.tags)} ({stored.scheme}) differ from "
                        f"the given {list(tagset.tags)} ({tagset.scheme})")
    try:
        return ModelOutput(probs, offsets, has, tagset or stored)
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None


def _load_per_task(zf: zipfile.ZipFile, names: dict[str, str], p: Path,
                   tagset: TagSet | None) -> ModelOutput:
    idx: list[int] = []
    for k in names:
        if k == "annotated":
            continue
        if not (k.startswith("arr_") and k[4:].isdigit()):
            raise DataError(f"{p}: unexpected array {k!r}; expected the columnar format "
                            "(probs, offsets, has, tags) or arr_0, arr_1, ...")
        idx.append(int(k[4:]))
    order = sorted(idx)
    if order != list(range(len(order))):
        missing = sorted(set(range(max(order) + 1)) - set(order))
        raise DataError(f"{p}: arrays are not numbered 0..n-1 (missing arr_{missing[0]})")
    # one pass over the archive: each member is opened once (numpy's NpzFile looks every key
    # up in a list, which makes reading n arrays O(n^2))
    arrays: list[np.ndarray | None] = [
        np.asarray(_member_array(zf, names[f"arr_{i}"], p, mmap=False), dtype=np.float32)
        for i in order]
    if "annotated" in names:
        mask = np.asarray(_member_array(zf, names["annotated"], p, mmap=False)).astype(bool).ravel()
        if mask.shape[0] != len(arrays):
            raise DataError(f"{p}: 'annotated' mask has {mask.shape[0]} entries for "
                            f"{len(arrays)} arrays")
        arrays = [a if m else None for a, m in zip(arrays, mask.tolist())]
    widths = {a.shape[1] for a in arrays if a is not None and a.ndim == 2}
    try:
        out = ModelOutput.from_arrays(arrays, tagset, n_cols=widths.pop() if len(widths) == 1
                                      else None)
        return ModelOutput(out.probs, out.offsets, out.has, out.tagset, legacy=True)
    except DataError as exc:
        raise DataError(f"{p}: {exc}") from None


def load_probs(path: str | Path) -> list[np.ndarray | None]:
    """Per-task arrays of a probability file of either format (None: no probabilities)."""
    return load_output(path, mmap=False).per_task()
