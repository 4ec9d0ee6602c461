"""Where and how model backends run: `BuildContext` is what a backend factory gets besides its
own config (the shared perception settings, the device, the dtype, the local weights folder).

torch is imported only when a device or dtype is asked for, so the classic path never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashcast.config import PerceptionConfig, RuntimeConfig

WEIGHTS_ENV = "CRASHCAST_WEIGHTS_DIR"


def resolve_device(device: str = "auto") -> str:
    """'auto' -> 'cuda' when a CUDA device is usable, else 'mps' (Apple), else 'cpu'."""
    if device != "auto":
        return device
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        return "mps"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> Any:
    """The torch dtype: 'auto' is float16 on CUDA and float32 elsewhere (CPU kernels for half
    precision are slow or missing)."""
    import torch

    if dtype == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype]


@dataclass(frozen=True)
class BuildContext:
    """What a backend factory needs besides its own config."""

    perception: PerceptionConfig = field(default_factory=PerceptionConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @property
    def device(self) -> str:
        return resolve_device(self.runtime.device)

    @property
    def dtype(self) -> Any:
        return resolve_dtype(self.runtime.dtype, self.device)

    @property
    def weights_dir(self) -> Path | None:
        """`runtime.weights_dir`, else $CRASHCAST_WEIGHTS_DIR, else None (the libraries' own caches)."""
        d = self.runtime.weights_dir or os.environ.get(WEIGHTS_ENV)
        return Path(d).expanduser() if d else None

    def weights(self, name_or_path: str) -> str:
        """Where to load `name_or_path` (a hub id, a file name or a path) from: see
        `crashcast.runtime.weights.resolve`."""
        from crashcast.runtime.weights import resolve

        return resolve(name_or_path, self.weights_dir)
