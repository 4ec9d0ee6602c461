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
            finished = rec.add(t, annotated(frame))   # recordings the writer finished since the last call
    finally:                                     # Ctrl-C, SIGTERM turned into an exception, end of stream
        finished = rec.close()                   # waits for the writer: the rest of the finished recordings

Rules (stream times, seconds):

* A recording holds the frames with start <= t <= end: start = first trigger - pre_s (or the
  stream's first frame; never a frame an earlier recording already holds), end = last trigger +
  post_s. A trigger at or before the open recording's end extends it; a later one opens the next.
  A recording is ended by the first `add` of a frame after its end, or by `close()`; the writer
  thread then finishes its files (see Threading).
* The MP4 holds one picture per `add`, played at `fps`: frames the caller never fed (a stall) are
  not made up, so the clip then plays shorter than the stream time it covers (the JSON has the
  stream times of its first and last frames). Frames left out because the writer fell behind (see
  Falling behind) are skipped the same way, and counted in the JSON's `dropped_frames`.
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
  its recording was ended (perception running late) is not in that recording.

Threading: the caller's thread never encodes. `add` copies the frame into the ring buffer and,
while a recording is open, puts it on the queue of the recorder's one writer thread (a daemon
thread, started at the first trigger and ended by `close()`); `trigger` puts the pre-roll on that
queue (the ring's frames themselves, no copy). The writer encodes the frames, writes the MP4 and
then its JSON and applies the size cap, one recording after the other in the order they were
opened. So `add` returns the recordings the writer finished since the previous `add` or `close()`
(a recording shows up some calls after the frame that ended it), and `close()` ends the open
recording, waits for the writer to write everything queued, joins it and returns the recordings
finished and not yet returned. The recorder can be fed on after `close()` (a new writer starts at
the next trigger). Call the recorder's methods from one thread.

Falling behind: the queue holds at most round(pre_s * fps) + 1 + round(max_lag_s * fps) frames
(a whole pre-roll and `max_lag_s` seconds more). A frame that finds it full is left out of the
recording: the caller never waits for the writer, so a live loop is not stalled by it, and the
clip skips those frames (counted in the JSON's `dropped_frames`, said in a warning once per
recording). A pre-roll that does not fit whole (the writer still busy with the previous clip)
loses its oldest frames.

Errors in the writer thread (a full disk, an encoder error): the recording is given up (its
temporary file removed, no JSON), the error is logged at once and raised again, once, by the next
`add` or `close()` in the caller's thread; that call then does nothing else (the frame is not
taken; recordings already finished are returned by the call after it). The recorder goes on: a
later trigger opens a new recording.

Closing: `close(timeout_s)` waits up to `timeout_s` (60 s by default) for the writer; past that
(an encoder far too slow for what is queued) a warning is logged, the frames still queued are
skipped (counted as dropped) and the clip is finished with those written, waited for up to
ABORT_WAIT_S more; past that too (a write hung on a dead disk) a warning says the clip is left as a
temporary file, as after a SIGKILL. A process that exits without `close()` leaves the clip being
written the same way (the writer is a daemon thread).

Memory: the ring buffer holds up to round(pre_s * fps) + 1 raw RGB frames (a copy of each):
640x360 x 3 bytes x 151 frames (5 s at 30 fps) is about 104 MB, 1280x720 about 418 MB. Frames are
kept raw (no JPEG/PNG encoding) to spend no CPU per frame while nothing is recorded. The queue
shares the ring's arrays: what it adds is its frames that have left the ring, not yet encoded (a
writer that keeps up: the part of a pre-roll the stream has pushed out of the ring while it was
being encoded: the frames the stream brings in the 0.6-5 s that takes here), and at most its bound, round(pre_s * fps) + 1 +
round(max_lag_s * fps) frames (211 at 30 fps, pre_s = 5, max_lag_s = 2: 146 MB at 640x360).

