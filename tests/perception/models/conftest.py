"""Fixtures of the model backend tests."""

from __future__ import annotations

import pytest
from scenes import scene


@pytest.fixture(scope="module")
def frames():
    """Three different test frames (640x360)."""
    return [scene(i) for i in range(3)]


@pytest.fixture(scope="module")
def two_torch_threads():
    """torch on two threads for the module (the machine's cores), restored afterwards."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
