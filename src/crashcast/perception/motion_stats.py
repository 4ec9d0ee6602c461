"""Measurements of flow inside a region: mean motion and expansion (looming)."""

from __future__ import annotations

import cv2
import numpy as np

from crashcast.types import CameraModel


def mean_flow(flow_uv: np.ndarray, mask: np.ndarray) -> tuple[float, float]:
    """(mean magnitude in pixels/frame, angle of the mean flow vector in degrees; 0 = right, 90 = down)."""
    if not mask.any():
        return 0.0, 0.0
    uv = flow_uv[mask]
    mag = float(np.linalg.norm(uv, axis=1).mean())
    mu = uv.mean(axis=0)
    return mag, float(np.degrees(np.arctan2(mu[1], mu[0])))


def _samples(flow_uv: np.ndarray, mask: np.ndarray, max_samples: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Centred pixel offsets (dx, dy) and flow (n, 2) of up to `max_samples` evenly spread mask pixels."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 12:
        return None
    if len(xs) > max_samples:
        sel = np.linspace(0, len(xs) - 1, max_samples).astype(int)
        ys, xs = ys[sel], xs[sel]
    return xs - xs.mean(), ys - ys.mean(), flow_uv[ys, xs]


def expansion_rate(flow_uv: np.ndarray, mask: np.ndarray, erode_px: int = 2, max_samples: int = 4000,
                   min_fit: float = 0.0) -> float | None:
    """Relative scale growth per frame (s - 1) of the region, by least squares on its flow:
    u - mean(u) = a (x - mean(x)), v - mean(v) = a (y - mean(y)). For a surface at depth Z
    closing at speed v, a = v * dt / Z, so time-to-contact = dt / a. None if too few pixels."""
    if erode_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * erode_px + 1, 2 * erode_px + 1))
        inner = cv2.erode(mask.astype(np.uint8), k).astype(bool)
        if inner.sum() >= 12:
            mask = inner
    samples = _samples(flow_uv, mask, max_samples)
    if samples is None:
        return None
    dx, dy, uv = samples
    du, dv = uv[:, 0] - uv[:, 0].mean(), uv[:, 1] - uv[:, 1].mean()
    den = float((dx * dx + dy * dy).sum())
    if den < 1e-6:
        return None
    a = float((dx * du + dy * dv).sum() / den)
    if min_fit > 0:  # share of the flow's spread that the expansion explains
        total = float((du * du + dv * dv).sum())
        explained = a * a * den
        if total <= 1e-9 or explained / total < min_fit:
            return None
    return a


def corridor_mask(width: int, height: int, camera: CameraModel, half_width_m: float) -> np.ndarray:
    """Pixels of the ego path on the road: |X| < half_width_m at the depth of their row."""
    ys, xs = np.mgrid[0:height, 0:width]
    dy = ys + 0.5 - camera.horizon_y
    half_px = half_width_m * np.maximum(dy, 0) / camera.height_m  # f * W / Z with Z = f h / dy
    return (dy > 2) & (np.abs(xs + 0.5 - camera.cx) < half_px)


def axis_expansion(flow_uv: np.ndarray, mask: np.ndarray, max_samples: int = 4000) -> tuple[float, float] | None:
    """Horizontal and vertical scale growth per frame of a region, fitted separately
    (u - mean(u) = ax (x - mean(x)), v - mean(v) = ay (y - mean(y)))."""
    samples = _samples(flow_uv, mask, max_samples)
    if samples is None or np.ptp(samples[0]) < 3 or np.ptp(samples[1]) < 3:
        return None
    dx, dy, uv = samples
    ax = float((dx * (uv[:, 0] - uv[:, 0].mean())).sum() / max((dx * dx).sum(), 1e-6))
    ay = float((dy * (uv[:, 1] - uv[:, 1].mean())).sum() / max((dy * dy).sum(), 1e-6))
    return ax, ay


def ego_path_looming(flow_uv: np.ndarray, off_road: np.ndarray, corridor: np.ndarray, fps: float, min_pixels: int = 40,
                     camera: CameraModel | None = None, min_height_m: float = 0.5) -> float:
    """Looming of what stands in the ego path, 1/s: the largest expansion rate of an off-road region
    inside the corridor (detection-free, no tracking). A surface at depth Z closing at speed v
    expands at v / Z per second, so its time-to-contact is 1 / looming.

    Only regions that look like standing surfaces count: at least `min_height_m` tall at the depth
    of their lowest row (lane paint is flat)."""
    region = (off_road & corridor).astype(np.uint8)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(region, connectivity=8)
    best = 0.0
    for k in range(1, n):
        _x, y, _w, h, area = stats[k]
        if area < min_pixels:
            continue
        if camera is not None:
            dy = y + h - camera.horizon_y
            if dy <= 0 or h * camera.height_m / dy < min_height_m:  # height (m) = h * Z / f, Z = f * H / dy
                continue
        fit = axis_expansion(flow_uv, labels == k)
        if fit is None:
            continue
        ax, ay = fit
        if ax + ay <= 0:
            continue
        best = max(best, 0.5 * (ax + ay) * fps)
    return best
