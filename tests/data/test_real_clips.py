"""Smoke test on the three real dashcam clips in ../shared/data/real (skipped when absent)."""

from __future__ import annotations

from crashcast.data.annotations import read_csv
from crashcast.data.video import decode, probe
from crashcast.data.windows import clip_span, make_windows


def test_real_clips_decode_and_window(real_dir):
    clips = read_csv(real_dir / "annotations.csv", missing_event="end")
    assert {"ccd_000007", "udacity_solid_white_right", "bus_dashcam_rollover"} <= {c.id for c in clips}
    for clip in clips:
        info = probe(clip.video_path)
        wins = make_windows(clip, info.duration_s)
        assert len(wins) == 3
        start, end = clip_span(wins)
        frames = decode(clip.video_path, start, end, fps=30.0, long_side=640)
        assert frames.frames.shape[2] == 640 and frames.frames.shape[0] >= int((end - start) * 30)
        assert frames.times_s[0] >= start - 1e-6 and frames.times_s[-1] <= end + 1e-6
    ccd = next(c for c in clips if c.id == "ccd_000007")
    assert ccd.time_of_event_s == 3.1
