"""Grounding DINO through transformers with a tiny random model (`random:tiny`): the grounding rule on
hand-made outputs, then the backend's types, ranges, batching, colour order and label mapping."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError
from scenes import assert_batch_equals_one_by_one, build_detector, scene

from crashcast.errors import ConfigError
from crashcast.perception.models.grounding_dino import (
    CHECKPOINTS_MB,
    GroundingDinoConfig,
    ground,
    grounding_dino_weights,
    phrases_of,
    token_phrases,
)
from crashcast.types import Detections

DELIMS = {101, 102, 1012, 1029, 0}


def test_module_imports_without_torch():
    code = "import sys, crashcast.perception.models.grounding_dino; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_and_weights():
    cfg = GroundingDinoConfig()
    assert (cfg.weights, cfg.box_threshold, cfg.text_threshold) == (
        "IDEA-Research/grounding-dino-tiny",
        0.35,
        0.25,
    )
    assert phrases_of(cfg.query) == ["car", "truck", "bus", "motorcycle", "bicycle", "person"]
    for bad in ({"query": " . . "}, {"box_threshold": 2}, {"shortest_edge": 8}, {"threshold": 0.3}):
        with pytest.raises(ValidationError):
            GroundingDinoConfig(**bad)
    assert grounding_dino_weights(GroundingDinoConfig(weights="random:tiny")) == []
    for hub, size in CHECKPOINTS_MB.items():
        (w,) = grounding_dino_weights(GroundingDinoConfig(weights=hub))
        assert (w.name, w.source, w.licence, w.size_mb) == (hub, "huggingface", "Apache-2.0", size)
        assert "model.safetensors" in w.files and "vocab.txt" in w.files
    (other,) = grounding_dino_weights(GroundingDinoConfig(weights="someone/grounding-dino-finetuned"))
    assert (other.source, other.files) == ("huggingface", ())  # the whole snapshot
    assert grounding_dino_weights(GroundingDinoConfig(weights="/nowhere/snapshot"))[0].source == "local"


def test_weights_of_a_local_snapshot(tmp_path):
    assert grounding_dino_weights(GroundingDinoConfig(weights=str(tmp_path))) == []


def test_token_phrases():
    # [CLS] car . police car . [SEP] [PAD]
    ids = [101, 5, 1012, 7, 5, 1012, 102, 0]
    assert token_phrases(ids, DELIMS).tolist() == [-1, 0, -1, 1, 1, -1, -1, -1]
    assert token_phrases([101, 102], DELIMS).tolist() == [-1, -1]


def test_ground_rule():
    """Box score = best token; label = the phrase with the best token, if above the text threshold."""
    tp = np.array([-1, 0, -1, 1, 1, -1, -1])  # [CLS] car . police car . [SEP]
    probs = np.array(
        [
            [0.1, 0.9, 0.1, 0.3, 0.2, 0.1, 0.0],  # phrase 0, 0.9
            [0.1, 0.2, 0.1, 0.3, 0.6, 0.1, 0.0],  # phrase 1 (its second token), 0.6
            [0.1, 0.3, 0.1, 0.2, 0.2, 0.1, 0.0],  # below the box threshold
            [0.8, 0.2, 0.7, 0.1, 0.1, 0.1, 0.0],  # only delimiters score: no phrase, dropped
            [0.1, 0.5, 0.1, 0.1, 0.1, 0.1, 0.0],  # phrase 0, 0.5
        ]
    )
    boxes = np.array(
        [
            [0.5, 0.5, 0.2, 0.4],
            [0.1, 0.1, 0.4, 0.4],
            [0.5, 0.5, 0.1, 0.1],
            [0.5, 0.5, 0.1, 0.1],
            [0.95, 0.5, 0.2, 0.2],
        ]
    )
    xyxy, conf, phrase = ground(probs, boxes, tp, (100, 200), box_threshold=0.35, text_threshold=0.25)
    assert conf.tolist() == pytest.approx([0.9, 0.6, 0.5])  # highest first
    assert phrase.tolist() == [0, 1, 0]
    np.testing.assert_allclose(xyxy[0], [80, 30, 120, 70])  # centre (100, 50), 40 x 40 pixels
    np.testing.assert_allclose(xyxy[1], [0, 0, 60, 30])  # clipped at the top-left corner
    np.testing.assert_allclose(xyxy[2], [170, 40, 200, 60])  # clipped at the right edge
    empty = ground(probs, boxes, tp, (100, 200), box_threshold=0.95, text_threshold=0.25)
    assert [a.shape for a in empty] == [(0, 4), (0,), (0,)]
    # a higher text threshold drops the box whose phrase only reaches 0.5
    _, conf, _ = ground(probs, boxes, tp, (100, 200), box_threshold=0.35, text_threshold=0.55)
    assert conf.tolist() == pytest.approx([0.9, 0.6])


pytest.importorskip("transformers")

def build(**kw):
    return build_detector(GroundingDinoConfig, **kw)


@pytest.fixture(scope="module")
def detector():
    return build()


def check(det: Detections, frame: np.ndarray, box_threshold: float, classes: set[str]) -> None:
    h, w = frame.shape[:2]
    assert isinstance(det, Detections) and det.mask is None
    assert det.xyxy.dtype == np.float32 and det.confidence.dtype == np.float32
    x0, y0, x1, y1 = det.xyxy.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert (x0 <= x1).all() and (y0 <= y1).all()
    assert ((det.confidence > box_threshold) & (det.confidence <= 1)).all()
    assert (np.diff(det.confidence) <= 0).all()
    assert set(det.class_name) <= classes
    assert list(det.source) == ["grounding-dino"] * len(det)


def test_protocol_and_outputs(detector, frames):
    from crashcast.perception.base import Detector

    assert isinstance(detector, Detector) and detector.name == "grounding-dino"
    assert detector.phrases == ["car", "truck", "bus", "motorcycle", "bicycle", "person"]
    assert list(detector.classes) == ["vehicle", "vehicle", "vehicle", "cyclist", "cyclist", "person"]
    out = detector.detect(frames, [])
    assert len(out) == len(frames)
    for det, frame in zip(out, frames, strict=True):
        check(det, frame, 0.35, {"vehicle", "cyclist", "person"})
    assert sum(len(d) for d in out) > 0, "the random model found nothing: the checks above were empty"
    assert detector.detect([], []) == []


def test_batch_of_three_equals_one_by_one(detector, frames):
    assert_batch_equals_one_by_one(detector, frames)


def _capture_pixels(detector, frames):
    seen = []
    hook = detector.model.register_forward_pre_hook(
        lambda m, args, kwargs: seen.append(kwargs["pixel_values"].clone()), with_kwargs=True
    )
    try:
        detector.detect(frames, [])
    finally:
        hook.remove()
    return seen


def test_one_forward_per_batch_and_rgb_reaches_the_model_as_rgb(detector):
    rgb = np.array([200, 50, 10])
    frame = np.empty((360, 640, 3), np.uint8)
    frame[:] = rgb
    seen = _capture_pixels(detector, [frame, frame, scene(5)])
    assert len(seen) == 1 and seen[0].shape[:2] == (3, 3)
    x = seen[0][0]
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])  # ImageNet normalisation
    h, w = x.shape[1:]
    np.testing.assert_allclose(x[:, h // 2, w // 2].numpy(), (rgb / 255 - mean) / std, atol=0.02)


def test_image_size_setting_and_frames_of_other_sizes():
    det = build(shortest_edge=96, longest_edge=160)
    frames = [scene(7, (250, 333)), scene(8, (480, 270))]
    seen = _capture_pixels(det, frames)
    assert max(seen[0].shape[2:]) <= 160 and min(seen[0].shape[2:]) >= 90
    for d, frame in zip(det.detect(frames, []), frames, strict=True):
        check(d, frame, 0.35, {"vehicle", "cyclist", "person"})


def test_any_query_words_map_through_the_label_table():
    det = build(query="Tuk-tuk. dog. police car.", box_threshold=0.05, text_threshold=0.05)
    assert det.phrases == ["tuk - tuk", "dog", "police car"]
    assert list(det.classes) == ["vehicle", "object", "vehicle"]
    out = det.detect([scene(1)], [])
    assert len(out[0]) > 0 and set(out[0].class_name) <= {"vehicle", "object"}


def test_random_tiny_architecture_is_the_checkpoints():
    """random:grounding-dino-tiny uses transformers' default config: the size of the tiny checkpoint."""
    import torch
    from transformers import GroundingDinoConfig as HFConfig
    from transformers import GroundingDinoForObjectDetection

    with torch.device("meta"):
        model = GroundingDinoForObjectDetection(HFConfig())
    size_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    assert size_mb == pytest.approx(CHECKPOINTS_MB["IDEA-Research/grounding-dino-tiny"], rel=0.01)


def test_missing_or_foreign_weights_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="cannot load"):
        build(weights=str(tmp_path))  # a folder without a Grounding DINO snapshot
    with pytest.raises(ConfigError, match="random:tiny"):
        build(weights="random:huge")
