"""Keeping up with a live source: the start-up probe says whether the preset keeps up (timed on a
synthetic scene before the source opens), and frames the queue dropped are not made up by
perceiving the picture before them again."""

from __future__ import annotations

import logging
from typing import ClassVar

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.live import probe as probe_mod
from crashcast.live import watch as watch_mod
from crashcast.live.probe import keep_up_message, probe_frames, probe_size
from crashcast.live.source import LiveFrame
from crashcast.prediction import Stepper


def test_the_three_verdicts_and_the_drop_share():
    level, said = keep_up_message(0.2, 0.5, "classic", "x")
    assert level == logging.INFO and said.startswith("keeping up (x): 0.20 s of work per 0.50 s stride")
    level, said = keep_up_message(0.45, 0.5, "classic", "x")
    assert level == logging.WARNING and said.startswith("at the limit")
    level, said = keep_up_message(2.0, 0.5, "paper", "x")
    assert level == logging.WARNING and said.startswith("falling behind") and "about 75 % of frames dropped" in said


def test_the_probe_scene_is_a_car_ahead_at_the_size_perception_sees():
    cfg = load_config("classic")
    w, h = probe_size(cfg)
    assert (w, h) == (640, 360)  # classic: long side 640, a 16:9 source
    frames = probe_frames(w, h, 30.0, 1.0)
    assert len(frames) == 30 and frames[0].shape == (360, 640, 3) and frames[0].dtype == np.uint8
    # it ends at the collision: the lead car fills more of the picture at the end than at the start
    # (frame-to-frame change is largest where the car is)
    assert not np.array_equal(frames[0], frames[-1])
    centre = (slice(120, 300), slice(200, 440))
    assert np.abs(frames[-1][centre].astype(int) - frames[0][centre]).mean() > 5


class _FakeSource:
    """A LiveSource stand-in: the frames given, then the end; `dropped` as the source counts it."""

    frames_given: ClassVar[list[LiveFrame]] = []

    def __init__(self, source, **kwargs):
        self.received = len(self.frames_given)
        self.dropped = sum(b.seq - a.seq - 1 for a, b in zip(self.frames_given, self.frames_given[1:], strict=False))
        self.reconnects = 0

    stopped = False

    def __enter__(self):
        return self

    def close(self):
        return None

    def frames(self):
        yield from self.frames_given


class _Picture:
    """A SourceFrame stand-in of a flat gray picture."""

    width, height = 320, 180

    def rgb(self, size):
        w, h = size
        return np.full((h, w, 3), 110, np.uint8)


def test_dropped_frames_are_a_gap_not_a_held_picture(monkeypatch, tmp_path):
    """Frames 0..9 arrive, 10..19 were dropped by the queue, 20..44 arrive: the grid slots of the
    dropped frames are never fed (frame 9 is not perceived again in their place); an arrival
    gap without drops (a 25 fps source on the 30 fps grid) is still filled by holding, as predict
    does, up to the end of the last frame when the source ends."""
    fed: list[float] = []
    real_feed = Stepper.feed

    def spy(self, t, frame):
        fed.append(round(t * 30))
        return real_feed(self, t, frame)

    monkeypatch.setattr(Stepper, "feed", spy)
    keep = [i for i in range(45) if not 10 <= i < 20]
    _FakeSource.frames_given = [LiveFrame(i / 30, 0.0, _Picture(), seq=i + 1) for i in keep]
    monkeypatch.setattr(watch_mod, "LiveSource", _FakeSource)
    cfg = load_config("classic", ["perception.frame_step=1", "video.long_side=320"])
    rows = list(watch_mod.watch("x.mp4", config=cfg, probe=False))
    assert [r["time_s"] for r in rows] == [0.667, 1.0]  # 0.5 s fell in the gap; 1.5 s would need frame 45
    assert sorted(set(fed)) == [i for i in range(45) if not 10 <= i < 20]  # the last lasts one frame as the source ends

    # no drop, a gap in time: 25 fps frames on the 30 fps grid are held (the hold rule, as predict)
    fed.clear()
    _FakeSource.frames_given = [LiveFrame(i / 25, 0.0, _Picture(), seq=i + 1) for i in range(30)]
    list(watch_mod.watch("x.mp4", config=cfg, probe=False))
    assert sorted(set(fed)) == list(range(36))  # every grid slot before the last frame's end (30/25 s = slot 36)


