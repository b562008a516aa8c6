"""Reading and writing datasets: CoNLL, Label Studio JSON (full export, JSON-MIN), label configs."""

from analysis.formats.io import (
    WriteReport,
    detect_format,
    from_ls_tasks,
    load,
    read_conll,
    save,
    to_ls_tasks,
    write_conll,
)

__all__ = ["load", "save", "read_conll", "write_conll", "from_ls_tasks", "to_ls_tasks",
           "detect_format", "WriteReport"]
