"""Label Studio labeling config parsing, generation, and the ready configs in label_config/."""

from __future__ import annotations

from pathlib import Path

import pytest

from analysis.formats.label_config import (
    LabelConfig,
    as_label_config,
    label_config_xml,
    parse_label_config,
    read_label_config,
)

CONFIGS = Path(__file__).resolve().parents[1] / "label_config"
CONLL_LABELS = ("PER", "ORG", "LOC", "MISC")


@pytest.mark.parametrize("name", ["conll2003.xml", "generic.xml", "dep.xml"])
def test_ready_configs_load(name: str) -> None:
    cfg = read_label_config(CONFIGS / name)
    assert cfg.labels == CONLL_LABELS
    assert (cfg.from_name, cfg.to_name, cfg.value_key) == ("label", "text", "text")


def test_ready_configs_use_only_text_variable() -> None:
    """Label Studio rejects imports whose tasks lack a $field the config uses."""
    import xml.etree.ElementTree as ET

    paths = sorted(CONFIGS.glob("*.xml"))
    assert len(paths) >= 3
    for path in paths:
        root = ET.fromstring(path.read_text(encoding="utf-8"))  # comments are dropped
        variables = {v for el in root.iter() for v in el.attrib.values() if v.startswith("$")}
        assert variables == {"$text"}, path.name


def test_dep_config_has_reviewer_verdict() -> None:
    text = (CONFIGS / "dep.xml").read_text(encoding="utf-8")
    assert '<Choices name="nerq_verdict"' in text
    assert "nerq_dep" in text  # explained to the reviewer


def test_generate_and_parse_roundtrip() -> None:
    xml = label_config_xml(
        ["PER", "A&B", 'say "hi"'], from_name="ner", to_name="doc", value="$body"
    )
    cfg = parse_label_config(xml)
    assert cfg == LabelConfig("ner", "doc", ("PER", "A&B", 'say "hi"'), "body")


def test_alias_maps_to_value() -> None:
    xml = """<View><Labels name="l" toName="t">
      <Label value="Person" alias="PER"/><Label value="LOC"/></Labels>
      <Text name="t" value="$text"/></View>"""
    cfg = parse_label_config(xml)
    assert cfg.labels == ("Person", "LOC")
    assert cfg.canonical("PER") == "Person" and cfg.canonical("LOC") == "LOC"


def test_nested_view_and_extra_controls() -> None:
    xml = """<View><View style="x"><Header value="hi"/>
      <Labels name="label" toName="text"><Label value="A"/></Labels></View>
      <Text name="text" value="$text"/>
      <Choices name="c" toName="text"><Choice value="ok"/></Choices></View>"""
    assert parse_label_config(xml).labels == ("A",)


TWO_BLOCKS = """<View>
  <Labels name="ner" toName="text"><Label value="PER"/></Labels>
  <Labels name="ner2" toName="text"><Label value="X"/></Labels>
  <Text name="text" value="$text"/></View>"""


def test_several_labels_blocks_need_a_choice() -> None:
    with pytest.raises(ValueError, match=r"2 <Labels> blocks \['ner', 'ner2'\]"):
        parse_label_config(TWO_BLOCKS)
    assert parse_label_config(TWO_BLOCKS, from_name="ner2").labels == ("X",)
    with pytest.raises(ValueError, match="no <Labels name='zzz'>"):
        parse_label_config(TWO_BLOCKS, from_name="zzz")


@pytest.mark.parametrize(
    "xml,needle",
    [
        ("", "empty"),
        ("<View><Labels", "not valid XML"),
        ("not xml at all", "not valid XML"),
        ('<View><Text name="text" value="$text"/></View>', "no <Labels>"),
        (
            '<View><Labels name="l" toName="text"></Labels>'
            '<Text name="text" value="$text"/></View>',
            "no <Label> children",
        ),
        (
            '<View><Labels name="l" toName="other"><Label value="A"/></Labels>'
            '<Text name="text" value="$text"/></View>',
            "no <Text> tag with that name",
        ),
        (
            '<View><Labels name="l" toName="text"><Label value="A"/><Label value="A"/></Labels>'
            '<Text name="text" value="$text"/></View>',
            "appears twice",
        ),
        (
            '<View><Labels name="l" toName="text"><Label/></Labels>'
            '<Text name="text" value="$text"/></View>',
            "has no value",
        ),
        (
            '<View><Labels name="l" toName="text"><Label value="A"/></Labels>'
            '<Text name="text" value="text"/></View>',
            "expected '\\$<data key>'",
        ),
    ],
    ids=[
        "empty",
        "truncated",
        "plain-text",
        "no-labels",
        "no-label-children",
        "toname-mismatch",
        "duplicate-label",
        "label-without-value",
        "text-value-not-variable",
    ],
)
def test_bad_configs(xml: str, needle: str) -> None:
    with pytest.raises(ValueError, match=needle):
        parse_label_config(xml)


def test_as_label_config_accepts_xml_path_and_object(tmp_path: Path) -> None:
    xml = label_config_xml(["A"])
    p = tmp_path / "c.xml"
    p.write_text(xml, encoding="utf-8")
    cfg = parse_label_config(xml)
    assert as_label_config(xml) == cfg
    assert as_label_config(str(p)) == cfg
    assert as_label_config(p) == cfg
    assert as_label_config(cfg) is cfg
    assert as_label_config(None) is None
    with pytest.raises(TypeError):
        as_label_config(42)  # type: ignore[arg-type]
    bad = tmp_path / "bad.xml"
    bad.write_text("<View>", encoding="utf-8")
    with pytest.raises(ValueError, match="bad.xml: label config is not valid XML"):
        read_label_config(bad)


def test_label_config_xml_rejects_bad_labels() -> None:
    with pytest.raises(ValueError, match="at least one"):
        label_config_xml([])
    with pytest.raises(ValueError, match="duplicate"):
        label_config_xml(["A", "A"])
    with pytest.raises(TypeError):
        label_config_xml("PER")