def test_watch_says_whether_the_preset_keeps_up_before_the_source_opens(monkeypatch, caplog):
    calls = []
    real = probe_mod.work_per_stride

    def timed(*args, **kwargs):
        calls.append("probe")
        return real(*args, **kwargs)

    monkeypatch.setattr(watch_mod, "work_per_stride", timed)

    class _Opened(_FakeSource):
        def __enter__(self):  # the reader thread starts: the source opens
            calls.append("open")
            return self

    _FakeSource.frames_given = []
    monkeypatch.setattr(watch_mod, "LiveSource", _Opened)
    with caplog.at_level(logging.INFO, logger="crashcast.live.watch"):
        list(watch_mod.watch("x.mp4", config="classic"))
    assert calls == ["probe", "open"]
    said = [r.getMessage() for r in caplog.records if "on a synthetic 640x360 scene" in r.getMessage()]
    assert len(said) == 1 and said[0].startswith(("keeping up", "at the limit", "falling behind"))
    per_stride = float(said[0].split(": ")[1].split(" s of work")[0])
    assert 0.0 < per_stride < 60.0


def test_the_probe_times_drawing_when_recording(monkeypatch):
    """With the recorder on, each frame is also drawn (annotated) and the probe counts that time: a
    drawing made to take 10 ms puts at least 15 x 10 ms into each 0.5 s stride of 30 fps."""
    import time

    from crashcast.perception.pipeline import Backends
    from crashcast.prediction import alert_policy_for, resolve_model

    real = Stepper.annotated

    def slow(self, frame, t):
        time.sleep(0.01)
        return real(self, frame, t)

    monkeypatch.setattr(Stepper, "annotated", slow)
    cfg = load_config("classic")
    backends = Backends.build(cfg.perception, cfg.runtime)
    args = (resolve_model(None, cfg), cfg, backends, 0.5, 0.5, alert_policy_for(cfg, 0.5, None))
    assert probe_mod.work_per_stride(*args, annotate=True) >= 0.15


def test_on_the_stream_dropped_frames_are_what_is_said(caplog):
    """Work per stride shrinks when frames are dropped (fewer perceived): then the share dropped is said."""
    with caplog.at_level(logging.INFO, logger="crashcast.live.watch"):
        watch_mod._keep_up(5, 4 * 0.3, 0.5, "fast", dropped=15, received=61)
        watch_mod._keep_up(5, 4 * 0.1, 0.5, "classic", dropped=0, received=60)
        watch_mod._keep_up(4, 4 * 0.1, 0.5, "classic", dropped=0, received=60)  # said once, after stride 5
    said = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert said == [
        (logging.WARNING, "falling behind (on the stream, strides 2-5): 15 of 61 frames dropped (25 %) with the fast "
                          "preset on this machine (a faster preset, a GPU, or a longer --stride)"),
        (logging.INFO, "keeping up (on the stream, strides 2-5): 0.10 s of work per 0.50 s stride with the classic preset"),
    ]


