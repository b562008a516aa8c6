"""Label Studio labeling configs: parse the ``<Labels>`` / ``<Text>`` pair, or generate one.

A Label Studio NER config names a ``<Labels name=... toName=...>`` block whose ``<Label>``
children are the entity types, and a ``<Text name=... value="$key">`` tag that shows
``task.data[key]``.  :func:`parse_label_config` turns that into a frozen :class:`LabelConfig`;
:func:`label_config_xml` writes the minimal config for a label set.

>>> cfg = parse_label_config(label_config_xml(["PER", "LOC"]))
>>> cfg.from_name, cfg.to_name, cfg.labels, cfg.value_key
('label', 'text', ('PER', 'LOC'), 'text')
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from xml.sax.saxutils import quoteattr

from analysis.exceptions import DataError

__all__ = [
    "LabelConfig",
    "parse_label_config",
    "read_label_config",
    "label_config_xml",
    "as_label_config",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LabelConfig:
    """The NER part of a Label Studio labeling config.

    Attributes
    ----------
    from_name : ``name`` of the ``<Labels>`` tag (``from_name`` of every result region)
    to_name : ``name`` of the ``<Text>`` tag it labels (``to_name`` of every region)
    labels : entity types, the ``value`` of each ``<Label>`` in config order
    value_key : the task data key shown by the ``<Text>`` tag (``"text"`` for ``$text``)
    aliases : ``alias -> value`` for labels that declare an ``alias`` (Label Studio stores
        the alias in results; :meth:`canonical` maps it back)
    """

    from_name: str
    to_name: str
    labels: tuple[str, ...]
    value_key: str = "text"
    aliases: Mapping[str, str] = field(default_factory=dict, compare=False)

    def canonical(self, label: str) -> str:
        """The label ``value`` for ``label`` (itself, or the value whose alias it is)."""
        return self.aliases.get(label, label)


def _tag(el: ET.Element) -> str:
    tag = el.tag
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def parse_label_config(xml: str, *, from_name: str | None = None) -> LabelConfig:
    """Parse a Label Studio labeling config (XML text) into a :class:`LabelConfig`.

    Parameters
    ----------
    xml : the config XML (``<View>...</View>``)
    from_name : which ``<Labels name=...>`` block to use when the config has several

    Raises
    ------
    ValueError
        not XML; no ``<Labels>``; a ``<Labels>`` without ``<Label>`` children, or with a
        ``<Label>`` lacking ``value``, or with duplicate values; ``toName`` naming no ``<Text>``
        tag; several ``<Labels>`` blocks and ``from_name`` not given (or not among them); a
        ``<Text>`` ``value`` that is not ``$key``.
    """
    if not isinstance(xml, str):
        raise TypeError(f"label config must be an XML string, got {type(xml).__name__}")
    if not xml.strip():
        raise DataError("label config is empty")
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise DataError(f"label config is not valid XML: {exc}") from None
    blocks = [el for el in root.iter() if _tag(el) == "Labels"]
    if not blocks:
        raise DataError(
            "label config has no <Labels> tag; an NER config needs "
            '<Labels name="label" toName="text"> with <Label value="..."/> children'
        )
    names = [b.get("name", "") for b in blocks]
    if from_name is not None:
        chosen = [b for b in blocks if b.get("name") == from_name]
        if not chosen:
            raise DataError(f"label config has no <Labels name={from_name!r}>; it has {names}")
        block = chosen[0]
    elif len(blocks) > 1:
        raise DataError(
            f"label config has {len(blocks)} <Labels> blocks {names}; choose one with from_name="
        )
    else:
        block = blocks[0]
    name = block.get("name")
    if not name:
        raise DataError("label config: <Labels> has no name attribute")
    to_attr = block.get("toName")
    if not to_attr:
        raise DataError(f"label config: <Labels name={name!r}> has no toName attribute")
    texts = {str(el.get("name")): el for el in root.iter() if _tag(el) == "Text" and el.get("name")}
    targets = [t.strip() for t in to_attr.split(",") if t.strip()]
    matching = [t for t in targets if t in texts]
    if not matching:
        raise DataError(
            f"label config: <Labels name={name!r}> has toName={to_attr!r} but there is no "
            f"<Text> tag with that name (Text tags: {sorted(texts)})"
        )
    if len(matching) > 1:
        raise DataError(
            f"label config: <Labels name={name!r}> points at several Text tags {matching}; "
            "ner-quality needs exactly one"
        )
    to_name = matching[0]
    value = texts[to_name].get("value", "")
    if not value.startswith("$") or len(value) < 2:
        raise DataError(
            f"label config: <Text name={to_name!r}> has value={value!r}; expected '$<data key>'"
        )
    labels: list[str] = []
    aliases: dict[str, str] = {}
    for el in block.iter():
        if _tag(el) != "Label":
            continue
        val = el.get("value")
        if not val:
            raise DataError(f"label config: a <Label> in <Labels name={name!r}> has no value")
        if val in labels:
            raise DataError(f"label config: label {val!r} appears twice in <Labels name={name!r}>")
        labels.append(val)
        alias = el.get("alias")
        if alias and alias != val:
            aliases[alias] = val
    if not labels:
        raise DataError(f"label config: <Labels name={name!r}> has no <Label> children")
    return LabelConfig(name, to_name, tuple(labels), value[1:], aliases)


def read_label_config(path: str | Path, *, from_name: str | None = None) -> LabelConfig:
    """Read and parse a labeling config file (UTF-8 XML)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: label config is not valid UTF-8 at byte {exc.start}") from None
    try:
        return parse_label_config(text, from_name=from_name)
    except ValueError as exc:
        raise DataError(f"{path}: {exc}") from None


def as_label_config(config: str | Path | LabelConfig | None) -> LabelConfig | None:
    """Accept a :class:`LabelConfig`, XML text, or a path to an XML file (``None`` passes)."""
    if config is None or isinstance(config, LabelConfig):
        return config
    if isinstance(config, Path):
        return read_label_config(config)
    if isinstance(config, str):
        if config.lstrip().startswith("<"):
            return parse_label_config(config)
        return read_label_config(config)
    raise TypeError(
        f"label_config must be XML text, a path or a LabelConfig, got {type(config).__name__}"
    )


def label_config_xml(
    labels: Sequence[str],
    *,
    from_name: str = "label",
    to_name: str = "text",
    value: str = "$text",
) -> str:
    """A minimal Label Studio NER config for ``labels``.

    >>> print(label_config_xml(["PER"]))
    <View>
      <Labels name="label" toName="text">
        <Label value="PER"/>
      </Labels>
      <Text name="text" value="$text"/>
    </View>
    """
    if isinstance(labels, str):
        raise TypeError("labels must be a sequence of label names, not a single string")
    labels = list(labels)
    if not labels:
        raise DataError("label_config_xml needs at least one label")
    if len(set(labels)) != len(labels):
        raise DataError(f"duplicate labels in {labels}")
    for lab in labels:
        if not isinstance(lab, str) or not lab:
            raise DataError(f"labels must be non-empty strings, got {lab!r}")
    if not value.startswith("$"):
        raise DataError(f"value must look like '$<data key>', got {value!r}")
    lines = ["<View>", f"  <Labels name={quoteattr(from_name)} toName={quoteattr(to_name)}>"]
    lines += [f"    <Label value={quoteattr(lab)}/>" for lab in labels]
    lines += [
        "  </Labels>",
        f"  <Text name={quoteattr(to_name)} value={quoteattr(value)}/>",
        "</View>",
    ]
    return "\n".join(lines)
