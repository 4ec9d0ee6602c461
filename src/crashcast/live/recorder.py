"""Event recorder, as dashcams have one: a ring buffer of the last `pre_s` seconds of (annotated)
frames; an alert opens a recording that starts with that buffer and ends `post_s` seconds after
the last alert, written as `<folder>/<prefix>_<UTC time>.mp4` with a timeline JSON beside it.

    rec = EventRecorder(Path("events"), fps=30.0, pre_s=5.0, post_s=5.0)
    try:
        for t, frame in stream:                  # stream time in seconds, increasing
            for record in strides_done_at(t):    # the risk timeline's records (time_s, risk, alert, ...)
                rec.note(record)
                if record["alert"] and is_onset(record):
                    rec.trigger(record["time_s"], {"reason": record.get("reason")})
            finished = rec.add(t, annotated(frame))
    finally:                                     # Ctrl-C, SIGTERM turned into an exception, end of stream
        rec.close()

Rules (stream times, seconds):

* A recording holds the frames with start <= t <= end: start = first trigger - pre_s (or the
  stream's first frame; never a frame an earlier recording already holds), end = last trigger +
  post_s. A trigger at or before the open recording's end extends it; a later one opens the next.
  A recording is finished by the first `add` of a frame after its end, or by `close()`.
* The MP4 holds one picture per `add`, played at `fps`: frames the caller never fed (a stall) are
  not made up, so the clip then plays shorter than the stream time it covers (the JSON has the
  stream times of its first and last frames).
* Frame size: the first frame's, each side rounded down to an even number of pixels (H.264 in
  yuv420p needs even sides); any other frame is resized to it (cv2, INTER_AREA), logged once.
* Files appear whole or not at all: the MP4 is written under a temporary name and renamed when it
  is finished (`VideoWriter`), then the JSON (`atomic_write_text`); a recording given up on
  (an error while writing it) leaves neither.
* Killed hard (SIGKILL, power loss), a recorder leaves its unfinished clip as a hidden temporary
  file (`.<name>.<pid>-<hex>.part.mp4`); the next EventRecorder on the folder removes it. Ctrl-C and
  SIGTERM are the caller's to turn into an exception (e.g. `signal.signal(signal.SIGTERM,
  handler)` raising KeyboardInterrupt) that reaches `close()` or the `with` block's end.
* Size cap: after each finished recording, the oldest `<prefix>_*.mp4` files of the folder (by
  modification time) are deleted with their JSON until the total is at most `max_bytes`. The
  recording just finished is never deleted; when it alone is over the cap a warning is logged.
* Stride records (`note`) are kept for `pre_s` seconds and, while a recording is open, added to it;
  its JSON holds those whose `time_s` lies between its first and last frames. A record noted after
  its recording was finished (perception running late) is not in that recording.

Memory: the ring buffer holds up to round(pre_s * fps) + 1 raw RGB frames (a copy of each):
640x360 x 3 bytes x 151 frames (5 s at 30 fps) is about 104 MB, 1280x720 about 418 MB. Frames are
kept raw (no JPEG/PNG encoding) to spend no CPU per frame while nothing is recorded.

CPU: nothing is encoded while no recording is open (an idle `add` copies the frame: about 0.1 ms
at 640x360). A trigger encodes the whole pre-roll at once in the caller's thread (libx264
"veryfast"), then each `add` encodes one frame, and `close()` flushes the encoder. Measured on 2
shared CPU cores, 640x360 at 30 fps, pre_s = post_s = 5: a smooth moving picture took 0.6 s at the
trigger and about 3 ms a frame; random noise (the worst case) 2 s, 11 ms a frame and 1.9 s at
close. A live loop that cannot stall that long should call the recorder from a thread of its own.

Not thread-safe: call it from one thread.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_EPS = 1e-6
#: the most stride records kept for the pre-roll (records come once per stride; a bound for memory)
MAX_PRE_RECORDS = 10_000


@dataclass
class _Recording:
    path: Path
    writer: Any  # crashcast.data.video.VideoWriter
    start_s: float  # first trigger - pre_s: frames before it are not recorded
    end_s: float  # last trigger + post_s
    triggers: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    first_t: float | None = None
    last_t: float | None = None
    n_frames: int = 0
    opened_utc: str = ""


class EventRecorder:
    """Record the frames around alerts to MP4 + JSON files in `folder` (see the module docstring).

    fps: the stream's frame rate (frames fed by `add` per second), also the MP4's rate.
    pre_s, post_s: seconds kept before the first trigger and after the last one of a recording.
    max_bytes: the most the folder's `<prefix>_*.mp4` files and their JSON may take together.
    prefix: the start of the file names.
    """

    def __init__(self, folder: str | Path, fps: float, pre_s: float = 5.0, post_s: float = 5.0,
                 max_bytes: int = 2 * 2**30, prefix: str = "event") -> None:
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        for name, v in (("pre_s", pre_s), ("post_s", post_s)):
            if not (isinstance(v, (int, float)) and math.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a number of seconds >= 0, got {v!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive whole number of bytes, got {max_bytes!r}")
        if not prefix or os.sep in prefix or (os.altsep and os.altsep in prefix) or prefix.startswith("."):
            raise ValueError(f"prefix must be a plain file-name start (no folder, not hidden), got {prefix!r}")
        self.folder = Path(folder)
        self.fps = float(fps)
        self.pre_s = float(pre_s)
        self.post_s = float(post_s)
        self.max_bytes = max_bytes
        self.prefix = prefix
        self._ring: deque[tuple[float, np.ndarray]] = deque(maxlen=round(self.pre_s * self.fps) + 1)
        self._notes: deque[dict] = deque(maxlen=MAX_PRE_RECORDS)
        self._size: tuple[int, int] | None = None  # (width, height) of the MP4s
        self._resize_logged = False
        self._last_t: float | None = None
        self._recorded_until: float = -math.inf  # the last frame time an earlier recording holds
        self._rec: _Recording | None = None
        from crashcast.runtime.store import remove_partial

        if remove_partial(self.folder):  # what a killed recorder left (SIGKILL, power loss): never a clip
            log.info("event recorder: removed unfinished temporary files in %s", self.folder)

    @property
    def recording(self) -> bool:
        """Whether a recording is open."""
        return self._rec is not None

    def add(self, t: float, frame_rgb: np.ndarray) -> list[Path]:
        """Feed one (annotated) frame at stream time t (seconds, increasing). Keeps the last pre_s
        seconds in a ring buffer; while a recording is open, writes the frame to it. Returns the
        MP4s finished by this call (a recording ends post_s after its last trigger)."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"frame time must be a finite number of seconds, got {t!r}")
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"frame times must increase: {t} after {self._last_t}")
        frame = self._fit(frame_rgb)
        self._last_t = t
        finished: list[Path] = []
        if self._rec is not None and t > self._rec.end_s + _EPS:
            finished += self._finish()
        self._ring.append((t, frame))
        while self._ring and self._ring[0][0] < t - self.pre_s - _EPS:
            self._ring.popleft()
        self._trim_notes()
        if self._rec is not None and t >= self._rec.start_s - _EPS:
            self._write(t, frame)
        return finished

    def note(self, record: dict) -> None:
        """One stride's JSON record (time_s, risk, alert, reason, ...): kept for the pre_s window
        and written into the open recording's timeline JSON."""
        try:
            time_s = float(record["time_s"])
        except (KeyError, TypeError, ValueError):
            raise ValueError(f"a stride record needs a number time_s, got {record!r}") from None
        if not math.isfinite(time_s):
            raise ValueError(f"a stride record's time_s must be finite, got {time_s!r}")
        record = dict(record)
        self._notes.append(record)
        self._trim_notes()
        if self._rec is not None:
            self._rec.records.append(record)

    def trigger(self, t: float, info: dict | None = None) -> None:
        """An alert onset at t: opens a recording (pre-roll = the ring buffer) or, if one is open
        and t is at or before its end, extends it to t + post_s."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"trigger time must be a finite number of seconds, got {t!r}")
        entry = {"time_s": t, "info": dict(info or {})}
        rec = self._rec
        if rec is not None and t <= rec.end_s + _EPS:
            rec.end_s = max(rec.end_s, t + self.post_s)
            rec.triggers.append(entry)
            return
        if rec is not None:  # past the open recording's end, before a frame after it came: finish it
            self._finish()
        self._open(t, entry)

    def close(self) -> list[Path]:
        """Finish the open recording now (Ctrl-C, SIGTERM, end of stream), complete and playable.
        Returns its MP4 ([] when none was open). The recorder can be fed on afterwards."""
        return self._finish() if self._rec is not None else []

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # an error or Ctrl-C in the caller still leaves the clip so far, whole

    # -- internals ---------------------------------------------------------------------------

    def _fit(self, frame_rgb: np.ndarray) -> np.ndarray:
        frame = np.asarray(frame_rgb)
        if frame.ndim != 3 or frame.shape[2] != 3 or frame.dtype != np.uint8:
            raise ValueError(f"a frame must be an RGB uint8 array of shape (height, width, 3), "
                             f"got {frame.dtype} {frame.shape}")
        h, w = frame.shape[:2]
        if self._size is None:
            if w < 2 or h < 2:
                raise ValueError(f"a frame of {w}x{h} pixels is too small to record")
            self._size = (w - w % 2, h - h % 2)
        if (w, h) == self._size:
            return frame.copy()
        if (w - w % 2, h - h % 2) == self._size:  # the first frame's odd last row / column
            return np.ascontiguousarray(frame[: self._size[1], : self._size[0]])
        import cv2

        if not self._resize_logged:
            log.info("event recorder: frames of %dx%d resized to the recording size %dx%d", w, h, *self._size)
            self._resize_logged = True
        return cv2.resize(frame, self._size, interpolation=cv2.INTER_AREA)

    def _trim_notes(self) -> None:
        latest = max(self._last_t if self._last_t is not None else -math.inf,
                     float(self._notes[-1]["time_s"]) if self._notes else -math.inf)
        while self._notes and float(self._notes[0]["time_s"]) < latest - self.pre_s - _EPS:
            self._notes.popleft()

    def _new_path(self) -> tuple[Path, str]:
        now = datetime.now(UTC)
        stamp = now.strftime("%Y%m%dT%H%M%S") + f".{now.microsecond // 1000:03d}Z"
        path = self.folder / f"{self.prefix}_{stamp}.mp4"
        n = 2
        while path.exists() or path.with_suffix(".json").exists():
            path = self.folder / f"{self.prefix}_{stamp}_{n}.mp4"
            n += 1
        return path, now.isoformat()

    def _open(self, t: float, entry: dict) -> None:
        from crashcast.data.video import VideoWriter

        self.folder.mkdir(parents=True, exist_ok=True)
        path, opened = self._new_path()
        start = t - self.pre_s
        if self._size is None:  # a trigger before any frame: the writer starts with the first frame
            writer = None
        else:
            writer = VideoWriter(path, self.fps, self._size)
        self._rec = _Recording(path, writer, start, t + self.post_s, [entry], opened_utc=opened)
        self._rec.records = [r for r in self._notes if float(r["time_s"]) >= start - _EPS]
        log.info("event recorder: alert at %.2f s, recording %s", t, path.name)
        try:
            for ft, frame in self._ring:
                if ft >= start - _EPS and ft > self._recorded_until + _EPS:
                    self._write(ft, frame)
        except BaseException:
            self._abandon()
            raise

    def _write(self, t: float, frame: np.ndarray) -> None:
        rec = self._rec
        if t <= self._recorded_until + _EPS:
            return
        if rec.writer is None:
            from crashcast.data.video import VideoWriter

            rec.writer = VideoWriter(rec.path, self.fps, self._size)
        rec.writer.write(frame)
        rec.first_t = t if rec.first_t is None else rec.first_t
        rec.last_t = t
        rec.n_frames += 1

    def _abandon(self) -> None:
        rec, self._rec = self._rec, None
        if rec is not None and rec.writer is not None:
            try:
                rec.writer.close(keep=False)
            except Exception:  # pragma: no cover - the temporary file goes regardless
                log.exception("event recorder: discarding %s", rec.path.name)

    def _finish(self) -> list[Path]:
        """Finish the open recording: MP4, then its JSON, then the size cap."""
        from crashcast.runtime.store import atomic_write_text

        rec, self._rec = self._rec, None
        if rec.writer is None or rec.n_frames == 0:  # triggered, but no frame came in its span
            if rec.writer is not None:
                rec.writer.close(keep=False)
            log.warning("event recorder: no frame between %.2f s and %.2f s; nothing recorded", rec.start_s, rec.end_s)
            return []
        rec.writer.close()  # on failure the writer removes its temporary file and this raises
        self._recorded_until = rec.last_t
        records = [r for r in rec.records if rec.first_t - _EPS <= float(r["time_s"]) <= rec.last_t + _EPS]
        records.sort(key=lambda r: float(r["time_s"]))
        timeline = {
            "video": rec.path.name,
            "opened_utc": rec.opened_utc,
            "fps": self.fps,
            "width": self._size[0],
            "height": self._size[1],
            "frames": rec.n_frames,
            "start_s": rec.first_t,
            "end_s": rec.last_t,
            "planned_end_s": rec.end_s,
            "complete": rec.last_t >= rec.end_s - 1.0 / self.fps - _EPS,  # False: closed before post_s ran out
            "pre_s": self.pre_s,
            "post_s": self.post_s,
            "triggers": rec.triggers,
            "records": records,
        }
        try:
            atomic_write_text(rec.path.with_suffix(".json"),
                              json.dumps(_jsonable(timeline), indent=2, allow_nan=False) + "\n")
        except BaseException:
            rec.path.unlink(missing_ok=True)  # a pair or nothing
            raise
        log.info("event recorder: wrote %s (%d frames, %.2f-%.2f s)", rec.path.name, rec.n_frames, rec.first_t, rec.last_t)
        self._enforce_cap(rec.path)
        return [rec.path]

    def event_files(self) -> list[Path]:
        """The folder's finished recordings (MP4s of this prefix), oldest first."""
        if not self.folder.is_dir():
            return []
        found = []
        for p in self.folder.glob(f"{self.prefix}_*.mp4"):
            try:
                found.append((p.stat().st_mtime_ns, p.name, p))
            except FileNotFoundError:  # deleted meanwhile
                continue
        return [p for _, _, p in sorted(found)]

    def _enforce_cap(self, newest: Path) -> None:
        def size(p: Path) -> int:
            total = 0
            for q in (p, p.with_suffix(".json")):
                try:
                    total += q.stat().st_size
                except FileNotFoundError:
                    pass
            return total

        files = self.event_files()
        sizes = {p: size(p) for p in files}
        total = sum(sizes.values())
        for p in files:
            if total <= self.max_bytes:
                return
            if p == newest:
                continue
            p.unlink(missing_ok=True)
            p.with_suffix(".json").unlink(missing_ok=True)
            total -= sizes[p]
            log.info("event recorder: deleted %s (folder over its %d-byte cap)", p.name, self.max_bytes)
        if total > self.max_bytes:
            log.warning("event recorder: %s alone (%d bytes) is over the %d-byte cap; kept",
                        newest.name, sizes.get(newest, 0), self.max_bytes)


def _jsonable(obj: Any) -> Any:
    """`obj` with numpy scalars and arrays as Python values and NaN / infinity as null."""
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if obj is None or isinstance(obj, (str, int, float, bool)):
        return obj
    if isinstance(obj, Path):
        return str(obj)
    return str(obj)
