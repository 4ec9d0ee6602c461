"""The live source joined mid-stream, as a camera already sending: the packets before the next
keyframe cannot be decoded (no parameter sets yet); they are skipped and the pictures start at that
keyframe, instead of the connection failing."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_video_as

from crashcast.errors import CrashcastError
from crashcast.live.replay import replay_in_thread
from crashcast.live.source import LiveSource

FPS, GOP = 30, 120  # a keyframe every 4 s: longer than crashcast lets FFmpeg probe a stream before it opens


def _picture(i: int) -> np.ndarray:
    """Frame i: a flat gray of level 40 + i (each frame tells its index)."""
    return np.full((180, 320, 3), 40 + i, np.uint8)


def _clip(path: Path, seconds: float) -> Path:
    n = round(seconds * FPS)
    return write_video_as(path, [_picture(i) for i in range(n)], [i / FPS for i in range(n)], rate=FPS,
                          keyframe_interval=GOP)


def test_a_stream_joined_between_keyframes_starts_at_the_next_keyframe(tmp_path):
    clip = _clip(tmp_path / "camera.mp4", 6.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = replay_in_thread(clip, f"udp://127.0.0.1:{port}?pkt_size=1316", start_after_s=0.0)
    time.sleep(1.3)  # the camera has been sending for 1.3 s: the receiver joins after its first keyframe
    src = LiveSource(f"udp://127.0.0.1:{port}?overrun_nonfatal=1", queue_size=1000, reconnect=False,
                     open_timeout_s=5.0)
    with src:
        frames = [(f.t, f.frame.rgb((320, 180))) for f in src.frames()]
    sender.join(timeout=10)
    assert src.undecodable > 0  # the packets before the keyframe at 4 s
    assert len(frames) >= 50  # the keyframe at 4 s and what followed it (up to 60 frames)
    assert frames[0][0] == 0.0  # stream time starts at the first picture
    # which picture came first: its gray level tells its index (within the YUV round trip's 2 levels),
    # that of the keyframe at 4 s
    assert abs(float(frames[0][1].mean()) - 40 - GOP) <= 2
    assert abs(frames[1][0] - 1 / FPS) < 1e-3  # the file stores ms timestamps


class _Frame:
    def __init__(self, t: float) -> None:
        self.time, self.width, self.height = t, 32, 18


class _Container:
    """A PyAV container stand-in whose frames have the given timestamps; then it ends or fails."""

    class _Stream:
        class codec_context:  # PyAV's attribute name
            name = "fake"

        width, height, thread_type = 32, 18, None

    def __init__(self, times: list[float], fail: bool, pause_s: float = 0.0) -> None:
        self.times, self.fail, self.pause_s = times, fail, pause_s
        self.streams = type("S", (), {"video": [self._Stream()]})()

    def close(self) -> None:
        pass


def _fake_source(monkeypatch, connections: list[_Container], **kwargs) -> LiveSource:
    src = LiveSource("udp://127.0.0.1:9?x", queue_size=10_000, realtime=False, **kwargs)
    pending = list(connections)
    monkeypatch.setattr(src, "_open", lambda: pending.pop(0) if pending else _Container([], fail=True))

    def decode(container, stream):
        for t in container.times:
            yield _Frame(t)
        time.sleep(container.pause_s)
        if container.fail:
            raise OSError("connection lost")

    monkeypatch.setattr(src, "_decode", decode)
    return src


def test_an_encoder_restart_is_a_discontinuity_not_an_hour_of_skipped_frames(monkeypatch):
    """The stream's timestamps go back to 0 after 2 s (its encoder restarted): the frames after it are
    kept, their stream time going on from the last frame's."""
    before = [3600 + i / 30 for i in range(60)]
    after = [i / 30 for i in range(30)]
    src = _fake_source(monkeypatch, [_Container(before + after, fail=False)], reconnect=False)
    with src:
        times = [f.t for f in src.frames()]
    assert len(times) == 90 and times == sorted(times)
    assert times[59] == pytest.approx(59 / 30) and 59 / 30 < times[60] < 59 / 30 + 0.5
    assert times[-1] - times[60] == pytest.approx(29 / 30)


def test_after_a_reconnection_stream_time_goes_on_by_the_outage(monkeypatch):
    """A connection lost for 0.6 s (plus the 0.5 s backoff): the next frame's stream time is about
    that much after the last one's, so the outage is a gap, not 1/30 s."""
    first = _Container([i / 30 for i in range(30)], fail=True, pause_s=0.6)
    second = _Container([100 + i / 30 for i in range(30)], fail=False)
    src = _fake_source(monkeypatch, [first, second], reconnect=True, max_backoff_s=0.5)
    got = []
    with src:
        for f in src.frames():
            got.append(f.t)
            if len(got) == 60:
                break
    assert src.reconnects == 1
    assert 1.0 <= got[30] - got[29] < 3.0  # 0.6 s without frames + 0.5 s backoff
    assert got[31] - got[30] == pytest.approx(1 / 30)


def test_frames_after_the_reader_ended_gives_its_error(monkeypatch, tmp_path):
    """A source that fails at once, read only after its reader ended: its own error, not "threads can
    only be started once"."""
    bad = tmp_path / "notavideo.mp4"
    bad.write_bytes(b"not a video")
    src = LiveSource(str(bad), reconnect=False)
    with src:
        time.sleep(0.5)
        with pytest.raises(CrashcastError, match=r"notavideo\.mp4"):
            list(src.frames())
