"""CoNLL file structure from raw bytes, vectorised over all lines: lines, columns, tokens, tags.

``token<TAB>tag`` (or space separated ``token POS chunk NER`` as in CoNLL-2003), one token per
line, a blank line after each sentence, ``-DOCSTART-`` lines between documents.  Everything here
works on the UTF-8 bytes with numpy (one pass per step, no Python object per line), except the
rare lines that need Python: lines starting with (possibly Unicode) whitespace, space-separated
lines, tokens longer than 16 bytes, and the middle columns of files with more than two.

:func:`split_lines` returns a :class:`Lines` of the token lines (with their sentence and line
numbers) or raises :class:`analysis.exceptions.DataError` naming the line, exactly as a
line-by-line reader would.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from analysis.exceptions import DataError

__all__ = ["Lines", "split_lines", "slice_codes", "DOCSTART"]

DOCSTART = "-DOCSTART-"
#: masks keeping the first k bytes of a little-endian word (k = 0..16 over two words)
_MASK_LO = np.array([(1 << (8 * min(k, 8))) - 1 for k in range(17)], dtype=np.uint64)
_MASK_HI = np.array([(1 << (8 * max(k - 8, 0))) - 1 for k in range(17)], dtype=np.uint64)
_HASHED = np.uint64(0x80 << 56)  # top byte of the keys of hashed (8-16 byte) slices
_LONG = np.uint64(0xFF << 56)  # the one key of all slices over 16 bytes (decoded apart)
_WS_LEAD = np.zeros(256, dtype=bool)
_WS_LEAD[[9, 10, 11, 12, 13, 28, 29, 30, 31, 32, 0xC2, 0xE1, 0xE2, 0xE3]] = True  # may be space


@dataclass(frozen=True, eq=False)
class Lines:
    """The token lines of a CoNLL file.

    Attributes
    ----------
    line : (N,) int64 1-based line number of each token line
    sentence : (N,) int64 0-based sentence of each token line (non-decreasing)
    sentence_offsets : (n_sentences + 1,) int64
    token_codes : (N,) int64 index into ``token_vocab``
    token_vocab : distinct token strings
    tag_codes : (N,) int64 index into ``tag_vocab``
    tag_vocab : distinct tag strings, as written (surrounding whitespace included)
    extra : per sentence, the middle columns of each token line (None: a two-column file)
    docstart : per sentence, the ``-DOCSTART-`` line right before it (or None)
    ncols : columns per line
    """

    line: np.ndarray
    sentence: np.ndarray
    sentence_offsets: np.ndarray
    token_codes: np.ndarray
    token_vocab: list[str]
    tag_codes: np.ndarray
    tag_vocab: list[str]
    extra: list[list[list[str]]] | None
    docstart: list[str | None]
    ncols: int


def _bounds(buf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    nl = np.flatnonzero(buf == 10)
    starts = np.concatenate([[0], nl + 1]).astype(np.int64)
    ends = np.concatenate([nl, [buf.shape[0]]]).astype(np.int64)
    if starts[-1] == buf.shape[0]:  # a final newline ends the last line
        starts, ends = starts[:-1], ends[:-1]
    cr = (ends > starts) & (buf[np.maximum(ends - 1, 0)] == 13)
    return starts, ends - cr


def _blank(raw: bytes, buf: np.ndarray, starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Lines that are empty or whitespace only (``str.strip() == ""``)."""
    blank = ends <= starts
    maybe = np.flatnonzero(~blank & _WS_LEAD[buf[np.minimum(starts, max(len(buf) - 1, 0))]])
    for i in maybe.tolist():
        blank[i] = not raw[starts[i]:ends[i]].decode("utf-8").strip()
    return blank


def _line_text(raw: bytes, s: int, e: int) -> str:
    return raw[s:e].decode("utf-8")


@dataclass(frozen=True, eq=False)
class _Fields:
    ncols: np.ndarray  # per content line
    tok_s: np.ndarray
    tok_e: np.ndarray
    tag_s: np.ndarray
    tag_e: np.ndarray
    slow: dict[int, list[str]]  # content line -> its columns (computed in Python)


