"""The classic pipeline perceives only the rows below the sky; its outputs stay in full-frame terms."""

from __future__ import annotations

import json

import numpy as np

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.video import decode
from crashcast.perception.bundle import Backends
from crashcast.perception.pipeline import Perception


def _lead_depths(clip, truth, cfg):
    frames = decode(clip.video_path, 1.0, clip.time_of_event_s, step=cfg.perception.frame_step)
    w, h = frames.size
    p = Perception(Backends.build(cfg.perception), cfg.perception, w, h, frames.fps, clip.id)
    out = []
    for img, t in zip(frames.frames, frames.times_s, strict=True):
        r = p.step(img, float(t), keep_masks=True)
        lead = next(o for o in truth["frames"][round(t * 30)]["objects"] if o["id"] == 0)
        for i, box in enumerate(r.detections.xyxy):
            mask = r.detections.mask[i]
            assert mask.shape == (h, w)
            ys, xs = np.nonzero(mask)
            # the mask lies in its box, in full-frame rows
            assert ys.min() >= box[1] - 1 and ys.max() <= box[3] + 1 and xs.min() >= box[0] - 1 and xs.max() <= box[2] + 1
            tb = lead["box_xyxy"]
            if tb and abs(box[3] - tb[3]) < 4 and box[0] < tb[2] and box[2] > tb[0]:  # the lead's ground contact
                obj = next(o for o in r.objects if o.track_id == int(r.detections.tracker_id[i]))
                out.append((round(float(t), 3), obj.depth_m, lead["depth_m"]))
    return p, out


def test_sky_crop_keeps_full_frame_coordinates_and_depth(synth_small):
    clips = read_csv(synth_small / "annotations.csv")
    clip = next(c for c in clips if json.loads((synth_small / "truth" / f"{c.id}.json").read_text())["scenario"] == "lead_braking")
    truth = json.loads((synth_small / "truth" / f"{clip.id}.json").read_text())
    cropped, seen = _lead_depths(clip, truth, load_config("classic"))
    assert cropped.origin_y > 0.3 * cropped.camera.cy * 2  # the sky really is skipped
    full = load_config("classic", ["perception.geometry.sky_margin=null"]).perception
    assert Perception(Backends.build(full), full, 640, 360, 30.0).origin_y == 0
    assert len(seen) >= 5
    errors = [abs(z - zt) / zt for _, z, zt in seen]
    assert np.median(errors) < 0.15  # boxes found on the cropped rows give true depths in the full frame
