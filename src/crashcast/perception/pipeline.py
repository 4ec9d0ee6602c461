"""Perception over a clip, frame by frame in time order (so the same code streams for `predict`).

flow (previous processed frame -> current) -> road motion fit -> detect -> segment -> track ->
depth -> per-object statistics; plus the detection-free ego-path looming. It perceives every
`frame_step`-th frame of the 30 fps grid (counted back from the clip span's last frame), so flow
spans several frames: more signal for slow motion, less work. Per clip it runs once over the
union of the windows' spans; windows are views of the result. Streaming (`predict`) keeps only the
last `history_s` seconds, so the state and the work per `result()` stay constant however long the
video.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from crashcast.config import PerceptionConfig
from crashcast.perception import registry
from crashcast.perception.base import FrameContext
from crashcast.perception.egomotion import fit_road_motion, magnitude
from crashcast.perception.motion_stats import corridor_mask, ego_path_looming, expansion_rate, mean_flow
from crashcast.types import CameraModel, ClipFrames, ClipPerception, Detections, ObjectTrack

log = logging.getLogger(__name__)

LOOMING_MEDIAN = 5  # perceived frames (0.5 s at the default 10 Hz)


@dataclass
class _TrackLog:
    """One track's class votes (over its whole life) and its rows (index, box, depth, ...; only
    those still in the history when `Perception` forgets old frames). `last_index`: the last
    perceived frame it was seen in."""

    class_votes: dict[str, float] = field(default_factory=dict)
    rows: list[tuple] = field(default_factory=list)
    last_index: int = -1


@dataclass
class FrameResult:
    """One processed frame: tracked detections, per-object measurements, scene looming (1/s)."""

    index: int
    time_s: float
    detections: Detections
    objects: list[dict]
    looming: float


def normal_residual(frame: np.ndarray, residual_uv: np.ndarray, min_gradient: float = 3.0) -> np.ndarray:
    """|residual flow . image gradient direction|, smoothed; 0 where the image has no texture.

    Flow along an edge (a lane line, a road border) is not observable (the aperture problem), so only
    the component across the local edges counts; textureless pixels (sky) tell nothing."""
    g = cv2.GaussianBlur(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 1.5)
    gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3) / 8
    gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3) / 8
    # structure-tensor-weighted projection: average (r.g)^2 and |g|^2 over a neighbourhood
    rg = residual_uv[..., 0] * gx + residual_uv[..., 1] * gy
    num = cv2.blur(rg * rg, (7, 7))
    den = cv2.blur(gx * gx + gy * gy, (7, 7))
    out = np.sqrt(np.maximum(num, 0.0) / np.maximum(den, 1e-6))
    out[den < min_gradient**2 / 4] = 0.0
    return out


def camera_for(width: int, height: int, cfg: PerceptionConfig) -> CameraModel:
    c = cfg.classic
    return CameraModel.from_fov(width, height, c.hfov_deg, c.camera_height_m, c.horizon)


class Perception:
    """Stateful perception of one clip; call `step` for each frame in time order, then `result`.

    `history_s` None keeps every frame (extraction: the result covers the whole span). A number
    keeps only the frames of the last `history_s` seconds (streaming): older frames, their track
    rows and the tracks left without rows are forgotten as new frames arrive, so memory and the
    cost of `result()` are bounded by the history, not the video's length. A window whose lookback
    (`features.kinematics.lookback_s`) lies inside the history gets exactly the same features from
    the pruned state as from the full one.
    """

    def __init__(self, cfg: PerceptionConfig, width: int, height: int, fps: float, clip_id: str = "",
                 history_s: float | None = None) -> None:
        if history_s is not None and not history_s > 0:
            raise ValueError(f"{clip_id}: history_s must be > 0 seconds (or None to keep everything), got {history_s}")
        self.cfg = cfg
        self.fps = fps
        self.clip_id = clip_id
        self.history_s = history_s
        self.camera = camera_for(width, height, cfg)
        margin = cfg.classic.sky_margin
        # the perceived rows: below the sky (objects stand on the road) unless sky_margin is None
        self.origin_y = 0 if margin is None else int(np.clip(self.camera.horizon_y - margin * height, 0, height - 64)) // 32 * 32
        self._cam = self.camera.cropped(self.origin_y)
        self.flow = registry.create("flow", cfg.flow, cfg)
        self.detector = registry.create("detector", cfg.detector, cfg)
        self.segmenter = registry.create("segmenter", cfg.segmenter, cfg)
        self.tracker = registry.create("tracker", cfg.tracker, cfg)
        self.depth = registry.create("depth", cfg.depth, cfg)
        self._prev: tuple[np.ndarray, float] | None = None
        corridor = corridor_mask(width, height - self.origin_y, self._cam, cfg.classic.ego_path_half_width_m)
        rows, cols = np.flatnonzero(corridor.any(axis=1)), np.flatnonzero(corridor.any(axis=0))
        r0, c0 = (int(rows[0]), int(cols[0])) if len(rows) else (0, 0)
        r1, c1 = (int(rows[-1]) + 1, int(cols[-1]) + 1) if len(rows) else (0, 0)
        self._corridor = corridor  # the ego path, and its bounding box (looming looks only there)
        self._cor_box = (slice(r0, r1), slice(c0, c1))
        self._cor_cam = self._cam.cropped(r0)
        self._tracks: dict[int, _TrackLog] = {}
        # a track with no row left keeps its class votes while the tracker may still revive its id
        # (ByteTrack drops a lost track after `track_buffer_frames` updates, one per perceived frame)
        self._revivable_frames = cfg.classic.track_buffer_frames + 1
        self.first_index = 0  # the perceived-frame index of times[0] (frames before it are forgotten)
        self.times: list[float] = []
        self.looming: list[float] = []  # per kept frame, the causal median of the raw looming
        self._raw_looming: deque[float] = deque(maxlen=LOOMING_MEDIAN)
        self.detections: list[Detections] = []
        self.frames_processed = 0
        self.seconds: dict[str, float] = {}  # wall time per stage, summed over frames (see benchmarks/)

    @property
    def backends(self) -> dict[str, str]:
        return {s: getattr(self, a).name for s, a in
                (("flow", "flow"), ("detector", "detector"), ("segmenter", "segmenter"), ("tracker", "tracker"), ("depth", "depth"))}

    def step(self, frame: np.ndarray, time_s: float, keep_masks: bool = False) -> FrameResult:
        """Perceive one frame (full size; results in full-frame coordinates)."""
        index = self.frames_processed
        y0 = self.origin_y
        full_h = frame.shape[0]
        frame = frame[y0:]  # a view: every stage below works on the perceived rows
        ctx = FrameContext(index, time_s, self._cam, origin_y=y0)
        looming = 0.0
        t = time.perf_counter()
        if self._prev is not None:
            prev, prev_t = self._prev
            k = max(1, round((time_s - prev_t) * self.fps))  # frames of the fps grid between the two
            (flow,) = self.flow.flow([prev], [frame])
            flow.uv /= k  # pixels per frame
            t = self._lap("flow", t)
            road = fit_road_motion(flow.uv, self._cam, stride=k)
            t = self._lap("road motion", t)
            c = self.cfg.classic
            road_mag = magnitude(road.road_flow)
            hrow = int(np.clip(self._cam.horizon_y, 0, road.road_flow.shape[0] - 1))
            parallax = magnitude(road.road_flow - road.road_flow[hrow][None])
            threshold = c.residual_threshold_px + c.residual_relative * parallax
            residual = normal_residual(frame, flow.uv - road.road_flow)
            t = self._lap("residual", t)
            ctx.flow, ctx.road_flow, ctx.residual, ctx.parallax = flow, road.road_flow, residual, parallax
            ctx.flow_valid = road_mag * k < c.max_road_flow_px
            ctx.off_road = (residual > threshold) & ctx.flow_valid
            road_px = self._corridor & ctx.flow_valid
            off_fraction = float(ctx.off_road[road_px].mean()) if road_px.any() else 0.0
            if road.homography is None or off_fraction > c.max_off_road_fraction:
                # the road's own motion is not explained: a failed fit, not a wall of obstacles
                log.debug("%s t=%.2f: road motion fit failed; no motion cues this frame", self.clip_id, time_s)
                ctx.off_road = np.zeros_like(ctx.off_road)
            box = self._cor_box
            looming = ego_path_looming(flow.uv[box], ctx.off_road[box], self._corridor[box], self.fps, camera=self._cor_cam)
            t = self._lap("looming", t)
        self._prev = (frame, time_s)
        (det,) = self.detector.detect([frame], [ctx])
        t = self._lap("detect", t)
        (det,) = self.segmenter.segment([frame], [det], [ctx])
        t = self._lap("segment", t)
        det = self.tracker.update(frame, det, time_s)
        t = self._lap("track", t)
        (depth,) = self.depth.depth([frame], [det], [ctx])
        t = self._lap("depth", t)
        objects = []
        for i in range(len(det)):
            mask = det.mask[i] if det.mask is not None else None
            x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
            y1, y2 = y1 + y0, y2 + y0
            box_area = max((x2 - x1) * (y2 - y1), 1.0)
            area = float(mask.sum()) if mask is not None else box_area
            z_vals = depth.depth_m[mask] if mask is not None and mask.any() else np.array([np.nan])
            z_vals = z_vals[np.isfinite(z_vals)]
            z = float(np.median(z_vals)) if len(z_vals) else float("nan")
            if ctx.flow is not None and mask is not None:
                mag, ang = mean_flow(ctx.flow.uv, mask)
                expansion = expansion_rate(ctx.flow.uv, mask)
            else:
                mag, ang, expansion = 0.0, 0.0, None
            tid = int(det.tracker_id[i])
            rec = {
                "track_id": tid, "class_name": str(det.class_name[i]), "box": (x1, y1, x2, y2), "depth_m": z,
                "mask_area": area, "occlusion": float(np.clip(1.0 - area / box_area, 0.0, 1.0)),
                "flow_mag": mag, "flow_ang": ang, "expansion": np.nan if expansion is None else expansion,
                "confidence": float(det.confidence[i]),
            }
            objects.append(rec)
            log_ = self._tracks.setdefault(tid, _TrackLog())
            log_.class_votes[rec["class_name"]] = log_.class_votes.get(rec["class_name"], 0.0) + rec["confidence"]
            log_.rows.append((index, x1, y1, x2, y2, z, area, rec["occlusion"], mag, ang, rec["expansion"], rec["confidence"]))
            log_.last_index = index
        kept = _to_full_frame(det, y0, full_h, keep_masks)
        self._lap("objects", t)
        self.times.append(time_s)
        # causal median over the last LOOMING_MEDIAN frames: one noisy frame is not a threat
        self._raw_looming.append(float(looming))
        self.looming.append(float(np.median(np.array(self._raw_looming))))
        self.detections.append(kept)
        self.frames_processed += 1
        if self.history_s is not None:
            self._forget_before(time_s - self.history_s)
        return FrameResult(index, time_s, kept, objects, looming)

    def _forget_before(self, time_s: float) -> None:
        """Drop the frames older than `time_s`, their track rows, and the tracks left without rows
        that the tracker can no longer revive. Called every step, so each call drops a frame or so."""
        n = 0
        while n < len(self.times) and self.times[n] < time_s:
            n += 1
        if n == 0:
            return
        del self.times[:n], self.looming[:n], self.detections[:n]
        self.first_index += n
        for tid in list(self._tracks):
            tl = self._tracks[tid]
            k = 0
            while k < len(tl.rows) and tl.rows[k][0] < self.first_index:
                k += 1
            del tl.rows[:k]
            if not tl.rows and self.frames_processed - 1 - tl.last_index > self._revivable_frames:
                del self._tracks[tid]

    def _lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now

    def state_size(self) -> dict[str, int]:
        """What the state holds: frames, track rows, track logs (bounded when `history_s` is set)."""
        return {"frames": len(self.times), "track_rows": sum(len(tl.rows) for tl in self._tracks.values()),
                "tracks": len(self._tracks)}

    def tracks(self) -> list[ObjectTrack]:
        """The tracks with rows in the kept frames; `frame_index` indexes the kept frames (`times`)."""
        out = []
        for tid, tl in sorted(self._tracks.items()):
            if not tl.rows:
                continue
            a = np.array(tl.rows, dtype=np.float64)
            out.append(ObjectTrack(
                track_id=tid, class_name=max(tl.class_votes, key=tl.class_votes.get),
                frame_index=a[:, 0].astype(int) - self.first_index, box_xyxy=a[:, 1:5], depth_m=a[:, 5], mask_area_px=a[:, 6],
                occlusion=a[:, 7], flow_mag_px=a[:, 8], flow_ang_deg=a[:, 9], expansion=a[:, 10], confidence=a[:, 11],
            ))
        return out

    def result(self) -> ClipPerception:
        """The kept frames' perception (all of them unless `history_s` is set)."""
        looming = np.array(self.looming)
        with np.errstate(divide="ignore"):
            ttc = np.where(looming > 1e-6, 1.0 / np.maximum(looming, 1e-6), np.inf)
        return ClipPerception(
            clip_id=self.clip_id, times_s=np.array(self.times), frame_size=(self.camera.cx * 2, self.camera.cy * 2),
            camera=self.camera, tracks=self.tracks(), looming=looming, scene_ttc_s=ttc, detections=list(self.detections),
            backends=self.backends, frames_processed=self.frames_processed, stage_seconds=dict(self.seconds),
        )


