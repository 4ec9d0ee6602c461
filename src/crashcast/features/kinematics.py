"""Per-object kinematics over a window, from one clip's perception: the per-object features of
W. Zhu, "End-to-End Vision-Language Fine-Tuning: Prompt-Based Early Collision Risk Assessment on
Dashcam Videos" (Columbia University), section on per-object features (depth, 3-D centroid, mask
area, occlusion, optical flow, speed and acceleration per keyframe), plus time to contact (TTC).

All estimates are causal at the window's end (only frames up to it are used), so the same code
serves `predict`. Units: metres, seconds, metres/second; TTC is time to contact with the front
bumper (`ego_front_m` ahead of the camera); inf when nothing closes in.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from crashcast.settings import FeatureConfig
from crashcast.types import CameraModel, ClipPerception, ObjectTrack, Window

KEYFRAME_TOLERANCE_S = 0.1
CLOSING_FIT_S = 0.6  # depth rate: least squares over the last 0.6 s of the track
EXPANSION_FIT_S = 0.4
MIN_CLOSING_MPS = 0.3
VELOCITY_FIT_S = 1.0  # 3D centroid velocity: robust line fits over the last second of the track


@dataclass
class ObjectKinematics:
    """One object in one window. Per-keyframe lists have 3 entries (None where not seen)."""

    object_id: int
    class_name: str
    depth_m: list[float | None]
    box_xyxy: list[list[float] | None]
    centroid_m: list[list[float] | None]
    mask_area_px: list[float | None]
    occlusion: list[float | None]
    flow_mag_px: list[float | None]
    flow_ang_deg: list[float | None]
    speed_mps: list[float | None]
    accel_mps2: list[float | None]
    speed_valid: bool
    acc_valid: bool
    mean_depth_m: float
    depth_rate_mps: float | None  # d(depth)/dt at the window end (negative: closing)
    closing_speed_mps: float | None
    ttc_depth_s: float
    ttc_scale_s: float
    ttc_s: float
    lateral_offset_m: float | None
    frames_seen: int
    depth_track_m: list[float] = field(default_factory=list)
    depth_track_t: list[float] = field(default_factory=list)
    # the 3D centroid (camera frame, m) at the window's end and its velocity (m/s, relative to the
    # camera); None when the track has too few frames with depth in the last VELOCITY_FIT_S
    position_m: list[float] | None = None
    velocity_mps: list[float] | None = None


def centroid_motion(track: ObjectTrack, t: np.ndarray, rows: np.ndarray, end_s: float, cam: CameraModel,
                    max_depth_m: float) -> tuple[list[float] | None, list[float] | None]:
    """(position, velocity) of the track's 3D centroid at `end_s`, from the frames `rows` (indices
    into the track, times `t`) of the last VELOCITY_FIT_S: each frame's pixel centroid (the box centre
    without one) back-projected at its depth, a robust line fitted per axis; the position is the
    fitted line at `end_s`. None, None with fewer than 3 frames of valid depth."""
    sel = (t >= end_s - VELOCITY_FIT_S) & np.isfinite(track.depth_m[rows]) & (track.depth_m[rows] > 0) \
        & (track.depth_m[rows] < max_depth_m)
    if sel.sum() < 3:
        return None, None
    idx = rows[sel]
    z = track.depth_m[idx]
    if track.centroid_px is not None:
        u, v = track.centroid_px[idx, 0], track.centroid_px[idx, 1]
    else:
        b = track.box_xyxy[idx]
        u, v = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    pts = np.stack([(u - cam.cx) * z / cam.focal_px, (v - cam.cy) * z / cam.focal_px, z], axis=1)
    ts = t[sel]
    vel = [_fit_slope(ts, pts[:, i]) for i in range(3)]
    if any(x is None for x in vel):
        return None, None
    tm = float(np.mean(ts))
    pos = [float(np.median(pts[:, i] - vel[i] * (ts - tm)) + vel[i] * (end_s - tm)) for i in range(3)]
    return pos, [float(x) for x in vel]


def back_project(u: float, v: float, z: float, cam: CameraModel) -> list[float]:
    """Pixel (u, v) at depth z to camera coordinates (x right, y down, z forward), metres."""
    return [(u - cam.cx) * z / cam.focal_px, (v - cam.cy) * z / cam.focal_px, z]


def lateral_offset(box: np.ndarray, z: float, cam: CameraModel) -> float:
    """Lateral gap (m) between the camera's axis and the object's nearest side; 0 when it straddles it."""
    x1 = (box[0] - cam.cx) * z / cam.focal_px
    x2 = (box[2] - cam.cx) * z / cam.focal_px
    if x1 <= 0 <= x2:
        return 0.0
    return float(min(abs(x1), abs(x2)))


def _fit_slope(t: np.ndarray, y: np.ndarray) -> float | None:
    """Robust slope: least squares after dropping points far from a median-filtered line."""
    if len(t) < 3 or np.ptp(t) < 0.15:
        return None
    a, b = np.polyfit(t, y, 1)
    resid = np.abs(y - (a * t + b))
    keep = resid <= max(3 * np.median(resid), 1e-6)
    if keep.sum() >= 3:
        a, b = np.polyfit(t[keep], y[keep], 1)
    return float(a)


def object_kinematics(track: ObjectTrack, times_s: np.ndarray, window: Window, cam: CameraModel, fps: float,
                      cfg: FeatureConfig, ego_front_m: float) -> ObjectKinematics | None:
    """Kinematics of `track` in `window` (None if the track has no frame in the window)."""
    t_all = times_s[track.frame_index]
    in_win = (t_all >= window.start_s - KEYFRAME_TOLERANCE_S) & (t_all <= window.end_s + 1e-6)
    if not in_win.any():
        return None
    t = t_all[in_win]
    z = track.depth_m[in_win]
    boxes = track.box_xyxy[in_win]
    finite = np.isfinite(z)

    per_kf: dict[str, list] = {k: [] for k in ("depth", "box", "centroid", "area", "occl", "mag", "ang")}
    for kt in window.keyframe_times_s:
        near = np.abs(t - kt) <= KEYFRAME_TOLERANCE_S
        if not near.any():
            for v in per_kf.values():
                v.append(None)
            continue
        j = int(np.flatnonzero(near)[np.argmin(np.abs(t[near] - kt))])  # the nearest frame, in the window
        idx = np.flatnonzero(in_win)[j]  # the same frame, in the track
        zs = z[near & finite]
        zk = float(np.median(zs)) if len(zs) else None
        box = boxes[j]
        per_kf["depth"].append(zk)
        per_kf["box"].append([round(float(b), 1) for b in box])
        if track.centroid_px is not None:  # the mask's pixel centroid (the box centre where there was no mask)
            u, v = (float(c) for c in track.centroid_px[idx])
        else:
            u, v = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        per_kf["centroid"].append(back_project(u, v, zk, cam) if zk is not None else None)
        per_kf["area"].append(float(track.mask_area_px[idx]))
        per_kf["occl"].append(float(track.occlusion[idx]))
        per_kf["mag"].append(float(track.flow_mag_px[idx]))
        per_kf["ang"].append(float(track.flow_ang_deg[idx]))

    kts = window.keyframe_times_s
    speed: list[float | None] = [None, None, None]
    for i in (1, 2):
        a, b = per_kf["centroid"][i - 1], per_kf["centroid"][i]
        if a is not None and b is not None and kts[i] > kts[i - 1]:
            speed[i] = float(np.linalg.norm(np.subtract(b, a)) / (kts[i] - kts[i - 1]))
    accel: list[float | None] = [None, None, None]
    if speed[1] is not None and speed[2] is not None:
        accel[2] = float((speed[2] - speed[1]) / ((kts[2] - kts[0]) / 2))
    seen = int(in_win.sum())
    zk = [d for d in per_kf["depth"] if d is not None]
    depth_ok = bool(zk) and max(zk) < cfg.max_valid_depth_m
    speed_valid = sum(s is not None for s in speed) >= 1 and seen >= cfg.min_track_frames and depth_ok
    acc_valid = accel[2] is not None and seen >= cfg.min_track_frames + 2 and depth_ok

    # causal rates at the window's end
    recent = (t >= window.end_s - CLOSING_FIT_S) & finite
    rate = _fit_slope(t[recent], z[recent]) if recent.sum() >= 3 else None
    z_end = float(np.median(z[finite][-3:])) if finite.any() else math.nan
    closing = -rate if rate is not None else None
    ttc_depth = math.inf
    if closing is not None and closing > MIN_CLOSING_MPS and math.isfinite(z_end):
        ttc_depth = max(0.0, (z_end - ego_front_m) / closing)
    expansion = track.expansion_per_frame[in_win]
    exp_recent = (t >= window.end_s - EXPANSION_FIT_S) & np.isfinite(expansion)
    ttc_scale = math.inf
    if exp_recent.sum() >= 2:
        a = float(np.median(expansion[exp_recent])) * fps  # 1/s
        if a > 0.02:
            ttc_scale = 1.0 / a  # time to reach the camera
            if math.isfinite(z_end) and z_end > 0:
                ttc_scale *= max(0.0, (z_end - ego_front_m) / z_end)  # to the bumper instead
    estimates = [v for v in (ttc_depth, ttc_scale) if math.isfinite(v)]
    ttc = float(np.mean(estimates)) if estimates else math.inf
    if math.isfinite(ttc_depth) and math.isfinite(ttc_scale) and abs(ttc_depth - ttc_scale) > 0.5 * min(ttc_depth, ttc_scale) + 1.0:
        ttc = min(ttc_depth, ttc_scale)  # they disagree: be conservative
    last_box = boxes[-1]
    lat = lateral_offset(last_box, z_end, cam) if math.isfinite(z_end) else None
    position, velocity = centroid_motion(track, t, np.flatnonzero(in_win), window.end_s, cam, cfg.max_valid_depth_m)
    return ObjectKinematics(
        object_id=track.track_id, class_name=track.class_name,
        depth_m=per_kf["depth"], box_xyxy=per_kf["box"], centroid_m=per_kf["centroid"],
        mask_area_px=per_kf["area"], occlusion=per_kf["occl"], flow_mag_px=per_kf["mag"], flow_ang_deg=per_kf["ang"],
        speed_mps=speed, accel_mps2=accel, speed_valid=bool(speed_valid), acc_valid=bool(acc_valid),
        mean_depth_m=float(np.mean(zk)) if zk else (z_end if math.isfinite(z_end) else math.inf),
        depth_rate_mps=rate, closing_speed_mps=closing, ttc_depth_s=ttc_depth, ttc_scale_s=ttc_scale, ttc_s=ttc,
        lateral_offset_m=lat, frames_seen=seen,
        depth_track_m=[round(float(v), 3) for v in z[finite]], depth_track_t=[round(float(v), 4) for v in t[finite]],
        position_m=position, velocity_mps=velocity,
    )


def window_objects(perc: ClipPerception, window: Window, cfg: FeatureConfig, ego_front_m: float, fps: float) -> list[ObjectKinematics]:
    """Kinematics of every track seen in the window, closest (mean keyframe depth) first."""
    out = []
    for tr in perc.tracks:
        k = object_kinematics(tr, perc.times_s, window, perc.camera, fps, cfg, ego_front_m)
        if k is not None and k.frames_seen >= 2:
            out.append(k)
    out.sort(key=lambda o: o.mean_depth_m if math.isfinite(o.mean_depth_m) else 1e9)
    return out


def lookback_s(span_s: float) -> float:
    """How long before a window's end `window_objects` and `scene_looming` read perception, for a
    window of `span_s` seconds: its span plus the keyframe tolerance (the rate fits and the looming
    look back less). A streaming caller may forget frames older than that."""
    return span_s + KEYFRAME_TOLERANCE_S


def scene_looming(perc: ClipPerception, window: Window, span_s: float = 0.3) -> float:
    """Ego-path looming (1/s) at the window's end: the largest over its last `span_s` seconds."""
    sel = (perc.times_s <= window.end_s + 1e-6) & (perc.times_s >= window.end_s - span_s)
    return float(perc.looming[sel].max()) if sel.any() else 0.0
