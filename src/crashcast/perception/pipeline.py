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
from collections.abc import Sequence
from dataclasses import dataclass, field

import cv2
import numpy as np

from crashcast.config import PerceptionConfig
from crashcast.errors import ConfigError, PerceptionError
from crashcast.perception.base import FrameContext, MaskMerger, SpanDepthEstimator, SpanTracker
from crashcast.perception.bundle import Backends
from crashcast.perception.depth_align import apply_fit, fit_to_ground
from crashcast.perception.egomotion import fit_road_motion, magnitude
from crashcast.perception.motion_stats import corridor_mask, ego_path_looming, expansion_rate, mean_flow
from crashcast.types import (
    CameraModel,
    ClipFrames,
    ClipPerception,
    DepthMap,
    Detections,
    ObjectMeasurement,
    ObjectTrack,
)

log = logging.getLogger(__name__)

LOOMING_MEDIAN = 5  # perceived frames (0.5 s at the default 10 Hz)


@dataclass
class _TrackLog:
    """One track's class votes (over its whole life) and its measurements (only those still in the
    history when `Perception` forgets old frames). `last_index`: the last perceived frame it was
    seen in."""

    class_votes: dict[str, float] = field(default_factory=dict)
    measurements: list[ObjectMeasurement] = field(default_factory=list)
    last_index: int = -1


@dataclass
class FrameResult:
    """One processed frame: tracked detections (full-frame coordinates), one measurement per
    detection (in the same order), the scene's raw looming (1/s)."""

    index: int
    time_s: float
    detections: Detections
    objects: list[ObjectMeasurement]
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
    g = cfg.geometry
    return CameraModel.from_fov(width, height, g.hfov_deg, g.camera_height_m, g.horizon)


@dataclass
class _Perceived:
    """One frame after the per-frame stages (flow, context, detection, segmentation), waiting for
    tracking and depth. `ctx` keeps the camera and the flow only (the context arrays are dropped)."""

    frame: np.ndarray
    time_s: float
    ctx: FrameContext
    detections: Detections
    looming: float
    keep_masks: bool
    residual: float = float("nan")  # 99th percentile of the road-motion residual (px/frame); NaN: not measured