CPU: nothing is encoded while no recording is open (an idle `add` copies the frame: about 0.1 ms
at 640x360). The writer thread spends what the caller's thread used to (libx264 "veryfast"; on 2
shared CPU cores, 640x360 at 30 fps, pre_s = post_s = 5: a smooth moving picture 0.6-1 s for the
pre-roll and 3-5 ms a frame; random noise, the worst case, 2-5 s for the pre-roll and 11-25 ms a
frame), but the encoder releases the GIL for most of its work, so the caller goes on. Measured
there, fed at 30 fps, the caller's time at a trigger (trigger and the next add) went from 0.6-1.6 s
(smooth) and 3-5 s (noise) when it encoded, to 1-7 ms; an add while recording from 4-5 ms
(median; 30-76 ms at most) to 0.2 ms (3-10 ms at most); no frame was left out, and close() after a
clip's end waited 1-3 ms for the writer (noise: 0.2-1 s, its flush).
"""

from __future__ import annotations

import json
import logging
import math
import os
import threading
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from crashcast.runtime.store import atomic_write_text, remove_partial

log = logging.getLogger(__name__)

_EPS = 1e-6
#: the most stride records kept for the pre-roll (records come once per stride; a bound for memory)
MAX_PRE_RECORDS = 10_000
#: seconds `close()` waits by default for the writer to write what is queued
CLOSE_TIMEOUT_S = 60.0
#: seconds `close()` waits more, past its timeout, for the writer to finish the clip without the rest
ABORT_WAIT_S = 10.0


@dataclass
class _Recording:
    """The open recording as the caller's thread sees it."""

    path: Path
    start_s: float  # first trigger - pre_s: frames before it are not recorded
    end_s: float  # last trigger + post_s
    triggers: list[dict] = field(default_factory=list)
    records: list[dict] = field(default_factory=list)
    last_t: float | None = None  # the last frame handed to it (queued or left out)
    dropped: int = 0  # frames left out: the writer's queue was full


class _Frame(NamedTuple):
    t: float
    image: np.ndarray


@dataclass
class _Open:
    path: Path
    opened_utc: str
    start_s: float


@dataclass
class _Finish:
    end_s: float
    triggers: list[dict]
    records: list[dict]
    dropped: int


_STOP = object()


@dataclass
class _Clip:
    """The recording being written, as the writer thread sees it."""

    path: Path
    opened_utc: str
    start_s: float
    writer: Any = None  # crashcast.data.video.VideoWriter, opened at the first frame
    size: tuple[int, int] = (0, 0)  # (width, height), the first frame's
    first_t: float | None = None
    last_t: float | None = None
    n_frames: int = 0
    skipped: int = 0  # queued frames skipped by a close() past its timeout
    failed: bool = False  # given up: its frames are discarded until its _Finish


