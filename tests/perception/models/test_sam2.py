"""SAM2 image segmenter with a tiny randomly initialised `Sam2Model` (its masks are meaningless; their
types, shapes, batching and bookkeeping are not), plus the architectures and weights of the variants."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest

from crashcast.perception.models.mask_dictionary import box_masks
from crashcast.types import Detections


def test_modules_import_without_torch():
    code = ("import sys; import crashcast.perception.models.sam2, crashcast.perception.models.sam2_video, "
            "crashcast.perception.models.mask_dictionary; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_weights_and_config():
    from pydantic import ValidationError

    from crashcast.perception.models.sam2 import SAM2_CHECKPOINTS, Sam2SegmenterConfig, sam2_weights

    assert sam2_weights(Sam2SegmenterConfig(weights="random:sam2.1-hiera-large")) == []
    for hub, size in SAM2_CHECKPOINTS.items():
        (w,) = sam2_weights(Sam2SegmenterConfig(weights=hub))
        assert (w.name, w.source, w.licence, w.size_mb) == (hub, "huggingface", "Apache-2.0", size)
        assert "model.safetensors" in w.files
    with pytest.raises(ValidationError):
        Sam2SegmenterConfig(weights="random:sam3")
    with pytest.raises(ValidationError):
        Sam2SegmenterConfig(threshold=0.5)  # unknown fields are refused


needs_transformers = pytest.mark.skipif(importlib.util.find_spec("transformers") is None,
                                        reason="needs transformers (the [vision] extra)")


@needs_transformers
@pytest.mark.parametrize("arch", ["sam2.1-hiera-tiny", "sam2.1-hiera-small", "sam2.1-hiera-base-plus",
                                  "sam2.1-hiera-large"])
def test_random_architectures_match_the_checkpoints(arch):
    """Built on the meta device (no memory): parameters x 4 bytes is the checkpoint's download size."""
    import torch
    from transformers import Sam2VideoConfig, Sam2VideoModel

    from crashcast.perception.models.sam2 import SAM2_CHECKPOINTS, architecture

    a = architecture(arch)
    with torch.device("meta"):
        model = Sam2VideoModel(Sam2VideoConfig(vision_config=a["vision_config"], image_size=a["image_size"]))
    size_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    assert size_mb == pytest.approx(SAM2_CHECKPOINTS[f"facebook/{arch}"], rel=0.01)


@pytest.fixture(scope="module")
def segmenter():
    import torch

    from crashcast.perception import registry
    from crashcast.perception.models.sam2 import Sam2SegmenterConfig
    from crashcast.perception.spec import BuildContext

    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a shared 2-core machine: far faster single-threaded
    torch.manual_seed(0)
    yield registry.create("segmenter", Sam2SegmenterConfig(weights="random:tiny"), BuildContext())
    torch.set_num_threads(before)


def dets(boxes: list[list[float]], source: str = "yolo") -> Detections:
    b = np.array(boxes, np.float32).reshape(-1, 4)
    n = len(b)
    return Detections(b, np.linspace(0.9, 0.5, n), np.array(["vehicle", "person", "cyclist"] * 3, object)[:n],
                      None, np.arange(n, dtype=np.int64) + 7, np.array([source] * n, object))


@pytest.fixture(scope="module")
def batch():
    rng = np.random.default_rng(1)
    frames = [rng.integers(0, 255, shape, np.uint8) for shape in [(90, 160, 3), (120, 100, 3), (90, 160, 3)]]
    detections = [dets([[5, 5, 60, 40], [80, 30, 150, 85], [0, 0, 160, 90]]), dets([[10, 20, 90, 110]]),
                  dets([[100, 10, 140, 50], [20, 40, 70, 80]])]
    return frames, detections


@needs_transformers
def test_protocol(segmenter):
    from crashcast.perception.base import Segmenter

    assert isinstance(segmenter, Segmenter) and segmenter.name == "sam2"


@needs_transformers
def test_masks_one_per_box_at_frame_size(segmenter, batch):
    frames, detections = batch
    out = segmenter.segment(frames, detections, [None] * len(frames))
    assert len(out) == len(frames)
    for f, d, o in zip(frames, detections, out, strict=True):
        assert o.mask.shape == (len(d), *f.shape[:2]) and o.mask.dtype == bool
        assert o.mask.reshape(len(o), -1).any(1).all()  # never empty (SAM2's mask, else the box)
        for name in ("xyxy", "confidence", "class_name", "tracker_id", "source"):
            assert np.array_equal(getattr(o, name), getattr(d, name))  # the same detections


@needs_transformers
def test_batching_does_not_change_a_frame_result(segmenter, batch):
    """One vision pass over all frames and one decoder pass over all boxes (padded per frame) give each
    frame what it gets alone."""
    frames, detections = batch
    together = segmenter.segment(frames, detections, [None] * 3)
    for i in range(3):
        alone = segmenter.segment([frames[i]], [detections[i]], [None])[0]
        assert (alone.mask != together[i].mask).mean() < 1e-3
    reordered = segmenter.segment(frames[::-1], detections[::-1], [None] * 3)[::-1]
    for a, b in zip(together, reordered, strict=True):
        assert (a.mask != b.mask).mean() < 1e-3


@needs_transformers
def test_frames_without_detections_pass_through(segmenter, batch):
    frames, detections = batch
    out = segmenter.segment(frames, [detections[0], Detections.empty(), detections[2]], [None] * 3)
    assert len(out[1]) == 0 and out[1].mask.shape == (0, *frames[1].shape[:2])
    assert all(len(o) == 0 for o in segmenter.segment(frames[:2], [Detections.empty()] * 2, [None] * 2))
    assert segmenter.segment([], [], []) == []


@needs_transformers
def test_box_fallback_for_empty_masks(segmenter, batch):
    frames, detections = batch
    threshold, fallback = segmenter.mask_threshold, segmenter.box_fallback
    try:
        segmenter.mask_threshold = 1e9  # no pixel passes: every SAM2 mask is empty
        out = segmenter.segment(frames[:1], detections[:1], [None])[0]
        assert np.array_equal(out.mask, box_masks(detections[0].xyxy, frames[0].shape[:2]))
        segmenter.box_fallback = False
        assert not segmenter.segment(frames[:1], detections[:1], [None])[0].mask.any()
    finally:
        segmenter.mask_threshold, segmenter.box_fallback = threshold, fallback
