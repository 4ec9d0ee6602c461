"""Fixtures of the model backend tests."""

from __future__ import annotations

import pytest
from scenes import scene


@pytest.fixture(scope="module")
def frames():
    """Three different test frames (640x360)."""
    return [scene(i) for i in range(3)]