class EventRecorder:
    """Record the frames around alerts to MP4 + JSON files in `folder` (see the module docstring).

    fps: the stream's frame rate (frames fed by `add` per second), also the MP4's rate.
    pre_s, post_s: seconds kept before the first trigger and after the last one of a recording.
    max_bytes: the most the folder's `<prefix>_*.mp4` files and their JSON may take together.
    prefix: the start of the file names.
    max_lag_s: seconds of frames, beyond a whole pre-roll, the writer thread may have queued before
        further frames are left out of the recording (see Falling behind).
    """

    def __init__(self, folder: str | Path, fps: float, pre_s: float = 5.0, post_s: float = 5.0,
                 max_bytes: int = 2 * 2**30, prefix: str = "event", max_lag_s: float = 2.0) -> None:
        if not (isinstance(fps, (int, float)) and math.isfinite(fps) and fps > 0):
            raise ValueError(f"fps must be a positive number, got {fps!r}")
        for name, v in (("pre_s", pre_s), ("post_s", post_s), ("max_lag_s", max_lag_s)):
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
        ring = round(self.pre_s * self.fps) + 1
        self.queue_frames = ring + round(float(max_lag_s) * self.fps)  # the writer's queue bound
        self._ring: deque[tuple[float, np.ndarray]] = deque(maxlen=ring)
        self._notes: deque[dict] = deque(maxlen=MAX_PRE_RECORDS)
        self._size: tuple[int, int] | None = None  # (width, height) of the MP4s
        self._resize_logged = False
        self._last_t: float | None = None
        self._recorded_until: float = -math.inf  # the last frame time an earlier recording holds
        self._rec: _Recording | None = None
        self._writer: _Writer | None = None
        self._done: list[Path] = []  # finished by the writer, not yet returned
        self._error: BaseException | None = None  # the writer's, not yet raised
        self._named: tuple[str, int] = ("", 0)  # the last name's time stamp and number

        if remove_partial(self.folder):  # what a killed recorder left (SIGKILL, power loss): never a clip
            log.info("event recorder: removed unfinished temporary files in %s", self.folder)

    @property
    def recording(self) -> bool:
        """Whether a recording is open (frames are being added to it)."""
        return self._rec is not None

    def add(self, t: float, frame_rgb: np.ndarray) -> list[Path]:
        """Feed one (annotated) frame at stream time t (seconds, increasing). Keeps the last pre_s
        seconds in a ring buffer; while a recording is open, queues the frame for the writer thread
        (never waits for it: a full queue leaves the frame out of the recording). Returns the MP4s
        the writer finished since the previous `add` or `close()`. Raises, once, an error the
        writer met since then (the recording given up), without taking the frame."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"frame time must be a finite number of seconds, got {t!r}")
        if self._last_t is not None and t <= self._last_t:
            raise ValueError(f"frame times must increase: {t} after {self._last_t}")
        self._raise_pending()
        frame = self._fit(frame_rgb)
        self._last_t = t
        if self._rec is not None and t > self._rec.end_s + _EPS:
            self._end()
        self._ring.append((t, frame))
        while self._ring and self._ring[0][0] < t - self.pre_s - _EPS:
            self._ring.popleft()
        self._trim_notes()
        if self._rec is not None and t >= self._rec.start_s - _EPS:
            self._hand(t, frame)
        return self._take_done()

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
        """An alert onset at t: opens a recording (its pre-roll, the ring buffer, queued for the
        writer thread) or, if one is open and t is at or before its end, extends it to t + post_s."""
        t = float(t)
        if not math.isfinite(t):
            raise ValueError(f"trigger time must be a finite number of seconds, got {t!r}")
        entry = {"time_s": t, "info": dict(info or {})}
        rec = self._rec
        if rec is not None and t <= rec.end_s + _EPS:
            rec.end_s = max(rec.end_s, t + self.post_s)
            rec.triggers.append(entry)
            return
        if rec is not None:  # past the open recording's end, before a frame after it came: end it
            self._end()
        self._open(t, entry)

    def close(self, timeout_s: float = CLOSE_TIMEOUT_S) -> list[Path]:
        """End the open recording now (Ctrl-C, SIGTERM, end of stream), wait for the writer thread
        to finish it, complete and playable, and join the thread (at most about timeout_s +
        ABORT_WAIT_S seconds; see the module docstring). Returns the MP4s finished and not yet
        returned ([] when none). Raises, once, an error the writer met. The recorder can be fed on
        afterwards."""
        if self._rec is not None:
            self._end()
        writer = self._writer
        if writer is not None:
            writer.stop()
            if not writer.join(timeout_s):
                log.warning("event recorder: the writer is still busy after %.1f s; the frames still queued "
                            "are skipped to finish the clip", timeout_s)
                writer.abort()
                if not writer.join(ABORT_WAIT_S):
                    writer.abandon()
                    log.warning("event recorder: the writer did not finish; the clip being written is left as a "
                                "temporary file (the next recorder on %s removes it; should the writer come "
                                "back, it removes it itself)", self.folder)
            self._collect(writer)
            self._writer = None
        self._raise_pending()
        return self._take_done()

    def __enter__(self) -> EventRecorder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()  # an error or Ctrl-C in the caller still leaves the clip so far, whole

    def event_files(self) -> list[Path]:
        """The folder's finished recordings (MP4s of this prefix), oldest first."""
        return _event_files(self.folder, self.prefix)

    # -- internals (the caller's thread) -------------------------------------------------------

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
            return frame[: self._size[1], : self._size[0]].copy()  # a copy even when the slice is contiguous
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
        # a name given in this millisecond may not be on disk yet (its writer still at work)
        n = self._named[1] + 1 if self._named[0] == stamp else 1
        while True:
            path = self.folder / (f"{self.prefix}_{stamp}.mp4" if n == 1 else f"{self.prefix}_{stamp}_{n}.mp4")
            if not (path.exists() or path.with_suffix(".json").exists()):
                break
            n += 1
        self._named = (stamp, n)
        return path, now.isoformat()

    def _open(self, t: float, entry: dict) -> None:
        path, opened = self._new_path()
        start = t - self.pre_s
        rec = _Recording(path, start, t + self.post_s, [entry])
        rec.records = [r for r in self._notes if float(r["time_s"]) >= start - _EPS]
        log.info("event recorder: alert at %.2f s, recording %s", t, path.name)
        if self._writer is None:
            self._writer = _Writer(self, self.queue_frames)
        self._writer.put(_Open(path, opened, start))
        self._rec = rec  # only now: a Ctrl-C before it leaves the writer a clip without frames, discarded
        pre = [(ft, f) for ft, f in self._ring if ft >= start - _EPS and ft > self._recorded_until + _EPS]
        skip = max(0, len(pre) - self._writer.room())  # the writer still busy: the oldest frames go
        for i, (ft, frame) in enumerate(pre):
            self._hand(ft, frame, leave_out=i < skip)

    def _hand(self, t: float, frame: np.ndarray, leave_out: bool = False) -> None:
        """Frame t to the open recording: onto the writer's queue, or left out when it is full."""
        rec = self._rec
        if t <= self._recorded_until + _EPS:
            return
        rec.last_t = t
        if leave_out or not self._writer.put_frame(t, frame):
            rec.dropped += 1
            if rec.dropped == 1:
                log.warning("event recorder: the writer is behind (%d frames queued); frames are left out of %s",
                            self.queue_frames, rec.path.name)

    def _end(self) -> None:
        """End the open recording: the writer finishes it after the frames queued for it."""
        rec = self._rec
        self._writer.put(_Finish(rec.end_s, rec.triggers, rec.records, rec.dropped))
        self._rec = None  # only now: after a Ctrl-C before it, close() ends it (a second _Finish does nothing)
        if rec.last_t is not None:
            self._recorded_until = rec.last_t

    def _collect(self, writer: _Writer) -> None:
        done, error = writer.take()
        self._done += done
        if error is not None and self._error is None:  # a later one was logged by the writer
            self._error = error

    def _raise_pending(self) -> None:
        if self._writer is not None:
            self._collect(self._writer)
        if self._error is not None:
            error, self._error = self._error, None
            raise error

    def _take_done(self) -> list[Path]:
        if self._writer is not None:
            self._collect(self._writer)
        done, self._done = self._done, []
        return done


