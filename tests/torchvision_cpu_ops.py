"""Test setup only: CPU kernels for torchvision's `nms` when the installed torchvision lacks them.

The torchvision on PyPI for Linux is a CUDA build; next to a CPU-only torch (torch 2.13.0+cpu and
torchvision 0.28.0, the README's test pair) its compiled operators fail to load (libcudart is
missing), and `import torchvision` (so ultralytics and transformers' image processors) raises
`RuntimeError: operator torchvision::nms does not exist`. The test session (tests/conftest.py's
pytest_configure) calls `install()` before anything imports torchvision. `install()` first imports
torchvision in a subprocess; only when that fails for this reason it defines `torchvision::nms` and
`torchvision::qnms` with `torch.library`, registers a CPU implementation (greedy IoU suppression,
the same result as torchvision's kernel) and lets torchvision's `_assert_has_ops` pass. Wherever
torchvision imports by itself (a matching pair: torch 2.14.1 with torchvision 0.29.1 from PyPI,
pytorch.org's CPU wheels, any CUDA machine) it registers nothing: torchvision registers these
operators itself when it is imported, and a second registration aborts the process. It does nothing
without torch or torchvision, or when torchvision fails to import for another reason.

Product code never does this: `crashcast doctor` detects the mismatch and says how to install a
matching torchvision (docs/INSTALL.md, "The torchvision trap").
"""

from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys

log = logging.getLogger(__name__)

MISSING_KERNEL = "operator torchvision::nms does not exist"

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


def import_error() -> str | None:
    """Why `import torchvision` fails in a fresh interpreter of this Python (its stderr's last
    line), or None when it imports. A subprocess, because a failed import leaves torchvision's
    modules half-initialised in this one and a successful one registers its operators here."""
    proc = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True,
                          timeout=300, check=False)
    if proc.returncode == 0:
        return None
    lines = proc.stderr.strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def needed() -> bool:
    """Whether the CPU kernels must be registered: torchvision is installed, not imported yet, and
    importing it fails because its compiled `torchvision::nms` does not load here."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("torchvision") is None:
        return False
    if "torchvision" in sys.modules:
        return False
    error = import_error()
    if error is None:
        return False
    if MISSING_KERNEL not in error:
        log.warning("import torchvision fails for another reason than its missing CPU kernels; "
                    "registering nothing: %s", error)
        return False
    return True


def install() -> bool:
    """Register the CPU kernels when needed (and only then); True when they are registered."""
    global _installed
    if _installed:
        return True
    if not needed():
        return False
    import torch

    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.impl("nms", greedy_nms, "CPU")
    lib.impl("qnms", greedy_nms, "CPU")
    install._lib = lib  # keep the library alive
    import torchvision.extension

    torchvision.extension._assert_has_ops = lambda: True
    torchvision.extension._has_ops = lambda: True
    import torchvision  # imports now

    _installed = True
    return True