def _fields(raw: bytes, buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> _Fields:
    """Columns of the content lines: tab separated where the line has a tab, else single-space
    separated with empty fields dropped (``[c for c in line.split(" ") if c]``)."""
    tabs = np.flatnonzero(buf == 9)
    if tabs.shape[0] == s.shape[0] and np.all((tabs >= s) & (tabs < e)):
        # the common case, a two-column file: the k-th tab is the k-th line's only tab
        return _Fields(np.full(s.shape[0], 2, dtype=np.int64), s.copy(), tabs.copy(), tabs + 1,
                       e.copy(), {})
    lo = np.searchsorted(tabs, s)
    hi = np.searchsorted(tabs, e)
    ntab = hi - lo
    first = tabs[np.minimum(lo, max(len(tabs) - 1, 0))] if len(tabs) else s
    last = tabs[np.maximum(hi - 1, 0)] if len(tabs) else s
    has_tab = ntab > 0
    ncols = ntab + 1
    tok_s, tok_e = s.copy(), np.where(has_tab, first, e)
    tag_s, tag_e = np.where(has_tab, last + 1, s), e.copy()
    slow: dict[int, list[str]] = {}
    for i in np.flatnonzero(~has_tab).tolist():
        cols = [c for c in _line_text(raw, s[i], e[i]).split(" ") if c]
        slow[i] = cols
        ncols[i] = len(cols)
    return _Fields(ncols, tok_s, tok_e, tag_s, tag_e, slow)


def _mix(h: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return h ^ (h >> np.uint64(31))


def slice_codes(raw: bytes, buf: np.ndarray, s: np.ndarray, e: np.ndarray
                ) -> tuple[np.ndarray, list[str]]:
    """Factorise byte slices ``raw[s:e]`` into codes and their distinct decoded strings.

    A slice of up to 7 bytes is its own 64-bit key (its bytes, and its length in the top byte:
    exact); one of 8-16 bytes is packed into two words and hashed into keys whose top byte is
    0x80, so the two kinds never meet; a hash collision (members of one code with different
    words) is detected and resolved by an exact factorisation.  Longer slices are decoded in
    Python.  Codes are in first-seen order.
    """
    n = s.shape[0]
    length = e - s
    ulen = length.astype(np.uint64)
    lo = np.zeros(n, dtype=np.uint64)
    words: np.ndarray | None = None
    at = s
    if buf.shape[0]:
        # every offset r as two little-endian words buf[r:r+8], buf[r+8:r+16] (unaligned view)
        padded = np.concatenate([buf, np.zeros(16, dtype=np.uint8)])
        words = np.ndarray(shape=(buf.shape[0], 2), dtype="<u8", buffer=padded, strides=(1, 8))
        at = np.minimum(s, buf.shape[0] - 1)
        lo = words[at, 0] & _MASK_LO[np.minimum(length, 8)]
    key = lo | (ulen << np.uint64(56))  # exact below 8 bytes
    mid = np.flatnonzero((length > 7) & (length <= 16))
    hi = np.zeros(mid.size, dtype=np.uint64)
    if mid.size and words is not None:
        hi = words[at[mid], 1] & _MASK_HI[length[mid]]
        h = _mix(lo[mid] ^ _mix(hi ^ (ulen[mid] << np.uint64(56))))
        key[mid] = (h >> np.uint64(8)) | _HASHED
    long_rows = np.flatnonzero(length > 16)
    key[long_rows] = _LONG
    codes = np.asarray(pd.factorize(key)[0], dtype=np.int64)  # first-seen order
    renumber = False
    if mid.size:  # a collision can only be among the hashed slices
        rep = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
        cm = codes[mid]
        rep[cm[::-1]] = np.arange(mid.size - 1, -1, -1)  # first hashed slice of each code
        r = rep[cm]
        if np.any((lo[mid][r] != lo[mid]) | (hi[r] != hi) | (length[mid][r] != length[mid])):
            exact = np.stack([lo[mid], hi, ulen[mid]], axis=1)
            _, inv = np.unique(exact, axis=0, return_inverse=True)
            codes[mid] = int(codes.max()) + 1 + np.asarray(inv, dtype=np.int64).ravel()
            renumber = True
    if long_rows.size:  # decode, then give each distinct long string a code of its own
        strings = [raw[s[i]:e[i]].decode("utf-8") for i in long_rows.tolist()]
        lc, _ = pd.factorize(np.array(strings, dtype=object))
        codes[long_rows] = int(codes.max()) + 1 + lc
        renumber = True
    # codes in first-seen order, one decoded representative each
    codes, first = _first_seen(codes) if renumber else (codes, _first_rows(codes))
    vocab = [raw[s[i]:e[i]].decode("utf-8") for i in first.tolist()]
    return codes, vocab


def _first_rows(codes: np.ndarray) -> np.ndarray:
    """First row of every code (codes ``0..k-1``)."""
    first = np.full(int(codes.max()) + 1 if codes.size else 0, -1, dtype=np.int64)
    first[codes[::-1]] = np.arange(len(codes) - 1, -1, -1)
    return first


def _first_seen(codes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    new = np.asarray(pd.factorize(codes)[0], dtype=np.int64)
    return new, _first_rows(new)


def _check_structure(raw: bytes, f: _Fields, line_no: np.ndarray, is_doc: np.ndarray,
                     s: np.ndarray, e: np.ndarray, carry: _Carry) -> None:
    """Raise for the first line that breaks the structure; fix the file's column count (the
    first token line's) in ``carry``."""
    tok = np.flatnonzero(~is_doc)
    if not tok.size:
        return
    nc = f.ncols[tok]
    if carry.ncols is None:
        carry.ncols = int(nc[0]) if nc[0] >= 2 else 2
        carry.ref_line = int(line_no[tok[0]])
    ref, ref_line = carry.ncols, carry.ref_line
    few = nc < 2
    changed = ~few & (nc != ref)
    empty = (f.tok_e[tok] <= f.tok_s[tok])
    bad = np.flatnonzero(few | changed | empty)
    if bad.size:
        k = int(tok[bad[0]])
        text = _line_text(raw, s[k], e[k])
        if few[bad[0]]:
            raise DataError(f"line {line_no[k]}: expected 'token<TAB>tag' (or 'token POS chunk "
                            f"tag'), got {text!r}")
        if changed[bad[0]]:
            raise DataError(f"line {line_no[k]}: {nc[bad[0]]} columns, but line {ref_line} has "
                            f"{ref}: {text!r}")
        raise DataError(f"line {line_no[k]}: empty token in {text!r}")


@dataclass
class _Carry:
    """What one block of the file passes to the next."""

    ncols: int | None = None  # the file's column count (its first token line's) ...
    ref_line: int = 0  # ... and that line
    docstart: str | None = None  # a -DOCSTART- line still waiting for its sentence


@dataclass(frozen=True, eq=False)
class _Block:
    n_lines: int
    line: np.ndarray
    sentence: np.ndarray  # block-local sentence index
    n_sent: int
    token_codes: np.ndarray  # block-local codes ...
    token_vocab: list[str]  # ... into these
    tag_codes: np.ndarray
    tag_vocab: list[str]
    extra: list[list[list[str]]] | None
    docstart: list[str | None]


#: bytes per block: the file is parsed block by block (cut at blank lines) so that the
#: temporaries stay a few tens of MB whatever the file size
BLOCK_BYTES = 1 << 22
_BLANK_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")


def _block_bounds(raw: bytes, size: int) -> list[tuple[int, int]]:
    """Byte ranges of about ``size`` bytes, each cut just before a blank line (so no sentence
    is split); a file without blank lines is one block."""
    out, a, n = [], 0, len(raw)
    while a < n:
        m = _BLANK_LINE.search(raw, min(a + size, n)) if a + size < n else None
        b = m.start() + 1 if m else n
        out.append((a, b))
        a = b
    return out


class _Vocab:
    """One column's distinct strings over all blocks, in first-seen order."""

    def __init__(self) -> None:
        self.codes: dict[str, int] = {}
        self.strings: list[str] = []

    def global_codes(self, local: list[str]) -> np.ndarray:
        """The global code of each of a block's distinct strings (new ones appended)."""
        out = np.empty(len(local), dtype=np.int64)
        codes, strings = self.codes, self.strings
        for j, v in enumerate(local):
            c = codes.get(v)
            if c is None:
                c = codes[v] = len(strings)
                strings.append(v)
            out[j] = c
        return out


def split_lines(raw: bytes, *, block_bytes: int = BLOCK_BYTES) -> Lines:
    """Parse the structure of a CoNLL file (UTF-8 bytes, BOM already removed).

    Block by block; each block's token lines go straight into the output arrays (sized by the
    file's line count), with global sentence numbers and one vocabulary per column whose codes
    are in first-seen order, as a single pass would give.
    """
    carry = _Carry()
    cap = raw.count(b"\n") + 1  # at least the number of token lines
    line = np.empty(cap, dtype=np.int64)
    sentence = np.empty(cap, dtype=np.int64)
    token_codes = np.empty(cap, dtype=np.int64)
    tag_codes = np.empty(cap, dtype=np.int64)
    tokens, tags = _Vocab(), _Vocab()
    docstart: list[str | None] = []
    extra: list[list[list[str]]] = []
    line_base = n = n_sent = 0
    for a, b in _block_bounds(raw, block_bytes):
        blk = _split_block(raw[a:b], line_base, carry)
        line_base += blk.n_lines
        k = blk.line.size
        line[n:n + k] = blk.line
        sentence[n:n + k] = blk.sentence + n_sent
        token_codes[n:n + k] = tokens.global_codes(blk.token_vocab)[blk.token_codes]
        tag_codes[n:n + k] = tags.global_codes(blk.tag_vocab)[blk.tag_codes]
        docstart.extend(blk.docstart)
        extra.extend(blk.extra or [])
        n += k
        n_sent += blk.n_sent
    offsets = np.zeros(n_sent + 1, dtype=np.int64)
    np.cumsum(np.bincount(sentence[:n], minlength=n_sent), out=offsets[1:])
    ncols = carry.ncols or 2
    return Lines(line[:n], sentence[:n], offsets, token_codes[:n], tokens.strings, tag_codes[:n],
                 tags.strings, extra if ncols > 2 else None, docstart, ncols)


def _split_block(raw: bytes, line_base: int, carry: _Carry) -> _Block:
    """The token lines of one block (whole sentences); line numbers after ``line_base``."""
    buf = np.frombuffer(raw, dtype=np.uint8)
    s_all, e_all = _bounds(buf)
    blank = _blank(raw, buf, s_all, e_all)
    content = np.flatnonzero(~blank)
    s, e = s_all[content], e_all[content]
    line_no = content + 1 + line_base
    f = _fields(raw, buf, s, e)
    # -DOCSTART- lines: the first column is exactly the marker
    marker = np.frombuffer(DOCSTART.encode(), dtype=np.uint8)
    is_doc = (f.tok_e - f.tok_s) == len(marker)
    cand = np.flatnonzero(is_doc)
    if cand.size:
        got = buf[f.tok_s[cand][:, None] + np.arange(len(marker))]
        is_doc[cand] = (got == marker).all(axis=1)
    for i, cols in f.slow.items():
        is_doc[i] = bool(cols) and cols[0] == DOCSTART
    _check_structure(raw, f, line_no, is_doc, s, e, carry)
    # sentences: runs of token lines between blank lines and -DOCSTART- lines
    brk = np.ones(len(content), dtype=bool)
    if len(content) > 1:
        brk[1:] = (content[1:] != content[:-1] + 1) | is_doc[:-1]
    tok = np.flatnonzero(~is_doc)
    sentence = (np.cumsum(brk) - 1)[tok]
    sentence = pd.factorize(sentence)[0].astype(np.int64) if tok.size else sentence
    n_sent = int(sentence.max()) + 1 if tok.size else 0
    offsets = np.zeros(n_sent + 1, dtype=np.int64)
    np.cumsum(np.bincount(sentence, minlength=n_sent), out=offsets[1:])
    ts, te, gs, ge = f.tok_s[tok], f.tok_e[tok], f.tag_s[tok], f.tag_e[tok]
    if f.slow:  # space separated lines: their first and last column come from Python
        in_slow = np.isin(tok, np.fromiter(f.slow, dtype=np.int64, count=len(f.slow)))
        ts[in_slow] = te[in_slow] = gs[in_slow] = ge[in_slow] = -1
    token_codes, token_vocab = _codes_with_slow(raw, buf, ts, te, tok, f.slow, 0)
    tag_codes, tag_vocab = _codes_with_slow(raw, buf, gs, ge, tok, f.slow, -1)
    docstart = _docstarts(raw, s, e, content, tok, offsets, is_doc, carry)
    ncols = carry.ncols or 2
    extra = _extra(raw, s, e, tok, f, offsets) if ncols > 2 else None
    return _Block(len(s_all), line_no[tok], sentence, n_sent, token_codes, token_vocab,
                  tag_codes, tag_vocab, extra, docstart)


def _docstarts(raw: bytes, s: np.ndarray, e: np.ndarray, content: np.ndarray, tok: np.ndarray,
               offsets: np.ndarray, is_doc: np.ndarray, carry: _Carry) -> list[str | None]:
    """Per sentence of the block, the ``-DOCSTART-`` line right before it (the last one wins;
    a marker after the block's last sentence waits in ``carry`` for the next block's first)."""
    n_sent = len(offsets) - 1
    docstart: list[str | None] = [None] * n_sent
    if n_sent and carry.docstart is not None:
        docstart[0], carry.docstart = carry.docstart, None
    doc_lines = np.flatnonzero(is_doc)
    if doc_lines.size:
        first_line = content[tok[offsets[:-1]]] if n_sent else np.zeros(0, np.int64)
        nxt = np.searchsorted(first_line, content[doc_lines])  # sentence after each marker
        for d, k in zip(doc_lines.tolist(), nxt.tolist()):
            text = _line_text(raw, s[d], e[d])
            if k < n_sent:
                docstart[k] = text
            else:
                carry.docstart = text
    return docstart


def _codes_with_slow(raw: bytes, buf: np.ndarray, s: np.ndarray, e: np.ndarray,
                     tok: np.ndarray, slow: dict[int, list[str]], col: int
                     ) -> tuple[np.ndarray, list[str]]:
    """Codes of one column; lines split in Python (``s == -1``) take their column from ``slow``."""
    fast = s >= 0
    if fast.all():
        return slice_codes(raw, buf, s, e)
    codes = np.zeros(len(s), dtype=np.int64)
    vocab: list[str] = []
    if fast.any():
        fc, vocab = slice_codes(raw, buf, s[fast], e[fast])
        codes[fast] = fc
    pos = {v: k for k, v in enumerate(vocab)}
    for k in np.flatnonzero(~fast).tolist():
        v = slow[int(tok[k])][col]
        j = pos.get(v)
        if j is None:
            j = pos[v] = len(vocab)
            vocab.append(v)
        codes[k] = j
    return codes, vocab


def _extra(raw: bytes, s: np.ndarray, e: np.ndarray, tok: np.ndarray, f: _Fields,
           offsets: np.ndarray) -> list[list[list[str]]]:
    """Middle columns of every token line, per sentence (files with more than two columns)."""
    rows: list[list[str]] = []
    for i in tok.tolist():
        cols = f.slow.get(i)
        if cols is None:
            cols = _line_text(raw, s[i], e[i]).split("\t")
        rows.append(cols[1:-1])
    return [rows[a:b] for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
