"""Dense optical flow with OpenCV's DIS (Kroeger et al. 2016): fast, weight-free, CPU."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import cv2
import numpy as np
from pydantic import Field

from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig
from crashcast.types import Flow

_PRESETS = {
    "ultrafast": cv2.DISOPTICAL_FLOW_PRESET_ULTRAFAST,
    "fast": cv2.DISOPTICAL_FLOW_PRESET_FAST,
    "medium": cv2.DISOPTICAL_FLOW_PRESET_MEDIUM,
}


class DISFlow:
    """`FlowEstimator` backed by `cv2.DISOpticalFlow` (preset: ultrafast | fast | medium)."""

    name = "classic-flow"

    def __init__(self, preset: str = "fast", refine_iterations: int | None = None) -> None:
        if preset not in _PRESETS:
            raise ValueError(f"unknown DIS preset {preset!r}; choose one of {sorted(_PRESETS)}")
        self.preset = preset
        self._dis = cv2.DISOpticalFlow_create(_PRESETS[preset])
        if refine_iterations is not None:
            self._dis.setVariationalRefinementIterations(refine_iterations)
        self._last: tuple[np.ndarray, np.ndarray] | None = None  # the last frame converted to gray, and its gray

    def _gray(self, img: np.ndarray) -> np.ndarray:
        if img.ndim == 2:
            return img
        if self._last is not None and self._last[0] is img:  # streaming: this step's previous is the last step's current
            return self._last[1]
        self._last = (img, cv2.cvtColor(img, cv2.COLOR_RGB2GRAY))
        return self._last[1]

    def flow(self, previous: Sequence[np.ndarray], current: Sequence[np.ndarray]) -> list[Flow]:
        out = []
        for a, b in zip(previous, current, strict=True):
            uv = self._dis.calc(self._gray(a), self._gray(b), None)
            out.append(Flow(uv.astype(np.float32, copy=False)))
        return out


class DISFlowConfig(BackendConfig):
    name: str = "classic-flow"
    preset: Literal["ultrafast", "fast", "medium"] = "fast"
    refine_iterations: int | None = Field(None, ge=0, le=50, description="DIS variational refinement iterations "
                                          "(smooths the flow; most of DIS's time); null: the preset's")


@backend("flow", "classic-flow", DISFlowConfig)
def _build(cfg: DISFlowConfig, ctx: BuildContext) -> DISFlow:
    return DISFlow(cfg.preset, cfg.refine_iterations)
