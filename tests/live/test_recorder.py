"""The event recorder (crashcast.live.recorder): which frames each MP4 holds (decoded back from frames
whose grey level encodes their index), the pre-roll and post-roll, extension by a second alert, two
clips for two far-apart alerts, close() mid-recording, the timeline JSON, the size cap, and that
nothing but finished MP4 + JSON pairs is ever left in the folder. The clips are written by the
recorder's writer thread: `add` returns those finished since the previous call, `close()` the rest
(`_feed_and_close`)."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest
from tests.conftest import frame_index_from_level, level_frames

import crashcast.live.recorder as recorder_module
from crashcast.data.video import VideoWriter
from crashcast.live.recorder import EventRecorder

FPS = 10.0
N = 31  # levels 10 + 8 i stay within uint8 up to i = 30
FRAMES = level_frames(N)  # 64x48


def _decoded_indices(path: Path) -> list[int]:
    with av.open(str(path)) as c:
        return [frame_index_from_level(f.to_ndarray(format="rgb24")) for f in c.decode(video=0)]


def _folder_names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def _pairs_only(folder: Path) -> None:
    """Every file in the folder is a finished MP4 or its JSON: no temporary or hidden file."""
    names = _folder_names(folder)
    mp4 = {n[:-4] for n in names if n.endswith(".mp4")}
    js = {n[:-5] for n in names if n.endswith(".json")}
    assert mp4 == js and len(names) == 2 * len(mp4), names


def _feed(rec: EventRecorder, triggers: dict[int, str], upto: int = N, notes: bool = True) -> list[Path]:
    """Frame i at i / FPS; a stride record per frame; a trigger after frame i where given."""
    done = []
    for i in range(upto):
        t = i / FPS
        done += rec.add(t, FRAMES[i])
        if notes:
            rec.note({"time_s": t, "risk": i / 100, "alert": i in triggers, "reason": triggers.get(i)})
        if i in triggers:
            rec.trigger(t, {"reason": triggers[i]})
    return done


def _feed_and_close(rec: EventRecorder, triggers: dict[int, str], upto: int = N) -> list[Path]:
    """`_feed`, then `close()`: every recording finished, in order."""
    done = _feed(rec, triggers, upto)
    return done + rec.close()


def test_pre_and_post_roll(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.5, post_s=0.8)
    done = _feed(rec, {10: "close"})
    assert not rec.recording  # ended by the first frame after 1.8 s
    done += rec.close()  # the writer's clip, if add has not returned it yet
    assert len(done) == 1
    assert _decoded_indices(done[0]) == list(range(5, 19))  # 1.0 s - 0.5 s .. 1.0 s + 0.8 s
    meta = json.loads(done[0].with_suffix(".json").read_text())
    assert meta["start_s"] == pytest.approx(0.5) and meta["end_s"] == pytest.approx(1.8)
    assert meta["frames"] == 14 and meta["complete"] is True
    assert [tr["info"]["reason"] for tr in meta["triggers"]] == ["close"]
    assert [round(r["time_s"] * FPS) for r in meta["records"]] == list(range(5, 19))  # only those inside the clip
    assert rec.close() == []
    _pairs_only(tmp_path)


def test_pre_roll_at_stream_start(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=1.0, post_s=0.3)
    done = _feed_and_close(rec, {2: "early"}, upto=10)
    assert len(done) == 1
    assert _decoded_indices(done[0]) == [0, 1, 2, 3, 4, 5]


def test_second_trigger_extends_one_clip(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.3, post_s=0.5)
    done = _feed_and_close(rec, {8: "a", 12: "b"})  # 1.2 s is inside 0.8 + 0.5
    assert len(done) == 1
    assert _decoded_indices(done[0]) == list(range(5, 18))
    meta = json.loads(done[0].with_suffix(".json").read_text())
    assert [tr["time_s"] for tr in meta["triggers"]] == pytest.approx([0.8, 1.2])
    assert len(list(tmp_path.glob("*.mp4"))) == 1


def test_far_apart_triggers_give_two_clips(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.3, post_s=0.3)
    done = _feed_and_close(rec, {5: "a", 20: "b"})
    assert len(done) == 2 and done[0] != done[1]
    assert _decoded_indices(done[0]) == list(range(2, 9))
    assert _decoded_indices(done[1]) == list(range(17, 24))
    assert sorted(tmp_path.glob("*.mp4")) == sorted(done)
    _pairs_only(tmp_path)


def test_pre_roll_never_repeats_the_previous_clip(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.5, post_s=0.2)
    done = _feed_and_close(rec, {5: "a", 9: "b"})  # the second pre-roll would reach back to frame 4
    assert [_decoded_indices(p) for p in done] == [list(range(0, 8)), list(range(8, 12))]
    metas = [json.loads(p.with_suffix(".json").read_text()) for p in done]
    assert [[round(r["time_s"] * FPS) for r in m["records"]] for m in metas] == [list(range(0, 8)), list(range(8, 12))]


def test_close_mid_recording_leaves_a_complete_clip(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.4, post_s=5.0)
    assert _feed(rec, {6: "a"}, upto=12) == []
    assert rec.recording
    assert not [n for n in _folder_names(tmp_path) if not n.startswith(".")]  # only a hidden temporary file so far
    done = rec.close()
    assert len(done) == 1 and not rec.recording
    assert _decoded_indices(done[0]) == list(range(2, 12))
    meta = json.loads(done[0].with_suffix(".json").read_text())
    assert meta["complete"] is False and meta["end_s"] == pytest.approx(1.1)
    _pairs_only(tmp_path)


def test_ctrl_c_while_recording_then_close(tmp_path):
    """SIGINT arrives in the middle of the feeding loop; the `with` block finishes the clip."""
    caught = False
    with EventRecorder(tmp_path, FPS, pre_s=0.2, post_s=10.0) as rec:
        try:
            for i in range(N):
                rec.add(i / FPS, FRAMES[i])
                if i == 3:
                    rec.trigger(i / FPS, {})
                if i == 9:
                    os.kill(os.getpid(), signal.SIGINT)
        except KeyboardInterrupt:
            caught = True
    assert caught
    (mp4,) = tmp_path.glob("*.mp4")
    indices = _decoded_indices(mp4)
    assert indices == list(range(1, indices[-1] + 1)) and indices[-1] >= 9
    _pairs_only(tmp_path)


def test_size_cap_deletes_oldest_first(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.1, post_s=0.1, max_bytes=10**9)
    done = _feed_and_close(rec, {3: "a", 12: "b", 21: "c"})
    assert len(done) == 3
    sizes = [p.stat().st_size + p.with_suffix(".json").stat().st_size for p in done]
    assert max(sizes) < 1.2 * min(sizes)  # clips of 3 like frames: about the same size
    # room for three such clips, not four: one more clip pushes the oldest out, only it
    rec2 = EventRecorder(tmp_path, FPS, pre_s=0.1, post_s=0.1, max_bytes=sizes[1] + sizes[2] + int(1.5 * max(sizes)))
    newest = _feed_and_close(rec2, {5: "d"})
    assert len(newest) == 1
    assert rec2.event_files() == [done[1], done[2], newest[0]]
    assert not done[0].with_suffix(".json").exists()
    _pairs_only(tmp_path)


def test_size_cap_keeps_the_newest_even_alone_over_it(tmp_path, caplog):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.1, post_s=0.1, max_bytes=1)
    with caplog.at_level("WARNING"):
        done = _feed_and_close(rec, {3: "a", 12: "b"})
    assert len(done) == 2
    assert rec.event_files() == [done[1]]  # the older one deleted, the newest kept
    assert "over the 1-byte cap" in caplog.text
    _pairs_only(tmp_path)


def test_other_sizes_are_resized_and_odd_sides_cropped(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.0, post_s=0.2)
    rec.add(0.0, np.full((49, 65, 3), 50, np.uint8))
    rec.trigger(0.0, {})
    rec.add(0.1, np.full((96, 128, 3), 90, np.uint8))
    (mp4,) = rec.close()
    with av.open(str(mp4)) as c:
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    assert [f.shape for f in frames] == [(48, 64, 3)] * 2
    assert [round(float(f.mean())) for f in frames] == pytest.approx([50, 90], abs=2)


def test_frames_are_copied_even_when_cropped(tmp_path):
    """The caller may reuse its frame buffer at once: an odd-height frame (cropped by one row) too."""
    rec = EventRecorder(tmp_path, FPS, pre_s=0.5, post_s=0.0)
    buffer = np.empty((49, 64, 3), np.uint8)
    for i in range(4):
        buffer[:] = FRAMES[i][0, 0]
        rec.add(i / FPS, buffer)
    rec.trigger(0.3, {})
    buffer[:] = 0
    (mp4,) = rec.close()
    assert _decoded_indices(mp4) == [0, 1, 2, 3]


def test_json_is_valid_with_numpy_values_and_nan(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.1, post_s=0.1)
    rec.add(0.0, FRAMES[0])
    rec.note({"time_s": np.float64(0.0), "risk": float("nan"), "box": np.array([1, 2])})
    rec.trigger(0.0, {"risk": np.float32(0.9)})
    (mp4,) = rec.close()
    meta = json.loads(mp4.with_suffix(".json").read_text())
    assert meta["records"] == [{"time_s": 0.0, "risk": None, "box": [1, 2]}]
    assert meta["triggers"][0]["info"]["risk"] == pytest.approx(0.9)


@pytest.mark.parametrize("kwargs, word", [
    ({"fps": 0}, "fps"), ({"fps": float("nan")}, "fps"), ({"pre_s": -1}, "pre_s"),
    ({"post_s": -0.1}, "post_s"), ({"max_bytes": 0}, "max_bytes"), ({"prefix": "a/b"}, "prefix"),
    ({"max_lag_s": float("inf")}, "max_lag_s"),
])
def test_arguments_are_checked(tmp_path, kwargs, word):
    with pytest.raises(ValueError, match=word):
        EventRecorder(tmp_path, **{"fps": FPS, **kwargs})


def test_bad_frames_and_times_are_refused(tmp_path):
    rec = EventRecorder(tmp_path, FPS)
    rec.add(1.0, FRAMES[0])
    with pytest.raises(ValueError, match="increase"):
        rec.add(1.0, FRAMES[1])
    with pytest.raises(ValueError, match="RGB uint8"):
        rec.add(2.0, np.zeros((48, 64), np.uint8))
    with pytest.raises(ValueError, match="time_s"):
        rec.note({"risk": 1.0})


# -- the writer thread ------------------------------------------------------------------------


def _slow_encoder(monkeypatch, seconds: float) -> None:
    """VideoWriter.write takes `seconds` more per frame (an encoder slower than the stream)."""
    write = VideoWriter.write

    def slow(writer: VideoWriter, frame: np.ndarray) -> None:
        time.sleep(seconds)
        write(writer, frame)

    monkeypatch.setattr(VideoWriter, "write", slow)


class _Gate:
    """VideoWriter.write held at its first call until `release` is set (the writer stuck in the encoder)."""

    def __init__(self, monkeypatch) -> None:
        self.entered, self.release = threading.Event(), threading.Event()
        write = VideoWriter.write

        def held(writer: VideoWriter, frame: np.ndarray) -> None:
            self.entered.set()
            self.release.wait(60)
            write(writer, frame)

        monkeypatch.setattr(VideoWriter, "write", held)


@pytest.fixture
def gate(monkeypatch):
    g = _Gate(monkeypatch)
    yield g
    g.release.set()  # never leave a writer thread waiting


def test_a_trigger_does_not_wait_for_the_encoder(tmp_path, monkeypatch):
    """The encoder made slow (0.1 s a frame): the caller's trigger and next add take a small part of
    the 1.1 s the pre-roll's encoding takes; the clip still holds exactly its frames."""
    _slow_encoder(monkeypatch, 0.1)
    rec = EventRecorder(tmp_path, FPS, pre_s=1.0, post_s=0.3)
    for i in range(15):
        rec.add(i / FPS, FRAMES[i])
    t0 = time.perf_counter()
    rec.trigger(1.4, {"reason": "slow"})  # pre-roll: frames 4..14, 11 of them
    rec.add(1.5, FRAMES[15])
    caller_s = time.perf_counter() - t0
    for i in range(16, 19):
        rec.add(i / FPS, FRAMES[i])
    done = rec.close()
    total_s = time.perf_counter() - t0
    assert caller_s < 0.2 < 1.1 < total_s  # the writer took its 0.1 s a frame, the caller did not
    assert len(done) == 1
    assert _decoded_indices(done[0]) == list(range(4, 18))  # up to 1.4 + 0.3 s
    meta = json.loads(done[0].with_suffix(".json").read_text())
    assert meta["frames"] == 14 and meta["dropped_frames"] == 0 and meta["complete"] is True
    _pairs_only(tmp_path)


