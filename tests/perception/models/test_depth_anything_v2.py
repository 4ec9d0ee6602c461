"""Depth Anything V2 depth backend with a tiny randomly initialised `DepthAnythingForDepthEstimation`
(its depth is meaningless; its types, shapes, units, range, batching and loading are not), plus the
architectures of the checkpoints and the preprocessing against transformers' DPT image processor."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scenes import scene

from crashcast.config import RuntimeConfig
from crashcast.perception.spec import BuildContext

DEFAULT = "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"
TINY_INPUT = 126  # 9 patches: keeps the tiny model cheap on a CPU


def test_module_imports_without_torch():
    code = ("import sys; import crashcast.perception.models.depth_anything_v2; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_weights_and_config(tmp_path):
    from pydantic import ValidationError

    from crashcast.perception.models.depth_anything_v2 import (
        HUB_FILES,
        DepthAnythingV2Config,
        depth_anything_weights,
    )

    (w,) = depth_anything_weights(DepthAnythingV2Config())
    assert (w.name, w.source, w.licence, w.size_mb, w.files) == (DEFAULT, "huggingface", "Apache-2.0", 99.2, HUB_FILES)
    for size in ("Base", "Large"):
        (w,) = depth_anything_weights(DepthAnythingV2Config(weights=f"depth-anything/Depth-Anything-V2-Metric-Outdoor-{size}-hf"))
        assert w.licence == "CC-BY-NC-4.0"
    assert depth_anything_weights(DepthAnythingV2Config(weights="random:tiny")) == []
    assert depth_anything_weights(DepthAnythingV2Config(weights=str(tmp_path))) == []
    for bad in (dict(weights="random:giant"), dict(input_size=500), dict(input_size=7), dict(max_depth=80)):
        with pytest.raises(ValidationError):
            DepthAnythingV2Config(**bad)


@pytest.mark.parametrize("arch,hub", [("small", "Small"), ("base", "Base"), ("large", "Large")])
def test_random_architectures_match_the_checkpoints(arch, hub):
    """Built on the meta device (no memory): parameters x 4 bytes is the checkpoint's download size."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from crashcast.perception.models.depth_anything_v2 import CHECKPOINTS, architecture

    config = architecture(arch)
    assert (config.depth_estimation_type, config.max_depth) == ("metric", 80.0)
    with torch.device("meta"):
        model = DepthAnythingForDepthEstimation(config)
    size_mb = sum(p.numel() for p in model.parameters()) * 4 / 1e6
    assert size_mb == pytest.approx(CHECKPOINTS[f"depth-anything/Depth-Anything-V2-Metric-Outdoor-{hub}-hf"][0], rel=0.01)


def dpt_processor(size: int = 518):
    """transformers' image processor with Depth Anything V2's settings (its checkpoints' preprocessor_config.json)."""
    from transformers import DPTImageProcessor

    return DPTImageProcessor(size={"height": size, "width": size}, keep_aspect_ratio=True, ensure_multiple_of=14,
                             image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225], resample=3,
                             do_pad=False)


def test_preprocessing_matches_the_dpt_image_processor():
    import torch
    from transformers.models.dpt.image_processing_dpt import get_resize_output_image_size

    from crashcast.perception.models.depth_anything_v2 import Preprocess, network_size, pixel_values

    processor = dpt_processor()
    assert Preprocess.from_dict(processor.to_dict()) == Preprocess()
    for h, w in ((360, 640), (720, 1280), (48, 64), (500, 300), (519, 517)):
        want = get_resize_output_image_size(torch.zeros(3, h, w), (518, 518), True, 14)
        assert network_size(h, w, Preprocess()) == (want.height, want.width)
    mean, std = torch.tensor(processor.image_mean).view(3, 1, 1), torch.tensor(processor.image_std).view(3, 1, 1)
    for h, w in ((90, 160), (600, 800)):  # up- and downscaled
        frame = scene(3, (h, w))
        image = torch.from_numpy(frame).permute(2, 0, 1)
        got = pixel_values(image[None], Preprocess())[0]
        # the processor's float path (what it does with uint8 on a GPU, less the rounding to uint8 there):
        # the same resize and normalisation; the resized image clamped to 0..255 as a uint8 image is
        want = processor(images=[image.float()], return_tensors="pt")["pixel_values"][0]
        want = ((want * std + mean).clamp(0, 1) - mean) / std
        assert got.shape == want.shape == (3, *network_size(h, w, Preprocess()))
        np.testing.assert_allclose(got.numpy(), want.numpy(), atol=1e-5)
        # with uint8 on the CPU torchvision resizes natively, clamping between its two passes: a few
        # pixels next to strong edges differ, the rest by a grey level at most (fixed-point arithmetic)
        diff = np.abs(got.numpy() - processor(images=[frame], return_tensors="pt")["pixel_values"][0].numpy())
        assert np.quantile(diff, 0.95) <= 1.0 / 255 / 0.224


# ----------------------------------------------------------------------------- the backend


def build(weights: str = "random:tiny", input_size: int | None = TINY_INPUT, **runtime):
    from crashcast.perception import registry
    from crashcast.perception.models.depth_anything_v2 import DepthAnythingV2Config

    cfg = DepthAnythingV2Config(weights=weights, input_size=input_size)
    return registry.create("depth", cfg, BuildContext(runtime=RuntimeConfig(device="cpu", **runtime)))


