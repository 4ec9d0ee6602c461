"""Masks without a segmentation model: the detector's motion segment inside each box, else the box."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crashcast.perception.base import FrameContext
from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig
from crashcast.types import Detections


class BoxSegmenter:
    """`Segmenter` keeping masks a detector already made and filling the box for the others."""

    name = "classic-box"

    def segment(self, frames: Sequence[np.ndarray], detections: Sequence[Detections], contexts: Sequence[FrameContext]) -> list[Detections]:
        out = []
        for frame, det in zip(frames, detections, strict=True):
            h, w = frame.shape[:2]
            masks = np.zeros((len(det), h, w), bool) if det.mask is None else det.mask.copy()
            for i, (x1, y1, x2, y2) in enumerate(det.xyxy):
                if not masks[i].any():
                    masks[i, int(max(0, y1)) : int(min(h, np.ceil(y2))), int(max(0, x1)) : int(min(w, np.ceil(x2)))] = True
            out.append(Detections(det.xyxy, det.confidence, det.class_name, masks, det.tracker_id, det.source))
        return out


@backend("segmenter", "classic-box", BackendConfig)
def _build(cfg: BackendConfig, ctx: BuildContext) -> BoxSegmenter:
    return BoxSegmenter()
