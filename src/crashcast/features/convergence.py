"""Third-party cues of a window: how close two tracked road users will come to each other, and
sudden image motion that the ego's own motion does not explain.

- Agent-agent convergence: for every pair of objects with a 3D centroid track, their relative
  position and velocity at the window's end (`ObjectKinematics.position_m`, `velocity_mps`, camera
  frame) give, at constant velocity, the time of closest approach (TCPA) and the distance then
  (DCPA). The ego's own translation cancels in the difference, so this sees crashes between other
  road users ahead, which the ego-path terms (TTC, looming) cannot. Distances are on the road plane
  (x, z): the centroids' heights differ by class (a person's centre sits higher than a car's),
  which is not separation. The pair reported is the one that comes closest within
  `PAIR_HORIZON_S` (the distance at min(TCPA, horizon)), the sooner one on a tie.
- Motion anomaly (detection-free): per perceived frame the pipeline records the 99th percentile of
  the flow residual against the road-plane motion (`ClipPerception.motion_residual`, pixels per
  frame); the anomaly at the window's end is how far its largest value in the last
  `ANOMALY_RECENT_S` rises above the median of the `ANOMALY_BASELINE_S` before: a sudden jump (a
  collision, a vehicle spinning or swerving), not the steady residual of traffic moving normally.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

import numpy as np

from crashcast.features.kinematics import ObjectKinematics
from crashcast.types import ClipPerception, Window

PAIR_HORIZON_S = 4.0
MIN_PAIR_FRAMES = 5  # a track seen in fewer perceived frames has no reliable velocity yet
ANOMALY_RECENT_S = 0.5
ANOMALY_BASELINE_S = 2.0


@dataclass(frozen=True)
class PairApproach:
    """Two tracked objects' closest approach (road plane, constant velocities from the window's end)."""

    a: int
    b: int
    class_a: str
    class_b: str
    distance_m: float  # now
    tcpa_s: float  # from now, >= 0 (0: they are already moving apart)
    dcpa_m: float  # centroid distance at min(tcpa, PAIR_HORIZON_S)
    closing_mps: float  # rate at which their distance shrinks now (negative: separating)


def closest_approach(dp: np.ndarray, dv: np.ndarray, horizon_s: float = PAIR_HORIZON_S) -> tuple[float, float]:
    """(time, distance) of closest approach of a relative position `dp` moving at relative velocity
    `dv` (any dimension), time clamped to [0, horizon_s]."""
    dp, dv = np.asarray(dp, float), np.asarray(dv, float)
    vv = float(dv @ dv)
    t = 0.0 if vv < 1e-9 else float(np.clip(-(dp @ dv) / vv, 0.0, horizon_s))
    return t, float(np.linalg.norm(dp + dv * t))


def pair_approaches(objects: list[ObjectKinematics], horizon_s: float = PAIR_HORIZON_S) -> list[PairApproach]:
    """Every pair of objects with a settled 3D centroid track, in the objects' order."""
    usable = [o for o in objects if o.position_m is not None and o.velocity_mps is not None and o.frames_seen >= MIN_PAIR_FRAMES]
    out = []
    for oa, ob in itertools.combinations(usable, 2):
        dp = np.array([ob.position_m[0] - oa.position_m[0], ob.position_m[2] - oa.position_m[2]])
        dv = np.array([ob.velocity_mps[0] - oa.velocity_mps[0], ob.velocity_mps[2] - oa.velocity_mps[2]])
        dist = float(np.linalg.norm(dp))
        t, d = closest_approach(dp, dv, horizon_s)
        closing = -float(dp @ dv) / dist if dist > 1e-6 else 0.0
        out.append(PairApproach(oa.object_id, ob.object_id, oa.class_name, ob.class_name, dist, t, d, closing))
    return out


def closest_pair(objects: list[ObjectKinematics], horizon_s: float = PAIR_HORIZON_S) -> PairApproach | None:
    """The pair that comes closest within `horizon_s` (the sooner on a tie); None with fewer than two
    usable tracks."""
    pairs = pair_approaches(objects, horizon_s)
    return min(pairs, key=lambda p: (round(p.dcpa_m, 3), p.tcpa_s)) if pairs else None


def motion_anomaly(perc: ClipPerception, window: Window) -> float | None:
    """Sudden unexplained image motion at the window's end (pixels/frame, >= 0): the largest residual
    of the last ANOMALY_RECENT_S minus the median residual of the ANOMALY_BASELINE_S before it. None
    when the perception measured no residual (no road-motion context) or the baseline is empty."""
    r = perc.motion_residual
    if r is None or len(r) != len(perc.times_s):
        return None
    t = perc.times_s
    end = window.end_s + 1e-6
    recent = (t <= end) & (t > end - ANOMALY_RECENT_S) & np.isfinite(r)
    base = (t <= end - ANOMALY_RECENT_S) & (t > end - ANOMALY_RECENT_S - ANOMALY_BASELINE_S) & np.isfinite(r)
    if not recent.any() or base.sum() < 2:
        return None
    v = float(r[recent].max() - np.median(r[base]))
    return max(v, 0.0) if math.isfinite(v) else None
