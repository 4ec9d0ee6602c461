"""Metric depth from road geometry: a pinhole camera at a known height over a flat road.

A road pixel at row y lies at Z = f * h / (y - y_horizon). An object stands on the road, so all
of it is at the depth of its ground contact (the bottom of its box): its pixels get that depth.
Pixels above the horizon that belong to no object are unknown (NaN).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from crashcast.perception.base import FrameContext
from crashcast.perception.classic.detect import ground_depth_at_row
from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig
from crashcast.types import DepthMap, Detections


class GroundPlaneDepth:
    """`DepthEstimator` from the camera height, focal length and horizon (no weights)."""

    name = "classic-ground"

    def depth(self, frames: Sequence[np.ndarray], detections: Sequence[Detections], contexts: Sequence[FrameContext]) -> list[DepthMap]:
        out = []
        for frame, det, ctx in zip(frames, detections, contexts, strict=True):
            h, w = frame.shape[:2]
            rows = ground_depth_at_row(np.arange(h) + 0.5, ctx.camera).astype(np.float32)
            rows[~np.isfinite(rows)] = np.nan
            depth = np.repeat(rows[:, None], w, axis=1)
            order = np.argsort(det.xyxy[:, 3]) if len(det) else []  # far (higher bottom edge) first, near ones on top
            for i in order:
                x1, y1, x2, y2 = det.xyxy[i]
                z = float(ground_depth_at_row(y2, ctx.camera))
                region = det.mask[i] if det.mask is not None else None
                if region is None:
                    region = np.zeros((h, w), bool)
                    region[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
                depth[region] = z if np.isfinite(z) else np.nan
            out.append(DepthMap(depth, is_metric=True))
        return out


@backend("depth", "classic-ground", BackendConfig)
def _build(cfg: BackendConfig, ctx: BuildContext) -> GroundPlaneDepth:
    return GroundPlaneDepth()
