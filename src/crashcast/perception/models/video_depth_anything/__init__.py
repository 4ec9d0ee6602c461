"""Video Depth Anything (Chen et al., 2025), reimplemented in PyTorch: see `network.py`.

Importing this package does not import torch; the names below are loaded on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = ("VARIANTS", "CheckpointMismatchError", "VideoDepthAnything", "VideoDepthConfig",
            "load_checkpoint", "read_state_dict")
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.network"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
