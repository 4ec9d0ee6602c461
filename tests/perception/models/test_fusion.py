"""The paper's detector fusion: class-aware NMS over the pooled boxes, the mask-IoU merge (both on
supervision's IoU and NMS, checked against an independent exact computation and against torchvision's
`batched_nms`, which the NMS used before), source bookkeeping, and the backend built from the registry
with random YOLO and Grounding DINO models."""

from __future__ import annotations

import subprocess
import sys
from fractions import Fraction

import numpy as np
import pytest
from pydantic import ValidationError

from crashcast.config import RuntimeConfig, _checker
from crashcast.perception import registry
from crashcast.perception.models.fusion import (
    FusionConfig,
    FusionDetector,
    class_aware_nms,
    concat,
    mask_merge,
)
from crashcast.types import Detections


def test_module_imports_without_torch():
    code = (
        "import sys, crashcast.perception.models.fusion; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config():
    cfg = FusionConfig()
    assert [d.name for d in cfg.detectors] == ["yolo", "grounding-dino"]  # the paper's pair
    assert (cfg.iou_threshold, cfg.merge_box_iou, cfg.merge_mask_iou) == (0.5, 0.5, 0.7)
    cfg = _checker("detector")(
        {"name": "fusion", "detectors": ["yolo", {"name": "grounding-dino", "box_threshold": 0.3}]}
    )
    assert type(cfg.detectors[1]).__name__ == "GroundingDinoConfig" and cfg.detectors[1].box_threshold == 0.3
    with pytest.raises(ValueError, match="bogus"):
        _checker("detector")({"name": "fusion", "detectors": [{"name": "yolo", "bogus": 1}]})
    with pytest.raises(ValueError, match="no detector backend named 'nope'"):
        _checker("detector")({"name": "fusion", "detectors": ["nope"]})
    with pytest.raises(ValidationError):
        FusionConfig(detectors=[])
    with pytest.raises(ValidationError, match="another fusion"):
        FusionConfig(detectors=["fusion"])
    names = [w.name for w in registry.weights("detector", FusionConfig())]
    assert names == ["yolov8x.pt", "IDEA-Research/grounding-dino-tiny"]


def test_merging_needs_no_torch():
    code = (
        "import sys, numpy as np\n"
        "from crashcast.perception.models.fusion import class_aware_nms, mask_merge\n"
        "b = np.array([[0, 0, 10, 10], [1, 1, 11, 11]], np.float32)\n"
        "assert class_aware_nms(b, np.array([0.5, 0.9]), np.zeros(2, int), 0.5).tolist() == [1]\n"
        "m = np.ones((2, 12, 12), bool)\n"
        "assert mask_merge(b, np.array([0.5, 0.9]), m).tolist() == [1]\n"
        "assert 'torch' not in sys.modules and 'torchvision' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_nms_keeps_the_higher_scoring_of_two_overlapping_same_class_boxes():
    xyxy = np.array([[0, 0, 100, 100], [5, 5, 105, 105]], np.float32)  # IoU 0.82
    assert class_aware_nms(xyxy, np.array([0.6, 0.9]), np.array([0, 0]), 0.5).tolist() == [1]
    assert class_aware_nms(xyxy, np.array([0.6, 0.9]), np.array([0, 1]), 0.5).tolist() == [
        1,
        0,
    ]  # other class
    far = np.array([[0, 0, 10, 10], [50, 50, 60, 60]], np.float32)
    assert sorted(class_aware_nms(far, np.array([0.6, 0.9]), np.array([0, 0]), 0.5).tolist()) == [0, 1]
    assert class_aware_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0), 0.5).tolist() == []


