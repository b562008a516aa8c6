"""Annotator agreement (analysis.agreement): hand-computed cases, the rules of the module
docstring one by one, and two independent references on random multi-annotator data (seqeval
for span F1, a textbook coincidence-matrix Krippendorff's alpha)."""

from __future__ import annotations

import math
import random
from collections import Counter
from itertools import combinations

import numpy as np
import pytest

from analysis.agreement import agreement, consensus, make_annotation_set, pair_counts
from analysis.formats import from_ls_tasks
from analysis.spans import Span, tokenize

CFG = ('<View><Labels name="label" toName="text"><Label value="PER"/><Label value="ORG"/>'
       '<Label value="LOC"/></Labels><Text name="text" value="$text"/></View>')
TEXT = "Obama met Biden in Paris ."


def reg(s: int, e: int, lab: str, text: str = TEXT) -> dict:
    return {"from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": s, "end": e, "text": text[s:e], "labels": [lab]}}


def ann(uid: int, regions: list[dict], **kw) -> dict:
    return {"id": 100 + uid + 10 * len(regions), "completed_by": {"id": uid, "email": f"u{uid}@example.com"},
            "result": regions, **kw}


def three_annotators() -> list[dict]:
    """Task 1: u1 {PER Obama, PER Biden}; u2 {PER 'Obama ' (trailing space), ORG Biden, LOC
    Paris}; u3 {PER Obama, PER Biden, LOC Paris}.  Task 2: one annotator only."""
    return [
        {"id": 1, "data": {"text": TEXT}, "annotations": [
            ann(1, [reg(0, 5, "PER"), reg(10, 15, "PER")]),
            ann(2, [reg(0, 6, "PER"), reg(10, 15, "ORG"), reg(19, 24, "LOC")]),
            ann(3, [reg(0, 5, "PER"), reg(10, 15, "PER"), reg(19, 24, "LOC")])]},
        {"id": 2, "data": {"text": TEXT}, "annotations": [ann(1, [])]},
    ]


def test_hand_computed_three_annotators():
    ds = from_ls_tasks(three_annotators(), label_config=CFG)
    assert [s.task_id for s in ds.annotation_sets] == [1]  # task 2 has one annotator
    ag = agreement(ds.annotation_sets, ds.labels)
    # pairs: u1-u2 share PER Obama (the trailing space is trimmed): 2*1/(2+3) = 0.4;
    # u1-u3 share both PERs: 2*2/(2+3) = 0.8; u2-u3 share PER Obama and LOC: 2*2/6
    assert ag.pairs[("u1@example.com", "u2@example.com")].f1_exact == pytest.approx(0.4)
    assert ag.pairs[("u1@example.com", "u3@example.com")].f1_exact == pytest.approx(0.8)
    assert ag.pairs[("u2@example.com", "u3@example.com")].f1_exact == pytest.approx(2 / 3)
    assert ag.overall.f1_exact == pytest.approx(2 * 5 / (7 + 9))
    assert ag.task_agreement.tolist() == pytest.approx([(0.4 + 0.8 + 2 / 3) / 3])
    assert ag.per_label["ORG"].f1_exact == 0.0
    assert ag.per_label["LOC"].f1_exact == pytest.approx(2 * 1 / (1 + 3))
    # majority vote: PER Obama (3), PER Biden (2 of 3), LOC Paris (2 of 3); ORG Biden (1) out
    assert ag.task_consensus[0].spans == (Span(0, 5, "PER"), Span(10, 15, "PER"),
                                          Span(19, 24, "LOC"))
    assert ag.task_consensus[0].ties == ()
    # tokens Obama met Biden in Paris . -> u1 PER O PER O O O, u2 PER O ORG O LOC O,
    # u3 PER O PER O LOC O.  Coincidences: o(PER,PER)=4, o(O,O)=9, o(LOC,LOC)=1,
    # o(PER,ORG)=o(ORG,PER)=1, o(O,LOC)=o(LOC,O)=1; n_c: PER 5, ORG 1, O 10, LOC 2; n = 18.
    # alpha = 1 - (n-1) * 4 / (n^2 - sum n_c^2) = 1 - 17*4/194
    assert ag.alpha == pytest.approx(1 - 17 * 4 / 194)
    # leave-one-out consensus: for u3 the others (u1, u2) agree on PER Obama only, the rest are
    # ties and left out -> u3's kept spans {PER Obama} vs {PER Obama}: F1 1, error rate 0
    u3 = ag.per_annotator["u3@example.com"]
    assert u3.consensus_tasks == 1 and u3.error_rate == 0.0
    # for u2 the others (u1, u3) agree on both PERs, LOC Paris is their tie: u2's kept spans
    # {PER Obama, ORG Biden} vs {PER Obama, PER Biden}: 2*1/(2+2)
    u2 = ag.per_annotator["u2@example.com"]
    assert u2.vs_consensus.f1_exact == pytest.approx(0.5) and u2.error_rate == pytest.approx(0.5)


