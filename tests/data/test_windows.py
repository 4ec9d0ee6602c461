from __future__ import annotations

import math
from pathlib import Path

import pytest

from crashcast.config import WindowConfig
from crashcast.data.windows import clip_span, make_windows, soft_target
from crashcast.errors import AnnotationError
from crashcast.types import Clip


def clip(event=20.0, alert=18.5, target=1, cid="00822"):
    return Clip(cid, Path(f"{cid}.mp4"), target, event if target else None, alert if target else None)


def test_paper_keyframes_for_a_known_event():
    wins = {w.phase: w for w in make_windows(clip(), duration_s=40.0)}
    assert wins["max"].keyframe_times_s == (14.0, 17.0, 20.0)
    assert wins["mid"].keyframe_times_s == (17.0, 18.5, 20.0)  # E-3, E-1.5, E
    assert wins["mini"].keyframe_times_s == (18.5, 19.25, 20.0)  # E-1.5, E-0.75, E
    assert all(w.end_s == 20.0 and not w.clamped for w in wins.values())
    assert wins["mid"].y_event == (3.0, 1.5, 0.0)
    assert wins["mid"].y_alert == (1.5, 0.0, -1.5)
    assert wins["max"].id == "00822_max" and wins["max"].label == 1


def test_horizons_shift_every_window():
    cfg = WindowConfig(horizons_s=[0.0, 0.5, 1.0, 1.5])
    wins = make_windows(clip(), 40.0, cfg)
    assert len(wins) == 12
    h15 = {w.phase: w for w in wins if w.horizon_s == 1.5}
    assert h15["mini"].keyframe_times_s == (17.0, 17.75, 18.5)
    assert h15["mini"].id == "00822_mini_h1.5"
    assert h15["mini"].y_event == (3.0, 2.25, 1.5)


def test_clamping_when_less_than_6s_precede_the_event():
    wins = {w.phase: w for w in make_windows(clip(event=3.1, alert=None, cid="ccd_000007"), 5.0)}
    assert wins["max"].clamped and wins["max"].start_s == 0.0
    assert wins["max"].keyframe_times_s == (0.0, 1.55, 3.1)
    assert not wins["mid"].clamped and wins["mid"].keyframe_times_s == pytest.approx((0.1, 1.6, 3.1))
    assert wins["mini"].keyframe_times_s == pytest.approx((1.6, 2.35, 3.1))


def test_negative_anchor_is_deterministic_and_inside_the_clip():
    a = make_windows(clip(target=0, cid="neg1"), 40.0)
    b = make_windows(clip(target=0, cid="neg1"), 40.0)
    c = make_windows(clip(target=0, cid="neg2"), 40.0)
    assert a == b
    assert a[0].anchor_s != c[0].anchor_s
    for w in a + c:
        assert 6.0 <= w.end_s <= 40.0 and w.label == 0 and w.soft_target == 0.0
        assert w.y_event == (None, None, None) and w.anchor_source == "hashed"


def test_event_after_video_end_is_an_error():
    with pytest.raises(AnnotationError, match="after the end of the video"):
        make_windows(clip(event=50.0), 40.0)


def test_soft_target_rises_to_one_at_the_alert():
    cfg = WindowConfig()
    c = clip(event=20.0, alert=18.0)
    assert soft_target(c, 18.0, cfg) == 1.0
    assert soft_target(c, 19.0, cfg) == 1.0
    below = [soft_target(c, t, cfg) for t in (12.0, 14.0, 16.0, 17.5)]
    assert below == sorted(below) and all(0 < v < 1 for v in below)
    assert soft_target(c, 16.0, cfg) == pytest.approx(math.exp(-1.0), abs=1e-6)
    assert soft_target(clip(target=0), 16.0, cfg) == 0.0


def test_clip_span_is_the_union():
    wins = make_windows(clip(), 40.0, WindowConfig(horizons_s=[0, 1.5]))
    assert clip_span(wins) == (12.5, 20.0)
