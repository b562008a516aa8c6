"""Load, map and save token-classification models: :class:`NerModel`.

Three kinds of model directory (or cached Hugging Face name) load the same way:

* **ours** — a directory written by :meth:`NerModel.save` or :func:`ls_backend.runtime.train`
  (it holds ``nerq.json``: labels, tags, scheme, version, training config);
* **any Hugging Face token-classification model** — its ``config.id2label`` tags may use any
  scheme (IOB1, IOB2, BIOES, BILOU; detected from the tag set, override with ``scheme=``);
* **a plain backbone** (e.g. the packaged MiniLM) — a fresh, randomly initialised head for the
  IOB2 tags of ``labels`` is added (seeded); ``trained`` is then ``False``.

Everything is loaded with ``local_files_only=True`` (and ``HF_HUB_OFFLINE=1``): a name that is
not in the local cache fails, it is never downloaded.

Tag mapping.  The model's entity types are mapped onto ``labels`` with ``label_map`` (model type →
label, or ``"O"``/``None`` to drop a type); without a map, an exact then a case-insensitive match is
used.  A model type that maps to no label raises ``ValueError`` listing both sides.  Unless the
model's scheme is IOB1, its output columns are then *folded* onto the canonical IOB2 tag set
``analysis.tags.tag_names(labels)`` (``B``/``S``/``U`` → ``B``, ``I``/``E``/``L`` → ``I``,
dropped types → ``O``; probabilities are summed), so ``probs`` columns follow the project
convention for every model.  IOB1 cannot be folded token by token; its (renamed) tags are kept and
``scheme`` is ``"iob1"``.

The helpers live in :mod:`ls_backend.runtime.tagmap` (:func:`detect_tagset_scheme` is
re-exported here).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from analysis.schemes import get_scheme, split_tag
from analysis.spans import TokenizedText, TokenSpan
from analysis.tags import tag_names, types_of_tags

from .env import default_model_path, offline, quiet_transformers, resolve_device
from .infer import TaskPrediction
from .infer import predict as _predict
from .tagmap import build_columns, detect_tagset_scheme, map_types
from .windows import special_affixes

log = logging.getLogger(__name__)

__all__ = ["NerModel", "default_model_path", "resolve_device", "detect_tagset_scheme", "NERQ_FILE"]

NERQ_FILE = "nerq.json"
FORMAT_VERSION = 1
# tokenizers that need add_prefix_space=True for is_split_into_words=True
_PREFIX_SPACE_TYPES = {"roberta", "longformer", "bart", "gpt2", "deberta", "mvp", "led", "bloom"}
_DEFAULT_LABEL_RE = re.compile(r"^LABEL_\d+$")


class NerModel:
    """A token-classification model with word-aligned batched inference.

    Build with :meth:`load`.  Attributes: ``labels`` (entity types), ``tags`` (column names of
    ``TaskPrediction.probs``), ``scheme`` (scheme of ``tags``), ``version``, ``trained``,
    ``device``, ``max_length`` (subtokens per window including special tokens) and ``stride``
    (overlap of consecutive windows, subtokens).
    """

    def __init__(
        self,
        hf_model: Any,
        tokenizer: Any,
        *,
        labels: Sequence[str],
        native_tags: Sequence[str],
        native_scheme: str,
        type_map: Mapping[str, str | None],
        version: str,
        trained: bool,
        device: str,
        source: str,
        max_length: int | None = None,
        stride: int | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> None:
        self.hf_model = hf_model
        self.tokenizer = tokenizer
        self.labels: tuple[str, ...] = tuple(labels)
        self.native_tags: tuple[str, ...] = tuple(native_tags)
        self.native_scheme = native_scheme
        self.type_map = dict(type_map)
        self.version = version
        self.trained = trained
        self.device = device
        self.source = source
        self.meta: dict[str, Any] = dict(meta or {})
        self.compiled = False  # set by load(compile=True)
        self.prefix_ids, self.suffix_ids = special_affixes(tokenizer)
        self.pad_id = int(tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0)
        limit = _model_limit(hf_model, tokenizer)
        self.max_length = int(min(max_length or limit, limit))
        self.stride = int(stride if stride is not None else max(self.max_length // 4, 1))
        self._build_columns()

    # ----------------------------------------------------------------- columns
    def _build_columns(self) -> None:
        """Column mapping native tags -> ``tags`` (matrix, or None when identical)."""
        self.tags: tuple[str, ...]
        self.tags, self.scheme, self._colmap = build_columns(
            self.native_tags, self.native_scheme, self.type_map, self.labels
        )

    def map_probs(self, native: np.ndarray) -> np.ndarray:
        """Native-tag probabilities ``(n, n_native)`` → ``(n, len(tags))`` float32."""
        out = native if self._colmap is None else native @ self._colmap
        return np.ascontiguousarray(out, dtype=np.float32)

    # ----------------------------------------------------------------- props
    @property
    def embedding_dim(self) -> int:
        return int(self.hf_model.config.hidden_size)

    @property
    def window(self) -> int:
        """Content subtokens per window (``max_length`` minus special tokens)."""
        return max(self.max_length - len(self.prefix_ids) - len(self.suffix_ids), 1)

    def __repr__(self) -> str:
        return (
            f"NerModel(source={self.source!r}, labels={self.labels}, scheme={self.scheme!r}, "
            f"version={self.version!r}, trained={self.trained}, device={self.device!r})"
        )

    # ----------------------------------------------------------------- load
    @classmethod
    def load(
        cls,
        name_or_path: str | os.PathLike[str] | None = None,
        *,
        labels: Sequence[str] | None = None,
        label_map: Mapping[str, str | None] | None = None,
        device: str = "auto",
        scheme: str | None = None,
        max_length: int | None = None,
        stride: int | None = None,
        seed: int = 0,
        fresh_head: bool = False,
        attention: str = "auto",
        compile: bool = False,
    ) -> NerModel:
        """Load a model directory or locally cached Hugging Face name (never downloads).

        Parameters
        ----------
        name_or_path : our model dir, a Hugging Face token-classification model, or a plain
            backbone; ``None`` = the packaged MiniLM backbone (:func:`default_model_path`).
        labels : entity types the predictions should use (required for a plain backbone).
        label_map : model type → label (``"O"`` drops a type); default identity, then
            case-insensitive match.
        device : ``auto``, ``cpu``, ``cuda`` or ``cuda:N``.
        scheme : override the detected scheme of the model's tags.
        max_length, stride : window length (subtokens incl. special tokens, capped at the
            model's limit) and overlap of windows for long texts.
        seed : seeds the fresh head of a plain backbone.
        fresh_head : ignore an existing classification head and add a fresh IOB2 head for
            ``labels`` (used by training when the head does not fit).
        attention : ``auto`` (transformers' choice: SDPA where the model supports it, else
            eager), ``sdpa`` or ``eager`` (``ATTENTION``).
        compile : wrap the model in ``torch.compile(dynamic=True)`` (``TORCH_COMPILE``); the
            first batches then compile (tens of seconds), so it pays only for long-running
            servers on a GPU — see bench/README.md.
        """
        offline()
        attn_kw = _attention_kwargs(attention)
        path = str(name_or_path) if name_or_path is not None else default_model_path()
        dev = resolve_device(device)
        ours = _read_nerq(path)
        config = _load_config(path)
        tokenizer = _load_tokenizer(path, config)
        native, has_tags = _native_tags(config, path)
        archs = getattr(config, "architectures", None) or []
        is_tc = any(a.endswith("ForTokenClassification") for a in archs) or bool(ours)
        if labels is None and ours.get("labels") is not None and label_map is None:
            labels = list(ours["labels"])
        if label_map is None and ours.get("label_map"):
            label_map = ours["label_map"]

        if fresh_head or not (is_tc and has_tags):
            model = cls._with_fresh_head(
                path, tokenizer, labels, seed=seed, device=dev, max_length=max_length,
                stride=stride, attn_kw=attn_kw,
            )
        else:
            model = cls._with_own_head(
                path, tokenizer, native, ours, labels, label_map, scheme=scheme, device=dev,
                max_length=max_length, stride=stride, attn_kw=attn_kw,
            )
        model.hf_model.to(dev)
        model.hf_model.eval()
        if compile:
            model.hf_model.compile(dynamic=True)
            model.compiled = True
        log.info("loaded %r", model)
        return model

    @classmethod
    def _with_fresh_head(
        cls,
        path: str,
        tokenizer: Any,
        labels: Sequence[str] | None,
        *,
        seed: int,
        device: str,
        max_length: int | None,
        stride: int | None,
        attn_kw: Mapping[str, Any],
    ) -> NerModel:
        """The backbone at ``path`` with a fresh, seeded IOB2 head for ``labels``."""
        from transformers import AutoModelForTokenClassification

        if labels is None:
            raise ValueError(
                f"model {path!r} has no token-classification head with named tags; "
                "pass labels=[...] to add a fresh head"
            )
        labels_t = tuple(labels)
        if not labels_t:
            raise ValueError(f"model {path!r}: labels is empty; give at least one entity type")
        tags = tag_names(labels_t)
        import torch

        with torch.random.fork_rng(devices=[]), quiet_transformers():
            torch.manual_seed(seed)
            hf = AutoModelForTokenClassification.from_pretrained(
                path,
                num_labels=len(tags),
                id2label=dict(enumerate(tags)),
                label2id={t: i for i, t in enumerate(tags)},
                ignore_mismatched_sizes=True,
                local_files_only=True,
                **attn_kw,
            )
        return cls(
            hf, tokenizer, labels=labels_t, native_tags=tags, native_scheme="iob2",
            type_map={lab: lab for lab in labels_t},
            version=f"untrained-{_short_hash(path, labels_t, seed)}", trained=False,
            device=device, source=path, max_length=max_length, stride=stride,
        )

    @classmethod
    def _with_own_head(
        cls,
        path: str,
        tokenizer: Any,
        native: list[str],
        ours: Mapping[str, Any],
        labels: Sequence[str] | None,
        label_map: Mapping[str, str | None] | None,
        *,
        scheme: str | None,
        device: str,
        max_length: int | None,
        stride: int | None,
        attn_kw: Mapping[str, Any],
    ) -> NerModel:
        """The token-classification model at ``path`` with its own head, tags mapped."""
        from transformers import AutoModelForTokenClassification

        with quiet_transformers():
            hf = AutoModelForTokenClassification.from_pretrained(path, local_files_only=True,
                                                                 **attn_kw)
        native_scheme = scheme or ours.get("scheme") or detect_tagset_scheme(native)
        native_scheme = get_scheme(native_scheme).name
        model_types = types_of_tags(native)
        out_labels, type_map = map_types(model_types, labels, label_map, source=f"model {path!r}")
        version = ours.get("version") or f"hf-{Path(path).name}-{_short_hash(path, native)}"
        trained = bool(ours.get("trained", True))
        return cls(
            hf, tokenizer, labels=out_labels, native_tags=native, native_scheme=native_scheme,
            type_map=type_map, version=version, trained=trained, device=device, source=path,
            max_length=max_length or ours.get("max_length"), stride=stride,
            meta=ours,
        )

    # ----------------------------------------------------------------- save
    def save(self, out_dir: str | os.PathLike[str], *, extra: Mapping[str, Any] | None = None) -> str:
        """Write weights, tokenizer and ``nerq.json`` to ``out_dir`` (created); returns the path."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        with quiet_transformers():
            self.hf_model.save_pretrained(out)
            self.tokenizer.save_pretrained(out)
        meta = {k: v for k, v in self.meta.items() if k not in {"labels", "tags"}}
        meta.update(
            {
                "format": FORMAT_VERSION,
                "labels": list(self.labels),
                "tags": list(self.native_tags),
                "scheme": self.native_scheme,
                "label_map": {k: (v if v is not None else "O") for k, v in self.type_map.items()},
                "version": self.version,
                "trained": self.trained,
                "max_length": self.max_length,
            }
        )
        if extra:
            meta.update(extra)
        self.meta = meta
        (out / NERQ_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True), encoding="utf-8")
        return str(out)

    # ----------------------------------------------------------------- predict
    def predict(
        self,
        items: Sequence[TokenizedText | str],
        *,
        spans: Sequence[Sequence[TokenSpan]] | None = None,
        return_embeddings: bool = False,
        batch_tokens: int = 4096,
        progress: bool = False,
        timings: dict[str, float] | None = None,
    ) -> list[TaskPrediction]:
        """Predict every item (batched, sorted by length, long texts windowed; see
        :mod:`ls_backend.runtime.infer`).

        Parameters
        ----------
        items : ``TokenizedText`` (its tokens are the words) or ``str`` (split with
            :func:`analysis.spans.tokenize`)
        spans : optional, per item, token spans (half-open word indices) whose embeddings are
            returned in ``extra_embeddings`` (e.g. the gold spans)
        return_embeddings : also return ``span_embeddings`` for the predicted spans
        batch_tokens : padded subtokens per forward pass (rows × longest row)
        progress : tqdm bar on stderr
        timings : when given, seconds per stage (:data:`ls_backend.runtime.infer.STAGES`) are
            added into it

        Returns
        -------
        list[TaskPrediction], one per item in input order; an empty text gives ``probs`` of
        shape ``(0, n_tags)`` and no spans.
        """
        return _predict(
            self, items, spans=spans, return_embeddings=return_embeddings,
            batch_tokens=batch_tokens, progress=progress, timings=timings,
        )


