"""Video Depth Anything depth backend (Chen et al., 2025): dense depth that stays consistent over a clip.

`depth_span` runs the official offline inference (32-frame chunks, 10 frames of overlap, scale and
shift alignment between chunks for relative depth); `depth` (what `predict` calls, frames in time
order after `reset()`) runs the official streaming form, causal, with a bounded cache. See
`video_depth_anything/inference.py` for both.

Weights: the official checkpoints on the Hugging Face hub, one `.pth` file per repository:
`depth-anything/Metric-Video-Depth-Anything-{Small,Base,Large}` give depth in metres (`is_metric`),
`depth-anything/Video-Depth-Anything-{Small,Base,Large}` relative depth (values affine in inverse
depth, larger = nearer; the pipeline aligns them to the road). Small is Apache-2.0, Base and Large
CC-BY-NC-4.0 (non-commercial). A local `.pth`/`.safetensors` file works too (named as the official
files, or with `variant`), and `random:<arch>` builds a randomly initialised network (`tiny`,
`vits`, `vitb`, `vitl`, and `metric-<arch>` for the metric kind) for tests and speed benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator, model_validator

from crashcast.errors import ModelError
from crashcast.perception.base import FrameContext
from crashcast.perception.spec import BuildContext, backend
from crashcast.runtime.weights import RANDOM_PREFIX, WeightFile, is_random
from crashcast.settings import BackendConfig
from crashcast.types import DepthMap, Detections

DEFAULT_WEIGHTS = "depth-anything/Metric-Video-Depth-Anything-Small"
CHECKPOINT_SUFFIXES = (".pth", ".pt", ".safetensors")

#: constructor configs of the encoder sizes; `tiny` (vits encoder, a narrow head) is for CPU tests:
#: the motion modules' GroupNorm(32) and 8 heads need head widths that are multiples of 32
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "vits": {"encoder": "vits", "features": 64, "out_channels": (48, 96, 192, 384)},
    "vitb": {"encoder": "vitb", "features": 128, "out_channels": (96, 192, 384, 768)},
    "vitl": {"encoder": "vitl", "features": 256, "out_channels": (256, 512, 1024, 1024)},
    "tiny": {"encoder": "vits", "features": 32, "out_channels": (32, 32, 64, 64)},
}
RANDOM_ARCHS = (*ARCHITECTURES, *(f"metric-{a}" for a in ARCHITECTURES))
#: official checkpoint stems (`[metric_]video_depth_anything_<encoder>`) -> (architecture, metric)
VARIANT_NAMES: dict[str, tuple[str, bool]] = {
    f"{prefix}video_depth_anything_{enc}": (enc, prefix == "metric_")
    for prefix in ("", "metric_") for enc in ("vits", "vitb", "vitl")
}


@dataclass(frozen=True)
class Checkpoint:
    """One hub repository's checkpoint: its file, licence and approximate size (MB, float32)."""

    file: str
    licence: str
    size_mb: float

    @property
    def variant(self) -> str:
        return Path(self.file).stem


_SIZES_MB = {"vits": 116.0, "vitb": 458.0, "vitl": 1530.0}
_LICENCES = {"vits": "Apache-2.0", "vitb": "CC-BY-NC-4.0", "vitl": "CC-BY-NC-4.0"}
_HUB_SIZES = {"vits": "Small", "vitb": "Base", "vitl": "Large"}
CHECKPOINTS: dict[str, Checkpoint] = {
    f"depth-anything/{'Metric-' if metric else ''}Video-Depth-Anything-{_HUB_SIZES[enc]}":
        Checkpoint(f"{'metric_' if metric else ''}video_depth_anything_{enc}.pth", _LICENCES[enc], _SIZES_MB[enc])
    for metric in (True, False) for enc in ("vits", "vitb", "vitl")
}


