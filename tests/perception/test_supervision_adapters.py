"""`Detections` <-> `supervision.Detections`: a lossless round trip (every field, `source` and masks
included, the extra fields in supervision's per-detection `data`), and ByteTrack keeping each box's
class name, source and mask through the `trackers` package with nothing patched back."""

from __future__ import annotations

import numpy as np
import pytest

from crashcast.types import CLASS_NAMES, Detections

sv = pytest.importorskip("supervision")

FIELDS = ("xyxy", "confidence", "class_name", "mask", "tracker_id", "source")


def assert_same(a: Detections, b: Detections) -> None:
    """Every field equal: values, dtypes, None where None, and the same Python types inside."""
    for name in FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        assert (x is None) == (y is None), name
        if x is None:
            continue
        assert x.dtype == y.dtype and x.shape == y.shape, name
        np.testing.assert_array_equal(x, y, err_msg=name)
        if x.dtype == object:
            assert [type(v) for v in x] == [type(v) for v in y], name


def sample(n: int = 5, seed: int = 0, **drop: bool) -> Detections:
    rng = np.random.default_rng(seed)
    xy = rng.uniform(0, 300, (n, 2))
    names = ["vehicle", "person", "truck", "cyclist", "object", "bus"]  # two names outside CLASS_NAMES
    det = Detections(
        np.hstack([xy, xy + rng.uniform(1, 80, (n, 2))]),
        rng.uniform(0, 1, n),
        [names[i % len(names)] for i in range(n)],
        mask=rng.random((n, 24, 32)) < 0.5,
        tracker_id=rng.integers(0, 1000, n),
        source=[["yolo", "grounding-dino", "sam2-video"][i % 3] for i in range(n)],
    )
    for name, gone in drop.items():
        if gone:
            setattr(det, name, None)
    return det


@pytest.mark.parametrize(
    "det",
    [
        sample(),
        sample(7, seed=1, mask=True),
        sample(3, seed=2, tracker_id=True, source=True),
        sample(0),
        sample(0, mask=True, tracker_id=True),
        Detections.empty(),
    ],
    ids=["all-fields", "no-mask", "no-ids-no-source", "empty-all-fields", "empty-with-source", "empty"],
)
def test_round_trip_is_lossless(det):
    s = det.to_supervision()
    assert isinstance(s, sv.Detections) and len(s) == len(det)
    assert_same(Detections.from_supervision(s), det)
    # supervision's own view: class ids index CLASS_NAMES ("object" for other names), the rest in data
    expected_ids = [CLASS_NAMES.index(c) if c in CLASS_NAMES else CLASS_NAMES.index("object") for c in det.class_name]
    assert s.class_id.tolist() == expected_ids
    assert list(s.data["class_name"]) == list(det.class_name)
    assert ("source" in s.data) == (det.source is not None)
    # anything that indexes the supervision detections (a tracker does) keeps every field with its box
    idx = np.arange(len(det))[::-2]
    assert_same(Detections.from_supervision(s[idx]), det[idx])


def test_round_trip_does_not_alias_the_names():
    det = sample()
    s = det.to_supervision()
    s.data["source"][0] = "changed"
    s.data["class_name"][0] = "changed"
    assert det.source[0] == "yolo" and det.class_name[0] == "vehicle"


def test_from_plain_supervision_detections():
    """Without our data fields: classes from the ids (CLASS_NAMES indices), no source, confidence 1."""
    s = sv.Detections(xyxy=np.array([[0, 0, 4, 4], [1, 1, 5, 5]], np.float32), class_id=np.array([1, 9]))
    d = Detections.from_supervision(s)
    assert list(d.class_name) == ["person", "object"] and d.source is None
    assert d.confidence.tolist() == [1.0, 1.0]


def test_bytetrack_keeps_every_field_of_each_tracked_box():
    """Two objects moving over frames, with masks, sources and a class name outside CLASS_NAMES: every
    box ByteTrack returns is one of the frame's detections, with its own class name, source, confidence
    and mask, and a track id."""
    pytest.importorskip("trackers")
    from crashcast.perception.classic.track import ByteTrack

    tracker = ByteTrack()
    seen = 0
    for t in range(6):
        boxes = np.array([[10 + 3 * t, 20, 60 + 3 * t, 70], [200 - 2 * t, 40, 260 - 2 * t, 120]], np.float32)
        masks = np.zeros((2, 150, 300), bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            masks[k, y0:y1, x0:x1] = True
        det = Detections(
            boxes, [0.9, 0.8], ["truck", "person"], mask=masks, source=["grounding-dino", "yolo"]
        )
        out = tracker.update(np.zeros((150, 300, 3), np.uint8), det, t / 10)
        assert out.tracker_id is not None and (out.tracker_id >= 0).all()
        for i in range(len(out)):
            k = int(np.flatnonzero((det.xyxy == out.xyxy[i]).all(1))[0])
            assert_same(out[[i]], Detections(det.xyxy[[k]], det.confidence[[k]], det.class_name[[k]],
                                             det.mask[[k]], out.tracker_id[[i]], det.source[[k]]))
        seen += len(out)
    assert seen >= 8  # both objects tracked from the second frame on
    assert len(tracker.update(np.zeros((150, 300, 3), np.uint8), Detections.empty(), 0.6)) == 0
