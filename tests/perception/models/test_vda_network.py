"""Video Depth Anything network: checkpoint layout (strict load of all four published variants) and
numerical equality with the official vits network (../shared/reference/video_depth_anything)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from crashcast.perception.models.video_depth_anything import (  # noqa: E402
    VARIANTS,
    CheckpointMismatchError,
    VideoDepthAnything,
    load_checkpoint,
)

REPO = Path(__file__).resolve().parents[3]
REFERENCE = REPO.parent / "shared" / "reference" / "video_depth_anything"
MANIFEST = REFERENCE / "state_dict_manifest.json"
REFERENCE_OUTPUT = REFERENCE / "vits_reference_output.npy"
TOLERANCE = 1e-4  # relative error (see `relative_errors`)


@pytest.fixture(scope="module")
def manifest() -> dict:
    if not MANIFEST.exists():
        pytest.skip(f"reference manifest not found at {MANIFEST} (../shared/reference is absent in this checkout)")
    return json.loads(MANIFEST.read_text())


pytestmark = pytest.mark.usefixtures("two_torch_threads")


def zero_state(shapes: dict[str, list[int]]) -> dict:
    """Zeros of every manifest shape, as stride-0 views of one element (tiny when torch.save'd)."""
    return {k: torch.zeros(()).expand(shape) for k, shape in shapes.items()}


def relative_errors(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    """(max |out - ref| / max |ref|, ||out - ref||_2 / ||ref||_2)."""
    diff = np.abs(out.astype(np.float64) - ref)
    return float(diff.max() / np.abs(ref).max()), float(np.linalg.norm(diff) / np.linalg.norm(ref))


def test_variants_mirror_the_manifest(manifest):
    assert set(VARIANTS) == set(manifest)
    for name, entry in manifest.items():
        cfg = VARIANTS[name]
        assert {**entry["config"], "out_channels": tuple(entry["config"]["out_channels"])} == vars(cfg), name


def test_reference_output_vits(manifest):
    if not REFERENCE_OUTPUT.exists():
        pytest.skip(f"reference output not found at {REFERENCE_OUTPUT}")
    entry = manifest["video_depth_anything_vits"]
    net = VideoDepthAnything(**entry["config"]).eval()
    state = net.state_dict()
    # the fill depends on the sorted key order: it must be the official one, key for key
    assert sorted(state) == sorted(entry["state_dict"])
    for i, key in enumerate(sorted(state)):
        if state[key].is_floating_point():
            state[key] = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(i)) * 0.05
    net.load_state_dict(state, strict=True)
    x = torch.randn(1, 4, 3, 126, 224, generator=torch.Generator().manual_seed(1234))
    with torch.no_grad():
        out = net(x).numpy()
    ref = np.load(REFERENCE_OUTPUT)
    assert out.shape == ref.shape == tuple(entry["forward_io"]["output"])
    max_rel, l2_rel = relative_errors(out, ref)
    assert max_rel < TOLERANCE and l2_rel < TOLERANCE, (max_rel, l2_rel)
    assert abs(float(out.mean()) - 0.0195) < 5e-4


@pytest.mark.parametrize("name", list(VARIANTS))
def test_manifest_state_dict_loads_strictly(manifest, name, tmp_path):
    entry = manifest[name]
    path = tmp_path / f"{name}.pth"
    torch.save(zero_state(entry["state_dict"]), path)
    net = load_checkpoint(path)  # variant from the file name, strict=True
    assert not net.training and net.metric == entry["config"]["metric"]
    assert sum(p.numel() for p in net.parameters()) == entry["num_params"]
    assert {k: list(v.shape) for k, v in net.state_dict().items()} == entry["state_dict"]
    assert all(not p.any() for p in net.parameters())
    with torch.no_grad():
        out = net(torch.zeros(entry["forward_io"]["input"]))
    assert list(out.shape) == entry["forward_io"]["output"]


def test_safetensors_checkpoint(manifest, tmp_path):
    from safetensors.torch import save_file

    entry = manifest["metric_video_depth_anything_vits"]
    path = tmp_path / "vda_small.safetensors"
    save_file({k: torch.full(s, 0.5) for k, s in entry["state_dict"].items()}, str(path))
    net = VideoDepthAnything(**entry["config"]).load_checkpoint(path)
    assert net.metric and net.output_kind.startswith("metric")
    assert all(bool((p == 0.5).all()) for p in net.parameters())


def test_wrong_keys_name_the_file_and_keys(manifest, tmp_path):
    shapes = dict(manifest["video_depth_anything_vits"]["state_dict"])
    del shapes["head.scratch.output_conv1.weight"]
    shapes["head.scratch.output_conv3.weight"] = [1, 32, 1, 1]
    shapes["pretrained.norm.weight"] = [385]
    path = tmp_path / "broken_checkpoint.pth"
    torch.save(zero_state(shapes), path)
    with pytest.raises(CheckpointMismatchError) as err:
        VideoDepthAnything.from_config("video_depth_anything_vits").load_checkpoint(path)
    message = str(err.value)
    assert str(path) in message
    assert "missing keys (1): head.scratch.output_conv1.weight" in message
    assert "unexpected keys (1): head.scratch.output_conv3.weight" in message
    assert "pretrained.norm.weight (385,) vs (384,)" in message
    # a vits checkpoint into a vitb network: named too
    torch.save(zero_state(manifest["video_depth_anything_vits"]["state_dict"]), path)
    with pytest.raises(CheckpointMismatchError, match=r"broken_checkpoint\.pth.*shape mismatches"):
        VideoDepthAnything.from_config("video_depth_anything_vitb").load_checkpoint(path)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.pth"):
        load_checkpoint(tmp_path / "nowhere.pth", "video_depth_anything_vits")


def test_input_checks():
    net = VideoDepthAnything.from_config({"encoder": "vits", "features": 64, "out_channels": [48, 96, 192, 384],
                                          "num_frames": 2})
    with pytest.raises(ValueError, match="multiple of the patch size"):
        net(torch.zeros(1, 2, 3, 28, 30))
    with pytest.raises(ValueError, match="exceed num_frames"):
        net(torch.zeros(1, 3, 3, 28, 28))
    with pytest.raises(ValueError, match="unknown variant"):
        VideoDepthAnything.from_config("video_depth_anything_vitx")


def test_package_import_leaves_torch_alone():
    code = ("import sys, crashcast, crashcast.perception.models.video_depth_anything as v; "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
