"""YOLO detector through ultralytics with a tiny random model (`random:tiny`): its boxes are meaningless;
their types, ranges, batching, colour order and class mapping are not."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError

from crashcast.config import RuntimeConfig
from crashcast.errors import ConfigError
from crashcast.perception.models.labels import ROAD_USERS
from crashcast.perception.models.yolo import CHECKPOINTS_MB, CLIP_WEIGHTS, YoloConfig, yolo_weights
from crashcast.types import CLASS_NAMES, Detections


def test_module_imports_without_torch():
    code = "import sys, crashcast.perception.models.yolo; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_config_and_weights():
    assert YoloConfig().weights == "yolov8x.pt" and YoloConfig().conf == 0.25
    for bad in ({"imgsz": 650}, {"classes": []}, {"text_classes": [" "]}, {"conf": 1.5}, {"threshold": 0.3}):
        with pytest.raises(ValidationError):
            YoloConfig(**bad)
    assert yolo_weights(YoloConfig(weights="random:yolov8x")) == []
    (w,) = yolo_weights(YoloConfig())
    assert (w.name, w.source, w.licence, w.size_mb) == ("yolov8x.pt", "ultralytics", "AGPL-3.0", 131.0)
    assert w.url == "https://github.com/ultralytics/assets/releases/download/v8.4.0/yolov8x.pt"
    assert {"yolov8n.pt", "yolo11n.pt", "yolov8x-worldv2.pt"} <= set(CHECKPOINTS_MB)
    assert yolo_weights(YoloConfig(weights="yolov8x-worldv2.pt", text_classes=["car"]))[1] == CLIP_WEIGHTS
    assert (
        yolo_weights(YoloConfig(weights="yolo26n.pt"))[0].source == "ultralytics"
    )  # a name ultralytics may know
    assert yolo_weights(YoloConfig(weights="/nowhere/my.pt"))[0].source == "local"  # nobody can fetch it


def test_weights_of_an_existing_checkpoint(tmp_path):
    own = tmp_path / "own.pt"
    own.write_bytes(b"x")
    assert yolo_weights(YoloConfig(weights=str(own))) == []


pytest.importorskip("ultralytics")

CPU = RuntimeConfig(device="cpu")


def build(**kw):
    from crashcast.perception import registry
    from crashcast.runtime.devices import BuildContext

    return registry.create(
        "detector", YoloConfig(**{"weights": "random:tiny", **kw}), BuildContext(runtime=CPU)
    )


def scene(seed: int, size: tuple[int, int] = (360, 640)) -> np.ndarray:
    """A noisy RGB frame with a few solid rectangles (something for the random network to respond to)."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        img[y0 : y0 + rng.integers(20, h // 2), x0 : x0 + rng.integers(20, w // 2)] = rng.integers(0, 256, 3)
    return img


@pytest.fixture(scope="module")
def detector():
    return build()


@pytest.fixture(scope="module")
def frames():
    return [scene(i) for i in range(3)]


def check(det: Detections, frame: np.ndarray, conf: float, classes=CLASS_NAMES) -> None:
    h, w = frame.shape[:2]
    assert isinstance(det, Detections)
    assert det.xyxy.dtype == np.float32 and det.xyxy.shape == (len(det), 4)
    assert det.confidence.dtype == np.float32 and det.mask is None and det.tracker_id is None
    x0, y0, x1, y1 = det.xyxy.T
    assert (x0 >= 0).all() and (y0 >= 0).all() and (x1 <= w).all() and (y1 <= h).all()
    assert (x0 <= x1).all() and (y0 <= y1).all()
    assert ((det.confidence >= conf) & (det.confidence <= 1)).all()
    assert set(det.class_name) <= set(classes)
    assert list(det.source) == ["yolo"] * len(det)


def test_protocol_and_outputs(detector, frames):
    from crashcast.perception.base import Detector

    assert isinstance(detector, Detector) and detector.name == "yolo"
    out = detector.detect(frames, [])
    assert len(out) == len(frames)
    for det, frame in zip(out, frames, strict=True):
        check(det, frame, 0.25, ROAD_USERS)  # default: only the COCO classes that are road users
    assert sum(len(d) for d in out) > 0, "the random model found nothing: the checks above were empty"
    assert detector.detect([], []) == []


def test_batch_of_three_equals_one_by_one(detector, frames):
    batch = detector.detect(frames, [])
    single = [detector.detect([f], [])[0] for f in frames]
    for b, s in zip(batch, single, strict=True):
        assert len(b) == len(s)
        np.testing.assert_allclose(b.xyxy, s.xyxy, rtol=1e-4, atol=1e-2)  # float sums differ with batch and threads
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-4)
        assert list(b.class_name) == list(s.class_name)
    # the frames give different boxes: a batch mixing frames up would fail the comparison
    assert len({tuple(np.round(d.xyxy, 1).ravel()) for d in batch}) == len(frames)


