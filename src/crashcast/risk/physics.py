"""The training-free risk models, from kinematics alone:

- `ttc`: a logistic of the smallest time-to-contact in the ego path or of the looming road ahead;
- `physics`: TTC and closing speed of the objects in the ego path, the detection-free looming of the
  road ahead, and the third-party term: two other road users converging ahead, or sudden image
  motion the ego motion does not explain (`physics_risk`, `crashcast.risk.third_party`).
"""

from __future__ import annotations

import math
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd

from crashcast.features.table import IN_PATH_M, MIN_FRAMES_FOR_TTC, THIRD_PARTY_COLUMNS, TTC_CAP_S
from crashcast.risk.base import RiskModel, sigmoid
from crashcast.risk.evidence import (
    LETTERS,
    Agent,
    Evidence,
    Measurement,
    Term,
    finite,
    table_agent,
    ttc_source,
)
from crashcast.risk.third_party import (
    ThirdPartyConfig,
    ThirdPartyEvidence,
    third_party_evidence,
    third_party_risk,
)
from crashcast.risk.windows import WindowSet, as_windows
from crashcast.settings import PhysicsConfig

#: The feature-table columns the training-free models read.
RULE_COLUMNS = ["path_min_ttc_s", "scene_ttc_s", "path_ttc_closing_mps"]


def physics_risk(path_min_ttc_s, scene_ttc_s, path_ttc_closing_mps, cfg: PhysicsConfig, third_party=None) -> np.ndarray:
    """Collision probability from kinematics alone.

    r_obj  = sigmoid((ttc_mid - TTC) / ttc_scale) for the smallest TTC of an object in the ego path,
             counted only if that object itself closes faster than `min_closing_mps`
             (`path_ttc_closing_mps`: a TTC from image expansion of a box that is not coming nearer,
             e.g. the verge beside the road growing as it passes, is not counted);
    r_loom = the same logistic of the detection-free looming TTC of the road ahead;
    r_tp   = the third-party risk (`third_party`, `risk.third_party.third_party_risk`; none when None);
    risk   = 1 - (1 - r_obj) (1 - max(looming_weight r_loom, third_party_weight r_tp)).
    The scene cues (looming, third party) combine by their maximum, not as independent evidence:
    both read the same flow residual (the motion anomaly, the looming of off-road regions), so on a
    noisy frame they rise together; summed as independent they let two sub-threshold cues alert
    (synthetic negatives at 0.52 from looming 0.40 + third party 0.20), and a weight under the
    threshold would no longer mean 'never alerts alone'.
    ttc_mid = 2.0 s because forward-collision-warning tests (Euro NCAP, NHTSA) expect warnings at
    TTC 1.5-2.5 s; ttc_scale = 0.45 s takes the risk from 0.1 at 3 s to 0.9 at 1 s.
    """
    ttc = np.asarray(path_min_ttc_s, float)
    closing = np.nan_to_num(np.asarray(path_ttc_closing_mps, float), nan=0.0)
    ttc = np.where(closing >= cfg.min_closing_mps, ttc, TTC_CAP_S)
    r_obj = sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s)
    r_loom = sigmoid((cfg.ttc_mid_s - np.asarray(scene_ttc_s, float)) / cfg.ttc_scale_s)
    r_tp = 0.0 if third_party is None else np.asarray(third_party, float)
    scene = np.maximum(cfg.looming_weight * r_loom, cfg.third_party_weight * r_tp)
    return 1.0 - (1.0 - r_obj) * (1.0 - scene)


def _ttc_shown(name: str, value: float, source: str, agent: int | None) -> Measurement:
    """A TTC measurement; at the cap it reads 'no TTC under 10 s' (whole seconds)."""
    return Measurement(name, value, "s", source, agent, 0 if value >= TTC_CAP_S else 1)


def _object_agents(row: Any, meta: Any) -> tuple[int | None, int | None]:
    """(the object whose TTC is `path_min_ttc_s` and whose closing speed is `path_ttc_closing_mps`:
    the settled in-path object with the smallest TTC, the nearest on a tie; the nearest object in
    the ego path) as positions in the window's objects (closest first; the feature table's obj1 is
    0), None where there is none. From the window's metadata when it is at hand (every object, as
    `features.table.feature_row` aggregates them); else from the table's top-K objects, which may
    not hold it."""
    ttc = float(row["path_min_ttc_s"])
    if meta is not None:
        objs = meta.objects
        path = [i for i, o in enumerate(objs) if o.lateral_offset_m is not None and o.lateral_offset_m < IN_PATH_M]
        settled = [i for i in path if objs[i].frames_seen >= MIN_FRAMES_FOR_TTC]

        def cap(v: float | None) -> float:
            return min(v, TTC_CAP_S) if v is not None and math.isfinite(v) else TTC_CAP_S

        gated = min(settled, key=lambda i: cap(objs[i].ttc_s), default=None)
        nearest = min(path, key=lambda i: objs[i].mean_depth_m if objs[i].mean_depth_m is not None else math.inf, default=None)
        return gated, nearest
    ks = [k for k in range(1, 51) if f"obj{k}_present" in row and row[f"obj{k}_present"] and row.get(f"obj{k}_in_path", 0)]
    gated = next((k - 1 for k in ks if ttc < TTC_CAP_S and abs(float(row[f"obj{k}_ttc_s"]) - ttc) < 1e-6), None)
    return gated, (ks[0] - 1 if ks else None)


