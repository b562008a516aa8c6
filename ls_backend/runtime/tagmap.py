"""Tag mapping: a model's entity types and tag columns onto the caller's labels.

Used by :class:`ls_backend.runtime.loading.NerModel` (see the module docstring there for the
rules).  Pure Python/numpy: importing this module imports neither torch nor transformers.

* :func:`map_types` — model entity types → labels (``label_map``, exact, then case-insensitive);
* :func:`detect_tagset_scheme` — the scheme of a tag *set* (``config.id2label``);
* :func:`build_columns` — the output tags and the matrix folding native columns onto them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np

from analysis.schemes import detect_scheme, get_scheme, split_tag
from analysis.tags import tag_names

# the loading module's logger, as before these helpers moved here
log = logging.getLogger("ls_backend.runtime.loading")

__all__ = ["build_columns", "detect_tagset_scheme", "map_types"]


def map_types(
    model_types: Sequence[str],
    labels: Sequence[str] | None,
    label_map: Mapping[str, str | None] | None,
    *,
    source: str,
) -> tuple[tuple[str, ...], dict[str, str | None]]:
    """Map model entity types onto ``labels``.

    Returns the label tuple (``labels`` or, when ``None``, the mapped model types in order) and
    ``{model_type: label or None (dropped)}``.  Raises ``ValueError`` listing both sides when a
    model type maps to nothing.
    """
    mapping: dict[str, str | None] = {}
    explicit = dict(label_map or {})
    for t in model_types:
        if t in explicit:
            target = explicit[t]
            mapping[t] = None if target in (None, "O", "") else target
        else:
            mapping[t] = t
    if labels is None:
        out_labels = tuple(dict.fromkeys(v for v in mapping.values() if v is not None))
    else:
        out_labels = tuple(labels)
        by_lower: dict[str, str] = {}
        for lab in out_labels:
            by_lower.setdefault(lab.lower(), lab)
        bad = []
        for t, v in mapping.items():
            if v is None or v in out_labels:
                continue
            if v.lower() in by_lower:
                mapping[t] = by_lower[v.lower()]
            else:
                bad.append(t if v == t else f"{t}->{v}")
        if bad:
            raise ValueError(
                f"{source}: model entity types {list(model_types)} do not match the labels "
                f"{list(out_labels)}: {bad} map to no label; pass label_map (e.g. "
                f"{{{bad[0].split('->')[0]!r}: {out_labels[0] if out_labels else 'LABEL'!r}}}, "
                "or 'O' to drop a type)"
            )
        unused = [lab for lab in out_labels if lab not in set(mapping.values())]
        if unused:
            log.warning(
                "%s: labels %s are not predicted by the model (types %s); their probability is 0",
                source, unused, list(model_types),
            )
    return out_labels, mapping


def detect_tagset_scheme(tags: Sequence[str]) -> str:
    """Scheme of a model's tag *set* (no sequences to look at).

    ``E-``/``S-`` → BIOES, ``L-``/``U-`` → BILOU; a type with ``I-`` but no ``B-`` tag → IOB1
    (IOB2 needs ``B-`` for every type); otherwise IOB2 (IOB1 models that have ``B-`` for every
    type cannot be told apart: pass ``scheme="iob1"``).
    """
    prefixes: dict[str, set[str]] = {}
    for t in tags:
        p, typ = split_tag(t)
        if p != "O":
            prefixes.setdefault(typ, set()).add(p)
    seen = set().union(*prefixes.values()) if prefixes else set()
    if seen & {"E", "S", "L", "U"}:
        return detect_scheme([[t] for t in tags])
    if any("I" in ps and "B" not in ps for ps in prefixes.values()):
        return "iob1"
    return "iob2"


def _iob1_tags(
    native_tags: Sequence[str], type_map: Mapping[str, str | None]
) -> tuple[str, ...]:
    """Renamed IOB1 tags, ``"O"`` first; duplicates (two types mapped to one label) merged."""
    tags = []
    for t in native_tags:
        p, typ = split_tag(t)
        lab = type_map.get(typ) if p != "O" else None
        tags.append("O" if lab is None else f"{p}-{lab}")
    # duplicate names (two types mapped to one label) are summed
    return tuple(dict.fromkeys(("O",) + tuple(tags)))


def build_columns(
    native_tags: Sequence[str],
    native_scheme: str,
    type_map: Mapping[str, str | None],
    labels: Sequence[str],
) -> tuple[tuple[str, ...], str, np.ndarray | None]:
    """Output tags, their scheme and the native → output column matrix.

    Parameters
    ----------
    native_tags : the model's own tags (``config.id2label`` order)
    native_scheme : scheme of ``native_tags`` (canonical name)
    type_map : model entity type → label, ``None`` for a dropped type
    labels : the labels predictions use

    Returns
    -------
    tags : ``tag_names(labels)`` (IOB2), or the renamed native tags for an IOB1 model
    scheme : ``"iob2"`` or ``"iob1"``
    colmap : ``(len(native_tags), len(tags))`` float64 0/1 matrix (native probabilities
        ``@ colmap`` sum onto ``tags``), or ``None`` when it is the identity
    """
    if native_scheme == "iob1":
        tags, scheme = _iob1_tags(native_tags, type_map), "iob1"
    else:
        tags, scheme = tag_names(labels), "iob2"
    sc = get_scheme(native_scheme)
    col = {t: j for j, t in enumerate(tags)}
    mat = np.zeros((len(native_tags), len(tags)), dtype=np.float64)
    for i, t in enumerate(native_tags):
        p, typ = split_tag(t)
        lab = type_map.get(typ) if p != "O" else None
        if lab is None:
            mat[i, col["O"]] = 1.0
        elif scheme == "iob1":
            mat[i, col[f"{p}-{lab}"]] = 1.0
        elif p in ("B", sc.single):
            mat[i, col[f"B-{lab}"]] = 1.0
        else:
            mat[i, col[f"I-{lab}"]] = 1.0
    ident = mat.shape[0] == mat.shape[1] and np.array_equal(mat, np.eye(mat.shape[0]))
    return tags, scheme, None if ident else mat
