"""Reasons derived from the same evidence as the risk (issue 24, item 1) and the summary line (item 7).

At every stride of `predict` on every synthetic scenario type and on every real clip in
../shared/data/real (skipped when absent), through the API and the CLI:
- the numbers in the reason text are the evidence's numbers (parsed back out of the text and
  compared with the evidence's measurements and track ids, at the precision it gives them);
- the evidence's terms are what the score came from: the physics score recomputed from the
  evidence alone is the stride's `risk_raw`, and the driving term is the one that contributed most;
- the path TTC the evidence names is never below the window's smallest TTC (`min_ttc_s`);
- a low risk says 'low:'; a reason about a closing object never stands beside a low score.
The learned models' evidence is checked against their SHAP / occlusion contributions.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast import api
from crashcast.risk.evidence import LOW_RISK, evidence_from_dict
from crashcast.risk.physics import physics_score, sigmoid
from crashcast.settings import PhysicsConfig

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
STRIDE_S = 1.0


def _expected_numbers(ev) -> list[str]:
    """The numbers a reason rendered from `ev` must hold, spelled out from the evidence's fields."""
    terms = ev.terms[:2] if (ev.risk if ev.risk is not None else ev.raw) < LOW_RISK else ev.terms[:1]
    out = []
    for t in terms:
        out += [str(a.object_id) for a in t.agents if a.object_id is not None]
        out += [f"{m.value:.{m.decimals}f}" for m in t.measurements
                if m.in_text and m.unit != "flag" and math.isfinite(m.value)]
    return sorted(out)


def check_timeline(timeline: list[dict], cfg: PhysicsConfig) -> None:
    assert timeline, "no strides"
    for row in timeline:
        ev = evidence_from_dict(row["evidence"])
        where = f"t={row['time_s']}: {row['reason']!r}"
        # the reason's numbers are the evidence's numbers
        assert sorted(NUMBER.findall(row["reason"])) == _expected_numbers(ev), where
        # the evidence is what the score came from
        assert ev.raw == pytest.approx(row["risk_raw"], abs=1e-4), where
        assert physics_score(ev, cfg) == pytest.approx(row["risk_raw"], abs=1e-4), where
        obj = next(t for t in ev.terms if t.name == "object")
        loom = next(t for t in ev.terms if t.name == "looming")
        ttc, closing = obj.get("ttc").value, obj.get("closing").value
        r_obj = float(sigmoid((cfg.ttc_mid_s - (ttc if closing >= cfg.min_closing_mps else 10.0)) / cfg.ttc_scale_s))
        r_loom = cfg.looming_weight * float(sigmoid((cfg.ttc_mid_s - loom.get("scene_ttc").value) / cfg.ttc_scale_s))
        assert obj.contribution == pytest.approx(r_obj, abs=1e-4) and loom.contribution == pytest.approx(r_loom, abs=1e-4)
        tp = next(t for t in ev.terms if t.name == "third_party")
        r_tp = cfg.third_party_weight * _third_party_risk(tp)
        assert tp.contribution == pytest.approx(r_tp, abs=1e-4), where
        assert ev.driving.contribution == pytest.approx(max(r_obj, r_loom, r_tp), abs=1e-4), where
        if ev.driving.name == "third_party" and not (row["risk_raw"] < LOW_RISK):
            # a pair drives: both agents named, with when and how near they come
            assert len(tp.agents) == 2 or tp.get("motion_anomaly").in_text, where
            if tp.agents:
                assert " and " in row["reason"] and "converge" in row["reason"], where
        assert row["driving_term"] == ev.driving.name
        # no TTC in the reason smaller than the window's smallest TTC
        assert ttc >= row["min_ttc_s"] - 1e-6, where
        # low risk says so; a high one never says 'low'
        low = row["risk_raw"] < LOW_RISK
        assert row["reason"].startswith("low: ") == low, where
        if ev.driving.name == "object" and not low:
            assert "TTC" in row["reason"] and obj.get("ttc").value < 10.0


def _third_party_risk(term) -> float:
    """The third-party risk from the term's own measurements, by the formula in risk.third_party
    (written out here, not called: the test checks the module)."""
    from crashcast.risk.third_party import ThirdPartyConfig

    c = ThirdPartyConfig()
    v = {m.name: m.value for m in term.measurements}
    contact = c.contact_person_m if v["pair_has_person"] > 0.5 else c.contact_m
    d, dc, tc = v["pair_distance"], v["pair_dcpa"], v["pair_tcpa"]
    t_contact = tc  # they never come that near: the time of closest approach
    if d <= contact:
        t_contact = 0.0
    elif dc < contact and tc > 0 and d > dc:
        speed = math.sqrt(d * d - dc * dc) / tc
        t_contact = max(tc - math.sqrt(contact * contact - dc * dc) / speed, 0.0)
    if math.isfinite(v["pair_contact"]):
        assert v["pair_contact"] == pytest.approx(t_contact, abs=1e-3)
    r_pair = float(sigmoid((c.contact_mid_s - t_contact) / c.contact_scale_s) * sigmoid((contact - v["pair_dcpa"]) / c.dcpa_scale_m)
                   * sigmoid((v["pair_closing"] - c.min_closing_mps) / c.closing_scale_mps))
    anomaly = 0.0 if math.isnan(v["motion_anomaly"]) else v["motion_anomaly"]
    r_anom = float(sigmoid((anomaly - c.anomaly_mid_px) / c.anomaly_scale_px))
    return 1.0 - (1.0 - r_pair) * (1.0 - c.anomaly_weight * r_anom)


def _physics_cfg() -> PhysicsConfig:
    from crashcast.config import load_config

    return load_config("classic").physics


