"""The third-party risk term: a crash between other road users ahead, which the ego-path physics
term (`risk.physics`) does not see. Training-free, from the feature table's third-party columns
(`features.table.THIRD_PARTY_COLUMNS`):

r_pair = s((contact_mid - T) / contact_scale) * s((contact_m - DCPA) / dcpa_scale) * s((closing - min_closing) / closing_scale)
         for the pair that comes closest (`contact_m` is `contact_person_m` when one is a person or
         cyclist: a walker's centroid can come nearer a car's than another car's can), T the time
         their centroids come within `contact_m` (`pair_contact_time`; TCPA when they never do);
r_anom = s((anomaly - anomaly_mid) / anomaly_scale), the detection-free sudden unexplained motion;
risk   = 1 - (1 - r_pair) (1 - anomaly_weight r_anom),        s = the logistic.

Centroids are the visible surfaces' (a car seen from behind: its rear), so two cars touching are
still a car length apart: `contact_m` 5 m. Kept apart from the physics term on purpose: the caller
combines them (e.g. the larger of the two) and names the two agents from `third_party_evidence`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from crashcast.features.table import THIRD_PARTY_COLUMNS
from crashcast.risk.base import sigmoid


@dataclass(frozen=True)
class ThirdPartyConfig:
    contact_mid_s: float = 2.0
    contact_scale_s: float = 0.5
    contact_m: float = 5.0
    contact_person_m: float = 3.0
    dcpa_scale_m: float = 0.8
    min_closing_mps: float = 1.0
    closing_scale_mps: float = 0.4
    anomaly_mid_px: float = 3.0
    anomaly_scale_px: float = 0.75
    anomaly_weight: float = 0.5


@dataclass(frozen=True)
class ThirdPartyEvidence:
    """What produced one window's third-party risk: the pair's measurements (agents None when no two
    objects were tracked) and the anomaly, with each part's risk."""

    risk: float
    pair_risk: float
    anomaly_risk: float
    agents: tuple[int, int] | None
    tcpa_s: float | None
    contact_s: float | None  # when the pair comes within contact distance (`pair_contact_time`)
    dcpa_m: float | None
    closing_mps: float | None
    has_person: bool
    motion_anomaly_px: float | None

    @property
    def term(self) -> str:
        """The part that drives the risk: 'pair' or 'anomaly'."""
        return "pair" if self.pair_risk >= self.anomaly_risk else "anomaly"


def pair_contact_time(distance_m, dcpa_m, tcpa_s, contact_m) -> np.ndarray:
    """When two centroids moving in straight lines come within `contact_m` of each other, from their
    distance now, their closest approach and its time: with relative speed v, the distance at t is
    sqrt(dcpa^2 + v^2 (t - tcpa)^2), v = sqrt(distance^2 - dcpa^2) / tcpa, so contact comes
    sqrt(contact^2 - dcpa^2) / v before the closest approach. TCPA where they never come that near
    (or the numbers do not describe an approach); 0 when they are that near already."""
    d, dc, tc, c = (np.asarray(v, float) for v in (distance_m, dcpa_m, tcpa_s, contact_m))
    with np.errstate(invalid="ignore", divide="ignore"):
        v = np.sqrt(np.maximum(d * d - dc * dc, 0.0)) / tc
        t = tc - np.sqrt(np.maximum(c * c - dc * dc, 0.0)) / v
    ok = np.isfinite(t) & (dc < c) & (tc > 0) & (v > 0)
    return np.where(d <= c, 0.0, np.where(ok, np.clip(t, 0.0, None), tc))


def _contact_times(df: pd.DataFrame, cfg: ThirdPartyConfig) -> np.ndarray:
    contact = np.where(df["pair_has_person"].to_numpy(float) > 0.5, cfg.contact_person_m, cfg.contact_m)
    return pair_contact_time(df["pair_distance_m"].to_numpy(float), df["pair_dcpa_m"].to_numpy(float),
                             df["pair_tcpa_s"].to_numpy(float), contact)


def _parts(df: pd.DataFrame, cfg: ThirdPartyConfig) -> tuple[np.ndarray, np.ndarray]:
    missing = [c for c in THIRD_PARTY_COLUMNS if c not in df.columns]
    if missing:
        raise KeyError(f"the feature table has no {', '.join(missing)} column(s): extract it with this version of crashcast")
    dcpa = df["pair_dcpa_m"].to_numpy(float)
    closing = np.nan_to_num(df["pair_closing_mps"].to_numpy(float), nan=0.0)
    contact = np.where(df["pair_has_person"].to_numpy(float) > 0.5, cfg.contact_person_m, cfg.contact_m)
    t_contact = _contact_times(df, cfg)
    r_pair = (sigmoid((cfg.contact_mid_s - t_contact) / cfg.contact_scale_s) * sigmoid((contact - dcpa) / cfg.dcpa_scale_m)
              * sigmoid((closing - cfg.min_closing_mps) / cfg.closing_scale_mps))
    r_pair = np.nan_to_num(r_pair, nan=0.0)
    anomaly = np.nan_to_num(df["motion_anomaly"].to_numpy(float), nan=0.0)
    r_anom = sigmoid((anomaly - cfg.anomaly_mid_px) / cfg.anomaly_scale_px)
    return r_pair, r_anom


def third_party_risk(df: pd.DataFrame, cfg: ThirdPartyConfig | None = None) -> np.ndarray:
    """Per window (row of a feature table), the probability of a crash between other road users."""
    cfg = cfg or ThirdPartyConfig()
    r_pair, r_anom = _parts(df, cfg)
    return 1.0 - (1.0 - r_pair) * (1.0 - cfg.anomaly_weight * r_anom)


def third_party_evidence(df: pd.DataFrame, cfg: ThirdPartyConfig | None = None) -> list[ThirdPartyEvidence]:
    """Per window, the numbers behind `third_party_risk` (same order as the rows)."""
    cfg = cfg or ThirdPartyConfig()
    r_pair, r_anom = _parts(df, cfg)
    risk = 1.0 - (1.0 - r_pair) * (1.0 - cfg.anomaly_weight * r_anom)
    has_ids = "pair_a_id" in df.columns and "pair_b_id" in df.columns
    t_contact = _contact_times(df, cfg)
    out = []
    for i, row in enumerate(df.itertuples(index=False)):
        a = row.pair_a_id if has_ids else np.nan
        b = row.pair_b_id if has_ids else np.nan
        paired = bool(np.isfinite(a) and np.isfinite(b))
        anomaly = float(row.motion_anomaly)
        out.append(ThirdPartyEvidence(
            risk=float(risk[i]), pair_risk=float(r_pair[i]), anomaly_risk=float(r_anom[i]),
            agents=(int(a), int(b)) if paired else None,
            tcpa_s=float(row.pair_tcpa_s) if paired else None, contact_s=float(t_contact[i]) if paired else None,
            dcpa_m=float(row.pair_dcpa_m) if paired else None,
            closing_mps=float(row.pair_closing_mps) if paired else None, has_person=bool(row.pair_has_person > 0.5),
            motion_anomaly_px=anomaly if np.isfinite(anomaly) else None,
        ))
    return out
