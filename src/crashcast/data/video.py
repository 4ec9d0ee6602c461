"""Video decoding (PyAV) with timestamp-based resampling and aspect-preserving resize; MP4 writing.

Resampling is by presentation time, not frame count: the frame shown at time t is the last
source frame whose timestamp is <= t, so variable-frame-rate files come out right. Output frame
times lie on the grid k / fps from the start of the video, so spans decoded separately line up.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from crashcast.errors import VideoError
from crashcast.types import ClipFrames

log = logging.getLogger(__name__)

_EPS = 1e-4


@dataclass(frozen=True)
class VideoInfo:
    """What a video container says about itself (no full decode)."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    n_frames: int
    rotation_deg: int = 0


def _open(path: Path):
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_dir():
        raise VideoError(path, "is a folder, not a video file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(path, f"not a readable video (corrupt or not a video format): {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "has no video stream")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Size, frame rate and duration from the container headers."""
    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        if stream.duration is not None and stream.time_base is not None:
            duration = float(stream.duration * stream.time_base)
        elif container.duration is not None:
            duration = container.duration / 1_000_000
        else:
            duration = (stream.frames or 0) / fps
        n = stream.frames or round(duration * fps)
        rotation = _rotation(stream)
        w, h = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(path, w, h, fps, duration, int(n), rotation)
    finally:
        container.close()


def _rotation(stream) -> int:
    """Display rotation from stream metadata or side data (degrees, one of 0/90/180/270)."""
    rot = 0
    try:
        meta = dict(stream.metadata or {})
        if "rotate" in meta:
            rot = int(float(meta["rotate"]))
    except (ValueError, TypeError):
        rot = 0
    return rot % 360


def target_size(width: int, height: int, long_side: int | None) -> tuple[int, int]:
    """(w, h) scaled so the long side is `long_side` (kept as is when None); even numbers for codecs."""
    if not long_side:
        return width, height
    scale = long_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class SourceFrame:
    """One decoded frame, converted to RGB only when asked (most frames of a span are never used)."""

    __slots__ = ("_frame", "_rgb", "_rotation", "height", "width")

    def __init__(self, frame, rotation: int) -> None:
        self._frame = frame
        self._rotation = rotation
        self._rgb: tuple[tuple[int, int] | None, np.ndarray] | None = None
        w, h = frame.width, frame.height
        self.width, self.height = (h, w) if rotation in (90, 270) else (w, h)

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB, resized to `size` = (width, height) when given; converted once (a
        source frame shown at several grid times is returned as the same array)."""
        if self._rgb is None or self._rgb[0] != size:
            img = self._frame.to_ndarray(format="rgb24")
            if self._rotation:
                img = np.ascontiguousarray(np.rot90(img, k=-(self._rotation // 90)))
            self._rgb = (size, _resize(img, size))
        return self._rgb[1]


def iter_decoded(path: str | Path, start_s: float = 0.0) -> Iterator[tuple[float, SourceFrame]]:
    """Yield (timestamp seconds, frame) from `start_s` on (seeking to a keyframe before it)."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rotation = _rotation(stream)
        tb = float(stream.time_base) if stream.time_base else 1 / 30
        start_pts = stream.start_time if stream.start_time is not None else 0
        t0 = start_pts * tb
        if start_s > 1.0:
            try:
                container.seek(int((start_s - 1.0 + t0) / tb), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                container.seek(0)
        fallback_dt = 1.0 / float(stream.average_rate or 30)
        last_t = -math.inf
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = frame.pts * tb - t0
                else:
                    t = last_t + fallback_dt if last_t > -math.inf else 0.0
                last_t = t
                yield t, SourceFrame(frame, rotation)
        except av.error.FFmpegError as e:
            if last_t == -math.inf:
                raise VideoError(path, f"cannot decode any frame: {e}") from None
            log.warning("%s: decoding stopped at %.2f s (%s); using the frames before it", path, last_t, e)
    finally:
        container.close()


@dataclass
class _Span:
    """What reading a span found out: filled in while `_on_grid` runs (source size at the first
    frame; frame rate and end of the video when it is done)."""

    source_size: tuple[int, int] | None = None
    source_fps: float = 0.0
    video_end: float = 0.0
    last: tuple[float, SourceFrame] | None = None


def _on_grid(path: Path, fps: float, start_s: float, end_s: float | None, span: _Span) -> Iterator[tuple[int, SourceFrame]]:
    """(k, the source frame on screen at time k / fps) for the grid points of [start_s, end_s] inside
    the video: the last source frame at or before that time (the first one for earlier times)."""
    k = math.ceil(start_s * fps - _EPS)
    prev: tuple[float, SourceFrame] | None = None
    gaps: list[float] = []
    for t, frame in iter_decoded(path, start_s):
        if end_s is not None and t > end_s + _EPS:
            break
        if span.source_size is None:
            span.source_size = (frame.width, frame.height)
        if prev is not None:
            if prev[0] >= start_s - 2.0:  # the frame rate of the span, not of what seeking passed through
                gaps.append(t - prev[0])
            while k / fps < t - _EPS:  # grid points shown by the previous source frame
                yield k, prev[1]
                k += 1
        prev = (t, frame)
    if prev is None:
        raise VideoError(path, "no decodable video frames" + (f" in [{start_s:.2f}, {end_s:.2f}] s" if end_s else ""))
    span.source_fps = 1.0 / float(np.median(gaps)) if gaps and np.median(gaps) > 0 else fps
    span.video_end = prev[0] + (1.0 / span.source_fps)  # the last frame lasts a typical frame
    span.last = prev
    stop = span.video_end if end_s is None else min(end_s, span.video_end - _EPS)
    k1 = math.floor(stop * fps + _EPS)
    if end_s is None or end_s >= span.video_end:
        k1 = min(k1, math.ceil(span.video_end * fps - _EPS) - 1)
    while k <= k1:  # the rest of the span shows the last source frame
        yield k, prev[1]
        k += 1


def decode(
    path: str | Path,
    start_s: float = 0.0,
    end_s: float | None = None,
    fps: float = 30.0,
    long_side: int | None = 640,
    clip_id: str | None = None,
    step: int = 1,
) -> ClipFrames:
    """Decode [start_s, end_s] resampled to `fps` by timestamp and resized to `long_side`.

    Frame times are the grid points k / fps inside the span and inside the video. With `step` > 1
    only every step-th grid frame is kept, counted back from the grid point at `end_s` (from the
    span's first one when there is no `end_s`); the others are decoded but never converted, so a
    span costs mostly the codec's time. Streams: memory holds the kept frames only. Raises
    `VideoError` for missing, empty, corrupt or frameless files.
    """
    if step < 1:
        raise ValueError(f"step must be >= 1, got {step}")
    path = Path(path)
    start_s = max(0.0, start_s)
    k_ref = math.floor(end_s * fps + _EPS) if end_s is not None else math.ceil(start_s * fps - _EPS)
    span = _Span()
    times: list[float] = []
    kept: list[np.ndarray] = []
    n_grid = 0
    for k, src in _on_grid(path, fps, start_s, end_s, span):
        n_grid += 1
        if (k_ref - k) % step == 0:
            times.append(k / fps)
            kept.append(src.rgb(target_size(*span.source_size, long_side)))
    if n_grid == 0 and span.last is not None:  # a span shorter than one grid step: its one frame
        n_grid = 1
        times.append(max(start_s, span.last[0]))
        kept.append(span.last[1].rgb(target_size(*span.source_size, long_side)))
    w, h = target_size(*span.source_size, long_side)
    return ClipFrames(
        clip_id=clip_id or path.stem,
        frames=np.stack(kept) if kept else np.empty((0, h, w, 3), np.uint8),
        times_s=np.array(times, dtype=np.float64),
        fps=fps,
        source_size=span.source_size,
        source_fps=span.source_fps,
        duration_s=float(span.video_end),
        step=step,
        span_frames=n_grid,
    )


class VideoWriter:
    """Write RGB frames to an H.264 MP4 (PyAV's bundled libx264), falling back to mpeg4."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], crf: int = 23, preset: str = "veryfast") -> None:
        from fractions import Fraction

        import av

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(str(self.path), mode="w")
        rate = Fraction(fps).limit_denominator(1001)
        try:
            self.stream = self.container.add_stream("libx264", rate=rate)
            self.stream.options = {"crf": str(crf), "preset": preset}
        except (av.error.FFmpegError, ValueError):
            self.stream = self.container.add_stream("mpeg4", rate=rate)
        self.stream.width, self.stream.height = size
        self.stream.pix_fmt = "yuv420p"

    def write(self, frame_rgb: np.ndarray) -> None:
        import av

        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame_rgb), format="rgb24")
        for packet in self.stream.encode(frame):
            self.container.mux(packet)

    def close(self) -> None:
        for packet in self.stream.encode():
            self.container.mux(packet)
        self.container.close()

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def iter_resampled(path: str | Path, fps: float = 30.0, long_side: int | None = 640, every: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """Stream (time, RGB frame) on the grid k / fps, holding each source frame until the next one
    (the same rule as `decode`), resized to `long_side`; memory stays constant for long videos.
    With `every` > 1 only the grid frames k = 0, every, 2 * every, ... are yielded (the others are
    decoded, never converted)."""
    span = _Span()
    for k, src in _on_grid(Path(path), fps, 0.0, None, span):
        if k % every == 0:
            yield k / fps, src.rgb(target_size(*span.source_size, long_side))


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
