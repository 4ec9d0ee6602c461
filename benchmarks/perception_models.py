"""Speed of crashcast's model perception backends: each stage alone, then the whole path end to end.

The `paper` preset (YOLOv8x + Grounding DINO fused, SAM2.1-large image masks, SAM2.1-large video
tracking, metric Video Depth Anything Small over the span, RAFT large flow) is built with every model
weight replaced by its full-size `random:<arch>` architecture (speed does not depend on the weights,
and no download is needed), from a small table (`full_size_random`): yolov8x.pt -> random:yolov8x,
IDEA-Research/grounding-dino-tiny -> random:grounding-dino-tiny, facebook/sam2.1-hiera-large ->
random:sam2.1-hiera-large, depth-anything/Metric-Video-Depth-Anything-Small -> random:metric-vits,
RAFT `default` -> random:raft_large, Depth-Anything-V2-Metric-Outdoor-Small-hf -> random:small. Input:
N frames at 1280x720, synthetic dashcam frames (crashcast.data.synthetic) or a real clip (--video),
every `frame_step`-th frame of the 30 fps grid as extraction takes them; on CUDA N defaults to one
clip's perceived frames (66 for `paper`: the windows' 6 s and 0.5 s of warm-up at 10 Hz). Each stage
alone gets what the pipeline hands it (the perceived rows: the whole frame with sky_margin null).

e2e (run first) is the real path: `perceive` over the frames, as extraction calls it. Then each stage
alone (after a warm-up call, with torch.cuda.synchronize() around the timed calls on CUDA),
per-frame stages in batches of --batch-size, RAFT on batches of frame pairs, the span tracker and
Video Depth Anything over the whole span (VDA runs 32-frame chunks whatever the span: its row gives
ms per network frame and per perceived frame amortised over one clip's span). The goal is >= 30
perceived frames per second end to end on one H100-class GPU in float16/bfloat16 (runtime.dtype).
Last, the frames processed per clip: crashcast perceives once per clip over the windows' union,
every 3rd frame; the paper's loop (Algorithm 1) perceives each of the three windows on its own,
every frame at 30 fps.

Random weights change what the models find, not what they cost per box and per object, so the
amount of work is pinned to a plausible scene: random detectors find arbitrary boxes (hundreds), so
the SAM2 stages get --boxes fixed boxes per frame (8), and the end-to-end run replaces the detector's
output with the same boxes after running the detector in full (its time counts); random SAM2 masks
never match the detections, so every frame's boxes would start new objects, and the tracker's
max_objects is set to --boxes (a real scene keeps its objects). --boxes 0 and --max-objects 0 keep
the random models' own behaviour.

    # this CPU (2 cores): e2e, flow and depth on 2 frames, VDA on one 6-frame chunk: ~3-4 min
    python benchmarks/perception_models.py --cpu-nms-shim --stages flow,depth,e2e --frames 2 --warmup 0 --depth-chunk 6
    # a GPU: everything over one clip's 66 frames, within --time-budget (540 s)
    python benchmarks/perception_models.py --device cuda --dtype float16 --repeat 3 --json out.json

See benchmarks/README.md for the figures measured so far.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from machine import Meter, cpu_name, load_text, proc_memory  # benchmarks/machine.py (on sys.path)

ROOT = Path(__file__).resolve().parents[1]
GOAL_FPS = 30.0  # perceived frames per second, end to end, one H100-class GPU, float16/bfloat16
WIDTH, HEIGHT = 1280, 720
STAGES = ("yolo", "dino", "fusion", "sam2", "sam2-video", "flow", "context", "depth", "e2e")
ALIASES = {"grounding-dino": "dino", "detector": "fusion", "segmenter": "sam2", "tracker": "sam2-video",
           "track": "sam2-video", "end-to-end": "e2e", "all": ",".join(STAGES)}
SUB_DETECTORS = {"yolo": "yolo", "dino": "grounding-dino"}

log = logging.getLogger("perception_models")


# ---------------------------------------------------------------- torchvision on a CPU-only torch


def ensure_torchvision(shim: bool) -> None:
    """Import torchvision; where its compiled operators do not load (a CUDA build of torchvision next
    to a CPU-only torch: "operator torchvision::nms does not exist"), install the CPU NMS shim of the
    tests, but only when asked to (--cpu-nms-shim): product code never patches torchvision."""
    try:
        import torchvision  # noqa: F401
        return
    except ImportError:
        return  # not installed: building a model backend says what is missing
    except RuntimeError as e:
        if "torchvision::nms does not exist" not in str(e):
            raise
    if not shim:
        print("torchvision cannot load its compiled operators here (RuntimeError: operator torchvision::nms "
              "does not exist: a CUDA build of torchvision next to a CPU-only torch; see docs/INSTALL.md, "
              "'The torchvision trap', and `crashcast doctor`).\nInstall a matching torchvision, or pass "
              "--cpu-nms-shim to let this benchmark register the CPU NMS kernels of tests/torchvision_cpu_ops.py.")
        sys.exit(2)
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]  # the failed import left half a package behind
    sys.path.insert(0, str(ROOT / "tests"))
    import torchvision_cpu_ops

    torchvision_cpu_ops.install()
    print("note: --cpu-nms-shim: torchvision's compiled operators do not load here; the CPU NMS kernels of "
          "tests/torchvision_cpu_ops.py are registered for this run")


# ---------------------------------------------------------------- configuration and input


#: hub checkpoints whose random architecture is not their repository name: (backend, weights) -> random:<arch>
RANDOM_FORMS: dict[tuple[str, str], str] = {
    ("video-depth-anything", "depth-anything/Metric-Video-Depth-Anything-Small"): "random:metric-vits",
    ("video-depth-anything", "depth-anything/Metric-Video-Depth-Anything-Base"): "random:metric-vitb",
    ("video-depth-anything", "depth-anything/Metric-Video-Depth-Anything-Large"): "random:metric-vitl",
    ("video-depth-anything", "depth-anything/Video-Depth-Anything-Small"): "random:vits",
    ("video-depth-anything", "depth-anything/Video-Depth-Anything-Base"): "random:vitb",
    ("video-depth-anything", "depth-anything/Video-Depth-Anything-Large"): "random:vitl",
    ("depth-anything-v2", "depth-anything/Depth-Anything-V2-Metric-Outdoor-Small-hf"): "random:small",
    ("depth-anything-v2", "depth-anything/Depth-Anything-V2-Metric-Outdoor-Base-hf"): "random:base",
    ("depth-anything-v2", "depth-anything/Depth-Anything-V2-Metric-Outdoor-Large-hf"): "random:large",
}
#: backends whose random architecture is named after the checkpoint's file or repository
#: (yolov8x.pt -> random:yolov8x, facebook/sam2.1-hiera-large -> random:sam2.1-hiera-large)
NAMED_BY_CHECKPOINT = ("yolo", "grounding-dino", "sam2", "sam2-video")


def full_size_random(backend: dict[str, Any]) -> str:
    """The `random:<arch>` with the architecture of a backend config's checkpoint (a dumped config
    dict: `name`, `weights`, and for RAFT `model`): the table above, RAFT's `random:<model>` for any
    of its weights, the checkpoint's name for the detectors and SAM2."""
    name, weights = backend["name"], backend["weights"]
    if weights.startswith("random:"):
        return weights
    if (name, weights) in RANDOM_FORMS:
        return RANDOM_FORMS[name, weights]
    if name == "raft":  # default, an enum name or a state dict: the weights of torchvision's raft_large/small
        return "random:" + backend.get("model", "raft_large")
    if name in NAMED_BY_CHECKPOINT:
        stem = weights.rstrip("/\\").replace("\\", "/").split("/")[-1]
        return "random:" + stem.removesuffix(".pt")
    raise SystemExit(f"{name}: no full-size random architecture known for weights {weights!r}; add it to "
                     "RANDOM_FORMS in benchmarks/perception_models.py, or pass --keep-weights")