def test_exact_and_overlap_differ_on_boundaries():
    a = frozenset({Span(0, 5, "PER")})
    b = frozenset({Span(0, 9, "PER")})
    c = pair_counts(a, b)
    assert c.f1_exact == 0.0 and c.f1_overlap == 1.0
    # touching half-open ranges do not overlap
    assert pair_counts(frozenset({Span(0, 5, "PER")}),
                       frozenset({Span(5, 9, "PER")})).f1_overlap == 0.0
    # overlap needs the same label
    assert pair_counts(a, frozenset({Span(0, 9, "ORG")})).f1_overlap == 0.0
    assert math.isnan(pair_counts(frozenset(), frozenset()).f1_exact)


def test_whitespace_rule_and_blank_spans():
    text = "  Ada  Quill  met"  # Ada [2, 5), Quill [7, 12), met [14, 17)
    tt = tokenize(text)
    s = make_annotation_set(1, "task 1", text, tt, {
        "a": [Span(0, 14, "PER")], "b": [Span(2, 12, "PER"), Span(12, 14, "ORG")]})
    assert s.spans[0] == s.spans[1] == frozenset({Span(2, 12, "PER")})
    assert s.blank_spans == 1
    assert agreement([s], ["PER", "ORG"]).task_agreement.tolist() == [1.0]
    # punctuation is not trimmed: a different span
    t2 = "Obama, met"
    s2 = make_annotation_set(2, "task 2", t2, tokenize(t2),
                             {"a": [Span(0, 6, "PER")], "b": [Span(0, 5, "PER")]})
    assert agreement([s2], ["PER"]).task_agreement.tolist() == [0.0]


def test_overlapping_labels_are_kept_and_get_their_own_token_value():
    text = "Bank of Paris opened"
    # annotator a nests a LOC inside an ORG (Label Studio allows overlapping regions)
    tasks = [{"id": 5, "data": {"text": text}, "annotations": [
        ann(1, [reg(0, 13, "ORG", text), reg(8, 13, "LOC", text)]),
        ann(2, [reg(0, 13, "ORG", text)]), ann(3, [reg(0, 13, "ORG", text),
                                                   reg(8, 13, "LOC", text)])]}]
    with pytest.warns(UserWarning):
        ds = from_ls_tasks(tasks, label_config=CFG, strict=False)
    s = ds.annotation_sets[0]
    assert len(s.spans[0]) == 2  # the overlapping pair survives for agreement
    ag = agreement(ds.annotation_sets, ds.labels)
    assert ag.per_label["ORG"].f1_exact == 1.0
    # LOC: u1-u3 agree (1 of 1+1), u1-u2 and u2-u3 have one LOC against none: 2*1/(2+2)
    assert ag.per_label["LOC"].f1_exact == pytest.approx(0.5)
    assert ag.task_consensus[0].spans == (Span(0, 13, "ORG"), Span(8, 13, "LOC"))
    # "Paris" is LOC+ORG for u1/u3 and ORG for u2: a disagreement on that token only
    assert ag.alpha < 1.0
    assert ag.alpha_per_label["ORG"] == 1.0 and ag.alpha_per_label["LOC"] < 1.0
    assert math.isnan(ag.alpha_per_label["PER"])  # nobody marked PER: one value only


