"""Data Error Potential: how likely each human annotation is wrong.

``inputs`` (a corpus + probabilities, checked once) → ``units`` (the signals of every gold span
and gold-``O`` token) → ``errormodel`` / ``signals`` (unit scores) → ``thresholds`` (task DEP and
its categories) → :class:`DepResult` (``result``).  :func:`compute_dep` runs the chain.
"""

from analysis.dep.compute import SCORERS, Scorer, compute_dep, validate_probs
from analysis.dep.result import DepResult
from analysis.dep.signals import token_margins
from analysis.dep.thresholds import (AGGREGATES, CATEGORIES, Aggregate, Thresholds,
                                     aggregate_units, fit_thresholds)

__all__ = ["compute_dep", "validate_probs", "DepResult", "Scorer", "SCORERS", "Aggregate",
           "AGGREGATES", "CATEGORIES", "Thresholds", "aggregate_units", "fit_thresholds",
           "token_margins"]
