"""The training-free risk models, from kinematics alone:

- `ttc`: a logistic of the smallest time-to-contact in the ego path or of the looming road ahead;
- `physics`: TTC and closing speed of the objects in the ego path, and the detection-free looming
  of the road ahead (`physics_risk`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from crashcast.features.table import TTC_CAP_S
from crashcast.risk.base import RiskModel, sigmoid
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


class _Rule(RiskModel):
    def columns(self) -> list[str]:
        return list(RULE_COLUMNS)

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


class PhysicsModel(_Rule):
    kind = "physics"

    def raw_scores(self, windows: WindowSet) -> np.ndarray:
        df = as_windows(windows).table
        return physics_risk(df["path_min_ttc_s"], df["scene_ttc_s"], df["path_max_closing_mps"], self.config)
