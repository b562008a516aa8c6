"""Dataset-wide alerts (see :mod:`analysis.review.alerts.base` for the fields and thresholds).

>>> import numpy as np
>>> a = likely_mislabeled(np.array([0.05, 0.9, 0.1, 0.02]), np.array([0.0, 0.97, 0.2, 0.0]),
...                       ids=np.array([10, 11, 12, 13]), dep_threshold=0.5)
>>> a.name, a.task_ids
('likely mislabeled', (11,))
"""

from analysis.review.alerts.base import ALERT_NAMES, VIEW_PREFIX, Alert, jsonable, upper_fence
from analysis.review.alerts.class_rules import (
                                                annotator_error_rates,
                                                class_imbalance,
                                                inconsistent_surface_forms,
                                                low_performing_classes,
                                                overlapping_classes,
)
from analysis.review.alerts.task_rules import (
                                                annotators_disagree,
                                                duplicates,
                                                hard_for_model,
                                                likely_mislabeled,
                                                malformed_samples,
                                                overlooked_spans,
)

__all__ = ["Alert", "ALERT_NAMES", "VIEW_PREFIX", "jsonable", "upper_fence", "likely_mislabeled",
           "hard_for_model", "overlooked_spans", "malformed_samples", "duplicates",
           "low_performing_classes", "class_imbalance", "overlapping_classes",
           "inconsistent_surface_forms", "annotator_error_rates", "annotators_disagree"]
