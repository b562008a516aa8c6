"""Shared test fixtures and paths.

``SHARED_DATA`` is ``../shared/data`` beside the repository (override with
``NERQ_SHARED_DATA``); tests that need it skip cleanly when it is absent.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("NERQ_SHARED_DATA", REPO.parent / "shared" / "data"))


def shared_file(*parts: str) -> Path:
    """Path of a file under the shared corpora, or skip the test when it is absent."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.is_file():
        pytest.skip(f"shared corpus file {path} not present")
    return path


@pytest.fixture
def shared() -> type:
    """Access to ``shared_file`` inside tests: ``shared.file("conll2003", "test.conll")``."""

    class _Shared:
        root = SHARED_DATA
        file = staticmethod(shared_file)

    return _Shared
