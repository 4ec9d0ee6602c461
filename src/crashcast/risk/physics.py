"""The training-free risk models, from kinematics alone:

- `ttc`: a logistic of the smallest time-to-contact in the ego path or of the looming road ahead;
- `physics`: TTC and closing speed of the objects in the ego path, and the detection-free looming
  of the road ahead (`physics_risk`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np

from crashcast.features.table import IN_PATH_M, MIN_FRAMES_FOR_TTC, TTC_CAP_S
from crashcast.risk.base import RiskModel, sigmoid
from crashcast.risk.evidence import Agent, Evidence, Measurement, Term, finite, table_agent, ttc_source
from crashcast.risk.windows import WindowSet, as_windows
from crashcast.settings import PhysicsConfig

#: The feature-table columns the training-free models read.
RULE_COLUMNS = ["path_min_ttc_s", "scene_ttc_s", "path_max_closing_mps"]


def physics_risk(path_min_ttc_s, scene_ttc_s, path_max_closing_mps, cfg: PhysicsConfig) -> np.ndarray:
    """Collision probability from kinematics alone.

    r_obj  = sigmoid((ttc_mid - TTC) / ttc_scale) for the smallest TTC of an object in the ego path,
             counted only if it closes faster than `min_closing_mps`;
    r_loom = the same logistic of the detection-free looming TTC of the road ahead;
    risk   = 1 - (1 - r_obj) (1 - looming_weight r_loom).
    ttc_mid = 2.0 s because forward-collision-warning tests (Euro NCAP, NHTSA) expect warnings at
    TTC 1.5-2.5 s; ttc_scale = 0.45 s takes the risk from 0.1 at 3 s to 0.9 at 1 s.
    """
    ttc = np.asarray(path_min_ttc_s, float)
    closing = np.nan_to_num(np.asarray(path_max_closing_mps, float), nan=0.0)
    ttc = np.where(closing >= cfg.min_closing_mps, ttc, TTC_CAP_S)
    r_obj = sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s)
    r_loom = sigmoid((cfg.ttc_mid_s - np.asarray(scene_ttc_s, float)) / cfg.ttc_scale_s)
    return 1.0 - (1.0 - r_obj) * (1.0 - cfg.looming_weight * r_loom)


def _ttc_shown(name: str, value: float, source: str, agent: int | None) -> Measurement:
    """A TTC measurement; at the cap it reads 'no TTC under 10 s' (whole seconds)."""
    return Measurement(name, value, "s", source, agent, 0 if value >= TTC_CAP_S else 1)


def _object_agents(row: Any, meta: Any) -> tuple[int | None, int | None, int | None]:
    """(the object whose TTC is `path_min_ttc_s`, the one whose closing speed is `path_max_closing_mps`,
    the nearest object in the ego path) as positions in the window's objects (closest first; the
    feature table's obj1 is 0), None where there is none. From the window's metadata when it is at
    hand (every object, as `features.table.feature_row` aggregates them); else from the table's
    top-K objects, which may not hold it."""
    ttc, closing = float(row["path_min_ttc_s"]), finite(row["path_max_closing_mps"]) or 0.0
    if meta is not None:
        objs = meta.objects
        path = [i for i, o in enumerate(objs) if o.lateral_offset_m is not None and o.lateral_offset_m < IN_PATH_M]
        settled = [i for i in path if objs[i].frames_seen >= MIN_FRAMES_FOR_TTC]

        def cap(v: float | None) -> float:
            return min(v, TTC_CAP_S) if v is not None and math.isfinite(v) else TTC_CAP_S

        by_ttc = next((i for i in settled if ttc < TTC_CAP_S and abs(cap(objs[i].ttc_s) - ttc) < 1e-6), None)
        by_closing = next((i for i in settled if closing != 0 and abs((objs[i].closing_speed_mps or 0.0) - closing) < 1e-6), None)
        nearest = min(path, key=lambda i: objs[i].mean_depth_m if objs[i].mean_depth_m is not None else math.inf, default=None)
        return by_ttc, by_closing, nearest
    ks = [k for k in range(1, 51) if f"obj{k}_present" in row and row[f"obj{k}_present"] and row.get(f"obj{k}_in_path", 0)]
    by_ttc = next((k - 1 for k in ks if ttc < TTC_CAP_S and abs(float(row[f"obj{k}_ttc_s"]) - ttc) < 1e-6), None)
    by_closing = next((k - 1 for k in ks if closing != 0 and abs((finite(row[f"obj{k}_closing_mps"]) or 0.0) - closing) < 1e-6), None)
    return by_ttc, by_closing, (ks[0] - 1 if ks else None)


def _agent(row: Any, meta: Any, i: int) -> Agent:
    if i < 50 and f"obj{i + 1}_present" in row:
        return table_agent(row, i + 1, meta)
    o = meta.objects[i]
    cls = "person" if o.class_name in ("person", "cyclist") else ("vehicle" if o.class_name == "vehicle" else "object")
    return Agent(None, int(o.object_id), cls)


def _distance_m(row: Any, meta: Any, i: int) -> float | None:
    """Where object i is now (the median of its last three depths, as the table's `depth_end_m`)."""
    if f"obj{i + 1}_depth_end_m" in row:
        return finite(row[f"obj{i + 1}_depth_end_m"])
    track = meta.objects[i].depth_track_m
    return float(np.median(track[-3:])) if track else None


def object_term(row: Any, meta: Any, contribution: float, min_closing_mps: float | None = None) -> Term:
    """The ego-path object term of the training-free models: the smallest settled in-path TTC
    (`path_min_ttc_s`), the largest in-path closing speed (`path_max_closing_mps`, the gate) and the
    objects they belong to; the nearest in-path object when no TTC is under the cap. `min_closing_mps`:
    the physics model's gate (shown when it kept a TTC from counting)."""
    ttc, closing = float(row["path_min_ttc_s"]), finite(row["path_max_closing_mps"]) or 0.0
    by_ttc, by_closing, nearest = _object_agents(row, meta)
    first = by_ttc if by_ttc is not None else (by_closing if by_closing is not None else nearest)
    order = [i for i in dict.fromkeys((first, by_closing)) if i is not None]
    agents = tuple(_agent(row, meta, i) for i in order)
    slot = {i: n for n, i in enumerate(order)}
    ms: list[Measurement] = []
    if first is not None:
        d = _distance_m(row, meta, first)
        if d is not None:
            ms.append(Measurement("distance", d, "m", "in the path", 0, 0))
    source = ""
    if by_ttc is not None and meta is not None:
        o = meta.objects[by_ttc]
        source = ttc_source(o.ttc_s, o.ttc_depth_s, o.ttc_scale_s)
    quiet = not agents and closing == 0 and ttc >= TTC_CAP_S  # nothing in the path: said in words
    ms.append(Measurement("closing", closing, "m/s", "the depth rate", slot.get(by_closing), in_text=not quiet))
    ms.append(replace(_ttc_shown("ttc", ttc, source, slot.get(by_ttc)), in_text=not quiet))
    if min_closing_mps is not None:  # the physics model's gate: a TTC counts only when the path closes this fast
        ms.append(Measurement("min_closing", min_closing_mps, "m/s", "physics.min_closing_mps",
                              in_text=ttc < TTC_CAP_S and closing < min_closing_mps))
    return Term("object", contribution, agents, tuple(ms))


def looming_term(row: Any, contribution: float) -> Term:
    """The detection-free term: contact with the road ahead at its looming rate (`scene_ttc_s`)."""
    return Term("looming", contribution, (), (_ttc_shown("scene_ttc", float(row["scene_ttc_s"]), "road looming", None),))


def physics_score(ev: Evidence, cfg: PhysicsConfig) -> float:
    """The physics risk recomputed from its evidence alone (`physics_risk` of its object and looming
    terms' measurements): what a test compares with the model's score."""
    obj = next(t for t in ev.terms if t.name == "object")
    loom = next(t for t in ev.terms if t.name == "looming")
    return float(physics_risk([obj.get("ttc").value], [loom.get("scene_ttc").value], [obj.get("closing").value], cfg)[0])


class _Rule(RiskModel):
    def columns(self) -> list[str]:
        return list(RULE_COLUMNS)

    def _metas(self, ws: WindowSet) -> list[Any]:
        return list(ws.metas) if ws.metas is not None else [None] * len(ws)

    Config = PhysicsConfig

    @classmethod
    def settings_from(cls, config: Any) -> dict:
        return config.physics.model_dump()

    @property
    def config(self) -> PhysicsConfig:
        return self.settings


class TTCRule(_Rule):
    kind = "ttc"

    def raw_scores(self, windows: WindowSet) -> np.ndarray:
        df, cfg = as_windows(windows).table, self.config
        ttc = np.minimum(df["path_min_ttc_s"].to_numpy(float), df["scene_ttc_s"].to_numpy(float))
        return sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s)

    def evidence(self, windows: WindowSet, raw: np.ndarray) -> list[Evidence]:
        """The smaller of the path TTC and the looming TTC drives the score (the other term adds nothing)."""
        ws = as_windows(windows)
        out = []
        for (_, row), meta, r in zip(ws.table.iterrows(), self._metas(ws), raw, strict=True):
            obj_drives = float(row["path_min_ttc_s"]) <= float(row["scene_ttc_s"])
            terms = [object_term(row, meta, float(r) if obj_drives else 0.0), looming_term(row, 0.0 if obj_drives else float(r))]
            out.append(Evidence(self.kind, float(r), terms if obj_drives else terms[::-1]))
        return out


