"""Perception measured against the synthetic generator's ground truth.

Used by the tests (thresholds) and `benchmarks/perception_accuracy.py` (figures): depth error of
tracked vehicles, TTC error of the lead vehicle before a braking collision, track-id consistency
per window, and ego-path looming of positives vs negatives.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from crashcast.config import CrashcastConfig
from crashcast.data.video import decode
from crashcast.data.windows import clip_span, make_windows
from crashcast.features.kinematics import object_kinematics
from crashcast.perception.bundle import Backends
from crashcast.perception.pipeline import perceive
from crashcast.types import Clip, ClipPerception, Window


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


@dataclass
class ClipTruthReport:
    clip_id: str
    scenario: str
    target: int
    depth_rel_errors: list[float] = field(default_factory=list)
    ttc_abs_errors: list[float] = field(default_factory=list)
    windows_tracked: int = 0
    windows_single_id: int = 0
    looming_last_1_5s: float = 0.0
    looming_max: float = 0.0
    frames_processed: int = 0


def match_tracks(perc: ClipPerception, truth: dict, min_iou: float = 0.3) -> dict[int, list[tuple[int, int]]]:
    """For each true object id: [(perceived frame j, track id)] where a track box overlaps it best."""
    fps = truth["fps"]
    out: dict[int, list[tuple[int, int]]] = {}
    for j, t in enumerate(perc.times_s):
        k = min(round(t * fps), len(truth["frames"]) - 1)
        objs = [o for o in truth["frames"][k]["objects"] if o["box_xyxy"]]
        for tr in perc.tracks:
            sel = np.flatnonzero(tr.frame_index == j)
            if not len(sel):
                continue
            box = tr.box_xyxy[sel[0]]
            best = max(objs, key=lambda o: iou(box, np.array(o["box_xyxy"])), default=None)
            if best is not None and iou(box, np.array(best["box_xyxy"])) >= min_iou:
                out.setdefault(best["id"], []).append((j, tr.track_id))
    return out


def evaluate_clip(clip: Clip, truth: dict, cfg: CrashcastConfig) -> ClipTruthReport:
    rep = ClipTruthReport(clip.id, truth["scenario"], truth["target"])
    duration = truth["duration_s"]
    windows = make_windows(clip, duration, cfg.windows)
    start, end = clip_span(windows)
    frames = decode(clip.video_path, start, end, cfg.video.fps, cfg.video.long_side, step=cfg.perception.frame_step)
    perc = perceive(frames, cfg.perception, Backends.build(cfg.perception, cfg.runtime))
    rep.frames_processed = perc.frames_processed
    fps = truth["fps"]
    matches = match_tracks(perc, truth)
    objects = {o["id"]: o for o in truth["frames"][0]["objects"]}
    # depth of tracked vehicles (flat road, within 50 m)
    for oid, pairs in matches.items():
        if objects[oid]["class"] != "vehicle":
            continue
        for j, tid in pairs:
            tr = perc.track_by_id(tid)
            sel = np.flatnonzero(tr.frame_index == j)
            z = tr.depth_m[sel[0]]
            k = min(round(perc.times_s[j] * fps), len(truth["frames"]) - 1)
            zt = next(o["depth_m"] for o in truth["frames"][k]["objects"] if o["id"] == oid)
            if math.isfinite(z) and 3.0 < zt < 50.0:
                rep.depth_rel_errors.append(abs(z - zt) / zt)
    # one id per true object over each window (objects seen in at least half the window's frames)
    for w in windows:
        in_w = set(np.flatnonzero((perc.times_s >= w.start_s - 1e-6) & (perc.times_s <= w.end_s + 1e-6)).tolist())
        for _oid, pairs in matches.items():
            ids = [tid for j, tid in pairs if j in in_w]
            if len(ids) >= max(2, 0.5 * len(in_w)):
                rep.windows_tracked += 1
                rep.windows_single_id += int(len(set(ids)) == 1)
    # TTC of the lead vehicle in the last 3 s before a braking collision
    if truth["scenario"] == "lead_braking" and truth["event_kind"] == "collision" and 0 in matches:
        event = truth["time_of_event"]
        lead_tracks = {tid for _, tid in matches[0]}
        for t_end in np.arange(event - 3.0, event - 0.2, 0.1):
            k = round(t_end * fps)
            ttc_true = next(o["ttc_s"] for o in truth["frames"][k]["objects"] if o["id"] == 0)
            if ttc_true is None:
                continue
            w = Window(clip.id, "mini", 0.0, event, t_end - 1.5, t_end, (t_end - 1.5, t_end - 0.75, t_end), False, 1,
                       (None,) * 3, (None,) * 3, 1.0)
            best = None
            for tid in lead_tracks:
                kin = object_kinematics(perc.track_by_id(tid), perc.times_s, w, perc.camera, fps, cfg.features,
                                        cfg.perception.geometry.ego_front_m)
                if kin is not None and perc.track_by_id(tid).frame_index.max() >= np.argmin(np.abs(perc.times_s - t_end)) - 1:
                    best = kin
            if best is not None:
                est = best.ttc_s if math.isfinite(best.ttc_s) else 10.0
                rep.ttc_abs_errors.append(abs(min(est, 10.0) - min(ttc_true, 10.0)))
    # looming
    pos_end = truth["time_of_event"] if truth["target"] else None
    if pos_end is not None:
        sel = (perc.times_s >= pos_end - 1.5) & (perc.times_s <= pos_end)
        rep.looming_last_1_5s = float(perc.looming[sel].max()) if sel.any() else 0.0
    rep.looming_max = float(perc.looming.max()) if len(perc.looming) else 0.0
    return rep


