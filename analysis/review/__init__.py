"""Reviewing a dataset: the comparison with the model, metrics, alerts, the report.

``comparison`` (gold against the predictions, aligned once) → ``sections`` (typed metrics) →
``alerts`` (rules over them) → ``analyze`` (:class:`Analysis`, the ``--json`` object) →
``report`` (the HTML console).
"""

from analysis.review.analyze import Analysis, analyze, analyze_dataset

__all__ = ["Analysis", "analyze", "analyze_dataset"]
