"""Obstacles on the road from weight-free cues (motion, road colour, rear lamps), grouped into boxes.

1. Motion (plane + parallax): pixels whose flow the road homography does not explain. A vehicle
   keeping its distance barely moves while the road under it streams past; an approaching one
   expands; a crossing person slides sideways. Parallax needs the road itself to move; where it
   barely does (the ego slow or stopped), a residual above `independent_motion_px` is a road user
   moving on its own.
2. Appearance (free-space): the road's colour is learnt each frame from the patch just ahead of the
   bumper; within the road's extent, regions that do not look like road are obstacle candidates,
   kept only if their motion is not that of the road plane (lane paint is flat, cars are not).
3. Rear lamps (`taillight_hypotheses`, on): a car seen from behind shows two red lamps side by side;
   their spacing gives its depth, which must agree with the road's depth under them, and the rear
   between them must be left-right symmetric. Finds cars that keep their distance on a road of their
   own colour, where neither cue above sees them. (`shadow_hypotheses`, off: the dark band under a car.)

The coarse class comes from the box's size in metres at its ground-contact depth.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
from pydantic import Field

from crashcast.perception.base import FrameContext
from crashcast.perception.classic.ego import EgoMask
from crashcast.perception.egomotion import magnitude
from crashcast.perception.spec import BuildContext, backend
from crashcast.settings import BackendConfig
from crashcast.types import CameraModel, Detections


class MotionDetectorConfig(BackendConfig):
    """The weight-free detector's settings (it also reads `perception.context.residual_threshold_px`)."""

    name: str = "classic-motion"
    min_parallax_px: float = Field(0.2, ge=0, description="road motion (pixels/frame) below which parallax tells nothing")
    independent_motion_px: float = Field(0.8, gt=0, description="flow residual (pixels/frame) above which a pixel moves on its "
                                         "own even where the road barely moves (the ego slow or stopped); on the labelled real "
                                         "frames 0.5-1.5 all raised tracked recall (0.13 -> 0.13-0.17) at precision 0.41-0.50")
    road_color_k: float = Field(4.0, gt=0, description="colour distance (in robust std) beyond which a pixel is not road")
    parallax_ratio: float = Field(0.45, ge=0, description="residual / road motion above which a region stands off the road")
    min_box_px: int = Field(8, ge=2, le=8192)
    min_height_m: float = Field(0.8, ge=0, description="boxes over road markings less tall than this at their contact depth "
                                "are the markings (0.4 m for the others)")
    max_ego_overlap: float = Field(0.4, ge=0, le=1, description="boxes this much on camera-fixed pixels (bonnet, mirrors, overlays) are dropped")
    paint_contrast: float = Field(22.0, gt=0, description="grey levels a thin marking stands above the road around it")
    ego_mask: bool = Field(True, description="learn the camera-fixed pixels of each clip and ignore them")
    taillight_hypotheses: bool = Field(True, description="also propose cars ahead from a pair of red rear lamps on one row, "
                                       "kept where the road at the pair's depth and a symmetric rear agree; on: on the "
                                       "labelled real frames tracked recall 0.09 -> 0.13, precision 0.41 -> 0.48 (IoU 0.3)")
    shadow_hypotheses: bool = Field(False, description="also propose vehicles from the dark band under them (symmetric, edgy "
                                    "body above); off: on the labelled real frames it adds about 1 true box per 6 false ones")


def ground_depth_at_row(y: np.ndarray | float, camera: CameraModel) -> np.ndarray:
    """Depth (m) of the road at image row y: Z = f * h / (y - horizon); inf at or above the horizon."""
    dy = np.asarray(y, dtype=np.float64) - camera.horizon_y
    with np.errstate(divide="ignore"):
        return np.where(dy > 0.5, camera.focal_px * camera.height_m / np.maximum(dy, 0.5), np.inf)


