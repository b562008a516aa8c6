"""The HTML report: :mod:`.page` (layout, the flagged-task table, CSV) over :mod:`.charts`."""

from analysis.review.report.charts import PALETTE, span_map
from analysis.review.report.page import flagged_rows, render_report, write_csv, write_report

__all__ = ["render_report", "write_report", "write_csv", "flagged_rows", "span_map", "PALETTE"]
