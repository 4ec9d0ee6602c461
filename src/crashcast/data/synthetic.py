"""Procedural synthetic dashcam clips with exact ground truth.

A pinhole camera (height `camera_height_m`, horizontal FOV `hfov_deg`, small pitch shake) looks
down a textured road with lane marks; vehicles and pedestrians are shaded 3D boxes (windows, tail
and brake lights, wheels, a contact shadow) drawn with OpenCV in depth order. Scenarios:

positives: lead vehicle braking hard (collision or near-miss), cut-in, crossing pedestrian,
           oncoming vehicle drifting into the lane;
negatives: safe following, overtaking, parked cars.

A second mix (`generate(..., mix="third-party")`) holds crashes between other road users ahead,
off the ego path: two vehicles in the next lane (the front one brakes, the one behind runs into it),
a vehicle crossing from the right into the side of one ahead, a vehicle ahead hitting a crossing
pedestrian or cyclist; and as negatives the same encounters without contact (the follower keeps its
distance, the crossing vehicle stops short, the vehicle yields). Their truth records add
`third_party`: the two agents and the moment and gap of their closest approach. The default mix
(`scenario_for`) is unchanged: the same seed renders the same clips as before.

Each clip gets an MP4 (H.264), a row in a Nexar-layout `annotations.csv` and a ground-truth JSON
with, per frame, every object's 3D position, projected 2D box, true depth (distance along the
optical axis to its nearest point), true time-to-contact, and the ego speed. The same seed gives
the same clips: every random draw comes from a generator seeded by (seed, clip index).

Coordinates: camera frame x right, y down, z forward (metres); the road is the plane y = h.
Objects are placed by their ground-contact centre (x, z) relative to the camera.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from crashcast.data.video import VideoWriter
from crashcast.runtime.store import atomic_write_text

log = logging.getLogger(__name__)

POSITIVE_SCENARIOS = ("lead_braking", "cut_in", "crossing_pedestrian", "oncoming_drift")
NEGATIVE_SCENARIOS = ("safe_following", "overtaking", "parked_cars")
#: other road users collide ahead (positives) or pass close without contact (negatives)
THIRD_PARTY_POSITIVES = ("tp_rear_end", "tp_side_impact", "tp_vulnerable")
THIRD_PARTY_NEGATIVES = ("tp_rear_safe", "tp_cross_stops", "tp_vulnerable_yield")
THIRD_PARTY_SCENARIOS = THIRD_PARTY_POSITIVES + THIRD_PARTY_NEGATIVES
MIXES = ("default", "third-party")
LANE_WIDTH_M = 3.5
NEAR_PLANE_M = 0.25


@dataclass(frozen=True)
class SynthConfig:
    width: int = 640
    height: int = 360
    fps: float = 30.0
    hfov_deg: float = 70.0
    camera_height_m: float = 1.4
    ego_front_m: float = 1.0  # camera to front bumper: contact when an object's depth reaches this
    min_duration_s: float = 8.0
    max_duration_s: float = 12.0
    shake_deg: float = 0.12
    noise_sigma: float = 2.0
    crf: int = 20

    @property
    def focal_px(self) -> float:
        return (self.width / 2) / math.tan(math.radians(self.hfov_deg) / 2)


@dataclass
class Body:
    """A box part of an object: offset of its ground-contact centre, size (w, h, l) and colour."""

    dx: float
    dz: float
    y0: float  # height of the bottom above the road
    w: float
    h: float
    l: float
    color: tuple[int, int, int]


@dataclass
class Actor:
    """An object and its trajectory: x(t), z(t) relative to the camera (arrays over frames)."""

    id: int
    cls: str  # vehicle | person
    bodies: list[Body]
    x: np.ndarray
    z: np.ndarray
    facing: int = 1  # +1 drives away from us (we see its rear), -1 comes toward us
    braking: np.ndarray | None = None
    role: str = "other"
    sideways: bool = False  # a vehicle crossing our path: its length lies along x (we see its side)

    @property
    def half_width(self) -> float:
        return max(abs(b.dx) + b.w / 2 for b in self.bodies)

    @property
    def half_length(self) -> float:
        return max(abs(b.dz) + b.l / 2 for b in self.bodies)


@dataclass
class Scenario:
    name: str
    target: int
    duration_s: float
    ego_speed: np.ndarray  # (F,) m/s
    actors: list[Actor]
    time_of_event_s: float | None = None
    time_of_alert_s: float | None = None
    event_kind: str | None = None
    key_actor: int | None = None
    notes: dict = field(default_factory=dict)
    agents: tuple[int, int] | None = None  # third-party scenarios: the two road users that meet


# ----------------------------------------------------------------------------- scenarios


def _vehicle(rng: np.random.Generator, aid: int) -> list[Body]:
    kind = rng.choice(["car", "car", "car", "suv", "van", "truck"])
    w, h, l = {"car": (1.8, 1.45, 4.4), "suv": (1.9, 1.75, 4.7), "van": (2.0, 2.2, 5.2), "truck": (2.4, 3.0, 7.5)}[kind]
    w *= rng.uniform(0.95, 1.05)
    h *= rng.uniform(0.95, 1.05)
    palette = [(200, 30, 30), (30, 60, 170), (220, 220, 225), (40, 40, 45), (120, 125, 130), (30, 120, 60), (210, 170, 40)]
    color = palette[int(rng.integers(len(palette)))]
    return [Body(0.0, 0.0, 0.0, w, h, l, color)]


def _person(rng: np.random.Generator) -> list[Body]:
    shirt = [(200, 60, 40), (40, 90, 180), (230, 200, 60), (60, 140, 70)][int(rng.integers(4))]
    s = rng.uniform(0.92, 1.08)
    return [
        Body(0.0, 0.0, 0.0, 0.42, 0.85 * s, 0.28, (35, 35, 60)),  # legs
        Body(0.0, 0.0, 0.85 * s, 0.5, 0.62 * s, 0.3, shirt),  # torso
        Body(0.0, 0.0, 1.47 * s, 0.22, 0.24 * s, 0.22, (225, 185, 150)),  # head
    ]


def _gap_closing(gap0: float, v_ego: float, decel: float, dt: float, n: int, ego_decel: float = 0.0, ego_delay: float = 1e9):
    """Gap (m) over n steps when the lead brakes at `decel` from t=0 (both start at v_ego);
    the ego brakes at `ego_decel` after `ego_delay` seconds. Returns (gap array, contact index|None)."""
    t = np.arange(n) * dt
    v_lead = np.maximum(v_ego - decel * t, 0.0)
    v_e = np.where(t > ego_delay, np.maximum(v_ego - ego_decel * (t - ego_delay), 0.0), v_ego)
    gap = gap0 - np.concatenate([[0.0], np.cumsum((v_e[:-1] - v_lead[:-1]) * dt)])
    hit = np.nonzero(gap <= 0)[0]
    return gap, (int(hit[0]) if len(hit) else None), v_e


def _latest_safe_delay(gap0: float, v_ego: float, decel: float, dt: float, n: int, ego_decel: float,
                       min_gap: float) -> float:
    """The latest braking delay (s, in [0, 6], by bisection) after which the follower, braking at
    `ego_decel`, still stops at least `min_gap` metres short of the lead braking at `decel`."""
    lo, hi = 0.0, 6.0
    for _ in range(40):
        mid = (lo + hi) / 2
        gap, hit, _ = _gap_closing(gap0, v_ego, decel, dt, n, ego_decel, mid)
        if hit is not None or gap.min() < min_gap:
            hi = mid
        else:
            lo = mid
    return lo


def _smoothstep(u: np.ndarray) -> np.ndarray:
    u = np.clip(u, 0.0, 1.0)
    return u * u * (3 - 2 * u)


def _parked(rng: np.random.Generator, first_id: int, t: np.ndarray, s_ego: np.ndarray, count: int, z_max: float) -> list[Actor]:
    actors = []
    for k in range(count):
        side = rng.choice([-1, 1])
        x = side * rng.uniform(5.6, 6.6)
        z0 = rng.uniform(12.0, z_max)
        actors.append(Actor(first_id + k, "vehicle", _vehicle(rng, first_id + k), np.full_like(t, x), z0 - s_ego, facing=1, role="parked"))
    return actors


def make_scenario(name: str, rng: np.random.Generator, cfg: SynthConfig, clip_id: str | None = None) -> Scenario:
    """Sample one scenario's trajectories (all in camera-relative coordinates over the frame grid).
    `clip_id` places a third-party negative's closest approach at its windows' anchor."""
    dt = 1.0 / cfg.fps
    duration = round(rng.uniform(cfg.min_duration_s, cfg.max_duration_s) * cfg.fps) / cfg.fps
    n = round(duration * cfg.fps)
    t = np.arange(n) * dt
    if name in THIRD_PARTY_SCENARIOS:
        return _third_party(name, rng, cfg, duration, t, clip_id)
    front = cfg.ego_front_m
    v0 = rng.uniform(10.0, 18.0)
    ego = np.full(n, v0)
    target = 1 if name in POSITIVE_SCENARIOS else 0
    event = alert = None
    kind = None
    key = None
    actors: list[Actor] = []

    if name == "lead_braking":
        car = _vehicle(rng, 0)
        half_l = car[0].l / 2
        near_miss = rng.random() < 0.35
        for _ in range(50):
            gap0 = rng.uniform(14.0, 28.0)
            decel = rng.uniform(5.0, 8.0)
            m = int(12 * cfg.fps)
            if near_miss:
                ego_decel = 8.5
                # the ego reacts late: pick the delay that leaves 0.3-1.0 m at closest approach
                target_gap = rng.uniform(0.3, 1.0)
                lo = _latest_safe_delay(gap0, v0, decel, dt, m, ego_decel, target_gap)
                gap, hit, v_e = _gap_closing(gap0, v0, decel, dt, m, ego_decel, lo)
                tau = int(np.argmin(gap)) * dt
            else:
                gap, hit, v_e = _gap_closing(gap0, v0, decel, dt, m)
                tau = hit * dt if hit is not None else 99.0
            if 2.0 <= tau <= 5.0:
                break
        event = duration - rng.uniform(0.3, 1.0)
        t_brake = event - tau
        k = np.clip(np.round((t - t_brake) / dt).astype(int), 0, len(gap) - 1)
        g = np.where(t < t_brake, gap0, gap[k])
        if near_miss:
            ego = np.where(t < t_brake, v0, v_e[k])
            g = np.where(t > event, gap[round(tau / dt)], g)  # both stopped: the gap stays
        g = np.maximum(g, 0.0)
        z = front + g + half_l
        braking = t >= t_brake
        actors.append(Actor(0, "vehicle", car, np.full(n, rng.uniform(-0.25, 0.25)), z, 1, braking, "lead"))
        alert, kind, key = t_brake, ("near_miss" if near_miss else "collision"), 0
    elif name == "cut_in":
        car = _vehicle(rng, 0)
        half_l = car[0].l / 2
        side = 1  # cut in from the right lane (same direction; the left lane is oncoming traffic)
        for _ in range(50):
            g_land = rng.uniform(7.0, 13.0)
            decel = rng.uniform(4.0, 7.0)
            gap, hit, _ = _gap_closing(g_land, v0, decel, dt, int(10 * cfg.fps))
            if hit is not None and 1.2 <= hit * dt <= 3.0:
                break
        tau = hit * dt
        event = duration - rng.uniform(0.3, 1.0)
        t_land = event - tau
        t_move = rng.uniform(1.5, 2.2)
        v_close = rng.uniform(1.0, 3.0)
        k = np.clip(np.round((t - t_land) / dt).astype(int), 0, len(gap) - 1)
        g = np.where(t < t_land, g_land + v_close * (t_land - t), gap[k])
        g = np.maximum(g, 0.0)
        x = side * LANE_WIDTH_M * (1 - _smoothstep((t - (t_land - t_move)) / t_move))
        braking = t >= t_land
        actors.append(Actor(0, "vehicle", car, x, front + g + half_l, 1, braking, "cut_in"))
        alert, kind, key = t_land - t_move, "collision", 0
    elif name == "crossing_pedestrian":
        v0 = rng.uniform(8.0, 13.0)
        ego = np.full(n, v0)
        body = _person(rng)
        side = rng.choice([-1, 1])
        v_p = rng.uniform(1.4, 2.8)
        x0 = rng.uniform(4.0, 6.0)
        event = duration - rng.uniform(0.3, 1.0)
        t_start = event - x0 / v_p
        x = side * np.clip(v_p * (event - t), 0.0, x0)
        z = np.maximum(front + 0.15 + v0 * (event - t), front + 0.15)
        actors.append(Actor(0, "person", body, x, z, 1, None, "pedestrian"))
        alert, kind, key = max(t_start, 0.0), "collision", 0
    elif name == "oncoming_drift":
        car = _vehicle(rng, 0)
        half_l = car[0].l / 2
        v_o = rng.uniform(8.0, 14.0)
        event = duration - rng.uniform(0.3, 1.0)
        t_drift = rng.uniform(2.0, 3.0)
        z = np.maximum(front + half_l + (v0 + v_o) * (event - t), front + half_l)
        x = -LANE_WIDTH_M * (1 - _smoothstep((t - (event - t_drift)) / (t_drift * 0.8)))
        actors.append(Actor(0, "vehicle", car, x, z, -1, None, "oncoming"))
        alert, kind, key = event - t_drift, "collision", 0
    elif name == "safe_following":
        car = _vehicle(rng, 0)
        g0 = rng.uniform(14.0, 32.0)
        amp = rng.uniform(1.0, 4.0)
        period = rng.uniform(6.0, 12.0)
        phase = rng.uniform(0, 2 * math.pi)
        g = g0 + amp * np.sin(2 * math.pi * t / period + phase)
        actors.append(Actor(0, "vehicle", car, np.full(n, rng.uniform(-0.25, 0.25)), front + g + car[0].l / 2, 1, None, "lead"))
    elif name == "overtaking":
        car = _vehicle(rng, 0)
        if rng.random() < 0.5:  # another car overtakes us in the right lane
            z0 = rng.uniform(3.0, 8.0)
            v_rel = rng.uniform(2.0, 5.0)
        else:  # we overtake a slower car in the right lane
            z0 = rng.uniform(35.0, 60.0)
            v_rel = -rng.uniform(3.0, 6.0)
        actors.append(Actor(0, "vehicle", car, np.full(n, LANE_WIDTH_M), z0 + v_rel * t, 1, None, "overtaking"))
    elif name == "parked_cars":
        pass
    else:
        raise ValueError(f"unknown scenario {name!r}; choose from {POSITIVE_SCENARIOS + NEGATIVE_SCENARIOS}")

    s_ego = np.concatenate([[0.0], np.cumsum(ego[:-1] * dt)])
    n_parked = int(rng.integers(2, 5)) if name == "parked_cars" else int(rng.integers(0, 3))
    actors += _parked(rng, len(actors), t, s_ego, n_parked, z_max=float(s_ego[-1] + 40))
    if name != "safe_following" and rng.random() < 0.3 and target == 0:  # a far lead car in some negatives
        car = _vehicle(rng, len(actors))
        g = rng.uniform(35.0, 50.0) + np.cumsum(np.full(n, rng.uniform(-0.5, 0.5) * dt))
        actors.append(Actor(len(actors), "vehicle", car, np.full(n, 0.0), front + g, 1, None, "far_lead"))
    r3 = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
    return Scenario(name, target, duration, ego, actors, r3(event), r3(alert), kind, key)


# ----------------------------------------------------------------------------- third-party scenarios


def _travel(v: np.ndarray, dt: float) -> np.ndarray:
    """Distance travelled (m) at each frame for speeds `v` (m/s) per frame, 0 at the first."""
    return np.concatenate([[0.0], np.cumsum(v[:-1] * dt)])


def _cyclist(rng: np.random.Generator) -> list[Body]:
    """A cyclist crossing our path: a bike seen side-on (its length along x) and its rider."""
    shirt = [(200, 60, 40), (40, 90, 180), (230, 200, 60), (60, 140, 70)][int(rng.integers(4))]
    return [
        Body(0.0, 0.0, 0.0, 1.7, 1.0, 0.12, (30, 30, 35)),  # bike
        Body(0.0, 0.0, 0.95, 0.45, 0.6, 0.3, shirt),  # rider
        Body(0.0, 0.0, 1.55, 0.22, 0.24, 0.22, (225, 185, 150)),  # head
    ]


def _meeting_time(duration: float, rng: np.random.Generator, positive: bool, clip_id: str | None) -> float:
    """When the two road users meet: a positive's collision near the clip's end (as the ego scenarios'
    events); a negative's closest approach at its windows' anchor under the default window settings
    (`data.windows.anchor_time`), so its windows end at the near miss as a positive's end at the crash."""
    if positive or clip_id is None:
        return duration - rng.uniform(0.3, 1.0)
    from crashcast.data.windows import hashed_fraction
    from crashcast.settings import WindowConfig

    w = WindowConfig()
    lo = min(w.negative_min_anchor_s + max(w.horizons_s), duration)
    return lo + hashed_fraction(clip_id) * (duration - lo)


