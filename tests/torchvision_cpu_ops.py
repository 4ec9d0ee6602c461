"""Test setup only: CPU kernels for torchvision's `nms` when the installed torchvision lacks them.

The torchvision on PyPI for Linux is a CUDA build; next to a CPU-only torch (torch 2.13.0+cpu and
torchvision 0.28.0 here, the CI machine) its compiled operators fail to load (libcudart is missing),
and `import torchvision` (so ultralytics and transformers' image processors) raises
`RuntimeError: operator torchvision::nms does not exist`. The test session (tests/conftest.py's
pytest_configure) calls `install()` before anything imports torchvision. `install()` first loads
torchvision's own compiled extension the way torchvision does; only when that fails it defines
`torchvision::nms` and `torchvision::qnms` with `torch.library`, registers a CPU implementation
(greedy IoU suppression, the same result as torchvision's kernel) and lets torchvision's
`_assert_has_ops` pass. With a matching torchvision (pytorch.org's CPU wheels, any CUDA machine) it
changes nothing; without torch or torchvision it does nothing.

Product code never does this: `crashcast doctor` detects the mismatch and says how to install a
matching torchvision (docs/INSTALL.md, "The torchvision trap").
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
from pathlib import Path

_installed = False


def greedy_nms(boxes, scores, iou_threshold: float):
    """Indices (int64) of the boxes kept by greedy non-maximum suppression, highest score first."""
    import torch

    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    b = boxes.detach().to(torch.float64).cpu()
    order = torch.argsort(scores.detach().cpu().to(torch.float64), descending=True, stable=True)
    x1, y1, x2, y2 = b.unbind(1)
    area = (x2 - x1).clamp(min=0) * (y2 - y1).clamp(min=0)
    suppressed = torch.zeros(len(b), dtype=torch.bool)
    keep = []
    for i in order.tolist():
        if suppressed[i]:
            continue
        keep.append(i)
        w = (torch.minimum(x2[i], x2) - torch.maximum(x1[i], x1)).clamp(min=0)
        h = (torch.minimum(y2[i], y2) - torch.maximum(y1[i], y1)).clamp(min=0)
        inter = w * h
        iou = inter / (area[i] + area - inter).clamp(min=1e-12)
        suppressed |= iou > iou_threshold
    return torch.tensor(keep, dtype=torch.int64, device=boxes.device)


def install() -> bool:
    """Register the CPU kernels when needed; True when torchvision can be imported afterwards."""
    global _installed
    if _installed:
        return True
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        return False
    import sys

    import torch

    if "torchvision" not in sys.modules and not own_ops_load():
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.impl("nms", greedy_nms, "CPU")
        lib.impl("qnms", greedy_nms, "CPU")
        install._lib = lib  # keep the library alive
        import torchvision.extension

        torchvision.extension._assert_has_ops = lambda: True
        torchvision.extension._has_ops = lambda: True
    import torchvision

    _installed = True
    return True


def extension_path() -> Path | None:
    """torchvision's compiled extension (`_C.so`), found without importing torchvision."""
    spec = importlib.util.find_spec("torchvision")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            if (Path(folder) / f"_C{suffix}").is_file():
                return Path(folder) / f"_C{suffix}"
    return None


def own_ops_load() -> bool:
    """Whether torchvision's own compiled operators load here. Loading its extension is what
    `import torchvision` does first; when it loads, torchvision registers `torchvision::nms` itself
    (defining it here as well would clash), and when it does not (a CUDA build without CUDA
    libraries) nothing was registered, so the CPU kernels can be."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018  (already registered)
        return True
    except (AttributeError, RuntimeError):
        pass
    path = extension_path()
    if path is None:
        return False
    try:
        torch.ops.load_library(str(path))
    except (OSError, ImportError, RuntimeError):
        return False
    return True
