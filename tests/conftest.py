"""Shared fixtures: small videos written on the fly, synthetic clips, the real clips in ../shared."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


def cli_exit_code(argv: list) -> int:
    """Run `crashcast ARGV` in this process; its exit code (0 when it returns normally)."""
    from crashcast.cli import main

    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def pytest_configure(config) -> None:
    """CPU kernels for a CUDA-only torchvision next to a CPU torch (tests/torchvision_cpu_ops.py), before
    any test imports it; with a matching pair (torch 2.14.1 + torchvision 0.29.1, a CUDA machine) nothing.
    CRASHCAST_OFFLINE=1 for the whole session (child processes too): `--backend auto` never downloads
    weights in a test, except where a test unsets it to download from its own local server.
    Ctrl-C raises KeyboardInterrupt even when the suite was started in the background by a shell
    without job control (`nohup pytest &` starts it with SIGINT ignored, and Python then installs no
    handler): the Ctrl-C tests test crashcast, not how the suite was launched."""
    import os
    import signal
    import sys

    os.environ["CRASHCAST_OFFLINE"] = "1"
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)

    sys.path.insert(0, str(Path(__file__).parent))
    import torchvision_cpu_ops

    torchvision_cpu_ops.install()


def write_video(path: Path, frames: list[np.ndarray], times_s: list[float], codec: str = "libx264") -> Path:
    """Write RGB frames with explicit presentation times (ms precision), so VFR files can be made."""
    return write_video_as(path, frames, times_s, codec=codec)


def level_frames(n: int, size: tuple[int, int] = (64, 48), step: int = 8) -> list[np.ndarray]:
    """Uniform grey frames whose level encodes their index: level = 10 + step * i."""
    w, h = size
    return [np.full((h, w, 3), 10 + step * i, np.uint8) for i in range(n)]


def frame_index_from_level(img: np.ndarray, step: int = 8) -> int:
    return round((float(img.mean()) - 10) / step)


@pytest.fixture
def offline_caches(tmp_path, monkeypatch) -> Path:
    """Every model cache and settings folder inside tmp_path (Hugging Face, ultralytics, torch), no
    weights folder, and no network: a socket that tries to connect fails the code under test."""
    import socket

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "CRASHCAST_WEIGHTS_DIR", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))

    def no_network(*args, **kwargs):
        raise OSError("network disabled in tests")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    monkeypatch.setattr(socket, "create_connection", no_network)
    monkeypatch.setattr(socket, "getaddrinfo", no_network)
    return tmp_path


@pytest.fixture(scope="session")
def tiny_cache(tmp_path_factory) -> Path:
    """CRASHCAST_CACHE_DIR for the session, so the `random:tiny` VLM is built once, in a temporary folder."""
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("crashcast-cache")
    mp.setenv("CRASHCAST_CACHE_DIR", str(root))
    yield root
    mp.undo()


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if not (SHARED_REAL / "annotations.csv").exists():
        pytest.skip(f"real clips not found at {SHARED_REAL} (../shared/data/real is absent in this checkout)")
    return SHARED_REAL


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory) -> Path:
    """Eight synthetic clips (every scenario type at least once) rendered once per test session."""
    from crashcast.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth_small")
    generate(8, out, seed=7, workers=2)
    return out


@pytest.fixture(scope="session")
def synth_medium(tmp_path_factory) -> Path:
    """Fourteen synthetic clips (each scenario twice), seed 11, for accuracy tests against truth."""
    from crashcast.data.synthetic import generate

    out = tmp_path_factory.mktemp("synth_medium")
    generate(14, out, seed=11, workers=2)
    return out


def write_video_as(
    path: Path,
    frames: list[np.ndarray],
    times_s: list[float],
    *,
    rate: int = 30,
    display_rotation_ccw: float | None = None,
    display_hflip: bool = False,
    metadata: dict[str, str] | None = None,
    container_format: str | None = None,
    container_options: dict[str, str] | None = None,
    keyframe_interval: int | None = None,
    codec: str = "libx264",
) -> Path:
    """Write RGB frames (`codec`, libx264 by default, at ms timestamps), with optionally: the nominal frame `rate` (the
    duration containers give a frame when they store none, e.g. the last one); a display matrix that
    turns the stored frames by `display_rotation_ccw` degrees counter-clockwise for display, then
    mirrors them left-right with `display_hflip` (PyAV's `VideoStream.set_display_rotation`, whose
    angle is FFmpeg's `av_display_rotation_get` convention; MP4 stores it as the track matrix);
    stream `metadata` (e.g. an old-style `rotate` tag); a container format and options (e.g.
    {"movflags": "faststart"}: the index before the data, so a cut file still opens); and a fixed
    keyframe interval in frames."""
    import av

    container = av.open(str(path), mode="w", format=container_format, options=container_options or {})
    stream = container.add_stream(codec, rate=rate)
    stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, 1000)
    stream.codec_context.time_base = Fraction(1, 1000)
    options = {"crf": "1", "preset": "ultrafast"} if codec == "libx264" else {}
    if keyframe_interval:
        stream.codec_context.gop_size = keyframe_interval
        options["x264-params"] = f"keyint={keyframe_interval}:min-keyint={keyframe_interval}:scenecut=0"
    stream.options = options
    if display_rotation_ccw is not None or display_hflip:
        stream.set_display_rotation(display_rotation_ccw or 0, hflip=display_hflip)
    stream.metadata.update(metadata or {})
    for img, t in zip(frames, times_s, strict=True):
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(img), format="rgb24")
        frame.pts = round(t * 1000)
        frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path
