"""Build the bundled sample dataset (written for ner-quality; no third-party corpus).

Sentences come from hand-written templates filled with invented names, places and
organisations; about 10 % of the tasks get one planted annotation error of a known kind:

``wrong_tag``   an entity annotated with the wrong type (e.g. a city marked ORG)
``span_shift``  an entity annotated with wrong boundaries (one token too many or too few)
``missed``      an entity left unannotated (the model should find it: a *ghost* prediction)
``extra``       a non-entity word annotated as an entity (the model should not: *missed*)

plus a few malformed spans (trailing punctuation), near-duplicate tasks, a second annotator
with a higher error rate, and ``data.split`` (train / validation / test).

Overlap for agreement: every sixth task (``i % 6 == 3``) is also labelled by a careful third
annotator (kim, the true spans), and half of those by a fourth (lee, the true spans but one
wrong tag on every fourth of lee's tasks).  The extra annotations are listed *before* the
primary one, so the primary stays the task's latest annotation (the one DEP scores).

``python -m ls_backend.sample_data.make_sample`` rewrites ``sample_tasks.json``,
``planted.json`` and ``label_config.xml`` beside this file (deterministic, seed 0).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
LABELS = ("PER", "LOC", "ORG")

PER = ["Mara Lindqvist", "Tomas Okafor", "Ines Barrow", "Kenji Almeida", "Priya Castell",
       "Oskar Venn", "Leona Marsh", "Dmitri Sallow", "Ada Quill", "Rafael Dunmore",
       "Hana Torvik", "Silas Brandt", "Yara Ellison", "Jonah Pryce", "Elsa Nyberg", "Mateo Ruiz"]
LOC = ["Port Avalon", "Kestrel Bay", "Marrowfield", "Dunhollow", "Lake Oriel", "Varnholm",
       "New Tessaly", "Brightwater", "Castellane", "Old Mirren", "Eastmoor", "Saltreach"]
ORG = ["Helix Dynamics", "Northwind Bank", "Avalon Rail", "Quillon Labs", "Brandt & Sons",
       "Meridian Health", "Copperline Media", "Tessaly University", "Orbis Foods", "Vantage Air"]
TEMPLATES = [
    "{PER} joined {ORG} last spring .",
    "{PER} flew from {LOC} to {LOC} on Monday .",
    "{ORG} opened a new office in {LOC} .",
    "Shares of {ORG} rose after {PER} spoke in {LOC} .",
    "The mayor of {LOC} , {PER} , met officials from {ORG} .",
    "{PER} and {PER} founded {ORG} in {LOC} .",
    "A storm closed the harbour at {LOC} for two days .",
    "{ORG} hired {PER} as chief engineer .",
    "Fans in {LOC} cheered for {PER} .",
    "{PER} said {ORG} would expand to {LOC} next year .",
    "Officials at {ORG} declined to comment .",
    "The festival in {LOC} drew record crowds .",
]
OPENERS = ["", "On Tuesday ,", "According to local reports ,", "Late last night ,", "In a surprise move ,",
           "Earlier this week ,", "As expected ,", "For the first time ,", "Sources say", "Meanwhile ,",
           "After months of talks ,", "Yesterday ,"]
CLOSERS = ["", "despite heavy rain", "amid growing interest", "according to a statement",
           "as markets closed", "after a long delay", "with little warning", "to mixed reviews",
           "for the third time", "before dawn", "under tight security"]
NON_ENTITIES = ["office", "harbour", "festival", "Monday", "engineer", "crowds", "storm"]


def _fill(template: str, rng: random.Random) -> tuple[list[str], list[tuple[int, int, str]]]:
    """Tokens and token spans ``(start, end, label)`` (half-open) of one sentence."""
    toks: list[str] = []
    spans: list[tuple[int, int, str]] = []
    pools = {"PER": PER, "LOC": LOC, "ORG": ORG}
    for part in template.split(" "):
        if part.startswith("{") and part.endswith("}"):
            lab = part[1:-1]
            words = rng.choice(pools[lab]).split(" ")
            spans.append((len(toks), len(toks) + len(words), lab))
            toks.extend(words)
        else:
            toks.append(part)
    return toks, spans


def _char_spans(toks: list[str], spans: list[tuple[int, int, str]]) -> list[tuple[int, int, str]]:
    starts, pos = [], 0
    for t in toks:
        starts.append(pos)
        pos += len(t) + 1
    return [(starts[s], starts[e - 1] + len(toks[e - 1]), lab) for s, e, lab in spans]


def _region(i: int, text: str, s: int, e: int, lab: str) -> dict[str, Any]:
    return {"id": f"r{i}", "from_name": "label", "to_name": "text", "type": "labels",
            "value": {"start": s, "end": e, "text": text[s:e], "labels": [lab]}}


def build(n: int = 320, seed: int = 0) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Tasks (Label Studio import format; the primary annotation last) and the planted errors."""
    rng = random.Random(seed)
    tasks: list[dict[str, Any]] = []
    planted: dict[str, Any] = {"wrong_tag": [], "span_shift": [], "missed": [], "extra": [],
                               "bad_edge": [], "duplicate_of": {}, "sloppy_annotator": "sam@example.com"}
    kinds = ["wrong_tag", "span_shift", "missed", "extra"]
    truth: list[list[tuple[int, int, str]]] = []
    for i in range(n):
        tpl = TEMPLATES[i % len(TEMPLATES)]
        opener, closer = rng.choice(OPENERS), rng.choice(CLOSERS)
        if closer:
            tpl = tpl[:-2] + " " + closer + " ."
        if opener:
            tpl = opener + " " + tpl[0].lower() + tpl[1:] if tpl[0] != "{" else opener + " " + tpl
        toks, spans = _fill(tpl, rng)
        kind = None
        if i % 10 == 3 and spans:
            kind = kinds[(i // 10) % 4]
        elif i % 10 == 3:
            kind = "extra"
        ann = list(spans)
        if kind == "wrong_tag":
            j = rng.randrange(len(ann))
            s, e, lab = ann[j]
            ann[j] = (s, e, rng.choice([x for x in LABELS if x != lab]))
        elif kind == "span_shift":
            j = rng.randrange(len(ann))
            s, e, lab = ann[j]
            if e - s > 1:
                ann[j] = (s, e - 1, lab)  # drops the last word of a two-word name
            else:
                ann[j] = (s, min(e + 1, len(toks)), lab)
            # keep spans non-overlapping
            if j + 1 < len(ann) and ann[j][1] > ann[j + 1][0]:
                ann[j] = (s, ann[j + 1][0], lab)
        elif kind == "missed":
            ann.pop(rng.randrange(len(ann)))
        elif kind == "extra":
            cands = [k for k, t in enumerate(toks) if (t in NON_ENTITIES or
                     (t.islower() and len(t) > 4)) and not any(s <= k < e for s, e, _ in ann)]
            if cands:
                k = rng.choice(cands)
                ann = sorted(ann + [(k, k + 1, rng.choice(LABELS))])
            else:
                kind = None
        if kind is not None:
            planted[kind].append(i)
        text = " ".join(toks)
        truth.append(_char_spans(toks, spans))
        cs = _char_spans(toks, ann)
        if i % 11 == 7 and cs and kind is None and len(planted["bad_edge"]) < 6:
            # malformed: a span swallows the following " ," / " ." token
            for j, (s, e, lab) in enumerate(cs):
                nxt = cs[j + 1][0] if j + 1 < len(cs) else len(text) + 1
                if text[e:e + 2] in (" ,", " .") and e + 2 <= nxt:
                    cs[j] = (s, e + 2, lab)
                    planted["bad_edge"].append(i)
                    break
        split = "train" if i % 5 < 3 else ("validation" if i % 5 == 3 else "test")
        annotator = "sam@example.com" if i % 4 == 1 else "alex@example.com"
        result = [_region(k, text, s, e, lab) for k, (s, e, lab) in enumerate(cs)]
        tasks.append({
            "data": {"text": text, "split": split},
            "annotations": [{"result": result, "completed_by_email": annotator,
                             "ground_truth": False}],
            "meta": {"annotator": annotator, "sample_index": i},
        })
    # the sloppy annotator "sam": extra label flips on a third of sam's clean tasks
    for i, t in enumerate(tasks):
        res = t["annotations"][0]["result"]
        clean = not any(i in v for k, v in planted.items() if isinstance(v, list))
        if t["meta"]["annotator"] == "sam@example.com" and clean and res and i % 3 == 0:
            r = res[0]["value"]
            r["labels"] = [rng.choice([x for x in LABELS if x != r["labels"][0]])]
            planted["wrong_tag"].append(i)
    _second_opinions(tasks, truth, planted, random.Random(seed + 1))
    # near duplicates: copy a few texts with a small change
    for src in (5, 17, 29):
        t = json.loads(json.dumps(tasks[src]))
        t["data"]["text"] = t["data"]["text"].replace(" .", " !") if " ." in t["data"]["text"] \
            else t["data"]["text"] + " !"
        t["meta"]["sample_index"] = len(tasks)
        planted["duplicate_of"][str(len(tasks))] = src
        tasks.append(t)
    for v in planted.values():
        if isinstance(v, list):
            v.sort()
    return tasks, planted


def _second_opinions(tasks: list[dict[str, Any]], truth: list[list[tuple[int, int, str]]],
                     planted: dict[str, Any], rng: random.Random) -> None:
    """Extra annotations by kim (careful) and lee (one wrong tag in four tasks), see above."""
    extra: dict[str, list[int]] = {"kim@example.com": [], "lee@example.com": []}
    lee_errors: list[int] = []
    for i, t in enumerate(tasks):
        if i % 6 != 3:
            continue
        text = t["data"]["text"]
        anns = []
        for who in ("kim@example.com", "lee@example.com"):
            if who == "lee@example.com" and i % 12 != 3:
                continue
            cs = list(truth[i])
            if who == "lee@example.com" and cs and len(extra[who]) % 4 == 1:
                s, e, lab = cs[0]
                cs[0] = (s, e, rng.choice([x for x in LABELS if x != lab]))
                lee_errors.append(i)
            anns.append({"result": [_region(k, text, s, e, lab) for k, (s, e, lab) in
                                    enumerate(cs)], "completed_by_email": who,
                         "ground_truth": False})
            extra[who].append(i)
        t["annotations"] = anns + t["annotations"]
    planted["second_opinions"] = extra
    planted["second_opinion_errors"] = lee_errors


def label_config_xml() -> str:
    colours = {"PER": "#e15759", "LOC": "#4e79a7", "ORG": "#59a14f"}
    labs = "\n".join(f'    <Label value="{lab}" background="{colours[lab]}"/>' for lab in LABELS)
    return (
        "<View>\n  <Labels name=\"label\" toName=\"text\">\n" + labs +
        "\n  </Labels>\n  <Text name=\"text\" value=\"$text\"/>\n</View>\n"
    )


def main() -> None:
    tasks, planted = build()
    (HERE / "sample_tasks.json").write_text(json.dumps(tasks, indent=0, ensure_ascii=False) + "\n")
    (HERE / "planted.json").write_text(json.dumps(planted, indent=1) + "\n")
    (HERE / "label_config.xml").write_text(label_config_xml())
    print(f"wrote {len(tasks)} tasks; planted: "
          + ", ".join(f"{k}={len(v)}" for k, v in planted.items() if isinstance(v, (list, dict))))


if __name__ == "__main__":
    main()
