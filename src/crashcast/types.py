"""The typed records passed between crashcast's stages.

Arrays are numpy; shapes and units are in each docstring. Stages never exchange loose dicts:
a backend converts its model's output to these types at its boundary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

Phase = Literal["max", "mid", "mini"]
#: How a window's anchor was chosen: the annotated event (positives), the end of the video (a positive
#: without an event time, with --missing-event end), a clip-id hash (negatives), or the present
#: moment (windows of a live risk timeline in `predict`).
AnchorSource = Literal["event", "video_end", "hashed", "now"]
PHASES: tuple[Phase, ...] = ("max", "mid", "mini")

#: Coarse object classes shared by every detector (model backends map their labels onto these).
CLASS_NAMES: tuple[str, ...] = ("vehicle", "person", "cyclist", "object")


@dataclass(frozen=True)
class Clip:
    """One annotated video.

    `time_of_event_s` is the collision/near-miss time for positives (None when unknown or for
    negatives); `time_of_alert_s` is the earliest time a human could have predicted it (optional).
    """

    id: str
    video_path: Path
    target: int
    time_of_event_s: float | None = None
    time_of_alert_s: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def is_positive(self) -> bool:
        return self.target == 1


@dataclass(frozen=True)
class Window:
    """A time window of a clip ending at its anchor (the event) minus a horizon.

    Times are seconds from the start of the video. `keyframe_times_s` are the three keyframes;
    `y_alert`/`y_event` are, per keyframe, the seconds from the keyframe to the alert/event
    (None for negatives or when the time is unknown). `soft_target` is the regression target in
    [0, 1] (see `crashcast.data.windows.soft_target`).
    """

    clip_id: str
    phase: Phase
    horizon_s: float
    anchor_s: float
    start_s: float
    end_s: float
    keyframe_times_s: tuple[float, float, float]
    clamped: bool
    label: int
    y_alert: tuple[float | None, ...]
    y_event: tuple[float | None, ...]
    soft_target: float
    anchor_source: AnchorSource = "event"

    @property
    def id(self) -> str:
        """`<clip>_<phase>` for the paper's horizon 0, `<clip>_<phase>_h<horizon>` otherwise."""
        if self.horizon_s == 0:
            return f"{self.clip_id}_{self.phase}"
        return f"{self.clip_id}_{self.phase}_h{self.horizon_s:g}"

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class ClipFrames:
    """Decoded, resampled frames of one clip span.

    frames: (T, H, W, 3) uint8 RGB; times_s: (T,) float64 seconds from the video start, on the
    grid k / `fps`: every grid point of the span, or every `step`-th one (counted back from the
    grid point at the span's requested end) when only those were kept. `span_frames`: grid points in the span (T * step,
    give or take the first ones). `source_size` is the (width, height) of the original video.
    """

    clip_id: str
    frames: np.ndarray
    times_s: np.ndarray
    fps: float
    source_size: tuple[int, int]
    source_fps: float
    duration_s: float
    step: int = 1
    span_frames: int = 0

    def __post_init__(self) -> None:
        if not self.span_frames:
            self.span_frames = len(self.frames) * self.step
        if self.frames.ndim != 4 or self.frames.shape[-1] != 3:
            raise ValueError(f"frames must be (T, H, W, 3), got {self.frames.shape}")
        if len(self.times_s) != len(self.frames):
            raise ValueError(f"times_s has {len(self.times_s)} entries for {len(self.frames)} frames")

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the decoded frames."""
        return int(self.frames.shape[2]), int(self.frames.shape[1])


@dataclass
class Detections:
    """Objects found in one frame.

    xyxy: (n, 4) float32 pixels; confidence: (n,) float32 in [0, 1]; class_name: (n,) str;
    mask: optional (n, H, W) bool; tracker_id: optional (n,) int64; source: optional (n,) str
    (which detector produced each box). Mirrors `supervision.Detections` and converts to/from it.
    """

    xyxy: np.ndarray
    confidence: np.ndarray
    class_name: np.ndarray
    mask: np.ndarray | None = None
    tracker_id: np.ndarray | None = None
    source: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.xyxy = np.asarray(self.xyxy, dtype=np.float32).reshape(-1, 4)
        n = len(self.xyxy)
        self.confidence = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
        self.class_name = np.asarray(self.class_name, dtype=object).reshape(-1)
        for name in ("confidence", "class_name"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Detections.{name} must have {n} entries (one per box), got {len(getattr(self, name))}")
        if self.mask is not None:
            self.mask = np.asarray(self.mask, dtype=bool)
            if self.mask.ndim != 3 or len(self.mask) != n:
                raise ValueError(f"Detections.mask must be (n={n}, H, W), got {self.mask.shape}")
        if self.tracker_id is not None:
            self.tracker_id = np.asarray(self.tracker_id, dtype=np.int64).reshape(-1)
            if len(self.tracker_id) != n:
                raise ValueError(f"Detections.tracker_id must have {n} entries, got {len(self.tracker_id)}")
        if self.source is not None:
            self.source = np.asarray(self.source, dtype=object).reshape(-1)
            if len(self.source) != n:
                raise ValueError(f"Detections.source must have {n} entries, got {len(self.source)}")

    def __len__(self) -> int:
        return len(self.xyxy)

    @classmethod
    def empty(cls) -> Detections:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, object))

    def __getitem__(self, index: Any) -> Detections:
        idx = np.arange(len(self))[index] if not isinstance(index, np.ndarray) else index
        return Detections(
            self.xyxy[idx],
            self.confidence[idx],
            self.class_name[idx],
            None if self.mask is None else self.mask[idx],
            None if self.tracker_id is None else self.tracker_id[idx],
            None if self.source is None else self.source[idx],
        )

    def to_supervision(self) -> Any:
        """As `supervision.Detections`: class ids index `CLASS_NAMES` ("object" for any other name); the
        class names and, when set, the sources ride in its per-detection `data` ("class_name",
        "source"), so `from_supervision` gives back every field and anything that indexes the
        supervision detections (a tracker) keeps them with their boxes."""
        import supervision as sv

        data = {"class_name": self.class_name.copy()}
        if self.source is not None:
            data["source"] = self.source.copy()
        return sv.Detections(
            xyxy=self.xyxy.astype(np.float32),
            confidence=self.confidence,
            class_id=np.array([_class_index(c) for c in self.class_name], dtype=int),
            mask=self.mask,
            tracker_id=self.tracker_id,
            data=data,
        )

    @classmethod
    def from_supervision(cls, det: Any) -> Detections:
        """From `supervision.Detections`: class names from `data["class_name"]` (else from the class ids,
        as `CLASS_NAMES` indices), `source` from `data["source"]` (else None), confidence 1 when it has none."""
        n = len(det)
        data = det.data or {}
        names = data.get("class_name")
        if names is None:
            ids = det.class_id if det.class_id is not None else np.full(n, len(CLASS_NAMES) - 1)
            names = np.array([CLASS_NAMES[int(i)] if 0 <= int(i) < len(CLASS_NAMES) else "object" for i in ids])
        conf = det.confidence if det.confidence is not None else np.ones(n, np.float32)
        return cls(det.xyxy, conf, np.asarray(names, dtype=object), det.mask, det.tracker_id, data.get("source"))


def _class_index(name: str) -> int:
    return CLASS_NAMES.index(name) if name in CLASS_NAMES else len(CLASS_NAMES) - 1


@dataclass
class DepthMap:
    """Dense depth of one frame: depth_m (H, W) float32 metres along the optical axis; NaN where
    unknown (e.g. sky for ground-plane depth).

    `is_metric` False means relative depth: `depth_m` then holds values affine in inverse depth
    (a disparity up to scale and shift, larger = nearer: what relative depth models such as Depth
    Anything output), never metres; the pipeline aligns it to the ground plane or refuses it."""

    depth_m: np.ndarray
    is_metric: bool = True


@dataclass
class Flow:
    """Dense optical flow from the previous frame to this one: (H, W, 2) float32, pixels per frame."""

    uv: np.ndarray

    @property
    def magnitude(self) -> np.ndarray:
        return np.hypot(self.uv[..., 0], self.uv[..., 1])


@dataclass
class CameraModel:
    """Pinhole camera of the processed frames: focal length and principal point in pixels,
    horizon row (pixels) and camera height above the road (metres)."""

    focal_px: float
    cx: float
    cy: float
    horizon_y: float
    height_m: float

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float, height_m: float, horizon_frac: float = 0.5) -> CameraModel:
        focal = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(focal, width / 2.0, height / 2.0, horizon_frac * height, height_m)

    def cropped(self, top: int) -> CameraModel:
        """The same camera seeing only the rows from `top` down (a crop shifts the principal point)."""
        return CameraModel(self.focal_px, self.cx, self.cy - top, self.horizon_y - top, self.height_m)


@dataclass(frozen=True, slots=True)
class ObjectMeasurement:
    """One tracked object in one perceived frame, as `Perception` measures it; `ObjectTrack` holds
    the same fields as columns (one row per frame the track was seen in).

    frame_index: the perceived frame (counted from the clip's first perceived frame); track_id,
    class_name, confidence ([0, 1]): the tracked detection's; box_xyxy: (4,) full-frame pixels;
    depth_m: median (or mean: perception.object_depth) depth inside the mask, metres (NaN without a mask or a finite depth there);
    mask_area_px: the mask's pixels (the box's area without a mask); occlusion: the box's unmasked
    fraction in [0, 1]; flow_mag_px: mean flow magnitude inside the mask, pixels/frame (0 without
    flow); flow_ang_deg: angle of the mean flow vector (degrees, image coordinates, 0 = right,
    90 = down); expansion_per_frame: relative scale growth per frame (s - 1) from the flow inside
    the mask, NaN where it cannot be measured; centroid_px: (2,) the mask's pixel centroid (u, v)
    in full-frame pixels (the box centre without a mask or with an empty one).
    """

    frame_index: int
    track_id: int
    class_name: str
    box_xyxy: tuple[float, float, float, float]
    depth_m: float
    mask_area_px: float
    occlusion: float
    flow_mag_px: float
    flow_ang_deg: float
    expansion_per_frame: float
    confidence: float
    centroid_px: tuple[float, float]


@dataclass
class ObjectTrack:
    """One tracked object over a clip span, sampled at the frames where it was seen: the columnar
    form of its `ObjectMeasurement`s (see there for each field's meaning and units).

    frame_index: (T,) int frame indices into the clip span; box_xyxy: (T, 4) pixels; depth_m:
    (T,) metres; mask_area_px: (T,); occlusion: (T,) unmasked fraction of the box; flow_mag_px:
    (T,) mean flow magnitude inside the mask (pixels/frame); flow_ang_deg: (T,) mean flow angle
    (degrees, image coordinates, 0 = right, 90 = down); expansion_per_frame: (T,) relative scale
    growth per frame measured from the flow inside the mask (s - 1); confidence: (T,); centroid_px:
    (T, 2) the mask's pixel centroid (u, v) in full-frame pixels (the box centre where there is no
    mask), which kinematics back-projects with the depth into the 3D centroid. All float64.
    """

    track_id: int
    class_name: str
    frame_index: np.ndarray
    box_xyxy: np.ndarray
    depth_m: np.ndarray
    mask_area_px: np.ndarray
    occlusion: np.ndarray
    flow_mag_px: np.ndarray
    flow_ang_deg: np.ndarray
    expansion_per_frame: np.ndarray
    confidence: np.ndarray
    centroid_px: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.frame_index)

    @classmethod
    def from_measurements(cls, measurements: list[ObjectMeasurement], class_name: str, first_index: int = 0) -> ObjectTrack:
        """The track of one object's measurements (in time order). `class_name`: the track's class
        (a frame's label may differ); `frame_index` counts from the perceived frame `first_index`."""
        if not measurements:
            raise ValueError("ObjectTrack.from_measurements needs at least one measurement")
        ids = {m.track_id for m in measurements}
        if len(ids) != 1:
            raise ValueError(f"ObjectTrack.from_measurements got the measurements of several tracks: {sorted(ids)}")

        def column(name: str) -> np.ndarray:
            return np.array([getattr(m, name) for m in measurements], dtype=np.float64)

        return cls(
            track_id=measurements[0].track_id, class_name=class_name,
            frame_index=np.array([m.frame_index for m in measurements], dtype=np.int64) - first_index,
            box_xyxy=column("box_xyxy").reshape(-1, 4), depth_m=column("depth_m"), mask_area_px=column("mask_area_px"),
            occlusion=column("occlusion"), flow_mag_px=column("flow_mag_px"), flow_ang_deg=column("flow_ang_deg"),
            expansion_per_frame=column("expansion_per_frame"), confidence=column("confidence"),
            centroid_px=column("centroid_px").reshape(-1, 2),
        )


@dataclass
class ClipPerception:
    """Everything perception produced for one clip span, computed once and cut into windows.

    times_s: (F,) frame times; tracks: the object tracks; looming: (F,) ego-path looming, 1/s
    (expansion rate of off-road regions straight ahead; a surface at depth Z closing at v looms at
    v / Z); scene_ttc_s: (F,) 1 / looming (inf when nothing looms); detections: per frame, the
    tracked detections (masks only where kept, e.g. at keyframes) for overlays.
    """

    clip_id: str
    times_s: np.ndarray
    frame_size: tuple[int, int]
    camera: CameraModel
    tracks: list[ObjectTrack]
    looming: np.ndarray
    scene_ttc_s: np.ndarray
    detections: list[Detections]
    backends: dict[str, str]
    frames_processed: int
    source_index: np.ndarray | None = None  # (F,) index of each perceived frame in the decoded span
    stage_seconds: dict[str, float] = field(default_factory=dict)  # wall time per perception stage
    depth_kind: str = "metric"  # "metric" (the depth backend's metres) or "ground-aligned" (relative depth fitted to the road)
    # (F,) 99th percentile of the flow residual against the road-plane motion, pixels/frame; NaN where
    # not measured (no road-motion context, a failed road fit); None from a pipeline that keeps none
    motion_residual: np.ndarray | None = None

    def track_by_id(self, track_id: int) -> ObjectTrack:
        for t in self.tracks:
            if t.track_id == track_id:
                return t
        raise KeyError(track_id)
