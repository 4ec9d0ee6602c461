"""Backend registry: a stage name maps to a factory taking the perception config.

Model backends (`yolo`, `grounding-dino`, `sam2`, `video-depth-anything`, `raft`) register here
too; their heavy imports happen inside their factories, so the classic path never imports torch.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crashcast.config import PerceptionConfig
from crashcast.errors import ConfigError

Factory = Callable[[PerceptionConfig], Any]
_REGISTRY: dict[str, dict[str, Factory]] = {"flow": {}, "detector": {}, "segmenter": {}, "tracker": {}, "depth": {}}


def register(stage: str, name: str) -> Callable[[Factory], Factory]:
    def deco(factory: Factory) -> Factory:
        if name in _REGISTRY[stage]:  # a second backend must not silently replace the first
            raise ValueError(f"a {stage} backend named {name!r} is already registered ({_REGISTRY[stage][name].__module__})")
        _REGISTRY[stage][name] = factory
        return factory

    return deco


def available(stage: str) -> list[str]:
    return sorted(_REGISTRY[stage])


def _check(stage: str, name: str) -> None:
    if stage not in _REGISTRY:
        raise KeyError(f"unknown stage {stage!r}; stages: {sorted(_REGISTRY)}")
    if name not in _REGISTRY[stage]:
        raise ConfigError(f"perception.{stage}: no {stage} backend named {name!r}; "
                          f"available: {', '.join(available(stage))}")


def validate(cfg: PerceptionConfig) -> None:
    """Raise ConfigError naming the field when a configured backend does not exist (before any work)."""
    for stage in _REGISTRY:
        _check(stage, getattr(cfg, stage))


def create(stage: str, name: str, cfg: PerceptionConfig) -> Any:
    """Build the backend `name` for `stage` ('flow', 'detector', 'segmenter', 'tracker', 'depth')."""
    _check(stage, name)
    return _REGISTRY[stage][name](cfg)


@register("flow", "classic-flow")
def _dis(cfg: PerceptionConfig) -> Any:
    from crashcast.perception.classic.flow import DISFlow

    return DISFlow(cfg.classic.flow_preset, cfg.classic.flow_refine_iterations)


@register("detector", "classic-motion")
def _motion(cfg: PerceptionConfig) -> Any:
    from crashcast.perception.classic.detect import MotionDetector

    return MotionDetector(cfg.classic)


@register("segmenter", "classic-box")
def _box(cfg: PerceptionConfig) -> Any:
    from crashcast.perception.classic.masks import BoxSegmenter

    return BoxSegmenter()


@register("tracker", "bytetrack")
def _bytetrack(cfg: PerceptionConfig) -> Any:
    from crashcast.perception.classic.track import ByteTrack

    return ByteTrack(lost_track_buffer=cfg.classic.track_buffer_frames)


@register("depth", "classic-ground")
def _ground(cfg: PerceptionConfig) -> Any:
    from crashcast.perception.classic.depth import GroundPlaneDepth

    return GroundPlaneDepth()