def test_every_synthetic_scenario_reasons_are_the_evidence(synth_small, tmp_path):
    """The API on one clip of each scenario type; the CLI on the same folder (summary line too)."""
    truth = pd.read_csv(synth_small / "annotations.csv") if (synth_small / "annotations.csv").exists() else None
    videos = sorted(synth_small.rglob("*.mp4"))
    assert len(videos) >= 7
    if truth is not None and "scenario" in truth:
        assert truth.scenario.nunique() == 7
    cfg = _physics_cfg()
    seen_terms = set()
    for v in videos:
        pred = api.predict(v, stride_s=STRIDE_S, out=tmp_path / "api" / v.stem)
        doc = json.loads((tmp_path / "api" / v.stem / "timeline.json").read_text())
        check_timeline(doc["timeline"], cfg)
        seen_terms |= set(pred.timeline.driving_term)
        csv = pd.read_csv(tmp_path / "api" / v.stem / "timeline.csv")
        assert list(csv.columns[:8]) == ["time_s", "risk", "risk_raw", "alert", "reason", "min_ttc_s", "looming_per_s",
                                         "n_objects"]
        assert list(csv.columns[-3:]) == ["driving_term", "evidence", "perception"]
    assert "object" in seen_terms  # the positives close in on an object in the path


def test_cli_reasons_and_summary_line(synth_small, tmp_path, capsys):
    videos = sorted(synth_small.rglob("*.mp4"))[:3]
    out = tmp_path / "cli"
    assert cli_exit_code(["predict", *videos, "--out", out, "--stride", STRIDE_S]) == 0
    printed = capsys.readouterr().out
    cfg = _physics_cfg()
    for v in videos:
        doc = json.loads((out / v.stem / "timeline.json").read_text())
        check_timeline(doc["timeline"], cfg)
        tl = pd.DataFrame(doc["timeline"])
        line = next(x for x in printed.splitlines() if x.startswith(f"{v.name}: ") and "->" in x)
        peak = tl.risk.max()
        if doc["first_alert_s"] is None:
            assert f"no alert (peak risk {peak:.2f} at " in line and "peak 0" not in line.split("(")[0]
        else:
            at = tl[tl.time_s == doc["first_alert_s"]].iloc[0]
            assert f"first alert at {doc['first_alert_s']:.1f} s (risk {at.risk:.2f}): {at.reason}" in line
        assert line.count("peak") <= 1  # never 'peak risk 0.00 at 0.5 s - peak 0.00 at 0.5 s'


def test_every_real_clip_reasons_are_the_evidence(real_dir, tmp_path):
    cfg = _physics_cfg()
    videos = sorted(real_dir.glob("*.mp4"))
    assert len(videos) >= 3
    for v in videos:
        api.predict(v, stride_s=STRIDE_S, out=tmp_path / v.stem)
        check_timeline(json.loads((tmp_path / v.stem / "timeline.json").read_text())["timeline"], cfg)


def _toy_table(n: int = 300, seed: int = 0) -> pd.DataFrame:
    from crashcast.features.table import feature_columns

    rng = np.random.default_rng(seed)
    df = pd.DataFrame({c: rng.uniform(0, 20, n) for c in feature_columns()})
    for k in (1, 2, 3):
        df[f"obj{k}_present"] = 1.0
        df[f"obj{k}_is_vehicle"] = 1.0
        df[f"obj{k}_is_person"] = 0.0
        df[f"obj{k}_in_path"] = (rng.uniform(size=n) < 0.5).astype(float)
    df["obj1_ttc_s"] = rng.uniform(0.2, 10, n)
    df["label"] = (df.obj1_ttc_s < 2.5).astype(int)
    return df


@pytest.mark.parametrize("kind", ["lightgbm", "xgboost", "mlp"])
def test_learned_models_evidence_is_their_contributions(kind):
    """The driving term is the feature group that moved the score most (in its direction); its
    measurements are those features' table values; the reason's numbers are the evidence's."""
    from crashcast.risk.models import create_model

    df = _toy_table()
    model = create_model(kind).fit(df)
    scores = model.score(df)
    contrib = model.contributions(df)
    assert scores.evidence is not None
    for i, (ev, reason) in enumerate(zip(scores.evidence, scores.rationale, strict=True)):
        sign = -1 if ev.low else 1
        c = contrib.iloc[i]
        groups = {}
        for col, v in c.items():
            key = col.split("_")[0] if col.startswith("obj") else "scene"
            groups[key] = groups.get(key, 0.0) + v
        best = max(groups, key=lambda g: sign * groups[g])
        drv = ev.driving
        assert drv.contribution == pytest.approx(groups[best])
        assert (drv.agents[0].letter == "ABC"[int(best[3:]) - 1]) if best != "scene" else not drv.agents
        for m in drv.measurements:
            assert sign * c[m.name] > 0
            if m.unit != "flag":
                assert m.value == pytest.approx(df[m.name].iloc[i])
        assert sorted(NUMBER.findall(reason)) == _expected_numbers(ev), reason
        assert reason.startswith("low: ") == ev.low
    if kind == "lightgbm":  # SHAP contributions sum to the raw log-odds: the evidence is the score's own
        logit = np.log(scores.raw / (1 - scores.raw))
        assert np.allclose(contrib.sum(axis=1) + model.booster.predict(df[model.features].to_numpy(float), pred_contrib=True)[:, -1],
                           logit, atol=1e-6)
    # the low ones say so, the high ones name the object whose TTC the label came from
    high = [ev for ev in scores.evidence if not ev.low and ev.raw > 0.8]
    assert high and sum(ev.driving.agents[:1] and ev.driving.agents[0].letter == "A" for ev in high) >= 0.5 * len(high)
