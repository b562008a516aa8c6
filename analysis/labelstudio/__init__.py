"""The Label Studio adapter — the only package that talks to the Label Studio API — and what
ner-quality writes there: :mod:`.fields` (the ``nerq_*`` data fields and the
``meta["ner_quality"]`` schema), :mod:`.records`, :mod:`.push` (plans) and :mod:`.store` (the
local sync store)."""

from analysis.labelstudio.api import LabelStudioAPI
from analysis.labelstudio.client import (
                                         REVIEW_VIEW_ORDERING,
                                         LabelStudioError,
                                         LabelStudioUnavailable,
                                         TaskPage,
                                         data_filter,
)

__all__ = ["LabelStudioAPI", "LabelStudioError", "LabelStudioUnavailable", "TaskPage",
           "data_filter", "REVIEW_VIEW_ORDERING"]