def randomize_weights(node: Any, changed: list[str]) -> None:
    """Replace every backend's `weights` inside a dumped perception config (fusion's detectors too)."""
    if isinstance(node, dict):
        if isinstance(node.get("weights"), str) and "name" in node:
            new = full_size_random(node)
            if new != node["weights"]:
                changed.append(f"{node['name']}: {node['weights']} -> {new}")
                node["weights"] = new
        for value in node.values():
            randomize_weights(value, changed)
    elif isinstance(node, list):
        for value in node:
            randomize_weights(value, changed)


def benchmark_config(args: argparse.Namespace) -> tuple[Any, Any, list[str]]:
    """The preset with --set overrides, full-size random weights (unless --keep-weights) and the runtime
    options; the same before --depth-chunk (what the clip plan counts: the configured chunk layout);
    and the list of weights replaced."""
    from crashcast.config import CrashcastConfig, load_config

    data = load_config(args.preset, args.overrides).model_dump(mode="json")
    changed: list[str] = []
    if not args.keep_weights:
        randomize_weights(data["perception"], changed)
    tracker = data["perception"]["tracker"]
    cap = args.max_objects if args.max_objects is not None else (0 if args.keep_weights else args.boxes)
    user_set = any(o.replace(" ", "").startswith("perception.tracker.max_objects=") for o in args.overrides)
    if cap > 0 and tracker.get("max_objects", cap) != cap and not user_set:
        changed.append(f"{tracker['name']}: max_objects {tracker['max_objects']} -> {cap}")
        tracker["max_objects"] = cap
    for key in ("device", "dtype", "batch_size"):
        if getattr(args, key) is not None:
            data["runtime"][key] = getattr(args, key)
    configured = CrashcastConfig.model_validate(data)
    depth = data["perception"]["depth"]
    if args.depth_chunk and depth["name"] == "video-depth-anything" and args.depth_chunk != depth.get("chunk", 32):
        # the smallest valid layouts keep 4 frames of overlap (2 aligned, 2 blended)
        overlap = min(depth.get("overlap", 10), 4 if args.depth_chunk < 32 else 10)
        changed.append(f"{depth['name']}: chunk {depth.get('chunk', 32)} -> {args.depth_chunk}, overlap "
                       f"{depth.get('overlap', 10)} -> {overlap} (--depth-chunk: timing only, extrapolated per network frame)")
        depth["chunk"], depth["overlap"] = args.depth_chunk, overlap
    return CrashcastConfig.model_validate(data), configured, changed


def synthetic_frames(n: int, step: int, fps: float, seed: int) -> tuple[list[np.ndarray], list[float]]:
    """n frames of a synthetic dashcam clip (a positive scenario: vehicles ahead), every `step`-th frame."""
    from crashcast.data.synthetic import Renderer, SynthConfig, clip_rng, make_scenario, scenario_for

    cfg = SynthConfig(width=WIDTH, height=HEIGHT, fps=fps)
    rng = clip_rng(seed, 0)
    scenario = make_scenario(scenario_for(0), rng, cfg)
    renderer = Renderer(cfg, rng)
    grid = [i * step for i in range(n)]
    if grid[-1] >= len(scenario.ego_speed):
        raise SystemExit(f"--frames {n}: the synthetic clip has only {len(scenario.ego_speed) // step} perceived frames")
    s_ego = np.concatenate([[0.0], np.cumsum(scenario.ego_speed[:-1] / fps)])
    return [renderer.frame(scenario, k, float(s_ego[k]))[0] for k in grid], [k / fps for k in grid]


