"""The event recorder (crashcast.live.recorder): which frames each MP4 holds (decoded back from frames
whose grey level encodes their index), the pre-roll and post-roll, extension by a second alert, two
clips for two far-apart alerts, close() mid-recording, the timeline JSON, the size cap, and that
nothing but finished MP4 + JSON pairs is ever left in the folder. The clips are written by the
recorder's writer thread: `add` returns those finished since the previous call, `close()` the rest
(`_feed_and_close`)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import av
import numpy as np
import pytest
from tests.conftest import frame_index_from_level, level_frames

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
