"""The ego vehicle and burned-in overlays: pixels that stay put while the scene moves past them.

A dashcam films its own bonnet, mirrors, dashboard and wipers, and many recorders burn a clock, a
logo or a map into the picture. None of them moves with the road: where the scene streams past (a
good part of the picture moves) but a pixel's value does not change and its flow is nil, frame
after frame, the pixel is fixed to the camera. The evidence is gathered causally over the
clip (only frames where the camera moves count: a stopped car proves nothing), so the mask grows as
the clip goes on; `reset()` forgets it for the next clip.
"""

from __future__ import annotations

import cv2
import numpy as np


class EgoMask:
    """Per-clip estimate of the camera-fixed pixels (bonnet, mirrors, dashboard, burned-in text)."""

    def __init__(self, min_frames: int = 5, static_fraction: float = 0.85, max_diff: float = 12.0, max_flow_px: float = 0.3,
                 min_scene_flow_px: float = 0.5, scale: int = 4) -> None:
        self.min_frames = min_frames
        self.static_fraction = static_fraction
        self.max_diff = max_diff
        self.max_flow_px = max_flow_px
        self.min_scene_flow_px = min_scene_flow_px
        self.scale = scale
        self.reset()

    def reset(self) -> None:
        self._prev: np.ndarray | None = None
        self._static: np.ndarray | None = None  # per small pixel: moving frames in which it stayed put
        self._seen: np.ndarray | None = None  # per small pixel: frames in which it should have moved
        self._mask: np.ndarray | None = None

    def _small(self, img: np.ndarray) -> np.ndarray:
        h, w = img.shape[:2]
        return cv2.resize(img, (max(w // self.scale, 1), max(h // self.scale, 1)), interpolation=cv2.INTER_AREA)

    def update(self, frame: np.ndarray, flow_uv: np.ndarray | None) -> np.ndarray:
        """Add one frame's evidence (RGB frame, its flow from the previous perceived frame in pixels per
        frame); returns the current mask at the frame's size (bool)."""
        h, w = frame.shape[:2]
        gray = self._small(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)).astype(np.float32)
        if self._prev is None or self._prev.shape != gray.shape:
            self._static = np.zeros(gray.shape, np.float32)
            self._seen = np.zeros(gray.shape, np.float32)
            self._mask = None
        elif flow_uv is not None:
            mag = self._small(np.hypot(flow_uv[..., 0], flow_uv[..., 1]).astype(np.float32))
            diff = np.abs(gray - self._prev)
            # the camera moves (a repeated frame, a stopped car prove nothing): a good part of the scene streams
            if float(np.percentile(mag, 75)) > self.min_scene_flow_px and float(np.percentile(diff, 75)) > 1.5:
                # flow inside a textureless patch (a plain bonnet) is filled in from its surroundings:
                # there, only an unchanged value counts
                grad = cv2.morphologyEx(gray, cv2.MORPH_GRADIENT, np.ones((3, 3), np.uint8))
                still = (mag < self.max_flow_px) | ((grad < 3.0) & (diff < 1.0))
                self._seen += 1.0
                self._static += (diff < self.max_diff) & still
                self._mask = None
        self._prev = gray
        if self._mask is None or self._mask.shape != (h, w):
            self._mask = self._full_mask(h, w)
        return self._mask

    def _full_mask(self, h: int, w: int) -> np.ndarray:
        if self._seen is None or self._seen.max(initial=0) < self.min_frames:
            return np.zeros((h, w), bool)
        small = (self._static >= self.static_fraction * self._seen).astype(np.uint8)
        small = cv2.morphologyEx(small, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))  # lone still pixels: noise
        small = cv2.morphologyEx(small, cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))  # text: fill between glyphs
        big = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
        return cv2.dilate(big, np.ones((5, 5), np.uint8)).astype(bool)
