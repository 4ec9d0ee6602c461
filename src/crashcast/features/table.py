"""The feature table: one row per window, derived from its window_meta.json (the single source).

Columns: identifiers and labels, scene features, ego-path aggregates, third-party cues, and the
top-K closest objects flattened (`obj1_depth_m`, ...). Unknown values are NaN; an infinite TTC is
capped at `TTC_CAP_S` so models see "far in the future" rather than a missing value.

Ego-path aggregates over the settled objects in the path (seen in `MIN_FRAMES_FOR_TTC` perceived
frames): `path_min_ttc_s` the smallest TTC, `path_ttc_closing_mps` the closing speed (depth rate) of
that same object (of the nearest one when none has a TTC under the cap: the physics model counts a
TTC only when its own object closes), `path_max_closing_mps` the fastest closing, `path_min_depth_m`.

Third-party cues (`features.convergence`; features, so every tabular model trained on the table
uses them):
- `pair_dcpa_m`: the smallest distance two tracked objects come to each other within the next
  `PAIR_HORIZON_S` at their current velocities (road plane, centroids; `DEPTH_CAP_M` with no pair);
- `pair_tcpa_s`: when (s from the window's end; `TTC_CAP_S` with no pair);
- `pair_distance_m`, `pair_closing_mps`: that pair's distance now and how fast it shrinks;
- `pair_has_person`: 1 when one of the two is a person or cyclist;
- `motion_anomaly`: sudden image motion the ego motion does not explain (pixels/frame; NaN when
  perception measured none).
`pair_a_id`, `pair_b_id` (the two objects' track ids, NaN with no pair) are identifiers, not features.
"""

from __future__ import annotations

import math

import numpy as np

from crashcast.features.window_meta import WindowMeta

TTC_CAP_S = 10.0
DEPTH_CAP_M = 100.0
IN_PATH_M = 1.5  # an object whose nearest side is within this of the camera axis is in the ego path
MIN_FRAMES_FOR_TTC = 5  # a track seen in fewer perceived frames (0.5 s at 10 Hz) gives no TTC to aggregate

_OBJ_FIELDS = ["present", "depth_m", "depth_end_m", "closing_mps", "ttc_s", "lateral_m", "in_path", "speed_mps", "accel_mps2",
               "flow_mag", "occlusion", "mask_area", "is_vehicle", "is_person"]


#: the third-party feature columns (see the module docstring)
THIRD_PARTY_COLUMNS = ["pair_dcpa_m", "pair_tcpa_s", "pair_distance_m", "pair_closing_mps", "pair_has_person", "motion_anomaly"]


def feature_columns(top_k: int = 3) -> list[str]:
    scene = ["looming_per_s", "scene_ttc_s", "n_objects", "path_min_ttc_s", "path_ttc_closing_mps", "path_max_closing_mps",
             "path_min_depth_m", "min_ttc_s"]
    return scene + THIRD_PARTY_COLUMNS + [f"obj{k}_{f}" for k in range(1, top_k + 1) for f in _OBJ_FIELDS]


def _cap(v: float | None, cap: float) -> float:
    if v is None:
        return cap
    return float(min(v, cap)) if math.isfinite(v) else cap


def feature_row(meta: WindowMeta, top_k: int = 3) -> dict:
    row: dict = {
        "window_id": meta.window_id, "clip_id": meta.clip_id, "phase": meta.phase, "horizon_s": meta.horizon_s,
        "end_s": meta.end_s, "clamped": meta.clamped, "label": meta.label, "soft_target": meta.soft_target,
        "looming_per_s": meta.scene.looming_per_s, "scene_ttc_s": _cap(meta.scene.scene_ttc_s, TTC_CAP_S),
        "n_objects": meta.scene.n_objects,
    }
    objs = meta.objects
    in_path = [o for o in objs if o.lateral_offset_m is not None and o.lateral_offset_m < IN_PATH_M]
    settled = [o for o in in_path if o.frames_seen >= MIN_FRAMES_FOR_TTC]  # young tracks have no reliable rate yet
    row["path_min_ttc_s"] = min((_cap(o.ttc_s, TTC_CAP_S) for o in settled), default=TTC_CAP_S)
    # the object that TTC is (the first, i.e. nearest, on a tie) and its own closing speed
    first = min(settled, key=lambda o: _cap(o.ttc_s, TTC_CAP_S), default=None)
    row["path_ttc_closing_mps"] = (first.closing_speed_mps or 0.0) if first is not None else 0.0
    row["path_max_closing_mps"] = max((o.closing_speed_mps or 0.0 for o in settled), default=0.0)
    row["path_min_depth_m"] = min((_cap(o.mean_depth_m, DEPTH_CAP_M) for o in in_path), default=DEPTH_CAP_M)
    row["min_ttc_s"] = min((_cap(o.ttc_s, TTC_CAP_S) for o in objs if o.frames_seen >= MIN_FRAMES_FOR_TTC), default=TTC_CAP_S)
    p = meta.pair
    row.update({
        "pair_dcpa_m": p.dcpa_m if p else DEPTH_CAP_M, "pair_tcpa_s": p.tcpa_s if p else TTC_CAP_S,
        "pair_distance_m": p.distance_m if p else DEPTH_CAP_M, "pair_closing_mps": p.closing_mps if p else 0.0,
        "pair_has_person": float(bool(p) and bool({p.class_a, p.class_b} & {"person", "cyclist"})),
        "motion_anomaly": meta.scene.motion_anomaly if meta.scene.motion_anomaly is not None else np.nan,
        "pair_a_id": float(p.object_a) if p else np.nan, "pair_b_id": float(p.object_b) if p else np.nan,
    })
    for k in range(1, top_k + 1):
        o = objs[k - 1] if k <= len(objs) else None
        pre = f"obj{k}_"
        if o is None:
            row.update({pre + f: np.nan for f in _OBJ_FIELDS})
            row[pre + "present"] = 0.0
            continue
        seen = [i for i in meta.instances if i.object_id == o.object_id]  # in keyframe order
        row.update({
            pre + "present": 1.0,
            pre + "depth_m": _cap(o.mean_depth_m, DEPTH_CAP_M),
            pre + "depth_end_m": _cap(float(np.median(o.depth_track_m[-3:])) if o.depth_track_m else None, DEPTH_CAP_M),
            pre + "closing_mps": o.closing_speed_mps if o.closing_speed_mps is not None else np.nan,
            pre + "ttc_s": _cap(o.ttc_s, TTC_CAP_S),
            pre + "lateral_m": o.lateral_offset_m if o.lateral_offset_m is not None else np.nan,
            pre + "in_path": float(o.lateral_offset_m is not None and o.lateral_offset_m < IN_PATH_M),
            pre + "speed_mps": o.speed_mps if (o.speed_valid and o.speed_mps is not None) else np.nan,
            pre + "accel_mps2": o.accel_mps2 if (o.acc_valid and o.accel_mps2 is not None) else np.nan,
            # at the latest keyframe the object was seen; a measured 0 stays 0, never seen is NaN
            pre + "flow_mag": seen[-1].optical_flow.avg_mag if seen else np.nan,
            pre + "occlusion": seen[-1].occlusion if seen else np.nan,
            pre + "mask_area": seen[-1].mask_area if seen else np.nan,
            pre + "is_vehicle": float(o.class_name == "vehicle"),
            pre + "is_person": float(o.class_name in ("person", "cyclist")),
        })
    return row