def test_a_stretch_with_no_frame_is_a_gap_as_in_predict(monkeypatch):
    """No frame for 0.5 s (more than GAP_LIMIT_S beyond a frame's duration), nothing dropped: the frame
    before is shown for its own duration only, as predict shows a damaged file's gap; 0.2 s missing
    (within the limit) is held over."""
    fed: list[int] = []
    real_feed = Stepper.feed
    monkeypatch.setattr(Stepper, "feed", lambda self, t, frame: (fed.append(round(t * 30)), real_feed(self, t, frame))[1])
    times = [i / 30 for i in range(10)] + [(i + 15) / 30 for i in range(10)] + [(i + 31) / 30 for i in range(10)]
    _FakeSource.frames_given = [LiveFrame(t, 0.0, _Picture(), seq=n + 1) for n, t in enumerate(times)]
    monkeypatch.setattr(watch_mod, "LiveSource", _FakeSource)
    cfg = load_config("classic", ["perception.frame_step=1", "video.long_side=320"])
    list(watch_mod.watch("x.mp4", config=cfg, probe=False))
    # frames 0-9, a hole of 5 frames (0.17 s beyond frame 9's duration: held), 15-24, a hole of 6 frames
    # (0.2 s: held), 31-40; frame 40 lasts one frame
    assert sorted(set(fed)) == list(range(41))
    fed.clear()
    times = [i / 30 for i in range(10)] + [(i + 25) / 30 for i in range(10)]  # 15 frames (0.5 s) missing
    _FakeSource.frames_given = [LiveFrame(t, 0.0, _Picture(), seq=n + 1) for n, t in enumerate(times)]
    list(watch_mod.watch("x.mp4", config=cfg, probe=False))
    assert sorted(set(fed)) == list(range(10)) + list(range(25, 35))


def test_a_recorder_error_does_not_end_the_warnings(monkeypatch, tmp_path, caplog):
    """The event recorder's writer fails (disk full): that is logged, and the strides go on."""
    from crashcast.live.recorder import EventRecorder

    calls = {"n": 0}
    real_add = EventRecorder.add

    def failing(self, t, frame):
        calls["n"] += 1
        if calls["n"] == 20:
            raise OSError(28, "No space left on device")
        return real_add(self, t, frame)

    monkeypatch.setattr(EventRecorder, "add", failing)
    _FakeSource.frames_given = [LiveFrame(i / 30, 0.0, _Picture(), seq=i + 1) for i in range(61)]
    monkeypatch.setattr(watch_mod, "LiveSource", _FakeSource)
    cfg = load_config("classic", ["video.long_side=320"])
    with caplog.at_level(logging.ERROR, logger="crashcast.live.watch"):
        rows = list(watch_mod.watch("x.mp4", config=cfg, probe=False, record=tmp_path / "events"))
    assert [r["time_s"] for r in rows] == [0.5, 1.0, 1.5, 2.0]
    assert any("No space left on device" in r.getMessage() for r in caplog.records)


def test_a_stride_longer_than_the_probe_scene_is_said_later(monkeypatch, caplog):
    _FakeSource.frames_given = []
    monkeypatch.setattr(watch_mod, "LiveSource", _FakeSource)
    with caplog.at_level(logging.INFO, logger="crashcast.live.watch"):
        list(watch_mod.watch("x.mp4", config="classic", stride_s=6.0))
    assert any(r.getMessage().startswith("no start-up estimate for a 6.00 s stride") for r in caplog.records)


def test_closing_raises_a_close_error_only_when_nothing_else_is_on_its_way_out(caplog):
    """A recorder that fails to close: raised after a normal end; logged (not raised) while Ctrl-C is
    on its way out, so the exit status stays Ctrl-C's; the other parts are closed either way."""
    closed = []

    class Part:
        def __init__(self, name, error=None):
            self.name, self.error = name, error

        def close(self):
            closed.append(self.name)
            if self.error:
                raise self.error
            return []

    def parts():
        return (Part("source"), Part("stepper"), Part("recorder", OSError("disk full")), Part("view"))

    src, stepper, recorder, view = parts()
    src.received = src.dropped = src.reconnects = 0
    with pytest.raises(OSError, match="disk full"):
        watch_mod._close_all(src, stepper, recorder, view, "cam")
    assert closed == ["recorder", "view", "source", "stepper"]  # the recording first
    closed.clear()
    with pytest.raises(KeyboardInterrupt):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt:
            watch_mod._close_all(src, stepper, recorder, view, "cam")
            raise
    assert closed == ["recorder", "view", "source", "stepper"]
    assert any("disk full" in r.getMessage() for r in caplog.records)