class Perception:
    """Perception of one clip, in time order; then `result()`.

    Two ways in, the same per-frame results:
    - `run_span(frames, times)` (extraction): the per-frame stages get `batch_size` frames at a
      time, and the span stages (a `SpanTracker`, a `SpanDepthEstimator`) see the whole span;
    - `step(frame, time_s)` (streaming prediction): one frame at a time, causal; the span stages run
      their per-frame form.

    `backends` are built once per worker (`Backends.build`) and reset here for the new clip;
    `backend_names` says which ones ran (stage -> name, as written in `window_meta.json`).
    `history_s` None keeps every frame (extraction: the result covers the whole span). A number
    keeps only the frames of the last `history_s` seconds (streaming): older frames, their track
    rows and the tracks left without rows are forgotten as new frames arrive, so memory and the
    cost of `result()` are bounded by the history, not the video's length. A window whose lookback
    (`features.kinematics.lookback_s`) lies inside the history gets exactly the same features from
    the pruned state as from the full one.
    """

    def __init__(self, backends: Backends, cfg: PerceptionConfig, width: int, height: int, fps: float, clip_id: str = "",
                 history_s: float | None = None, batch_size: int = 1) -> None:
        if history_s is not None and not history_s > 0:
            raise ValueError(f"{clip_id}: history_s must be > 0 seconds (or None to keep everything), got {history_s}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        backends.reset()  # a new clip: no tracks or video memory from the previous one
        self.backends = backends
        self.flow, self.detector, self.segmenter = backends.flow, backends.detector, backends.segmenter
        self.tracker, self.depth = backends.tracker, backends.depth
        self.cfg = cfg
        self.fps = fps
        self.clip_id = clip_id
        self.history_s = history_s
        self.batch_size = batch_size
        self.camera = camera_for(width, height, cfg)
        self.frame_size = (int(width), int(height))
        margin = cfg.geometry.sky_margin
        # the perceived rows: below the sky (objects stand on the road) unless sky_margin is None
        self.origin_y = 0 if margin is None else int(np.clip(self.camera.horizon_y - margin * height, 0, height - 64)) // 32 * 32
        self._cam = self.camera.cropped(self.origin_y)
        # the road-motion context runs only where something uses it: a detector that needs it, or looming
        self.uses_context = bool(getattr(self.detector, "uses_context", False)) or cfg.context.looming
        self._prev: tuple[np.ndarray, float] | None = None
        self._next_index = 0
        corridor = corridor_mask(width, height - self.origin_y, self._cam, cfg.geometry.ego_path_half_width_m)
        rows, cols = np.flatnonzero(corridor.any(axis=1)), np.flatnonzero(corridor.any(axis=0))
        r0, c0 = (int(rows[0]), int(cols[0])) if len(rows) else (0, 0)
        r1, c1 = (int(rows[-1]) + 1, int(cols[-1]) + 1) if len(rows) else (0, 0)
        self._corridor = corridor  # the ego path, and its bounding box (looming looks only there)
        self._cor_box = (slice(r0, r1), slice(c0, c1))
        self._cor_cam = self._cam.cropped(r0)
        self._tracks: dict[int, _TrackLog] = {}
        # a track with no row left keeps its class votes while the tracker may still revive its id
        # (e.g. ByteTrack drops a lost track after `lost_buffer_frames` updates, one per perceived frame)
        self._revivable_frames = int(getattr(self.tracker, "lost_buffer_frames", 30)) + 1
        self.first_index = 0  # the perceived-frame index of times[0] (frames before it are forgotten)
        self.times: list[float] = []
        self.looming: list[float] = []  # per kept frame, the causal median of the raw looming
        self.motion_residual: list[float] = []  # per kept frame, `_Perceived.residual`
        self._raw_looming: deque[float] = deque(maxlen=LOOMING_MEDIAN)
        self.detections: list[Detections] = []
        self.frames_processed = 0
        self.depth_kinds: set[str] = set()  # "metric" and/or "ground-aligned"
        self._depth_fit: tuple[float, float] | None = None  # the last good road fit of relative depth
        self.seconds: dict[str, float] = {}  # wall time per stage, summed over frames (see benchmarks/)

    @property
    def backend_names(self) -> dict[str, str]:
        """Stage -> the name of its backend (`ClipPerception.backends`)."""
        return self.backends.names

    # ------------------------------------------------------------------ the two ways in

    def step(self, frame: np.ndarray, time_s: float, keep_masks: bool = False) -> FrameResult:
        """Perceive one frame (full size; results in full-frame coordinates), causally."""
        (p,) = self._per_frame([frame], [time_s], [keep_masks])
        t = time.perf_counter()
        det = self.tracker.update(p.frame, p.detections, time_s)
        t = self._lap("track", t)
        (depth,) = self.depth.depth([p.frame], [det], [p.ctx])
        self._lap("depth", t)
        return self._record(p, det, depth)

    def run_span(self, frames: Sequence[np.ndarray], times_s: Sequence[float], keep_masks: Sequence[bool] | None = None) -> None:
        """Perceive a clip span (frames in time order): per-frame stages in batches, span stages
        over the whole span. Same results as `step` on each frame, for the per-frame backends."""
        keep = list(keep_masks) if keep_masks is not None else [False] * len(frames)
        span_tracker = isinstance(self.tracker, SpanTracker)
        span_depth = isinstance(self.depth, SpanDepthEstimator)
        pending: list[_Perceived] = []
        B = self.batch_size
        for i in range(0, len(frames), B):
            pending += self._per_frame(frames[i : i + B], times_s[i : i + B], keep[i : i + B])
            if not (span_tracker or span_depth):
                self._finish(pending)  # nothing waits for the whole span: track and measure as we go
                pending = []
        if pending:
            self._finish(pending, span_tracker, span_depth)

    # ------------------------------------------------------------------ stages

    def _per_frame(self, frames: Sequence[np.ndarray], times_s: Sequence[float], keep: Sequence[bool]) -> list[_Perceived]:
        """Flow, road-motion context and looming, detection, segmentation (and a detector's mask
        merge) for a batch of consecutive frames."""
        y0 = self.origin_y
        frames = [f[y0:] for f in frames]  # views: every stage below works on the perceived rows
        ctxs = []
        looming = []
        residual = [float("nan")] * len(frames)
        prevs, curs, idx = [], [], []
        prev = self._prev
        for j, (f, t) in enumerate(zip(frames, times_s, strict=True)):
            ctxs.append(FrameContext(self._next_index + j, float(t), self._cam, origin_y=y0))
            looming.append(0.0)
            if prev is not None:
                prevs.append(prev[0])
                curs.append(f)
                idx.append((j, max(1, round((float(t) - prev[1]) * self.fps))))  # grid frames between the two
            prev = (f, float(t))
        self._prev = prev
        self._next_index += len(frames)
        t = time.perf_counter()
        if prevs:
            flows = self.flow.flow(prevs, curs)
            t = self._lap("flow", t)
            for (j, k), flow in zip(idx, flows, strict=True):
                flow.uv /= k  # pixels per frame
                ctxs[j].flow = flow
                if self.uses_context:
                    looming[j], residual[j] = self._context(frames[j], ctxs[j], k)
            t = time.perf_counter()
        dets = self.detector.detect(frames, ctxs)
        t = self._lap("detect", t)
        dets = self.segmenter.segment(frames, dets, ctxs)
        if isinstance(self.detector, MaskMerger):
            dets = [self.detector.merge_masks(d) for d in dets]
        self._lap("segment", t)
        out = []
        for f, tm, ctx, det, loom, kp, res in zip(frames, times_s, ctxs, dets, looming, keep, residual, strict=True):
            slim = FrameContext(ctx.index, ctx.time_s, ctx.camera, flow=ctx.flow, origin_y=ctx.origin_y)
            out.append(_Perceived(f, float(tm), slim, det, loom, bool(kp), res))
        return out

    def _context(self, frame: np.ndarray, ctx: FrameContext, k: int) -> tuple[float, float]:
        """The road-motion context of one frame (fills `ctx`); returns the raw ego-path looming and the
        99th percentile of the residual flow where flow is valid (NaN when the road fit failed)."""
        t = time.perf_counter()
        flow = ctx.flow
        road = fit_road_motion(flow.uv, self._cam, stride=k)
        t = self._lap("road motion", t)
        c = self.cfg.context
        road_mag = magnitude(road.road_flow)
        hrow = int(np.clip(self._cam.horizon_y, 0, road.road_flow.shape[0] - 1))
        parallax = magnitude(road.road_flow - road.road_flow[hrow][None])
        threshold = c.residual_threshold_px + c.residual_relative * parallax
        residual = normal_residual(frame, flow.uv - road.road_flow)
        t = self._lap("residual", t)
        ctx.road_flow, ctx.residual, ctx.parallax = road.road_flow, residual, parallax
        ctx.flow_valid = road_mag * k < c.max_road_flow_px
        ctx.off_road = (residual > threshold) & ctx.flow_valid
        road_px = self._corridor & ctx.flow_valid
        off_fraction = float(ctx.off_road[road_px].mean()) if road_px.any() else 0.0
        if road.homography is None or off_fraction > c.max_off_road_fraction:
            # the road's own motion is not explained: a failed fit, not a wall of obstacles
            log.debug("%s t=%.2f: road motion fit failed; no motion cues this frame", self.clip_id, ctx.time_s)
            ctx.off_road = np.zeros_like(ctx.off_road)
            res_p99 = float("nan")
        else:  # every other pixel: the percentile of the residual (the motion anomaly's raw signal)
            valid = residual[::2, ::2][ctx.flow_valid[::2, ::2]]
            res_p99 = float(np.percentile(valid, 99)) if valid.size else float("nan")
        if not self.cfg.context.looming:
            return 0.0, res_p99
        box = self._cor_box
        looming = ego_path_looming(flow.uv[box], ctx.off_road[box], self._corridor[box], self.fps, camera=self._cor_cam)
        self._lap("looming", t)
        return looming, res_p99

    def _finish(self, items: list[_Perceived], span_tracker: bool = False, span_depth: bool = False) -> None:
        """Tracking and depth for perceived frames (in time order), then their object records."""
        t = time.perf_counter()
        frames = [p.frame for p in items]
        if span_tracker:
            dets = self.tracker.track(frames, [p.detections for p in items], [p.time_s for p in items])
            for p in items:  # the tracker's output replaces them: free the span's segmenter masks now
                p.detections = Detections.empty()
        else:
            dets = [self.tracker.update(p.frame, p.detections, p.time_s) for p in items]
        t = self._lap("track", t)
        if span_depth:
            depths = self.depth.depth_span(frames)
        else:
            depths = []
            for i in range(0, len(items), self.batch_size):
                sl = slice(i, i + self.batch_size)
                depths += self.depth.depth(frames[sl], dets[sl], [p.ctx for p in items[sl]])
        self._lap("depth", t)
        for p, det, depth in zip(items, dets, depths, strict=True):
            self._record(p, det, depth)

    def _metric(self, depth: DepthMap, det: Detections) -> np.ndarray:
        """Metres: metric depth as it is; relative depth aligned to the ground plane, or refused."""
        if depth.is_metric:
            self.depth_kinds.add("metric")
            return depth.depth_m
        if self.cfg.depth_alignment == "refuse":
            raise ConfigError(f"perception.depth: {self.depth.name!r} gives relative depth and "
                              "perception.depth_alignment is 'refuse'; use a metric depth model or depth_alignment: ground")
        self.depth_kinds.add("ground-aligned")
        objects = np.zeros(depth.depth_m.shape, bool)
        if det.mask is not None and len(det):
            objects = det.mask.any(axis=0)
        try:
            self._depth_fit = fit_to_ground(depth.depth_m, self._cam, self._corridor & ~objects, self.clip_id)
        except PerceptionError:
            if self._depth_fit is None:
                raise  # no frame of this clip showed enough road: nothing to fall back on
            # a lead vehicle can fill the road ahead just before a crash: keep the last good fit
            log.debug("%s: relative depth keeps the previous road fit this frame", self.clip_id)
        return apply_fit(depth.depth_m, *self._depth_fit)

    def _record(self, p: _Perceived, det: Detections, depth: DepthMap) -> FrameResult:
        """Per-object measurements of one tracked frame; appended to the clip's state."""
        t = time.perf_counter()
        index = self.frames_processed
        y0 = self.origin_y
        depth_m = self._metric(depth, det)
        flow = p.ctx.flow
        objects = []
        for i in range(len(det)):
            mask = det.mask[i] if det.mask is not None else None
            x1, y1, x2, y2 = (float(v) for v in det.xyxy[i])
            y1, y2 = y1 + y0, y2 + y0
            box_area = max((x2 - x1) * (y2 - y1), 1.0)
            area = float(mask.sum()) if mask is not None else box_area
            # statistics over the mask's own bounding region (plus a margin wider than the erosion of
            # `expansion_rate`): the same values as over the whole frame, at the cost of the object's size
            region = _mask_region(mask) if mask is not None else None
            z_vals = depth_m[region][mask[region]] if region is not None else np.array([np.nan])
            z_vals = z_vals[np.isfinite(z_vals)]
            stat = np.mean if self.cfg.object_depth == "mean" else np.median
            z = float(stat(z_vals)) if len(z_vals) else float("nan")
            u, v = mask_centroid(mask, region, (x1 + x2) / 2, (y1 + y2) / 2)
            v += y0 if region is not None else 0.0  # the mask's rows are the perceived (cropped) ones
            if flow is not None and region is not None:
                mag, ang = mean_flow(flow.uv[region], mask[region])
                expansion = expansion_rate(flow.uv[region], mask[region])
            elif flow is not None and mask is not None:  # an empty mask
                mag, ang = mean_flow(flow.uv, mask)
                expansion = expansion_rate(flow.uv, mask)
            else:
                mag, ang, expansion = 0.0, 0.0, None
            m = ObjectMeasurement(
                frame_index=index, track_id=int(det.tracker_id[i]), class_name=str(det.class_name[i]),
                box_xyxy=(x1, y1, x2, y2), depth_m=z, mask_area_px=area, occlusion=float(np.clip(1.0 - area / box_area, 0.0, 1.0)),
                flow_mag_px=float(mag), flow_ang_deg=float(ang), expansion_per_frame=np.nan if expansion is None else float(expansion),
                confidence=float(det.confidence[i]), centroid_px=(float(u), float(v)),
            )
            objects.append(m)
            log_ = self._tracks.setdefault(m.track_id, _TrackLog())
            log_.class_votes[m.class_name] = log_.class_votes.get(m.class_name, 0.0) + m.confidence
            log_.measurements.append(m)
            log_.last_index = index
        kept = _to_full_frame(det, y0, y0 + p.frame.shape[0], p.keep_masks)
        self._lap("objects", t)
        self.times.append(p.time_s)
        # causal median over the last LOOMING_MEDIAN frames: one noisy frame is not a threat
        self._raw_looming.append(float(p.looming))
        self.looming.append(float(np.median(np.array(self._raw_looming))))
        self.motion_residual.append(p.residual)
        self.detections.append(kept)
        self.frames_processed += 1
        if self.history_s is not None:
            self._forget_before(p.time_s - self.history_s)
        return FrameResult(index, p.time_s, kept, objects, p.looming)

    def _forget_before(self, time_s: float) -> None:
        """Drop the frames older than `time_s`, their track rows, and the tracks left without rows
        that the tracker can no longer revive. Called every step, so each call drops a frame or so."""
        n = 0
        while n < len(self.times) and self.times[n] < time_s:
            n += 1
        if n == 0:
            return
        del self.times[:n], self.looming[:n], self.detections[:n], self.motion_residual[:n]
        self.first_index += n
        for tid in list(self._tracks):
            tl = self._tracks[tid]
            k = 0
            while k < len(tl.measurements) and tl.measurements[k].frame_index < self.first_index:
                k += 1
            del tl.measurements[:k]
            if not tl.measurements and self.frames_processed - 1 - tl.last_index > self._revivable_frames:
                del self._tracks[tid]

    def _lap(self, stage: str, since: float) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - since
        return now

    def state_size(self) -> dict[str, int]:
        """What the state holds: frames, track rows (measurements), track logs (bounded when `history_s` is set)."""
        return {"frames": len(self.times), "track_rows": sum(len(tl.measurements) for tl in self._tracks.values()),
                "tracks": len(self._tracks)}

    def tracks(self) -> list[ObjectTrack]:
        """The tracks with measurements in the kept frames; `frame_index` indexes the kept frames (`times`)."""
        return [ObjectTrack.from_measurements(tl.measurements, max(tl.class_votes, key=tl.class_votes.get), self.first_index)
                for _, tl in sorted(self._tracks.items()) if tl.measurements]

    def result(self) -> ClipPerception:
        """The kept frames' perception (all of them unless `history_s` is set)."""
        looming = np.array(self.looming)
        with np.errstate(divide="ignore"):
            ttc = np.where(looming > 1e-6, 1.0 / np.maximum(looming, 1e-6), np.inf)
        return ClipPerception(
            clip_id=self.clip_id, times_s=np.array(self.times), frame_size=self.frame_size,
            camera=self.camera, tracks=self.tracks(), looming=looming, scene_ttc_s=ttc, detections=list(self.detections),
            backends=self.backend_names, frames_processed=self.frames_processed, stage_seconds=dict(self.seconds),
            depth_kind="ground-aligned" if "ground-aligned" in self.depth_kinds else "metric",
            motion_residual=np.array(self.motion_residual, float),
        )


def mask_centroid(mask: np.ndarray | None, region: tuple[slice, slice] | None, box_u: float, box_v: float) -> tuple[float, float]:
    """The pixel centroid (u, v) of a mask (in the mask's coordinates; `region` from `_mask_region`),
    or (box_u, box_v) when there is no mask or it is empty."""
    if mask is None or region is None:
        return box_u, box_v
    rows, cols = np.nonzero(mask[region])
    return float(cols.mean() + region[1].start), float(rows.mean() + region[0].start)


def _mask_region(mask: np.ndarray, margin: int = 4) -> tuple[slice, slice] | None:
    """The rows and columns around a mask's pixels, `margin` wider on each side; None when empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if not len(rows):
        return None
    return (slice(max(int(rows[0]) - margin, 0), int(rows[-1]) + margin + 1),
            slice(max(int(cols[0]) - margin, 0), int(cols[-1]) + margin + 1))


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


def perceive(frames: ClipFrames, cfg: PerceptionConfig, backends: Backends, keep_times: list[float] | None = None,
             batch_size: int = 1) -> ClipPerception:
    """Perceive every `frame_step`-th frame of `frames` (all of them when decoded with that step);
    masks are kept at the perceived frames nearest to `keep_times` (the keyframes, for overlays)."""
    w, h = frames.size
    p = Perception(backends, cfg, w, h, frames.fps, frames.clip_id, batch_size=batch_size)
    step = cfg.frame_step
    if frames.step == step:  # decoded at the perception rate already
        idx = np.arange(len(frames.frames))
    elif frames.step == 1:
        idx = processed_indices(len(frames.frames), step)
    else:
        raise ValueError(f"{frames.clip_id}: frames kept every {frames.step} grid points cannot be perceived every {step}")
    times = frames.times_s[idx]
    keep = {int(np.argmin(np.abs(times - t))) for t in (keep_times or [])}
    p.run_span([frames.frames[i] for i in idx], [float(frames.times_s[i]) for i in idx], [j in keep for j in range(len(idx))])
    result = p.result()
    result.source_index = idx
    return result
