"""`window_meta.json`: the paper's fields (names as printed in its Fig. 2: W. Zhu, "End-to-End
Vision-Language Fine-Tuning: Prompt-Based Early Collision Risk Assessment on Dashcam Videos") plus
crashcast's own.

One pydantic model is the schema: every file is validated when written and when read, and
`json_schema()` exports it for other tools. Infinite TTCs are written as null.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from crashcast.errors import InputLimitError, SchemaError
from crashcast.runtime.store import WINDOW_META_LIMIT, atomic_write_text, read_text_bounded

SCHEMA_VERSION = "1.3"  # 1.1: frame_paths entries are null when no keyframe image was written; 1.2: depth_kind;
# 1.3: objects' position_m/velocity_mps, the closest pair (`pair`), scene.motion_anomaly (absent in older files: null)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OpticalFlowStat(_Model):
    avg_mag: float = Field(description="mean flow magnitude inside the mask, pixels/frame")
    avg_ang: float = Field(description="angle of the mean flow vector, degrees (0 right, 90 down)")


class Instance(_Model):
    """One object at one keyframe (the paper's `instances` entries)."""

    frame_idx: int = Field(ge=0, le=2, description="keyframe index 0..2")
    object_id: int
    class_name: str
    box: list[float] = Field(min_length=4, max_length=4, description="[x1, y1, x2, y2] pixels")
    mask_area: float
    occlusion: float = Field(ge=0, le=1)
    optical_flow: OpticalFlowStat
    speed: float | None = Field(description="m/s from the 3D centroid's first difference (null at the first keyframe)")
    acceleration: float | None = Field(description="m/s^2 from the second difference (last keyframe only)")


class MaskStat(_Model):
    area: float
    occlusion: float


class ObjectSummary(_Model):
    """crashcast's per-object kinematics over the window (causal at its end)."""

    object_id: int
    class_name: str
    depth_m: list[float | None] = Field(min_length=3, max_length=3)
    centroid_m: list[list[float] | None] = Field(min_length=3, max_length=3)
    mean_depth_m: float | None
    depth_rate_mps: float | None
    closing_speed_mps: float | None
    ttc_s: float | None
    ttc_depth_s: float | None
    ttc_scale_s: float | None
    lateral_offset_m: float | None
    speed_valid: bool
    acc_valid: bool
    speed_mps: float | None
    accel_mps2: float | None
    frames_seen: int
    depth_track_m: list[float]
    depth_track_t: list[float]
    position_m: list[float] | None = Field(None, min_length=3, max_length=3, description="3D centroid at the window "
                                           "end, camera frame (x right, y down, z forward), m")
    velocity_mps: list[float] | None = Field(None, min_length=3, max_length=3, description="its velocity relative to "
                                             "the camera, m/s (robust fit over the last second)")


class PairSummary(_Model):
    """The two tracked objects that come closest to each other (`features.convergence.closest_pair`)."""

    object_a: int
    object_b: int
    class_a: str
    class_b: str
    distance_m: float = Field(description="road-plane distance of their centroids at the window end")
    tcpa_s: float = Field(ge=0, description="time to their closest approach at constant velocity (capped at the horizon)")
    dcpa_m: float = Field(ge=0, description="their centroid distance then")
    closing_mps: float = Field(description="how fast their distance shrinks now (negative: separating)")


class Scene(_Model):
    looming_per_s: float = Field(description="ego-path looming at the window end (1/s); contact in 1/looming s")
    scene_ttc_s: float | None
    n_objects: int
    motion_anomaly: float | None = Field(None, ge=0, description="sudden image motion the road-plane (ego) motion does "
                                         "not explain, pixels/frame (features.convergence.motion_anomaly); null: not measured")


class WindowMeta(_Model):
    # the paper's fields
    phase: Literal["max", "mid", "mini"]
    frame_paths: list[str | None] = Field(min_length=3, max_length=3, description="keyframe images, relative to the "
                                          "window folder; null when none was written (features.write_overlays: false)")
    frame_times: list[float] = Field(min_length=3, max_length=3)
    label: int = Field(ge=0, le=1)
    y_alert: list[float | None] = Field(min_length=3, max_length=3)
    y_event: list[float | None] = Field(min_length=3, max_length=3)
    instances: list[Instance]
    box_depths: list[dict[str, float | None]] = Field(min_length=3, max_length=3, description="per keyframe: object id -> depth (m)")
    mask_stats: list[dict[str, MaskStat]] = Field(min_length=3, max_length=3)
    # crashcast's
    schema_version: str = SCHEMA_VERSION
    clip_id: str
    window_id: str
    horizon_s: float
    start_s: float
    end_s: float
    clamped: bool
    anchor: str
    soft_target: float = Field(ge=0, le=1)
    keyframe_indices: list[int] = Field(min_length=3, max_length=3, description="frame numbers on the 30 fps grid")
    backends: dict[str, str] = Field(description="the backend that produced each perception stage")
    depth_kind: Literal["metric", "ground-aligned"] = Field(
        "metric", description="how object depths became metres: the depth backend's own metric output, or "
        "relative depth fitted to the ground plane of the road ahead")
    config_hash: str
    objects: list[ObjectSummary]
    scene: Scene
    pair: PairSummary | None = Field(None, description="the closest pair of tracked objects (third-party convergence); "
                                     "null when fewer than two objects have a settled 3D track")


def finite_or_none(v: float | None, ndigits: int = 4) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), ndigits)


def json_schema() -> dict:
    return WindowMeta.model_json_schema()


def write_window_meta(path: str | Path, meta: WindowMeta) -> Path:
    """Validate and write atomically."""
    WindowMeta.model_validate(meta.model_dump())
    return atomic_write_text(path, meta.model_dump_json(indent=1))


def read_window_meta(path: str | Path) -> WindowMeta:
    """Read and validate; a truncated or foreign file raises `SchemaError` naming it."""
    path = Path(path)
    try:
        data = json.loads(read_text_bounded(path, WINDOW_META_LIMIT, "window_meta.json"))
    except FileNotFoundError:
        raise SchemaError(f"{path}: not found") from None
    except InputLimitError as e:
        raise SchemaError(str(e)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{path}: not valid JSON (truncated by a killed run?): {e}") from None
    try:
        return WindowMeta.model_validate(data)
    except ValidationError as e:
        raise SchemaError(f"{path}: does not match the window_meta schema {SCHEMA_VERSION}: {e}") from None
