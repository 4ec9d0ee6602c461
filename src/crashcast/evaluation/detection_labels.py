"""Detections measured against hand labels on frames of real clips (tests/data/real_labels.json).

Used by the tests (a floor) and `benchmarks/classic_detector.py` (figures). Perception runs over the
whole clip the way `extract` runs it (decode at `video.fps` and `video.long_side`, every
`frame_step`-th frame, the same backends and road-motion context), and the detections at the
labelled times are matched to the labels class-agnostically (the classic detector's classes are
coarse guesses from box size): a detection is a true positive when it overlaps a counted label at
IoU >= the threshold (greedy, most confident first, each label once), ignored when it overlaps an
ignored label instead, else a false positive. A label is counted unless it is marked `ignore` or is
smaller than `MIN_HEIGHT_PX_PER_360` per 360 rows (a car beyond ~30 m).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from crashcast.config import CrashcastConfig
from crashcast.data.video import decode
from crashcast.perception.bundle import Backends
from crashcast.perception.pipeline import Perception
from crashcast.types import Detections

MIN_HEIGHT_PX_PER_360 = 22.0  # a 1.5 m tall car at 30 m with a 70 degree lens on a 640x360 frame


@dataclass
class LabelledFrame:
    clip: str  # the video's file name
    time_s: float
    frame_size: tuple[int, int]  # (width, height) the boxes are drawn on
    boxes: np.ndarray  # (n, 4) xyxy
    classes: list[str]
    ignore: np.ndarray  # (n,) bool: neither missed nor false when found

    @property
    def counted(self) -> np.ndarray:
        """The labels a detector must find: not ignored, and tall enough (within about 30 m)."""
        h = self.frame_size[1]
        tall = (self.boxes[:, 3] - self.boxes[:, 1]) >= MIN_HEIGHT_PX_PER_360 * h / 360.0 if len(self.boxes) else np.zeros(0, bool)
        return ~self.ignore & tall


def load_labels(path: str | Path) -> list[LabelledFrame]:
    doc = json.loads(Path(path).read_text())
    out = []
    for f in doc["frames"]:
        boxes = np.array([b["xyxy"] for b in f["boxes"]], np.float64).reshape(-1, 4)
        out.append(LabelledFrame(f["clip"], float(f["time_s"]), (int(f["frame_size"][0]), int(f["frame_size"][1])), boxes,
                                 [b["class"] for b in f["boxes"]], np.array([bool(b.get("ignore", False)) for b in f["boxes"]], bool)))
    return out


def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of xyxy boxes."""
    if not len(a) or not len(b):
        return np.zeros((len(a), len(b)))
    ix = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    inter = ix * iy
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


@dataclass
class Counts:
    tp: int = 0
    fp: int = 0
    fn: int = 0

    def add(self, other: Counts) -> None:
        self.tp, self.fp, self.fn = self.tp + other.tp, self.fp + other.fp, self.fn + other.fn

    @property
    def precision(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 1.0

    @property
    def recall(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 1.0


def match(pred_xyxy: np.ndarray, confidence: np.ndarray, frame: LabelledFrame, min_iou: float) -> Counts:
    """Greedy matching, most confident detection first; see the module docstring."""
    counted = frame.counted
    iou = iou_matrix(np.asarray(pred_xyxy, np.float64).reshape(-1, 4), frame.boxes)
    used = np.zeros(len(frame.boxes), bool)
    c = Counts()
    for i in np.argsort(-np.asarray(confidence, np.float64)):
        cand = np.flatnonzero(~used & counted & (iou[i] >= min_iou))
        if len(cand):
            used[cand[np.argmax(iou[i, cand])]] = True
            c.tp += 1
        elif np.any(~counted & (iou[i] >= min_iou)):
            continue  # found something we chose not to count
        else:
            c.fp += 1
    c.fn = int((counted & ~used).sum())
    return c


@dataclass
class LabelledDetections:
    """What perception found at one labelled frame: the detector's boxes and the tracked ones (full-frame pixels)."""

    frame: LabelledFrame
    detected: Detections
    tracked: Detections


@dataclass
class ClipRun:
    clip: str
    frames: list[LabelledDetections] = field(default_factory=list)
    frames_processed: int = 0
    stage_seconds: dict[str, float] = field(default_factory=dict)


def _scaled(det: Detections, sx: float, sy: float) -> Detections:
    xyxy = det.xyxy.astype(np.float64) * np.array([sx, sy, sx, sy])
    return Detections(xyxy, det.confidence, det.class_name, None, det.tracker_id, det.source)


def run_clip(video: str | Path, labelled: list[LabelledFrame], cfg: CrashcastConfig, backends: Backends | None = None) -> ClipRun:
    """Perceive the whole clip (as `extract` does) and keep the detections at the labelled times."""
    frames = decode(video, 0.0, None, cfg.video.fps, cfg.video.long_side, step=cfg.perception.frame_step)
    backends = backends or Backends.build(cfg.perception, cfg.runtime)
    h, w = frames.frames.shape[1:3]
    p = Perception(backends, cfg.perception, w, h, frames.fps, Path(video).stem)
    raw: dict[int, Detections] = {}
    detect = backends.detector.detect

    def recording(batch, contexts):  # the detector's own output, before tracking
        dets = detect(batch, contexts)
        for ctx, d in zip(contexts, dets, strict=True):
            xyxy = d.xyxy.astype(np.float64).copy()
            xyxy[:, [1, 3]] += ctx.origin_y
            raw[ctx.index] = Detections(xyxy, d.confidence, d.class_name, None, None, d.source)
        return dets

    backends.detector.detect = recording
    try:
        p.run_span(list(frames.frames), [float(t) for t in frames.times_s])
    finally:
        del backends.detector.detect  # the instance attribute: the class's method again
    out = ClipRun(Path(video).name, frames_processed=p.frames_processed, stage_seconds=dict(p.seconds))
    for lf in labelled:
        j = int(np.argmin(np.abs(frames.times_s - lf.time_s)))
        if abs(frames.times_s[j] - lf.time_s) > 0.5 / frames.fps * cfg.perception.frame_step:
            raise ValueError(f"{video}: no perceived frame at the labelled time {lf.time_s} s")
        sx, sy = lf.frame_size[0] / w, lf.frame_size[1] / h
        out.frames.append(LabelledDetections(lf, _scaled(raw.get(j, Detections.empty()), sx, sy),
                                             _scaled(p.detections[j], sx, sy)))
    return out


def run_labels(video_dir: str | Path, labels: list[LabelledFrame], cfg: CrashcastConfig) -> list[ClipRun]:
    """`run_clip` for every clip with labels (in the labels' order); backends built once."""
    backends = Backends.build(cfg.perception, cfg.runtime)
    clips: dict[str, list[LabelledFrame]] = {}
    for lf in labels:
        clips.setdefault(lf.clip, []).append(lf)
    runs = []
    for clip, lfs in clips.items():
        t0 = time.perf_counter()
        runs.append(run_clip(Path(video_dir) / clip, lfs, cfg, backends))
        runs[-1].stage_seconds["wall"] = time.perf_counter() - t0
    return runs


def score(runs: list[ClipRun], min_iou: float, which: str = "detected") -> dict[str, Counts]:
    """Counts per clip and over all ("all"); `which`: "detected" (the detector) or "tracked"."""
    out: dict[str, Counts] = {}
    total = Counts()
    for run in runs:
        c = Counts()
        for fd in run.frames:
            det = getattr(fd, which)
            c.add(match(det.xyxy, det.confidence, fd.frame, min_iou))
        out[run.clip] = c
        total.add(c)
    out["all"] = total
    return out
