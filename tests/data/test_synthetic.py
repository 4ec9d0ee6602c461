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
