"""Extraction: clips -> perception once per clip -> window_meta.json + keyframe overlays + feature table.

Run layout (one folder):
    config.yaml                 resolved config (with its hash)
    clips/<id>/<window>/        window_meta.json, kf0.png, kf1.png, kf2.png
    features.parquet            one row per window (derived from the window_meta files)
    errors.jsonl                one line per clip that failed: clip id, stage, error
Outputs are written atomically; a rerun with the same config skips clips whose window_meta files
all exist and validate, and redoes the rest. Ctrl-C or SIGTERM stops the workers at once
(`runtime.executor.run_jobs`); the clips that finished stay, and a rerun resumes.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from crashcast.config import CrashcastConfig
from crashcast.data.video import decode, probe
from crashcast.data.windows import clip_span, make_windows
from crashcast.errors import ConfigError, CrashcastError, SchemaError, VideoError
from crashcast.features import overlays
from crashcast.features.build import build_window_meta
from crashcast.features.kinematics import window_objects
from crashcast.features.table import feature_row
from crashcast.features.window_meta import WindowMeta, read_window_meta, write_window_meta
from crashcast.perception.bundle import Backends
from crashcast.runtime.executor import Lazy, Terminated, sigterm_raises, stop_reason
from crashcast.runtime.layout import RunLayout, record_error, window_folder
from crashcast.runtime.store import atomic_write_bytes, atomic_write_text, inside, remove_partial
from crashcast.types import Clip, Window

log = logging.getLogger(__name__)

WARMUP_S = 0.5  # perceive a little before the first window so tracks exist at its first keyframe


def window_dirname(w: Window) -> str:
    return window_folder(w.phase, w.horizon_s)


@dataclass
class ClipResult:
    clip_id: str
    rows: list[dict]
    frames_decoded: int = 0
    frames_processed: int = 0
    seconds: float = 0.0
    skipped: bool = False
    window_ids: list[str] = field(default_factory=list)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # decode, perception stages, outputs


def _existing(clip_dir: Path, windows: list[Window], config_hash: str) -> list[WindowMeta] | None:
    """The clip's window_meta files when all exist, validate, match the config and name only files
    that exist inside their window folder; else None (the clip is redone)."""
    metas = []
    for w in windows:
        path = clip_dir / window_dirname(w) / RunLayout.WINDOW_META
        if not path.exists():
            return None
        try:
            m = read_window_meta(path)
            frames_ok = all(inside(path.parent, p).is_file() for p in m.frame_paths if p is not None)
        except (SchemaError, ValueError) as e:
            log.info("redoing %s: %s", w.id, e)
            return None
        if m.config_hash != config_hash or not frames_ok:
            return None
        metas.append(m)
    return metas


MIN_WINDOW_FRAMES = 3  # a window's three keyframes must be three different perceived frames


def _usable(windows: list[Window], clip: Clip, cfg: CrashcastConfig) -> list[Window]:
    """The windows long enough for three distinct perceived keyframes; the others are dropped (a
    window of one repeated frame would be fabricated data). Raises when none is left."""
    min_span = (MIN_WINDOW_FRAMES - 1) * cfg.perception.frame_step / cfg.video.fps
    keep = [w for w in windows if w.duration_s >= min_span - 1e-6]
    if not keep:
        raise VideoError(clip.video_path, f"clip {clip.id!r}: too short for any window (the longest spans "
                         f"{max(w.duration_s for w in windows):.2f} s; a window needs {min_span:.2f} s)")
    for w in windows:
        if w not in keep:
            log.warning("%s: window %s spans %.2f s, less than the %.2f s three perceived keyframes need; skipped",
                        clip.video_path, w.id, w.duration_s, min_span)
    return keep


def extract_clip(clip: Clip, run_dir: Path, cfg: CrashcastConfig, backends: Backends | Lazy | None = None) -> ClipResult:
    """Perceive one clip once and write every window's window_meta.json and overlays. `backends`:
    built once per worker and reused (a `Lazy` is built when a clip first needs it; None: here)."""
    t0 = time.time()
    info = probe(clip.video_path)
    windows = make_windows(clip, info.duration_s, cfg.windows)
    if not windows:
        raise VideoError(clip.video_path, f"clip {clip.id!r} has no window inside the video ({info.duration_s:.2f} s)")
    windows = _usable(windows, clip, cfg)
    chash = cfg.extraction_hash()
    clip_dir = RunLayout(run_dir).clip_dir(clip.id)
    done = _existing(clip_dir, windows, chash)
    if done is not None:
        return ClipResult(clip.id, [feature_row(m, cfg.features.top_k) for m in done], skipped=True,
                          window_ids=[m.window_id for m in done], seconds=time.time() - t0)
    start, end = clip_span(windows)
    t_decode = time.time()
    frames = decode(clip.video_path, max(0.0, start - WARMUP_S), end, cfg.video.fps, cfg.video.long_side, clip_id=clip.id,
                    step=cfg.perception.frame_step)  # only the perceived frames are converted and kept
    keep = sorted({t for w in windows for t in w.keyframe_times_s})
    from crashcast.perception.pipeline import perceive

    t_perceive = time.time()
    if backends is None:
        backends = Backends.build(cfg.perception, cfg.runtime)
    elif isinstance(backends, Lazy):
        backends = backends.get()
    perc = perceive(frames, cfg.perception, backends, keep_times=keep, batch_size=cfg.runtime.batch_size)
    t_outputs = time.time()
    rows = []
    for w in windows:
        objects = window_objects(perc, w, cfg.features, cfg.perception.geometry.ego_front_m, cfg.video.fps)
        wdir = clip_dir / window_dirname(w)
        remove_partial(wdir)  # what a killed run was writing here
        names: list[str | None] = [None] * 3  # no image written, none named
        if cfg.features.write_overlays:
            def frame_of(j: int) -> np.ndarray:
                return frames.frames[int(perc.source_index[j]) if perc.source_index is not None else j]

            names = overlays.write_keyframes(wdir, w, perc, frame_of, objects, caption=cfg.features.keyframe_caption)
        meta = build_window_meta(w, perc, cfg, names, objects, chash)
        write_window_meta(wdir / RunLayout.WINDOW_META, meta)
        rows.append(feature_row(meta, cfg.features.top_k))
    seconds = {"decode": t_perceive - t_decode, **perc.stage_seconds, "outputs": time.time() - t_outputs}
    return ClipResult(clip.id, rows, frames_decoded=frames.span_frames, frames_processed=perc.frames_processed,
                      seconds=time.time() - t0, window_ids=[w.id for w in windows], stage_seconds=seconds)


# ----------------------------------------------------------------------------- runs


RUN_MARK = "# config hash: "  # the first line of a run's config.yaml


def is_run(run_dir: Path) -> bool:
    """Whether `run_dir` holds a crashcast run (its config.yaml starts with RUN_MARK)."""
    from crashcast.errors import InputLimitError
    from crashcast.runtime.store import check_bounded

    try:
        path = RunLayout(run_dir).config
        check_bounded(path, what="run config.yaml")  # a FIFO would block the open, /dev/zero the readline
        with path.open(encoding="utf-8") as f:
            return f.readline(len(RUN_MARK) + 1).startswith(RUN_MARK)
    except (OSError, UnicodeDecodeError, InputLimitError):
        return False


RUN_OUTPUTS = RunLayout.OUTPUTS  # what `--new-run` removes (and nothing else)


def prepare_run(run_dir: Path, cfg: CrashcastConfig, new: bool = False) -> None:
    """Create the run folder and its config.yaml; refuse to mix outputs of a different config.
    With `new`, the previous run's outputs (RUN_OUTPUTS) are removed first, and only where a
    config.yaml says the folder is a crashcast run (a user's own `models/` elsewhere is never touched)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = RunLayout(run_dir).config
    text = f"{RUN_MARK}{cfg.hash()}\n" + cfg.to_yaml()
    if cfg_path.exists() and not is_run(run_dir):  # never overwrite or clear a folder crashcast did not make
        raise ConfigError(f"{cfg_path}: not a config.yaml crashcast wrote (not a run folder); use another --out folder")
    if new and cfg_path.exists():
        _clear_run(run_dir)
    elif cfg_path.exists():
        from crashcast.config import load_config

        hint = "use another --out folder, or pass --new-run to delete its outputs and start over there"
        try:
            old = load_config(cfg_path)
        except ConfigError as e:
            raise ConfigError(f"{run_dir}: its config.yaml cannot be read ({e}); {hint}") from None
        if old.extraction_hash() != cfg.extraction_hash():
            raise ConfigError(
                f"{run_dir}: holds outputs of a different extraction config (hash {old.extraction_hash()} vs "
                f"{cfg.extraction_hash()}); {hint}"
            )
    atomic_write_text(cfg_path, text)


def _clear_run(run_dir: Path) -> None:
    import shutil

    removed = []
    for name in RUN_OUTPUTS:
        p = run_dir / name
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        elif p.exists() or p.is_symlink():
            p.unlink()
        else:
            continue
        removed.append(name)
    if removed:
        log.warning("--new-run: removed %s from %s", ", ".join(removed), run_dir)


def _extract_job(backends: Lazy, clip: Clip, run_dir: Path, cfg_json: str) -> ClipResult:
    cfg = CrashcastConfig.model_validate_json(cfg_json)
    return extract_clip(clip, run_dir, cfg, backends)


@dataclass
class ExtractSummary:
    run_dir: Path
    ok: int
    failed: int
    skipped: int
    windows: int
    seconds: float
    frames_processed: int
    frames_decoded: int
    clip_seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)  # summed over the clips extracted (all workers)
    annotation_errors: list[CrashcastError] = field(default_factory=list)  # bad annotation rows skipped (`crashcast.api.extract`)


