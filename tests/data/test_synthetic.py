from __future__ import annotations

import json

import numpy as np
import pytest

from crashcast.data import synthetic as S
from crashcast.data.annotations import read_csv
from crashcast.data.video import decode


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.mark.parametrize("cls", ["vehicle", "person"])
@pytest.mark.parametrize("x,z", [(0.0, 8.0), (0.3, 20.0), (-3.5, 35.0), (3.5, 12.0)])
def test_projected_box_matches_rendered_pixels(cls, x, z):
    """The ground-truth box (projection of the 3D box) encloses exactly the pixels the object changed."""
    cfg = S.SynthConfig(noise_sigma=0.0)
    rng = np.random.default_rng(1)
    bodies = S._vehicle(rng, 0) if cls == "vehicle" else S._person(rng)
    actor = S.Actor(0, cls, bodies, np.array([x]), np.array([z]))
    sc = S.Scenario("probe", 0, 1 / 30, np.array([10.0]), [actor])
    r = S.Renderer(cfg, np.random.default_rng(2))
    with_obj, _, pitch = r.frame(sc, 0, 0.0, noise=False)
    without, _, _ = r.frame(sc, 0, 0.0, noise=False, draw_actors=False)
    changed = np.abs(with_obj.astype(int) - without.astype(int)).max(axis=2) > 6
    ys, xs = np.nonzero(changed)
    pixel_box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    truth = r.truth(actor, 0, pitch)
    # every edge within 1.5 px (anti-aliased edges touch one more pixel)
    assert np.abs(np.array(pixel_box) - np.array(truth["box_xyxy"])).max() <= 1.5, (pixel_box, truth["box_xyxy"])
    assert _iou(pixel_box, truth["box_xyxy"]) > 0.75
    # true depth is the distance to the nearest face along the optical axis
    assert truth["depth_m"] == pytest.approx(z - max(b.l for b in bodies) / 2, abs=0.05)
    # the box bottom lies on the road at that depth (pinhole + flat road)
    y_bottom = truth["box_xyxy"][3]
    depth_from_row = cfg.focal_px * cfg.camera_height_m / (y_bottom - cfg.height / 2)
    assert depth_from_row == pytest.approx(truth["depth_m"], rel=0.05)


@pytest.mark.parametrize("name", S.POSITIVE_SCENARIOS + S.NEGATIVE_SCENARIOS)
def test_scenarios_do_what_they_say(name):
    cfg = S.SynthConfig()
    for seed in range(6):
        rng = S.clip_rng(100 + seed, 0)
        sc = S.make_scenario(name, rng, cfg)
        r = S.Renderer(cfg, rng)
        truth = S.render_clip(sc, r, "t", None)
        assert cfg.min_duration_s - 0.05 <= truth["duration_s"] <= cfg.max_duration_s + 0.05
        if name in S.POSITIVE_SCENARIOS:
            assert sc.target == 1 and sc.time_of_event_s is not None
            assert 6.0 <= sc.time_of_event_s <= truth["duration_s"]
            assert sc.time_of_alert_s <= sc.time_of_event_s
            ca = truth["closest_approach"]
            assert abs(ca["time_s"] - sc.time_of_event_s) < 0.1
            limit = 1.05 if sc.event_kind == "near_miss" else 0.16
            assert ca["gap_m"] <= limit, (name, seed, ca)
        else:
            assert sc.target == 0 and sc.time_of_event_s is None
            for fr in truth["frames"]:  # nothing comes within 8 m in the ego lane
                for o in fr["objects"]:
                    if abs(o["ground_xz_m"][0]) < 1.8 and o["depth_m"] > 0:
                        assert o["depth_m"] > 8.0, (name, seed, o)


def test_same_seed_gives_byte_identical_annotations_and_truth(synth_small, tmp_path):
    S.generate(2, tmp_path, seed=7)
    original = (synth_small / "annotations.csv").read_text().splitlines()
    again = (tmp_path / "annotations.csv").read_text().splitlines()
    assert again == original[:3]
    for cid in ("synth0007_0000", "synth0007_0001"):
        assert (tmp_path / "truth" / f"{cid}.json").read_bytes() == (synth_small / "truth" / f"{cid}.json").read_bytes()
    other = tmp_path / "other"
    S.generate(1, other, seed=8)
    assert (other / "annotations.csv").read_text() != "\n".join(original[:2]) + "\n"


