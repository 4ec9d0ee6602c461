"""Relative depth to metres, by the road: fit a relative map's scale and shift to the ground plane.

A relative depth model (Depth Anything's relative checkpoints) gives a disparity up to an unknown
scale and shift: d = s / Z + t. Where the flat road is visible, its metric depth is known from the
camera geometry (Z = f h / (y - horizon)), so s and t follow from a least-squares fit over road
pixels ahead (the ego path, objects masked out), trimmed twice for robustness. Relative depth is
never used as metres without this; a fit that is not trustworthy (too few road pixels, a
non-positive scale) raises instead of guessing.
"""

from __future__ import annotations

import numpy as np

from crashcast.errors import PerceptionError
from crashcast.perception.classic.detect import ground_depth_at_row
from crashcast.types import CameraModel

MIN_ROAD_PIXELS = 200
MAX_FIT_DEPTH_M = 60.0  # beyond this the ground-plane depth itself is too coarse to fit against


def fit_disparity(relative: np.ndarray, metric: np.ndarray, trim: float = 2.5, rounds: int = 2) -> tuple[float, float]:
    """(s, t) with relative ~= s / metric + t over the given samples (1-D arrays), by least squares
    trimmed of residuals beyond `trim` robust standard deviations."""
    x = 1.0 / metric.astype(np.float64)
    y = relative.astype(np.float64)
    keep = np.isfinite(x) & np.isfinite(y)
    s = t = float("nan")
    for _ in range(rounds + 1):
        if keep.sum() < 2:
            break
        A = np.stack([x[keep], np.ones(int(keep.sum()))], axis=1)
        (s, t), *_ = np.linalg.lstsq(A, y[keep], rcond=None)
        r = y - (s * x + t)
        med = float(np.median(r[keep]))
        mad = float(np.median(np.abs(r[keep] - med))) * 1.4826
        if mad <= 1e-12:
            break
        keep &= np.abs(r - med) <= trim * mad
    return float(s), float(t)


def align_to_ground(relative: np.ndarray, camera: CameraModel, road: np.ndarray, where: str = "") -> np.ndarray:
    """Metric depth (H, W) from a relative disparity map, fitted on `road` pixels (bool (H, W)) to
    the ground plane of `camera`. NaN where the aligned disparity is not positive."""
    return apply_fit(relative, *fit_to_ground(relative, camera, road, where))


def fit_to_ground(relative: np.ndarray, camera: CameraModel, road: np.ndarray, where: str = "") -> tuple[float, float]:
    """(s, t) with relative = s / Z + t on the road pixels; PerceptionError when it cannot be trusted."""
    h, w = relative.shape
    rows = ground_depth_at_row(np.arange(h) + 0.5, camera)
    ground = np.broadcast_to(rows[:, None], (h, w))
    sample = road & np.isfinite(ground) & (ground < MAX_FIT_DEPTH_M) & np.isfinite(relative)
    n = int(sample.sum())
    if n < MIN_ROAD_PIXELS:
        raise PerceptionError(f"{where}: relative depth cannot be aligned to the road: only {n} road pixels ahead "
                              f"(need {MIN_ROAD_PIXELS}); use a metric depth model")
    s, t = fit_disparity(relative[sample], ground[sample])
    if not np.isfinite(s) or s <= 0:
        raise PerceptionError(f"{where}: relative depth does not fit the road ahead (scale {s:.3g}); use a metric depth model")
    return s, t


def apply_fit(relative: np.ndarray, s: float, t: float) -> np.ndarray:
    """Metres from a relative disparity and its fitted (s, t); NaN where the disparity is not positive."""
    disparity = (relative.astype(np.float64) - t) / s  # = 1 / Z
    with np.errstate(divide="ignore", invalid="ignore"):
        out = np.where(disparity > 1e-6, 1.0 / disparity, np.nan)
    return out.astype(np.float32)
