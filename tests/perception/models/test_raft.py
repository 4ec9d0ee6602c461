"""RAFT flow backend with a randomly initialised torchvision `raft_small` (its flow is meaningless; its
types, shapes, units, batching and weight loading are not), plus the exact geometry that maps frames
to RAFT's input and its flow back to frame pixels."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from scenes import scene

from crashcast.config import RuntimeConfig
from crashcast.perception.spec import BuildContext


def test_module_imports_without_torch():
    code = "import sys; import crashcast.perception.models.raft; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_weights_table_matches_torchvision():
    from torchvision.models import optical_flow

    from crashcast.perception.models.raft import DEFAULT_WEIGHTS, RAFT_FILES, SIZE_MB, URL_BASE

    for model, enum in (("raft_large", optical_flow.Raft_Large_Weights), ("raft_small", optical_flow.Raft_Small_Weights)):
        assert set(RAFT_FILES[model]) == set(enum.__members__) - {"DEFAULT"}
        for name, file in RAFT_FILES[model].items():
            assert enum[name].url == URL_BASE + file
            assert enum[name].meta["_file_size"] == pytest.approx(SIZE_MB[model], abs=0.05)
        assert enum.DEFAULT is enum[DEFAULT_WEIGHTS[model]]


def test_config_and_weight_files(tmp_path):
    from pydantic import ValidationError

    from crashcast.perception.models.raft import RaftConfig, raft_weights

    (w,) = raft_weights(RaftConfig())
    assert (w.name, w.source, w.licence, w.size_mb) == ("raft_large_C_T_SKHT_V2-ff5fadd5.pth", "url", "BSD-3-Clause", 20.1)
    assert w.url == "https://download.pytorch.org/models/raft_large_C_T_SKHT_V2-ff5fadd5.pth"
    (w,) = raft_weights(RaftConfig(model="raft_small"))
    assert w.name == "raft_small_C_T_V2-01064c6d.pth"
    (w,) = raft_weights(RaftConfig(weights="C_T_SKHT_K_V2"))
    assert w.name == "raft_large_C_T_SKHT_K_V2-b5c70766.pth"
    assert raft_weights(RaftConfig(weights="random:")) == []
    assert raft_weights(RaftConfig(model="raft_small", weights="random:raft_small")) == []
    ckpt = tmp_path / "raft.pth"
    ckpt.write_bytes(b"x")
    assert raft_weights(RaftConfig(weights=str(ckpt))) == []
    (w,) = raft_weights(RaftConfig(weights=str(tmp_path / "missing.pth")))
    assert w.source == "local"
    for bad in (dict(model="raft_small", weights="C_T_SKHT_K_V2"), dict(model="raft_small", weights="random:raft_large"),
                dict(num_flow_updates=0), dict(size_mode="crop"), dict(iterations=12)):
        with pytest.raises(ValidationError):
            RaftConfig(**bad)


# ----------------------------------------------------------------------------- geometry


def test_plan_input():
    from crashcast.perception.models.raft import InputGeometry, plan_input

    assert plan_input(720, 1280) == InputGeometry((720, 1280), (720, 1280), (720, 1280), 0, 0)
    assert plan_input(721, 1279) == InputGeometry((721, 1279), (721, 1279), (728, 1280), 3, 0)
    assert plan_input(48, 64) == InputGeometry((48, 64), (48, 64), (128, 128), 40, 32)  # RAFT's 128-pixel minimum
    assert plan_input(721, 1279, "resize") == InputGeometry((721, 1279), (720, 1280), (720, 1280))
    assert plan_input(720, 1280, "pad", 0.5) == InputGeometry((720, 1280), (360, 640), (360, 640), 0, 0)
    assert plan_input(725, 1280, "resize", 0.5) == InputGeometry((725, 1280), (360, 640), (360, 640))
    assert plan_input(48, 64, "resize") == InputGeometry((48, 64), (128, 128), (128, 128))


def test_pad_input_holds_the_frame_in_minus_one_to_one():
    import torch

    from crashcast.perception.models.raft import plan_input, to_network

    frame = scene(0, (45, 61))
    geom = plan_input(45, 61)
    x = to_network(torch.from_numpy(frame).permute(2, 0, 1)[None], geom)[0]
    assert tuple(x.shape) == (3, *geom.padded) == (3, 128, 128)
    inner = x[:, geom.top : geom.top + 45, geom.left : geom.left + 61].permute(1, 2, 0).numpy()
    np.testing.assert_allclose(inner, frame / 127.5 - 1.0, atol=1e-6)
    assert float(x.min()) >= -1.0 and float(x.max()) <= 1.0
    # the padding repeats the frame's edge pixels
    np.testing.assert_array_equal(x[:, 0, geom.left : geom.left + 61], x[:, geom.top, geom.left : geom.left + 61])
    np.testing.assert_array_equal(x[:, geom.top : geom.top + 45, -1], x[:, geom.top : geom.top + 45, geom.left + 60])


def affine_flow(h: int, w: int, coef: np.ndarray, x_of=None, y_of=None) -> np.ndarray:
    """(2, h, w) flow u, v = coef @ (1, x, y) at pixel centres mapped by x_of / y_of (identity by default)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    x = x if x_of is None else x_of(x)
    y = y if y_of is None else y_of(y)
    return np.stack([coef[k, 0] + coef[k, 1] * x + coef[k, 2] * y for k in range(2)])


