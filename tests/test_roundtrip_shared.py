"""CoNLL -> LS JSON -> CoNLL is byte-identical on the shared corpora (skipped when absent),
and the loaded counts equal the ones published in each corpus README."""

from __future__ import annotations

import json

import pytest

from analysis import formats as io

# (corpus, split, sentences, entities) from /work/shared/data/*/README.md count tables
COUNTS = [
    ("conll2003", "train", 14041, 23499),
    ("conll2003", "dev", 3250, 5942),
    ("conll2003", "test", 3453, 5648),
    ("wnut17", "train", 3394, 1975),
    ("wnut17", "dev", 1009, 836),
    ("wnut17", "test", 1287, 1079),
    ("bc5cdr", "train", 4560, 9385),
    ("bc5cdr", "dev", 4581, 9593),
    ("bc5cdr", "test", 4797, 9809),
]


@pytest.mark.parametrize(
    "corpus,split,n_sent,n_ent", COUNTS, ids=[f"{c}-{s}" for c, s, _, _ in COUNTS]
)
def test_conll_lsjson_conll_byte_identical(
    shared: type, corpus: str, split: str, n_sent: int, n_ent: int
) -> None:
    path = shared.file(corpus, f"{split}.conll")
    raw = path.read_bytes()
    ds = io.load(path)
    assert len(ds) == n_sent
    assert ds.n_spans() == n_ent
    assert ds.scheme == "iob2" and len(ds.problems) == 0
    tasks = json.loads(json.dumps(io.to_ls_tasks(ds), ensure_ascii=False))
    back = io.from_ls_tasks(tasks)
    assert len(back.problems) == 0
    rep = io.write_conll(back)
    assert rep.text is not None and rep.text.encode("utf-8") == raw
    assert rep.n_spans == n_ent


def test_wnut_dev_zero_width_tokens_survive(shared: type) -> None:
    path = shared.file("wnut17", "dev.conll")
    ds = io.load(path)
    zw = [tok for t in ds.tasks for tok in t.tokens.tokens if "\u200b" in tok or "\ufeff" in tok]
    assert len(zw) == 2  # README: two dev tokens contain U+200B / U+FEFF
