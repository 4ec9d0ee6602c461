"""The 3D centroid of an object: the mask's pixel centroid (not the box centre) back-projected with
the object's median depth and the camera intrinsics."""

from __future__ import annotations

import dataclasses

import numpy as np

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.video import decode, probe
from crashcast.data.windows import make_windows
from crashcast.features.kinematics import window_objects
from crashcast.perception.bundle import Backends
from crashcast.perception.pipeline import _mask_region, mask_centroid, perceive


def test_the_centroid_of_an_l_shaped_mask_is_not_its_box_centre():
    mask = np.zeros((60, 80), bool)
    mask[10:50, 20:30] = True  # the upright of an L
    mask[40:50, 20:70] = True  # its foot
    rows, cols = np.nonzero(mask)
    u, v = mask_centroid(mask, _mask_region(mask), 45.0, 30.0)
    assert (u, v) == (cols.mean(), rows.mean())
    assert abs(u - 45.0) > 5 and abs(v - 30.0) > 5  # the box (20..70, 10..50) centre is elsewhere
    assert mask_centroid(None, None, 45.0, 30.0) == (45.0, 30.0)
    empty = np.zeros_like(mask)
    assert mask_centroid(empty, _mask_region(empty), 45.0, 30.0) == (45.0, 30.0)


def test_kinematics_back_project_the_tracks_pixel_centroid(synth_small):
    cfg = load_config("classic")
    clip = read_csv(synth_small / "annotations.csv")[1]
    window = make_windows(clip, probe(clip.video_path).duration_s, cfg.windows)[0]
    frames = decode(clip.video_path, max(0.0, window.start_s - 0.5), window.end_s, cfg.video.fps, cfg.video.long_side,
                    clip_id=clip.id, step=cfg.perception.frame_step)
    perc = perceive(frames, cfg.perception, Backends.build(cfg.perception))
    assert perc.tracks
    for tr in perc.tracks:  # inside its box in every frame (classic masks are boxes, less the sky)
        assert tr.centroid_px.shape == (len(tr), 2)
        b = tr.box_xyxy
        assert ((tr.centroid_px[:, 0] >= b[:, 0] - 1e-6) & (tr.centroid_px[:, 0] <= b[:, 2] + 1e-6)).all()
        assert ((tr.centroid_px[:, 1] >= b[:, 1] - 1e-6) & (tr.centroid_px[:, 1] <= b[:, 3] + 1e-6)).all()

    def objects(p):
        return {o.object_id: o for o in window_objects(p, window, cfg.features, cfg.perception.geometry.ego_front_m,
                                                       cfg.video.fps)}

    base = objects(perc)
    shifted = dataclasses.replace(perc, tracks=[dataclasses.replace(t, centroid_px=t.centroid_px + np.array([40.0, -10.0]))
                                                for t in perc.tracks])
    moved = objects(shifted)
    f = perc.camera.focal_px
    checked = 0
    for oid, o in base.items():
        for a, b in zip(o.centroid_m, moved[oid].centroid_m, strict=True):
            if a is None:
                continue
            z = a[2]
            np.testing.assert_allclose(np.subtract(b, a), [40.0 * z / f, -10.0 * z / f, 0.0], rtol=1e-9, atol=1e-9)
            checked += 1
    assert checked > 0



class _StripedDepth:
    """Metric depth known by construction: 10 m everywhere except every 4th pixel column, 30 m. Over any
    mask at least 8 pixels wide the median is 10 m and the mean 10 + 20 x (the mask's share of striped
    pixels), about 15 m."""

    name = "striped-depth"

    def depth(self, frames, detections, contexts):
        from crashcast.types import DepthMap

        out = []
        for f in frames:
            d = np.full(f.shape[:2], 10.0, np.float32)
            d[:, ::4] = 30.0
            out.append(DepthMap(d, is_metric=True))
        return out


def test_object_depth_is_the_mean_or_the_median_over_the_mask_as_configured(synth_small):
    """perception.object_depth: the paper's per-object mean distance, or crashcast's median (robust to
    background pixels a mask leaks onto), read from a depth map whose per-mask statistics are known."""
    clip = read_csv(synth_small / "annotations.csv")[1]
    depths = {}
    for how in ("median", "mean"):
        cfg = load_config("classic", [f"perception.object_depth={how}"])
        window = make_windows(clip, probe(clip.video_path).duration_s, cfg.windows)[0]
        frames = decode(clip.video_path, max(0.0, window.start_s - 0.5), window.end_s, cfg.video.fps, cfg.video.long_side,
                        clip_id=clip.id, step=cfg.perception.frame_step)
        backends = Backends.build(cfg.perception)
        backends.depth = _StripedDepth()
        perc = perceive(frames, cfg.perception, backends)
        depths[how] = np.concatenate([t.depth_m for t in perc.tracks if (t.box_xyxy[:, 2] - t.box_xyxy[:, 0]).min() >= 8])
    assert len(depths["median"]) > 10 and len(depths["mean"]) == len(depths["median"])
    np.testing.assert_array_equal(depths["median"], 10.0)
    share = (depths["mean"] - 10.0) / 20.0  # the mask's share of striped columns: about 1/4
    assert ((share > 0.15) & (share < 0.35)).all(), share
    assert load_config("paper").perception.object_depth == "mean"
    assert load_config("classic").perception.object_depth == "median"