@pytest.mark.parametrize("frame,mode,scale", [((48, 64), "resize", 1.0), ((70, 100), "resize", 0.5),
                                              ((251, 330), "pad", 0.5), ((45, 61), "pad", 1.0)])
def test_flow_back_to_frame_pixels_is_exact(frame, mode, scale):
    """A motion field affine in frame pixels, as RAFT would see it in its input's pixels (sampled at
    the input pixels' centres, displacements scaled by the resize), maps back to the frame's field."""
    import torch

    from crashcast.perception.models.raft import plan_input, to_frame_units

    h, w = frame
    geom = plan_input(h, w, mode, scale)
    (sh, sw), (ph, pw) = geom.scaled, geom.padded
    coef = np.array([[1.5, 0.02, -0.01], [-0.7, 0.015, 0.03]])
    net = affine_flow(sh, sw, coef, lambda x: (x + 0.5) * w / sw - 0.5, lambda y: (y + 0.5) * h / sh - 0.5)
    net *= np.array([sw / w, sh / h])[:, None, None]
    padded = np.full((1, 2, ph, pw), 1e3)  # padding holds garbage: it must be cropped off
    padded[0, :, geom.top : geom.top + sh, geom.left : geom.left + sw] = net
    back = to_frame_units(torch.from_numpy(padded).float(), geom)[0].numpy()
    assert back.shape == (2, h, w)
    want = affine_flow(h, w, coef)
    m = int(np.ceil(max(w / sw, h / sh)))  # bilinear resizing clamps at the border: exact inside it
    np.testing.assert_allclose(back[:, m : h - m, m : w - m], want[:, m : h - m, m : w - m], atol=2e-4)
    # a translation is exact everywhere
    shift = np.zeros((1, 2, ph, pw), np.float32)
    shift[0, 0], shift[0, 1] = 3.0 * sw / w, -2.0 * sh / h
    back = to_frame_units(torch.from_numpy(shift), geom)[0].numpy()
    np.testing.assert_allclose(back[0], 3.0, rtol=1e-6)
    np.testing.assert_allclose(back[1], -2.0, rtol=1e-6)


# ----------------------------------------------------------------------------- the backend


def build(**settings):
    from crashcast.perception import registry
    from crashcast.perception.models.raft import RaftConfig

    runtime = RuntimeConfig(device="cpu", **settings.pop("runtime", {}))
    cfg = RaftConfig(**{"model": "raft_small", "weights": "random:", "num_flow_updates": 3, **settings})
    return registry.create("flow", cfg, BuildContext(runtime=runtime))


@pytest.fixture(scope="module")
def raft(torch_threads):
    import torch

    torch.manual_seed(0)
    return build()


def pairs(n: int, size: tuple[int, int] = (45, 61)) -> tuple[list[np.ndarray], list[np.ndarray]]:
    prev = [scene(10 + i, size) for i in range(n)]
    cur = [np.roll(p, (1, 2), axis=(0, 1)) for p in prev]
    return prev, cur


def test_protocol_and_registry(raft):
    from crashcast.perception import registry
    from crashcast.perception.base import FlowEstimator
    from crashcast.perception.models.raft import RaftConfig

    assert isinstance(raft, FlowEstimator)
    assert raft.name == "raft"
    assert registry.config_class("flow", "raft") is RaftConfig
    assert registry.requires("flow", registry.config_class("flow", "raft")()) == ["torch", "torchvision"]


