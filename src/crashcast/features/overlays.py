"""Keyframe overlays for human review: boxes, masks, track ids, class, depth and TTC, drawn with
`supervision` annotators (the paper's review images)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import cv2
import numpy as np

from crashcast.runtime.store import atomic_write_bytes
from crashcast.types import ClipPerception, Detections, Window

if TYPE_CHECKING:
    from crashcast.features.kinematics import ObjectKinematics

KEYFRAME_NAMES = ("kf0.png", "kf1.png", "kf2.png")


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


def keyframe_caption(w: Window, k: int, how: str = "relative") -> str | None:
    """The line printed on keyframe `k` of window `w` (`features.keyframe_caption`). The images are
    what a VLM's prompt shows: 'relative' says only what the prompt's text says (keyframe k/3, its
    time relative to the last keyframe); 'full' adds the window id and the clip time, from which a
    model could learn when events happen in a clip (not from the scene); 'none' prints nothing."""
    if how == "none":
        return None
    t = w.keyframe_times_s[k]
    rel = t - w.keyframe_times_s[-1]
    if how == "full":
        return f"{w.id}  t={t:.2f}s  keyframe {k + 1}/3"
    if how == "relative":
        return f"keyframe {k + 1}/3  t={rel:+.2f}s".replace("+0.00", "0.00").replace("-0.00", "0.00")
    raise ValueError(f"keyframe caption {how!r}: choose relative, full or none")


def write_keyframes(folder: Path, w: Window, perc: ClipPerception, frame_of: Callable[[int], np.ndarray],
                    objects: Sequence[ObjectKinematics], names: Sequence[str] = KEYFRAME_NAMES,
                    caption: str = "relative") -> list[str]:
    """Write window `w`'s three keyframe overlays into `folder` (the perceived frame nearest each
    keyframe time, `frame_of(j)` giving the RGB image of perceived frame j): boxes, masks, ids,
    class, depth at that keyframe, and the TTC on the last; `caption` as `keyframe_caption`.
    Returns the names written."""
    by_id = {o.object_id: o for o in objects}
    for k, (name, t) in enumerate(zip(names, w.keyframe_times_s, strict=True)):
        j = int(np.argmin(np.abs(perc.times_s - t)))
        det = perc.detections[j]
        labels = []
        for i in range(len(det)):
            tid = int(det.tracker_id[i]) if det.tracker_id is not None else i
            o = by_id.get(tid)
            depth = o.depth_m[k] if o is not None else None
            ttc = o.ttc_s if (o is not None and k == 2) else None
            labels.append(object_label(tid, str(det.class_name[i]), depth, ttc))
        write_png(folder / name, draw(frame_of(j), det, labels, keyframe_caption(w, k, caption)))
    return list(names)
