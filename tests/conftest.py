"""Shared fixtures: small videos written on the fly, synthetic clips, the real clips in ../shared."""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REAL = REPO.parent / "shared" / "data" / "real"


def write_video(path: Path, frames: list[np.ndarray], times_s: list[float], codec: str = "libx264") -> Path:
    """Write RGB frames with explicit presentation times (ms precision), so VFR files can be made."""
    import av

    container = av.open(str(path), mode="w")
    stream = container.add_stream(codec, rate=30)
    stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
    stream.pix_fmt = "yuv420p"
    stream.time_base = Fraction(1, 1000)
    stream.codec_context.time_base = Fraction(1, 1000)
    if codec == "libx264":
        stream.options = {"crf": "1", "preset": "ultrafast"}
    for img, t in zip(frames, times_s, strict=True):
        frame = av.VideoFrame.from_ndarray(img, format="rgb24")
        frame.pts = round(t * 1000)
        frame.time_base = Fraction(1, 1000)
        for packet in stream.encode(frame):
            container.mux(packet)
    for packet in stream.encode():
        container.mux(packet)
    container.close()
    return path


def level_frames(n: int, size: tuple[int, int] = (64, 48), step: int = 8) -> list[np.ndarray]:
    """Uniform grey frames whose level encodes their index: level = 10 + step * i."""
    w, h = size
    return [np.full((h, w, 3), 10 + step * i, np.uint8) for i in range(n)]


def frame_index_from_level(img: np.ndarray, step: int = 8) -> int:
    return round((float(img.mean()) - 10) / step)


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