def video_frames(path: str, n: int, step: int, fps: float) -> tuple[list[np.ndarray], list[float]]:
    """The first n perceived frames of a video (every `step`-th of the fps grid), resized to 1280x720."""
    import cv2

    from crashcast.data.video import decode

    clip = decode(path, fps=fps, long_side=None, step=step)
    if len(clip.frames) < n:
        raise SystemExit(f"--video {path}: {len(clip.frames)} perceived frames, fewer than --frames {n}")
    frames = []
    for f in clip.frames[:n]:
        if f.shape[:2] != (HEIGHT, WIDTH):
            shrink = f.shape[1] > WIDTH
            f = cv2.resize(f, (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        frames.append(np.ascontiguousarray(f))
    w, h = clip.source_size
    if abs(w / h - WIDTH / HEIGHT) > 0.01:
        print(f"note: {path} is {w}x{h}; resized to {WIDTH}x{HEIGHT} (aspect ratio not kept)")
    return frames, [float(t) for t in clip.times_s[:n]]


EXAMPLE_CLIP_S, EXAMPLE_EVENT_S = 10.0, 9.0  # the clip the frame counts are given for (any with >= 6.5 s before E: the same)


@dataclass
class ClipPlan:
    """What perceiving one clip costs in frames: crashcast (once over the union of the windows' spans
    plus extraction's warm-up, every frame_step-th frame of the grid) against the paper's loop
    (Algorithm 1: every window perceived on its own, every frame of the 30 fps grid in it)."""

    windows: list[tuple[str, float, float]]  # (window id, start s, end s) of the example clip
    span: tuple[float, float]  # what crashcast decodes and perceives
    frames: int  # crashcast's perceived frames (detector, SAM2, tracker runs)
    paper_frames: list[int]  # per window
    depth_layout: tuple[int, int] | None  # VDA's (chunk, overlap); None: per-frame depth
    depth_chunks: int = 0
    paper_depth_chunks: int = 0
    keep_offsets: list[float] = field(default_factory=list)  # keyframes, seconds before the span's end

    @property
    def pairs(self) -> int:
        return max(self.frames - 1, 0)

    @property
    def paper_total(self) -> int:
        return sum(self.paper_frames)

    @property
    def paper_pairs(self) -> int:
        return sum(max(n - 1, 0) for n in self.paper_frames)

    @property
    def depth_net(self) -> int:
        return self.depth_chunks * self.depth_layout[0] if self.depth_layout else self.frames

    @property
    def paper_depth_net(self) -> int:
        return self.paper_depth_chunks * self.depth_layout[0] if self.depth_layout else self.paper_total


def grid_points(start: float, end: float, fps: float) -> tuple[int, int]:
    """First and last index k of the k / fps grid inside [start, end]."""
    return math.ceil(start * fps - 1e-6), math.floor(end * fps + 1e-6)


def clip_plan(cfg: Any) -> ClipPlan:
    """The frame counts of `ClipPlan` for a positive EXAMPLE_CLIP_S clip with its event at
    EXAMPLE_EVENT_S, through crashcast's own windows (make_windows, clip_span) and extraction's
    warm-up (WARMUP_S)."""
    from crashcast.data.windows import clip_span, make_windows
    from crashcast.extract import WARMUP_S
    from crashcast.types import Clip

    fps, step = cfg.video.fps, cfg.perception.frame_step
    clip = Clip("example", Path("example.mp4"), 1, time_of_event_s=EXAMPLE_EVENT_S)
    windows = make_windows(clip, EXAMPLE_CLIP_S, cfg.windows)
    start, end = clip_span(windows)
    start = max(0.0, start - WARMUP_S)
    k0, k1 = grid_points(start, end, fps)
    frames = (k1 - k0) // step + 1  # every step-th grid frame, counted back from the span's end
    paper = [grid_points(w.start_s, w.end_s, fps) for w in windows]
    paper_frames = [b - a + 1 for a, b in paper]
    layout, chunks, paper_chunks = None, 0, 0
    if cfg.perception.depth.name == "video-depth-anything":
        from crashcast.perception.models.video_depth_anything.inference import ChunkLayout

        d = cfg.perception.depth
        lay = ChunkLayout.make(d.chunk, d.overlap)
        layout = (lay.length, lay.overlap)
        chunks = len(lay.chunk_starts(frames))
        paper_chunks = sum(len(lay.chunk_starts(n)) for n in paper_frames)
    keep = sorted({round(end - t, 6) for w in windows for t in w.keyframe_times_s})
    return ClipPlan([(w.id, w.start_s, w.end_s) for w in windows], (start, end), frames, paper_frames, layout,
                    chunks, paper_chunks, keep)


def perceived_origin(cfg: Any, width: int, height: int) -> int:
    """The first row the pipeline perceives (`Perception.origin_y`: below the sky, or 0 with
    geometry.sky_margin null); every stage gets the frames from that row down."""
    from crashcast.perception.pipeline import camera_for

    margin = cfg.geometry.sky_margin
    if margin is None:
        return 0
    camera = camera_for(width, height, cfg)
    return int(np.clip(camera.horizon_y - margin * height, 0, height - 64)) // 32 * 32


def fixed_boxes(shape: tuple[int, ...], k: int) -> Any:
    """k non-overlapping vehicle boxes over the road half of a frame, in two rows of cells (near ones
    larger), confidence 0.9 down to 0.5: a plausible busy dashcam scene, the same for every frame."""
    from crashcast.types import Detections

    h, w = shape[:2]
    if k == 0:
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0), np.zeros(0, object), source=np.zeros(0, object))
    cols = (k + 1) // 2
    boxes = []
    for i in range(k):
        row, col = divmod(i, cols)
        x0, x1 = 0.04 * w + 0.92 * w * col / cols, 0.04 * w + 0.92 * w * (col + 1) / cols
        y0, y1 = (0.45 * h, 0.65 * h) if row == 0 else (0.62 * h, 0.95 * h)
        fill = 0.6 + 0.3 * ((i * 7) % 5) / 4  # box side as a fraction of its cell: 0.6 to 0.9
        cx, cy, bw, bh = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) * fill, (y1 - y0) * fill
        boxes.append([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2])
    return Detections(np.array(boxes, np.float32), np.linspace(0.9, 0.5, k), np.full(k, "vehicle", object),
                      source=np.full(k, "fixed", object))


class FixedBoxDetector:
    """Benchmark stand-in `Detector` (and `MaskMerger`): runs `inner` in full when there is one (its
    time counts), then returns `k` fixed boxes per frame instead of its random-weight detections."""

    def __init__(self, inner: Any, k: int) -> None:
        self.inner, self.k = inner, k
        self.name = getattr(inner, "name", "fixed-boxes")
        self.uses_context = bool(getattr(inner, "uses_context", False))

    def detect(self, frames: Sequence[np.ndarray], contexts: Sequence[Any] | None = None) -> list[Any]:
        if self.inner is not None:
            self.inner.detect(frames, contexts)
        return [fixed_boxes(f.shape, self.k) for f in frames]

    def merge_masks(self, detections: Any) -> Any:
        merge = getattr(self.inner, "merge_masks", None)
        return merge(detections) if merge is not None else detections


# ---------------------------------------------------------------- measuring


@dataclass
class Row:
    """One line of the table: `seconds` over `frames` frames (the median of --repeat runs)."""

    stage: str
    backend: str
    frames: int
    seconds: float
    peak_rss_mb: float | None = None
    peak_gpu_mb: float | None = None
    note: str = ""
    parts: dict[str, float] = field(default_factory=dict)  # e2e: seconds per pipeline stage
    extra: dict[str, Any] = field(default_factory=dict)  # figures beyond the table (depth: per network frame, per clip)

    @property
    def ms_per_frame(self) -> float:
        return 1000 * self.seconds / max(self.frames, 1)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else float("inf")


def batched(fn: Callable[[Sequence[Any]], list[Any]], items: Sequence[Any], size: int) -> list[Any]:
    out: list[Any] = []
    for i in range(0, len(items), size):
        out += fn(items[i : i + size])
    return out


def n_params(backend: Any) -> float | None:
    """Millions of parameters of a model backend (its `model`; fusion: its detectors'), None for classic."""
    subs = getattr(backend, "detectors", None)
    if subs:
        counts = [n_params(d) for d in subs]
        return sum(c for c in counts if c) or None
    model = getattr(backend, "model", None) or getattr(getattr(backend, "inference", None), "model", None)
    params = getattr(model, "parameters", None)
    if params is None:
        return None
    return sum(p.numel() for p in params()) / 1e6






# ---------------------------------------------------------------- the benchmark


