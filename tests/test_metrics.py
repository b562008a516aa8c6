"""Span metrics (analysis.metrics): seqeval strict equality, confusion, distributions."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from conftest import shared_file
from hypothesis import HealthCheck, given, settings
from seqeval.metrics import classification_report
from seqeval.scheme import IOB2
from test_errors import corpus, table, to_table

from analysis.errors import align
from analysis.metrics import (
    confusion,
    error_distribution,
    sample_count,
    span_prf,
    top_confusions,
)
from analysis.schemes import decode, encode
from analysis.spans import Span, SpanTable, TokenSpan

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def seqeval_dict(true_tags, pred_tags) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return classification_report(
            true_tags, pred_tags, mode="strict", scheme=IOB2, output_dict=True
        )


def assert_same_as_seqeval(ours: dict, ref: dict) -> None:
    assert list(ours) == list(ref)
    for name, row in ref.items():
        for key in ("precision", "recall", "f1-score"):
            if name == "macro avg" and math.isnan(row[key]):
                # seqeval: mean of no classes is nan; ours documents 0.0
                assert ours[name][key] == 0.0
                continue
            assert ours[name][key] == pytest.approx(float(row[key]), abs=1e-12, rel=0), (name, key)
        assert ours[name]["support"] == int(row["support"]), name


@SETTINGS
@given(corpus())
def test_span_prf_equals_seqeval_strict(data):
    lengths, golds, preds = data
    true_tags = [encode(n, g, "iob2") for n, g in zip(lengths, golds)]
    pred_tags = [encode(n, p, "iob2") for n, p in zip(lengths, preds)]
    report = span_prf(to_table(golds), to_table(preds))
    ours = report.to_dict()
    if not lengths:
        assert ours["micro avg"]["f1-score"] == 0.0
        return
    assert_same_as_seqeval(ours, seqeval_dict(true_tags, pred_tags))
    for row in ours.values():
        for key in ("precision", "recall", "f1-score"):
            assert 0.0 <= row[key] <= 1.0


@SETTINGS
@given(corpus())
def test_span_prf_with_alignment_is_the_same(data):
    lengths, golds, preds = data
    g, p = to_table(golds), to_table(preds)
    assert span_prf(g, p, alignment=align(g, p)).to_dict() == span_prf(g, p).to_dict()


def test_span_prf_hand_made():
    gold = table([[(0, 5, "PER"), (6, 9, "LOC")], [(0, 3, "ORG")]])
    pred = table([[(0, 5, "PER"), (6, 8, "LOC")], [(0, 3, "ORG"), (5, 7, "MISC")]])
    r = span_prf(gold, pred)
    assert r.labels == ("LOC", "MISC", "ORG", "PER")
    assert r.tp.tolist() == [0, 0, 1, 1]
    assert r.n_pred.tolist() == [1, 1, 1, 1]
    assert r.support.tolist() == [1, 0, 1, 1]
    assert r.micro["precision"] == 0.5 and r.micro["recall"] == 2 / 3
    assert r.micro["f1-score"] == pytest.approx(2 * 0.5 * (2 / 3) / (0.5 + 2 / 3))
    assert r.macro["f1-score"] == pytest.approx(0.5)
    text = r.to_text(digits=2)
    assert "micro avg" in text and "MISC" in text and "0.50" in text


def test_span_prf_empty_tables():
    r = span_prf(table([[]]), table([[]]))
    assert r.labels == ()
    d = r.to_dict()
    assert list(d) == ["micro avg", "macro avg", "weighted avg"]
    assert all(v["f1-score"] == 0.0 and v["support"] == 0 for v in d.values())


def _read_conll(path) -> list[tuple[list[str], list[str]]]:
    sents, toks, tags = [], [], []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            if toks:
                sents.append((toks, tags))
                toks, tags = [], []
            continue
        tok, tag = line.split("\t")
        toks.append(tok)
        tags.append(tag)
    if toks:
        sents.append((toks, tags))
    return sents


def _perturb(spans: list[TokenSpan], n: int, rng: np.random.Generator, labels) -> list[TokenSpan]:
    out: list[TokenSpan] = []
    for s in spans:
        u = rng.random()
        if u < 0.05:
            continue  # missed
        if u < 0.10:
            out.append(TokenSpan(s.start, s.end, labels[int(rng.integers(len(labels)))]))
        elif u < 0.15:
            out.append(TokenSpan(s.start, min(n, s.end + 1), s.label))
        elif u < 0.20 and s.end - s.start > 1:
            out.append(TokenSpan(s.start + 1, s.end, s.label))
        else:
            out.append(s)
    if n and rng.random() < 0.05:
        i = int(rng.integers(n))
        out.append(TokenSpan(i, i + 1, labels[int(rng.integers(len(labels)))]))
    kept: list[TokenSpan] = []
    for s in sorted(out):
        if not kept or kept[-1].end <= s.start:
            kept.append(s)
    return kept


def test_span_prf_equals_seqeval_on_conll2003_test():
    path = shared_file("conll2003", "test.conll")
    sents = _read_conll(path)
    labels = ["LOC", "MISC", "ORG", "PER"]
    rng = np.random.default_rng(12345)
    gold_spans, pred_spans, true_tags, pred_tags = [], [], [], []
    for i, (toks, tags) in enumerate(sents):
        g = list(decode(tags, "iob2", where=f"sentence {i}").spans)
        p = _perturb(g, len(toks), rng, labels)
        gold_spans.append(g)
        pred_spans.append(p)
        true_tags.append(tags)  # the file's own tags, not re-encoded
        pred_tags.append(encode(len(toks), p, "iob2"))
    gold = SpanTable.from_spans([[Span(s.start, s.end, s.label) for s in g] for g in gold_spans])
    pred = SpanTable.from_spans([[Span(s.start, s.end, s.label) for s in p] for p in pred_spans])
    ours = span_prf(gold, pred).to_dict()
    ref = seqeval_dict(true_tags, pred_tags)
    assert_same_as_seqeval(ours, ref)
    assert 0.5 < ours["micro avg"]["f1-score"] < 1.0  # the perturbation did something
    assert ours["micro avg"]["support"] > 5000


def test_confusion_counts_every_pair_once():
    gold = table([[(0, 4, "LOC"), (5, 9, "LOC"), (10, 14, "PER"), (20, 22, "ORG")]])
    pred = table([[(0, 9, "ORG"), (10, 14, "PER"), (30, 33, "PER")]])
    conf = confusion(gold, pred)
    assert conf.labels == ("LOC", "ORG", "PER", "none")
    c = conf.to_dict()
    assert c["LOC"]["ORG"] == 2  # one pred merged two golds: two pairs
    assert c["PER"]["PER"] == 1
    assert c["ORG"]["none"] == 1  # missed
    assert c["none"]["PER"] == 1  # ghost
    assert c["none"]["none"] == 0
    assert conf.counts.sum() == 5
    norm = conf.normalized()
    assert norm[0].tolist() == [0.0, 1.0, 0.0, 0.0]
    assert np.allclose(norm.sum(axis=1)[conf.counts.sum(axis=1) > 0], 1.0)
    nodiag = confusion(gold, pred, zero_diagonal=True)
    assert nodiag.counts[2, 2] == 0 and nodiag.counts[0, 1] == 2
    assert conf.without_diagonal().tolist() == nodiag.counts.tolist()
    zn = conf.normalized(zero_diagonal=True)
    assert zn[2].tolist() == [0.0, 0.0, 0.0, 0.0]  # PER row had only agreement


@SETTINGS
@given(corpus())
def test_confusion_margins(data):
    lengths, golds, preds = data
    g, p = to_table(golds), to_table(preds)
    al = align(g, p, n_tasks=len(lengths))
    conf = confusion(g, p, al).counts
    n = len(al.labels)
    cnt = al.counts()
    assert conf[:n, :n].sum() == al.n_pairs
    assert conf[:n, n].sum() == cnt["missed"]
    assert conf[n, :n].sum() == cnt["ghost"]
    # the diagonal holds at least every correct span
    assert np.trace(conf[:n, :n]) >= cnt["correct"]
    dist = error_distribution(g, p, al)
    assert dist.counts.sum(axis=0).tolist() == [cnt[k] for k in dist.kinds]


def test_top_confusions():
    m = np.array([[9, 4, 1], [4, 7, 0], [2, 0, 0]])
    labels = ["A", "B", "none"]
    assert top_confusions(m, labels, 3) == [("A", "B", 4), ("B", "A", 4), ("none", "A", 2)]
    assert top_confusions(m, labels, 0) == []
    assert len(top_confusions(m, labels, 100)) == 4  # zeros left out
    with pytest.raises(ValueError, match="need 3 labels"):
        top_confusions(m, ["A"], 2)
    conf = confusion(table([[(0, 2, "A")]]), table([[(0, 2, "B")]]))
    assert top_confusions(conf, k=5) == [("A", "B", 1)]


def test_error_distribution_per_class():
    gold = table([[(0, 5, "PER"), (6, 9, "LOC"), (10, 12, "LOC")]])
    pred = table([[(0, 5, "LOC"), (6, 8, "LOC"), (20, 21, "PER")]])
    d = error_distribution(gold, pred).to_dict()
    assert d["PER"] == {"correct": 0, "wrong_tag": 1, "span_shift": 0, "missed": 0, "ghost": 1}
    assert d["LOC"] == {"correct": 0, "wrong_tag": 0, "span_shift": 1, "missed": 1, "ghost": 0}


def test_sample_count():
    sc = sample_count(table([[(0, 1, "A"), (2, 3, "A"), (4, 5, "B")], [], [(0, 1, "A")]]))
    assert sc.to_dict() == {"A": {"spans": 3, "tasks": 2}, "B": {"spans": 1, "tasks": 1}}
    empty = sample_count(table([[]], ["A"]))
    assert empty.to_dict() == {"A": {"spans": 0, "tasks": 0}}
