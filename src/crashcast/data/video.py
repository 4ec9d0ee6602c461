"""Video decoding (PyAV) with timestamp-based resampling and aspect-preserving resize; MP4 writing.

Resampling is by presentation time, not frame count: the frame shown at time t is the last
source frame whose timestamp is <= t, so variable-frame-rate files come out right. Output frame
times lie on the grid k / fps from the start of the video, so spans decoded separately line up.

Decoding never stands in for frames that do not decode. Where a file is cut, FFmpeg's threaded
decoder stops quietly; a packet it rejects stops decoding too (logged). `decode` then raises when
the frames that really decode do not cover the requested span (see END_TOLERANCE_S and
GAP_LIMIT_S); streaming logs a warning instead. Frames are turned upright as the file's display
matrix or `rotate` tag says (`_orientation`).
"""

from __future__ import annotations

import logging
import math
import struct
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from crashcast.errors import VideoError
from crashcast.types import ClipFrames

log = logging.getLogger(__name__)

_EPS = 1e-4

# How much of a requested span the decoded frames must really cover (seconds; see `decode`).
# END_TOLERANCE_S: a span may end this much after the end of the last decoded frame (its start plus
#   its own duration from the container, or a typical frame period when the container gives none).
#   The header's duration and an event annotated at the very end of a video may lie a little past
#   it (windows accept events up to 0.05 s after the probed duration). The grid itself never goes
#   past the last frame's end, so nothing is made up inside this tolerance.
END_TOLERANCE_S = 0.1
# GAP_LIMIT_S: the longest stretch inside a span with no decoded frame, beyond what the previous
#   frame's own duration accounts for. A frame's duration comes from the container (MP4 stores each
#   frame's time to the next one), so the long frames of a variable-frame-rate file are frames shown,
#   not gaps; only frames that do not decode (a lost or damaged stretch the decoder skipped) leave
#   gaps. Where the container gives no durations (e.g. MPEG-TS) a frame is taken to last the median
#   time between frames: there a variable-frame-rate pause longer than this limit counts as a gap.
#   0.25 s is about 7 frames at 30 fps and 2.5 at 10 fps: a single dropped frame or timestamp jitter
#   passes, a lost group of pictures does not.
GAP_LIMIT_S = 0.25
#: the longest one frame is shown: a longer duration from the container, or a longer typical gap
#: between frames, is damage or a crafted file (it would make the grid hold one frame for hours)
MAX_FRAME_S = 2.0
#: the largest source frame decoded (each side, pixels): 8K video is 7680 x 4320
MAX_SOURCE_SIDE_PX = 8192


@dataclass(frozen=True)
class VideoInfo:
    """What a video container says about itself (no full decode)."""

    path: Path
    width: int
    height: int
    fps: float
    duration_s: float
    n_frames: int
    rotation_deg: int = 0  # clockwise quarter turn that shows the stored picture upright (see `_orientation`)
    mirrored: bool = False  # and then mirrored left-right (a mirroring display matrix)


def _open(path: Path):
    import av

    path = Path(path)
    if not path.exists():
        raise VideoError(path, "file not found")
    if path.is_dir():
        raise VideoError(path, "is a folder, not a video file")
    if not path.is_file():  # a FIFO, a device (/dev/zero), a socket: "empty" would be a lie, and reading may never end
        raise VideoError(path, "is not a regular file (a named pipe, a device or a socket), not a video file")
    if path.stat().st_size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    try:
        container = av.open(str(path))
    except (av.error.InvalidDataError, av.error.FFmpegError, UnicodeDecodeError) as e:
        raise VideoError(path, f"not a readable video (corrupt or not a video format): {e}") from None
    if not container.streams.video:
        container.close()
        raise VideoError(path, "has no video stream")
    ctx = container.streams.video[0].codec_context
    if max(ctx.width or 0, ctx.height or 0) > MAX_SOURCE_SIDE_PX:
        container.close()
        raise VideoError(path, f"frames of {ctx.width}x{ctx.height} pixels: more than the {MAX_SOURCE_SIDE_PX} a side "
                               "crashcast decodes")
    return container


