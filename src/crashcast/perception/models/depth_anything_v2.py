"""Depth Anything V2 (Yang et al., 2024) per-frame depth with transformers' `DepthAnythingForDepthEstimation`.

The default is the metric outdoor model fine-tuned on Virtual KITTI 2 (metres, up to its
`max_depth` of 80): `DepthMap(depth_m, is_metric=True)`. A relative checkpoint (its config's
`depth_estimation_type: relative`, e.g. `depth-anything/Depth-Anything-V2-Small-hf`) gives
`is_metric=False` (disparity up to scale and shift, which the pipeline aligns to the ground plane).

Frames of the same size run as one batch. Preprocessing is done here, in torch on the model's
device, following the checkpoint's `preprocessor_config.json` (the DPT image processor's rule: keep
the aspect ratio, scale as little as possible towards `size` (518), sides rounded to multiples of 14;
bicubic with antialiasing, ImageNet mean and std) instead of calling the image processor: the
processor is torchvision-backed (so it needs a torchvision that imports) and runs on the CPU per
image, and `random:*` models have no processor files; the processor's uint8 rounding after the resize
is skipped (the original model resizes in float). The depth is resized back to the frame bilinearly
(the processor's post-processing uses bicubic, which overshoots [0, max_depth] at depth edges).

Weights: the hub ids below (Small: Apache-2.0; Base and Large: CC-BY-NC-4.0, non-commercial, per
the Depth Anything V2 README, although the -hf model cards' metadata says apache-2.0), a local folder
(`save_pretrained` layout: config.json, model.safetensors, preprocessor_config.json, optional), or
`random:<arch>` (`tiny` for tests; `small`, `base`, `large`: the checkpoints' architectures, for speed
benchmarks). On CUDA the model runs in `runtime.dtype` (float16 by default).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from crashcast.errors import ModelError
from crashcast.perception.base import FrameContext
from crashcast.perception.spec import BuildContext, backend
from crashcast.runtime.weights import RANDOM_PREFIX, WeightFile, is_random
from crashcast.settings import BackendConfig
from crashcast.types import DepthMap, Detections

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINT = "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"
#: the metric outdoor checkpoints: (download size MB of model.safetensors, licence)
CHECKPOINTS: dict[str, tuple[float, str]] = {
    "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf": (99.2, "Apache-2.0"),
    "depth-anything/Depth-Anything-V2-Metric-Outdoor-Base-hf": (390.0, "CC-BY-NC-4.0"),
    "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf": (1340.0, "CC-BY-NC-4.0"),
}
HUB_FILES = ("config.json", "preprocessor_config.json", "model.safetensors")
RANDOM_ARCHS = ("tiny", "small", "base", "large")
PATCH = 14
OUTDOOR_MAX_DEPTH = 80  # metres (an int: transformers types max_depth as int)

#: the Dinov2 backbone and DPT neck of each architecture (transformers' Depth Anything conversion:
#: hidden size, heads, layers, the layers the neck reads, neck sizes, fusion size)
_ARCHS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden=32, heads=2, layers=4, out=[1, 2, 3, 4], neck=[8, 16, 32, 32], fusion=16, head=8, mlp_ratio=2),
    "small": dict(hidden=384, heads=6, layers=12, out=[3, 6, 9, 12], neck=[48, 96, 192, 384], fusion=64),
    "base": dict(hidden=768, heads=12, layers=12, out=[3, 6, 9, 12], neck=[96, 192, 384, 768], fusion=128),
    "large": dict(hidden=1024, heads=16, layers=24, out=[5, 12, 18, 24], neck=[256, 512, 1024, 1024], fusion=256),
}


@dataclass(frozen=True)
class Preprocess:
    """The image processor settings this backend applies (DPTImageProcessor's meaning)."""

    size: tuple[int, int] = (518, 518)
    keep_aspect_ratio: bool = True
    multiple: int = PATCH
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    bicubic: bool = True
    rescale_factor: float = 1 / 255

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        """From a `preprocessor_config.json` (missing keys keep Depth Anything V2's values)."""
        if d.get("do_pad"):
            raise ModelError("depth-anything-v2: image processors that pad (do_pad: true) are not supported")
        if d.get("do_resize") is False:
            raise ModelError("depth-anything-v2: the image processor must resize (do_resize: false is not supported)")
        p = cls()
        size = d.get("size") or {}
        if "height" in size and "width" in size:
            p = replace(p, size=(int(size["height"]), int(size["width"])))
        elif size:
            raise ModelError(f"depth-anything-v2: unsupported image processor size {size}")
        return replace(
            p,
            keep_aspect_ratio=bool(d.get("keep_aspect_ratio", p.keep_aspect_ratio)),
            multiple=int(d.get("ensure_multiple_of") or 1),
            mean=tuple(d.get("image_mean", p.mean)) if d.get("do_normalize", True) else (0.0, 0.0, 0.0),
            std=tuple(d.get("image_std", p.std)) if d.get("do_normalize", True) else (1.0, 1.0, 1.0),
            bicubic=int(d.get("resample", 3)) == 3,
            rescale_factor=float(d.get("rescale_factor", p.rescale_factor)) if d.get("do_rescale", True) else 1.0,
        )


def network_size(height: int, width: int, p: Preprocess) -> tuple[int, int]:
    """The (height, width) a frame is resized to: the DPT image processor's rule (keep the aspect ratio,
    scaling as little as possible towards `p.size`; sides rounded to multiples of `p.multiple`)."""

    def constrain(val: float) -> int:
        return max(p.multiple, round(val / p.multiple) * p.multiple)

    scale_h, scale_w = p.size[0] / height, p.size[1] / width
    if p.keep_aspect_ratio:
        if abs(1 - scale_w) < abs(1 - scale_h):
            scale_h = scale_w
        else:
            scale_w = scale_h
    return constrain(scale_h * height), constrain(scale_w * width)


def pixel_values(images: Any, p: Preprocess, dtype: Any = None) -> Any:
    """(B, 3, H, W) uint8 frames (a tensor) -> the model's normalised (B, 3, h, w) input."""
    import torch
    import torch.nn.functional as F

    h, w = network_size(images.shape[-2], images.shape[-1], p)
    x = images.float()
    if (h, w) != tuple(images.shape[-2:]):
        x = F.interpolate(x, size=(h, w), mode="bicubic" if p.bicubic else "bilinear", align_corners=False,
                          antialias=True).clamp_(0.0, 255.0)
    mean = torch.tensor(p.mean, device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(p.std, device=x.device).view(1, -1, 1, 1)
    x = (x * p.rescale_factor - mean) / std
    return x if dtype is None else x.to(dtype)


def architecture(arch: str, depth_estimation_type: str = "metric", max_depth: int = OUTDOOR_MAX_DEPTH) -> Any:
    """The `DepthAnythingConfig` of `arch` (see `_ARCHS`)."""
    from transformers import DepthAnythingConfig, Dinov2Config

    if arch not in _ARCHS:
        raise ValueError(f"unknown Depth Anything V2 architecture {arch!r}; choices: {', '.join(RANDOM_ARCHS)}")
    a = _ARCHS[arch]
    backbone = Dinov2Config(image_size=518, patch_size=PATCH, hidden_size=a["hidden"], num_attention_heads=a["heads"],
                            num_hidden_layers=a["layers"], mlp_ratio=a.get("mlp_ratio", 4), out_indices=a["out"],
                            reshape_hidden_states=False)
    return DepthAnythingConfig(backbone_config=backbone, patch_size=PATCH, reassemble_hidden_size=a["hidden"],
                               neck_hidden_sizes=a["neck"], fusion_hidden_size=a["fusion"],
                               head_hidden_size=a.get("head", 32), depth_estimation_type=depth_estimation_type,
                               max_depth=max_depth)


def random_model(arch: str) -> Any:
    """A randomly initialised metric outdoor model of `arch`. transformers' initialisation (normal,
    std 0.02) makes a random DPT's output a near-constant map; the neck and head convolutions get
    PyTorch's default initialisation instead, so the depth depends on the image."""
    import torch.nn as nn
    from transformers import DepthAnythingForDepthEstimation

    model = DepthAnythingForDepthEstimation(architecture(arch))
    for part in (model.neck, model.head):
        for m in part.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                m.reset_parameters()
    return model


def read_preprocess(path: str) -> Preprocess:
    """The settings of `path`'s `preprocessor_config.json` (a folder or hub id); Depth Anything V2's
    defaults when it has none."""
    from transformers.utils import cached_file

    file = cached_file(path, "preprocessor_config.json", _raise_exceptions_for_missing_entries=False,
                       _raise_exceptions_for_connection_errors=False)
    if file is None:
        log.info("depth-anything-v2: %s has no preprocessor_config.json; Depth Anything V2's settings used", path)
        return Preprocess()
    with open(file, encoding="utf-8") as f:
        return Preprocess.from_dict(json.load(f))


class DepthAnythingV2Config(BackendConfig):
    name: str = "depth-anything-v2"
    weights: str = Field(DEFAULT_CHECKPOINT, description="hub id (depth-anything/Depth-Anything-V2-Metric-Outdoor-"
                         "{Small,Base,Large}-hf), a local folder, or random:<arch> (random:tiny, random:small, ...)")
    input_size: int | None = Field(None, ge=PATCH, le=2044, description="the image processor's target size "
                                   "(pixels, a multiple of 14; 518 in the checkpoints); null: the checkpoint's")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if is_random(value) and value[len(RANDOM_PREFIX):] not in RANDOM_ARCHS:
            raise ValueError(f"{value!r}: random architectures are {', '.join(RANDOM_PREFIX + a for a in RANDOM_ARCHS)}")
        return value

    @field_validator("input_size")
    @classmethod
    def _input_size(cls, value: int | None) -> int | None:
        if value is not None and value % PATCH:
            raise ValueError(f"input_size {value} is not a multiple of {PATCH} (the ViT patch size)")
        return value


def depth_anything_weights(cfg: Any) -> list[WeightFile]:
    """The weight files a config needs: none for `random:*` or an existing local folder."""
    name = cfg.weights
    if is_random(name) or Path(name).expanduser().exists():
        return []
    size, licence = CHECKPOINTS.get(name, (None, "unknown (see the model card)"))
    return [WeightFile(name, "huggingface", licence, size, f"https://huggingface.co/{name}", HUB_FILES)]


class DepthAnythingV2:
    """`DepthEstimator`: (H, W) float32 depth per frame, metres (`is_metric`) for metric checkpoints."""

    name = "depth-anything-v2"

    def __init__(self, model: Any, preprocess: Preprocess, device: str, dtype: Any) -> None:
        # float32 weights, half precision through autocast on CUDA: the metric head's sigmoid x max_depth
        # in bfloat16 would step 0.16-0.31 m at 40-80 m (about 3 m/s of closing-speed noise at 10 Hz)
        import torch

        self.model = model.to(device=device, dtype=torch.float32).eval()
        _head_in_float32(self.model)
        self.preprocess = preprocess
        self.device, self.dtype = device, dtype
        config = model.config
        self.is_metric = config.depth_estimation_type == "metric"
        self.max_depth = float(config.max_depth) if self.is_metric else None

    def depth(self, frames: Sequence[np.ndarray], detections: Sequence[Detections] | None = None,
              contexts: Sequence[FrameContext] | None = None) -> list[DepthMap]:
        groups: dict[tuple[int, int], list[int]] = {}
        for i, f in enumerate(frames):
            groups.setdefault(tuple(f.shape[:2]), []).append(i)
        out: list[DepthMap | None] = [None] * len(frames)
        for idx in groups.values():
            maps = self._batch(np.stack([frames[i] for i in idx]))
            for k, i in enumerate(idx):
                out[i] = DepthMap(maps[k], is_metric=self.is_metric)
        return out  # type: ignore[return-value]

    def _batch(self, frames: np.ndarray) -> np.ndarray:
        """(B, H, W) float32 depth for B same-size (H, W, 3) uint8 frames."""
        import torch
        import torch.nn.functional as F

        h, w = frames.shape[1:3]
        half = str(self.device).startswith("cuda") and self.dtype != torch.float32
        with torch.inference_mode(), torch.autocast("cuda", dtype=self.dtype, enabled=half):
            images = torch.from_numpy(frames).to(self.device).permute(0, 3, 1, 2)
            pred = self.model(pixel_values=pixel_values(images, self.preprocess, torch.float32)).predicted_depth
            pred = pred.float()[:, None]
            if tuple(pred.shape[-2:]) != (h, w):
                pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
            if self.is_metric:
                pred = pred.clamp_(0.0, self.max_depth)
            return pred[:, 0].cpu().numpy().astype(np.float32, copy=False)


def _head_in_float32(model: Any) -> None:
    """Run the depth head (its convolutions, the sigmoid and the x max_depth) in float32 even under
    autocast, on float32 copies of the neck's features."""
    import torch

    head = model.head
    forward = head.forward

    def float32_forward(hidden_states: Any, *args: Any, **kwargs: Any) -> Any:
        with torch.autocast(hidden_states[0].device.type, enabled=False):
            return forward([h.float() for h in hidden_states], *args, **kwargs)

    head.forward = float32_forward


def load_model(weights: str, ctx: BuildContext, input_size: int | None = None) -> tuple[Any, Preprocess]:
    """The model and its preprocessing from a hub id or folder, or a random one for `random:<arch>`."""
    if is_random(weights):
        model, pre = random_model(weights[len(RANDOM_PREFIX):]), Preprocess()
    else:
        from transformers import DepthAnythingForDepthEstimation

        path = ctx.weights(weights)
        model = DepthAnythingForDepthEstimation.from_pretrained(path)
        pre = read_preprocess(path)
    if input_size is not None:
        pre = replace(pre, size=(input_size, input_size))
    if pre.multiple % PATCH:
        log.warning("depth-anything-v2: the image processor rounds sizes to multiples of %d, not of the patch "
                    "size %d: the model drops the remainder", pre.multiple, PATCH)
    return model, pre


@backend("depth", "depth-anything-v2", DepthAnythingV2Config, requires=("torch", "transformers"),
          weights=depth_anything_weights)
def _build(cfg: DepthAnythingV2Config, ctx: BuildContext) -> DepthAnythingV2:
    model, pre = load_model(cfg.weights, ctx, cfg.input_size)
    return DepthAnythingV2(model, pre, ctx.device, ctx.dtype)