def test_add_returns_the_clips_the_writer_finished(tmp_path):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.2, post_s=0.2)
    done = _feed(rec, {5: "a"}, upto=10)
    i, deadline = 10, time.monotonic() + 60
    while not done and time.monotonic() < deadline:  # a later add returns it once the writer is done
        time.sleep(0.01)
        done = rec.add(i / FPS, FRAMES[0])
        i += 1
    assert len(done) == 1 and _decoded_indices(done[0]) == [3, 4, 5, 6, 7]
    assert rec.add(i / FPS, FRAMES[0]) == [] and rec.close() == []  # returned once


def test_an_encoder_error_gives_the_clip_up_and_is_raised_by_the_next_add(tmp_path, monkeypatch, caplog):
    calls, failed = [], threading.Event()
    write = VideoWriter.write

    def full_disk(writer: VideoWriter, frame: np.ndarray) -> None:
        calls.append(1)
        if len(calls) == 3:
            failed.set()
            raise OSError(errno.ENOSPC, "No space left on device")
        write(writer, frame)

    monkeypatch.setattr(VideoWriter, "write", full_disk)
    rec = EventRecorder(tmp_path, FPS, pre_s=0.5, post_s=1.0)
    for i in range(8):
        rec.add(i / FPS, FRAMES[i])
    with caplog.at_level("ERROR"):
        rec.trigger(0.7, {})  # pre-roll 2..7: the third frame fails
        assert failed.wait(60)
        deadline = time.monotonic() + 60
        while "given up" not in caplog.text and time.monotonic() < deadline:  # the writer discards the clip
            time.sleep(0.01)
        with pytest.raises(OSError, match="No space left"):
            rec.add(0.8, FRAMES[8])
    assert "No space left" in caplog.text
    assert rec.add(0.8, FRAMES[8]) == []  # raised once; the frame was not taken then, it is now
    assert rec.close() == []
    assert _folder_names(tmp_path) == set()  # no MP4, no JSON, no temporary file
    # the recorder goes on: a later alert is recorded
    monkeypatch.setattr(VideoWriter, "write", write)
    for i in range(9, 20):
        rec.add(i / FPS, FRAMES[i])
    rec.trigger(1.9, {})
    rec.add(2.0, FRAMES[20])
    (mp4,) = rec.close()
    assert _decoded_indices(mp4) == list(range(14, 21))
    _pairs_only(tmp_path)