def extract_run(clips: list[Clip], run_dir: Path, cfg: CrashcastConfig, workers: int = 1, progress: bool = True,
                new: bool = False, executor: str = "local", address: str | None = None) -> ExtractSummary:
    """Extract every clip (failures recorded in errors.jsonl and skipped) and write features.parquet.
    `executor`: "local" (processes on this machine) or "ray" (Ray actors: a local Ray instance, or
    the cluster at `address`, e.g. "auto"; crashcast.runtime.ray_executor). The outputs are the same.
    An unknown executor, or Ray not installed, raises `ExecutorError` before anything is written."""
    import pandas as pd

    from crashcast.runtime.executors import get_executor

    runner = get_executor(executor, workers, address, runtime=cfg.runtime)  # refused before anything is written
    t0 = time.time()
    prepare_run(run_dir, cfg, new)
    remove_partial(run_dir)  # a features.parquet a killed run was writing
    errors_path = RunLayout(run_dir).errors
    if errors_path.exists():
        errors_path.unlink()  # this run's failures only; earlier ones are retried
    cfg_json = cfg.model_dump_json()
    if runner.kind == "ray":  # absolute paths: an actor's working folder is not this one (nor on this machine)
        from dataclasses import replace

        jobs = [(c.id, (replace(c, video_path=Path(c.video_path).absolute()), run_dir.absolute(), cfg_json))
                for c in clips]
    else:
        jobs = [(c.id, (c, run_dir, cfg_json)) for c in clips]
    # the backends are built once per worker, not once per clip
    setup = partial(Lazy, partial(Backends.build, cfg.perception, cfg.runtime))
    with sigterm_raises():  # SIGTERM as Ctrl-C: the workers stopped and this said before the process ends
        try:
            results = runner.run(_extract_job, jobs, f"extracting {len(clips)} clips", progress, setup=setup)
        except (KeyboardInterrupt, Terminated) as e:
            log.warning("extraction stopped by %s: the clips that finished are complete in %s; run the same command "
                        "again to resume (they are skipped, the others redone)", stop_reason(e), run_dir)
            raise
    rows, ok, failed, skipped = [], 0, 0, 0
    frames_p = frames_d = 0
    stages: dict[str, float] = {}
    for r in results:
        if r.ok:
            ok += 1
            rows += r.value.rows
            skipped += int(r.value.skipped)
            frames_p += r.value.frames_processed
            frames_d += r.value.frames_decoded
            for k, v in r.value.stage_seconds.items():
                stages[k] = stages.get(k, 0.0) + v
        else:
            failed += 1
            log.warning("clip %s failed: %s", r.key, r.error)
            record_error(run_dir, r.key, "extract", r.error or "", r.error_type)
    clip_seconds = frames_d / cfg.video.fps
    if stages:
        total = sum(stages.values())
        log.info("time per stage: %s", ", ".join(f"{k} {100 * v / total:.0f}%" for k, v in stages.items()))
    df = pd.DataFrame(rows)
    buf = df.to_parquet(index=False) if len(df) else pd.DataFrame({"window_id": []}).to_parquet(index=False)
    atomic_write_bytes(RunLayout(run_dir).features, buf)
    return ExtractSummary(run_dir, ok, failed, skipped, len(rows), time.time() - t0, frames_p, frames_d, clip_seconds, stages)