def test_ties_are_flagged_not_kept():
    c = consensus([frozenset({Span(0, 3, "PER")}), frozenset({Span(0, 3, "ORG")})])
    assert c.spans == () and c.ties == (Span(0, 3, "ORG"), Span(0, 3, "PER"))
    c4 = consensus([frozenset({Span(0, 3, "PER")})] * 3 + [frozenset()])
    assert c4.spans == (Span(0, 3, "PER"),) and c4.ties == ()


def test_one_vote_per_annotator_cancelled_skipped():
    t = {"id": 9, "data": {"text": TEXT}, "annotations": [
        {**ann(1, [reg(0, 5, "ORG")]), "updated_at": "2026-01-01T00:00:00Z"},
        {**ann(1, [reg(0, 5, "PER")]), "id": 500, "updated_at": "2026-02-01T00:00:00Z"},
        ann(2, [reg(0, 5, "PER")]),
        {**ann(3, [reg(0, 5, "LOC")]), "was_cancelled": True}]}
    ds = from_ls_tasks([t], label_config=CFG)
    s = ds.annotation_sets[0]
    assert s.annotators == ("u1@example.com", "u2@example.com")
    assert s.spans[0] == frozenset({Span(0, 5, "PER")})  # u1's latest annotation
    assert agreement(ds.annotation_sets, ds.labels).task_agreement.tolist() == [1.0]


def test_invalid_region_reported_not_fatal():
    t = three_annotators()[0]
    t["annotations"][1]["result"].append(reg(0, 5, "MISC"))  # not in the config
    ds = from_ls_tasks([t], label_config=CFG, strict=False)
    bad = [p for p in ds.problems.items if p.which == "agreement"]
    assert len(bad) == 1 and "task 1" in bad[0].message and "MISC" in bad[0].message
    assert Span(0, 5, "MISC") not in ds.annotation_sets[0].spans[1]


def test_float_offsets_in_a_second_opinion_cost_that_region_only():
    # the gold reader refuses a whole task whose chosen annotation has float offsets; a second
    # opinion's bad region is left out of agreement (reported), even when reading strictly
    t = three_annotators()[0]
    bad_reg = reg(19, 24, "LOC")
    bad_reg["value"]["start"] = 19.0
    t["annotations"][0]["result"].append(bad_reg)  # u1's; u3's (the latest) is the gold
    for strict in (False, True):
        ds = from_ls_tasks([t], label_config=CFG, strict=strict)
        assert len(ds) == 1 and ds.annotation_sets[0].annotators == ("u1@example.com",
                                                                     "u2@example.com",
                                                                     "u3@example.com")
        bad = [p for p in ds.problems.items if p.which == "agreement"]
        assert len(bad) == 1 and "non-integer offsets" in bad[0].message
        assert "u1@example.com" in bad[0].message and "task 1" in bad[0].message
        assert {(s.start, s.end) for s in ds.annotation_sets[0].spans[0]} == {(0, 5), (10, 15)}


# ----------------------------------------------------------------- random data vs references

WORDS = ["Ada", "met", "Bo", "in", "Rome", "and", "the", "bank", "of", "Oslo", ","]
LABELS = ("PER", "ORG", "LOC")


def _random_tags(rng: random.Random, n: int) -> list[str]:
    tags, i = ["O"] * n, 0
    while i < n:
        if rng.random() < 0.3:
            k = rng.randint(1, min(3, n - i))
            lab = rng.choice(LABELS)
            tags[i] = f"B-{lab}"
            for j in range(i + 1, i + k):
                tags[j] = f"I-{lab}"
            i += k + 1
        else:
            i += 1
    return tags


def _regions(tokens: list[str], tags: list[str], text: str) -> list[dict]:
    starts, pos = [], 0
    for t in tokens:
        starts.append(pos)
        pos += len(t) + 1
    out, i = [], 0
    while i < len(tags):
        if tags[i].startswith("B-"):
            j = i + 1
            while j < len(tags) and tags[j] == "I-" + tags[i][2:]:
                j += 1
            out.append(reg(starts[i], starts[j - 1] + len(tokens[j - 1]), tags[i][2:], text))
            i = j
        else:
            i += 1
    return out