def test_nms_ties_keep_the_earlier_box_and_an_iou_at_the_threshold_is_not_above_it():
    same = np.array([[0, 0, 10, 10]] * 3, np.float32)
    assert class_aware_nms(same, np.full(3, 0.5), np.zeros(3, int), 0.5).tolist() == [0]
    assert class_aware_nms(same, np.full(3, 0.5), np.array([1, 0, 1]), 0.5).tolist() == [0, 1]
    half = np.array([[0, 0, 10, 10], [0, 0, 10, 20]], np.float32)  # IoU exactly 0.5
    assert class_aware_nms(half, np.array([0.9, 0.8]), np.zeros(2, int), 0.5).tolist() == [0, 1]
    assert class_aware_nms(half, np.array([0.9, 0.8]), np.zeros(2, int), 0.49).tolist() == [0]


def exact_iou(a, b) -> Fraction:
    """Box IoU as an exact fraction of the float32 coordinates (0 for an empty union)."""
    ax0, ay0, ax1, ay1 = (Fraction(float(v)) for v in a)
    bx0, by0, bx1, by1 = (Fraction(float(v)) for v in b)
    w = max(Fraction(0), min(ax1, bx1) - max(ax0, bx0))
    h = max(Fraction(0), min(ay1, by1) - max(ay0, by0))
    union = (ax1 - ax0) * (ay1 - ay0) + (bx1 - bx0) * (by1 - by0) - w * h
    return w * h / union if union > 0 else Fraction(0)


def reference_nms(xyxy, scores, classes, thr):
    """Independent greedy NMS, per class, in plain Python: boxes by decreasing float32 score (equal
    scores: the earlier box first); a box goes when a kept box of its class overlaps it by an IoU that,
    rounded to float32 (as torchvision's and supervision's IoUs are), is above `thr`."""
    order = sorted(range(len(xyxy)), key=lambda i: (-float(np.float32(scores[i])), i))
    keep = []
    for i in order:
        if all(
            classes[k] != classes[i] or not float(np.float32(float(exact_iou(xyxy[k], xyxy[i])))) > thr
            for k in keep
        ):
            keep.append(i)
    return keep


def random_boxes(rng, n, grid):
    """n boxes: on an integer grid (exact IoU ties, IoUs equal to a threshold) or anywhere."""
    if grid:
        xy, wh = rng.integers(0, 60, (n, 2)), rng.integers(1, 40, (n, 2))
    else:
        xy, wh = rng.uniform(0, 640, (n, 2)), rng.uniform(5, 200, (n, 2))
    return np.hstack([xy, xy + wh]).astype(np.float32)


@pytest.mark.parametrize("seed", range(6))
def test_nms_is_the_reference_greedy_nms_with_ties_and_classes(seed):
    """The same boxes kept, in the same order, as an independent computation: random boxes, many equal
    scores, four classes overlapping one another, thresholds that integer boxes hit exactly."""
    rng = np.random.default_rng(seed)
    for trial in range(20):
        n = int(rng.integers(0, 50))
        xyxy = random_boxes(rng, n, grid=trial % 2 == 0)
        scores = (rng.integers(0, 6, n) / 6).astype(np.float32)  # ties
        classes = rng.integers(0, 4, n)
        for thr in (0.3, 0.5, 0.7):
            assert class_aware_nms(xyxy, scores, classes, thr).tolist() == reference_nms(xyxy, scores, classes, thr)


@pytest.mark.parametrize("seed", range(3))
def test_nms_is_torchvisions_batched_nms(seed):
    """What the fusion used before: torchvision's `batched_nms`, indices and order."""
    torch = pytest.importorskip("torch")
    ops = pytest.importorskip("torchvision.ops")
    rng = np.random.default_rng(100 + seed)
    for trial in range(20):
        n = int(rng.integers(0, 80))
        xyxy = random_boxes(rng, n, grid=trial % 2 == 0)
        scores = (rng.integers(0, 6, n) / 6).astype(np.float32)
        classes = rng.integers(0, 4, n)
        for thr in (0.3, 0.5, 0.7):
            expected = ops.batched_nms(
                torch.as_tensor(xyxy), torch.as_tensor(scores), torch.as_tensor(classes), thr
            ).tolist()
            assert class_aware_nms(xyxy, scores, classes, thr).tolist() == expected