def _to_full_frame(det: Detections, y0: int, height: int, keep_masks: bool) -> Detections:
    """Detections of the perceived rows in full-frame coordinates (masks padded, or dropped)."""
    xyxy = det.xyxy.copy()
    xyxy[:, [1, 3]] += y0
    mask = None
    if keep_masks and det.mask is not None:
        mask = np.zeros((len(det), height, det.mask.shape[2]), bool)
        mask[:, y0:] = det.mask
    return Detections(xyxy, det.confidence, det.class_name, mask, det.tracker_id, det.source)


def processed_indices(n_frames: int, step: int) -> np.ndarray:
    """Indices of the frames perceived: every `step`-th, counted back from the last one."""
    return np.arange(n_frames - 1, -1, -step)[::-1]


def perceive(frames: ClipFrames, cfg: PerceptionConfig, keep_times: list[float] | None = None) -> ClipPerception:
    """Perceive every `frame_step`-th frame of `frames` (all of them when decoded with that step);
    masks are kept at the perceived frames nearest to `keep_times` (the keyframes, for overlays)."""
    w, h = frames.size
    p = Perception(cfg, w, h, frames.fps, frames.clip_id)
    step = cfg.classic.frame_step
    if frames.step == step:  # decoded at the perception rate already
        idx = np.arange(len(frames.frames))
    elif frames.step == 1:
        idx = processed_indices(len(frames.frames), step)
    else:
        raise ValueError(f"{frames.clip_id}: frames kept every {frames.step} grid points cannot be perceived every {step}")
    times = frames.times_s[idx]
    keep = {int(np.argmin(np.abs(times - t))) for t in (keep_times or [])}
    for j, i in enumerate(idx):
        p.step(frames.frames[i], float(frames.times_s[i]), keep_masks=j in keep)
    result = p.result()
    result.source_index = idx
    return result
