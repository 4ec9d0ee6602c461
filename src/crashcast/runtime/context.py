"""Where models run and where their weights are: one `RuntimeContext` for every model crashcast
builds, perception backends and the VLM alike.

It holds the runtime settings (device, dtype, batch size, weights folder): how a model runs, never
what it computes, so they are outside the extraction hash and never saved with a model (as peft
keeps `LoraRuntimeConfig` beside `LoraConfig`). The weights folder is `runtime.weights_dir`, else
$CRASHCAST_WEIGHTS_DIR, else none (the libraries' own caches): the same rule for every model.

torch is imported only when a device or dtype is asked for, so the classic path never needs it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashcast.runtime.weights import WEIGHTS_ENV, resolve
from crashcast.settings import RuntimeConfig


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


def weights_dir_for(runtime: RuntimeConfig | None = None, weights_dir: str | Path | None = None) -> Path | None:
    """The weights folder in force: `weights_dir` (--weights-dir), else `runtime.weights_dir`, else
    $CRASHCAST_WEIGHTS_DIR, else None (the libraries' own caches)."""
    d = weights_dir or (runtime.weights_dir if runtime is not None else None) or os.environ.get(WEIGHTS_ENV)
    return Path(d).expanduser() if d else None


@dataclass(frozen=True)
class RuntimeContext:
    """How and where models run (see the module docstring)."""

    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    @classmethod
    def of(cls, runtime: RuntimeConfig | RuntimeContext | None = None) -> RuntimeContext:
        if isinstance(runtime, RuntimeContext):
            return runtime
        return cls(runtime if runtime is not None else RuntimeConfig())

    @property
    def device(self) -> str:
        return resolve_device(self.runtime.device)

    @property
    def dtype(self) -> Any:
        return resolve_dtype(self.runtime.dtype, self.device)

    @property
    def batch_size(self) -> int:
        return self.runtime.batch_size

    @property
    def weights_dir(self) -> Path | None:
        """`runtime.weights_dir`, else $CRASHCAST_WEIGHTS_DIR (read now), else None."""
        return weights_dir_for(self.runtime)

    def weights(self, name_or_path: str) -> str:
        """Where to load `name_or_path` (a hub id, a file name or a path) from: see
        `crashcast.runtime.weights.resolve`."""
        return resolve(name_or_path, self.weights_dir)