def masks_for(shape, *rects):
    m = np.zeros((len(rects), *shape), bool)
    for k, (x0, y0, x1, y1) in enumerate(rects):
        m[k, y0:y1, x0:x1] = True
    return m


def test_mask_merge():
    xyxy = np.array([[10, 10, 60, 60], [12, 12, 62, 62]], np.float32)  # box IoU 0.85
    scores = np.array([0.5, 0.8])
    same = masks_for((80, 80), (15, 15, 55, 55), (16, 16, 56, 56))  # mask IoU 0.90
    assert mask_merge(xyxy, scores, same).tolist() == [1]  # one object, the higher score
    different = masks_for((80, 80), (10, 10, 60, 35), (12, 35, 62, 62))  # two halves: mask IoU 0
    assert mask_merge(xyxy, scores, different).tolist() == [1, 0]
    # masks overlapping by less than 0.7 stay two; at a lower threshold they merge
    partial = masks_for((80, 80), (10, 10, 60, 60), (10, 30, 60, 60))  # mask IoU 0.6
    assert mask_merge(xyxy, scores, partial).tolist() == [1, 0]
    assert mask_merge(xyxy, scores, partial, mask_iou_threshold=0.5).tolist() == [1]
    # the box criterion is needed too
    apart = np.array([[0, 0, 40, 40], [30, 30, 70, 70]], np.float32)
    ident = masks_for((80, 80), (30, 30, 40, 40), (30, 30, 40, 40))
    assert mask_merge(apart, scores, ident).tolist() == [1, 0]
    # per class on request
    assert mask_merge(xyxy, scores, same, class_idx=np.array([0, 1])).tolist() == [1, 0]
    assert mask_merge(np.zeros((0, 4)), np.zeros(0), np.zeros((0, 5, 5), bool)).tolist() == []


def test_mask_merge_is_greedy_like_nms():
    """A box removed by a kept box removes nothing itself: a chain A > B > C with A~B and B~C but not
    A~C keeps A and C."""
    xyxy = np.array([[0, 0, 100, 100], [10, 0, 110, 100], [20, 0, 120, 100]], np.float32)
    masks = masks_for((100, 130), (0, 0, 100, 100), (10, 0, 110, 100), (20, 0, 120, 100))
    # neighbours: box/mask IoU 90/110 = 0.82; A and C: 80/120 = 0.67
    assert mask_merge(xyxy, np.array([0.9, 0.8, 0.7]), masks, 0.5, 0.7).tolist() == [0, 2]


def reference_mask_merge(xyxy, scores, masks, box_thr, mask_thr, classes=None):
    """Independent mask merge in plain Python: boxes by decreasing score (equal scores: the earlier
    first); a box goes when a kept box (of its class, when classes are given) overlaps it by a box IoU
    above `box_thr` and a mask IoU, counted in the union of the two boxes, above `mask_thr`, both IoUs
    and thresholds compared as float32 (supervision's IoUs are float32)."""
    f32 = np.float32
    h, w = masks.shape[1:]

    def same_object(i, k):
        if classes is not None and classes[i] != classes[k]:
            return False
        if not f32(float(exact_iou(xyxy[i], xyxy[k]))) > f32(box_thr):
            return False
        x0 = int(np.floor(max(0, min(xyxy[i][0], xyxy[k][0]))))
        y0 = int(np.floor(max(0, min(xyxy[i][1], xyxy[k][1]))))
        x1 = int(np.ceil(min(w, max(xyxy[i][2], xyxy[k][2]))))
        y1 = int(np.ceil(min(h, max(xyxy[i][3], xyxy[k][3]))))
        a, b = masks[i, y0:y1, x0:x1], masks[k, y0:y1, x0:x1]
        union = int((a | b).sum())
        iou = Fraction(int((a & b).sum()), union) if union else Fraction(0)
        return f32(float(iou)) > f32(mask_thr)

    keep = []
    for i in sorted(range(len(xyxy)), key=lambda i: (-float(scores[i]), i)):
        if not any(same_object(i, k) for k in keep):
            keep.append(i)
    return keep