def _random_project(seed: int):
    rng = random.Random(seed)
    annotators = [1, 2, 3, 4, 5]
    tasks, truth = [], []
    for tid in range(1, 41):
        toks = [rng.choice(WORDS) for _ in range(rng.randint(3, 12))]
        text = " ".join(toks)
        who = rng.sample(annotators, rng.randint(2, 4))
        base = _random_tags(rng, len(toks))
        per = {}
        for u in who:  # each annotator copies the base labels with some noise
            per[u] = base if rng.random() < 0.5 else _random_tags(rng, len(toks))
        anns = [ann(u, _regions(toks, per[u], text)) for u in who]
        for a in anns:
            rng.shuffle(a["result"])  # span order must not matter
        rng.shuffle(anns)  # nor annotation order
        tasks.append({"id": tid, "data": {"text": text}, "annotations": anns})
        truth.append((toks, per))
    return tasks, truth


def _ref_alpha(units: list[list[str]]) -> float:
    """Krippendorff's alpha, nominal, from the coincidence matrix (textbook formula)."""
    o: Counter = Counter()
    for vals in units:
        m = len(vals)
        if m < 2:
            continue
        for i, a in enumerate(vals):
            for j, b in enumerate(vals):
                if i != j:
                    o[(a, b)] += 1.0 / (m - 1)
    n_c: Counter = Counter()
    for (a, _b), v in o.items():
        n_c[a] += v
    n = sum(n_c.values())
    d_o = sum(v for (a, b), v in o.items() if a != b)
    d_e = sum(n_c[a] * n_c[b] for a in n_c for b in n_c if a != b)
    return 1.0 - (n - 1) * d_o / d_e


@pytest.mark.parametrize("seed", [0, 1, 2], ids=["seed0", "seed1", "seed2"])
def test_random_projects_match_seqeval_and_reference_alpha(seed):
    from seqeval.metrics import f1_score
    from seqeval.scheme import IOB2

    tasks, truth = _random_project(seed)
    ds = from_ls_tasks(tasks, label_config=CFG, strict=False, warn=False)
    ag = agreement(ds.annotation_sets, ds.labels)
    assert ag.n_tasks == len(tasks)
    ya, yb = [], []
    units: list[list[str]] = []
    per_label_units: dict[str, list[list[str]]] = {lab: [] for lab in LABELS}
    for _toks, per in truth:
        users = sorted(per)
        for u, v in combinations(users, 2):
            ya.append(per[u])
            yb.append(per[v])
        for k in range(len(_toks)):
            vals = [per[u][k][2:] if per[u][k] != "O" else "O" for u in users]
            units.append(vals)
            for lab in LABELS:
                per_label_units[lab].append([str(x == lab) for x in vals])
    assert ag.overall.f1_exact == pytest.approx(f1_score(ya, yb, mode="strict", scheme=IOB2))
    assert ag.alpha == pytest.approx(_ref_alpha(units))
    for lab in LABELS:
        assert ag.alpha_per_label[lab] == pytest.approx(_ref_alpha(per_label_units[lab]))


def test_results_do_not_depend_on_order():
    tasks, _ = _random_project(7)
    a = agreement(from_ls_tasks(tasks, label_config=CFG, warn=False).annotation_sets,
                  ("PER", "ORG", "LOC"))
    rng = random.Random(3)
    for t in tasks:
        rng.shuffle(t["annotations"])
        for x in t["annotations"]:
            rng.shuffle(x["result"])
    tasks.reverse()
    b = agreement(from_ls_tasks(tasks, label_config=CFG, warn=False).annotation_sets,
                  ("PER", "ORG", "LOC"))
    da, db = a.to_dict(), b.to_dict()
    assert da == db
    assert dict(zip(a.task_ids, a.task_agreement.tolist())) == \
        pytest.approx(dict(zip(b.task_ids, b.task_agreement.tolist())))


def test_no_multi_annotated_task():
    ds = from_ls_tasks([three_annotators()[1]], label_config=CFG)
    assert ds.annotation_sets == ()
    ag = agreement((), ds.labels)
    assert ag.n_tasks == 0 and math.isnan(ag.alpha) and ag.notes


