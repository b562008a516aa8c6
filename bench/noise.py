"""Synthetic annotation noise for the detection bench.

:func:`inject_noise` corrupts a fraction of the annotated tasks of a
:class:`analysis.dataset.Dataset`, exactly one error per corrupted task, the four kinds in
equal numbers (fixed seed):

``wrong_tag``   a gold span gets another label;
``span_shift``  a gold span boundary moves by one token (extend into a neighbouring ``O`` token
                or shrink a multi-token span; the choice is random among the valid ones);
``missed``      a gold span is deleted;
``ghost``       a one-token span with a random label is added on an ``O`` token (capitalised,
                not sentence-initial tokens preferred, so ghosts look like plausible names).

Returns the corrupted dataset (new Task objects, tokens untouched) and one :class:`Corruption`
record per corrupted task.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from analysis.dataset import Dataset, Task, token_spans
from analysis.spans import Span, TokenSpan, token_to_char_spans

__all__ = ["NOISE_KINDS", "Corruption", "inject_noise"]

NOISE_KINDS: tuple[str, ...] = ("wrong_tag", "span_shift", "missed", "ghost")
_WORD = re.compile(r"\w")


@dataclass(frozen=True)
class Corruption:
    task: int  # Task.index
    kind: str
    before: Span | None  # the original gold span (None for ghost)
    after: Span | None  # the corrupted span (None for missed)


def _o_tokens(task: Task, spans: list[TokenSpan]) -> np.ndarray:
    n = len(task.tokens)
    inside = np.zeros(n, dtype=bool)
    for s in spans:
        inside[s.start : s.end] = True
    return np.flatnonzero(~inside)


def _shift_options(task: Task, spans: list[TokenSpan], i: int) -> list[TokenSpan]:
    s = spans[i]
    n = len(task.tokens)
    prev_end = spans[i - 1].end if i > 0 else 0
    next_start = spans[i + 1].start if i + 1 < len(spans) else n
    opts = []
    if s.end < next_start and _WORD.search(task.tokens.tokens[s.end]):
        opts.append(TokenSpan(s.start, s.end + 1, s.label))
    if s.start > prev_end and _WORD.search(task.tokens.tokens[s.start - 1]):
        opts.append(TokenSpan(s.start - 1, s.end, s.label))
    if s.end - s.start >= 2:
        opts.append(TokenSpan(s.start, s.end - 1, s.label))
        opts.append(TokenSpan(s.start + 1, s.end, s.label))
    return opts


def inject_noise(
    dataset: Dataset, *, rate: float = 0.1, seed: int = 0
) -> tuple[Dataset, list[Corruption]]:
    """Corrupt ``rate`` of the annotated tasks (one error each, kinds in equal numbers)."""
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")
    if len(dataset.labels) < 2:
        raise ValueError("wrong_tag noise needs at least two labels")
    rng = np.random.default_rng(seed)
    tasks = list(dataset.tasks)
    tok_spans = {t.index: token_spans(t, "gold", warn=False) for t in tasks if t.gold is not None}
    annotated = np.array(sorted(tok_spans), dtype=np.int64)
    n_noisy = int(round(rate * len(annotated)))
    per_kind = [n_noisy // 4 + (1 if k < n_noisy % 4 else 0) for k in range(4)]

    def ghost_candidates(t: Task) -> np.ndarray:
        o = _o_tokens(t, tok_spans[t.index])
        words = [i for i in o.tolist() if _WORD.search(t.tokens.tokens[i])]
        caps = [i for i in words if i > 0 and t.tokens.tokens[i][:1].isupper()]
        return np.asarray(caps or words, dtype=np.int64)

    has_span = np.array([len(tok_spans[i]) > 0 for i in annotated.tolist()])
    taken: set[int] = set()
    out: list[Corruption] = []
    new_gold: dict[int, tuple[Span, ...]] = {}
    for kind, count in zip(NOISE_KINDS, per_kind):
        pool = annotated[has_span] if kind != "ghost" else annotated
        pool = rng.permutation(pool)
        done = 0
        for ti in pool.tolist():
            if done == count:
                break
            if ti in taken:
                continue
            t = tasks[ti]
            spans = list(tok_spans[ti])
            before: TokenSpan | None = None
            after: TokenSpan | None = None
            if kind == "ghost":
                cand = ghost_candidates(t)
                if cand.size == 0:
                    continue
                pos = int(rng.choice(cand))
                after = TokenSpan(pos, pos + 1, str(rng.choice(dataset.labels)))
                spans = sorted(spans + [after], key=lambda s: s.start)
            else:
                i = int(rng.integers(len(spans)))
                before = spans[i]
                if kind == "wrong_tag":
                    others = [lab for lab in dataset.labels if lab != before.label]
                    after = TokenSpan(before.start, before.end, str(rng.choice(others)))
                    spans[i] = after
                elif kind == "span_shift":
                    opts = _shift_options(t, spans, i)
                    if not opts:
                        continue
                    after = opts[int(rng.integers(len(opts)))]
                    spans[i] = after
                else:  # missed
                    del spans[i]
            taken.add(ti)
            done += 1
            new_gold[ti] = tuple(token_to_char_spans(t.tokens, spans))
            b = token_to_char_spans(t.tokens, [before])[0] if before is not None else None
            a = token_to_char_spans(t.tokens, [after])[0] if after is not None else None
            out.append(Corruption(ti, kind, b, a))
        if done < count:
            raise ValueError(f"could only place {done} of {count} {kind} errors")
    new_tasks = [dataclasses.replace(t, gold=new_gold[t.index]) if t.index in new_gold else t
                 for t in tasks]
    noisy = dataclasses.replace(dataset, tasks=new_tasks)
    out.sort(key=lambda c: c.task)
    return noisy, out


def summary(corruptions: list[Corruption]) -> dict[str, Any]:
    kinds = [c.kind for c in corruptions]
    return {"n": len(corruptions), **{k: kinds.count(k) for k in NOISE_KINDS}}
