"""The classic detector's rear-lamp cue (`taillight_hypotheses`) on drawn frames."""

from __future__ import annotations

import cv2
import numpy as np

from crashcast.perception.classic.detect import LAMP_HEIGHT_M, LAMP_SPACING_M, taillight_hypotheses
from crashcast.types import CameraModel

W, H = 640, 360
CAM = CameraModel.from_fov(W, H, 70.0, 1.4)  # focal 457 px, horizon at row 180


def _road(seed: int = 0) -> np.ndarray:
    """Sky above the horizon, a grey road with a little noise below it."""
    rng = np.random.default_rng(seed)
    img = np.zeros((H, W, 3), np.uint8)
    img[: H // 2] = (150, 190, 235)
    img[H // 2 :] = np.clip(100 + rng.normal(0, 4, (H - H // 2, W, 1)), 0, 255).astype(np.uint8)
    return img


def _car_rear(img: np.ndarray, x_mid: float, depth_m: float) -> tuple[int, int, int, int]:
    """Draw a dark car's rear (body, rear window, bumper, two red lamps) standing on the road
    `depth_m` ahead; returns its box."""
    ppm = CAM.focal_px / depth_m
    ground = CAM.horizon_y + CAM.height_m * ppm
    x1, x2 = int(x_mid - 0.9 * ppm), int(x_mid + 0.9 * ppm)
    y1, y2 = int(ground - 1.45 * ppm), int(ground)
    cv2.rectangle(img, (x1, y1), (x2, y2), (45, 45, 50), -1)
    cv2.rectangle(img, (x1 + int(0.2 * ppm), y1 + int(0.1 * ppm)), (x2 - int(0.2 * ppm), y1 + int(0.5 * ppm)), (90, 100, 110), -1)
    cv2.rectangle(img, (x1, y2 - int(0.35 * ppm)), (x2, y2), (25, 25, 25), -1)  # bumper and shadow
    lamp_row = int(ground - LAMP_HEIGHT_M * ppm)
    for dx in (-LAMP_SPACING_M / 2, LAMP_SPACING_M / 2):
        cv2.ellipse(img, (int(x_mid + dx * ppm), lamp_row), (max(2, int(0.12 * ppm)), max(2, int(0.08 * ppm))), 0, 0, 360,
                    (230, 30, 30), -1)
    return x1, y1, x2, y2


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


def test_a_car_rear_with_two_red_lamps_is_found():
    for depth in (8.0, 15.0, 25.0):
        img = _road()
        truth = _car_rear(img, 330.0, depth)
        boxes = taillight_hypotheses(img, CAM, np.zeros((H, W), bool))
        assert len(boxes) == 1, (depth, boxes)
        assert _iou(boxes[0][:4], truth) > 0.5, (depth, boxes, truth)


def test_camera_fixed_lamps_give_no_box():
    img = _road()
    y1 = _car_rear(img, 330.0, 10.0)[1]
    exclude = np.zeros((H, W), bool)
    exclude[y1 - 20 :, :] = True  # say the bottom of the frame is our own bonnet
    assert taillight_hypotheses(img, CAM, exclude) == []


def test_plain_road_with_red_signs_and_red_road_marks_gives_no_box():
    img = _road()
    cv2.line(img, (560, 120), (560, 230), (80, 80, 80), 3)  # a sign by the road: a red disc, white bar
    cv2.circle(img, (560, 120), 14, (220, 20, 20), -1)
    cv2.rectangle(img, (550, 117), (570, 123), (250, 250, 250), -1)
    for x in (290, 356):  # two red marks painted on the road, a lamp pair's spacing apart at 10 m
        cv2.ellipse(img, (x, 300), (5, 3), 0, 0, 360, (220, 30, 30), -1)
    assert taillight_hypotheses(img, CAM, np.zeros((H, W), bool)) == []


def test_a_red_car_gives_no_lamp_box():
    """Its lamps do not stand out of its red body (the blob is a body's size, the box mostly red)."""
    img = _road()
    ppm = CAM.focal_px / 10.0
    ground = int(CAM.horizon_y + CAM.height_m * ppm)
    img[int(ground - 1.45 * ppm) : ground, int(330 - 0.9 * ppm) : int(330 + 0.9 * ppm)] = (200, 25, 30)
    for dx in (-LAMP_SPACING_M / 2, LAMP_SPACING_M / 2):
        cv2.circle(img, (int(330 + dx * ppm), int(ground - LAMP_HEIGHT_M * ppm)), 5, (250, 60, 60), -1)
    assert taillight_hypotheses(img, CAM, np.zeros((H, W), bool)) == []
