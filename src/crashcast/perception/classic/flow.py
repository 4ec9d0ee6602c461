"""Dense optical flow with OpenCV's DIS (Kroeger et al. 2016): fast, weight-free, CPU."""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

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

    @staticmethod
    def _gray(img: np.ndarray) -> np.ndarray:
        return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_RGB2GRAY)

    def flow(self, previous: Sequence[np.ndarray], current: Sequence[np.ndarray]) -> list[Flow]:
        out = []
        for a, b in zip(previous, current, strict=True):
            uv = self._dis.calc(self._gray(a), self._gray(b), None)
            out.append(Flow(uv.astype(np.float32, copy=False)))
        return out