@pytest.fixture(scope="module")
def depth(torch_threads):
    import torch

    torch.manual_seed(0)
    return build()


def frames(n: int, size: tuple[int, int] = (45, 61)) -> list[np.ndarray]:
    return [scene(20 + i, size) for i in range(n)]


def test_protocol_and_registry(depth):
    from crashcast.perception import registry
    from crashcast.perception.base import DepthEstimator, SpanDepthEstimator
    from crashcast.perception.models.depth_anything_v2 import DepthAnythingV2Config

    assert isinstance(depth, DepthEstimator) and not isinstance(depth, SpanDepthEstimator)
    assert depth.name == "depth-anything-v2"
    assert registry.config_class("depth", "depth-anything-v2") is DepthAnythingV2Config
    assert registry.requires("depth", DepthAnythingV2Config()) == ["torch", "transformers"]


def test_metric_depth_at_frame_size(depth):
    fs = frames(2)
    maps = depth.depth(fs, [None] * 2, [None] * 2)
    assert len(maps) == 2
    for m in maps:
        assert m.is_metric
        assert m.depth_m.shape == (45, 61) and m.depth_m.dtype == np.float32
        assert np.isfinite(m.depth_m).all()
        assert m.depth_m.min() >= 0.0 and m.depth_m.max() <= depth.max_depth == 80.0
        assert m.depth_m.std() > 1e-3  # a map, not a constant
    assert depth.depth([]) == []


def test_the_metric_head_runs_in_float32_under_autocast(depth):
    """Half precision reaches the backbone and neck only: the head's sigmoid x max_depth stays float32
    (in bfloat16 it would step 0.16-0.31 m at 40-80 m)."""
    import torch

    from crashcast.perception.models.depth_anything_v2 import pixel_values

    images = torch.from_numpy(np.stack(frames(1))).permute(0, 3, 1, 2)
    x = pixel_values(images, depth.preprocess, torch.float32)
    seen = {}
    def record(module, args, out) -> None:  # a hook returning a value would replace the output
        seen["neck"] = out[0].dtype

    hook = depth.model.neck.register_forward_hook(record)
    try:
        with torch.inference_mode(), torch.autocast("cpu", dtype=torch.bfloat16):
            pred = depth.model(pixel_values=x).predicted_depth
    finally:
        hook.remove()
    assert seen["neck"] == torch.bfloat16  # autocast was on
    assert pred.dtype == torch.float32
    assert next(depth.model.parameters()).dtype == torch.float32


def test_batch_equals_one_by_one(depth):
    fs = frames(3)
    batch = depth.depth(fs)
    single = [depth.depth([f])[0] for f in fs]
    for b, s in zip(batch, single, strict=True):
        np.testing.assert_allclose(b.depth_m, s.depth_m, rtol=1e-4, atol=1e-4)
    assert np.abs(batch[0].depth_m - batch[1].depth_m).max() > 1e-2  # a batch that mixed frames up would fail


def test_frames_of_different_sizes_keep_their_order(depth):
    a, b = frames(2)
    (c,) = frames(1, (60, 90))
    mixed = depth.depth([a, c, b])
    assert [m.depth_m.shape for m in mixed] == [(45, 61), (60, 90), (45, 61)]
    np.testing.assert_allclose(mixed[1].depth_m, depth.depth([c])[0].depth_m, rtol=1e-4, atol=1e-4)


def test_save_pretrained_round_trip(depth, tmp_path):
    """The random model and its processor saved in a folder load back (as a path, and as the default
    hub id inside a weights folder), with the processor's input size: the same depth."""
    import torch

    folder = tmp_path / "weights" / DEFAULT
    depth.model.save_pretrained(folder)
    dpt_processor(TINY_INPUT).save_pretrained(folder)
    fs = frames(2)
    want = depth.depth(fs)
    torch.manual_seed(123)
    for loaded in (build(str(folder), None), build(DEFAULT, None, weights_dir=str(tmp_path / "weights"))):
        assert loaded.preprocess == depth.preprocess
        for a, b in zip(loaded.depth(fs), want, strict=True):
            assert a.is_metric
            np.testing.assert_allclose(a.depth_m, b.depth_m, rtol=1e-5, atol=1e-5)


def test_relative_checkpoint_is_not_metric(torch_threads, tmp_path):
    """A relative model (depth_estimation_type: relative), saved without a processor: relative depth,
    Depth Anything V2's preprocessing."""
    import torch
    from transformers import DepthAnythingForDepthEstimation

    from crashcast.perception.models.depth_anything_v2 import Preprocess, architecture

    torch.manual_seed(0)
    DepthAnythingForDepthEstimation(architecture("tiny", "relative")).save_pretrained(tmp_path)
    loaded = build(str(tmp_path), None)
    assert loaded.preprocess == Preprocess() and not loaded.is_metric and loaded.max_depth is None
    (m,) = loaded.depth(frames(1, (42, 56)))
    assert not m.is_metric and m.depth_m.shape == (42, 56) and m.depth_m.dtype == np.float32
