"""The raw model view and the FFN-activation components of tasks, as ExplaiNER's views.

:func:`model_view` shows a task as the model sees it: its subword tokens (special tokens
included), the word every subword belongs to and the windows inference cuts — computed with the
runtime's own :func:`ls_backend.runtime.windows.prepare`, so the view is what ``/predict`` feeds
the model.

:func:`activation_components` factorises the feed-forward (FFN intermediate, post-activation)
neuron activations of one transformer layer with non-negative matrix factorisation: one
activation vector per word (its first subtoken, the subtoken whose logits give the word's
prediction), taken from the window that owns that subtoken, exactly as inference takes logits.
The components are groups of neurons that fire together; the words that load most on a
component show what it responds to, and each task's per-word loadings colour its words.

Both return plain JSON-able Python types (typed as :class:`typing.TypedDict`).  Importing this
module imports neither torch, transformers nor scikit-learn.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypedDict

import numpy as np

from analysis.spans import TokenizedText, from_tokens

if TYPE_CHECKING:
    from .loading import NerModel
    from .windows import Columns

log = logging.getLogger(__name__)

__all__ = ["ActivationComponents", "Component", "ModelView", "activation_components",
           "model_view"]

SHOWN_TASKS = 20
"""Tasks (the first of ``rows``) whose per-word component weights are returned."""

_BATCH_TOKENS = 2048
"""Padded subtokens per forward pass (rows × longest row): small batches, bounded memory."""

# BERT, RoBERTa, XLM-R, ELECTRA, DeBERTa, ...: encoder.layer.N.intermediate (dense + activation);
# DistilBERT: transformer.layer.N.ffn.activation (the activation module of its FFN).
_FFN_RE = re.compile(r"(?:^|\.)layers?\.(\d+)\.(?:intermediate|ffn\.activation)$")


class ModelView(TypedDict):
    """One task as the model sees it.

    ``subwords`` : (n_sub_total,) the subword tokens, special tokens included
    ``word_ids`` : (n_sub_total,) the word of each subword, ``None`` for a special token
    ``windows`` : (n_windows, 2) half-open ranges ``[a, b)`` into ``subwords``; each window is fed
    to the model as the special prefix + ``subwords[a:b]`` + the special suffix
    """

    subwords: list[str]
    word_ids: list[int | None]
    windows: list[list[int]]


class Component(TypedDict):
    """One NMF component: ``top_words`` ``[[word, weight], ...]``, best first."""

    top_words: list[list[Any]]


class ActivationComponents(TypedDict):
    """Result of :func:`activation_components` (see there)."""

    layer: int
    n_layers: int
    n_words: int
    components: list[Component]
    tasks: dict[int, list[list[float]]]


class _Stop(Exception):
    """Raised by the activation hook: the layers after the hooked one are not needed."""


# ------------------------------------------------------------------ inputs


def _tokenized(words: Sequence[Sequence[str]], rows: Sequence[int]) -> tuple[list[int],
                                                                             list[TokenizedText]]:
    """The distinct ``rows`` (first occurrence order) and their words as ``TokenizedText``."""
    uniq: list[int] = []
    seen: set[int] = set()
    for r in rows:
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)):
            raise TypeError(f"rows: expected int task rows, got {r!r}")
        if not 0 <= int(r) < len(words):
            raise ValueError(f"row {r} out of range: there are {len(words)} tasks "
                             f"(rows 0..{len(words) - 1})")
        if int(r) not in seen:
            seen.add(int(r))
            uniq.append(int(r))
    tts = []
    for r in uniq:
        if isinstance(words[r], str):
            raise TypeError(f"row {r}: expected a sequence of words, got a str")
        try:
            tts.append(from_tokens(list(words[r])))
        except ValueError as exc:
            raise ValueError(f"row {r}: {exc}") from None
    return uniq, tts


def model_view(model: NerModel, words: Sequence[Sequence[str]], *,
               rows: Sequence[int]) -> dict[int, ModelView]:
    """Each task of ``rows`` as the model sees it: subwords, their words, the windows.

    Parameters
    ----------
    model : a loaded :class:`ls_backend.runtime.NerModel`
    words : per task, its words (``words[r]`` is task row ``r``)
    rows : task rows to show (indices into ``words``)

    Returns
    -------
    ``{row: ModelView}`` — ``subwords`` and ``word_ids`` (n_sub_total,), ``windows``
    (n_windows, 2) half-open ranges into ``subwords`` (content subtokens only; see
    :class:`ModelView`).  A word the tokenizer drops is shown as the unknown token, as the
    runtime feeds it.  A task without words gives three empty lists (no window is run).

    Raises
    ------
    ValueError : a row outside ``words``, an empty word
    """
    from .windows import prepare

    uniq, tts = _tokenized(words, rows)
    preps = prepare(model.tokenizer, tts, window=model.window, stride=model.stride)
    pre, suf = list(model.prefix_ids), list(model.suffix_ids)
    out: dict[int, ModelView] = {}
    for r, p in zip(uniq, preps):
        if not p.n_words:
            out[r] = {"subwords": [], "word_ids": [], "windows": []}
            continue
        ids = pre + p.ids.tolist() + suf
        counts = np.diff(p.word_first)
        content: list[int | None] = np.repeat(np.arange(p.n_words), counts).tolist()
        out[r] = {
            "subwords": [str(s) for s in model.tokenizer.convert_ids_to_tokens(ids)],
            "word_ids": [None] * len(pre) + content + [None] * len(suf),
            "windows": (p.windows + len(pre)).tolist(),
        }
    return out


# ------------------------------------------------------------------ activations


def _ffn_modules(hf_model: Any) -> list[Any]:
    """The FFN intermediate module of every layer, in layer order.

    Raises ``ValueError`` naming the model type when the model has none (or not one per layer).
    """
    found: dict[int, Any] = {}
    for name, mod in hf_model.named_modules():
        m = _FFN_RE.search(name)
        if m:
            found.setdefault(int(m.group(1)), mod)
    if not found or sorted(found) != list(range(len(found))):
        mtype = getattr(getattr(hf_model, "config", None), "model_type", type(hf_model).__name__)
        raise ValueError(
            f"model type {mtype!r} has no FFN intermediate module per layer (looked for "
            "'layer.N.intermediate' as in BERT-like models and 'layer.N.ffn.activation' as in "
            "DistilBERT); activation components are not available for it"
        )
    return [found[i] for i in range(len(found))]


def _word_activations(model: NerModel, cols: Columns, ffn: Any) -> np.ndarray:
    """``(n_words, n_neurons)`` float32: ``ffn``'s output at every word's first subtoken, from
    the window that owns it (the runtime's windows and batches; the forward stops at ``ffn``)."""
    import torch

    from .forward import autocast_context, gather
    from .windows import build_batch, ranges, window_batches

    dev = torch.device(model.device)
    n_pre = len(model.prefix_ids)
    n_special = n_pre + len(model.suffix_ids)
    first_sub = cols.word_first[:-1]
    win_words = np.searchsorted(cols.owner[first_sub], np.arange(len(cols.windows) + 1))
    captured: list[Any] = []

    def hook(_mod: Any, _args: Any, output: Any) -> None:
        captured.append(output)
        raise _Stop

    # a compiled model's own call runs its graph; its plain forward calls the submodules
    # (and so the hook)
    call = model.hf_model.forward if getattr(model, "compiled", False) else model.hf_model
    parts: list[tuple[np.ndarray, np.ndarray]] = []
    handle = ffn.register_forward_hook(hook)
    try:
        with torch.no_grad(), autocast_context(model.device):
            for wins in window_batches(cols, batch_tokens=_BATCH_TOKENS, n_special=n_special):
                ids, mask = build_batch(cols, wins, prefix=model.prefix_ids,
                                        suffix=model.suffix_ids, pad_id=model.pad_id)
                captured.clear()
                try:
                    call(input_ids=torch.from_numpy(ids).to(dev),
                         attention_mask=torch.from_numpy(mask).to(dev))
                except _Stop:
                    pass
                if not captured:
                    raise RuntimeError("the FFN hook did not fire during the forward pass")
                w, row = ranges(win_words[wins], win_words[wins + 1] - win_words[wins])
                col = n_pre + first_sub[w] - cols.windows[wins, 0][row]
                parts.append((w, gather(captured[0], row, col)))
    finally:
        handle.remove()
    width = parts[0][1].shape[1] if parts else 0
    out = np.zeros((int(cols.word_off[-1]), width), dtype=np.float32)
    for w, acts in parts:
        out[w] = acts
    return out


def _sample(lens: np.ndarray, max_tokens: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded sample of at most ``max_tokens`` words over tasks with ``lens`` words.

    Whole tasks are drawn in a seeded random order until ``max_tokens`` words are reached (so
    only those tasks need a forward pass); the words of the last one drawn are thinned at random.

    Returns
    -------
    tasks : (n_drawn,) int64 sorted indices into ``lens``
    keep : (lens[tasks].sum(),) bool, the sampled words of those tasks (task order)
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(lens))
    cum = np.cumsum(lens[order])
    n_take = int(np.searchsorted(cum, max_tokens)) + 1
    tasks = np.sort(order[:n_take])
    total = int(lens[tasks].sum())
    keep = np.ones(total, dtype=bool)
    if total > max_tokens:
        keep[:] = False
        keep[rng.choice(total, size=max_tokens, replace=False)] = True
    return tasks, keep


def _fit(x: np.ndarray, n_components: int, seed: int) -> tuple[Any, np.ndarray]:
    """``sklearn.decomposition.NMF`` fitted to ``x`` (n_words, n_neurons), non-negative, and
    the fitted word weights ``W`` (n_words, n_components)."""
    from sklearn.decomposition import NMF
    from sklearn.exceptions import ConvergenceWarning

    nmf = NMF(n_components, init="nndsvda", random_state=seed, max_iter=300)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        w = nmf.fit_transform(x)
    if any(issubclass(c.category, ConvergenceWarning) for c in caught):
        log.info("NMF (%d components, %d words) stopped at max_iter=300 before converging",
                 n_components, len(x))
    return nmf, np.asarray(w)


def _top_words(weights: np.ndarray, words: Sequence[str], top_k: int) -> list[list[Any]]:
    """The ``top_k`` distinct words of highest weight (> 0), ``[[word, weight], ...]``."""
    out: list[list[Any]] = []
    seen: set[str] = set()
    for i in np.argsort(-weights, kind="stable").tolist():
        if len(out) >= top_k or weights[i] <= 0:
            break
        if words[i] not in seen:
            seen.add(words[i])
            out.append([words[i], round(float(weights[i]), 4)])
    return out


def activation_components(
    model: NerModel,
    words: Sequence[Sequence[str]],
    *,
    rows: Sequence[int],
    layer: int | None = None,
    n_components: int = 8,
    max_tokens: int = 20000,
    top_k: int = 12,
    seed: int = 0,
) -> ActivationComponents:
    """NMF components of one layer's FFN neuron activations over the words of ``rows``.

    One vector per word: the FFN intermediate output (post-activation, negatives clipped to 0)
    at the word's first subtoken, in the window that owns it.  At most ``max_tokens`` words are
    factorised (a seeded sample, see :func:`_sample`) with
    ``NMF(n_components, init="nndsvda", random_state=seed, max_iter=300)``.

    Parameters
    ----------
    model : a loaded :class:`ls_backend.runtime.NerModel` (on any device)
    words : per task, its words; rows : the task rows to use (indices into ``words``)
    layer : 0-based layer, ``None`` = the middle one (``n_layers // 2``)
    n_components, max_tokens, top_k : components, words fitted at most, words per component
    seed : the word sample and the NMF

    Returns
    -------
    ``{"layer", "n_layers", "n_words" (words fitted), "components": [{"top_words": [[word,
    weight], ...]}] (n_components,), "tasks": {row: (n_words_row, n_components)}}`` — per-word
    weights ``W`` of the NMF (a component's ``top_words`` are its ``top_k`` distinct words of
    highest weight, rounded to 4 digits); ``tasks`` holds the first ``SHOWN_TASKS`` distinct
    rows, each word's weights divided by their maximum (all 0 when it is 0), rounded to 3 digits.

    Raises
    ------
    ValueError : a layer outside ``0..n_layers-1`` (message names the range), a model without
        FFN intermediate modules (names its type), a bad row, fewer words than components
    """
    for name, val in (("n_components", n_components), ("max_tokens", max_tokens),
                      ("top_k", top_k)):
        if val < 1:
            raise ValueError(f"{name} must be >= 1, got {val}")
    ffns = _ffn_modules(model.hf_model)
    n_layers = len(ffns)
    lay = n_layers // 2 if layer is None else layer
    if not 0 <= lay < n_layers:
        raise ValueError(f"layer {layer} out of range: the model has {n_layers} layers, "
                         f"allowed 0..{n_layers - 1} (or None for the middle one)")
    uniq, tts = _tokenized(words, rows)
    lens = np.fromiter(map(len, tts), dtype=np.int64, count=len(tts))
    if int(lens.sum()) < n_components:
        raise ValueError(f"n_components={n_components} needs at least as many words; the "
                         f"{len(uniq)} rows have {int(lens.sum())}")
    drawn, keep = _sample(lens, max_tokens, seed)
    shown = np.arange(min(SHOWN_TASKS, len(uniq)))
    need = np.union1d(drawn, shown)
    from .windows import prepare_columns

    cols = prepare_columns(model.tokenizer, [tts[k] for k in need.tolist()],
                           window=model.window, stride=model.stride)
    acts = np.maximum(_word_activations(model, cols, ffns[lay]), 0.0)
    # the sampled words: every word of the drawn tasks where keep says so
    pos = {k: j for j, k in enumerate(need.tolist())}
    idx = np.concatenate([np.arange(cols.word_off[pos[k]], cols.word_off[pos[k] + 1])
                          for k in drawn.tolist()])[keep]
    all_words = [w for tt in cols.tts for w in tt.tokens]
    nmf, fit_w = _fit(acts[idx], n_components, seed)
    components: list[Component] = [
        {"top_words": _top_words(fit_w[:, c], [all_words[i] for i in idx.tolist()], top_k)}
        for c in range(n_components)]
    tasks: dict[int, list[list[float]]] = {}
    for k in shown.tolist():
        lo, hi = int(cols.word_off[pos[k]]), int(cols.word_off[pos[k] + 1])
        w = np.asarray(nmf.transform(acts[lo:hi]) if hi > lo else np.zeros((0, n_components)),
                       dtype=np.float64)
        top = w.max(axis=1, keepdims=True, initial=0.0)
        tasks[uniq[k]] = np.round(np.divide(w, top, out=np.zeros_like(w), where=top > 0),
                                  3).tolist()
    log.info("activation components: layer %d/%d, %d words, %d components", lay, n_layers,
             len(idx), n_components)
    return {"layer": lay, "n_layers": n_layers, "n_words": len(idx),
            "components": components, "tasks": tasks}
