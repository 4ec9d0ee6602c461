"""GPU smoke test: the `paper` preset at full size (YOLOv8x, Grounding DINO tiny, SAM2.1 hiera-large image
and video models) on CUDA in float16, batch 4, over 8 synthetic 1280x720 frames, end to end through
`perception.pipeline.perceive`.

Every model's weights are replaced by its architecture with random weights (`random:<arch>`, the name of
the checkpoint the preset names), so no file is needed and the boxes mean nothing; what is checked is
that the full-size models build, run in half precision on the GPU with batching, and hand valid results
from stage to stage (types, shapes, finite boxes inside the frame, tracker ids on every box, masks at the
kept frame). Skipped without a CUDA device (the CPU tests cover the same code with tiny models).
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

torch = pytest.importorskip("torch")

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

N_FRAMES = 8
FRAME_STEP = 3  # the paper preset's: every 3rd frame of the 30 fps grid
SIZE = (1280, 720)  # (width, height): the paper preset decodes to a 1280 long side


def random_weights(name: str) -> str:
    """`random:<arch>` for a checkpoint name: `yolov8x.pt` -> random:yolov8x,
    `IDEA-Research/grounding-dino-tiny` -> random:grounding-dino-tiny,
    `facebook/sam2.1-hiera-large` -> random:sam2.1-hiera-large (the modules' random architectures)."""
    if name.startswith("random:"):
        return name
    last = name.rstrip("/").rsplit("/", 1)[-1]
    return "random:" + (Path(last).stem if last.endswith(".pt") else last)


def _randomise(node: Any) -> Any:
    """Every `weights` entry in a (raw YAML) config section replaced by its random architecture."""
    if isinstance(node, dict):
        return {k: random_weights(v) if k == "weights" and isinstance(v, str) else _randomise(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_randomise(v) for v in node]
    return node


def smoke_config(tmp_path: Path, device: str = "cuda", dtype: str = "float16", batch_size: int = 4) -> Any:
    """The paper preset with random full-size weights and the given runtime."""
    from crashcast.config import load_config
    from crashcast.runtime import weights as W

    data = yaml.safe_load((resources.files("crashcast.configs") / "paper.yaml").read_text(encoding="utf-8"))
    data["perception"] = _randomise(data["perception"])
    path = tmp_path / "paper-random.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    cfg = load_config(path, [f"runtime.device={device}", f"runtime.dtype={dtype}", f"runtime.batch_size={batch_size}"])
    assert W.required(cfg) == [], "some model of the paper preset still names a weight file"
    return cfg


def synthetic_frames(n: int = N_FRAMES, step: int = FRAME_STEP, size: tuple[int, int] = SIZE) -> Any:
    """`n` frames of a synthetic lead-vehicle clip rendered at `size`, every `step`-th grid frame."""
    from crashcast.data.synthetic import Renderer, SynthConfig, clip_rng, make_scenario, scenario_for
    from crashcast.types import ClipFrames

    sc_cfg = SynthConfig(width=size[0], height=size[1])
    rng = clip_rng(0, 0)
    scenario = make_scenario(scenario_for(0), rng, sc_cfg)
    renderer = Renderer(sc_cfg, rng)
    dt = 1.0 / sc_cfg.fps
    s_ego = np.concatenate([[0.0], np.cumsum(scenario.ego_speed[:-1] * dt)])
    ks = [step * i for i in range(n)]
    frames = np.stack([renderer.frame(scenario, k, float(s_ego[k]))[0] for k in ks])
    return ClipFrames(clip_id="gpu-smoke", frames=frames, times_s=np.array(ks) * dt, fps=sc_cfg.fps,
                      source_size=size, source_fps=sc_cfg.fps, duration_s=len(scenario.ego_speed) * dt, step=step)


def check_perception(result: Any, clip: Any) -> int:
    """The invariants every perception result holds; returns the number of boxes seen."""
    from crashcast.types import CLASS_NAMES, ClipPerception, Detections

    w, h = clip.size
    assert isinstance(result, ClipPerception)
    assert result.frames_processed == len(clip.frames) == len(result.detections)
    np.testing.assert_allclose(result.times_s, clip.times_s)
    assert result.backends["detector"] == "fusion" and result.backends["segmenter"] == "sam2"
    assert result.backends["tracker"] == "sam2-video"
    seen_ids: set[int] = set()
    boxes = 0
    for i, det in enumerate(result.detections):
        n = len(det)
        boxes += n
        assert isinstance(det, Detections)
        assert det.xyxy.shape == (n, 4) and np.isfinite(det.xyxy).all()
        x0, y0, x1, y1 = det.xyxy.T
        assert (x0 >= -0.5).all() and (y0 >= -0.5).all() and (x1 <= w + 0.5).all() and (y1 <= h + 0.5).all()
        assert (x0 <= x1).all() and (y0 <= y1).all()
        assert det.confidence.shape == (n,) and np.isfinite(det.confidence).all()
        assert ((det.confidence >= 0) & (det.confidence <= 1)).all()
        assert set(det.class_name) <= set(CLASS_NAMES)
        assert det.tracker_id is not None and det.tracker_id.dtype == np.int64 and det.tracker_id.shape == (n,)
        assert len(set(det.tracker_id.tolist())) == n, f"frame {i}: one tracker id twice"
        seen_ids |= set(det.tracker_id.tolist())
        if i == len(result.detections) - 1 and n:  # the kept frame: full-frame masks
            assert det.mask is not None and det.mask.shape == (n, h, w) and det.mask.dtype == bool
    for track in result.tracks:
        assert track.track_id in seen_ids and track.class_name in CLASS_NAMES
        assert np.isfinite(track.box_xyxy).all() and track.box_xyxy.shape == (len(track.frame_index), 4)
        assert ((track.frame_index >= 0) & (track.frame_index < len(clip.frames))).all()
    assert {t.track_id for t in result.tracks} == seen_ids
    return boxes


def test_paper_preset_full_size_on_the_gpu(tmp_path):
    pytest.importorskip("ultralytics")
    pytest.importorskip("transformers")
    from crashcast.perception.bundle import Backends
    from crashcast.perception.pipeline import perceive

    cfg = smoke_config(tmp_path)
    clip = synthetic_frames()
    backends = Backends.build(cfg.perception, cfg.runtime)
    result = perceive(clip, cfg.perception, backends, keep_times=[float(clip.times_s[-1])],
                      batch_size=cfg.runtime.batch_size)
    boxes = check_perception(result, clip)
    # the transformers models sit on the GPU in half precision
    gdino = next(d for d in backends.detector.detectors if d.name == "grounding-dino")
    for model in (gdino.model, backends.segmenter.model):
        p = next(model.parameters())
        assert p.is_cuda and p.dtype == torch.float16
    assert torch.cuda.max_memory_allocated() > 0
    print(f"gpu smoke: {boxes} boxes over {len(clip.frames)} frames; stage seconds "
          f"{ {k: round(v, 2) for k, v in result.stage_seconds.items()} }")