def test_a_failed_json_write_leaves_neither_file_and_is_raised_by_close(tmp_path, monkeypatch):
    def no_room(path, text):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(recorder_module, "atomic_write_text", no_room)
    rec = EventRecorder(tmp_path, FPS, pre_s=0.2, post_s=5.0)
    _feed(rec, {3: "a"}, upto=6)
    with pytest.raises(OSError, match="No space left"):
        rec.close()
    assert _folder_names(tmp_path) == set()
    assert rec.close() == []  # raised once


def test_close_with_a_full_queue_writes_every_queued_frame(tmp_path, gate, caplog):
    """The writer stuck in the encoder while the stream goes on: the queue fills up (a pre-roll of 6
    frames and 3 more), later frames are left out (counted); close() writes every queued frame."""
    rec = EventRecorder(tmp_path, FPS, pre_s=0.5, post_s=5.0, max_lag_s=0.3)
    assert rec.queue_frames == 9
    for i in range(10):
        rec.add(i / FPS, FRAMES[i])
    rec.trigger(0.9, {})  # pre-roll: frames 4..9
    assert gate.entered.wait(60)  # the writer holds frame 4 in the encoder: 5 frames queued
    with caplog.at_level("WARNING"):
        for i in range(10, 21):  # 10..13 fill the queue, 14..20 are left out
            assert rec.add(i / FPS, FRAMES[i]) == []
    assert caplog.text.count("frames are left out") == 1
    gate.release.set()
    (mp4,) = rec.close()
    assert _decoded_indices(mp4) == list(range(4, 14))  # complete and playable: every queued frame
    meta = json.loads(mp4.with_suffix(".json").read_text())
    assert meta["frames"] == 10 and meta["dropped_frames"] == 7 and meta["complete"] is False
    assert meta["start_s"] == pytest.approx(0.4) and meta["end_s"] == pytest.approx(1.3)
    _pairs_only(tmp_path)


