"""The Label Studio adapter: the only package that talks to the Label Studio API."""

from analysis.labelstudio.api import *  # noqa: F401,F403
from analysis.labelstudio.api import __all__  # noqa: F401
