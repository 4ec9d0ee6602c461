"""Fixtures of the model backend tests."""

from __future__ import annotations

import pytest
from scenes import scene


@pytest.fixture(scope="module")
def frames():
    """Three different test frames (640x360)."""
    return [scene(i) for i in range(3)]


def _threads(n: int):
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def two_torch_threads():
    """torch on two threads for the module (the machine's cores), restored afterwards."""
    yield from _threads(2)


@pytest.fixture(scope="module")
def torch_threads():
    """torch on one thread for the module: tiny models on a shared 2-core machine run faster so."""
    yield from _threads(1)