def test_a_pre_roll_that_does_not_fit_loses_its_oldest_frames(tmp_path, gate):
    rec = EventRecorder(tmp_path, FPS, pre_s=0.5, post_s=0.0, max_lag_s=0.0)  # 6 frames queued at most
    for i in range(3):
        rec.add(i / FPS, FRAMES[i])
    rec.trigger(0.2, {})  # a first clip: frames 0..2
    assert gate.entered.wait(60)  # frame 0 in the encoder, 1 and 2 queued
    for i in range(3, 9):
        rec.add(i / FPS, FRAMES[i])  # frame 3 ends the first clip; 3..8 only in the ring
    rec.trigger(0.8, {})  # pre-roll 0.3..0.8: frames 3..8, room for 4: 3 and 4 left out
    gate.release.set()
    done = rec.add(0.9, FRAMES[9]) + rec.close()
    assert [_decoded_indices(p) for p in done] == [[0, 1, 2], [5, 6, 7, 8]]
    assert [json.loads(p.with_suffix(".json").read_text())["dropped_frames"] for p in done] == [0, 2]


def test_close_past_its_timeout_finishes_the_clip_without_the_rest(tmp_path, monkeypatch, caplog):
    """An encoder far too slow for what is queued: close(timeout_s) skips the frames still queued and
    finishes the clip with those written, whole."""
    _slow_encoder(monkeypatch, 0.1)
    rec = EventRecorder(tmp_path, FPS, pre_s=1.0, post_s=5.0, max_lag_s=5.0)
    for i in range(N):
        rec.add(i / FPS, FRAMES[i])
        if i == 10:
            rec.trigger(1.0, {})  # frames 0..30 queued: 3.1 s of encoding
    t0 = time.perf_counter()
    with caplog.at_level("WARNING"):
        (mp4,) = rec.close(timeout_s=0.5)
    assert time.perf_counter() - t0 < 2.5
    assert "still busy" in caplog.text
    indices = _decoded_indices(mp4)
    meta = json.loads(mp4.with_suffix(".json").read_text())
    assert indices == list(range(len(indices))) and 1 <= len(indices) < N
    assert meta["frames"] == len(indices) and meta["frames"] + meta["dropped_frames"] == N
    _pairs_only(tmp_path)


