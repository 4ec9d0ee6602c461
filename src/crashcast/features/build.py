"""A window's `window_meta.json` from the clip's perception: the window's objects (kinematics over
its keyframes), instances per keyframe, depths, mask statistics and the scene's looming.

Used by `extract` (one per window of a clip) and `predict` (the window ending now), so neither
imports the other.
"""

from __future__ import annotations

import math

import numpy as np

from crashcast.config import CrashcastConfig
from crashcast.features.convergence import closest_pair, motion_anomaly
from crashcast.features.kinematics import ObjectKinematics, scene_looming
from crashcast.features.window_meta import (
    Instance,
    MaskStat,
    ObjectSummary,
    OpticalFlowStat,
    PairSummary,
    Scene,
    WindowMeta,
    finite_or_none,
)
from crashcast.types import ClipPerception, Window


def _summary(o: ObjectKinematics) -> ObjectSummary:
    last = lambda xs: next((x for x in reversed(xs) if x is not None), None)  # noqa: E731
    return ObjectSummary(
        object_id=o.object_id, class_name=o.class_name,
        depth_m=[finite_or_none(d, 3) for d in o.depth_m],
        centroid_m=[[round(c, 3) for c in p] if p is not None else None for p in o.centroid_m],
        mean_depth_m=finite_or_none(o.mean_depth_m, 3), depth_rate_mps=finite_or_none(o.depth_rate_mps),
        closing_speed_mps=finite_or_none(o.closing_speed_mps), ttc_s=finite_or_none(o.ttc_s),
        ttc_depth_s=finite_or_none(o.ttc_depth_s), ttc_scale_s=finite_or_none(o.ttc_scale_s),
        lateral_offset_m=finite_or_none(o.lateral_offset_m, 3), speed_valid=o.speed_valid, acc_valid=o.acc_valid,
        speed_mps=finite_or_none(last(o.speed_mps)), accel_mps2=finite_or_none(last(o.accel_mps2)),
        frames_seen=o.frames_seen, depth_track_m=o.depth_track_m, depth_track_t=o.depth_track_t,
        position_m=[round(v, 3) for v in o.position_m] if o.position_m is not None else None,
        velocity_mps=[round(v, 3) for v in o.velocity_mps] if o.velocity_mps is not None else None,
    )


def _pair(objects: list[ObjectKinematics]) -> PairSummary | None:
    p = closest_pair(objects)
    if p is None:
        return None
    return PairSummary(object_a=p.a, object_b=p.b, class_a=p.class_a, class_b=p.class_b, distance_m=round(p.distance_m, 3),
                       tcpa_s=round(p.tcpa_s, 3), dcpa_m=round(p.dcpa_m, 3), closing_mps=round(p.closing_mps, 3))


def build_window_meta(w: Window, perc: ClipPerception, cfg: CrashcastConfig, frame_paths: list[str | None],
                      objects: list[ObjectKinematics], config_hash: str) -> WindowMeta:
    instances, box_depths, mask_stats = [], [], []
    for k in range(3):
        depths, stats = {}, {}
        for o in objects:
            if o.box_xyxy[k] is None:
                continue
            instances.append(Instance(
                frame_idx=k, object_id=o.object_id, class_name=o.class_name, box=o.box_xyxy[k],
                mask_area=round(o.mask_area_px[k], 1), occlusion=round(float(np.clip(o.occlusion[k], 0, 1)), 4),
                optical_flow=OpticalFlowStat(avg_mag=round(o.flow_mag_px[k], 4), avg_ang=round(o.flow_ang_deg[k], 2)),
                speed=finite_or_none(o.speed_mps[k]), acceleration=finite_or_none(o.accel_mps2[k]),
            ))
            depths[str(o.object_id)] = finite_or_none(o.depth_m[k], 3)
            stats[str(o.object_id)] = MaskStat(area=round(o.mask_area_px[k], 1), occlusion=round(float(o.occlusion[k]), 4))
        box_depths.append(depths)
        mask_stats.append(stats)
    looming = scene_looming(perc, w)
    anomaly = motion_anomaly(perc, w)
    fps = cfg.video.fps
    return WindowMeta(
        phase=w.phase, frame_paths=frame_paths, frame_times=list(w.keyframe_times_s), label=w.label,
        y_alert=list(w.y_alert), y_event=list(w.y_event), instances=instances, box_depths=box_depths, mask_stats=mask_stats,
        clip_id=w.clip_id, window_id=w.id, horizon_s=w.horizon_s, start_s=w.start_s, end_s=w.end_s, clamped=w.clamped,
        anchor=w.anchor_source, soft_target=w.soft_target,
        keyframe_indices=[round(t * fps) for t in w.keyframe_times_s], backends=perc.backends,
        config_hash=config_hash, objects=[_summary(o) for o in objects], depth_kind=perc.depth_kind,
        scene=Scene(looming_per_s=round(looming, 4), scene_ttc_s=finite_or_none(1.0 / looming if looming > 1e-6 else math.inf),
                    n_objects=len(objects), motion_anomaly=None if anomaly is None else round(anomaly, 4)),
        pair=_pair(objects),
    )
