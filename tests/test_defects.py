"""The defects found by running seqeval's, conlleval's and nervaluate's cases against the CLI,
and the contracts of the restructure (one scheme-aware tag set, one meta schema, one columnar
probability format, one corpus per input)."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from analysis.corpus import Corpus
from analysis.dep import compute_dep
from analysis.exceptions import DataError
from analysis.formats import parse_conll, read_conll
from analysis.formats.label_config import as_label_config
from analysis.labelstudio import fields as lsf
from analysis.probs import ModelOutput, load_output, load_probs, save_output
from analysis.tags import TagSet

REPO = Path(__file__).resolve().parents[1]
CONLL = "EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n\nPeter\tB-PER\nBlackburn\tI-PER\n\n" \
        "New\tB-LOC\nYork\tI-LOC\nand\tO\nParis\tB-LOC\n"
CONFIG = """<View><Text name="text" value="$text"/><Labels name="label" toName="text">
<Label value="PER"/><Label value="ORG"/><Label value="LOC"/><Label value="MISC"/></Labels></View>"""


def cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "ls_backend.cli", *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=300)


def iob1_tags(gold_iob2: list[str]) -> list[str]:
    """The same spans in IOB1: a span starts with I- unless it follows a span of its type."""
    out, prev = [], "O"
    for t in gold_iob2:
        if t.startswith("B-") and not (prev != "O" and prev[2:] == t[2:]):
            out.append("I-" + t[2:])
        else:
            out.append(t)
        prev = t
    return out


# ------------------------------------------------------------------ the tag scheme is carried


def _agreeing_output(corpus: Corpus, scheme: str) -> tuple[ModelOutput, list[str]]:
    """Peaked probabilities whose argmax is the gold tagging, written in ``scheme``."""
    tags = ("O", "I-LOC", "I-MISC", "I-ORG", "I-PER", "B-LOC", "B-MISC", "B-ORG", "B-PER")
    iob2 = corpus.gold_tags(TagSet(tags, "iob2"))
    names = [tags[i] for i in iob2.tolist()]
    per_task = []
    for a, b in zip(corpus.token_offsets[:-1].tolist(), corpus.token_offsets[1:].tolist()):
        per_task.extend(iob1_tags(names[a:b]) if scheme == "iob1" else names[a:b])
    probs = np.full((len(per_task), len(tags)), 0.02 / (len(tags) - 1), dtype=np.float32)
    probs[np.arange(len(per_task)), [tags.index(t) for t in per_task]] = 0.98
    return ModelOutput(probs, corpus.token_offsets.copy(), np.ones(corpus.n_tasks, bool),
                       TagSet(tags, scheme)), per_task


def agreeing_request(scheme: str) -> tuple[list[dict[str, Any]], Any, ModelOutput, list[Any], Any]:
    """The CONLL tasks as a backend request (ids 100, 101, ...), read by ``prepare_tasks``, with
    runtime-like predictions of a ``scheme`` model that agrees with gold."""
    from analysis.formats import to_ls_tasks
    from ls_backend.service.scoring import prepare_tasks

    tasks = to_ls_tasks(parse_conll(CONLL))
    for i, t in enumerate(tasks):
        t["id"] = 100 + i
    prepared = prepare_tasks(tasks, as_label_config(CONFIG), max_text_chars=10_000)
    out, _ = _agreeing_output(prepared.dataset.corpus, scheme)
    preds = [types.SimpleNamespace(probs=p, entropy=0.05, score=0.98, extra_embeddings=None)
             for p in out.per_task()]
    model = types.SimpleNamespace(tags=out.tagset.tags, scheme=scheme)
    return tasks, prepared, out, preds, model


def test_an_iob1_model_that_agrees_with_gold_gets_low_dep() -> None:
    corpus = parse_conll(CONLL).corpus
    out, tags = _agreeing_output(corpus, "iob1")
    assert "I-ORG" in tags and "B-LOC" not in tags[:1]  # really written in IOB1
    dep = compute_dep(corpus, out, scorer="signals")
    assert float(np.nanmax(dep.task_dep)) < 0.3
    assert not dep.task_errors[:, 1:].any()  # every gold span matched exactly
    # read as IOB2 the same columns disagree: this is what dropping the scheme cost
    wrong = compute_dep(corpus, out.with_tagset(TagSet(out.tagset.tags, "iob2")),
                        scorer="signals")
    assert float(np.nanmax(wrong.task_dep)) > 0.5


def test_live_scoring_passes_the_models_scheme() -> None:
    """The backend's scoring step with plain data: an IOB1 model's agreeing prediction."""
    from ls_backend.service.scoring import score_tasks

    tasks, prepared, out, preds, model = agreeing_request("iob1")
    written = score_tasks(prepared, preds, model=model, version="v1", index=None,
                          similar_k=0).overlays
    deps = [w["data"][lsf.DEP] for w in written.values()]
    assert len(deps) == len(tasks) and max(deps) < 0.3
    metas = [w["meta"][lsf.META_KEY] for w in written.values()]
    assert all(m["errors"]["wrong_tag"] == 0 and m["errors"]["missed"] == 0 for m in metas)


# ------------------------------------------------------------------ one meta schema


def test_push_and_live_scoring_write_the_same_meta_keys() -> None:
    from analysis.labelstudio.push import plan_push
    from analysis.review import analyze_dataset
    from ls_backend.service.scoring import score_tasks

    tasks, prepared, out, preds, model = agreeing_request("iob2")
    live = score_tasks(prepared, preds, model=model, version="v1", index=None,
                       similar_k=0).overlays
    res = analyze_dataset(prepared.dataset, probs=out)
    plan = plan_push(res, model_version="v1", dataset=prepared.dataset)
    pushed = [u.meta for u in plan.updates]
    assert pushed and live
    keys = {frozenset(m) for m in pushed} | {frozenset(w["meta"][lsf.META_KEY])
                                             for w in live.values()}
    assert keys == {frozenset(lsf.META_FIELDS)}
    assert {m["schema"] for m in pushed} == {lsf.META_SCHEMA}
    assert {m["source"] for m in pushed} == {"push"}
    assert {w["meta"][lsf.META_KEY]["source"] for w in live.values()} == {"backend"}


# ------------------------------------------------------------------ CoNLL defects


def test_one_scheme_for_gold_and_predictions(tmp_path: Path) -> None:
    """IOB2 gold, predictions ``I-ORG O I-MISC O``: strict IOB2 of the pair, F1 0 (seqeval)."""
    gold = tmp_path / "gold.conll"
    pred = tmp_path / "pred.conll"
    gold.write_text("EU\tB-ORG\nrejects\tO\nGerman\tB-MISC\ncall\tO\n", encoding="utf-8")
    pred.write_text("EU\tI-ORG\nrejects\tO\nGerman\tI-MISC\ncall\tO\n", encoding="utf-8")
    p = cli("evaluate", "--gold", str(gold), "--pred", str(pred), "--json")
    assert p.returncode == 2, p.stdout + p.stderr
    assert "iob2" in p.stderr.lower() and "invalid" in p.stderr.lower()
    assert "gold alone reads as IOB2, pred alone reads as IOB1" in p.stderr  # says so
    p = cli("evaluate", "--gold", str(gold), "--pred", str(pred), "--json", "--lenient",
            "--max-repair-rate", "1")
    assert p.returncode == 0, p.stderr
    out = json.loads(p.stdout)
    assert out["scheme"] == {"name": "iob2", "detected": True,
                             "per_file": {"gold": "iob2", "pred": "iob1"}}
    assert out["report"]["micro avg"]["f1-score"] == pytest.approx(1.0)  # repaired: begin
    assert out["repairs"]["pred"]["counts"] == {"tag_repair": 2}


def test_trailing_whitespace_in_a_tag_is_stripped_and_reported() -> None:
    ds = parse_conll("EU\tB-ORG \nrejects\tO\n", strict=False)
    assert ds.labels == ("ORG",)
    kinds = [p.kind for p in ds.problems.items]
    assert kinds == ["tag_whitespace"]
    assert "'B-ORG'" in ds.problems.items[0].message


def test_lenient_with_unparseable_tags_fails_over_the_repair_rate(tmp_path: Path) -> None:
    gold = tmp_path / "gold.conll"
    pred = tmp_path / "pred.conll"
    gold.write_text("Peter\tB-PER\nlives\tO\nhere\tO\n", encoding="utf-8")
    pred.write_text("Peter\tB_PER\nlives\tO\nhere\tPER-B\n", encoding="utf-8")
    p = cli("evaluate", "--gold", str(gold), "--pred", str(pred), "--lenient", "--json")
    assert p.returncode == 2
    assert "repair" in p.stderr and "max-repair-rate" in p.stderr
    p = cli("evaluate", "--gold", str(gold), "--pred", str(pred), "--lenient", "--json",
            "--max-repair-rate", "1.0")
    assert p.returncode == 0, p.stderr
    rep = json.loads(p.stdout)["repairs"]["pred"]
    assert rep["counts"] == {"tag_repair": 2} and rep["rate"] == pytest.approx(1.0)


def test_text_and_paths_are_separate() -> None:
    with pytest.raises(DataError, match="is a directory"):
        read_conll("")
    with pytest.raises(FileNotFoundError):
        read_conll("EU B-ORG")
    assert parse_conll("EU B-ORG\n").labels == ("ORG",)
    with pytest.raises(TypeError, match="read_conll"):
        parse_conll(Path("x.conll"))  # type: ignore[arg-type]
    with pytest.raises(DataError, match="empty"):
        parse_conll("  \n")


def test_directory_and_deeply_nested_json_are_one_line_errors(tmp_path: Path) -> None:
    p = cli("analyze", "--data", str(tmp_path))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "directory" in p.stderr
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000, encoding="utf-8")
    p = cli("analyze", "--data", str(deep))
    assert p.returncode == 2 and p.stderr.count("\n") == 1 and "nested too deeply" in p.stderr
    assert "Traceback" not in p.stderr


# ------------------------------------------------------------------ columnar probabilities


def test_columnar_probabilities_round_trip_memory_mapped(tmp_path: Path) -> None:
    corpus = parse_conll(CONLL).corpus
    full, _ = _agreeing_output(corpus, "iob1")
    per_task: list[Any] = list(full.per_task())
    per_task[1] = None  # a task without probabilities
    out = ModelOutput.from_arrays(per_task, full.tagset)
    has = np.array([p is not None for p in per_task])
    path = tmp_path / "p.npz"
    save_output(path, out)
    back = load_output(path)
    assert back.tagset == out.tagset and back.tagset.scheme == "iob1"
    assert np.array_equal(back.has, has) and np.array_equal(back.offsets, out.offsets)
    assert np.array_equal(np.asarray(back.probs), out.probs)
    assert isinstance(back.probs, np.memmap)  # read lazily, not copied


def test_old_per_task_format_reads_in_one_pass(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = [rng.dirichlet(np.ones(5), size=n).astype(np.float32) for n in (3, 1, 4, 2)]
    path = tmp_path / "old.npz"
    np.savez(path, *arrays)
    got = load_probs(str(path))
    assert len(got) == 4 and all(np.array_equal(a, b) for a, b in zip(got, arrays))
    out = load_output(path)
    assert out.legacy and out.tagset is None  # the tag order must come from the user
    assert np.array_equal(out.offsets, [0, 3, 4, 8, 10])


# ------------------------------------------------------------------ one corpus per input


def test_conll_corpus_equals_the_corpus_of_its_tasks() -> None:
    ds = parse_conll(CONLL + "\n-DOCSTART- -X- O O\n\nU.S.\tB-LOC\nsaid\tO\n")
    fast = ds.corpus
    slow = Corpus.from_tasks(list(ds.tasks), ds.labels)
    assert list(fast.texts) == list(slow.texts) and fast.labels == slow.labels
    for f in ("token_offsets", "token_start", "token_end", "tokens", "annotated"):
        assert np.array_equal(getattr(fast, f), getattr(slow, f)), f
    for f in ("task", "start", "end", "label"):
        assert np.array_equal(getattr(fast.gold.chars, f), getattr(slow.gold.chars, f)), f
    assert np.array_equal(fast.lower_codes, slow.lower_codes)
    assert np.array_equal(fast.capitalized, slow.capitalized)