def test_one_predict_call_per_batch_and_rgb_reaches_the_network_as_rgb(detector):
    """ultralytics reads numpy images as BGR; the network must still see crashcast's RGB frames as RGB."""
    detector.detect([scene(4)], [])  # ultralytics sets its predictor up on the first call
    network = detector.model.predictor.model  # ultralytics' AutoBackend around the torch module
    seen = []
    hook = network.register_forward_pre_hook(lambda module, args: seen.append(args[0].detach().clone()))
    try:
        rgb = (200, 50, 10)
        frame = np.empty((360, 640, 3), np.uint8)
        frame[:] = rgb
        detector.detect([frame, frame, scene(5)], [])
    finally:
        hook.remove()
    assert len(seen) == 1 and seen[0].shape[:2] == (3, 3)  # one forward pass, three images, three channels
    x = seen[0][0]
    h, w = x.shape[1:]
    np.testing.assert_allclose(x[:, h // 2, w // 2].numpy() * 255, rgb, atol=1)


def test_boxes_in_each_frames_own_pixels(detector):
    """Frames of other sizes (not multiples of 32; two sizes in one batch) get boxes in their own pixels."""
    frames = [scene(7, (250, 333)), scene(8, (480, 270))]
    out = detector.detect(frames, [])
    for det, frame in zip(out, frames, strict=True):
        check(det, frame, 0.25)


def test_class_filters():
    det_all = build(classes="all", conf=0.05)
    assert det_all.class_ids is None
    assert det_all.coarse[0] == "person" and det_all.coarse[2] == "vehicle" and det_all.coarse[9] == "object"
    out = det_all.detect([scene(i) for i in range(3)], [])
    assert {c for d in out for c in d.class_name} - set(ROAD_USERS), "'all' should keep non-road-user classes"
    road = build(conf=0.05)
    assert road.class_ids == [0, 1, 2, 3, 5, 6, 7]  # person, bicycle, car, motorcycle, bus, train, truck
    named = build(classes=["car", "Person"], conf=0.05)
    assert named.class_ids == [0, 2]
    for d in named.detect([scene(i) for i in range(3)], []):
        assert set(d.class_name) <= {"vehicle", "person"}
    with pytest.raises(ConfigError, match="lorry"):
        build(classes=["lorry"])


def test_random_architecture_by_yaml_stem():
    det = build(weights="random:yolov8n", imgsz=320, conf=0.05)
    frame = scene(3)
    (d,) = det.detect([frame], [])
    check(d, frame, 0.05, ROAD_USERS)
    assert (
        sum(p.numel() for p in det.model.model.parameters()) > 3_000_000
    )  # the full YOLOv8n, not the tiny one


def test_random_models_are_reproducible(frames):
    a, b = build().detect(frames[:1], []), build().detect(frames[:1], [])
    np.testing.assert_array_equal(a[0].xyxy, b[0].xyxy)


def test_yolo_world_vocabulary_offline():
    det = build(weights="random:tiny-world", text_classes=["car", "vehicle", "truck", "bus"], conf=0.01)
    assert list(det.model.model.names) == ["car", "vehicle", "truck", "bus"]
    assert det.class_ids == [0, 1, 2, 3]
    out = det.detect([scene(i) for i in range(2)], [])
    assert all(set(d.class_name) <= {"vehicle"} for d in out)
    with pytest.raises(ConfigError, match="YOLO-World"):
        build(text_classes=["car"])  # random:tiny is not a world model


@pytest.mark.skipif(
    importlib.util.find_spec("clip") is not None, reason="CLIP installed: set_classes would download"
)
def test_yolo_world_checkpoint_without_clip_is_a_clear_error(tmp_path):
    """A real (saved) YOLO-World checkpoint with text_classes needs CLIP: a ConfigError, no pip install."""
    from ultralytics import YOLO

    world = build(weights="random:tiny-world").model
    path = tmp_path / "tiny-worldv2.pt"
    world.save(path)
    assert isinstance(YOLO(str(path)).model, type(world.model))
    reloaded = build(weights=str(path))  # without a vocabulary it loads and runs
    assert len(reloaded.detect([scene(1)], [])) == 1
    with pytest.raises(ConfigError, match="CLIP"):
        build(weights=str(path), text_classes=["car"])


def test_bad_checkpoints_are_config_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match=r"junk\.pt"):
        build(weights=str(junk))
    with pytest.raises(ConfigError, match="random:yolov99"):
        build(weights="random:yolov99")


def test_half_precision_argument():
    from crashcast.perception.models.yolo import _precision

    assert _precision(False) == {}
    assert _precision(True) in ({"quantize": 16}, {"half": True})