def test_generated_clips_are_readable_and_half_positive(synth_small):
    clips = read_csv(synth_small / "annotations.csv")
    assert len(clips) == 8 and sum(c.target for c in clips) == 4
    truth = json.loads((synth_small / "truth" / f"{clips[0].id}.json").read_text())
    frames = decode(clips[0].video_path, 0.0, 1.0)
    assert frames.size == (640, 360) and frames.fps == 30.0
    assert len(truth["frames"]) == round(truth["duration_s"] * 30)
    scen = {json.loads((synth_small / "truth" / f"{c.id}.json").read_text())["scenario"] for c in clips}
    assert set(S.POSITIVE_SCENARIOS) <= scen


@pytest.mark.parametrize("name", S.THIRD_PARTY_SCENARIOS)
def test_third_party_scenarios_do_what_they_say(name):
    """Two road users ahead meet off our path: positives touch at the event, negatives pass 1.5 m or
    more apart; nothing comes within 8 m in the ego lane before they meet."""
    cfg = S.SynthConfig()
    for seed in range(4):
        cid = S.clip_id_for(100 + seed, 1, "third-party")
        rng = S.clip_rng(100 + seed, 1, "third-party")
        sc = S.make_scenario(name, rng, cfg, cid)
        truth = S.render_clip(sc, S.Renderer(cfg, rng), cid, None)
        tp = truth["third_party"]
        assert tp["agents"] == [0, 1] and truth["closest_approach"] is None
        if name in S.THIRD_PARTY_POSITIVES:
            assert sc.target == 1 and sc.event_kind == "third_party_collision"
            assert tp["collision"] and tp["gap_m"] <= 0.06 and abs(tp["time_s"] - sc.time_of_event_s) < 0.1, (name, seed, tp)
            assert sc.time_of_alert_s < sc.time_of_event_s
        else:
            assert sc.target == 0 and sc.time_of_event_s is None
            assert not tp["collision"] and tp["gap_m"] >= 1.5, (name, seed, tp)
        for fr in truth["frames"]:
            if fr["t"] > tp["time_s"]:
                break
            ids = {o["id"]: o for o in fr["objects"]}
            for i in tp["agents"]:  # both are in view while they close in
                if fr["t"] >= tp["time_s"] - 1.0:
                    assert ids[i]["box_xyxy"] is not None, (name, seed, fr["t"], i)
            for o in fr["objects"]:
                if abs(o["ground_xz_m"][0]) < 1.8 and o["depth_m"] > 0:
                    assert o["depth_m"] > 8.0, (name, seed, o)


def test_third_party_mix_has_its_own_ids_and_leaves_the_default_mix_alone(tmp_path):
    assert S.scenario_for(0) == "lead_braking" and S.clip_id_for(7, 3) == "synth0007_0003"
    assert [S.scenario_for(i, "third-party") for i in range(6)] == [
        "tp_rear_end", "tp_rear_safe", "tp_side_impact", "tp_cross_stops", "tp_vulnerable", "tp_vulnerable_yield"]
    assert S.expected_ids(2, 7, "third-party") == ["synth0007_tp0000", "synth0007_tp0001"]
    with pytest.raises(ValueError, match="unknown synthetic mix"):
        S.scenario_for(0, "crashes")
    S.generate(2, tmp_path, seed=7, mix="third-party")
    assert S.synthetic_ids(tmp_path) == ["synth0007_tp0000", "synth0007_tp0001"]
    rows = (tmp_path / "annotations.csv").read_text().splitlines()
    assert rows[1].endswith(",1") and rows[2].endswith(",0")
    truth = json.loads((tmp_path / "truth" / "synth0007_tp0000.json").read_text())
    assert truth["scenario"] == "tp_rear_end" and truth["third_party"]["collision"]
    assert decode(tmp_path / "synth0007_tp0000.mp4", 0.0, 0.5).size == (640, 360)


def test_synth_renders_the_third_party_mix_through_the_cli_and_the_api(tmp_path):
    from tests.conftest import cli_exit_code

    from crashcast import api
    from crashcast.data.annotations import read_csv

    assert cli_exit_code(["synth", "--n", "2", "--mix", "third-party", "--out", tmp_path / "tp"]) == 0
    clips = read_csv(tmp_path / "tp" / "annotations.csv")
    assert [c.id for c in clips] == ["synth0000_tp0000", "synth0000_tp0001"] and [c.target for c in clips] == [1, 0]
    truth = json.loads((tmp_path / "tp" / "truth" / "synth0000_tp0000.json").read_text())
    assert truth["third_party"]["collision"] is True and len(truth["third_party"]["agents"]) == 2
    with pytest.raises(api.UsageError, match="mix 'sideways'"):
        api.synth(2, tmp_path / "bad", mix="sideways")
    assert not (tmp_path / "bad" / "annotations.csv").exists()