def _contact_row(not_road: np.ndarray, x: int, top: int, bottom: int, width: int, fill: float = 0.5) -> int:
    """The object's ground-contact row: scanning down from the middle of its box, the first row whose
    central 60 % is mostly road. Follows the object below the box when near rows lacked flow, and
    trims a box that the morphology let spill onto the road."""
    h = not_road.shape[0]
    x0, x1 = x + int(0.2 * width), x + max(int(0.8 * width), int(0.2 * width) + 1)
    frac = not_road[:, x0:x1].mean(axis=1)
    r = max(top, (top + bottom) // 2)
    if frac[r:bottom].max(initial=0.0) <= fill:  # no appearance evidence: keep the motion box
        return bottom
    while r < h and frac[r] > fill:
        r += 1
    return r


def lane_paint(frame: np.ndarray, top: int, max_width_px: int = 31, contrast: float = 22.0) -> np.ndarray:
    """Road markings below row `top`: thin (narrower than `max_width_px` across), brighter than the
    road beside them by `contrast` grey levels (a white top-hat), white or yellow (little colour but
    for yellow's). Lane lines, arrows, crossings, a zebra's stripes."""
    h, w = frame.shape[:2]
    out = np.zeros((h, w), bool)
    if top >= h - 1:
        return out
    part = frame[top:]
    gray = cv2.cvtColor(part, cv2.COLOR_RGB2GRAY)
    hat = cv2.morphologyEx(gray, cv2.MORPH_TOPHAT, cv2.getStructuringElement(cv2.MORPH_RECT, (max_width_px, 1)))
    hsv = cv2.cvtColor(part, cv2.COLOR_RGB2HSV)
    hue, sat = hsv[..., 0], hsv[..., 1]
    white_or_yellow = (sat < 60) | ((hue >= 15) & (hue <= 35) & (sat >= 60))
    paint = ((hat > contrast) & white_or_yellow).astype(np.uint8)
    out[top:] = cv2.dilate(paint, np.ones((3, 3), np.uint8)).astype(bool)
    return out


def symmetry(gray: np.ndarray) -> float:
    """Left-right symmetry of a patch's vertical-edge energy: the correlation of its column profile
    with the mirrored profile (1: the back of a car, about 0: clutter)."""
    if gray.shape[1] < 6 or gray.shape[0] < 4:
        return 0.0
    gx = np.abs(cv2.Sobel(gray.astype(np.float32), cv2.CV_32F, 1, 0, ksize=3)).sum(axis=0)
    a, b = gx - gx.mean(), gx[::-1] - gx.mean()
    den = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / den) if den > 0 else 0.0


def shadow_hypotheses(frame: np.ndarray, cam: CameraModel, road_gray: float, road_spread: float, exclude: np.ndarray,
                      min_symmetry: float = 0.2) -> list[tuple[int, int, int, int, float]]:
    """Vehicles ahead from appearance alone: the dark band under a car (its shadow and tyres, darker
    than the road), as wide as a car at the band's ground depth, with a left-right symmetric, edgy
    body above it. Returns (x1, y1, x2, y2, score) boxes; `exclude`: pixels that are no evidence
    (camera-fixed, paint)."""
    h = frame.shape[0]
    top = int(np.clip(cam.horizon_y + 2, 0, h - 1))
    if top >= h - 4:
        return []
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    dark = (gray[top:] < road_gray - max(30.0, 3.0 * road_spread)) & ~exclude[top:]
    dark = cv2.morphologyEx(dark.astype(np.uint8), cv2.MORPH_OPEN, np.ones((2, 5), np.uint8))
    dark = cv2.morphologyEx(dark, cv2.MORPH_CLOSE, np.ones((3, 9), np.uint8))
    n, _labels, stats, _ = cv2.connectedComponentsWithStats(dark, connectivity=8)
    out = []
    gx = np.abs(cv2.Sobel(gray, cv2.CV_32F, 1, 0, ksize=3))
    gy = np.abs(cv2.Sobel(gray, cv2.CV_32F, 0, 1, ksize=3))
    road_edges = float(np.median(gx[top:] + gy[top:])) + 1.0
    for k in range(1, n):
        x, y, bw, bh, area = (int(v) for v in stats[k])
        bottom = top + y + bh
        if bw < 12 or bh > 1.2 * bw or area < 0.3 * bw * bh or bottom >= h - 1:
            continue
        z = float(ground_depth_at_row(bottom, cam))
        if not np.isfinite(z) or z > 60:
            continue
        width_m = bw * z / cam.focal_px
        if not 1.2 <= width_m <= 3.2:  # a car's, a van's, a truck's width
            continue
        y1 = max(0, bottom - int(round(0.85 * bw)))
        patch = gray[y1:bottom, x : x + bw]
        sym = symmetry(patch)
        edges = float((gx[y1:bottom, x : x + bw] + gy[y1:bottom, x : x + bw]).mean()) / road_edges
        if sym < min_symmetry or edges < 1.5 or exclude[y1:bottom, x : x + bw].mean() > 0.4:
            continue
        out.append((x, y1, x + bw, bottom, float(np.clip(0.3 + 0.5 * sym, 0.05, 0.9))))
    return out


