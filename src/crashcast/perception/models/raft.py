"""RAFT optical flow (Teed & Deng, 2020) with torchvision's implementation (`raft_large`, `raft_small`).

`flow(previous, current)` takes the pipeline's frame pairs (the perceived rows of the previous
processed frame and of the current one; the pipeline never asks for the first frame's flow) and
returns the displacement from each previous frame to its current frame in that frame's pixels,
(H, W, 2) float32 (the pipeline divides by the grid frames between the two). Pairs of the same size
run as one batch.

RAFT needs inputs whose sides are multiples of 8 (and, for its four correlation levels and the
weights' training, at least 128 pixels): `size_mode: pad` pads each frame (edge pixels repeated, the
frame centred) and crops the flow back; `resize` resizes to the nearest multiples of 8 and resizes
the flow back, scaling u by W / W_net and v by H / H_net so it stays in frame pixels. `scale`
resizes frames before either (0.5: half resolution, a quarter of the work). Inputs are mapped to
[-1, 1] as torchvision's weights transforms (`OpticalFlow`) do.

Weights (BSD-3-Clause, torchvision's): `default` (torchvision's `Raft_Large_Weights.DEFAULT` =
C_T_SKHT_V2, `Raft_Small_Weights.DEFAULT` = C_T_V2), another of the weights enum's names (e.g.
`C_T_SKHT_K_V2`, fine-tuned on KITTI), a local state-dict `.pth` (a path, or a file name inside the
weights folder), or `random:` (random initialisation, for tests and wiring). An enum's file (e.g.
`raft_large_C_T_SKHT_V2-ff5fadd5.pth`, 20 MB) is read from the weights folder when one is set, else
from torch's hub cache ($TORCH_HOME/hub/checkpoints), where torchvision downloads it when missing
(never with HF_HUB_OFFLINE=1: then the error says where to fetch it and where to put it).

Precision: the weights stay float32; with a half-precision `runtime.dtype` on CUDA the network runs
under autocast (the flow coordinates RAFT accumulates stay float32: half precision would quantise
them to a pixel or worse on large frames).
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, model_validator

from crashcast.errors import ConfigError, ModelError
from crashcast.perception.spec import BuildContext, backend
from crashcast.runtime.weights import RANDOM_PREFIX, WeightFile, is_random
from crashcast.settings import BackendConfig
from crashcast.types import Flow

log = logging.getLogger(__name__)

MODELS = ("raft_large", "raft_small")
#: torchvision's RAFT weights: enum member name -> checkpoint file (download.pytorch.org/models/<file>)
RAFT_FILES: dict[str, dict[str, str]] = {
    "raft_large": {
        "C_T_V1": "raft_large_C_T_V1-22a6c225.pth",
        "C_T_V2": "raft_large_C_T_V2-1bb1363a.pth",
        "C_T_SKHT_V1": "raft_large_C_T_SKHT_V1-0b8c9e55.pth",
        "C_T_SKHT_V2": "raft_large_C_T_SKHT_V2-ff5fadd5.pth",
        "C_T_SKHT_K_V1": "raft_large_C_T_SKHT_K_V1-4a6a5039.pth",
        "C_T_SKHT_K_V2": "raft_large_C_T_SKHT_K_V2-b5c70766.pth",
    },
    "raft_small": {
        "C_T_V1": "raft_small_C_T_V1-ad48884c.pth",
        "C_T_V2": "raft_small_C_T_V2-01064c6d.pth",
    },
}
#: what `weights: default` means (the enums' DEFAULT)
DEFAULT_WEIGHTS = {"raft_large": "C_T_SKHT_V2", "raft_small": "C_T_V2"}
#: download sizes (MB; torchvision's `_file_size`)
SIZE_MB = {"raft_large": 20.1, "raft_small": 3.8}
URL_BASE = "https://download.pytorch.org/models/"
LICENCE = "BSD-3-Clause"
MULTIPLE = 8  # RAFT works at 1/8 resolution
MIN_SIDE = 128  # torchvision's RAFT weights' `min_size` (four correlation levels need 64 at least)
_ENUM_NAME = re.compile(r"^[A-Z][A-Z0-9_]*$")


class RaftConfig(BackendConfig):
    name: str = "raft"
    model: Literal["raft_large", "raft_small"] = "raft_large"
    weights: str = Field("default", description="default (torchvision's DEFAULT weights), a weights enum name "
                         "(C_T_SKHT_K_V2, ...), a state-dict .pth path, or random: (random initialisation)")
    num_flow_updates: int = Field(12, ge=1, le=64, description="RAFT's recurrent refinement iterations")
    size_mode: Literal["pad", "resize"] = Field("pad", description="reach RAFT's multiples of 8 by padding the "
                                                "frame (flow cropped back) or resizing it (flow resized and rescaled back)")
    scale: float = Field(1.0, gt=0.0, le=2.0, description="resize frames by this factor before RAFT (flow "
                         "returned in the frame's pixels either way)")

    @model_validator(mode="after")
    def _check_weights(self) -> RaftConfig:
        w = self.weights
        if is_random(w):
            arch = w[len(RANDOM_PREFIX):]
            if arch not in ("", self.model):
                raise ValueError(f"weights {w!r}: random weights take the architecture of model ({self.model}): "
                                 f"write {RANDOM_PREFIX!r} or {RANDOM_PREFIX + self.model!r}")
        elif w != "default" and _ENUM_NAME.match(w) and w not in RAFT_FILES[self.model]:
            raise ValueError(f"weights {w!r}: {self.model} weights are default, "
                             f"{', '.join(RAFT_FILES[self.model])}, a .pth path or {RANDOM_PREFIX}")
        return self


def weights_file(cfg: RaftConfig) -> str | None:
    """The torchvision checkpoint file a config names (None: random or a local path)."""
    if is_random(cfg.weights):
        return None
    if cfg.weights == "default":
        return RAFT_FILES[cfg.model][DEFAULT_WEIGHTS[cfg.model]]
    return RAFT_FILES[cfg.model].get(cfg.weights)


def raft_weights(cfg: Any) -> list[WeightFile]:
    """The weight files a RAFT config needs: torchvision's checkpoint, or for a path the path itself."""
    if is_random(cfg.weights):
        return []
    file = weights_file(cfg)
    if file is None:  # a local state dict: nobody can fetch it, but it must be there
        return [] if Path(cfg.weights).expanduser().exists() else [WeightFile(cfg.weights, "local", "unknown")]
    return [WeightFile(file, "url", LICENCE, SIZE_MB[cfg.model], URL_BASE + file)]


