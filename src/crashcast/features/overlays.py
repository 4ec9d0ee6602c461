"""Keyframe overlays for human review: boxes, masks, track ids, class, depth and TTC, drawn with
`supervision` annotators (the paper's review images)."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np

from crashcast.runtime.store import atomic_write_bytes
from crashcast.types import Detections


def object_label(track_id: int, class_name: str, depth_m: float | None, ttc_s: float | None) -> str:
    parts = [f"#{track_id} {class_name}"]
    if depth_m is not None and math.isfinite(depth_m):
        parts.append(f"{depth_m:.0f}m")
    if ttc_s is not None and math.isfinite(ttc_s) and ttc_s < 10:
        parts.append(f"TTC {ttc_s:.1f}s")
    return " ".join(parts)


def draw(frame_rgb: np.ndarray, det: Detections, labels: list[str], caption: str | None = None) -> np.ndarray:
    """Annotated copy of an RGB frame (colours follow the track id)."""
    import supervision as sv

    scene = cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR)
    if len(det):
        sd = det.to_supervision()
        if sd.tracker_id is None:
            sd.tracker_id = np.arange(len(det))
        lookup = sv.ColorLookup.TRACK
        if sd.mask is not None:
            scene = sv.MaskAnnotator(opacity=0.35, color_lookup=lookup).annotate(scene, sd)
        scene = sv.BoxAnnotator(thickness=2, color_lookup=lookup).annotate(scene, sd)
        scale = max(0.35, frame_rgb.shape[1] / 1600)
        scene = sv.LabelAnnotator(color_lookup=lookup, text_scale=scale, text_padding=3, smart_position=True).annotate(scene, sd, labels=labels)
    if caption:
        cv2.rectangle(scene, (0, 0), (scene.shape[1], 18), (0, 0, 0), -1)
        cv2.putText(scene, caption, (4, 13), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (255, 255, 255), 1, cv2.LINE_AA)
    return cv2.cvtColor(scene, cv2.COLOR_BGR2RGB)


def write_png(path: str | Path, frame_rgb: np.ndarray) -> Path:
    ok, buf = cv2.imencode(".png", cv2.cvtColor(frame_rgb, cv2.COLOR_RGB2BGR))
    if not ok:
        raise RuntimeError(f"{path}: PNG encoding failed")
    return atomic_write_bytes(path, buf.tobytes())