class _Writer:
    """One recorder's writer thread and its queue (commands, and frames up to `capacity`): opens,
    encodes and finishes the recordings in the order they were queued."""

    def __init__(self, owner: EventRecorder, capacity: int) -> None:
        # the owner's settings, never changed: fps, pre_s, post_s, folder, prefix, max_bytes
        self.fps, self.pre_s, self.post_s = owner.fps, owner.pre_s, owner.post_s
        self.folder, self.prefix, self.max_bytes = owner.folder, owner.prefix, owner.max_bytes
        self.capacity = capacity
        self._items: deque[Any] = deque()
        self._frames = 0  # frames in _items
        self._cond = threading.Condition()
        self._abort = threading.Event()
        self._abandoned = False
        self._stopping = False
        self._done: list[Path] = []
        self._error: BaseException | None = None
        self._clip: _Clip | None = None
        self._thread = threading.Thread(target=self._run, name="crashcast-event-recorder", daemon=True)
        self._thread.start()

    # -- the caller's thread --

    def room(self) -> int:
        """How many more frames the queue takes now."""
        with self._cond:
            return self.capacity - self._frames

    def put_frame(self, t: float, image: np.ndarray) -> bool:
        """Queue a frame; False (not queued) when the queue holds `capacity` frames."""
        with self._cond:
            if self._frames >= self.capacity:
                return False
            self._items.append(_Frame(t, image))
            self._frames += 1
            self._cond.notify()
        return True

    def put(self, item: _Open | _Finish | object) -> None:
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def stop(self) -> None:
        """The thread ends after what is queued."""
        if not self._stopping:
            self._stopping = True
            self.put(_STOP)

    def abort(self) -> None:
        """Skip the frames still queued (the clips are finished with the frames written)."""
        self._abort.set()

    def abandon(self) -> None:
        """Given up on (hung past every wait): should it come back, the clip it was writing is
        discarded (its temporary file removed) and nothing more is written or deleted."""
        self._abandoned = True
        self._abort.set()

    def join(self, timeout_s: float) -> bool:
        """Whether the thread ended within timeout_s."""
        self._thread.join(timeout_s)
        return not self._thread.is_alive()

    def take(self) -> tuple[list[Path], BaseException | None]:
        """The recordings finished and the error met since the last call."""
        with self._cond:
            done, self._done = self._done, []
            error, self._error = self._error, None
        return done, error

    # -- the writer thread --

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._items:
                    self._cond.wait()
                item = self._items.popleft()
                if isinstance(item, _Frame):
                    self._frames -= 1
            if item is _STOP:
                self._discard()  # never one in order; only after a Ctrl-C between the caller's steps
                return
            try:
                if isinstance(item, _Frame):
                    self._write(item)
                elif isinstance(item, _Open):
                    self._discard()
                    self._clip = _Clip(item.path, item.opened_utc, item.start_s)
                else:
                    self._finish(item)
            except BaseException as exc:  # handed to the caller's thread
                self._give_up(exc)

    def _write(self, frame: _Frame) -> None:
        clip = self._clip
        if clip is None or clip.failed:
            return
        if self._abort.is_set():
            clip.skipped += 1
            return
        if clip.writer is None:
            from crashcast.data.video import VideoWriter

            h, w = frame.image.shape[:2]
            clip.size = (w, h)
            clip.writer = VideoWriter(clip.path, self.fps, clip.size)
        clip.writer.write(frame.image)
        clip.first_t = frame.t if clip.first_t is None else clip.first_t
        clip.last_t = frame.t
        clip.n_frames += 1

    def _discard(self) -> None:
        """Drop a clip the caller never ended (its temporary file removed)."""
        clip, self._clip = self._clip, None
        if clip is not None and clip.writer is not None:
            log.warning("event recorder: %s was never ended; discarded", clip.path.name)
            _drop(clip.writer, clip.path)

    def _give_up(self, exc: BaseException) -> None:
        """An error while opening or writing the current clip: it is discarded, the error reported."""
        clip = self._clip
        if clip is None:  # pragma: no cover - nothing open: only reported
            self._report(exc, "writing a recording")
            return
        clip.failed = True
        writer, clip.writer = clip.writer, None
        if writer is not None:
            _drop(writer, clip.path)
        self._report(exc, f"writing {clip.path.name} (given up)")

    def _report(self, exc: BaseException, what: str) -> None:
        """Log the error now; keep it (the first one not yet taken) for the caller's thread to raise."""
        log.error("event recorder: %s: %s: %s", what, type(exc).__name__, exc)
        exc.add_note(f"event recorder's writer thread: {what}")
        with self._cond:
            if self._error is None:
                self._error = exc

    def _finish(self, fin: _Finish) -> None:
        """Finish the current clip: MP4, then its JSON (or neither), then the size cap."""
        clip, self._clip = self._clip, None
        if clip is None or clip.failed:  # given up on: its error was reported
            return
        if clip.writer is None:  # triggered, but no frame came in its span
            log.warning("event recorder: no frame between %.2f s and %.2f s; nothing recorded", clip.start_s, fin.end_s)
            return
        dropped = fin.dropped + clip.skipped
        records = [r for r in fin.records if clip.first_t - _EPS <= float(r["time_s"]) <= clip.last_t + _EPS]
        records.sort(key=lambda r: float(r["time_s"]))
        timeline = {
            "video": clip.path.name,
            "opened_utc": clip.opened_utc,
            "fps": self.fps,
            "width": clip.size[0],
            "height": clip.size[1],
            "frames": clip.n_frames,
            "dropped_frames": dropped,  # left out: the writer was behind (see the module docstring)
            "start_s": clip.first_t,
            "end_s": clip.last_t,
            "planned_end_s": fin.end_s,
            "complete": clip.last_t >= fin.end_s - 1.0 / self.fps - _EPS,  # False: closed before post_s ran out
            "pre_s": self.pre_s,
            "post_s": self.post_s,
            "triggers": fin.triggers,
            "records": records,
        }
        writer, clip.writer = clip.writer, None
        if self._abandoned:  # close() gave up on this thread: a clip nobody is told of is not left behind
            _drop(writer, clip.path)
            log.warning("event recorder: a writer given up on came back; %s discarded", clip.path.name)
            return
        try:
            writer.close()  # on failure the writer removes its temporary file and this raises
            try:
                atomic_write_text(clip.path.with_suffix(".json"),
                                  json.dumps(_jsonable(timeline), indent=2, allow_nan=False) + "\n")
            except BaseException:
                clip.path.unlink(missing_ok=True)  # a pair or nothing
                raise
        except BaseException as exc:
            self._report(exc, f"finishing {clip.path.name} (given up)")
            return
        log.info("event recorder: wrote %s (%d frames, %.2f-%.2f s%s)", clip.path.name, clip.n_frames, clip.first_t,
                 clip.last_t, f", {dropped} frames left out" if dropped else "")
        with self._cond:
            self._done.append(clip.path)
        try:
            _enforce_cap(self.folder, self.prefix, self.max_bytes, clip.path)
        except Exception as exc:
            self._report(exc, f"the size cap after {clip.path.name}")