def _coarse_class(o: Any) -> str:
    """vehicle / person / object for a window's object (a cyclist is a person here, as in the table)."""
    return "person" if o.class_name in ("person", "cyclist") else ("vehicle" if o.class_name == "vehicle" else "object")


def _agent(row: Any, meta: Any, i: int) -> Agent:
    if i < 50 and f"obj{i + 1}_present" in row:
        return table_agent(row, i + 1, meta)
    o = meta.objects[i]
    return Agent(None, int(o.object_id), _coarse_class(o))


def _distance_m(row: Any, meta: Any, i: int) -> float | None:
    """Where object i is now (the median of its last three depths, as the table's `depth_end_m`)."""
    if f"obj{i + 1}_depth_end_m" in row:
        return finite(row[f"obj{i + 1}_depth_end_m"])
    track = meta.objects[i].depth_track_m
    return float(np.median(track[-3:])) if track else None


def object_term(row: Any, meta: Any, contribution: float, min_closing_mps: float | None = None) -> Term:
    """The ego-path object term of the training-free models: the smallest settled in-path TTC
    (`path_min_ttc_s`), that object's own closing speed (`path_ttc_closing_mps`, the physics gate)
    and the object they belong to; the nearest in-path object when none is settled. `min_closing_mps`:
    the physics model's gate (shown when it kept a TTC from counting)."""
    ttc, closing = float(row["path_min_ttc_s"]), finite(row["path_ttc_closing_mps"]) or 0.0
    gated, nearest = _object_agents(row, meta)
    first = gated if gated is not None else nearest
    agents = (_agent(row, meta, first),) if first is not None else ()
    ms: list[Measurement] = []
    if first is not None:
        d = _distance_m(row, meta, first)
        if d is not None:
            ms.append(Measurement("distance", d, "m", "in the path", 0, 0))
    source = ""
    if gated is not None and meta is not None and ttc < TTC_CAP_S:
        o = meta.objects[gated]
        source = ttc_source(o.ttc_s, o.ttc_depth_s, o.ttc_scale_s)
    # the closing speed is said when it is that object's (nothing in the path, or only young tracks: in words)
    said = gated is not None or (not agents and (closing != 0 or ttc < TTC_CAP_S))
    slot = 0 if gated is not None else None
    ms.append(Measurement("closing", closing, "m/s", "the depth rate", slot, in_text=said))
    ms.append(replace(_ttc_shown("ttc", ttc, source, slot), in_text=said or bool(agents)))
    if min_closing_mps is not None:  # the physics model's gate: a TTC counts only when its object closes this fast
        ms.append(Measurement("min_closing", min_closing_mps, "m/s", "physics.min_closing_mps",
                              in_text=ttc < TTC_CAP_S and closing < min_closing_mps))
    return Term("object", contribution, agents, tuple(ms))


def looming_term(row: Any, contribution: float) -> Term:
    """The detection-free term: contact with the road ahead at its looming rate (`scene_ttc_s`)."""
    return Term("looming", contribution, (), (_ttc_shown("scene_ttc", float(row["scene_ttc_s"]), "road looming", None),))


#: the third-party term's measurements, by the feature-table column each one is
_TP_MEASURED = {"pair_dcpa": "pair_dcpa_m", "pair_tcpa": "pair_tcpa_s", "pair_distance": "pair_distance_m",
                "pair_closing": "pair_closing_mps", "pair_has_person": "pair_has_person", "motion_anomaly": "motion_anomaly"}


def _pair_agent(meta: Any, object_id: int, fallback_class: str) -> Agent:
    """A pair member as an Agent: its letter (rank by distance) and class from the window's objects."""
    objs = meta.objects if meta is not None else []
    i = next((n for n, o in enumerate(objs) if int(o.object_id) == object_id), None)
    if i is None:
        return Agent(None, object_id, fallback_class)
    return Agent(LETTERS[i] if i < len(LETTERS) else None, object_id, _coarse_class(objs[i]))


