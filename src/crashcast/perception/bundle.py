"""The backends of one perception config, built once per worker and reused for every clip.

Loading YOLOv8x or SAM2 takes seconds and gigabytes; a worker builds its `Backends` once (the
executor's per-worker setup, or a Ray actor's constructor) and `Perception` calls `reset()` before
each clip, so per-clip state (tracks, a video model's memory) never leaks from one clip to the next.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from crashcast.config import PerceptionConfig, RuntimeConfig
from crashcast.perception import registry
from crashcast.perception.spec import BuildContext

log = logging.getLogger(__name__)


@dataclass
class Backends:
    """One backend per stage (see `perception.base` for their Protocols)."""

    flow: Any
    detector: Any
    segmenter: Any
    tracker: Any
    depth: Any

    @classmethod
    def build(cls, cfg: PerceptionConfig, runtime: RuntimeConfig | None = None) -> Backends:
        ctx = BuildContext(cfg, runtime or RuntimeConfig())
        built = {stage: registry.create(stage, getattr(cfg, stage), ctx) for stage in registry.STAGES}
        log.debug("built perception backends %s", {s: getattr(b, "name", "?") for s, b in built.items()})
        return cls(**built)

    @property
    def names(self) -> dict[str, str]:
        return {stage: getattr(self, stage).name for stage in registry.STAGES}

    def reset(self) -> None:
        """Forget the previous clip: every backend with per-clip state has `reset()`."""
        for stage in registry.STAGES:
            reset = getattr(getattr(self, stage), "reset", None)
            if callable(reset):
                reset()
