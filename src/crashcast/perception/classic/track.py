"""Multi-object tracking with ByteTrack from the `trackers` package (Zhang et al. 2022)."""

from __future__ import annotations

import numpy as np
from pydantic import Field

from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig
from crashcast.types import Detections


class ByteTrack:
    """`Tracker` wrapping `trackers.ByteTrackTracker`; keeps class names, sources and masks with each box
    (`Detections.to_supervision` carries them)."""

    name = "bytetrack"

    def __init__(self, lost_track_buffer: int = 15, frame_rate: float = 30.0, activation_threshold: float = 0.25,
                 minimum_consecutive_frames: int = 2) -> None:
        self.lost_buffer_frames = lost_track_buffer  # updates a lost track survives (the pipeline keeps its class votes as long)
        self.params = dict(lost_track_buffer=lost_track_buffer, frame_rate=frame_rate,
                           track_activation_threshold=activation_threshold,
                           minimum_consecutive_frames=minimum_consecutive_frames,
                           high_conf_det_threshold=max(activation_threshold, 0.4), minimum_iou_threshold=0.1)
        self.reset()

    def reset(self) -> None:
        from trackers import ByteTrackTracker

        self._tracker = ByteTrackTracker(**self.params)

    def update(self, frame: np.ndarray, detections: Detections, time_s: float) -> Detections:
        if len(detections) == 0:
            self._tracker.update(Detections.empty().to_supervision())
            return detections
        tracked = self._tracker.update(detections.to_supervision())  # class names, sources ride in its data
        keep = tracked.tracker_id >= 0 if tracked.tracker_id is not None else np.zeros(len(tracked), bool)
        return Detections.from_supervision(tracked[keep])


class ByteTrackConfig(BackendConfig):
    name: str = "bytetrack"
    track_buffer_frames: int = Field(15, ge=1, le=10_000, description="perceived frames a lost track is kept for")


@backend("tracker", "bytetrack", ByteTrackConfig)
def _build(cfg: ByteTrackConfig, ctx: BuildContext) -> ByteTrack:
    return ByteTrack(lost_track_buffer=cfg.track_buffer_frames)