def probe(path: str | Path) -> VideoInfo:
    """Size (upright, as displayed), frame rate and duration from the container headers; the display
    rotation from the first frame's side data (one frame is decoded, see `_orientation`)."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        fps = float(stream.average_rate or stream.guessed_rate or 0) or 30.0
        duration = _stated_duration(container, stream, fps)
        n = stream.frames or round(duration * fps)
        try:
            first = next(iter(container.decode(stream)), None)
        except av.error.FFmpegError:  # decode() reports a frame that does not decode; the header still reads
            first = None
        rotation, mirrored = _orientation(path, stream, first)
        w, h = stream.codec_context.width, stream.codec_context.height
        if rotation in (90, 270):
            w, h = h, w
        return VideoInfo(path, w, h, fps, duration, int(n), rotation, mirrored)
    finally:
        container.close()


def _stated_duration(container, stream, fps: float) -> float:
    """The video's duration as the header states it (the stream's, else the container's, else from
    the frame count): what a damaged or truncated file claims, not what decodes."""
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    if container.duration is not None:
        return container.duration / 1_000_000
    return (stream.frames or 0) / fps


def _header_duration(path: Path) -> float:
    """`_stated_duration` of the file at `path` (opened again: only needed to explain a short span)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        return _stated_duration(container, stream, float(stream.average_rate or stream.guessed_rate or 0) or 30.0)
    finally:
        container.close()


def _orientation(path: Path, stream, frame=None) -> tuple[int, bool]:
    """How to show a stored picture upright, i.e. as the camera saw it: (clockwise degrees, one of
    0/90/180/270; whether to mirror left-right after turning). Clockwise is the convention of the old
    `rotate` tag, and of `VideoInfo.rotation_deg`.

    Read from the display matrix first: modern FFmpeg demuxers (the MP4/MOV track matrix, for one)
    export it as DISPLAYMATRIX stream side data, and the decoder copies it onto every decoded frame.
    PyAV 18 does not expose a stream's side data, so it is read from a decoded `frame`'s side data.
    The matrix is the transformation to apply for display; FFmpeg's `av_display_rotation_get` gives
    its angle counter-clockwise, so the clockwise turn is its negative (a phone's portrait clip, -90
    there, is a quarter turn clockwise here); `_matrix_orientation` maps it as the ffmpeg CLI's
    autorotation does, mirroring matrices included. Without a matrix, the `rotate` metadata tag older
    demuxers wrote (already clockwise) is used; Matroska spells it `ROTATE`.
    """
    matrix = _display_matrix(frame) if frame is not None else None
    if matrix is not None:
        found = _matrix_orientation(matrix, path)
        if found is not None:
            return found
    meta = {str(k).lower(): v for k, v in dict(stream.metadata or {}).items()}
    try:
        return _quarter_turns(float(meta.get("rotate", 0)), path), False
    except (ValueError, TypeError):
        log.warning("%s: ignoring an unreadable rotate tag %r", path, meta.get("rotate"))
        return 0, False


def _display_matrix(frame) -> tuple[int, ...] | None:
    """The frame's DISPLAYMATRIX side data: 9 native-endian int32 (16.16 fixed point, the third
    column 2.30), row-major as libavutil/display.h lays it out; None when the frame has none."""
    for sd in frame.side_data:
        if getattr(sd.type, "name", str(sd.type)) == "DISPLAYMATRIX":
            raw = bytes(sd)
            if len(raw) >= 36:
                return struct.unpack("=9i", raw[:36])
    return None


def _matrix_rotation_ccw(m: tuple[int, ...]) -> float | None:
    """Counter-clockwise rotation of a display matrix in degrees, in [-180, 180]: FFmpeg's
    `av_display_rotation_get` (the fixed-point scale cancels); None for a degenerate matrix."""
    sx, sy = math.hypot(m[0], m[3]), math.hypot(m[1], m[4])
    if sx == 0 or sy == 0:
        return None
    return -math.degrees(math.atan2(m[1] / sy, m[0] / sx))


