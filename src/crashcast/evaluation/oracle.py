"""Perception read off the synthetic generator's ground truth: every object tracked under its true
id, its true box and its true depth (nearest point), the box centre as its pixel centroid. Features
built from it show what the feature code measures when perception is perfect (tests and
`benchmarks/third_party.py` compare it with real perception)."""

from __future__ import annotations

import numpy as np

from crashcast.types import CameraModel, ClipPerception, ObjectMeasurement, ObjectTrack


def oracle_perception(truth: dict, frame_step: int = 3) -> ClipPerception:
    """A `ClipPerception` of a truth record (`data.synthetic.render_clip`), one perceived frame every
    `frame_step` frames counted back from the last (as `perception.pipeline.processed_indices`)."""
    cam = truth["camera"]
    camera = CameraModel(cam["focal_px"], cam["cx"], cam["cy"], cam["cy"], cam["height_m"])
    frames = truth["frames"]
    idx = np.arange(len(frames) - 1, -1, -frame_step)[::-1]
    per_obj: dict[int, list[ObjectMeasurement]] = {}
    classes: dict[int, str] = {}
    for j, k in enumerate(idx):
        for o in frames[k]["objects"]:
            box = o.get("box_xyxy")
            if box is None or o["depth_m"] <= 0.5:
                continue
            x1, y1, x2, y2 = box
            area = (x2 - x1) * (y2 - y1)
            per_obj.setdefault(o["id"], []).append(ObjectMeasurement(
                frame_index=j, track_id=o["id"], class_name=o["class"], box_xyxy=(x1, y1, x2, y2), depth_m=o["depth_m"],
                mask_area_px=area, occlusion=0.0, flow_mag_px=0.0, flow_ang_deg=0.0, expansion_per_frame=np.nan,
                confidence=1.0, centroid_px=((x1 + x2) / 2, (y1 + y2) / 2)))
            classes[o["id"]] = o["class"]
    tracks = [ObjectTrack.from_measurements(ms, classes[i]) for i, ms in sorted(per_obj.items())]
    times = np.array([frames[k]["t"] for k in idx], float)
    return ClipPerception(clip_id=truth["clip_id"], times_s=times, frame_size=(truth["width"], truth["height"]),
                          camera=camera, tracks=tracks, looming=np.zeros(len(idx)), scene_ttc_s=np.full(len(idx), np.inf),
                          detections=[], backends={"oracle": "truth"}, frames_processed=len(idx), source_index=idx)