def test_alert_and_push_plan_carry_agreement():
    from analysis.labelstudio import fields as lsf
    from analysis.labelstudio.push import plan_push
    from analysis.review.analyze import analyze_dataset

    tasks = three_annotators()
    tasks.append({"id": 3, "data": {"text": TEXT}, "annotations": [
        ann(1, [reg(0, 5, "PER")]), ann(2, [reg(0, 5, "PER")])]})  # full agreement
    ds = from_ls_tasks(tasks, label_config=CFG)
    res = analyze_dataset(ds)
    alert = next(a for a in res.alerts if a.name == "annotators disagree")
    assert alert.task_ids == (1,)
    assert res.to_dict()["metrics"]["agreement"]["tasks"] == 2
    plan = plan_push(res, model_version="v", dataset=ds)
    data = {u.task_id: u.data for u in plan.updates}
    assert data[1][lsf.AGREEMENT] == pytest.approx(round((0.4 + 0.8 + 2 / 3) / 3, 4))
    assert data[3][lsf.AGREEMENT] == 1.0 and lsf.AGREEMENT not in data[2]
    view = next(v for v in plan.views if v.alert == "annotators disagree")
    assert view.title == "Review: annotators disagree" and view.task_ids == (1,)
    assert view.ordering == (f"tasks:data.{lsf.AGREEMENT}",)
    (pred,) = [p for p in plan.predictions if p.model_version == lsf.CONSENSUS_VERSION]
    assert pred.task_id == 1
    assert [(r["value"]["start"], r["value"]["labels"][0]) for r in pred.result] == \
        [(0, "PER"), (10, "PER"), (19, "LOC")]
    assert np.isfinite(pred.score)


def test_agreement_through_real_label_studio_with_several_users(ls_api, ls_project, tmp_path):
    """Annotators as real Label Studio users: the export's ``completed_by`` ids and names are
    read back to the same annotators, and the agreement equals the one of the local input."""
    from analysis.labelstudio.store import TaskStore, sync_project

    tasks, _ = _random_project(11)
    tasks = tasks[:15]
    emails = sorted({a["completed_by"]["email"] for t in tasks for a in t["annotations"]})
    ls_api.ensure_users(emails)
    payload = [{"data": t["data"], "annotations": [
        {"result": a["result"], "completed_by": {"email": a["completed_by"]["email"]}}
        for a in t["annotations"]]} for t in tasks]
    pid = ls_project(CFG, tasks=payload)
    with TaskStore(tmp_path / "store.sqlite3") as st:
        sync_project(ls_api, pid, st, progress=False,
                     project_info={"id": pid, "url": ls_api.url, "label_config": CFG})
        stored = st.tasks()
    assert {a["completed_by"] for t in stored for a in t["annotations"]} != {1}
    remote = agreement(from_ls_tasks(stored, label_config=CFG, warn=False).annotation_sets,
                       LABELS)
    local = agreement(from_ls_tasks(tasks, label_config=CFG, warn=False).annotation_sets, LABELS)
    assert remote.annotators == local.annotators == tuple(emails)
    dr, dl = remote.to_dict(), local.to_dict()
    assert dr == dl
    assert sorted(remote.task_agreement.tolist()) == pytest.approx(
        sorted(local.task_agreement.tolist()))


def test_cli_analyze_from_a_file_reports_agreement(tmp_path):
    """``analyze --data export.json``: the file reader (task by task) keeps every annotation
    of the multi-annotated tasks, so the JSON and the text summary carry the agreement."""
    import io
    import json
    from contextlib import redirect_stdout

    from ls_backend.cli import main

    f = tmp_path / "export.json"
    f.write_text(json.dumps(three_annotators()))
    cfg = tmp_path / "config.xml"
    cfg.write_text(CFG)
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["analyze", "--data", str(f), "--label-config", str(cfg), "--json"]) == 0
    out = json.loads(buf.getvalue())
    ag = out["metrics"]["agreement"]
    assert ag["tasks"] == 1 and ag["overall"]["f1_exact"] == pytest.approx(2 * 5 / 16)
    assert [a["task_ids"] for a in out["alerts"] if a["name"] == "annotators disagree"] == [[1]]
    buf = io.StringIO()
    with redirect_stdout(buf):
        assert main(["analyze", "--data", str(f), "--label-config", str(cfg)]) == 0
    assert "annotator agreement: 1 task(s) with several annotators, span F1 0.625" in \
        buf.getvalue()
