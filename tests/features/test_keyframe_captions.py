"""The keyframe images a VLM's prompt shows carry no leak: by default their caption says only what the
prompt's text says (keyframe k of 3, its time relative to the last keyframe), never the window id or
the clip time, from which a model could learn when events happen in clips instead of reading the scene."""

from __future__ import annotations

import numpy as np
import pytest

from crashcast.features.overlays import draw, keyframe_caption
from crashcast.types import Detections, Window


def _window() -> Window:
    return Window(clip_id="00822", phase="mid", horizon_s=0.0, anchor_s=15.0, start_s=12.0, end_s=15.0,
                  keyframe_times_s=(12.0, 13.5, 15.0), clamped=False, label=1, y_alert=(2.2, 0.7, -0.8),
                  y_event=(3.0, 1.5, 0.0), soft_target=0.87)


def test_relative_caption_names_neither_the_window_nor_the_clip_time():
    w = _window()
    captions = [keyframe_caption(w, k) for k in range(3)]
    assert captions == ["keyframe 1/3  t=-3.00s", "keyframe 2/3  t=-1.50s", "keyframe 3/3  t=0.00s"]
    for c in captions:
        assert "00822" not in c and w.id not in c and "12.00" not in c and "15.00" not in c
    assert keyframe_caption(w, 2, "full") == f"{w.id}  t=15.00s  keyframe 3/3"
    assert keyframe_caption(w, 0, "none") is None
    with pytest.raises(ValueError, match="relative, full or none"):
        keyframe_caption(w, 0, "absolute")


def test_no_caption_leaves_the_top_of_the_frame_as_it_was():
    frame = np.full((120, 200, 3), 90, np.uint8)
    empty = Detections.empty()
    np.testing.assert_array_equal(draw(frame, empty, [], None), frame)
    captioned = draw(frame, empty, [], "keyframe 1/3  t=-3.00s")
    assert (captioned[:19] != frame[:19]).any() and (captioned[19:] == frame[19:]).all()  # the bar: rows 0..18
