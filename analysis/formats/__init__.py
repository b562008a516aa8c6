"""Dataset formats: CoNLL (:mod:`.conll`, :mod:`.conll_write`), Label Studio JSON
(:mod:`.ls_json`), label configs (:mod:`.label_config`); :mod:`.files` dispatches by content."""

from analysis.formats.conll import parse_conll, read_conll
from analysis.formats.conll_write import WriteReport, write_conll
from analysis.formats.files import detect_format, load, save
from analysis.formats.ls_json import from_ls_tasks, regions, to_ls_tasks

__all__ = ["load", "save", "read_conll", "parse_conll", "write_conll", "from_ls_tasks",
           "to_ls_tasks", "regions", "detect_format", "WriteReport"]