def _drop(writer: Any, path: Path) -> None:
    """Close a clip's VideoWriter without keeping it (its temporary file removed)."""
    try:
        writer.close(keep=False)
    except Exception:  # pragma: no cover - the temporary file goes regardless
        log.debug("event recorder: discarding %s", path.name, exc_info=True)


def _event_files(folder: Path, prefix: str) -> list[Path]:
    """The folder's `<prefix>_*.mp4` files, oldest (modification time) first."""
    if not folder.is_dir():
        return []
    found = []
    for p in folder.glob(f"{prefix}_*.mp4"):
        try:
            found.append((p.stat().st_mtime_ns, p.name, p))
        except FileNotFoundError:  # deleted meanwhile
            continue
    return [p for _, _, p in sorted(found)]


def _enforce_cap(folder: Path, prefix: str, max_bytes: int, newest: Path) -> None:
    """Delete the oldest recordings (MP4 + JSON) until the folder's take at most max_bytes; never `newest`."""
    def size(p: Path) -> int:
        total = 0
        for q in (p, p.with_suffix(".json")):
            try:
                total += q.stat().st_size
            except FileNotFoundError:
                pass
        return total

    files = _event_files(folder, prefix)
    sizes = {p: size(p) for p in files}
    total = sum(sizes.values())
    for p in files:
        if total <= max_bytes:
            return
        if p == newest:
            continue
        p.unlink(missing_ok=True)
        p.with_suffix(".json").unlink(missing_ok=True)
        total -= sizes[p]
        log.info("event recorder: deleted %s (folder over its %d-byte cap)", p.name, max_bytes)
    if total > max_bytes:
        log.warning("event recorder: %s alone (%d bytes) is over the %d-byte cap; kept",
                    newest.name, sizes.get(newest, 0), max_bytes)


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
