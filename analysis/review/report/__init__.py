"""The HTML console: :mod:`.page` (layout, CSV) over :mod:`.payload` (the data the page's
script draws), :mod:`.spans` (span columns), :mod:`.embedmap` (the span map)."""

from analysis.review.report.embedmap import span_map
from analysis.review.report.page import flagged_rows, render_report, write_csv, write_report
from analysis.review.report.spans import span_columns
from analysis.review.report.words import PALETTE

__all__ = [
           "PALETTE",
           "flagged_rows",
           "render_report",
           "span_columns",
           "span_map",
           "write_csv",
           "write_report",
]