@pytest.mark.parametrize("seed", range(4))
def test_mask_merge_is_the_reference_merge_with_ties_and_classes(seed):
    rng = np.random.default_rng(seed)
    h, w = 100, 140
    for trial in range(15):
        n = int(rng.integers(0, 25))
        xy, wh = rng.integers(0, 90, (n, 2)), rng.integers(3, 50, (n, 2))
        xyxy = np.hstack([xy, xy + wh]).astype(np.float32)
        if trial % 2:  # off the pixel grid
            xyxy += rng.uniform(-0.5, 0.5, (n, 4)).astype(np.float32)
        masks = np.zeros((n, h, w), bool)
        for k, (x0, y0, x1, y1) in enumerate(np.round(xyxy).astype(int)):
            masks[k, max(0, y0) : y1, max(0, x0) : x1] = rng.random((h, w))[max(0, y0) : y1, max(0, x0) : x1] < 0.9
        scores = (rng.integers(0, 4, n) / 4).astype(np.float32)  # ties
        classes = rng.integers(0, 3, n)
        for box_thr, mask_thr in ((0.5, 0.7), (0.3, 0.5), (0.1, 0.3)):
            for cls in (None, classes):
                got = mask_merge(xyxy, scores, masks, box_thr, mask_thr, cls).tolist()
                assert got == reference_mask_merge(xyxy, scores, masks, box_thr, mask_thr, cls)


class FixedDetector:
    """A test double: returns the same detections for every frame (the fusion logic is under test)."""

    def __init__(self, name, xyxy, conf, classes, uses_context=False):
        self.name, self.uses_context = name, uses_context
        self.det = Detections(
            np.array(xyxy, np.float32),
            np.array(conf),
            np.array(classes, object),
            source=np.array([name] * len(conf), object),
        )
        self.calls = []

    def detect(self, frames, contexts):
        self.calls.append(len(frames))
        return [self.det for _ in frames]


def test_fusion_detector_pools_and_suppresses_with_sources():
    from crashcast.perception.base import Detector, MaskMerger

    a = FixedDetector(
        "yolo",
        [[0, 0, 100, 100], [200, 0, 260, 80], [300, 0, 340, 90]],
        [0.9, 0.5, 0.7],
        ["vehicle", "vehicle", "person"],
    )
    b = FixedDetector(
        "grounding-dino",
        [[4, 4, 104, 104], [202, 2, 262, 82], [300, 0, 340, 90]],
        [0.6, 0.8, 0.6],
        ["vehicle", "vehicle", "cyclist"],
    )
    fusion = FusionDetector(FusionConfig(detectors=["classic-motion"]), [a, b])
    assert isinstance(fusion, Detector) and isinstance(fusion, MaskMerger)
    frames = [np.zeros((120, 400, 3), np.uint8)] * 2
    out = fusion.detect(frames, [None, None])
    assert a.calls == [2] and b.calls == [2]  # each detector sees the whole batch once
    assert len(out) == 2
    d = out[0]
    assert d.confidence.tolist() == pytest.approx([0.9, 0.8, 0.7, 0.6])  # highest first
    assert list(d.source) == ["yolo", "grounding-dino", "yolo", "grounding-dino"]
    assert list(d.class_name) == ["vehicle", "vehicle", "person", "cyclist"]  # person/cyclist: other classes
    assert fusion.detect([], []) == []
    assert not fusion.uses_context
    assert FusionDetector(
        FusionConfig(detectors=["classic-motion"]), [a, FixedDetector("m", [], [], [], True)]
    ).uses_context