class VideoDepthAnythingConfig(BackendConfig):
    name: str = "video-depth-anything"
    weights: str = Field(DEFAULT_WEIGHTS, description="hub id (depth-anything/[Metric-]Video-Depth-Anything-"
                         "{Small,Base,Large}), a local .pth/.safetensors file, or random:<arch> (random:tiny, "
                         "random:vits, random:metric-vits, ...)")
    variant: str | None = Field(None, description="the checkpoint's kind when its file name does not tell "
                                "([metric_]video_depth_anything_{vits,vitb,vitl})")
    input_size: int = Field(518, ge=14, le=4102, description="short side of the network input (pixels; 518 as trained)")
    limit_aspect: bool = Field(True, description="frames wider than 1.78:1 get a smaller input size (official; "
                               "False keeps input_size, at more memory)")
    chunk: int = Field(32, ge=4, le=32, description="frames per chunk (32 as trained)")
    overlap: int = Field(10, ge=3, le=31, description="frames a chunk shares with the previous one (10 as trained)")
    chunk_batch: int = Field(1, ge=1, le=64, description="chunks per network call in depth_span (GPU memory permitting)")

    @field_validator("weights")
    @classmethod
    def _weights(cls, value: str) -> str:
        if is_random(value):
            if value[len(RANDOM_PREFIX):] not in RANDOM_ARCHS:
                raise ValueError(f"{value!r}: random architectures are "
                                 f"{', '.join(RANDOM_PREFIX + a for a in RANDOM_ARCHS)}")
        elif not (value in CHECKPOINTS or value.endswith(CHECKPOINT_SUFFIXES) or Path(value).expanduser().is_dir()):
            raise ValueError(f"{value!r}: not a Video Depth Anything hub id ({', '.join(CHECKPOINTS)}), a "
                             f"{'/'.join(CHECKPOINT_SUFFIXES)} file or a folder holding one")
        return value

    @field_validator("variant")
    @classmethod
    def _variant(cls, value: str | None) -> str | None:
        if value is not None and value not in VARIANT_NAMES:
            raise ValueError(f"{value!r}: variants are {', '.join(VARIANT_NAMES)}")
        return value

    @model_validator(mode="after")
    def _layout(self) -> VideoDepthAnythingConfig:
        from crashcast.perception.models.video_depth_anything.inference import ChunkLayout

        ChunkLayout.make(self.chunk, self.overlap)  # ValueError naming the problem
        return self


def vda_weights(cfg: Any) -> list[WeightFile]:
    """The weight files a config needs: none for `random:*` or an existing local file or folder."""
    name = cfg.weights
    if is_random(name) or Path(name).expanduser().exists():
        return []
    if name in CHECKPOINTS:
        c = CHECKPOINTS[name]
        return [WeightFile(name, "huggingface", c.licence, c.size_mb,
                           f"https://huggingface.co/{name}/resolve/main/{c.file}", (c.file,))]
    stem = cfg.variant or Path(name).stem
    licence = _LICENCES[VARIANT_NAMES[stem][0]] if stem in VARIANT_NAMES else "unknown"
    return [WeightFile(name, "local", licence)]  # a file that is not there: nobody can fetch it


def _variant_of(cfg: VideoDepthAnythingConfig, path: Path) -> str:
    variant = cfg.variant or (CHECKPOINTS[cfg.weights].variant if cfg.weights in CHECKPOINTS else path.stem)
    if variant not in VARIANT_NAMES:
        raise ModelError(f"{path}: cannot tell the Video Depth Anything variant from the file name; set "
                         f"perception.depth.variant to one of {', '.join(VARIANT_NAMES)}")
    return variant