LAMP_SPACING_M = 1.45  # centre-to-centre distance of a car's rear lamps (1.2-1.7 m)
LAMP_HEIGHT_M = 0.75  # a car's rear lamps' (centres') height above the road
CAR_HEIGHT_M = 1.5  # the box's height above the road


def red_mask(frame: np.ndarray, min_red: float = 20.0, min_lightness: float = 40.0) -> np.ndarray:
    """Red pixels: LAB a* `min_red` above neutral and above their yellowness (red, not orange paint
    or a yellow sign), and not dark (a lit lamp, or a lamp's red glass in daylight)."""
    lab = cv2.cvtColor(frame, cv2.COLOR_RGB2LAB).astype(np.int16)
    a, b = lab[..., 1] - 128, lab[..., 2] - 128
    return (a >= min_red) & (a >= b) & (lab[..., 0] >= min_lightness)


def red_lamps(red: np.ndarray, top: int) -> np.ndarray:
    """(n, 5) rows of (x, y, w, h, area): the blobs of the `red_mask` below row `top`."""
    closed = cv2.morphologyEx(red[top:].astype(np.uint8), cv2.MORPH_CLOSE, np.ones((3, 3), np.uint8))
    _n, _labels, stats, _ = cv2.connectedComponentsWithStats(closed, connectivity=8)
    out = stats[1:, :5].astype(np.int64)
    out[:, 1] += top
    return out


def _lamp_pairs(blobs: np.ndarray, max_area_ratio: float = 6.0) -> list[tuple[int, int]]:
    """Index pairs (left, right) of lamp blobs side by side on one row (their centres within a lamp's
    height: a rear seen at a slant tilts the row), alike enough in area to be the two lamps of one rear."""
    cx = blobs[:, 0] + blobs[:, 2] / 2.0
    cy = blobs[:, 1] + blobs[:, 3] / 2.0
    area = blobs[:, 4].astype(np.float64)
    tall = np.maximum(blobs[:, 3][:, None], blobs[:, 3][None, :])
    ok = (cx[None, :] > cx[:, None]) & (np.abs(cy[:, None] - cy[None, :]) <= np.maximum(3.0, tall))
    ok &= np.maximum(area[:, None], area[None, :]) <= max_area_ratio * np.minimum(area[:, None], area[None, :])
    return [(int(i), int(j)) for i, j in zip(*np.nonzero(ok), strict=True)]


def taillight_hypotheses(frame: np.ndarray, cam: CameraModel, exclude: np.ndarray,
                         min_symmetry: float = 0.3, max_red: float = 0.2) -> list[tuple[int, int, int, int, float]]:
    """Cars ahead from their red rear lamps, kept only where the cues agree: two small red blobs side
    by side on one row (`_lamp_pairs`); their spacing (about `LAMP_SPACING_M`) gives a depth that the
    road's depth `LAMP_HEIGHT_M` below them matches within a factor 2 (the horizon is a rough
    estimate); the box between and around them is left-right symmetric (`symmetry`), not mostly
    red (lamps on a red body: a red car, parked red scooters, a sign) and not camera-fixed
    (`exclude`). The box: a car's width (1.3 times the lamps' spacing) from the road under the lamps
    to `CAR_HEIGHT_M` above it. Returns (x1, y1, x2, y2, score)."""
    h, w = frame.shape[:2]
    top = int(np.clip(cam.horizon_y - 2, 0, h - 1))
    red = red_mask(frame)
    blobs = red_lamps(red, top)
    blobs = blobs[(blobs[:, 4] >= 3) & (blobs[:, 2] <= 40) & (blobs[:, 3] <= 30)]  # larger: red bodies, signs
    out: list[tuple[int, int, int, int, float]] = []
    if len(blobs) < 2:
        return out
    gray = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    cx = blobs[:, 0] + blobs[:, 2] / 2.0
    cy = blobs[:, 1] + blobs[:, 3] / 2.0
    for i, j in _lamp_pairs(blobs):
        s = cx[j] - cx[i]
        px_per_m = s / LAMP_SPACING_M
        z = cam.focal_px / px_per_m
        if s < 8 or z > 40:  # too close together to tell, or beyond 40 m
            continue
        mid, row = (cx[i] + cx[j]) / 2, (cy[i] + cy[j]) / 2
        bottom = row + LAMP_HEIGHT_M * px_per_m  # the road under the rear
        z_ground = float(ground_depth_at_row(bottom, cam))
        if not 0.5 <= z_ground / z <= 2.0:  # the road there is not at the pair's depth (the horizon is rough)
            continue
        x1, x2 = int(round(mid - 0.65 * s)), int(round(mid + 0.65 * s))  # a car: 1.3 times its lamps' spacing
        y1, y2 = int(round(bottom - CAR_HEIGHT_M * px_per_m)), int(round(bottom))
        if x1 < 0 or x2 > w or y1 < 0 or y2 > h or exclude[y1:y2, x1:x2].mean() > 0.4:
            continue
        if red[y1:y2, x1:x2].mean() > max_red:  # lamps on a red body (a red car, parked scooters): no rear to tell
            continue
        sym = symmetry(gray[y1:y2, x1:x2])
        if sym < min_symmetry:
            continue
        out.append((x1, y1, x2, y2, float(np.clip(0.3 + 0.5 * sym, 0.05, 0.9))))
    return out


