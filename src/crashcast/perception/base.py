"""One Protocol per perception stage. Classic (weight-free) and model backends implement the same ones.

Per-frame stages (flow, detector, segmenter, per-frame depth) take a batch (a sequence of frames,
and what earlier stages found for them) and return one result per frame: the pipeline hands them
`runtime.batch_size` frames at a time, so model backends batch on a GPU while the classic ones loop.
Frames are (H, W, 3) uint8 RGB. `FrameContext` carries what earlier stages learnt about a frame
(flow, the road's own motion) to the stages that can use it; model backends may ignore it.

Some stages see a whole clip span, not one frame: a `SpanTracker` (SAM2 video: propagation forward
and backward over the perceived frames) and a `SpanDepthEstimator` (Video Depth Anything: chunks of
frames). `extract` calls their span method; `predict` streams, so it calls their causal per-frame
method (`Tracker.update`, `DepthEstimator.depth`) after `reset()`, and they keep what they need.

Every backend is built once per worker (`perception.bundle.Backends`) and reused for many clips:
`reset()`, where a backend has it, forgets one clip before the next.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from crashcast.types import CameraModel, DepthMap, Detections, Flow


@dataclass
class FrameContext:
    """What the pipeline knows about one frame before detection.

    flow: motion from the previous processed frame (pixels per frame); road_flow: (H, W, 2) the
    flow the road plane alone would produce (from the ego-motion fit; None when unknown);
    off_road: (H, W) bool, pixels whose motion the road plane does not explain (obstacles);
    residual: (H, W) |flow - road_flow|; flow_valid: (H, W) bool, where the road moves little enough
    between perceived frames for flow to be trusted; parallax: (H, W) pixels per frame, the road's
    flow minus the flow at the horizon (camera rotation and shake removed): how much motion a
    standing object would differ by.

    origin_y: the row of the full frame where the perceived frame starts (a pipeline may perceive
    only the rows below the sky; `camera` is then the cropped camera); 0 for the full frame.
    """

    index: int
    time_s: float
    camera: CameraModel
    flow: Flow | None = None
    road_flow: np.ndarray | None = None
    off_road: np.ndarray | None = None
    residual: np.ndarray | None = None
    flow_valid: np.ndarray | None = None
    parallax: np.ndarray | None = None
    origin_y: int = 0


@runtime_checkable
class FlowEstimator(Protocol):
    name: str

    def flow(self, previous: Sequence[np.ndarray], current: Sequence[np.ndarray]) -> list[Flow]:
        """Flow from each previous frame to the matching current frame (pixels between the two)."""
        ...


@runtime_checkable
class Detector(Protocol):
    name: str

    def detect(self, frames: Sequence[np.ndarray], contexts: Sequence[FrameContext]) -> list[Detections]:
        """Objects in each frame (boxes, confidence, coarse class in `CLASS_NAMES`)."""
        ...


@runtime_checkable
class Segmenter(Protocol):
    name: str

    def segment(self, frames: Sequence[np.ndarray], detections: Sequence[Detections], contexts: Sequence[FrameContext]) -> list[Detections]:
        """The same detections with `mask` (n, H, W) filled in."""
        ...


@runtime_checkable
class Tracker(Protocol):
    name: str

    def reset(self) -> None:
        """Forget every track (a new clip starts)."""
        ...

    def update(self, frame: np.ndarray, detections: Detections, time_s: float) -> Detections:
        """Assign `tracker_id` to this frame's detections (frames arrive in time order)."""
        ...


@runtime_checkable
class SpanTracker(Tracker, Protocol):
    """A tracker that can also see a whole span at once (e.g. SAM2 video propagation, forward and
    backward): `track` gives each frame's detections their ids, including objects at frames
    before the one they were first detected in."""

    def track(self, frames: Sequence[np.ndarray], detections: Sequence[Detections], times_s: Sequence[float]) -> list[Detections]:
        """Tracked detections per frame (same length as `frames`); masks (n, H, W) filled in."""
        ...


@runtime_checkable
class DepthEstimator(Protocol):
    name: str

    def depth(self, frames: Sequence[np.ndarray], detections: Sequence[Detections], contexts: Sequence[FrameContext]) -> list[DepthMap]:
        """Dense depth per frame (metres when `is_metric`). A stateful backend (a sliding chunk for a
        video model) gets the frames in time order after `reset()`."""
        ...


@runtime_checkable
class SpanDepthEstimator(DepthEstimator, Protocol):
    """Depth over a whole span at once (e.g. Video Depth Anything's overlapping chunks)."""

    def reset(self) -> None:
        ...

    def depth_span(self, frames: Sequence[np.ndarray]) -> list[DepthMap]:
        """Dense depth for every frame of the span, consistent across it."""
        ...


@runtime_checkable
class MaskMerger(Protocol):
    """A detector whose output needs a second look once masks exist (the paper's fusion: boxes of
    two detectors that overlap and whose masks overlap are one object). The pipeline calls
    `merge_masks` on each frame's segmented detections."""

    def merge_masks(self, detections: Detections) -> Detections:
        ...


#: the Protocol every backend of a stage must satisfy
STAGE_PROTOCOLS: dict[str, type] = {
    "flow": FlowEstimator, "detector": Detector, "segmenter": Segmenter, "tracker": Tracker, "depth": DepthEstimator,
}