def checkpoint_path(cfg: VideoDepthAnythingConfig, ctx: BuildContext) -> Path:
    """The checkpoint file: a local file, a file in a folder (the weights folder's `<org>/<name>`),
    or the hub repository's file through huggingface_hub (its cache; a download if absent)."""
    resolved = ctx.weights(cfg.weights)
    path = Path(resolved)
    if path.is_file():
        return path
    if path.is_dir():
        expected = CHECKPOINTS[cfg.weights].file if cfg.weights in CHECKPOINTS else None
        if expected and (path / expected).is_file():
            return path / expected
        found = sorted(p for p in path.iterdir() if p.suffix in CHECKPOINT_SUFFIXES)
        if len(found) != 1:
            raise ModelError(f"{path}: expected {expected or 'one checkpoint file'} in this folder, found "
                             f"{', '.join(p.name for p in found) or 'none'}")
        return found[0]
    if cfg.weights not in CHECKPOINTS:
        raise ModelError(f"{cfg.weights}: checkpoint file not found")
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:
        raise ModelError(f"{cfg.weights}: loading from the hub needs huggingface_hub "
                         "(pip install 'crashcast[vision]'), or give a local checkpoint path") from None
    from crashcast.runtime.weights import WeightsUnavailable, fetch_instructions, hf_cache_dir, offline

    try:
        return Path(hf_hub_download(cfg.weights, CHECKPOINTS[cfg.weights].file, cache_dir=hf_cache_dir(),
                                    local_files_only=offline()))
    except (OSError, ValueError) as e:  # huggingface_hub's not-found and offline errors are OSErrors
        files = vda_weights(cfg)
        raise WeightsUnavailable(f"{cfg.weights}: checkpoint not available here ({type(e).__name__})\n"
                                 + fetch_instructions(files), files) from None


def load_model(cfg: VideoDepthAnythingConfig, ctx: BuildContext) -> Any:
    """The network (eval mode, CPU): a checkpoint loaded strictly, or random for `random:<arch>`."""
    from crashcast.perception.models.video_depth_anything.network import VideoDepthAnything

    if is_random(cfg.weights):
        arch = cfg.weights[len(RANDOM_PREFIX):]
        metric = arch.startswith("metric-")
        return VideoDepthAnything(**ARCHITECTURES[arch.removeprefix("metric-")], metric=metric).eval()
    path = checkpoint_path(cfg, ctx)
    arch, metric = VARIANT_NAMES[_variant_of(cfg, path)]
    return VideoDepthAnything(**ARCHITECTURES[arch], metric=metric).load_checkpoint(path).eval()


class VideoDepthAnythingDepth:
    """`SpanDepthEstimator`: one `DepthMap` per frame, (H, W) float32 at the frame's size; metres for
    the metric checkpoints, relative (affine in inverse depth) otherwise."""

    name = "video-depth-anything"

    def __init__(self, inference: Any) -> None:
        self.inference = inference  # video_depth_anything.inference.VideoDepthInference
        self.is_metric = inference.metric
        self._stream: Any = None

    def reset(self) -> None:
        """Forget the streaming cache (a new clip starts)."""
        self._stream = None

    def depth_span(self, frames: Sequence[np.ndarray]) -> list[DepthMap]:
        return [DepthMap(d, is_metric=self.is_metric) for d in self.inference.infer(frames)]

    def depth(self, frames: Sequence[np.ndarray], detections: Sequence[Detections] | None = None,
              contexts: Sequence[FrameContext] | None = None) -> list[DepthMap]:
        if self._stream is None:
            self._stream = self.inference.stream()
        return [DepthMap(d, is_metric=self.is_metric) for d in self._stream.step(frames)]


@backend("depth", "video-depth-anything", VideoDepthAnythingConfig, requires=("torch",), weights=vda_weights)
def _build(cfg: VideoDepthAnythingConfig, ctx: BuildContext) -> VideoDepthAnythingDepth:
    from crashcast.perception.models.video_depth_anything.inference import ChunkLayout, VideoDepthInference

    return VideoDepthAnythingDepth(VideoDepthInference(
        load_model(cfg, ctx), ctx.device, ctx.dtype, cfg.input_size, ChunkLayout.make(cfg.chunk, cfg.overlap),
        cfg.chunk_batch, cfg.limit_aspect))
