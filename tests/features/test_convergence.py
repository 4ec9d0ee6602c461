"""Third-party cues (features.convergence, the feature table's columns, risk.third_party) checked
against the synthetic generator's ground truth."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from crashcast.data import synthetic as S
from crashcast.evaluation.oracle import oracle_perception
from crashcast.features.convergence import closest_approach, closest_pair
from crashcast.features.kinematics import window_objects
from crashcast.features.table import THIRD_PARTY_COLUMNS, feature_columns
from crashcast.risk.tabular import LightGBMModel
from crashcast.risk.third_party import third_party_evidence, third_party_risk
from crashcast.settings import FeatureConfig
from crashcast.types import Window


def _truth(name: str, seed: int) -> tuple[S.Scenario, dict]:
    cfg = S.SynthConfig()
    cid = S.clip_id_for(seed, 1, "third-party")
    rng = S.clip_rng(seed, 1, "third-party")
    sc = S.make_scenario(name, rng, cfg, cid)
    return sc, S.render_clip(sc, S.Renderer(cfg, rng), cid, None)


def _window(cid: str, end: float) -> Window:
    return Window(cid, "mini", 0.0, end, end - 1.5, end, (end - 1.5, end - 0.75, end), False, 0, (None,) * 3, (None,) * 3, 0.0, "now")


def test_closest_approach_of_straight_lines():
    # b is 10 m right and 10 m ahead of a, moving 2 m/s left and 2 m/s back: they meet in 5 s
    t, d = closest_approach(np.array([10.0, 10.0]), np.array([-2.0, -2.0]), horizon_s=10.0)
    assert t == pytest.approx(5.0) and d == pytest.approx(0.0, abs=1e-9)
    t, d = closest_approach(np.array([10.0, 10.0]), np.array([-2.0, -2.0]), horizon_s=2.0)  # not within the horizon
    assert t == 2.0 and d == pytest.approx(np.hypot(6.0, 6.0))
    t, d = closest_approach(np.array([3.0, 4.0]), np.array([1.0, 0.0]))  # moving apart: now is closest
    assert t == 0.0 and d == pytest.approx(5.0)


@pytest.mark.parametrize("seed", range(3))
def test_constant_velocity_extrapolation_meets_the_true_side_impact(seed):
    """The crossing car and the car it hits move at constant velocity before the crash: the closest
    approach extrapolated from their true centres 1 s before lands on the true contact."""
    sc, truth = _truth("tp_side_impact", seed)
    tp = truth["third_party"]
    a, b = (next(x for x in sc.actors if x.id == i) for i in tp["agents"])
    k = round((tp["time_s"] - 1.0) * 30)
    dp = np.array([b.x[k] - a.x[k], b.z[k] - a.z[k]])
    dv = np.array([b.x[k + 1] - a.x[k + 1], b.z[k + 1] - a.z[k + 1]]) * 30 - dp * 30
    t, d = closest_approach(dp, dv)
    ts = np.arange(0.0, 2.0, 0.001)
    dist = np.linalg.norm(dp[None] + dv[None] * ts[:, None], axis=1)
    t_contact = ts[np.argmax(dist <= tp["centre_distance_m"])]  # when the centres are as near as at the true contact
    assert t_contact == pytest.approx(1.0, abs=0.05)  # the truth's contact, foreseen 1 s out
    assert d <= tp["centre_distance_m"] and t >= t_contact  # contact lies on the way to the closest point


@pytest.mark.parametrize("name", S.THIRD_PARTY_POSITIVES)
def test_perfect_perception_finds_the_two_agents_converging(name):
    """With perception read off the truth, the window ending 0.5 s before a third-party crash names
    the two agents as the closest pair, meeting within 2.5 s, nearer than the risk term's contact
    distance; the third-party risk is high there and low 3 s earlier."""
    for seed in range(3):
        _, truth = _truth(name, seed)
        tp = truth["third_party"]
        perc = oracle_perception(truth)
        objs = window_objects(perc, _window(truth["clip_id"], tp["time_s"] - 0.5), FeatureConfig(), 1.0, 30.0)
        p = closest_pair(objs)
        assert p is not None and {p.a, p.b} == set(tp["agents"]), (name, seed, p)
        contact = 3.0 if "person" in tp["classes"] or "cyclist" in tp["classes"] else 5.0
        assert p.tcpa_s <= 2.5 and p.dcpa_m < contact and p.closing_mps > 1.0, (name, seed, p)
        # it was not there 3 s before the crash: the pair was not closing in on a contact by then
        early = closest_pair(window_objects(perc, _window(truth["clip_id"], tp["time_s"] - 3.0), FeatureConfig(), 1.0, 30.0))
        assert early is None or early.tcpa_s > p.tcpa_s or early.dcpa_m > p.dcpa_m


def test_pair_contact_time_is_when_the_centroids_come_within_contact_distance():
    """Straight lines: b starts 12 m ahead of a and 3 m to the side, closing at 4 m/s head-on along z;
    the centroids come within 5 m when sqrt(3^2 + (12 - 4t)^2) = 5, t = 2.0 s (closest: 3 m at 3 s)."""
    from crashcast.risk.third_party import pair_contact_time

    dp, dv = np.array([3.0, 12.0]), np.array([0.0, -4.0])
    t, d = closest_approach(dp, dv)
    assert (t, d) == (pytest.approx(3.0), pytest.approx(3.0))
    assert pair_contact_time(np.hypot(3, 12), d, t, 5.0) == pytest.approx(2.0)
    assert pair_contact_time(np.hypot(3, 12), d, t, 2.0) == pytest.approx(3.0)  # never within 2 m: TCPA
    assert pair_contact_time(4.0, d, t, 5.0) == 0.0  # within contact distance already
    assert pair_contact_time(10.0, 10.0, 0.0, 5.0) == 0.0  # separating, 10 m apart: the closest is now


def test_new_columns_are_features_and_lightgbm_uses_them():
    assert set(THIRD_PARTY_COLUMNS) <= set(feature_columns())
    assert set(THIRD_PARTY_COLUMNS) <= set(LightGBMModel().features)
    assert not {"pair_a_id", "pair_b_id"} & set(feature_columns())


def test_third_party_risk_names_the_pair_and_rises_with_convergence():
    df = pd.DataFrame({
        "pair_dcpa_m": [0.5, 0.5, 12.0, 100.0], "pair_tcpa_s": [0.8, 4.0, 0.8, 10.0], "pair_distance_m": [8.0, 24.0, 12.0, 100.0],
        "pair_closing_mps": [8.0, 5.0, 0.0, 0.0], "pair_has_person": [0.0, 0.0, 0.0, 0.0], "motion_anomaly": [0.0, 0.0, 0.0, np.nan],
        "pair_a_id": [3.0, 3.0, 1.0, np.nan], "pair_b_id": [7.0, 7.0, 2.0, np.nan],
    })
    r = third_party_risk(df)
    assert r[0] > 0.8 and r[1] < 0.2 and r[2] < 0.2 and r[3] < 0.05
    ev = third_party_evidence(df)
    assert ev[0].agents == (3, 7) and ev[0].term == "pair" and ev[0].risk == pytest.approx(r[0])
    assert ev[3].agents is None and ev[3].motion_anomaly_px is None
    df.loc[3, "motion_anomaly"] = 6.0  # a sudden unexplained motion alone raises it, by at most its weight
    r2 = third_party_risk(df)
    assert 0.3 < r2[3] <= 0.5 and third_party_evidence(df)[3].term == "anomaly"


@pytest.mark.parametrize("name", S.THIRD_PARTY_POSITIVES)
def test_physics_model_sees_third_party_crashes_and_names_both_agents(name):
    """With perception read off the truth, 0.5 s before a crash between two other road users the
    ego-path physics terms stay low, the physics model with its third-party term (the default
    weight) is high, its driving term is the pair, and the reason names both true agents; the score
    recomputes from the evidence alone; 3 s before the crash it is below the alert threshold. (The
    near-miss twins score high too near their closest approach: constant-velocity extrapolation
    cannot know who will brake, as an ego FCW cannot.)"""
    from crashcast.config import load_config
    from crashcast.features.build import build_window_meta
    from crashcast.risk.models import create_model
    from crashcast.risk.physics import physics_score
    from crashcast.risk.windows import WindowSet
    from crashcast.settings import PhysicsConfig

    cfg = load_config("classic")
    model = create_model("physics", PhysicsConfig().model_dump())
    ego_only = create_model("physics", {"third_party_weight": 0.0})
    for seed in range(3):
        _, truth = _truth(name, seed)
        tp = truth["third_party"]
        perc = oracle_perception(truth)
        w = _window(truth["clip_id"], tp["time_s"] - 0.5)
        objs = window_objects(perc, w, cfg.features, truth["camera"]["ego_front_m"], 30.0)
        ws = WindowSet.from_metas([build_window_meta(w, perc, cfg, [None] * 3, objs, "oracle")])
        scores = model.score(ws)
        ev, reason = scores.evidence[0], scores.rationale[0]
        assert ego_only.score(ws).raw[0] < 0.2 and scores.raw[0] > 0.7, (name, seed, reason)
        assert ev.driving.name == "third_party" and {a.object_id for a in ev.driving.agents} == set(tp["agents"]), reason
        for a in tp["agents"]:
            assert f"(#{a})" in reason
        assert "converge" in reason and physics_score(ev, model.config) == pytest.approx(scores.raw[0])
        # 3 s before, the pair was not yet closing in on a contact: the term does not alert
        w = _window(truth["clip_id"], tp["time_s"] - 3.0)
        objs = window_objects(perc, w, cfg.features, truth["camera"]["ego_front_m"], 30.0)
        early = model.score(WindowSet.from_metas([build_window_meta(w, perc, cfg, [None] * 3, objs, "oracle")]))
        assert early.raw[0] < 0.5, (name, seed, early.rationale[0])


def test_scene_cues_under_the_threshold_never_alert_together():
    """Looming and the third-party term both read the flow residual: the physics model takes the
    larger, so with the classic preset's weights (0.45 each) the two at full strength stay at 0.45,
    while an object in the path with TTC 1 s still combines with them as independent evidence."""
    from crashcast.config import load_config
    from crashcast.risk.physics import physics_risk

    cfg = load_config("classic").physics
    both = physics_risk([10.0], [0.1], [0.0], cfg, third_party=[1.0])[0]
    assert both == pytest.approx(max(cfg.looming_weight, cfg.third_party_weight), abs=1e-3) and both < 0.5
    r_obj = physics_risk([1.0], [10.0], [5.0], cfg)[0]
    assert physics_risk([1.0], [0.1], [5.0], cfg, third_party=[1.0])[0] == pytest.approx(1 - (1 - r_obj) * (1 - both), abs=1e-3)