def test_close_gives_up_waiting_for_a_hung_writer(tmp_path, monkeypatch, gate, caplog):
    monkeypatch.setattr(recorder_module, "ABORT_WAIT_S", 0.2)
    rec = EventRecorder(tmp_path, FPS, pre_s=0.2, post_s=5.0)
    _feed(rec, {3: "a"}, upto=6)
    assert gate.entered.wait(60)
    t0 = time.perf_counter()
    with caplog.at_level("WARNING"):
        assert rec.close(timeout_s=0.2) == []
    assert time.perf_counter() - t0 < 2.0
    assert "left as a temporary file" in caplog.text
    assert all(n.startswith(".") for n in _folder_names(tmp_path))  # never a clip under its final name
    gate.release.set()
    for th in threading.enumerate():  # let the writer end before the test does
        if th.name == "crashcast-event-recorder":
            th.join(60)
    # the writer came back after it was given up on: its clip is discarded, nothing is left behind
    assert _folder_names(tmp_path) == set()


_KILLED_CHILD = """
import os, signal, sys, time, numpy as np
from crashcast.live.recorder import EventRecorder
rec = EventRecorder(sys.argv[1], 10.0, pre_s=0.2, post_s=10.0)
for i in range(5):
    rec.add(i / 10, np.full((48, 64, 3), 10 * i, np.uint8))
    if i == 2:
        rec.trigger(0.2, {})
deadline = time.monotonic() + 60
while not os.listdir(sys.argv[1]) and time.monotonic() < deadline:  # the writer thread has begun the clip
    time.sleep(0.01)
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_killed_recorder_leaves_no_clip_and_its_leftover_goes(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    run = subprocess.run([sys.executable, "-c", _KILLED_CHILD, str(tmp_path)], env=env, timeout=120)
    assert run.returncode == -signal.SIGKILL
    left = _folder_names(tmp_path)
    assert len(left) == 1 and next(iter(left)).startswith(".")  # the unfinished clip, hidden, under a temporary name
    EventRecorder(tmp_path, FPS)
    assert _folder_names(tmp_path) == set()