class Bench:
    """Builds the backends a run needs (each once) and times the stages in order; the rows accumulate."""

    def __init__(self, args: argparse.Namespace, cfg: Any, frames: list[np.ndarray], times: list[float],
                 plan: ClipPlan) -> None:
        from crashcast.perception.base import FrameContext
        from crashcast.perception.pipeline import camera_for
        from crashcast.perception.spec import BuildContext

        self.args, self.cfg, self.frames, self.times, self.plan = args, cfg, frames, times, plan
        self.ctx = BuildContext(cfg.perception, cfg.runtime)
        self.device, self.dtype = self.ctx.device, self.ctx.dtype
        self.B = cfg.runtime.batch_size
        self.meter = Meter(self.device)
        # the stages alone get what the pipeline hands them: the perceived rows (whole frame with sky_margin null)
        self.y0 = perceived_origin(cfg.perception, WIDTH, HEIGHT)
        self.stage_frames = [f[self.y0 :] for f in frames]
        camera = camera_for(WIDTH, HEIGHT, cfg.perception).cropped(self.y0)
        self.contexts = [FrameContext(i, t, camera, origin_y=self.y0) for i, t in enumerate(times)]
        # warm-up input: on CUDA every frame (cheap there, and every batch shape, the last partial one too,
        # is then seen once: cuDNN's autotuning stays out of the timings); on a CPU one batch
        self.warm = frames if self.meter.cuda else frames[: min(self.B, len(frames))]
        self.warm_span = frames[: max(len(self.warm), min(2, len(frames)))]  # flow and tracking need two frames
        self.rows: list[Row] = []
        self.built: dict[str, Any] = {}
        self.build_seconds: dict[str, float] = {}
        self.model_stage_ran = False
        self.detected: list[Any] | None = None  # the configured detector's own output
        self.segmented: list[Any] | None = None  # the SAM2 stage's output (boxes with masks)
        self.tracked: list[Any] | None = None
        self.random_weights = not args.keep_weights

    # -- building

    def stage(self, stage: str) -> Any:
        """The preset's backend of `stage`, built once."""
        from crashcast.perception import registry

        if stage not in self.built:
            t = time.perf_counter()
            self.built[stage] = registry.create(stage, getattr(self.cfg.perception, stage), self.ctx)
            self.build_seconds[stage] = time.perf_counter() - t
            log.info("built %s %s in %.1f s", stage, self.built[stage].name, self.build_seconds[stage])
        return self.built[stage]

    def sub_detector(self, key: str, whole_detector: bool) -> Any | None:
        """YOLO or Grounding DINO: the fusion's own when the whole detector is needed anyway, else built alone."""
        from crashcast.perception import registry

        name = SUB_DETECTORS[key]
        dcfg = self.cfg.perception.detector
        if dcfg.name == name:
            return self.stage("detector")
        subs = list(getattr(dcfg, "detectors", None) or [])
        for i, sub in enumerate(subs):
            if sub.name != name:
                continue
            if whole_detector:
                return self.stage("detector").detectors[i]
            if key not in self.built:
                t = time.perf_counter()
                self.built[key] = registry.create("detector", sub, self.ctx)
                self.build_seconds[key] = time.perf_counter() - t
                log.info("built detector %s in %.1f s", name, self.build_seconds[key])
            return self.built[key]
        return None

    def boxes(self) -> list[Any]:
        """The detections the SAM2 stages get: --boxes fixed boxes, or (0) the configured detector's own."""
        if self.args.boxes > 0:
            return [fixed_boxes(f.shape, self.args.boxes) for f in self.stage_frames]
        if self.detected is None:
            self.detected = batched(lambda fs: self.stage("detector").detect(fs, None), self.stage_frames, self.B)
        return self.detected

    # -- timing

    def add(self, stage: str, backend: Any, frames: int, result: tuple[Any, float, Any, Any], note: str = "",
            parts: dict[str, float] | None = None) -> Any:
        out, seconds, rss, gpu = result
        name = backend if isinstance(backend, str) else getattr(backend, "name", type(backend).__name__)
        params = None if isinstance(backend, str) else n_params(backend)
        if params:
            note = f"{params:.1f} M params" + (f"; {note}" if note else "")
        role = {"fusion": "detector", "sam2": "segmenter", "sam2-video": "tracker"}.get(stage)
        if role and name != stage:  # another preset's backend in this role (fast: classic-box, bytetrack)
            stage = role
        row = Row(stage, name, frames, seconds, rss, gpu, note, parts or {})
        self.rows.append(row)
        log.info("%s: %.1f ms per frame (%d frames)", stage, row.ms_per_frame, frames)
        return out

    def note(self, text: str) -> None:
        """Append to the last row's note."""
        row = self.rows[-1]
        row.note = "; ".join(t for t in (row.note, text) if t)

    def warm_up(self, fn: Callable[[Sequence[np.ndarray]], Any], span: bool = False) -> None:
        """Untimed calls of a stage on the warm-up frames (their perceived rows, as the stage gets them)."""
        for _ in range(self.args.warmup):
            fn([f[self.y0 :] for f in (self.warm_span if span else self.warm)])
            self.meter.sync()

    def detector_stage(self, key: str, detector: Any) -> None:
        run = lambda fs: batched(lambda b: detector.detect(b, None), fs, self.B)  # noqa: E731
        self.warm_up(run)
        dets = self.add(key, detector, len(self.frames), self.meter.time(lambda: run(self.stage_frames), self.args.repeat))
        found = f"{np.mean([len(d) for d in dets]):.0f} boxes/frame" + (" (random weights)" if self.random_weights else "")
        self.note(found)
        if key == "fusion":
            self.detected = dets
        self.model_stage_ran = True

    def segmenter_stage(self) -> None:
        seg = self.stage("segmenter")
        dets = self.boxes()
        run = lambda fs, ds: batched(  # noqa: E731
            lambda idx: seg.segment([fs[i] for i in idx], [ds[i] for i in idx], None), range(len(fs)), self.B)
        self.warm_up(lambda fs: run(fs, dets[: len(fs)]))
        out = self.add("sam2", seg, len(self.frames), self.meter.time(lambda: run(self.stage_frames, dets), self.args.repeat),
                       note=f"{np.mean([len(d) for d in dets]):.0f} boxes/frame ({self.box_source()})")
        self.segmented = out
        self.note(mask_area_note(out))
        self.model_stage_ran = True
        detector = self.built.get("detector")
        if detector is not None and hasattr(detector, "merge_masks"):
            self.add("mask merge", detector.name, len(out),
                     self.meter.time(lambda: [detector.merge_masks(d) for d in out], self.args.repeat),
                     note="the fusion's mask-IoU merge of the segmented boxes (part of the pipeline's segment stage)")

    def tracker_stage(self) -> None:
        from crashcast.perception.base import SpanTracker

        tracker = self.stage("tracker")
        dets = self.segmented or self.boxes()
        span = isinstance(tracker, SpanTracker)

        def run(fs: Sequence[np.ndarray]) -> list[Any]:
            tracker.reset()
            if span:
                return tracker.track(list(fs), dets[: len(fs)], self.times[: len(fs)])
            return [tracker.update(f, d, t) for f, d, t in zip(fs, dets, self.times, strict=False)]

        self.warm_up(run, span=True)
        out = self.add("sam2-video", tracker, len(self.frames), self.meter.time(lambda: run(self.stage_frames), self.args.repeat))
        ids = {int(i) for d in out if d.tracker_id is not None for i in d.tracker_id}
        mode = f"one span of {len(self.frames)} frames" if span else "frame by frame"
        self.note(f"{mode}, {np.mean([len(d) for d in dets]):.0f} boxes/frame in, {len(ids)} objects tracked, "
                  f"{np.mean([len(d) for d in out]):.1f} per frame")
        self.note(mask_area_note(out))
        self.tracked = out
        self.model_stage_ran = True

    def flow_stage(self) -> None:
        flow = self.stage("flow")
        pairs = list(itertools.pairwise(self.stage_frames))
        if not pairs:
            print("flow: needs --frames >= 2; skipped")
            return
        run = lambda ps: batched(lambda b: flow.flow([p for p, _ in b], [c for _, c in b]), ps, self.B)  # noqa: E731
        self.warm_up(lambda fs: run(list(itertools.pairwise(fs))), span=True)
        self.add("flow", flow, len(pairs), self.meter.time(lambda: run(pairs), self.args.repeat),
                 note=f"per pair of consecutive perceived frames, {min(self.B, len(pairs))} pair(s) per call"
                 + flow_note(flow, self.stage_frames[0].shape))

    def depth_stage(self) -> None:
        from crashcast.perception.base import SpanDepthEstimator

        depth = self.stage("depth")
        frames = self.stage_frames
        dets = self.tracked or self.segmented or self.boxes()
        span = isinstance(depth, SpanDepthEstimator)

        def run(fs: Sequence[np.ndarray]) -> list[Any]:
            if span:  # what run_span does: the whole span at once
                depth.reset()
                return depth.depth_span(list(fs))
            return batched(lambda ix: depth.depth([fs[i] for i in ix], [dets[i] for i in ix],
                                                  [self.contexts[i] for i in ix]), range(len(fs)), self.B)

        self.warm_up(run, span=span)
        self.add("depth", depth, len(frames), self.meter.time(lambda: run(frames), self.args.repeat))
        row = self.rows[-1]
        inf = getattr(depth, "inference", None)
        layout = getattr(inf, "layout", None)
        if not span or layout is None:
            if span:
                self.note(f"span form over {len(frames)} frames")
            return
        # Video Depth Anything: chunks of `length` network frames, whatever the span's length; the
        # cost of a clip is its chunks, so the figure that counts is per network frame, and over a clip span
        chunks = len(layout.chunk_starts(len(frames)))
        net = chunks * layout.length
        h, w = inf.size_for(*frames[0].shape[:2])
        per_net = row.seconds / net
        clip_ms = 1000 * per_net * self.plan.depth_net / self.plan.frames
        measured = (len(frames), (layout.length, layout.overlap)) == (self.plan.frames, self.plan.depth_layout)
        row.extra = {"network_frames": net, "chunks": chunks, "chunk": layout.length, "overlap": layout.overlap,
                     "ms_per_network_frame": 1000 * per_net, "clip_frames": self.plan.frames,
                     "clip_network_frames": self.plan.depth_net, "clip_ms_per_frame": clip_ms,
                     "clip_figure_measured": measured}
        self.note(f"span form: {len(frames)} frames -> {chunks} chunk(s) of {layout.length} (overlap {layout.overlap}) "
                  f"= {net} network frames at {w}x{h}, {math.ceil(chunks / inf.chunk_batch)} call(s) of <= "
                  f"{inf.chunk_batch} chunks; {1000 * per_net:,.1f} ms per network frame")
        if measured:
            self.note(f"this is one clip span ({self.plan.frames} frames, {self.plan.depth_chunks} chunks): "
                      f"{clip_ms:,.1f} ms per perceived frame as measured")
        else:
            c, o = self.plan.depth_layout or (0, 0)
            self.note(f"amortised over a clip span ({self.plan.frames} frames -> {self.plan.depth_chunks} chunks of {c}, "
                      f"overlap {o} = {self.plan.depth_net} network frames): ~{clip_ms:,.1f} ms per perceived frame "
                      "(extrapolated per network frame)")

    def context_stage(self) -> None:
        """The road-motion context (road fit, residual, ego-path looming) has no backend of its own: it is
        timed inside a `perceive` run whose backends are light stand-ins (classic DIS flow, whose flow on
        the synthetic frames gives the road fit its real work, which a random RAFT's would not; fixed
        boxes, box masks, ByteTrack, ground-plane depth), from the pipeline's own stage seconds."""
        from crashcast.perception import registry
        from crashcast.perception.bundle import Backends

        if len(self.frames) < 2:
            print("context: needs --frames >= 2; skipped")
            return
        stand_in = Backends(flow=registry.create("flow", _plain("flow", "classic-flow"), self.ctx),
                            detector=FixedBoxDetector(None, max(self.args.boxes, 1)),
                            segmenter=registry.create("segmenter", _plain("segmenter", "classic-box"), self.ctx),
                            tracker=registry.create("tracker", _plain("tracker", "bytetrack"), self.ctx),
                            depth=registry.create("depth", _plain("depth", "classic-ground"), self.ctx))
        result, _ = self.perceive(stand_in)
        parts = {k: v for k, v in result.stage_seconds.items() if k in ("road motion", "residual", "looming")}
        if not parts:
            print("context: this preset does not run the road-motion context (no detector uses it, "
                  "perception.context.looming is false); skipped")
            return
        n = len(self.frames) - 1  # the first frame has no flow, so no context
        self.rows.append(Row("context", "road motion + residual + looming", n, sum(parts.values()), *self.meter.peaks(),
                             note=", ".join(f"{k} {1000 * v / n:.1f} ms" for k, v in parts.items())
                             + " (on classic DIS flow)", parts=parts))

    def clip_frames(self) -> Any:
        """The frames as extraction hands them to `perceive`: decoded every frame_step-th grid frame."""
        from crashcast.types import ClipFrames

        fps, step = self.cfg.video.fps, self.cfg.perception.frame_step
        return ClipFrames("benchmark", np.stack(self.frames), np.asarray(self.times, np.float64), fps, (WIDTH, HEIGHT),
                          fps, self.times[-1] + 1 / fps, step=step)

    def perceive(self, backends: Any) -> tuple[Any, float]:
        """One `perceive` over the frames, as extraction calls it (masks kept at the windows' keyframes):
        its result and the median wall time of --repeat runs."""
        from crashcast.perception.pipeline import perceive

        clip = self.clip_frames()
        keep = [self.times[-1] - dt for dt in self.plan.keep_offsets if self.times[-1] - dt >= self.times[0] - 1e-6]
        runs = []
        self.meter.reset()
        for _ in range(self.args.repeat):
            self.meter.sync()
            t = time.perf_counter()
            result = perceive(clip, self.cfg.perception, backends, keep_times=keep, batch_size=self.B)
            self.meter.sync()
            runs.append((time.perf_counter() - t, result))
        runs.sort(key=lambda r: r[0])
        wall, result = runs[len(runs) // 2]
        return result, wall

    def e2e_stage(self) -> None:
        from crashcast.perception.bundle import Backends
        from crashcast.perception.pipeline import Perception

        built = {s: self.stage(s) for s in ("flow", "detector", "segmenter", "tracker", "depth")}
        if self.args.boxes > 0:
            built["detector"] = FixedBoxDetector(built["detector"], self.args.boxes)
        backends = Backends(**built)
        if self.args.warmup and not self.model_stage_ran:
            for _ in range(self.args.warmup):
                Perception(backends, self.cfg.perception, WIDTH, HEIGHT, self.cfg.video.fps, "warm-up",
                           batch_size=self.B).run_span(self.warm_span, self.times[: len(self.warm_span)])
                self.meter.sync()
        result, wall = self.perceive(backends)
        rss, gpu = self.meter.peaks()
        note = (f"{self.box_source()} into SAM2; {len(result.tracks)} objects tracked; "
                f"stages sum to {sum(result.stage_seconds.values()):.2f} s of {wall:.2f} s")
        if self.args.depth_chunk and hasattr(built["depth"], "inference"):
            note += f"; depth on {self.args.depth_chunk}-frame chunks (--depth-chunk)"
        self.rows.append(Row("e2e", "perceive (Perception.run_span)", result.frames_processed, wall, rss, gpu, note,
                             dict(result.stage_seconds)))
        self.model_stage_ran = True

    def box_source(self) -> str:
        if self.args.boxes > 0:
            return f"{self.args.boxes} fixed boxes/frame"
        return "the random detectors' own boxes"


def mask_area_note(dets: Sequence[Any]) -> str:
    """The mean area of the masks as a share of the frame (what the per-object statistics scan)."""
    areas = [m.mean() for d in dets if d.mask is not None for m in d.mask]
    return f"masks cover {100 * np.mean(areas):.1f}% of the frame on average" if areas else ""


def flow_note(flow: Any, shape: tuple[int, ...]) -> str:
    """RAFT's settings and the input it computes on (empty for another flow backend)."""
    if getattr(flow, "name", "") != "raft":
        return ""
    from crashcast.perception.models.raft import plan_input

    geom = plan_input(shape[0], shape[1], flow.size_mode, flow.scale)
    (h, w), (ph, pw) = geom.scaled, geom.padded
    size = f"{w}x{h}" + (f" padded to {pw}x{ph}" if (ph, pw) != (h, w) else "")
    precision = f"autocast {str(flow.autocast).removeprefix('torch.')}" if flow.autocast is not None else "float32"
    return f"; {flow.num_flow_updates} flow updates on {size}, {precision}"


def _plain(stage: str, name: str) -> Any:
    """The default config of a backend."""
    from crashcast.perception import registry

    return registry.config_class(stage, name).model_validate({"name": name})


# ---------------------------------------------------------------- report


def describe_device(bench: Bench) -> list[str]:
    import torch

    lines = []
    if bench.device.startswith("cuda"):
        props = torch.cuda.get_device_properties(bench.device)
        lines.append(f"device: {bench.device} = {torch.cuda.get_device_name(bench.device)} "
                     f"({props.total_memory / 2**30:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}")
    else:
        lines.append(f"device: {bench.device}, torch {torch.__version__}")
    lines.append(f"host CPU: {cpu_name()}, {os.cpu_count()} logical cores, torch threads {torch.get_num_threads()} "
                 f"(inter-op {torch.get_num_interop_threads()}); {platform.system()} {platform.release()}, "
                 f"Python {platform.python_version()}")
    lines.append(f"dtype: {str(bench.dtype).removeprefix('torch.')}; batch size {bench.B}; "
                 f"{len(bench.frames)} frames at {WIDTH}x{HEIGHT}; warm-up: {bench.args.warmup} untimed call(s) per stage "
                 f"on {len(bench.warm)} frame(s) ({len(bench.warm_span)} for flow, tracking, e2e); "
                 f"median of {bench.args.repeat} timed run(s)")
    return lines


def table(rows: list[Row], cuda: bool) -> str:
    head = ["stage", "backend", "frames", "ms/frame", "frames/s", "peak RSS MiB"] + (["peak GPU MiB"] if cuda else [])
    body = []
    for r in rows:
        cells = [r.stage, r.backend, str(r.frames), f"{r.ms_per_frame:,.1f}", f"{r.fps:.2f}",
                 f"{r.peak_rss_mb:,.0f}" if r.peak_rss_mb is not None else "-"]
        if cuda:
            cells.append(f"{r.peak_gpu_mb:,.0f}" if r.peak_gpu_mb is not None else "-")
        body.append(cells)
    widths = [max(len(c[i]) for c in [head, *body]) for i in range(len(head))]
    fmt = lambda cells: "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))  # noqa: E731
    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(c) for c in body]
    notes = [f"  {r.stage}: {r.note}" for r in rows if r.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def verdict(bench: Bench, e2e: Row | None) -> str:
    goal = f"goal: >= {GOAL_FPS:.0f} perceived frames/s end to end on one H100-class GPU in float16 or bfloat16"
    if e2e is None:
        return goal + "; not measured (add e2e to --stages)."
    got = f"measured {e2e.fps:.3f} perceived frames/s ({e2e.ms_per_frame:,.0f} ms per frame; the goal allows {1000 / GOAL_FPS:.1f} ms)"
    dtype = str(bench.dtype).removeprefix("torch.")
    if not bench.device.startswith("cuda"):
        return (f"{goal}.\n{got} on {bench.device.upper()} ({dtype}): NOT MET, as expected on a CPU, "
                f"{GOAL_FPS / e2e.fps:,.0f}x too slow. This figure says nothing about a GPU: run this script on one.")
    met = e2e.fps >= GOAL_FPS
    cond = "" if dtype in ("float16", "bfloat16") else f" (note: measured in {dtype}, the goal is stated for float16/bfloat16)"
    short = "" if met else f", {GOAL_FPS / e2e.fps:.1f}x short"
    return f"{goal}.\n{got} on {bench.device}: {'MET' if met else 'NOT MET'}{short}{cond}."


def e2e_breakdown(e2e: Row) -> str:
    total = sum(e2e.parts.values())
    lines = [f"end to end, ms per perceived frame by pipeline stage ({e2e.frames} frames):"]
    for k, v in sorted(e2e.parts.items(), key=lambda kv: -kv[1]):
        lines.append(f"  {k:<12} {1000 * v / e2e.frames:>10,.1f}  ({100 * v / e2e.seconds:4.1f}%)")
    lines.append(f"  {'(other)':<12} {1000 * (e2e.seconds - total) / e2e.frames:>10,.1f}  "
                 f"({100 * (e2e.seconds - total) / e2e.seconds:4.1f}%)")
    return "\n".join(lines)


def plan_report(plan: ClipPlan, cfg: Any, e2e: Row | None, depth_span: bool) -> tuple[str, dict[str, Any]]:
    """Frames processed per clip, crashcast against the paper's per-window loop (`plan`: the configured
    layout); with an e2e row, seconds per clip at its per-unit costs (`cfg`: the run's config, whose
    depth chunks may be --depth-chunk's)."""
    fps, step = cfg.video.fps, cfg.perception.frame_step
    wins = ", ".join(f"{wid.removeprefix('example_')} [{a:g}, {b:g}] s" for wid, a, b in plan.windows)
    lines = [f"frames processed per clip (a {EXAMPLE_CLIP_S:g} s clip, event at {EXAMPLE_EVENT_S:g} s; windows {wins}; "
             f"any clip with >= {plan.span[1] - plan.span[0]:g} s before its event gives the same counts):"]
    vda = plan.depth_layout is not None
    chunk = plan.depth_layout[0] if vda else 0
    lines.append(f"  crashcast: perceive once per clip over [{plan.span[0]:g}, {plan.span[1]:g}] s (the windows' union "
                 f"and 0.5 s of warm-up), every {step}rd frame of the {fps:g} fps grid: {plan.frames} frames "
                 f"(detector, segmenter, tracker), {plan.pairs} flow pairs"
                 + (f", VDA {plan.depth_chunks} chunks = {plan.depth_net} network frames" if vda else ""))
    lines.append(f"  paper's loop (Algorithm 1: each window perceived on its own, every frame at {fps:g} fps): "
                 f"{' + '.join(map(str, plan.paper_frames))} = {plan.paper_total} frames, {plan.paper_pairs} flow pairs"
                 + (f", VDA {plan.paper_depth_chunks} chunks = {plan.paper_depth_net} network frames" if vda else ""))
    lines.append(f"  the paper's loop processes {plan.paper_total / plan.frames:.1f}x the frames, "
                 f"{plan.paper_pairs / max(plan.pairs, 1):.1f}x the flow pairs"
                 + (f", {plan.paper_depth_net / plan.depth_net:.1f}x the depth network frames ({chunk}-frame chunks)"
                    if vda else ""))
    out: dict[str, Any] = {"clip_s": EXAMPLE_CLIP_S, "event_s": EXAMPLE_EVENT_S, "windows": plan.windows,
                           "span": plan.span, "frames": plan.frames, "flow_pairs": plan.pairs,
                           "depth_network_frames": plan.depth_net if vda else None, "paper_frames": plan.paper_frames,
                           "paper_flow_pairs": plan.paper_pairs,
                           "paper_depth_network_frames": plan.paper_depth_net if vda else None}
    if e2e is not None and e2e.frames >= 2:
        # per-unit costs of this run's e2e: flow per pair, VDA per network frame, context per pair
        # (crashcast's own, the paper has none), everything else per perceived frame
        parts = e2e.parts
        pairs = e2e.frames - 1
        flow_pp = parts.get("flow", 0.0) / pairs
        ctx_pp = sum(parts.get(k, 0.0) for k in ("road motion", "residual", "looming")) / pairs
        if vda and depth_span:
            d = cfg.perception.depth
            from crashcast.perception.models.video_depth_anything.inference import ChunkLayout

            run_net = len(ChunkLayout.make(d.chunk, d.overlap).chunk_starts(e2e.frames)) * d.chunk
            depth_unit, depth_units, paper_depth_units = parts.get("depth", 0.0) / run_net, plan.depth_net, plan.paper_depth_net
        else:
            depth_unit, depth_units, paper_depth_units = parts.get("depth", 0.0) / e2e.frames, plan.frames, plan.paper_total
        rest = e2e.seconds - sum(parts.get(k, 0.0) for k in ("flow", "depth", "road motion", "residual", "looming"))
        per_frame = rest / e2e.frames
        ours = per_frame * plan.frames + (flow_pp + ctx_pp) * plan.pairs + depth_unit * depth_units
        paper = per_frame * plan.paper_total + flow_pp * plan.paper_pairs + depth_unit * paper_depth_units
        exact = e2e.frames == plan.frames
        lines.append(f"  at this run's e2e costs per unit ({1000 * per_frame:,.0f} ms per frame for detection, "
                     f"segmentation, tracking and records, {1000 * flow_pp:,.0f} ms per flow pair, {1000 * depth_unit:,.1f} ms "
                     f"per depth {'network frame' if vda and depth_span else 'frame'}): crashcast "
                     f"{ours:,.1f} s per clip{' (as measured)' if exact else ''}, the paper's loop ~{paper:,.1f} s "
                     f"({paper / ours:.1f}x), on this device")
        out |= {"crashcast_s_per_clip": ours, "paper_loop_s_per_clip": paper}
    return "\n".join(lines), out


# ---------------------------------------------------------------- main


def parse_stages(text: str) -> list[str]:
    names = []
    for part in text.replace(" ", "").split(","):
        for name in ALIASES.get(part, part).split(","):
            if name and name not in STAGES:
                raise SystemExit(f"--stages: unknown stage {name!r}; stages: {', '.join(STAGES)}")
            if name and name not in names:
                names.append(name)
    return [s for s in STAGES if s in names]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="paper", help="config preset or YAML file (paper, fast, tiny, ...)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="config override, e.g. perception.tracker.max_objects=16 (before the weights are randomised)")
    ap.add_argument("--keep-weights", action="store_true",
                    help="time the configured checkpoints (the files must be there) instead of random:<arch>")
    ap.add_argument("--frames", type=int, default=None,
                    help="perceived frames (default: on CUDA one clip's, as extraction perceives them: 66 for the paper "
                    "preset, 6.5 s at 10 Hz; on a CPU 2, where the paper's models take about a minute per frame)")
    ap.add_argument("--batch-size", type=int, default=None, help="frames per batch (default: runtime.batch_size, 8)")
    ap.add_argument("--device", default=None, help="auto, cpu, cuda, cuda:1 (default: runtime.device, auto)")
    ap.add_argument("--dtype", default=None, choices=("auto", "float32", "float16", "bfloat16"),
                    help="default: runtime.dtype, auto = float16 on CUDA, float32 on a CPU")
    ap.add_argument("--stages", default="all", help=f"comma-separated subset of {','.join(STAGES)} (default: all)")
    ap.add_argument("--boxes", type=int, default=8, help="fixed boxes per frame for SAM2 and the tracker, also in the "
                    "end-to-end run (after the detector ran); 0: the random detectors' own boxes")
    ap.add_argument("--max-objects", type=int, default=None,
                    help="the tracker's max_objects for the run (default: --boxes with random weights, whose masks "
                    "never match the detections, so every frame's boxes would start new objects; 0: the preset's)")
    ap.add_argument("--warmup", type=int, default=1,
                    help="untimed warm-up calls per stage (on CUDA over all the frames, on a CPU one batch)")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per stage; the median is reported")
    ap.add_argument("--video", default=None, help="a real clip instead of synthetic frames (resized to 1280x720)")
    ap.add_argument("--seed", type=int, default=7, help="synthetic clip seed")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    ap.add_argument("--depth-chunk", type=int, default=None, metavar="K",
                    help="time Video Depth Anything on chunks of K frames (overlap 4) instead of the configured 32 "
                    "(a CPU takes minutes per 32-frame chunk); the depth figures per clip are then extrapolated per "
                    "network frame to the configured layout")
    ap.add_argument("--time-budget", type=float, default=None, metavar="S",
                    help="seconds after which the stages not yet run are skipped and listed (e2e runs first); "
                    "default 540 on CUDA (one 10-minute device call), none on a CPU")
    ap.add_argument("--json", default=None, help="also write the figures to this JSON file")
    ap.add_argument("--cpu-nms-shim", action="store_true", help="where torchvision's compiled operators do not load "
                    "(CUDA torchvision, CPU torch), register the test suite's CPU NMS kernels for this run")
    args = ap.parse_args()
    if args.boxes < 0 or args.warmup < 0 or args.repeat < 1:
        ap.error("--boxes and --warmup must be >= 0, --repeat >= 1")
    if args.depth_chunk is not None and not 6 <= args.depth_chunk <= 32:
        ap.error("--depth-chunk must be within 6..32 (a chunk of K < 32 keeps 4 frames of overlap: K >= 6)")
    stages = parse_stages(args.stages)
    logging.basicConfig(level=logging.WARNING, stream=sys.stdout, format="%(asctime)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")
    log.setLevel(logging.INFO)

    ensure_torchvision(args.cpu_nms_shim)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    load_before = load_text()
    cfg, configured, changed = benchmark_config(args)
    plan = clip_plan(configured)
    from crashcast.runtime.context import resolve_device

    device = resolve_device(cfg.runtime.device)
    cuda = device.startswith("cuda")
    if args.frames is None:
        args.frames = plan.frames if cuda else 2
    budget = args.time_budget if args.time_budget is not None else (540.0 if cuda else None)
    if args.frames < 1:
        ap.error("--frames must be >= 1")
    step = cfg.perception.frame_step
    if args.video:
        frames, times = video_frames(args.video, args.frames, step, cfg.video.fps)
    else:
        frames, times = synthetic_frames(args.frames, step, cfg.video.fps, args.seed)

    print(f"crashcast perception models benchmark: preset {args.preset!r}, stages {','.join(stages)}")
    print("weights: " + ("; ".join(changed) if changed else "as configured" + (" (--keep-weights)" if args.keep_weights else "")))
    print(f"input: {len(frames)} {'frames of ' + args.video if args.video else 'synthetic dashcam frames'} at "
          f"{WIDTH}x{HEIGHT}, every {step}rd frame of the {cfg.video.fps:g} fps grid (one clip: {plan.frames}); the stages "
          + ("see the whole frame (geometry.sky_margin null)" if (y0 := perceived_origin(cfg.perception, WIDTH, HEIGHT)) == 0
             else f"see rows {y0}..{HEIGHT} (below the sky, as the pipeline crops)"))
    bench = Bench(args, cfg, frames, times, plan)
    for line in describe_device(bench):
        print(line)
    print(load_text().replace("load", "before: load", 1))
    t_start = time.perf_counter()

    whole = "fusion" in stages or "e2e" in stages
    if "e2e" in stages:  # build every backend first: the per-stage runs then share them
        for s in ("flow", "detector", "segmenter", "tracker", "depth"):
            bench.stage(s)
    # e2e first (the goal's figure; its warm-up warms every model), then the stages alone, in order
    order = (["e2e"] if "e2e" in stages else []) + [s for s in stages if s != "e2e"]
    skipped = []
    for s in order:
        if budget is not None and time.perf_counter() - t_start > budget:
            skipped.append(s)
            continue
        log.info("timing %s", s)
        if s in SUB_DETECTORS:
            det = bench.sub_detector(s, whole)
            if det is None:
                print(f"{s}: the {args.preset} preset has no {SUB_DETECTORS[s]} detector; skipped")
                continue
            bench.detector_stage(s, det)
        elif s == "fusion":
            bench.detector_stage("fusion", bench.stage("detector"))
        elif s == "sam2":
            bench.segmenter_stage()
        elif s == "sam2-video":
            bench.tracker_stage()
        elif s == "flow":
            bench.flow_stage()
        elif s == "context":
            bench.context_stage()
        elif s == "depth":
            bench.depth_stage()
        elif s == "e2e":
            bench.e2e_stage()
    rank = {name: i for i, name in enumerate(STAGES)}
    bench.rows.sort(key=lambda r: rank.get(r.stage, rank.get({"mask merge": "sam2", "detector": "fusion",
                                                               "segmenter": "sam2", "tracker": "sam2-video"}.get(r.stage, ""), 99)))

    cuda = bench.device.startswith("cuda")
    print()
    if bench.build_seconds:
        print("build (random init or load): " + ", ".join(f"{k} {v:.1f} s" for k, v in bench.build_seconds.items()))
    print(table(bench.rows, cuda))
    e2e = next((r for r in bench.rows if r.stage == "e2e"), None)
    if e2e is not None:
        print(e2e_breakdown(e2e))
    print(f"peak RSS of the whole run: {proc_memory('VmHWM') / 2**20:,.0f} MiB" + (
        f"; peak GPU memory allocated (last stage): {torch.cuda.max_memory_allocated() / 2**20:,.0f} MiB" if cuda else ""))
    from crashcast.perception.base import SpanDepthEstimator

    per_clip, per_clip_json = plan_report(plan, cfg, e2e, isinstance(bench.built.get("depth"), SpanDepthEstimator))
    print(per_clip)
    print(verdict(bench, e2e))
    if skipped:
        print(f"NOT MEASURED: {', '.join(skipped)} (past --time-budget {budget:g} s; run them with --stages)")
    print(f"benchmark wall time {time.perf_counter() - t_start:,.0f} s; before: {load_before}; after: {load_text()}")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "preset": args.preset, "weights": changed, "device": describe_device(bench), "frames": len(frames),
            "batch_size": bench.B, "dtype": str(bench.dtype), "build_seconds": bench.build_seconds,
            "rows": [asdict(r) | {"ms_per_frame": r.ms_per_frame, "fps": r.fps} for r in bench.rows],
            "per_clip": per_clip_json, "skipped": skipped,
            "goal_fps": GOAL_FPS, "verdict": verdict(bench, e2e), "load_before": load_before, "load_after": load_text(),
        }, indent=2, default=str))


if __name__ == "__main__":
    main()
