"""Test setup only: CPU kernels for torchvision's `nms` when the installed torchvision lacks them.

The only torchvision built for torch 2.13.0 (0.28.0) is linked against CUDA; with the CPU-only
torch its compiled operators fail to load, and `import torchvision` (so ultralytics and
transformers' image processors) raises `RuntimeError: operator torchvision::nms does not exist`.
The test session (conftest.py) calls `install()` before anything imports torchvision: it defines
`torchvision::nms` and `torchvision::qnms` with `torch.library`, registers a CPU implementation
(greedy IoU suppression, the same result as torchvision's kernel) and lets torchvision's
`_assert_has_ops` pass. It does nothing when torch is missing or torchvision's own kernels load.

Product code never does this: `crashcast doctor` explains the mismatch and how to install a
matching torchvision (docs/INSTALL.md).
"""

from __future__ import annotations

import importlib.util

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

    if "torchvision" not in sys.modules and not _subprocess_free_check():
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


def _subprocess_free_check() -> bool:
    """Whether torchvision's own compiled operators are registered (without importing torchvision,
    which would fail half-way): its extension library registers `torchvision::nms`."""
    import torch

    try:
        torch.ops.torchvision.nms  # noqa: B018
        return True
    except (AttributeError, RuntimeError):
        return False
