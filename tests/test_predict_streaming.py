"""Streaming prediction: bounded perception state (constant work per stride) and videos shorter
than one stride."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from tests.conftest import write_video

import crashcast
from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.video import decode
from crashcast.features.build import build_window_meta
from crashcast.features.kinematics import window_objects
from crashcast.perception.bundle import Backends
from crashcast.perception.pipeline import Perception
from crashcast.prediction import _window_at, history_s, write_outputs

LOOPS = 3  # the clip's perceived frames fed this many times: ~25 s of video, 3.5x the history


@pytest.fixture(scope="module")
def streamed(synth_small):
    """A pruned and a full Perception fed the same ~25 s of frames (a synthetic clip looped, at
    half size to keep the test quick), with the pruned state's size after every step and windows
    cut from both at several times."""
    cfg = load_config("classic")
    step = cfg.perception.frame_step
    clip = read_csv(synth_small / "annotations.csv")[0]
    frames = decode(clip.video_path, long_side=320, step=step).frames
    h, w = frames.shape[1:3]
    fps = cfg.video.fps
    history = history_s(cfg)
    pruned = Perception(Backends.build(cfg.perception), cfg.perception, w, h, fps, "loop", history_s=history)
    full = Perception(Backends.build(cfg.perception), cfg.perception, w, h, fps, "loop")
    sizes, pairs = [], []
    for i in range(LOOPS * len(frames)):
        t = i * step / fps
        pruned.step(frames[i % len(frames)], t)
        full.step(frames[i % len(frames)], t)
        sizes.append(pruned.state_size())
        if i % 20 == 19 or i == LOOPS * len(frames) - 1:
            # windows ending at this frame (predict without --annotate) and up to a frame interval
            # later (predict with --annotate ends windows on frames that are not perceived)
            for end in (t, t + (step - 1) / fps):
                pairs.append((_window_at(end, cfg, "loop"), pruned.result(), full.result()))
    return cfg, history, step, sizes, pairs, pruned, full


def test_streaming_perception_state_is_bounded(streamed):
    cfg, history, step, sizes, _, pruned, full = streamed
    bound = math.ceil(history * cfg.video.fps / step) + 1
    assert max(s["frames"] for s in sizes) <= bound
    # a plateau from a third of the stream on (give or take the frame a float comparison keeps)
    held = [s["frames"] for s in sizes[len(sizes) // 3 :]]
    assert bound - 3 <= min(held) <= max(held) <= min(held) + 1
    # every row held belongs to a held frame: one per tracked detection there, none older
    perc = pruned.result()
    assert sizes[-1]["track_rows"] == sum(len(d) for d in perc.detections)
    assert all(((tr.frame_index >= 0) & (tr.frame_index < len(perc.times_s))).all() for tr in perc.tracks)
    # the full state (extraction) keeps everything
    assert full.state_size()["frames"] == len(sizes) > 3 * bound
    assert full.state_size()["track_rows"] > 2 * sizes[-1]["track_rows"]


def test_pruned_state_gives_the_same_window_features_as_the_full_state(streamed):
    cfg, _, _, _, pairs, _, _ = streamed
    c = cfg.perception.geometry
    n_objects = 0
    for win, pruned, full in pairs:
        metas = []
        for perc in (pruned, full):
            objects = window_objects(perc, win, cfg.features, c.ego_front_m, cfg.video.fps)
            metas.append(build_window_meta(win, perc, cfg, ["", "", ""], objects, "hash").model_dump_json())
        assert metas[0] == metas[1], win
        n_objects += json.loads(metas[0])["scene"]["n_objects"]
    assert n_objects > 0  # the windows compared hold tracked objects, not only empty scenes
    assert win.start_s > 2 * (win.end_s - win.start_s)  # the last windows start long after the video did


def _short_video(tmp_path, seconds: float = 0.3):
    rng = np.random.default_rng(0)
    n = round(seconds * 30)
    base = rng.integers(0, 255, (180, 320, 3), dtype=np.uint8)
    frames = [np.roll(base, 2 * i, axis=1) for i in range(n)]
    return write_video(tmp_path / "short.mp4", frames, [i / 30 for i in range(n)])


def test_a_video_shorter_than_one_stride_gives_an_empty_timeline(tmp_path):
    video = _short_video(tmp_path)
    pred = crashcast.predict(video, annotate=tmp_path / "annotated.mp4")
    assert pred.timeline.empty and list(pred.timeline.columns[:3]) == ["time_s", "risk", "risk_raw"]
    assert pred.peak is None and pred.first_alert is None and pred.reasons == [] and pred.stride_seconds == []
    assert pred.frames_perceived == 3  # frames 0, 3, 6 of 9
    assert len(decode(tmp_path / "annotated.mp4", long_side=None).frames) == 9
    paths = write_outputs(pred, tmp_path / "out")
    doc = json.loads(paths["json"].read_text())
    assert doc["peak"] is None and doc["timeline"] == [] and doc["first_alert_s"] is None
    assert pd.read_csv(paths["csv"]).empty
    assert paths["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_stride_seconds_has_one_entry_per_stride_and_stays_out_of_the_outputs(synth_small, tmp_path):
    clip = read_csv(synth_small / "annotations.csv")[1]
    pred = crashcast.predict(clip.video_path)
    assert len(pred.stride_seconds) == len(pred.timeline) > 0
    assert all(s > 0 for s in pred.stride_seconds) and sum(pred.stride_seconds) <= pred.seconds
    assert "stride_seconds" not in json.dumps(pred.to_dict())
