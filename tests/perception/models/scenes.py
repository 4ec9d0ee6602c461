"""Test frames for the detector backends (imported by their tests: pytest puts this folder on sys.path)."""

from __future__ import annotations

import numpy as np


def scene(seed: int, size: tuple[int, int] = (360, 640)) -> np.ndarray:
    """A noisy RGB frame with a few solid rectangles (something for a random network to respond to)."""
    rng = np.random.default_rng(seed)
    h, w = size
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    for _ in range(4):
        x0, y0 = rng.integers(0, w - 40), rng.integers(0, h - 40)
        img[y0 : y0 + rng.integers(20, h // 2), x0 : x0 + rng.integers(20, w // 2)] = rng.integers(0, 256, 3)
    return img


def build_detector(config_cls, **settings):
    """A detector backend built through the registry on the CPU, `random:tiny` unless told otherwise."""
    from crashcast.config import RuntimeConfig
    from crashcast.perception import registry
    from crashcast.perception.spec import BuildContext

    cfg = config_cls(**{"weights": "random:tiny", **settings})
    return registry.create("detector", cfg, BuildContext(runtime=RuntimeConfig(device="cpu")))


def assert_batch_equals_one_by_one(detector, frames) -> None:
    """A batch of frames gives each frame the detections it gets alone (float sums differ a little
    with batch size and threads); the frames must give different boxes, so a batch that mixed frames
    up would fail."""
    batch = detector.detect(frames, [])
    single = [detector.detect([f], [])[0] for f in frames]
    for b, s in zip(batch, single, strict=True):
        assert len(b) == len(s)
        np.testing.assert_allclose(b.xyxy, s.xyxy, rtol=1e-4, atol=1e-2)
        np.testing.assert_allclose(b.confidence, s.confidence, atol=1e-4)
        assert list(b.class_name) == list(s.class_name)
    assert len({tuple(np.round(d.xyxy, 1).ravel()) for d in batch}) == len(frames)