def third_party_term(row: Any, meta: Any, tp: ThirdPartyEvidence, contribution: float) -> Term:
    """The third-party term: the two road users that come closest to each other (both named), when
    and how near, how fast they close, and the detection-free motion anomaly; the reason tells the
    part that drives it (the pair, or the anomaly)."""
    pair = tp.term == "pair" and tp.agents is not None
    agents: tuple[Agent, ...] = ()
    if tp.agents is not None:
        fallback = "person" if tp.has_person else "object"
        agents = (_pair_agent(meta, tp.agents[0], "object"), _pair_agent(meta, tp.agents[1], fallback))
    anomaly = finite(row["motion_anomaly"])
    contact = tp.contact_s if tp.contact_s is not None else math.nan
    ms = (Measurement("pair_contact", contact, "s", "the pair's closest approach", None, 1, in_text=pair),
          Measurement("pair_dcpa", float(row["pair_dcpa_m"]), "m", "closest approach", None, 1, in_text=pair),
          Measurement("pair_tcpa", float(row["pair_tcpa_s"]), "s", "closest approach", None, 1, in_text=pair),
          Measurement("pair_distance", float(row["pair_distance_m"]), "m", "now", None, 1, in_text=False),
          Measurement("pair_closing", float(row["pair_closing_mps"]), "m/s", "the pair's distance rate", None, 1, in_text=pair),
          Measurement("pair_has_person", float(row["pair_has_person"]), "flag", "", None, 0, in_text=False),
          Measurement("motion_anomaly", math.nan if anomaly is None else anomaly, "px", "flow residual", None, 1,
                      in_text=not pair and anomaly is not None),
          # where the anomaly's risk is half (a reason calls an anomaly below it 'no sudden motion')
          Measurement("anomaly_mid", ThirdPartyConfig().anomaly_mid_px, "px", "third_party.anomaly_mid_px", None, 1,
                      in_text=False))
    return Term("third_party", contribution, agents if pair else (), ms)


def physics_score(ev: Evidence, cfg: PhysicsConfig) -> float:
    """The physics risk recomputed from its evidence alone (`physics_risk` of its object, looming and
    third-party terms' measurements): what a test compares with the model's score."""
    obj = next(t for t in ev.terms if t.name == "object")
    loom = next(t for t in ev.terms if t.name == "looming")
    tp = next((t for t in ev.terms if t.name == "third_party"), None)
    r_tp = None
    if tp is not None:
        r_tp = third_party_risk(pd.DataFrame({col: [tp.get(name).value] for name, col in _TP_MEASURED.items()}))
    return float(physics_risk([obj.get("ttc").value], [loom.get("scene_ttc").value], [obj.get("closing").value], cfg, r_tp)[0])


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

    def columns(self) -> list[str]:
        return list(RULE_COLUMNS) + (list(THIRD_PARTY_COLUMNS) if self.config.third_party_weight > 0 else [])

    def _third_party(self, df: pd.DataFrame) -> np.ndarray | None:
        return third_party_risk(df) if self.config.third_party_weight > 0 else None

    def raw_scores(self, windows: WindowSet) -> np.ndarray:
        df = as_windows(windows).table
        return physics_risk(df["path_min_ttc_s"], df["scene_ttc_s"], df["path_ttc_closing_mps"], self.config,
                            self._third_party(df))

    def evidence(self, windows: WindowSet, raw: np.ndarray) -> list[Evidence]:
        """Each term's share: the object term's probability (zero unless the path closes faster than
        `min_closing_mps`), the looming term's and the third-party term's weighted probabilities; the
        largest drives (on a tie the order object, looming, third party)."""
        ws, cfg = as_windows(windows), self.config
        tps = third_party_evidence(ws.table) if cfg.third_party_weight > 0 else [None] * len(ws)
        out = []
        for (_, row), meta, r, tp in zip(ws.table.iterrows(), self._metas(ws), raw, tps, strict=True):
            closing = finite(row["path_ttc_closing_mps"]) or 0.0
            ttc = float(row["path_min_ttc_s"]) if closing >= cfg.min_closing_mps else TTC_CAP_S
            r_obj = float(sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s))
            r_loom = cfg.looming_weight * float(sigmoid((cfg.ttc_mid_s - float(row["scene_ttc_s"])) / cfg.ttc_scale_s))
            terms = [object_term(row, meta, r_obj, cfg.min_closing_mps), looming_term(row, r_loom)]
            if tp is not None:
                terms.append(third_party_term(row, meta, tp, cfg.third_party_weight * tp.risk))
            out.append(Evidence(self.kind, float(r), sorted(terms, key=lambda t: -t.contribution)))
        return out
