"""Whether a preset keeps up with real time on this machine, measured before a live source opens.

`work_per_stride` runs the risk model and the preset's perception (its backends, built once and then
used for the stream) causally over a short synthetic driving scene (crashcast's own renderer: a
lead car braking ahead, at the frame size perception will see) and returns the seconds of work one
stride took, the first stride left out (lazy initialisation: imports, caches). It is an estimate:
a real scene with more objects costs more per stride for the model presets, and `watch` says what
it measured on the stream itself after its first strides. The frames are rendered before the
clock starts, so rendering is not counted.
"""

from __future__ import annotations

import logging
import statistics
import time

import numpy as np

from crashcast.config import CrashcastConfig
from crashcast.perception.pipeline import Backends
from crashcast.prediction import Stepper
from crashcast.risk.alerts import AlertPolicy
from crashcast.risk.models import RiskModel

log = logging.getLogger(__name__)

PROBE_STRIDES = 3  # the first builds lazily-initialised state and is not counted
DEFAULT_SIZE = (1280, 720)  # the frame size assumed when the preset keeps the source's own size


def probe_size(cfg: CrashcastConfig) -> tuple[int, int]:
    """The 16:9 frame size perception sees for a 1920x1080 source under `video.long_side`."""
    from crashcast.data.video import target_size

    if cfg.video.long_side is None:
        return DEFAULT_SIZE
    return target_size(1920, 1080, cfg.video.long_side)


def probe_frames(width: int, height: int, fps: float, seconds: float) -> list[np.ndarray]:
    """`seconds` of a synthetic scene (RGB uint8) ending at its collision: a lead car braking."""
    from crashcast.data.synthetic import (
        Renderer,
        SynthConfig,
        clip_id_for,
        clip_rng,
        make_scenario,
        scenario_for,
    )

    cfg = SynthConfig(width=width, height=height, fps=fps)
    rng = clip_rng(0, 0)
    scene = make_scenario(scenario_for(0), rng, cfg, clip_id_for(0, 0))
    renderer = Renderer(cfg, rng)
    s_ego = np.concatenate([[0.0], np.cumsum(scene.ego_speed[:-1] / fps)])
    n = min(len(s_ego), round(seconds * fps))
    end = len(s_ego) if not np.isfinite(scene.time_of_event_s) else min(len(s_ego), round(scene.time_of_event_s * fps))
    first = max(0, end - n)
    return [renderer.frame(scene, k, float(s_ego[k]))[0] for k in range(first, first + n)]


def work_per_stride(model: RiskModel, cfg: CrashcastConfig, backends: Backends, stride_s: float, threshold: float,
                    policy: AlertPolicy, annotate: bool = False) -> float | None:
    """The median seconds of work per stride (perception, the model and, with `annotate`, drawing each
    frame as the event recorder needs it) over strides 2..PROBE_STRIDES of the probe scene; None when
    the scene (about 10 s) holds fewer than 2 strides."""
    fps = cfg.video.fps
    w, h = probe_size(cfg)
    frames = probe_frames(w, h, fps, PROBE_STRIDES * stride_s + 1 / fps)
    stepper = Stepper(model, cfg, stride_s, threshold, policy, "probe", backends)
    seconds: list[float] = []
    try:
        t0 = time.perf_counter()
        for k, frame in enumerate(frames):
            row = stepper.feed(k / fps, frame)
            if annotate:
                stepper.annotated(frame, k / fps)
            if row is not None:
                now = time.perf_counter()
                seconds.append(now - t0)
                t0 = now
    finally:
        stepper.close()
    if len(seconds) < 2:  # a stride longer than a third of the scene
        return None
    return statistics.median(seconds[1:])


def keep_up_message(per_stride_s: float, stride_s: float, preset: str, measured_on: str) -> tuple[int, str]:
    """(logging level, sentence) saying whether `per_stride_s` of work keeps up with `stride_s`: it does
    with a fifth of the stride to spare, is at its limit up to the stride, and falls behind beyond it."""
    said = f"{per_stride_s:.2f} s of work per {stride_s:.2f} s stride with the {preset} preset"
    if per_stride_s <= 0.8 * stride_s:
        return logging.INFO, f"keeping up ({measured_on}): {said}"
    if per_stride_s <= stride_s:
        return logging.WARNING, (f"at the limit ({measured_on}): {said}; frames will be dropped whenever a stride "
                                 "takes longer (a faster preset, a GPU, or a longer --stride)")
    share = 1.0 - stride_s / per_stride_s
    return logging.WARNING, (f"falling behind ({measured_on}): {said} on this machine; expect about "
                             f"{100 * share:.0f} % of frames dropped (a faster preset, a GPU, or a longer --stride)")