class PhysicsModel(_Rule):
    kind = "physics"

    def raw_scores(self, windows: WindowSet) -> np.ndarray:
        df = as_windows(windows).table
        return physics_risk(df["path_min_ttc_s"], df["scene_ttc_s"], df["path_max_closing_mps"], self.config)

    def evidence(self, windows: WindowSet, raw: np.ndarray) -> list[Evidence]:
        """Each term's share: the object term's probability (zero unless the path closes faster than
        `min_closing_mps`) and the looming term's weighted probability; the larger drives."""
        ws, cfg = as_windows(windows), self.config
        out = []
        for (_, row), meta, r in zip(ws.table.iterrows(), self._metas(ws), raw, strict=True):
            closing = finite(row["path_max_closing_mps"]) or 0.0
            ttc = float(row["path_min_ttc_s"]) if closing >= cfg.min_closing_mps else TTC_CAP_S
            r_obj = float(sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s))
            r_loom = cfg.looming_weight * float(sigmoid((cfg.ttc_mid_s - float(row["scene_ttc_s"])) / cfg.ttc_scale_s))
            terms = sorted([object_term(row, meta, r_obj, cfg.min_closing_mps), looming_term(row, r_loom)], key=lambda t: -t.contribution)
            out.append(Evidence(self.kind, float(r), terms))
        return out