def _matrix_orientation(m: tuple[int, ...], path: Path) -> tuple[int, bool] | None:
    """(clockwise degrees, mirror after turning) that a display matrix asks for, decided as the
    ffmpeg CLI's autorotation does (fftools: transpose=clock/cclock, their _flip variants, hflip,
    vflip), written as a turn then a left-right mirror: cclock_flip (a transpose) is (90, True),
    clock_flip (90 clockwise, then flipped vertically) is (270, True), vflip is (180, True)."""
    ccw = _matrix_rotation_ccw(m)
    if ccw is None:
        return None
    theta = -ccw % 360.0
    theta = theta - 360.0 if theta > 359.0 else theta
    if abs(theta - 90) < 1.0:
        return 90, m[3] > 0
    if abs(theta - 270) < 1.0:
        return 270, m[3] < 0
    if abs(theta - 180) < 1.0:
        hflip, vflip = m[0] < 0, m[4] < 0
        return (180, False) if hflip and vflip else (180, True) if vflip else (0, hflip)
    if abs(theta) < 1.0:
        return (180, True) if m[4] < 0 else (0, False)
    return _quarter_turns(theta, path), False


def _quarter_turns(cw_deg: float, path: Path) -> int:
    """`cw_deg` as one of 0/90/180/270 (the nearest quarter turn; other angles are not applied)."""
    turns = round(cw_deg / 90)
    if abs(cw_deg - 90 * turns) > 1.0:
        log.warning("%s: display rotation of %.1f degrees applied as %d", path, cw_deg, (90 * turns) % 360)
    return (90 * turns) % 360


def target_size(width: int, height: int, long_side: int | None) -> tuple[int, int]:
    """(w, h) scaled so the long side is `long_side` (kept as is when None); even numbers for codecs."""
    if not long_side:
        return width, height
    scale = long_side / max(width, height)
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