def _read_nerq(path: str) -> dict[str, Any]:
    """Our ``nerq.json`` metadata in ``path``; ``{}`` when there is none."""
    nerq = Path(path) / NERQ_FILE
    if not nerq.is_file():
        return {}
    try:
        ours: dict[str, Any] = json.loads(nerq.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{nerq}: unreadable model metadata: {exc}") from None
    return ours


ATTENTION_CHOICES = ("auto", "sdpa", "eager")


def _attention_kwargs(attention: str) -> dict[str, Any]:
    """``from_pretrained`` keywords for an ``attention`` choice (``auto``: none).

    >>> _attention_kwargs("auto"), _attention_kwargs("eager")
    ({}, {'attn_implementation': 'eager'})
    """
    if attention not in ATTENTION_CHOICES:
        raise ValueError(f"attention must be one of {', '.join(ATTENTION_CHOICES)}, "
                         f"got {attention!r}")
    return {} if attention == "auto" else {"attn_implementation": attention}


def _load_config(path: str) -> Any:
    """The model's ``AutoConfig`` (local files only)."""
    from transformers import AutoConfig

    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(path, local_files_only=True)
    except OSError as exc:
        raise FileNotFoundError(
            f"model {path!r}: not a local model directory or cached Hugging Face model "
            f"(downloads are disabled): {str(exc).splitlines()[0]}"
        ) from None


def _load_tokenizer(path: str, config: Any) -> Any:
    """The model's fast tokenizer (``add_prefix_space`` where word input needs it)."""
    from transformers import AutoTokenizer

    model_type = getattr(config, "model_type", "")
    tok_kwargs: dict[str, Any] = {"local_files_only": True}
    if model_type in _PREFIX_SPACE_TYPES:
        tok_kwargs["add_prefix_space"] = True
    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(path, **tok_kwargs)
    if not getattr(tokenizer, "is_fast", False):
        raise TypeError(
            f"model {path!r}: the tokenizer {type(tokenizer).__name__} is not a fast "
            "tokenizer; word alignment needs word_ids() (a tokenizer.json)"
        )
    return tokenizer


def _native_tags(config: Any, path: str) -> tuple[list[str], bool]:
    """``config.id2label`` in id order, and whether those are named tags (validated)."""
    id2label = {int(k): str(v) for k, v in (getattr(config, "id2label", None) or {}).items()}
    native = [id2label[i] for i in sorted(id2label)]
    has_tags = bool(native) and not all(_DEFAULT_LABEL_RE.match(t) for t in native)
    if has_tags:
        try:
            for t in native:
                split_tag(t)
        except ValueError as exc:
            raise ValueError(f"model {path!r}: config.id2label is not a tag set: {exc}") from None
    return native, has_tags


def _model_limit(hf_model: Any, tokenizer: Any) -> int:
    cfg = hf_model.config
    lim = int(getattr(cfg, "max_position_embeddings", 512) or 512)
    if getattr(cfg, "model_type", "") in {"roberta", "xlm-roberta", "camembert", "longformer"}:
        lim -= 2  # position ids start after the padding index
    tml = getattr(tokenizer, "model_max_length", None)
    if isinstance(tml, int) and 0 < tml < 1_000_000:
        lim = min(lim, tml)
    return max(lim, 4)


def _short_hash(*parts: Any) -> str:
    h = hashlib.sha256(json.dumps([str(p) for p in parts]).encode("utf-8"))
    return h.hexdigest()[:8]
