"""Video Depth Anything network (Chen et al., 2025): DINOv2 encoder + temporal DPT head.

`VideoDepthAnything(**config)` takes the official constructor config (encoder, features,
out_channels, metric, num_frames, pe); `VideoDepthAnything.from_config(name)` builds one of the four
published variants. `forward(x)` maps a clip (B, T, 3, H, W), H and W multiples of 14, ImageNet-
normalised, to (B, T, H, W). No inference procedure lives here (resizing to 518 px, 32-frame
windows with overlap, scale/shift alignment between windows): only the network.

Relative vs metric: the official code builds both with the same modules and the same forward pass
(the output head ends in ReLU for both; the final F.relu after the resize is redundant). The
`metric` flag only changes what the output means — affine-invariant inverse depth for the relative
checkpoints, depth in metres for the metric ones — and, in the official video inference, that
windows are stitched without a least-squares scale/shift fit. It is kept here as `metric` /
`output_kind` for that procedure.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .dinov2 import PATCH, DinoV2Encoder
from .dpt_temporal import DPTTemporalHead


@dataclass(frozen=True)
class VideoDepthConfig:
    """The official constructor config, as the state-dict manifest records it."""

    encoder: str
    features: int
    out_channels: tuple[int, ...]  # four entries
    metric: bool = False
    num_frames: int = 32
    pe: str = "ape"


_SMALL = {"encoder": "vits", "features": 64, "out_channels": (48, 96, 192, 384)}
_BASE = {"encoder": "vitb", "features": 128, "out_channels": (96, 192, 384, 768)}

#: the published checkpoints (file stem -> config); the vitl ones exist too but are not checked here
VARIANTS: dict[str, VideoDepthConfig] = {
    "video_depth_anything_vits": VideoDepthConfig(**_SMALL),
    "metric_video_depth_anything_vits": VideoDepthConfig(**_SMALL, metric=True),
    "video_depth_anything_vitb": VideoDepthConfig(**_BASE),
    "metric_video_depth_anything_vitb": VideoDepthConfig(**_BASE, metric=True),
}


class CheckpointMismatchError(RuntimeError):
    """A checkpoint's keys or shapes differ from the network's."""


def read_state_dict(path: str | Path) -> dict[str, Tensor]:
    """Tensors of a `.pth`/`.pt` (torch.load, weights_only) or `.safetensors` file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointMismatchError(f"{path}: not a flat state dict of tensors")
    return dict(state)


def _listing(keys: list[str], limit: int = 10) -> str:
    more = f", ... ({len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more


class VideoDepthAnything(nn.Module):
    def __init__(
        self,
        encoder: str = "vits",
        features: int = 64,
        out_channels: tuple[int, ...] | list[int] = (48, 96, 192, 384),
        metric: bool = False,
        num_frames: int = 32,
        pe: str = "ape",
        use_bn: bool = False,
        use_clstoken: bool = False,
    ) -> None:
        super().__init__()
        if pe != "ape":
            raise ValueError(f"pe={pe!r}: only 'ape' (the published checkpoints' sinusoidal table) is implemented")
        if use_bn or use_clstoken:
            raise ValueError("use_bn / use_clstoken are not used by any published checkpoint and not implemented")
        if len(out_channels) != 4:
            raise ValueError(f"out_channels needs 4 entries, got {list(out_channels)}")
        self.config = VideoDepthConfig(encoder, features, tuple(out_channels), metric, num_frames, pe)
        self.metric = metric
        self.pretrained = DinoV2Encoder(encoder)
        self.head = DPTTemporalHead(self.pretrained.embed_dim, features, list(out_channels), num_frames)

    @classmethod
    def from_config(cls, config: str | VideoDepthConfig | Mapping[str, Any]) -> VideoDepthAnything:
        """A variant by name (`video_depth_anything_vits`, `metric_video_depth_anything_vitb`, ...), a
        `VideoDepthConfig`, or a mapping of constructor arguments (e.g. the manifest's `config`)."""
        if isinstance(config, str):
            if config not in VARIANTS:
                raise ValueError(f"unknown variant {config!r}; known: {', '.join(VARIANTS)}")
            config = VARIANTS[config]
        if isinstance(config, VideoDepthConfig):
            config = asdict(config)
        return cls(**dict(config))

    @property
    def output_kind(self) -> str:
        return "metric depth (m)" if self.metric else "relative inverse depth (affine-invariant)"

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, 3, H, W) -> (B, T, H, W); T at most `num_frames`."""
        if x.ndim != 5:
            raise ValueError(f"expected (B, T, 3, H, W), got shape {tuple(x.shape)}")
        batch, frames, _, height, width = x.shape
        if frames > self.config.num_frames:
            raise ValueError(f"{frames} frames exceed num_frames={self.config.num_frames}")
        tokens = self.pretrained.features(x.flatten(0, 1))
        depth = self.head(tokens, (height // PATCH, width // PATCH), frames)
        if depth.shape[-2:] != (height, width):  # only if H, W were not multiples of 14
            depth = F.interpolate(depth, size=(height, width), mode="bilinear", align_corners=True)
        return depth.squeeze(1).unflatten(0, (batch, frames))

    def load_checkpoint(self, path: str | Path) -> VideoDepthAnything:
        """Load an official checkpoint (`.pth` or `.safetensors`) with strict=True; a key or shape
        mismatch raises `CheckpointMismatchError` naming the file and the offending keys."""
        state = read_state_dict(path)
        own = self.state_dict()
        missing = sorted(own.keys() - state.keys())
        unexpected = sorted(state.keys() - own.keys())
        shapes = sorted(f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
                        for k, v in own.items() if k in state and state[k].shape != v.shape)
        if missing or unexpected or shapes:
            parts = [f"missing keys ({len(missing)}): {_listing(missing)}" if missing else "",
                     f"unexpected keys ({len(unexpected)}): {_listing(unexpected)}" if unexpected else "",
                     f"shape mismatches (file vs model) ({len(shapes)}): {_listing(shapes)}" if shapes else ""]
            raise CheckpointMismatchError(
                f"{path}: does not match VideoDepthAnything({self.config.encoder}, metric={self.metric}): "
                + "; ".join(p for p in parts if p))
        self.load_state_dict(state, strict=True)
        return self


def load_checkpoint(path: str | Path, variant: str | VideoDepthConfig | Mapping[str, Any] | None = None
                    ) -> VideoDepthAnything:
    """Build the network (variant by name/config, or from the file's stem, e.g.
    `metric_video_depth_anything_vits.pth`) and load the checkpoint strictly; returned in eval mode."""
    if variant is None:
        variant = Path(path).stem
        if variant not in VARIANTS:
            raise ValueError(f"{path}: cannot tell the variant from the file name; pass variant= one of "
                             f"{', '.join(VARIANTS)}")
    return VideoDepthAnything.from_config(variant).load_checkpoint(path).eval()