class SourceFrame:
    """One decoded frame, upright, converted to RGB only when asked (most frames of a span are never
    used). `duration_s` is how long it is shown as the container states it (None where it does not,
    e.g. MPEG-TS)."""

    __slots__ = ("_frame", "_orientation", "_rgb", "duration_s", "height", "width")

    def __init__(self, frame, orientation: tuple[int, bool], duration_s: float | None) -> None:
        self._frame = frame
        self._orientation = orientation
        self._rgb: tuple[tuple[int, int] | None, np.ndarray] | None = None
        self.duration_s = duration_s
        w, h = frame.width, frame.height
        self.width, self.height = (h, w) if orientation[0] in (90, 270) else (w, h)

    def rgb(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """(H, W, 3) uint8 RGB, turned upright and resized to `size` = (width, height) when given;
        converted once (a source frame shown at several grid times is returned as the same array)."""
        if self._rgb is None or self._rgb[0] != size:
            img = self._frame.to_ndarray(format="rgb24")
            rotation, mirrored = self._orientation
            if rotation:  # np.rot90 turns counter-clockwise for positive k
                img = np.rot90(img, k=-(rotation // 90))
            if mirrored:
                img = img[:, ::-1]
            if rotation or mirrored:
                img = np.ascontiguousarray(img)
            self._rgb = (size, _resize(img, size))
        return self._rgb[1]


def iter_decoded(path: str | Path, start_s: float = 0.0) -> Iterator[tuple[float, SourceFrame]]:
    """Yield (timestamp seconds, frame) from `start_s` on (seeking to a keyframe before it). Stops at
    the first frame that does not decode (logged): what follows a damaged stretch is not used."""
    import av

    path = Path(path)
    container = _open(path)
    try:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb = float(stream.time_base) if stream.time_base else 1 / 30
        start_pts = stream.start_time if stream.start_time is not None else 0
        t0 = start_pts * tb
        if start_s > 1.0:
            try:
                container.seek(int((start_s - 1.0 + t0) / tb), stream=stream, backward=True, any_frame=False)
            except av.error.FFmpegError:
                container.seek(0)
        fallback_dt = 1.0 / float(stream.average_rate or 30)
        orientation: tuple[int, bool] | None = None
        last_t = -math.inf
        try:
            for frame in container.decode(stream):
                if frame.pts is not None:
                    t = frame.pts * tb - t0
                else:
                    t = last_t + fallback_dt if last_t > -math.inf else 0.0
                last_t = t
                if orientation is None:  # the display matrix is the stream's: read once
                    orientation = _orientation(path, stream, frame)
                duration = getattr(frame, "duration", None)
                yield t, SourceFrame(frame, orientation, duration * tb if duration and duration > 0 else None)
        except av.error.FFmpegError as e:
            if last_t == -math.inf:
                raise VideoError(path, f"cannot decode any frame from {start_s:.2f} s on {_damage_hint(path, start_s)}: {e}") from None
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


def _on_grid(
    path: Path, fps: float, start_s: float, end_s: float | None, span: _Span, strict: bool = True
) -> Iterator[tuple[int, SourceFrame]]:
    """(k, the source frame on screen at time k / fps) for the grid points of [start_s, end_s] inside
    the video: the last source frame at or before that time (the first one for earlier times).

    Checks that decoded frames cover the span: a stretch inside it with no frame for more than
    GAP_LIMIT_S beyond the previous frame's duration raises `VideoError` (`strict`) or is logged and
    left out (no grid point inside it is yielded: the frame before it is not passed off as the gap's);
    a span reaching more than END_TOLERANCE_S past the last frame raises, and with no `end_s` a
    video whose frames end before the duration its header states is logged."""
    k = math.ceil(start_s * fps - _EPS)
    prev: tuple[float, SourceFrame] | None = None
    gaps: list[float] = []
    span_end = math.inf if end_s is None else end_s
    reached_end = True
    decoded = iter_decoded(path, start_s)
    try:
        for t, frame in decoded:
            gap_from = math.inf  # where a reported gap starts (nothing is shown from there to t)
            if prev is None or t - prev[0] > GAP_LIMIT_S:  # (a gap is longer than that)
                shown_until = start_s if prev is None else prev[0] + _shown_for(prev[1], gaps)
                if t - shown_until > GAP_LIMIT_S + _EPS and shown_until < span_end - _EPS and t > start_s + _EPS:
                    _report_gap(path, shown_until, t, start_s, end_s, strict)
                    gap_from = shown_until
            if t > span_end + _EPS:
                reached_end = False
                break
            if span.source_size is None:
                span.source_size = (frame.width, frame.height)
            if prev is not None:
                if prev[0] >= start_s - 2.0:  # the frame rate of the span, not of what seeking passed through
                    gaps.append(t - prev[0])
                while k / fps < min(t, gap_from) - _EPS:  # grid points shown by the previous source frame
                    yield k, prev[1]
                    k += 1
                k = max(k, math.ceil(t * fps - _EPS))  # past a gap: its grid points have no frame
            prev = (t, frame)
    finally:  # the container and its decoder threads go now, also on an error (not when a traceback dies)
        decoded.close()
    if prev is None:
        raise VideoError(path, _no_frame_problem(path, start_s, end_s))
    span.source_fps = 1.0 / float(np.median(gaps)) if gaps and np.median(gaps) > 0 else fps
    span.video_end = prev[0] + min(1.0 / span.source_fps, MAX_FRAME_S)  # the last frame lasts a typical frame
    span.last = prev
    if reached_end:
        _check_end(path, max(span.video_end, prev[0] + _shown_for(prev[1], gaps)), start_s, end_s)
    stop = span.video_end if end_s is None else min(end_s, span.video_end - _EPS)
    k1 = math.floor(stop * fps + _EPS)
    if end_s is None or end_s >= span.video_end:
        k1 = min(k1, math.ceil(span.video_end * fps - _EPS) - 1)
    while k <= k1:  # the rest of the span shows the last source frame
        yield k, prev[1]
        k += 1


def _shown_for(frame: SourceFrame, gaps: list[float]) -> float:
    """How long `frame` is shown: its duration from the container, else the typical (median) time
    between the frames so far (0 before there are any: a gap is then counted from the frame's start)."""
    if frame.duration_s is not None:
        return min(frame.duration_s, MAX_FRAME_S)
    return min(float(np.median(gaps)), MAX_FRAME_S) if gaps else 0.0


def _span_text(start_s: float, end_s: float | None) -> str:
    return f"[{start_s:.2f}, {end_s:.2f}] s" if end_s is not None else f"[{start_s:.2f} s, the end]"


def _report_gap(path: Path, shown_until: float, t: float, start_s: float, end_s: float | None, strict: bool) -> None:
    """A stretch of the span with no decoded frame (damaged data the decoder skipped, lost packets)."""
    problem = (f"no frame decodes between {shown_until:.2f} s and {t:.2f} s ({t - shown_until:.2f} s missing, more than "
               f"the {GAP_LIMIT_S} s allowed: damaged or lost data); {_span_text(start_s, end_s)} was requested")
    if strict:
        raise VideoError(path, problem)
    log.warning("%s: %s; the frame before the gap is shown over it", path, problem)


def _check_end(path: Path, covered: float, start_s: float, end_s: float | None) -> None:
    """Decoding ended at `covered` s: raise when the span reaches well past it; with no `end_s`, log
    when the header states a clearly longer video (a truncated file, visible in streaming too)."""
    if end_s is not None and end_s <= covered + END_TOLERANCE_S:
        return
    stated = _header_duration(path)
    damaged = stated - covered > END_TOLERANCE_S
    cause = "truncated or damaged file" if damaged else "the span reaches past the end of the video"
    problem = f"frames decode only to {covered:.2f} s of the {stated:.2f} s the header states ({cause})"
    if end_s is not None:
        raise VideoError(path, f"{problem}; {_span_text(start_s, end_s)} was requested")
    if damaged:
        log.warning("%s: %s; nothing after %.2f s is used", path, problem, covered)


def _no_frame_problem(path: Path, start_s: float, end_s: float | None) -> str:
    return f"no frame decodes in {_span_text(start_s, end_s)} {_damage_hint(path, start_s)}"


def _damage_hint(path: Path, start_s: float) -> str:
    """Why nothing decodes from `start_s` on: damage when the header says there is video there."""
    stated = _header_duration(path)
    if start_s < stated - END_TOLERANCE_S:
        return f"(truncated or damaged file: the header states {stated:.2f} s)"
    return f"(past the {stated:.2f} s the header states)"


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
    span costs mostly the codec's time. Streams: memory holds the kept frames only.

    Raises `VideoError` for missing, empty, corrupt or frameless files, and when the frames that
    really decode do not cover the span (a truncated or damaged file; a span past the video's end):
    the span may end at most END_TOLERANCE_S after the last frame's end, and no stretch inside it
    may lack frames for more than GAP_LIMIT_S. With no `end_s` the span ends where frames end, and a
    video ending well before its header's duration is logged as truncated.
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
    """Write RGB frames to an H.264 MP4 (PyAV's bundled libx264), falling back to mpeg4.

    The file is written under a temporary name and renamed to `path` by `close()`; `close(keep=False)`
    (or leaving a `with` block by an exception) discards it, so a failed or killed run never leaves a
    short video under the final name, nor replaces a finished one."""

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int], crf: int = 23, preset: str = "veryfast") -> None:
        from fractions import Fraction

        import av

        from crashcast.runtime.store import atomic_path

        self.path = Path(path)
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self.container = av.open(str(self._tmp), mode="w")
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

    def close(self, keep: bool = True) -> None:
        """Finish the file and move it to `path` (`keep`), or discard it."""
        try:
            if keep:
                for packet in self.stream.encode():
                    self.container.mux(packet)
            self.container.close()
        except BaseException:
            self._atomic.__exit__(*sys.exc_info())
            raise
        if keep:
            self._atomic.__exit__(None, None, None)
        else:
            self._atomic.__exit__(RuntimeError, RuntimeError("discarded"), None)

    def __enter__(self) -> VideoWriter:
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.close(keep=exc_type is None)


def iter_resampled(path: str | Path, fps: float = 30.0, long_side: int | None = 640, every: int = 1) -> Iterator[tuple[float, np.ndarray]]:
    """Stream (time, RGB frame) on the grid k / fps, holding each source frame until the next one
    (the same rule as `decode`), resized to `long_side`; memory stays constant for long videos.
    With `every` > 1 only the grid frames k = 0, every, 2 * every, ... are yielded (the others are
    decoded, never converted). A truncated file (frames ending well before the header's duration)
    or a gap longer than GAP_LIMIT_S is logged as a warning, not raised: the stream ends at the last
    frame that decodes and holds the frame before a gap over it."""
    span = _Span()
    for k, src in _on_grid(Path(path), fps, 0.0, None, span, strict=False):
        if k % every == 0:
            yield k / fps, src.rgb(target_size(*span.source_size, long_side))


def _resize(img: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    if size is None or (img.shape[1], img.shape[0]) == size:
        return img
    return cv2.resize(img, size, interpolation=cv2.INTER_AREA)