def test_merge_masks_on_segmented_detections():
    fusion = FusionDetector(FusionConfig(detectors=["classic-motion"]), [])
    xyxy = np.array([[10, 10, 60, 60], [12, 12, 62, 62], [100, 10, 140, 60]], np.float32)
    det = Detections(
        xyxy,
        np.array([0.6, 0.8, 0.5]),
        np.array(["person", "cyclist", "vehicle"], object),
        mask=masks_for((80, 160), (15, 15, 55, 55), (16, 16, 56, 56), (100, 10, 140, 60)),
        source=np.array(["yolo", "grounding-dino", "yolo"], object),
    )
    merged = fusion.merge_masks(det)
    assert merged.confidence.tolist() == pytest.approx([0.8, 0.5])
    assert list(merged.source) == ["grounding-dino", "yolo"] and list(merged.class_name) == [
        "cyclist",
        "vehicle",
    ]
    assert merged.mask.shape == (2, 80, 160)
    no_masks = Detections(det.xyxy, det.confidence, det.class_name)
    assert fusion.merge_masks(no_masks) is no_masks
    strict = FusionDetector(FusionConfig(detectors=["classic-motion"], merge_same_class_only=True), [])
    assert len(strict.merge_masks(det)) == 3


def test_concat_masks_and_sources():
    m = np.zeros((1, 4, 4), bool)
    with_mask = Detections(np.zeros((1, 4)), [0.5], ["vehicle"], mask=m, source=["a"])
    without = Detections(np.zeros((1, 4)), [0.4], ["person"])
    assert concat([with_mask, with_mask]).mask.shape == (2, 4, 4)
    pooled = concat([with_mask, without])
    assert pooled.mask is None and list(pooled.source) == ["a", "unknown"]
    assert len(concat([Detections.empty()])) == 0


pytest.importorskip("ultralytics")
pytest.importorskip("transformers")


@pytest.fixture(scope="module")
def fused():
    from crashcast.perception import registry
    from crashcast.perception.spec import BuildContext

    cfg = _checker("detector")(
        {
            "name": "fusion",
            "detectors": [
                {"name": "yolo", "weights": "random:tiny", "conf": 0.2},
                {"name": "grounding-dino", "weights": "random:tiny", "box_threshold": 0.9},
            ],
        }
    )
    return registry.create("detector", cfg, BuildContext(runtime=RuntimeConfig(device="cpu")))


def test_registry_fusion_of_random_yolo_and_dino(fused):
    """Every fused box is one of a sub-detector's boxes (same class and source), and no two kept boxes of
    one class overlap by more than the NMS threshold."""
    from crashcast.perception.base import Detector, MaskMerger

    assert isinstance(fused, Detector) and isinstance(fused, MaskMerger)
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (360, 640, 3), dtype=np.uint8) for _ in range(2)]
    out = fused.detect(frames, [])
    parts = [d.detect(frames, []) for d in fused.detectors]
    for i, det in enumerate(out):
        pooled = concat([p[i] for p in parts])
        assert 0 < len(det) <= len(pooled)
        for box, conf, cls, src in zip(det.xyxy, det.confidence, det.class_name, det.source, strict=True):
            match = (np.abs(pooled.xyxy - box).max(1) < 1e-2) & (np.abs(pooled.confidence - conf) < 1e-4)
            assert match.any() and cls in pooled.class_name[match] and src in pooled.source[match]
        for c in set(det.class_name):
            sel = det.xyxy[det.class_name == c]
            iou = np.array([[float(exact_iou(a, b)) for b in sel] for a in sel])
            np.fill_diagonal(iou, 0)
            assert (iou <= 0.5 + 1e-6).all()
        assert set(det.source) <= {"yolo", "grounding-dino"}
    assert {s for d in out for s in d.source} == {"yolo", "grounding-dino"}
