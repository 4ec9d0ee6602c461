"""Frames from a live source: a camera device (`/dev/video0`), a stream URL (RTSP, HTTP, UDP/MPEG-TS,
RTMP, SRT, TCP) or a video file played at its real rate, decoded by PyAV's FFmpeg on a reader thread.

Real time or honest about it: the reader puts frames into a bounded queue; when the consumer
(perception) falls behind, the oldest waiting frame is dropped (never an unbounded backlog) and
counted. Each frame carries its stream time (seconds from the first frame) and the monotonic clock
time it was decoded, from which the consumer measures end-to-end latency. Stream time goes on across
a reconnection or a discontinuity in the stream's own timestamps (an encoder restarted) by the wall
time that passed, so an outage reads as a gap of about its length. A source that fails or ends (camera unplugged, network lost) is reopened with
exponential backoff, and each attempt is logged; a file ends at its end.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from crashcast.data.video import SourceFrame
from crashcast.errors import CrashcastError

log = logging.getLogger(__name__)

URL_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "udp", "tcp", "srt", "rtp")
_END = object()  # what the reader queues when the source has ended for good
#: how much of a stream FFmpeg reads to find its streams before it opens (FFmpeg's default: 5 s, 5 MB);
#: a stream joined between keyframes may open before its first picture can be decoded (`_decode` waits)
PROBE_US, PROBE_BYTES = 1_000_000, 1_000_000
#: a timestamp this far (s) behind the last frame's (any source), or ahead of it beyond the wall time
#: since (a stream or camera: a file's gaps are its own), is a discontinuity, not a reordered frame
JUMP_S = 1.0
MIN_STEP_S = 1 / 120  # the least stream time between two frames across a reconnection or discontinuity


@dataclass
class LiveFrame:
    """One decoded frame: `t` its stream time (s), `captured` the monotonic clock when it was
    decoded, `frame` the picture (`SourceFrame`: converted to RGB only when used), `seq` its number
    among the frames received (1, 2, ...: a jump between two frames taken means the queue dropped
    the frames between them)."""

    t: float
    captured: float
    frame: SourceFrame
    seq: int = 0


def source_kind(source: str) -> str:
    """'url', 'device' (/dev/video*) or 'file'; a file that does not exist is a CrashcastError."""
    scheme = source.split("://", 1)[0].lower() if "://" in source else ""
    if scheme in URL_SCHEMES:
        return "url"
    if source.startswith("/dev/video"):
        return "device"
    if scheme:
        raise CrashcastError(f"{source}: unknown stream scheme {scheme!r} (known: {', '.join(URL_SCHEMES)})")
    if not Path(source).is_file():
        raise CrashcastError(f"{source}: no such file, camera device or stream URL")
    return "file"


class LiveSource:
    """A source read on a thread into a queue of at most `queue_size` frames (`frames()` iterates
    them). `realtime` (default: files only) paces decoding at the stream's own rate, as a camera
    delivers it; a file read with `realtime=False` goes as fast as the consumer takes its frames,
    none dropped. `reconnect` (default: streams and devices, not files) reopens a source that fails
    or ends, waiting 0.5 s, 1 s, 2 s ... up to `max_backoff_s` between attempts. `dropped`,
    `received`, `reconnects` and `undecodable` (packets skipped) count what happened. `open_timeout_s` bounds opening the source
    and each read (a stream with no data for that long has dropped)."""

    def __init__(self, source: str, queue_size: int = 8, realtime: bool | None = None, reconnect: bool | None = None,
                 open_timeout_s: float = 10.0, max_backoff_s: float = 8.0) -> None:
        if queue_size < 1:
            raise CrashcastError(f"queue_size={queue_size}: at least one frame")
        self.source = str(source)
        self.kind = source_kind(self.source)
        self.realtime = self.kind == "file" if realtime is None else realtime
        self.reconnect = self.kind != "file" if reconnect is None else reconnect
        self.open_timeout_s, self.max_backoff_s = open_timeout_s, max_backoff_s
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.dropped = self.received = self.reconnects = self.undecodable = 0
        self.last_t = -math.inf  # the stream time of the last frame queued
        self._last_wall = math.nan  # the monotonic clock when it was decoded
        self._started = False
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, name=f"crashcast-source {self.source}", daemon=True)

    def __enter__(self) -> LiveSource:
        self._start()
        return self

    def _start(self) -> None:
        with self._lock:
            if not self._started:
                self._started = True
                self._thread.start()

    @property
    def stopped(self) -> bool:
        """`close()` was called (the frames stopped because of it, not because the source ended)."""
        return self._stop.is_set()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop reading; the reader thread ends within the source's read timeout."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=self.open_timeout_s + 1.0)

    def frames(self) -> Iterator[LiveFrame]:
        """The frames, oldest first, until the source ends for good (or `close()`)."""
        if not self._stop.is_set():
            self._start()
        while True:
            try:
                item = self._queue.get(timeout=0.2)
            except queue.Empty:
                if self._stop.is_set() or (not self._thread.is_alive() and self._queue.empty()):
                    break
                continue
            if item is _END:
                break
            yield item
        if self.error is not None:
            raise self.error

    # ------------------------------------------------------------------ the reader thread

    def _put(self, item: object) -> None:
        """Queue `item`; when the queue is full, drop the oldest frame waiting (counted), or, for a
        file read as fast as it decodes (not `realtime`), wait: nothing is lost there."""
        if self.kind == "file" and not self.realtime:
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.2)
                    return
                except queue.Full:
                    continue
            return
        while not self._stop.is_set():
            try:
                self._queue.put_nowait(item)
                return
            except queue.Full:
                try:
                    old = self._queue.get_nowait()
                    if old is not _END:
                        with self._lock:
                            self.dropped += 1
                except queue.Empty:
                    pass

    def _open(self):
        import av

        options = {"rtsp_transport": "tcp"} if self.source.startswith(("rtsp://", "rtsps://")) else {}
        if self.kind == "url":  # FFmpeg probes 5 s of a stream before it opens; 1 s (or 1 MB) is enough to
            options |= {"analyzeduration": str(PROBE_US), "probesize": str(PROBE_BYTES)}  # start sooner
        fmt = "v4l2" if self.kind == "device" else None
        return av.open(self.source, format=fmt, options=options, timeout=self.open_timeout_s)

    def _read(self) -> None:
        offset = 0.0  # stream time where this connection's frames start (continuity across reconnections)
        backoff = 0.5
        try:
            while not self._stop.is_set():
                try:
                    self._read_once(offset)
                    backoff = 0.5
                    ended = "ended"
                except Exception as e:  # any decode or network failure: reconnect, or stop
                    ended = f"failed ({e})" if isinstance(e, CrashcastError) else f"failed ({type(e).__name__}: {e})"
                    if type(e).__name__ == "ExitError":  # FFmpeg's read timeout ("Immediate exit requested")
                        ended = f"gave no data for {self.open_timeout_s:g} s"
                    if not self.reconnect:
                        if self.received:  # it ran, then stopped (a stream with no more data): its end
                            log.warning("%s: %s; not reconnecting", self.source, ended)
                        else:
                            self.error = CrashcastError(f"{self.source}: {ended}")
                        break
                if not self.reconnect or self._stop.is_set():
                    break
                log.warning("%s: %s; reopening in %.1f s", self.source, ended, backoff)
                if self._stop.wait(backoff):
                    break
                backoff = min(backoff * 2, self.max_backoff_s)
                self.reconnects += 1
                offset = self._resume_time()
        finally:
            self._put(_END)

    def _read_once(self, offset: float) -> None:
        """Decode one connection to its end (or its failure), queueing its frames; `last_t` is the
        stream time of the last frame queued, kept when the connection fails."""
        from crashcast.data.video import _orientation

        container = self._open()
        try:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            orientation = None
            first: float | None = None
            wall0 = time.monotonic()
            log.info("%s: open (%s, %dx%d)", self.source, stream.codec_context.name, stream.width, stream.height)
            for frame in self._decode(container, stream):
                if self._stop.is_set():
                    break
                ft = frame.time
                if ft is None:
                    continue
                if first is None:
                    first = ft
                    orientation = _orientation(Path(self.source), stream, frame) if self.kind == "file" else (0, False)
                t = offset + (ft - first)
                if math.isfinite(self.last_t) and (t <= self.last_t - JUMP_S or (
                        self.kind != "file" and t > self.last_t + JUMP_S + time.monotonic() - self._last_wall)):
                    # a discontinuity (an encoder restarted, a wrapped clock; a live source's time leaping
                    # ahead of the clock): time goes on from the last frame by the wall time since it, so
                    # the stretch reads as a gap of about its length, not as a jump
                    offset, first, wall0 = self._resume_time(), ft, time.monotonic()
                    log.warning("%s: its timestamps jumped; stream time goes on at %.2f s", self.source, offset)
                    t = offset
                elif t <= self.last_t:  # a repeated or reordered timestamp: keep time moving forward
                    continue
                if self.realtime:
                    wait = wall0 + (t - offset) - time.monotonic()
                    if wait > 0 and self._stop.wait(wait):
                        break
                with self._lock:
                    self.received += 1
                    seq = self.received
                now = time.monotonic()
                self._put(LiveFrame(t, now, SourceFrame(frame, orientation, None), seq))
                self.last_t, self._last_wall = t, now
        finally:
            container.close()

    def _resume_time(self) -> float:
        """Where stream time goes on after a reconnection or a discontinuity: the last frame's time
        plus the wall time since it was decoded (an outage is a gap of about its length); 0 at first."""
        if not math.isfinite(self.last_t):
            return 0.0
        return self.last_t + max(MIN_STEP_S, time.monotonic() - self._last_wall)

    def _decode(self, container, stream) -> Iterator:
        """The stream's frames, packet by packet. A packet the decoder refuses (a stream joined between
        keyframes, before its parameter sets; a packet damaged in transit) is skipped and counted in
        `undecodable`; only when no packet has decoded for `open_timeout_s` is it the connection's failure."""
        import av

        good = time.monotonic()
        for packet in container.demux(stream):
            try:
                frames = packet.decode()
            except av.InvalidDataError:
                self.undecodable += 1
                if self.undecodable == 1:
                    log.info("%s: skipping packets the decoder cannot read yet (joined between keyframes, or "
                             "damaged); waiting for a keyframe", self.source)
                if time.monotonic() - good > self.open_timeout_s:
                    raise CrashcastError(f"no picture could be decoded for {self.open_timeout_s:g} s "
                                         f"({self.undecodable} packets skipped; no keyframe came)") from None
                continue
            good = time.monotonic()
            yield from frames
