"""Writing CoNLL (``token<TAB>tag``, or space separated with the CoNLL-2003 middle columns)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from analysis.dataset import ALIGNMENT_KINDS, Dataset, Problem, Task
from analysis.exceptions import DataError
from analysis.schemes import encode, get_scheme
from analysis.spans import Span, TokenSpan, char_to_token_spans

__all__ = ["WriteReport", "write_conll"]


@dataclass
class WriteReport:
    """What a writer did.

    Attributes
    ----------
    format : the format written
    text : the written text (CoNLL) or ``None``
    n_tasks : tasks written
    n_spans : spans written
    skipped : ``(task index, reason)`` for tasks left out (unannotated, no tokens)
    problems : misaligned / dropped spans (reported, not moved)
    """

    format: str
    text: str | None = None
    n_tasks: int = 0
    n_spans: int = 0
    skipped: list[tuple[int, str]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)

    @property
    def misaligned(self) -> int:
        return sum(1 for p in self.problems if p.kind in ALIGNMENT_KINDS)


def _token_spans(t: Task, spans: Sequence[Span], which: str, rep: WriteReport
                 ) -> list[TokenSpan]:
    """The task's spans on its tokens; misaligned, empty and clashing spans reported."""
    tspans, arep = char_to_token_spans(t.tokens, spans, where=t.name, warn=False)
    for s in arep.misaligned:
        rep.problems.append(Problem(
            "misaligned", t.index, which, s,
            f"{t.name}: span [{s.start}, {s.end}) {s.label!r} does not line up with token "
            "boundaries; written over the tokens it touches"))
    for s in arep.empty:
        rep.problems.append(Problem(
            "no_token", t.index, which, s,
            f"{t.name}: span [{s.start}, {s.end}) {s.label!r} covers no token; left out"))
    if not arep.count:
        return tspans
    kept: list[TokenSpan] = []
    for ts in sorted(tspans):
        if kept and ts.start < kept[-1].end:
            rep.problems.append(Problem(
                "dropped_span", t.index, which, None,
                f"{t.name}: token span [{ts.start}, {ts.end}) {ts.label!r} overlaps another span "
                "after mapping to tokens; left out"))
            continue
        kept.append(ts)
    return kept


def _rows(t: Task, tags: list[str], sep: str, with_extra: bool) -> str:
    """One sentence: its ``-DOCSTART-`` line if any, then a line per token."""
    toks = t.tokens.tokens
    bad = [tok for tok in toks if "\n" in tok or "\r" in tok or sep in tok]
    if bad:
        raise DataError(f"{t.name}: token {bad[0]!r} contains a line break or the column "
                        f"separator {sep!r}; it cannot be written as CoNLL")
    doc = t.data.get("conll_docstart")
    head = doc + "\n\n" if isinstance(doc, str) and doc else ""
    if with_extra:
        rows = [sep.join([tok, *ex, tag]) for tok, ex, tag in zip(toks, t.data["conll_extra"],
                                                                  tags)]
    else:
        rows = [f"{tok}\t{tag}" for tok, tag in zip(toks, tags)]
    return head + "\n".join(rows) + "\n\n"


def write_conll(
    ds: Dataset,
    path: str | Path | None = None,
    *,
    scheme: str = "iob2",
    which: Literal["gold", "pred"] = "gold",
    warn: bool = True,
) -> WriteReport:
    """Write ``ds`` as CoNLL (``token<TAB>tag``; space separated with the extra CoNLL-2003
    columns when every task has ``data["conll_extra"]``).

    Tokens are ``Task.tokens``.  Tasks without ``which`` spans (unannotated / no prediction)
    and tasks without tokens are skipped and listed in ``report.skipped``.  Character spans
    that do not line up with tokens are written over the tokens they touch and reported in
    ``report.problems`` (``"misaligned"``); spans covering no token, or that would overlap an
    earlier span after that mapping, are left out and reported (``"no_token"``,
    ``"dropped_span"``).

    Returns
    -------
    WriteReport with ``text`` = the CoNLL text (also written to ``path`` when given).
    """
    if which not in ("gold", "pred"):
        raise DataError(f"which must be 'gold' or 'pred', got {which!r}")
    sc = get_scheme(scheme)
    rep = WriteReport("conll")
    with_extra = bool(ds.tasks) and all(
        isinstance(t.data.get("conll_extra"), list) and len(t.data["conll_extra"]) == len(t.tokens)
        for t in ds.tasks)
    sep = " " if with_extra else "\t"
    out: list[str] = []
    for t in ds.tasks:
        spans = t.gold if which == "gold" else t.pred
        if spans is None:
            rep.skipped.append((t.index, "unannotated" if which == "gold" else "no prediction"))
            continue
        if len(t.tokens) == 0:
            rep.skipped.append((t.index, "no tokens"))
            continue
        tspans = _token_spans(t, spans, which, rep)
        out.append(_rows(t, encode(len(t.tokens), tspans, sc), sep, with_extra))
        rep.n_tasks += 1
        rep.n_spans += len(tspans)
    rep.text = "".join(out)
    if warn and (rep.problems or rep.skipped):
        warnings.warn(
            f"CoNLL output: {len(rep.skipped)} task(s) skipped, {len(rep.problems)} span "
            "problem(s)" + (f"; first: {rep.problems[0].message}" if rep.problems else ""),
            stacklevel=2,
        )
    if path is not None:
        Path(path).write_text(rep.text, encoding="utf-8", newline="")
    return rep