def test_flow_shape_dtype_and_frame_size(raft):
    prev, cur = pairs(2)
    flows = raft.flow(prev, cur)
    assert len(flows) == 2
    for f in flows:
        assert f.uv.shape == (45, 61, 2) and f.uv.dtype == np.float32
        assert np.isfinite(f.uv).all() and np.abs(f.uv).max() > 0
        before = f.uv.copy()
        f.uv /= 3  # the pipeline turns it into pixels per frame in place
        np.testing.assert_allclose(f.uv * 3, before, rtol=1e-6)
    assert raft.flow([], []) == []


def test_batch_equals_one_by_one(raft):
    prev, cur = pairs(3)
    batch = raft.flow(prev, cur)
    single = [raft.flow([p], [c])[0] for p, c in zip(prev, cur, strict=True)]
    for b, s in zip(batch, single, strict=True):
        np.testing.assert_allclose(b.uv, s.uv, rtol=1e-4, atol=1e-4)
    assert not np.allclose(batch[0].uv, batch[1].uv, atol=1e-2)  # a batch that mixed pairs up would fail


def test_pairs_of_different_sizes_keep_their_order(raft):
    (p1, p2), (c1, c2) = pairs(2, (45, 61))
    (q,), (d,) = pairs(1, (44, 72))
    mixed = raft.flow([p1, q, p2], [c1, d, c2])
    assert [f.uv.shape for f in mixed] == [(45, 61, 2), (44, 72, 2), (45, 61, 2)]
    np.testing.assert_allclose(mixed[1].uv, raft.flow([q], [d])[0].uv, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(mixed[2].uv, raft.flow([p2], [c2])[0].uv, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="different sizes"):
        raft.flow([p1], [d])


def test_resize_mode_and_scale_keep_the_frame_size(torch_threads):
    import torch

    torch.manual_seed(0)
    prev, cur = pairs(1, (150, 203))
    for settings in (dict(size_mode="resize"), dict(scale=0.5), dict(size_mode="resize", scale=0.75)):
        (f,) = build(**settings).flow(prev, cur)
        assert f.uv.shape == (150, 203, 2) and f.uv.dtype == np.float32 and np.isfinite(f.uv).all()


def test_checkpoint_round_trip(raft, tmp_path):
    """The random model's weights saved as a state dict load back through the config's path (and as a
    file name inside the weights folder): the same flow."""
    import torch

    from crashcast.perception.models.raft import read_state_dict

    path = tmp_path / "my_raft.pth"
    torch.save(raft.model.state_dict(), path)
    prev, cur = pairs(2)
    want = raft.flow(prev, cur)
    torch.manual_seed(123)  # a different random init underneath: the checkpoint must replace it
    for loaded in (build(weights=str(path)), build(weights="my_raft.pth", runtime=dict(weights_dir=str(tmp_path)))):
        for a, b in zip(loaded.flow(prev, cur), want, strict=True):
            np.testing.assert_array_equal(a.uv, b.uv)
    # a wrapped DataParallel checkpoint reads as the same state dict
    wrapped = tmp_path / "wrapped.pth"
    torch.save({"model": {"module." + k: v for k, v in raft.model.state_dict().items()}}, wrapped)
    assert read_state_dict(str(wrapped)).keys() == raft.model.state_dict().keys()


def test_bad_checkpoints(tmp_path):
    import torch
    from torchvision.models.optical_flow import raft_large

    from crashcast.errors import ConfigError, ModelError

    large = tmp_path / "large.pth"
    torch.save(raft_large(weights=None).state_dict(), large)
    with pytest.raises(ModelError, match="does not fit"):
        build(weights=str(large))  # raft_small
    with pytest.raises(ConfigError, match="does not exist"):
        build(weights=str(tmp_path / "missing.pth"))
    with pytest.raises(ConfigError, match="not in the weights folder"):
        build(weights="default", runtime=dict(weights_dir=str(tmp_path)))


def test_default_weights_from_torch_hub_cache_offline(offline_caches, raft):
    """`default` reads torchvision's file from torch's hub cache, without a network call; offline and
    missing, the error says what to fetch and where from."""
    import torch

    from crashcast.runtime.weights import WeightsUnavailable, torch_hub_checkpoints

    with pytest.raises(WeightsUnavailable, match=r"raft_small_C_T_V2-01064c6d\.pth") as e:
        build(weights="default")
    assert "https://download.pytorch.org/models/raft_small_C_T_V2-01064c6d.pth" in str(e.value)
    cache = torch_hub_checkpoints()
    cache.mkdir(parents=True)
    torch.save(raft.model.state_dict(), cache / "raft_small_C_T_V2-01064c6d.pth")
    prev, cur = pairs(1)
    np.testing.assert_array_equal(build(weights="default").flow(prev, cur)[0].uv, raft.flow(prev, cur)[0].uv)