def _third_party(name: str, rng: np.random.Generator, cfg: SynthConfig, duration: float, t: np.ndarray,
                 clip_id: str | None) -> Scenario:
    """Two road users ahead, in the lane to our right, meet at `te`: they collide (positives) or pass
    within a few metres (negatives). The ego keeps its lane and speed; nothing enters its path
    before `te`. Trajectories are built along the road in the world (s) and shifted by the ego's
    own travel into camera coordinates."""
    dt = 1.0 / cfg.fps
    n = len(t)
    positive = name in THIRD_PARTY_POSITIVES
    v0 = rng.uniform(7.0, 14.0)
    ego = np.full(n, v0)
    s_ego = _travel(ego, dt)
    te = _meeting_time(duration, rng, positive, clip_id)
    ke = min(int(round(te / dt)), n - 1)
    after = t > te
    lane = LANE_WIDTH_M + rng.uniform(-0.2, 0.2)
    actors: list[Actor] = []
    alert = None

    if name in ("tp_rear_end", "tp_rear_safe"):
        rear, front_car = _vehicle(rng, 0), _vehicle(rng, 1)
        v_c = v0 + rng.uniform(-1.0, 0.5)
        m = int(12 * cfg.fps)
        for _ in range(50):
            g0 = rng.uniform(6.0, 14.0)
            if positive:
                a_f = rng.uniform(6.0, 9.0)
                gap, hit, v_r = _gap_closing(g0, v_c, a_f, dt, m)
                tau = hit * dt if hit is not None else 99.0
            else:  # the follower brakes too, late: pick the delay that leaves 2-5 m
                a_f = rng.uniform(3.0, 6.0)
                a_r = a_f * rng.uniform(1.1, 1.4)
                want = rng.uniform(2.0, 5.0)
                lo_d = _latest_safe_delay(g0, v_c, a_f, dt, m, a_r, want)
                gap, hit, v_r = _gap_closing(g0, v_c, a_f, dt, m, a_r, lo_d)
                tau = int(np.argmin(gap)) * dt
            if 1.5 <= tau <= 4.0:
                break
        t_brake = te - tau
        k = np.clip(np.round((t - t_brake) / dt).astype(int), 0, m - 1)
        v_rear = np.where(t < t_brake, v_c, v_r[k])
        g = np.where(t < t_brake, g0, gap[k])
        if positive:  # locked together after the crash, both skidding to a stop
            v_hit = 0.5 * (v_rear[ke] + max(v_c - a_f * tau, 0.0))
            v_rear = np.where(after, np.maximum(v_hit - 7.0 * (t - te), 0.0), v_rear)
            g = np.where(after, 0.0, g)
        g = np.maximum(g, 0.0)
        s_rear = _travel(v_rear, dt)
        z_rear = s_rear - s_ego
        z_rear += rng.uniform(14.0, 26.0) - z_rear[ke]  # the follower's centre at the meeting
        z_front = z_rear + rear[0].l / 2 + g + front_car[0].l / 2
        x_front = np.full(n, lane)
        if positive:  # the struck car is shoved aside
            x_front = x_front + 0.6 * _smoothstep((t - te) / 0.4)
        braking_front = t >= t_brake
        braking_rear = after if positive else t >= t_brake + lo_d
        actors += [Actor(0, "vehicle", rear, np.full(n, lane), z_rear, 1, braking_rear, "tp_follower"),
                   Actor(1, "vehicle", front_car, x_front, z_front, 1, braking_front, "tp_leader")]
        alert = t_brake
    elif name in ("tp_side_impact", "tp_cross_stops"):
        car = _vehicle(rng, 0)
        b = _vehicle(rng, 1)[0]
        crosser = [Body(0.0, 0.0, 0.0, b.l, b.h, b.w, b.color)]  # side-on: its length lies along x
        v_a = v0 + rng.uniform(-1.5, 0.0)
        v_b = rng.uniform(4.0, 7.0)
        s_a = _travel(np.full(n, v_a), dt)
        if positive:  # locked together after the crash, skidding to a stop
            s_a = np.where(after, s_a[ke] + v_a * (t - te) - 0.5 * 8.0 * np.minimum(t - te, v_a / 8.0) ** 2, s_a)
            s_a = np.where(after & (t - te > v_a / 8.0), s_a[ke] + v_a**2 / 16.0, s_a)
        z_a = s_a - s_ego
        z_a += rng.uniform(16.0, 28.0) - z_a[ke]
        x_touch = lane + car[0].w / 2 + b.l / 2
        z_b_world = z_a[ke] + s_ego[ke] + rng.uniform(-1.0, 1.0)  # where the cross road meets the lane
        dt_e = te - t
        if positive:
            x_a = lane - 0.8 * _smoothstep((t - te) / 0.5)  # pushed toward our lane
            x_b = np.where(after, x_touch + (x_a - lane), x_touch + v_b * dt_e)
            z_b = np.where(after, z_b_world - s_ego + (s_a - s_a[ke]) * 0.5, z_b_world - s_ego)
        else:  # brakes and stops short of the lane as the car passes
            decel = rng.uniform(4.0, 7.0)
            x_stop = x_touch + rng.uniform(1.5, 3.5)
            t_stop = v_b / decel
            x_b = np.where(dt_e <= 0, x_stop, np.where(dt_e < t_stop, x_stop + 0.5 * decel * dt_e**2,
                                                        x_stop + v_b**2 / (2 * decel) + v_b * (dt_e - t_stop)))
            x_a = np.full(n, lane)
            z_b = z_b_world - s_ego
        actors += [Actor(0, "vehicle", car, x_a, z_a, 1, after if positive else None, "tp_crossed"),
                   Actor(1, "vehicle", crosser, x_b, z_b, 1, None, "tp_crossing", sideways=True)]
        alert = te - min(2.0, te)
    elif name in ("tp_vulnerable", "tp_vulnerable_yield"):
        # an oncoming car in the left lane and a pedestrian or cyclist crossing it from the left verge:
        # the walker is on the near side of the car, in view (in the right lane it would hide behind it)
        car = _vehicle(rng, 0)
        cyclist = rng.random() < 0.5
        body = _cyclist(rng) if cyclist else _person(rng)
        half_d = max(bb.l for bb in body) / 2
        v_v = rng.uniform(5.0, 9.0)
        v_p = rng.uniform(3.0, 5.0) if cyclist else rng.uniform(1.3, 2.5)
        x_hit = -lane + car[0].w / 2 - rng.uniform(0.3, 1.2)
        x_kerb = -(1.5 * LANE_WIDTH_M + 2.0)
        x_wait = -(LANE_WIDTH_M / 2 + 0.6)  # a crossing that is not finished waits on the lane line (off our path)
        if positive:
            v_car = np.where(after, np.maximum(v_v - 8.0 * (t - te), 0.0), v_v)
            braking = after
        else:  # the car brakes to a stop 2-4 m short of the crossing
            decel = rng.uniform(4.0, 7.0)
            t_b = te - v_v / decel
            v_car = np.where(t < t_b, v_v, np.maximum(v_v - decel * (t - t_b), 0.0))
            braking = t >= t_b
        z_v = -_travel(v_car, dt) - s_ego
        z_v += rng.uniform(16.0, 26.0) - z_v[ke]
        z_line = z_v[ke] - car[0].l / 2 - half_d - 0.05  # the walker's line (camera z at te)
        if positive:
            z_p = np.where(after, z_v - car[0].l / 2 - half_d - 0.05, z_line + s_ego[ke] - s_ego)
            x_p = np.where(after, x_hit, np.maximum(x_hit - v_p * (te - t), x_kerb))
            alert = te - min((x_hit - x_kerb) / v_p, te)
        else:
            z_p = z_line - rng.uniform(2.0, 4.0) + s_ego[ke] - s_ego
            x_p = np.clip(x_hit - v_p * (te - t), x_kerb, x_wait)
        actors += [Actor(0, "vehicle", car, np.full(n, -lane), z_v, -1, braking, "tp_striking"),
                   Actor(1, "cyclist" if cyclist else "person", body, x_p, z_p, 1, None, "tp_vulnerable")]
    else:
        raise ValueError(f"unknown third-party scenario {name!r}; choose from {THIRD_PARTY_SCENARIOS}")

    side = 1.0 if name in ("tp_vulnerable", "tp_vulnerable_yield") else -1.0  # parked cars: not on the crossing side
    for _ in range(int(rng.integers(0, 3))):
        aid = len(actors)
        z0 = rng.uniform(12.0, float(s_ego[-1] + 40))
        actors.append(Actor(aid, "vehicle", _vehicle(rng, aid), np.full(n, side * rng.uniform(5.6, 6.6)), z0 - s_ego, 1, role="parked"))
    r3 = lambda v: None if v is None else round(float(v), 3)  # noqa: E731
    return Scenario(name, int(positive), duration, ego, actors, r3(te) if positive else None,
                    r3(alert) if positive else None, "third_party_collision" if positive else None, None, agents=(0, 1))


