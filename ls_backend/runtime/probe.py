"""Probing: what the model makes of one free text, word by word, as ExplaiNER's probing view.

:func:`probe` runs the ordinary predict path (:meth:`NerModel.predict`, the same windows and
decoding as ``/predict``) on one text and adds what that path throws away: per word the top
tags with their probabilities, whether the word is low-confidence, and the word as the model
sees it — its subword tokens, how many windows the text needs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["ProbeResult", "ProbeWord", "probe"]


@dataclass(frozen=True)
class ProbeWord:
    """One word: ``text[start:end]``, its subword tokens, the top tags ``[(tag, p)]`` (best
    first), the argmax tag and its probability, ``low`` when that is below the threshold."""

    word: str
    start: int
    end: int
    subwords: tuple[str, ...]
    top: tuple[tuple[str, float], ...]
    tag: str
    p: float
    low: bool


@dataclass(frozen=True)
class ProbeResult:
    """:func:`probe` of one text; ``to_dict`` is the JSON of the CLI and the backend route."""

    text: str
    model_version: str
    words: tuple[ProbeWord, ...]
    spans: tuple[tuple[int, int, str, float], ...]
    n_subtokens: int
    windows: int
    low_confidence: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text, "model_version": self.model_version,
            "n_subtokens": self.n_subtokens, "windows": self.windows,
            "low_confidence": self.low_confidence,
            "spans": [{"start": s, "end": e, "label": lab, "score": round(sc, 4),
                       "text": self.text[s:e]} for s, e, lab, sc in self.spans],
            "words": [{"word": w.word, "start": w.start, "end": w.end,
                       "subwords": list(w.subwords), "tag": w.tag, "p": round(w.p, 4),
                       "low": w.low, "top": [[t, round(p, 4)] for t, p in w.top]}
                      for w in self.words],
        }


def probe(model: Any, text: str, *, top_k: int = 3, low_confidence: float = 0.6) -> ProbeResult:
    """Probe ``model`` (a :class:`ls_backend.runtime.NerModel`) with ``text``.

    Parameters
    ----------
    text : free text, split into words with :func:`analysis.spans.tokenize` as ``/predict`` does
    top_k : tags listed per word (>= 1)
    low_confidence : a word whose argmax probability is below this is marked ``low``

    Raises
    ------
    ValueError : empty text, ``top_k < 1``, threshold outside ``(0, 1]``
    """
    from analysis.spans import tokenize

    from .windows import make_windows

    if not isinstance(text, str) or not text.strip():
        raise ValueError("probe: the text is empty")
    if top_k < 1:
        raise ValueError(f"probe: top_k must be >= 1, got {top_k}")
    if not 0.0 < low_confidence <= 1.0:
        raise ValueError(f"probe: low_confidence must be in (0, 1], got {low_confidence}")
    tt = tokenize(text)
    (pred,) = model.predict([tt])
    probs = np.asarray(pred.probs, dtype=np.float64)
    tags = tuple(model.tags)
    k = min(top_k, len(tags))
    order = np.argsort(-probs, axis=1, kind="stable")[:, :k]
    enc = model.tokenizer(list(tt.tokens), is_split_into_words=True, add_special_tokens=False)
    word_ids = enc.word_ids()
    pieces = enc.tokens()
    sub: list[list[str]] = [[] for _ in tt.tokens]
    for piece, wid in zip(pieces, word_ids):
        if wid is not None:
            sub[wid].append(piece)
    words = []
    for i, w in enumerate(tt.tokens):
        best = int(order[i, 0])
        words.append(ProbeWord(
            w, int(tt.starts[i]), int(tt.ends[i]), tuple(sub[i]),
            tuple((tags[int(j)], float(probs[i, int(j)])) for j in order[i]),
            tags[best], float(probs[i, best]), bool(probs[i, best] < low_confidence)))
    n_sub = len(pieces)
    windows = len(make_windows(n_sub, model.window, model.stride)[0]) if n_sub else 0
    spans = tuple((int(s.start), int(s.end), str(s.label), float(sc))
                  for s, sc in zip(pred.spans, np.asarray(pred.span_scores).tolist()))
    return ProbeResult(text, model.version, tuple(words), spans, n_sub, windows, low_confidence)
