"""The helpers the model backends share: the frame check and the transformers loader."""

from __future__ import annotations

import numpy as np
import pytest

from crashcast.config import RuntimeConfig
from crashcast.errors import ConfigError
from crashcast.perception.models._common import check_rgb_frames, load_pretrained
from crashcast.perception.spec import BuildContext


def test_check_rgb_frames():
    check_rgb_frames([np.zeros((4, 6, 3), np.uint8), np.zeros((8, 2, 3), np.uint8)], "yolo")
    check_rgb_frames([], "yolo")
    for bad in (np.zeros((4, 6), np.uint8), np.zeros((4, 6, 4), np.uint8), np.zeros((4, 6, 3), np.float32)):
        with pytest.raises(ValueError, match=r"grounding-dino: frames must be \(H, W, 3\) uint8 RGB.*frame 1"):
            check_rgb_frames([np.zeros((4, 6, 3), np.uint8), bad], "grounding-dino")


@pytest.mark.parametrize("backend", ["yolo", "grounding-dino"])
def test_detectors_check_their_frames(backend):
    """Both detectors refuse a frame that is not (H, W, 3) uint8 before running their model."""
    from crashcast.perception.models.grounding_dino import GroundingDinoDetector
    from crashcast.perception.models.yolo import YoloDetector

    cls = {"yolo": YoloDetector, "grounding-dino": GroundingDinoDetector}[backend]
    detector = cls.__new__(cls)  # no model: the check comes first
    with pytest.raises(ValueError, match=f"{backend}: frames must be"):
        detector.detect([np.zeros((4, 6, 3), np.float32)])


def test_load_pretrained(tmp_path):
    ctx = BuildContext(runtime=RuntimeConfig(device="cpu"))
    made = []
    assert load_pretrained("random:tiny", ctx, "Nope", "Nope", lambda arch: made.append(arch) or (1, 2), "x") == (1, 2)
    assert made == ["tiny"]
    pytest.importorskip("transformers")
    with pytest.raises(ConfigError, match=r"perception\.segmenter\.weights: cannot load .*weights folder"):
        load_pretrained(str(tmp_path), ctx, "Sam2Model", "Sam2Processor", lambda arch: None,
                        "perception.segmenter.weights")
