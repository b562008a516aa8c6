"""Data Error Potential: how likely each human annotation is wrong (see :mod:`.compute`)."""

from analysis.dep.compute import *  # noqa: F401,F403
from analysis.dep.compute import __all__  # noqa: F401