# ----------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class InputGeometry:
    """How a frame of `frame` (H, W) becomes RAFT's input: resized to `scaled` (h, w), then padded to
    `padded` (H_net, W_net) with the image at (`top`, `left`)."""

    frame: tuple[int, int]
    scaled: tuple[int, int]
    padded: tuple[int, int]
    top: int = 0
    left: int = 0


def _round_to(x: float, multiple: int) -> int:
    return max(multiple, int(math.floor(x / multiple + 0.5)) * multiple)


def plan_input(height: int, width: int, size_mode: str = "pad", scale: float = 1.0,
               multiple: int = MULTIPLE, min_side: int = MIN_SIDE) -> InputGeometry:
    """The input geometry for a (height, width) frame (see the module docstring)."""
    if size_mode not in ("pad", "resize"):
        raise ValueError(f"size_mode must be pad or resize, got {size_mode!r}")
    if size_mode == "resize":
        sh = max(_round_to(height * scale, multiple), min_side)
        sw = max(_round_to(width * scale, multiple), min_side)
        return InputGeometry((height, width), (sh, sw), (sh, sw))
    sh, sw = (height, width) if scale == 1.0 else (max(1, round(height * scale)), max(1, round(width * scale)))
    ph = max(math.ceil(sh / multiple) * multiple, min_side)
    pw = max(math.ceil(sw / multiple) * multiple, min_side)
    return InputGeometry((height, width), (sh, sw), (ph, pw), (ph - sh) // 2, (pw - sw) // 2)


def to_network(images: Any, geom: InputGeometry) -> Any:
    """(B, 3, H, W) uint8 (or 0..255 float) frames -> RAFT's (B, 3, H_net, W_net) float input in [-1, 1]."""
    import torch.nn.functional as F

    x = images.float()
    if geom.scaled != geom.frame:
        shrink = geom.scaled[0] < geom.frame[0] or geom.scaled[1] < geom.frame[1]
        x = F.interpolate(x, size=geom.scaled, mode="bilinear", align_corners=False, antialias=shrink)
    x = x * (2.0 / 255.0) - 1.0
    if geom.padded != geom.scaled:
        (sh, sw), (ph, pw) = geom.scaled, geom.padded
        x = F.pad(x, (geom.left, pw - sw - geom.left, geom.top, ph - sh - geom.top), mode="replicate")
    return x.clamp(-1.0, 1.0)


def to_frame_units(flow: Any, geom: InputGeometry) -> Any:
    """RAFT's (B, 2, H_net, W_net) flow (network pixels) -> (B, 2, H, W) flow in the frame's pixels:
    the padding cropped off, then resized to the frame (bilinear) with u scaled by W / w and v by
    H / h."""
    import torch.nn.functional as F

    (sh, sw), (h, w) = geom.scaled, geom.frame
    flow = flow[:, :, geom.top : geom.top + sh, geom.left : geom.left + sw]
    if (sh, sw) == (h, w):
        return flow
    flow = F.interpolate(flow, size=(h, w), mode="bilinear", align_corners=False)
    factor = flow.new_tensor([w / sw, h / sh]).view(1, 2, 1, 1)
    return flow * factor


# ----------------------------------------------------------------------------- the backend


class RaftFlow:
    """`FlowEstimator` with a torchvision RAFT: previous -> current flow in frame pixels, (H, W, 2) float32."""

    name = "raft"

    def __init__(self, model: Any, device: str, dtype: Any, num_flow_updates: int = 12, size_mode: str = "pad",
                 scale: float = 1.0) -> None:
        import torch

        self.model = model.to(device=device, dtype=torch.float32).eval()
        self.device = device
        self.autocast = dtype if (dtype != torch.float32 and str(device).startswith("cuda")) else None
        self.num_flow_updates = num_flow_updates
        self.size_mode = size_mode
        self.scale = scale

    def flow(self, previous: Sequence[np.ndarray], current: Sequence[np.ndarray]) -> list[Flow]:
        if len(previous) != len(current):
            raise ValueError(f"raft: {len(previous)} previous frames for {len(current)} current ones")
        groups: dict[tuple[int, int], list[int]] = {}
        for i, (a, b) in enumerate(zip(previous, current, strict=True)):
            if a.shape != b.shape:
                raise ValueError(f"raft: pair {i} has frames of different sizes {a.shape} and {b.shape}")
            groups.setdefault(tuple(a.shape[:2]), []).append(i)
        out: list[Flow | None] = [None] * len(previous)
        for (h, w), idx in groups.items():
            uv = self._flow_batch(np.stack([previous[i] for i in idx]), np.stack([current[i] for i in idx]),
                                  plan_input(h, w, self.size_mode, self.scale))
            for k, i in enumerate(idx):
                out[i] = Flow(uv[k])
        return out  # type: ignore[return-value]

    def _flow_batch(self, prev: np.ndarray, cur: np.ndarray, geom: InputGeometry) -> np.ndarray:
        """(B, H, W, 2) float32 flow for B same-size pairs of (H, W, 3) uint8 frames."""
        import contextlib

        import torch

        def tensor(frames: np.ndarray) -> Any:
            return torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)

        with torch.inference_mode():
            a, b = to_network(tensor(prev), geom), to_network(tensor(cur), geom)
            amp = (torch.autocast(device_type="cuda", dtype=self.autocast) if self.autocast is not None
                   else contextlib.nullcontext())
            with amp:
                flow = self.model(a, b, num_flow_updates=self.num_flow_updates)[-1]
            flow = to_frame_units(flow.float(), geom)
            return flow.permute(0, 2, 3, 1).contiguous().cpu().numpy().astype(np.float32, copy=False)


