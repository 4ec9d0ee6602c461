"""The classic detector's ego mask, lane-paint rejection, and its precision/recall on hand-labelled real frames."""

from __future__ import annotations

import itertools
from pathlib import Path

import cv2
import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.perception.bundle import Backends
from crashcast.perception.classic.detect import lane_paint
from crashcast.perception.classic.ego import EgoMask
from crashcast.perception.classic.flow import DISFlow
from crashcast.perception.pipeline import Perception

ROOT = Path(__file__).resolve().parents[2]
REAL = ROOT.parent / "shared" / "data" / "real"


def _scene(rng: np.random.Generator, shift: int, h: int = 180, w: int = 320) -> np.ndarray:
    """A textured scene scrolled down by `shift` pixels (the road streaming past)."""
    base = rng.integers(0, 255, (h // 4 + 200, w // 4, 3), dtype=np.uint8)
    big = cv2.resize(base, (w, base.shape[0] * 4), interpolation=cv2.INTER_LINEAR)
    return np.ascontiguousarray(big[800 - shift - h : 800 - shift])


def _paint_overlay(frame: np.ndarray) -> np.ndarray:
    out = frame.copy()
    out[150:, 60:260] = (200, 120, 20)  # the bonnet
    cv2.ellipse(out, (30, 110), (14, 10), 0, 0, 360, (40, 40, 40), -1)  # a mirror
    cv2.putText(out, "2024/01/01 12:00", (170, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (255, 255, 255), 1)  # a clock
    return out


def _ego_masks(frames: list[np.ndarray]) -> np.ndarray:
    ego, flow = EgoMask(), DISFlow("fast")
    mask = ego.update(frames[0], None)
    for a, b in itertools.pairwise(frames):
        (f,) = flow.flow([a], [b])
        mask = ego.update(b, f.uv)
    return mask


def test_ego_mask_finds_a_static_overlay_on_a_moving_scene():
    frames = [_paint_overlay(_scene(np.random.default_rng(1), 3 * i)) for i in range(10)]
    mask = _ego_masks(frames)
    fixed = np.zeros(mask.shape, bool)
    fixed[152:, 62:258] = True
    cv2.ellipse(fixed.view(np.uint8), (30, 110), (12, 8), 0, 0, 360, 1, -1)
    assert mask[fixed].mean() > 0.6, mask[fixed].mean()  # measured 0.73 (the mirror's rim moves with DIS's smoothing)
    moving = np.ones(mask.shape, bool)
    moving[140:, 50:270] = moving[95:125, 10:50] = moving[:30, 160:] = False
    assert mask[moving].mean() < 0.05, mask[moving].mean()


def test_ego_mask_learns_nothing_while_the_camera_stands_still():
    frame = _paint_overlay(_scene(np.random.default_rng(1), 0))
    assert not _ego_masks([frame] * 10).any()  # a stopped car: the road is as still as the bonnet


def _lane_frames(n: int = 12, w: int = 640, h: int = 360) -> list[np.ndarray]:
    """A flat grey road under a sky, with a solid edge line and dashed lane lines streaming toward the camera."""
    rng = np.random.default_rng(3)
    frames = []
    horizon = h // 2
    for i in range(n):
        img = np.zeros((h, w, 3), np.uint8)
        img[:horizon] = (150, 190, 235)
        road = 95 + rng.normal(0, 3, (h - horizon, w, 1))
        img[horizon:] = np.clip(road, 0, 255).astype(np.uint8)
        for lane_x in (-0.9, 0.9):  # solid lines, x at the bottom relative to the centre
            cv2.line(img, (w // 2, horizon), (int(w / 2 + lane_x * w / 2), h), (235, 235, 235), 4)
        for lane_x in (-0.3, 0.3):  # dashes on the road plane, moving down with the road
            for k in range(8):
                zf, zn = 6.0 + 8 * k - 0.9 * i, 9.0 + 8 * k - 0.9 * i  # metres: far and near end of a dash
                if zn <= 3:
                    continue
                rows = [horizon + 457 * 1.4 / max(z, 3.0) for z in (zf, zn)]
                xs = [w / 2 + lane_x * (r - horizon) / (h - horizon) * w for r in rows]
                cv2.line(img, (int(xs[0]), int(rows[0])), (int(xs[1]), int(rows[1])), (235, 235, 235), 3)
        frames.append(img)
    return frames


def test_lane_paint_alone_gives_no_boxes():
    cfg = load_config("classic")
    frames = _lane_frames()
    h, w = frames[0].shape[:2]
    # the markings are found as paint, the plain road beside them is not
    frame = frames[5]
    lines = (frame[h // 2 + 2 :] > 200).all(axis=2)
    paint = lane_paint(frame, h // 2 + 1)[h // 2 + 2 :]
    assert paint[lines].mean() > 0.9, paint[lines].mean()
    far = cv2.dilate(lines.astype(np.uint8), np.ones((9, 9), np.uint8)) == 0
    assert paint[far].mean() < 0.01, paint[far].mean()
    p = Perception(Backends.build(cfg.perception, cfg.runtime), cfg.perception, w, h, 10.0, "lanes")
    p.run_span(frames, [i / 10 for i in range(len(frames))])
    boxes = [d.xyxy.tolist() for d in p.detections if len(d)]
    assert boxes == [], boxes


@pytest.mark.skipif(not REAL.is_dir(), reason="needs ../shared/data/real")
def test_precision_recall_on_labelled_real_frames():
    """Floors a little under the figures measured when independent motion (the ego slow or stopped)
    went in (benchmarks/classic_detector.py, IoU 0.3: tracked precision 0.50, recall 0.17, 17 TP
    17 FP; detector 17 TP, 50 FP on 100 counted road users). Before it, with the rear-lamp cue:
    tracked 0.48 / 0.13 (13 TP 14 FP), detector 13 TP 45 FP. Before the lamps: tracked 0.41 / 0.09 (9 TP 13 FP),
    detector 9 TP 43 FP; before the ego mask, paint and shadow rejection: tracked 0.18 / 0.07,
    32 false boxes, detector 12 TP 86 FP."""
    from crashcast.evaluation.detection_labels import load_labels, run_labels, score

    cfg = load_config("classic")
    runs = run_labels(REAL, load_labels(ROOT / "tests" / "data" / "real_labels.json"), cfg)
    tracked = score(runs, 0.3, "tracked")["all"]
    detected = score(runs, 0.3, "detected")["all"]
    assert tracked.precision >= 0.44, tracked
    assert tracked.recall >= 0.15, tracked
    assert detected.tp >= 15, detected
    assert detected.fp <= 54, detected  # before the ego mask and paint rejection: 86 invented boxes
    # the lane-paint boxes the issue names are gone from the tracked output of the highway clips
    by_clip = score(runs, 0.3, "tracked")
    assert by_clip["udacity_solid_white_right.mp4"].fp <= 1, by_clip["udacity_solid_white_right.mp4"]  # before: 5
    assert by_clip["udacity_pv_short.mp4"].fp <= 2, by_clip["udacity_pv_short.mp4"]  # before: 5
    assert by_clip["dad_tr_neg_000001.mp4"].fp <= 5, by_clip["dad_tr_neg_000001.mp4"]  # measured 3 (4 before)