def classify(width_m: float, height_m: float, aspect: float) -> str:
    """Coarse class from metric size and aspect (height / width)."""
    if aspect >= 1.5 and width_m < 1.3 and 0.8 < height_m < 2.4:
        return "person"
    if width_m >= 1.1 and height_m >= 0.6:
        return "vehicle"
    return "object"


def _iou(boxes: np.ndarray, box: np.ndarray) -> np.ndarray:
    ix = np.clip(np.minimum(boxes[:, 2], box[2]) - np.maximum(boxes[:, 0], box[0]), 0, None)
    iy = np.clip(np.minimum(boxes[:, 3], box[3]) - np.maximum(boxes[:, 1], box[1]), 0, None)
    inter = ix * iy
    union = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) + (box[2] - box[0]) * (box[3] - box[1]) - inter
    return inter / np.maximum(union, 1e-9)


class MotionDetector:
    """`Detector` finding off-road regions in the road-motion residual (needs `FrameContext.off_road`)."""

    name = "classic-motion"
    uses_context = True  # the pipeline must run the road-motion context stage for it

    def __init__(self, cfg: MotionDetectorConfig | None = None, residual_threshold_px: float = 0.25) -> None:
        self.cfg = cfg or MotionDetectorConfig()
        self.residual_threshold_px = residual_threshold_px
        self._open = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        self._close = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (9, 9))
        self._open5 = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
        self._ego = EgoMask()

    def reset(self) -> None:
        """A new clip: forget the camera-fixed pixels learnt on the previous one."""
        self._ego.reset()

    def detect(self, frames: Sequence[np.ndarray], contexts: Sequence[FrameContext]) -> list[Detections]:
        return [self._detect_one(f, ctx) for f, ctx in zip(frames, contexts, strict=True)]

    def _appearance_candidates(self, frame: np.ndarray, cam: CameraModel, residual: np.ndarray, road_mag: np.ndarray,
                               valid: np.ndarray, origin_y: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(the road's extent, non-road-looking pixels inside it whose motion is not the road's,
        all non-road-looking pixels inside it). `frame` holds the full frame's rows from `origin_y`
        on; only the rows below the horizon (where the road is) are looked at."""
        h, w = frame.shape[:2]
        top = int(np.clip(cam.horizon_y + 1, 0, h - 1))
        span_out, anomaly_out, not_road_out = (np.zeros((h, w), bool) for _ in range(3))
        # from one row above the horizon: a border of no road for the morphology, as in a full frame
        start = max(top - 1, 0)
        lab = cv2.cvtColor(frame[start:], cv2.COLOR_RGB2LAB)
        hb = h - start
        full_h = origin_y + h
        y0, y1 = int(0.82 * full_h) - origin_y - start, int(0.97 * full_h) - origin_y - start  # the patch ahead of the bumper
        patch = lab[max(y0, top - start) : y1 : 2, int(0.38 * w) : int(0.62 * w) : 2].reshape(-1, 3).astype(np.float32)
        if len(patch) < 50:
            return span_out, anomaly_out, not_road_out
        # the road's colour: per-channel median and robust spread (MAD) of the patch ahead of the bumper
        med = np.median(patch, axis=0)
        mad = np.median(np.abs(patch - med), axis=0) * 1.4826 + np.array([3.0, 2.0, 2.0], np.float32)
        self._road_lightness = (float(med[0]), float(mad[0]))  # LAB L (0-255): the shadow step's reference
        limit = self.cfg.road_color_k * mad
        not_road_px = np.zeros((hb, w), bool)
        for c in range(3):
            diff = cv2.absdiff(lab[..., c], np.full((hb, w), int(round(med[c])), np.uint8))
            not_road_px |= diff > limit[c]
        road_like = ~not_road_px
        road_like[: top - start] = False
        road_like = cv2.morphologyEx(road_like.astype(np.uint8), cv2.MORPH_OPEN, self._open).astype(bool)
        # the road's extent per row: between its leftmost and rightmost road-like pixel
        any_road = road_like.any(axis=1)
        left = np.where(any_road, road_like.argmax(axis=1), w)
        right = np.where(any_road, w - 1 - road_like[:, ::-1].argmax(axis=1), -1)
        cols = np.arange(w)[None, :]
        span = (cols > left[:, None]) & (cols < right[:, None])
        span[: top - start] = False
        not_road = not_road_px & span
        span_out[start:], not_road_out[start:] = span, not_road
        anomaly = (not_road & valid[start:]).astype(np.uint8)
        anomaly = cv2.morphologyEx(anomaly, cv2.MORPH_OPEN, self._open5)  # drops thin paint lines
        # flat paint moves with the road (residual ~ flow noise); standing objects do not, at least
        # in their upper part (their bottom touches the road and moves like it)
        n, labels, _stats, _ = cv2.connectedComponentsWithStats(anomaly, connectivity=8)
        if n <= 1:
            return span_out, anomaly_out, not_road_out
        inside = labels > 0  # per-region statistics over the regions' pixels only
        idx = labels[inside]
        mag = road_mag[start:][inside]
        standing = residual[start:][inside] > self.cfg.parallax_ratio * mag + 0.05
        count = np.maximum(np.bincount(idx, minlength=n), 1)
        frac = np.bincount(idx, weights=standing, minlength=n) / count
        still = np.bincount(idx, weights=mag, minlength=n) / count < self.cfg.min_parallax_px
        keep = (frac > 0.2) | still
        keep[0] = False
        anomaly_out[start:] = keep[labels]
        return span_out, anomaly_out, not_road_out

    def _detect_one(self, frame: np.ndarray, ctx: FrameContext) -> Detections:
        if ctx.off_road is None or ctx.residual is None or ctx.road_flow is None:
            return Detections.empty()
        cam = ctx.camera
        h, w = ctx.off_road.shape
        road_mag = ctx.parallax if ctx.parallax is not None else magnitude(ctx.road_flow)
        measurable = road_mag > self.cfg.min_parallax_px
        # where the road barely moves (the ego slow or stopped) parallax says nothing, but a residual well
        # above the flow noise is a road user moving on its own (a scooter pulling away, a car crossing)
        moving = ctx.off_road & (measurable | (ctx.residual > self.cfg.independent_motion_px))
        valid = ctx.flow_valid if ctx.flow_valid is not None else np.ones_like(measurable)
        ego = self._ego.update(frame, ctx.flow.uv if ctx.flow is not None else None) if self.cfg.ego_mask else np.zeros((h, w), bool)
        paint = lane_paint(frame, int(np.clip(cam.horizon_y + 1, 0, h - 1)), contrast=self.cfg.paint_contrast)
        marked = paint.copy()  # any bright thin marking, before the checks that it lies on the road
        self._road_lightness = None
        span, candidates, not_road = self._appearance_candidates(frame, cam, ctx.residual, road_mag, valid, ctx.origin_y)
        # paint lies on the road: road-coloured on both sides (a white car's bright trim is not), and it
        # moves like the road
        road_like = (span & ~not_road).astype(np.uint8)
        d = 12
        left, right = np.zeros_like(road_like), np.zeros_like(road_like)
        left[:, d:], right[:, :-d] = road_like[:, :-d], road_like[:, d:]
        paint &= (left > 0) & (right > 0) & (ctx.residual <= self.residual_threshold_px + self.cfg.parallax_ratio * road_mag)
        not_road &= ~paint  # markings are road: they neither start an object nor extend one downwards
        # only what is on the road (or entering it) can be hit: both cues inside the road's extent
        span = cv2.dilate(span.astype(np.uint8), np.ones((1, 15), np.uint8)).astype(bool)
        mask = ((moving & span) | candidates) & ~paint & ~ego
        mask = mask.astype(np.uint8)
        mask = cv2.morphologyEx(mask, cv2.MORPH_OPEN, self._open)
        mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, self._close)
        n, labels, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
        boxes, scores, names, masks = [], [], [], []
        min_px = self.cfg.min_box_px
        for k in range(1, n):
            x, y, bw, bh, area = stats[k]
            # near rows move too fast for flow: follow the object's non-road pixels down to its contact
            bottom = _contact_row(not_road, x, y, y + bh, bw)
            bh = bottom - y
            if bw < min_px or bh < min_px or area < 0.3 * min_px * min_px:
                continue
            if bottom <= cam.horizon_y + 2:  # objects stand on the road, below the horizon
                continue
            if bw > 0.85 * w:  # a misfit of the road itself, not an object
                continue
            comp = labels[y : y + bh, x : x + bw] == k
            if ego[y:bottom, x : x + bw].mean() > self.cfg.max_ego_overlap:  # our own bonnet, mirrors, a burned-in caption
                continue
            if comp.sum() < 0.25 * bw * bh:  # a thin diagonal: lane paint or a road edge, not a body
                continue
            if bottom >= h - 2 and ctx.flow is not None:
                still = float(np.linalg.norm(ctx.flow.uv[y : y + bh, x : x + bw][comp], axis=1).mean()) < 0.3
                if still:  # fixed to the camera at the frame's bottom: our own hood or dashboard
                    continue
            z = float(ground_depth_at_row(bottom, cam))
            width_m, height_m = bw * z / cam.focal_px, bh * z / cam.focal_px
            if width_m > 6.0 or height_m > 6.0:  # larger than any road user: buildings, misfits
                continue
            if width_m < 0.45 or height_m < 0.4:  # smaller than any road user at that depth: paint, blemishes
                continue
            if height_m < self.cfg.min_height_m and marked[y:bottom, x : x + bw].mean() > 0.03:  # a low box over a marking
                continue
            if bw > 4 * bh:  # a long low strip: a kerb, a shadow band, the road's edge
                continue
            strength = float(np.mean(ctx.residual[y : y + bh, x : x + bw][comp]))
            thr = self.residual_threshold_px
            conf = float(np.clip(1.0 - np.exp(-strength / (2 * thr)), 0.05, 0.99)) * min(1.0, area / (bw * bh) + 0.3)
            full = np.zeros((h, w), bool)
            full[y : y + bh, x : x + bw] = comp
            boxes.append((x, y, x + bw, bottom))
            scores.append(conf)
            names.append(classify(width_m, height_m, bh / max(bw, 1)))
            masks.append(full)
        proposals = []
        if self.cfg.taillight_hypotheses:
            proposals += taillight_hypotheses(frame, cam, ego)
        if self.cfg.shadow_hypotheses and self._road_lightness is not None:
            proposals += shadow_hypotheses(frame, cam, *self._road_lightness, ego | paint)
        for x1, y1, x2, y2, conf in proposals:
            box = np.array([x1, y1, x2, y2], np.float64)
            if boxes and _iou(np.array(boxes, np.float64), box).max() > 0.3:
                continue  # the motion or free-space cue found it already
            z = float(ground_depth_at_row(y2, cam))
            boxes.append((x1, y1, x2, y2))
            scores.append(conf)
            names.append(classify((x2 - x1) * z / cam.focal_px, (y2 - y1) * z / cam.focal_px, (y2 - y1) / max(x2 - x1, 1)))
            full = np.zeros((h, w), bool)
            full[y1:y2, x1:x2] = True
            masks.append(full)
        if not boxes:
            return Detections.empty()
        return Detections(np.array(boxes, np.float32), np.array(scores), np.array(names, object),
                          mask=np.array(masks), source=np.array([self.name] * len(boxes), object))


@backend("detector", "classic-motion", MotionDetectorConfig)
def _build(cfg: MotionDetectorConfig, ctx: BuildContext) -> MotionDetector:
    return MotionDetector(cfg, ctx.road_context.residual_threshold_px)