# ----------------------------------------------------------------------------- rendering


class Renderer:
    """Draws frames of a scenario and computes the projected ground truth."""

    def __init__(self, cfg: SynthConfig, rng: np.random.Generator) -> None:
        self.cfg = cfg
        self.f = cfg.focal_px
        self.cx, self.cy = cfg.width / 2, cfg.height / 2
        tex = _periodic_noise(rng, 512, 3.0) + 0.5 * _periodic_noise(rng, 512, 15.0)  # 24 cm grain, 1.2 m patches
        self.texture = (tex / tex.std()).astype(np.float32)
        self.texel_m = 0.08
        self.road_gray = rng.uniform(85, 115)
        self.grass = np.array([rng.uniform(60, 90), rng.uniform(95, 125), rng.uniform(45, 70)])
        self.sky_top = np.array([rng.uniform(90, 140), rng.uniform(140, 180), rng.uniform(200, 240)])
        self.sky_bottom = np.array([215.0, 220.0, 225.0])
        self.light = rng.uniform(0.8, 1.1)
        self.flicker = (rng.uniform(0, 2 * math.pi), rng.uniform(0.2, 0.6))
        self.shake = [(rng.uniform(0.5, 1.0), rng.uniform(1.5, 3.5), rng.uniform(0, 2 * math.pi)) for _ in range(2)]
        self.noise_bank = [rng.normal(0, cfg.noise_sigma, (cfg.height, cfg.width, 3)).astype(np.float32) for _ in range(6)]
        u = np.arange(cfg.width, dtype=np.float32)
        v = np.arange(cfg.height, dtype=np.float32)
        self.uu, self.vv = np.meshgrid((u - self.cx) / self.f, (v - self.cy) / self.f)

    def pitch(self, t: float) -> float:
        """Camera pitch in radians (positive: camera tilts down) at time t."""
        a = sum(w * math.sin(2 * math.pi * fr * t + ph) for w, fr, ph in self.shake) / 1.5
        return math.radians(self.cfg.shake_deg * a)

    def to_camera(self, pts: np.ndarray, pitch: float) -> np.ndarray:
        """Road-aligned points (n, 3) to camera coordinates under `pitch`."""
        c, s = math.cos(pitch), math.sin(pitch)
        x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
        return np.stack([x, c * y - s * z, s * y + c * z], axis=1)

    def project(self, pc: np.ndarray) -> np.ndarray:
        return np.stack([self.cx + self.f * pc[:, 0] / pc[:, 2], self.cy + self.f * pc[:, 1] / pc[:, 2]], axis=1)

    # -- background
    def background(self, t: float, s_ego: float, pitch: float) -> np.ndarray:
        """Sky gradient and textured road; with pitch only, every ray's road depth depends on its row."""
        cfg = self.cfg
        c, s = math.cos(pitch), math.sin(pitch)
        v = self.vv[:, 0]
        u = self.uu[0].astype(np.float32)
        dy = c * v + s  # road-aligned y of the ray (y down): > 0 looks at the road
        dz = -s * v + c
        elev = np.clip(-dy / 0.6, 0, 1)[:, None]
        sky_rows = (self.sky_bottom * (1 - elev) + self.sky_top * elev).astype(np.float32)
        img = np.empty((cfg.height, cfg.width, 3), np.float32)
        img[:] = sky_rows[:, None, :]
        rows = np.nonzero(dy > 1e-4)[0]
        if len(rows) == 0:
            return img
        tt = (cfg.camera_height_m / dy[rows]).astype(np.float32)
        Z = tt * dz[rows].astype(np.float32)  # (R,) road distance per row
        Zw = Z + np.float32(s_ego)
        X = tt[:, None] * u[None, :]  # (R, W) lateral position
        mx = np.mod(X * np.float32(1 / self.texel_m), 512).astype(np.float32)
        my = np.broadcast_to(np.mod(Zw / self.texel_m, 512).astype(np.float32)[:, None], X.shape).copy()
        tex = cv2.remap(self.texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        fog = np.exp(-Z / 70.0).astype(np.float32)[:, None]
        # surface class: 0 road, 1 grass, 2 white paint, 3 yellow paint
        cls = np.where(np.abs(X) < 1.5 * LANE_WIDTH_M + 0.3, 0, 1).astype(np.uint8)
        dashed = (np.mod(Zw, 9.0) < 3.0)[:, None]
        white = ((np.abs(X - LANE_WIDTH_M / 2) < 0.08) & dashed) | (np.abs(np.abs(X) - 1.5 * LANE_WIDTH_M) < 0.1)
        cls[white] = 2
        cls[np.abs(X + LANE_WIDTH_M / 2) < 0.08] = 3
        palette = np.array([[self.road_gray] * 3, self.grass, [225, 225, 225], [220, 190, 60]], np.float32)
        amp = np.array([14.0, 18.0, 6.0, 6.0], np.float32)
        ground = palette[cls] + (amp[cls] * tex * fog)[..., None]
        haze = ((1 - fog) * 0.6)[..., None]
        img[rows] = ground * (1 - haze) + self.sky_bottom.astype(np.float32) * haze
        return img

    # -- objects
    def _faces(self, actor: Actor, k: int, pitch: float):
        """Visible faces of the actor at frame k as (depth key, polygon (m,2), colour, detail list)."""
        cfg = self.cfg
        out = []
        x0, z0 = float(actor.x[k]), float(actor.z[k])
        braking = bool(actor.braking[k]) if actor.braking is not None else False
        for bi, b in enumerate(actor.bodies):
            cxb, czb = x0 + b.dx, z0 + b.dz
            xs = (cxb - b.w / 2, cxb + b.w / 2)
            zs = (czb - b.l / 2, czb + b.l / 2)
            ys = (cfg.camera_height_m - b.y0, cfg.camera_height_m - b.y0 - b.h)  # bottom, top (y down)
            corner = lambda i, j, m: np.array([xs[i], ys[m], zs[j]])  # noqa: E731, B023 (used at once)
            faces = {
                "rear": ([corner(0, 0, 0), corner(1, 0, 0), corner(1, 0, 1), corner(0, 0, 1)], np.array([0, 0, -1.0])),
                "front": ([corner(1, 1, 0), corner(0, 1, 0), corner(0, 1, 1), corner(1, 1, 1)], np.array([0, 0, 1.0])),
                "left": ([corner(0, 1, 0), corner(0, 0, 0), corner(0, 0, 1), corner(0, 1, 1)], np.array([-1.0, 0, 0])),
                "right": ([corner(1, 0, 0), corner(1, 1, 0), corner(1, 1, 1), corner(1, 0, 1)], np.array([1.0, 0, 0])),
                "top": ([corner(0, 0, 1), corner(1, 0, 1), corner(1, 1, 1), corner(0, 1, 1)], np.array([0, -1.0, 0])),
            }
            shade = {"rear": 0.85, "front": 0.85, "left": 0.62, "right": 0.7, "top": 1.05}
            for fname, (quad, normal) in faces.items():
                quad = np.array(quad)
                centre = quad.mean(axis=0)
                if np.dot(normal, centre) >= 0:  # facing away from the camera
                    continue
                col = np.array(b.color, np.float32) * shade[fname] * self.light
                details = []
                if actor.cls == "vehicle" and bi == 0 and actor.sideways:
                    if fname in ("left", "right"):  # its nose and tail
                        details.append(((0.12, 0.55, 0.88, 0.9), (40, 45, 55)))
                        details.append(((0.04, 0.28, 0.2, 0.42), (150, 20, 20)))
                        details.append(((0.8, 0.28, 0.96, 0.42), (150, 20, 20)))
                    elif fname in ("rear", "front"):  # its flank, toward us or away
                        details.append(((0.12, 0.0, 0.27, 0.3), (20, 20, 20)))
                        details.append(((0.73, 0.0, 0.88, 0.3), (20, 20, 20)))
                        details.append(((0.25, 0.55, 0.8, 0.88), (45, 50, 60)))
                elif actor.cls == "vehicle" and bi == 0:
                    facing_us = (fname == "rear" and actor.facing == 1) or (fname == "front" and actor.facing == -1)
                    back = (fname == "front" and actor.facing == 1) or (fname == "rear" and actor.facing == -1)
                    if facing_us or back:
                        details.append(((0.12, 0.55, 0.88, 0.9), (40, 45, 55)))  # window
                        lamp = (255, 40, 30) if (braking and actor.facing == 1) else (150, 20, 20)
                        if actor.facing == -1:
                            lamp = (250, 245, 200)
                        details.append(((0.04, 0.28, 0.2, 0.42), lamp))
                        details.append(((0.8, 0.28, 0.96, 0.42), lamp))
                        details.append(((0.3, 0.08, 0.7, 0.22), (220, 220, 210)))  # plate
                    elif fname in ("left", "right"):
                        details.append(((0.12, 0.0, 0.27, 0.3), (20, 20, 20)))  # wheels
                        details.append(((0.73, 0.0, 0.88, 0.3), (20, 20, 20)))
                        details.append(((0.25, 0.55, 0.8, 0.88), (45, 50, 60)))  # side windows
                out.append((quad, col, details))
        return out

    def _draw_poly(self, img: np.ndarray, quad_road: np.ndarray, pitch: float, color, ids: np.ndarray | None = None, oid: int = 0) -> np.ndarray | None:
        pc = self.to_camera(quad_road, pitch)
        poly = _clip_near(pc, NEAR_PLANE_M)
        if len(poly) < 3:
            return None
        pts = self.project(poly)
        ipts = np.round(pts * 16).astype(np.int32)  # sub-pixel precision (shift=4)
        cv2.fillPoly(img, [ipts], [float(c) for c in color], lineType=cv2.LINE_AA, shift=4)
        if ids is not None:
            cv2.fillPoly(ids, [ipts], oid, lineType=cv2.LINE_8, shift=4)
        return pts

    def draw_actor(self, img: np.ndarray, ids: np.ndarray, actor: Actor, k: int, pitch: float) -> None:
        cfg = self.cfg
        # contact shadow = the footprint of the main body (inside the box's silhouette)
        b = actor.bodies[0]
        x0, z0 = float(actor.x[k]) + b.dx, float(actor.z[k]) + b.dz
        fp = np.array([[x0 - b.w / 2, cfg.camera_height_m, z0 - b.l / 2], [x0 + b.w / 2, cfg.camera_height_m, z0 - b.l / 2],
                       [x0 + b.w / 2, cfg.camera_height_m, z0 + b.l / 2], [x0 - b.w / 2, cfg.camera_height_m, z0 + b.l / 2]])
        self._draw_poly(img, fp, pitch, (25, 25, 28), ids, actor.id + 1)
        faces = self._faces(actor, k, pitch)
        faces.sort(key=lambda f: -np.linalg.norm(f[0].mean(axis=0)))
        for quad, col, details in faces:
            self._draw_poly(img, quad, pitch, col, ids, actor.id + 1)
            for (a0, b0, a1, b1), dcol in details:
                q = _subquad(quad, a0, b0, a1, b1)
                self._draw_poly(img, q, pitch, np.array(dcol, np.float32) * self.light)

    def truth(self, actor: Actor, k: int, pitch: float) -> dict | None:
        """Ground truth of one actor at frame k: 3D centre, projected box, depth (None if out of view)."""
        cfg = self.cfg
        corners = []
        for b in actor.bodies:
            cxb, czb = float(actor.x[k]) + b.dx, float(actor.z[k]) + b.dz
            for sx in (-1, 1):
                for sz in (-1, 1):
                    for y in (cfg.camera_height_m - b.y0, cfg.camera_height_m - b.y0 - b.h):
                        corners.append([cxb + sx * b.w / 2, y, czb + sz * b.l / 2])
        pc = self.to_camera(np.array(corners), pitch)
        depth = float(pc[:, 2].min())
        centre = np.array([[float(actor.x[k]), cfg.camera_height_m - 0.5 * max(b.y0 + b.h for b in actor.bodies), float(actor.z[k])]])
        rec = {
            "id": actor.id,
            "class": actor.cls,
            "role": actor.role,
            "position_m": [round(float(v), 4) for v in self.to_camera(centre, pitch)[0]],
            "ground_xz_m": [round(float(actor.x[k]), 4), round(float(actor.z[k]), 4)],
            "depth_m": round(depth, 4),
            "braking": bool(actor.braking[k]) if actor.braking is not None else False,
        }
        if pc[:, 2].max() <= NEAR_PLANE_M:
            rec["box_xyxy"] = None
            return rec
        # silhouette box: project the near-clipped hull of the corners
        hull = []
        for quad in _box_faces(pc):
            hull.extend(_clip_near(quad, NEAR_PLANE_M))
        pts = self.project(np.array(hull))
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        x1c, y1c = max(x1, 0.0), max(y1, 0.0)
        x2c, y2c = min(x2, cfg.width), min(y2, cfg.height)
        rec["box_xyxy"] = [round(float(v), 2) for v in (x1c, y1c, x2c, y2c)] if x2c > x1c and y2c > y1c else None
        return rec

    def frame(self, sc: Scenario, k: int, s_ego: float, noise: bool = True, draw_actors: bool = True):
        t = k / self.cfg.fps
        pitch = self.pitch(t)
        img = self.background(t, s_ego, pitch)
        ids = np.zeros(img.shape[:2], np.int32)
        if draw_actors:
            order = sorted(sc.actors, key=lambda a: -float(np.hypot(a.x[k], a.z[k])))
            for actor in order:
                if float(actor.z[k]) + actor.half_length > NEAR_PLANE_M and float(actor.z[k]) < 250:
                    self.draw_actor(img, ids, actor, k, pitch)
        gain = 1.0 + 0.03 * math.sin(self.flicker[1] * 2 * math.pi * t + self.flicker[0])
        img *= gain
        if noise:
            img += self.noise_bank[k % len(self.noise_bank)]
        return np.clip(img, 0, 255).astype(np.uint8), ids, pitch


def _periodic_noise(rng: np.random.Generator, size: int, sigma: float) -> np.ndarray:
    """Gaussian-smoothed white noise that tiles seamlessly (blurred in the Fourier domain)."""
    noise = rng.normal(0.0, 1.0, (size, size))
    k = np.fft.fftfreq(size)
    g = np.exp(-2 * (np.pi * sigma) ** 2 * (k[:, None] ** 2 + k[None, :] ** 2))
    return np.real(np.fft.ifft2(np.fft.fft2(noise) * g)).astype(np.float32)


def _subquad(quad: np.ndarray, a0: float, b0: float, a1: float, b1: float) -> np.ndarray:
    """Part of a quad (corners: bottom-left, bottom-right, top-right, top-left) in face coordinates."""
    p00, p10, p11, p01 = quad
    f = lambda a, b: (1 - a) * (1 - b) * p00 + a * (1 - b) * p10 + a * b * p11 + (1 - a) * b * p01  # noqa: E731
    return np.array([f(a0, b0), f(a1, b0), f(a1, b1), f(a0, b1)])


def _box_faces(pc: np.ndarray) -> list[np.ndarray]:
    """The six faces of each 8-corner group in `pc` (corner order as built in `truth`)."""
    faces = []
    for g in range(0, len(pc), 8):
        c = pc[g : g + 8]
        # corner index = 4 * (x side) + 2 * (z side) + (bottom/top); each face as a ring
        idx = [(0, 2, 3, 1), (4, 6, 7, 5), (0, 4, 5, 1), (2, 6, 7, 3), (0, 4, 6, 2), (1, 5, 7, 3)]
        faces.extend(c[list(i)] for i in idx)
    return faces


def _clip_near(poly: np.ndarray, near: float) -> np.ndarray:
    """Sutherland-Hodgman clip of a 3D polygon (camera coords) to z >= near."""
    out = []
    n = len(poly)
    for i in range(n):
        a, b = poly[i], poly[(i + 1) % n]
        ina, inb = a[2] >= near, b[2] >= near
        if ina:
            out.append(a)
        if ina != inb:
            r = (near - a[2]) / (b[2] - a[2])
            out.append(a + r * (b - a))
    return np.array(out) if out else np.zeros((0, 3))


# ----------------------------------------------------------------------------- clips


def scenario_for(index: int, mix: str = "default") -> str:
    """Half positives (even indices), each class cycling through its scenario types; `mix` picks the
    ego scenarios ("default") or the third-party ones ("third-party")."""
    pos, neg = _mix(mix)
    if index % 2 == 0:
        return pos[(index // 2) % len(pos)]
    return neg[(index // 2) % len(neg)]


def _mix(mix: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    if mix == "default":
        return POSITIVE_SCENARIOS, NEGATIVE_SCENARIOS
    if mix == "third-party":
        return THIRD_PARTY_POSITIVES, THIRD_PARTY_NEGATIVES
    raise ValueError(f"unknown synthetic mix {mix!r}; choose from {', '.join(MIXES)}")


def clip_rng(seed: int, index: int, mix: str = "default") -> np.random.Generator:
    """The generator of one clip; the third-party mix draws from its own stream (not the default
    mix's clip of the same seed and index)."""
    key = [seed, index] if mix == "default" else [seed, index, MIXES.index(mix)]
    return np.random.default_rng(np.random.SeedSequence(key))


def render_clip(sc: Scenario, renderer: Renderer, clip_id: str, video_path: Path | None) -> dict:
    """Render a scenario to `video_path` (if given) and return its ground-truth record."""
    cfg = renderer.cfg
    n = len(sc.ego_speed)
    dt = 1.0 / cfg.fps
    s_ego = np.concatenate([[0.0], np.cumsum(sc.ego_speed[:-1] * dt)])
    frames_truth = []
    writer = VideoWriter(video_path, cfg.fps, (cfg.width, cfg.height), cfg.crf, preset="ultrafast") if video_path else None
    depth_hist: dict[int, list[float]] = {a.id: [] for a in sc.actors}
    try:
        for k in range(n):
            if writer is not None:
                img, _, pitch = renderer.frame(sc, k, float(s_ego[k]))
                writer.write(img)
            else:
                pitch = renderer.pitch(k * dt)
            objs = []
            for a in sc.actors:
                rec = renderer.truth(a, k, pitch)
                depth_hist[a.id].append(rec["depth_m"])
                objs.append(rec)
            frames_truth.append({"t": round(k * dt, 4), "ego_speed_mps": round(float(sc.ego_speed[k]), 4),
                                 "pitch_deg": round(math.degrees(pitch), 5), "objects": objs})
    finally:
        if writer is not None:
            writer.close()
    # true time-to-contact from the depth rate (central differences on the noiseless trajectory)
    for a in sc.actors:
        d = np.array(depth_hist[a.id])
        rate = np.gradient(d, dt)
        for k, fr in enumerate(frames_truth):
            rec = next(o for o in fr["objects"] if o["id"] == a.id)
            closing = -rate[k]
            rec["closing_speed_mps"] = round(float(closing), 4)
            rec["ttc_s"] = round(float((d[k] - cfg.ego_front_m) / closing), 4) if closing > 0.05 and d[k] > cfg.ego_front_m - 1e-6 else None
    closest = None
    if sc.key_actor is not None:
        a = next(a for a in sc.actors if a.id == sc.key_actor)
        # road distance from the front bumper to the object's nearest face (ignores camera shake);
        # the first frame within 1 cm of the minimum is the moment of contact / closest approach
        gap = np.hypot(np.maximum(np.abs(a.x) - a.half_width, 0.0), a.z - a.half_length - cfg.ego_front_m)
        kmin = int(np.nonzero(gap <= gap.min() + 0.01)[0][0])
        closest = {"object_id": sc.key_actor, "time_s": round(kmin * dt, 4), "gap_m": round(float(gap[kmin]), 4)}
    record = {
        "clip_id": clip_id,
        "scenario": sc.name,
        "target": sc.target,
        "event_kind": sc.event_kind,
        "time_of_event": sc.time_of_event_s,
        "time_of_alert": sc.time_of_alert_s,
        "duration_s": round(n * dt, 4),
        "fps": cfg.fps,
        "width": cfg.width,
        "height": cfg.height,
        "camera": {"focal_px": round(cfg.focal_px, 4), "cx": cfg.width / 2, "cy": cfg.height / 2,
                   "height_m": cfg.camera_height_m, "hfov_deg": cfg.hfov_deg, "ego_front_m": cfg.ego_front_m},
        "closest_approach": closest,
        "frames": frames_truth,
    }
    if sc.agents is not None:  # third-party scenarios only: the records of the default mix stay as they were
        record["third_party"] = agents_closest_approach(sc, cfg.fps)
    return record


def footprint_gap(a: Actor, b: Actor) -> np.ndarray:
    """Road distance (m) between the footprints (axis-aligned rectangles) of two actors, per frame."""
    dx = np.maximum(np.abs(a.x - b.x) - (a.half_width + b.half_width), 0.0)
    dz = np.maximum(np.abs(a.z - b.z) - (a.half_length + b.half_length), 0.0)
    return np.hypot(dx, dz)


def agents_closest_approach(sc: Scenario, fps: float) -> dict:
    """The two road users of a third-party scenario and their closest approach: the first frame within
    1 cm of the smallest footprint gap (contact for a collision), and the centres' distance then."""
    a, b = (next(x for x in sc.actors if x.id == i) for i in sc.agents)
    gap = footprint_gap(a, b)
    k = int(np.nonzero(gap <= gap.min() + 0.01)[0][0])
    return {"agents": list(sc.agents), "classes": [a.cls, b.cls], "roles": [a.role, b.role], "collision": bool(sc.target),
            "time_s": round(k / fps, 4), "gap_m": round(float(gap[k]), 4),
            "centre_distance_m": round(float(np.hypot(a.x[k] - b.x[k], a.z[k] - b.z[k])), 4)}


def clip_id_for(seed: int, index: int, mix: str = "default") -> str:
    _mix(mix)
    return f"synth{seed:04d}_{'tp' if mix == 'third-party' else ''}{index:04d}"


def render_one(seed: int, index: int, out_dir: Path, cfg: SynthConfig, mix: str = "default") -> tuple[str, str, str, int]:
    """Render clip `index` of `seed` (in `mix`) into out_dir (video + truth JSON); returns its CSV row."""
    rng = clip_rng(seed, index, mix)
    cid = clip_id_for(seed, index, mix)
    sc = make_scenario(scenario_for(index, mix), rng, cfg, cid)
    renderer = Renderer(cfg, rng)
    video = out_dir / f"{cid}.mp4"
    tmp = video.with_name(f".{video.stem}.part.mp4")
    truth = render_clip(sc, renderer, cid, tmp)
    tmp.replace(video)
    atomic_write_text(out_dir / "truth" / f"{cid}.json", json.dumps(truth, separators=(",", ":")))
    return cid, _fmt(sc.time_of_event_s), _fmt(sc.time_of_alert_s), sc.target


CSV_HEADER = "id,time_of_event,time_of_alert,target"
_ID = re.compile(r"synth-?\d+_(?:tp)?\d{4,}")  # clip_id_for's ids


def synthetic_ids(out_dir: str | Path) -> list[str] | None:
    """The clip ids of the synthetic clips crashcast wrote in `out_dir`, in annotation order; None when
    its annotations.csv is not crashcast's own. Crashcast's own: `generate`'s header, every id of
    `clip_id_for`'s form, and each one's `truth/<id>.json` beside it (a ground-truth record naming that
    clip, which no other tool writes); no annotations.csv: an empty list."""
    out = Path(out_dir)
    csv_path = out / "annotations.csv"
    if not csv_path.exists() and not csv_path.is_symlink():
        return []
    try:
        if not csv_path.is_file() or csv_path.stat().st_size > 10_000_000:
            return None
        lines = csv_path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    if not lines or lines[0] != CSV_HEADER:
        return None
    ids = [line.split(",", 1)[0] for line in lines[1:]]
    if not all(_ID.fullmatch(cid) and _is_truth(out / "truth" / f"{cid}.json", cid) for cid in ids):
        return None
    return ids


def _is_truth(path: Path, cid: str) -> bool:
    """Whether `path` is the ground-truth record `render_one` wrote for clip `cid` (it starts with its id)."""
    try:
        if not path.is_file():
            return False
        with path.open("rb") as f:
            return f.read(64).startswith(f'{{"clip_id":"{cid}"'.encode())
    except OSError:
        return False


def expected_ids(n: int, seed: int, mix: str = "default") -> list[str]:
    """The clip ids `generate(n, seed=seed, mix=mix)` writes, in order."""
    return [clip_id_for(seed, i, mix) for i in range(n)]


def prepare_out(out_dir: str | Path, n: int, seed: int, mix: str = "default") -> bool:
    """Make `out_dir` ready for `generate(n, seed=seed)`: True when it already holds exactly those clips
    (rendering again rewrites the same files). A folder whose annotations.csv crashcast did not write
    is refused (`CrashcastError` naming the file); crashcast's own clips of another seed or count are
    removed first (their videos and truth files, then the CSV), so the folder never mixes two sets. A
    truth file of a clip to render that is not crashcast's is refused too."""
    from crashcast.errors import CrashcastError

    out = Path(out_dir)
    have = synthetic_ids(out)
    csv_path = out / "annotations.csv"
    if have is None:
        raise CrashcastError(f"{csv_path}: an annotations.csv that crashcast's synth did not write (not synthetic clips "
                             f"with their truth/ files); synth leaves it alone - choose another --out folder")
    want = expected_ids(n, seed, mix)
    if have == want:
        return True
    if have:
        log.warning("%s: replacing the %d synthetic clip(s) crashcast wrote there (%s...) with %d clip(s) of seed %d",
                    out, len(have), have[0], n, seed)
        for cid in have:
            (out / f"{cid}.mp4").unlink(missing_ok=True)
            (out / "truth" / f"{cid}.json").unlink(missing_ok=True)
        csv_path.unlink()
    for cid in want:  # a truth file of a clip to render is crashcast's own (an interrupted synth's), or refused
        truth = out / "truth" / f"{cid}.json"
        if (truth.exists() or truth.is_symlink()) and not _is_truth(truth, cid):
            raise CrashcastError(f"{truth}: a file that crashcast's synth did not write; synth leaves it alone - choose "
                                 f"another --out folder")
    return False


def generate(n: int, out_dir: str | Path, seed: int = 0, cfg: SynthConfig | None = None, workers: int = 1, progress: bool = False,
             mix: str = "default") -> Path:
    """Write n clips, `annotations.csv` and `truth/<id>.json` to `out_dir`; returns the CSV path.
    `mix`: "default" (the ego scenarios) or "third-party" (other road users collide ahead; ids
    `synth<seed>_tp<index>`). A folder holding data crashcast did not write is refused; crashcast's
    own clips of another seed, count or mix are replaced (`prepare_out`)."""
    from crashcast.runtime.executor import run_jobs

    _mix(mix)
    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    prepare_out(out, n, seed, mix)
    (out / "truth").mkdir(parents=True, exist_ok=True)
    jobs = [(clip_id_for(seed, i, mix), (seed, i, out, cfg, mix)) for i in range(n)]
    results = run_jobs(render_one, jobs, workers, f"rendering {n} synthetic clips", progress)
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError(f"rendering failed for {failed[0].key}: {failed[0].error}")
    lines = [CSV_HEADER] + [",".join(str(v) for v in r.value) for r in results]
    csv_path = out / "annotations.csv"
    atomic_write_text(csv_path, "\n".join(lines) + "\n")
    return csv_path


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.3f}"