def read_state_dict(path: str) -> dict[str, Any]:
    """A RAFT state dict from a .pth: the dict itself, or under `model` / `state_dict`; a
    DataParallel `module.` prefix is dropped."""
    import torch

    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ConfigError(f"perception.flow: RAFT checkpoint {path} does not exist") from None
    except Exception as e:
        raise ModelError(f"RAFT checkpoint {path}: not a readable state dict ({type(e).__name__}: {e})") from e
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
    if not isinstance(obj, dict):
        raise ModelError(f"RAFT checkpoint {path}: holds a {type(obj).__name__}, not a state dict")
    return {(k[len("module."):] if k.startswith("module.") else k): v for k, v in obj.items()}


def checkpoint_path(cfg: RaftConfig, ctx: BuildContext) -> str | None:
    """Where the config's weights are on disk (None: let torchvision download the enum's file into
    torch's hub cache)."""
    from crashcast.runtime.weights import (
        WeightsUnavailable,
        fetch_instructions,
        offline,
        torch_hub_checkpoints,
    )

    file = weights_file(cfg)
    if file is None:  # a path, or a file name inside the weights folder
        return ctx.weights(cfg.weights)
    if ctx.weights_dir is not None:
        return ctx.weights(file)  # ConfigError when it is not in the weights folder
    cached = torch_hub_checkpoints() / file
    if cached.is_file():
        return str(cached)
    if offline():
        files = raft_weights(cfg)
        raise WeightsUnavailable(f"RAFT weights {file} are not in torch's hub cache and HF_HUB_OFFLINE is set:\n"
                                 + fetch_instructions(files), files)
    return None


def load_model(cfg: RaftConfig, ctx: BuildContext) -> Any:
    """torchvision's `raft_large` / `raft_small` with the config's weights."""
    from torchvision.models import optical_flow

    build = getattr(optical_flow, cfg.model)
    if is_random(cfg.weights):
        return build(weights=None)
    path = checkpoint_path(cfg, ctx)
    if path is None:
        enum = getattr(optical_flow, "Raft_Large_Weights" if cfg.model == "raft_large" else "Raft_Small_Weights")
        name = DEFAULT_WEIGHTS[cfg.model] if cfg.weights == "default" else cfg.weights
        log.info("raft: downloading torchvision's %s %s weights into torch's hub cache", cfg.model, name)
        return build(weights=enum[name], progress=False)
    model = build(weights=None)
    try:
        model.load_state_dict(read_state_dict(path))
    except RuntimeError as e:
        raise ModelError(f"RAFT checkpoint {path} does not fit torchvision's {cfg.model}: "
                         f"{str(e).splitlines()[0]}") from e
    return model


@backend("flow", "raft", RaftConfig, requires=("torch", "torchvision"), weights=raft_weights)
def _build(cfg: RaftConfig, ctx: BuildContext) -> RaftFlow:
    return RaftFlow(load_model(cfg, ctx), ctx.device, ctx.dtype, cfg.num_flow_updates, cfg.size_mode, cfg.scale)
