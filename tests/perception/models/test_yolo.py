"""YOLO detector through ultralytics with a tiny random model (`random:tiny`): its boxes are meaningless;
their types, ranges, batching, colour order and class mapping are not."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import numpy as np
import pytest
from pydantic import ValidationError
from scenes import assert_batch_equals_one_by_one, build_detector, scene

from crashcast.config import RuntimeConfig
from crashcast.errors import ConfigError, CrashcastError
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
    assert CLIP_WEIGHTS.source == "ultralytics-clip"  # located in ultralytics' weights_dir/clip (runtime/weights.py)
    assert yolo_weights(YoloConfig(weights="random:tiny-world", text_classes=["car"])) == []  # random text embeddings
    assert (
        yolo_weights(YoloConfig(weights="yolo26n.pt"))[0].source == "ultralytics"
    )  # a name ultralytics may know
    assert yolo_weights(YoloConfig(weights="/nowhere/my.pt"))[0].source == "local"  # nobody can fetch it


def test_weights_of_an_existing_checkpoint(tmp_path):
    own = tmp_path / "own.pt"
    own.write_bytes(b"x")
    assert yolo_weights(YoloConfig(weights=str(own))) == []


pytest.importorskip("ultralytics")

def build(**kw):
    return build_detector(YoloConfig, **kw)


@pytest.fixture(scope="module")
def detector():
    return build()


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
    assert_batch_equals_one_by_one(detector, frames)


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


@pytest.fixture(scope="module")
def world_checkpoint(tmp_path_factory):
    """A YOLO-World checkpoint file (random weights, saved the way ultralytics saves checkpoints)."""
    path = tmp_path_factory.mktemp("world") / "tiny-worldv2.pt"
    build(weights="random:tiny-world").model.save(path)
    return path


def in_weights_folder(folder, **kw):
    from crashcast.perception import registry
    from crashcast.perception.spec import BuildContext

    ctx = BuildContext(runtime=RuntimeConfig(device="cpu", weights_dir=str(folder)))
    return registry.create("detector", YoloConfig(**kw), ctx)


def test_yolo_world_with_a_weights_folder_never_downloads_clip(world_checkpoint, tmp_path, monkeypatch):
    """With a weights folder, CLIP comes from it like every model: a folder without ViT-B-32.pt is a
    ConfigError naming the file and the folder, before ultralytics could download anything."""
    import socket

    from ultralytics.utils import WEIGHTS_DIR

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.delenv("CRASHCAST_WEIGHTS_DIR", raising=False)
    folder = tmp_path / "weights"
    folder.mkdir()
    before = (WEIGHTS_DIR / "clip" / "ViT-B-32.pt").exists()
    with pytest.raises(ConfigError, match=r"CLIP ViT-B/32.*ViT-B-32\.pt: not in the weights folder") as e:
        in_weights_folder(folder, weights=str(world_checkpoint), text_classes=["car", "bus"])
    assert str(folder) in str(e.value) and CLIP_WEIGHTS.url in str(e.value)
    assert (WEIGHTS_DIR / "clip" / "ViT-B-32.pt").exists() == before
    assert not any(folder.iterdir())
    # without text_classes the same folder is enough (CLIP is not needed)
    assert len(in_weights_folder(folder, weights=str(world_checkpoint)).detect([scene(2)], [])) == 1


@pytest.mark.skipif(importlib.util.find_spec("clip") is None, reason="the clip package (ultralytics' fork) is not installed")
def test_yolo_world_loads_clip_from_the_weights_folder(world_checkpoint, tmp_path, monkeypatch):
    """The vocabulary is encoded by the CLIP checkpoint in the weights folder (a small random CLIP with
    ViT-B/32's text interface, saved as ViT-B-32.pt the way OpenAI ships it: a TorchScript archive):
    the embeddings equal that model's own encoding."""
    import socket

    import clip
    import torch

    monkeypatch.setattr(socket.socket, "connect", lambda *a, **k: (_ for _ in ()).throw(OSError("no network")))
    monkeypatch.delenv("CRASHCAST_WEIGHTS_DIR", raising=False)
    torch.manual_seed(0)
    # embed_dim 512 (YOLO-World's text width), the real vocabulary and context; one narrow layer each
    small = clip.model.CLIP(512, 32, 1, 64, 16, 77, 49408, 64, 1, 1)
    # clip.load rebuilds the model in fp16 (then float on the CPU): make the weights exactly representable
    small.load_state_dict({k: v.half().float() for k, v in small.state_dict().items()})
    small.eval()
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.jit.trace(small, (torch.rand(1, 3, 32, 32), clip.tokenize(["car"]))).save(str(folder / "ViT-B-32.pt"))
    classes = ["car", "vehicle", "truck", "bus"]
    det = in_weights_folder(folder, weights=str(world_checkpoint), text_classes=classes, conf=0.01)
    with torch.no_grad():
        ref = small.encode_text(clip.tokenize(classes))
    ref = ref / ref.norm(dim=-1, keepdim=True)
    feats = det.model.model.txt_feats
    assert feats.shape == (1, 4, 512)
    torch.testing.assert_close(feats[0].float(), ref, atol=1e-5, rtol=1e-4)
    assert list(det.model.model.names) == classes and det.model.model.clip_model is None
    assert det.class_ids == [0, 1, 2, 3]
    frames = [scene(i) for i in range(2)]
    for d, f in zip(det.detect(frames, []), frames, strict=True):
        check(d, f, 0.01, ("vehicle",))


def test_bad_checkpoints_are_config_errors(tmp_path):
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(CrashcastError, match=r"junk\.pt: not loaded: the restricted loader cannot read it"):
        build(weights=str(junk))  # never unpickled in full: junk and a pickle carrying code look alike to it
    with pytest.raises(ConfigError, match="random:yolov99"):
        build(weights="random:yolov99")


def test_half_precision_argument():
    from crashcast.perception.models.yolo import _precision

    assert _precision(False) == {}
    assert _precision(True) in ({"quantize": 16}, {"half": True})
