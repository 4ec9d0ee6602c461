"""Prediction: the physics model on held-out synthetic clips, the CLI, the annotated video."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import crashcast
from crashcast.cli import app
from crashcast.data.annotations import read_csv
from crashcast.data.video import decode, iter_resampled
from crashcast.evaluation.metrics import alert_stats

runner = CliRunner()


@pytest.fixture(scope="module")
def synthetic_predictions(synth_medium):
    return [(c, crashcast.predict(c.video_path)) for c in read_csv(synth_medium / "annotations.csv")]


def test_physics_model_alerts_before_collisions_and_rarely_on_negatives(synthetic_predictions):
    """Floors are conservative; the figures measured (seed 11) are in the closing notes. The default
    alert policy (hysteresis, issue 24) alerts on every positive here and on 3 of 7 negatives: single
    high strides the median of 3 hid (docs/ALERTS.md). Over the same raw streams the median of 3 never
    alerts on a positive the default misses, and alerts later when both do."""
    from crashcast.risk.alerts import create_policy

    events = [c.time_of_event_s if c.target else None for c, _ in synthetic_predictions]
    firsts = [p.first_alert for _, p in synthetic_predictions]
    stats = alert_stats(events, firsts)
    assert stats["alert_rate"] >= 0.8, stats
    assert stats["false_alert_rate"] <= 0.5, stats
    assert stats["mean_lead_s"] >= 0.3, stats
    median = create_policy("median", 0.5, window=3)
    for (clip, p), default_first in zip(synthetic_predictions, firsts, strict=True):
        on = [t for t, s in zip(p.timeline.time_s, median.apply(p.timeline.risk_raw), strict=True) if s.alert]
        if on:  # the median's alert: never before the default's (which shows each stride's own risk)
            assert default_first is not None and default_first <= on[0], (clip.id, default_first, on[0])


def test_timeline_is_causal_and_regular(synthetic_predictions):
    clip, pred = synthetic_predictions[0]
    tl = pred.timeline
    assert list(tl.columns[:3]) == ["time_s", "risk", "risk_raw"]
    np.testing.assert_allclose(np.diff(tl.time_s), 0.5, atol=0.034)
    assert tl.risk.between(0, 1).all()
    assert pred.frames_perceived <= len(list(iter_resampled(clip.video_path))) // 3 + 1  # flow once per perceived frame
    d = pred.to_dict()
    assert d["first_alert_s"] == pred.first_alert and len(d["timeline"]) == len(tl)


def test_annotated_video_plays_and_shows_boxes(synth_small, tmp_path):
    clip = read_csv(synth_small / "annotations.csv")[0]
    out = tmp_path / "annotated.mp4"
    pred = crashcast.predict(clip.video_path, annotate=out)
    drawn = decode(out, long_side=None)
    source = decode(clip.video_path, long_side=None)
    assert len(drawn.frames) == len(source.frames)
    # a frame with detections: pixels on a box border differ from the source
    truth = json.loads((synth_small / "truth" / f"{clip.id}.json").read_text())
    k = int(round((clip.time_of_event_s - 1.0) * 30))
    diff = np.abs(drawn.frames[k].astype(int) - source.frames[k].astype(int)).max(axis=2)
    box = next(o["box_xyxy"] for o in truth["frames"][k]["objects"] if o["id"] == 0)
    x1, y1, x2, y2 = (int(v) for v in box)
    around = diff[max(0, y1 - 15) : y2 + 15, max(0, x1 - 15) : x2 + 15]
    assert (around > 60).mean() > 0.05, "no box drawn around the lead object"
    # the gauge shows each stride's risk from that stride's frame on: its height, and its colour (red
    # while the alert policy's alert is on)
    assert pred.timeline.alert.any() and not pred.timeline.alert.all()  # both colours are seen
    for t, risk, alert in zip(pred.timeline.time_s, pred.timeline.risk, pred.timeline.alert, strict=True):
        k = round(t * 30)
        if k < len(drawn.frames):
            height, color = _gauge(drawn.frames[k], pred.threshold)
            assert abs(height - int((drawn.frames[k].shape[0] - 60) * risk)) <= 3, (t, risk, height)
            if height >= 6:
                assert color == ("red" if alert else "amber" if risk >= pred.threshold / 2 else "green"), (t, risk)


def _gauge(img: np.ndarray, threshold: float) -> tuple[int, str]:
    """The risk gauge's filled height (pixels, from the bottom; the gauge is the frame's height less
    60) and colour in an annotated frame."""
    h, w = img.shape[:2]
    x0, y0, gh = w - 30, 30, h - 60
    bar = img[y0 : y0 + gh + 1, x0 + 4 : x0 + 12].astype(float).mean(axis=1)  # rows, top to bottom
    filled = np.abs(bar - 40).max(axis=1) > 25  # the unfilled gauge is dark grey (40, 40, 40)
    line = gh - int(gh * threshold)  # the threshold mark crosses the bar: read it as the row below it
    filled[line - 1 : line + 2] = filled[min(line + 2, gh)]
    height = int(np.argmin(filled[::-1])) if not filled.all() else gh + 1
    height -= 1  # the bar's rectangle includes its bottom row: a fill of f pixels covers f + 1 rows
    colors = {"red": (230, 40, 40), "amber": (240, 180, 40), "green": (60, 200, 80)}
    mid = bar[gh - max(height, 0) // 2]
    return height, min(colors, key=lambda c: float(np.abs(mid - colors[c]).sum()))


def test_predict_cli_on_a_folder_records_bad_files(real_dir, tmp_path):
    bad = tmp_path / "videos"
    bad.mkdir()
    (bad / "broken.mp4").write_text("not a video")
    import shutil

    shutil.copy(real_dir / "bus_dashcam_rollover.mp4", bad / "bus.mp4")
    r = runner.invoke(app, ["predict", str(bad), "--out", str(tmp_path / "out"), "--format", "csv"])
    assert r.exit_code == 1
    assert "time_s,risk" in r.output and "broken.mp4: failed" in r.output
    errors = (tmp_path / "out" / "errors.jsonl").read_text()
    assert "broken" in errors and "not a readable video" in errors
    tl = pd.read_csv(tmp_path / "out" / "bus" / "timeline.csv")
    assert len(tl) >= 6 and (tmp_path / "out" / "bus" / "risk.png").exists()
    j = json.loads((tmp_path / "out" / "bus" / "timeline.json").read_text())
    assert j["model"] == "physics" and "first_alert_s" in j


def test_api_predict_many_in_process_yields_each_video_as_it_finishes(synth_small, tmp_path):
    """One worker: the videos run here in order, each outcome comes before the next video is read,
    the files equal `predict` + `write_outputs`, and a broken video is recorded in errors.jsonl."""
    from crashcast import api
    from crashcast.prediction import write_outputs

    video = read_csv(synth_small / "annotations.csv")[0].video_path
    broken = tmp_path / "broken.mp4"
    broken.write_text("not a video")
    out = tmp_path / "out"
    (out / "errors.jsonl").parent.mkdir()
    (out / "errors.jsonl").write_text("an earlier run's failure\n")
    outcomes = api.predict_many([broken, video], "physics", "classic", out, stride_s=1.0)
    first = next(outcomes)
    assert first.path == broken and first.prediction is None and "not a readable video" in first.error
    assert not (out / video.stem).exists()  # the second video is not read yet
    assert "broken" in (out / "errors.jsonl").read_text() and "earlier" not in (out / "errors.jsonl").read_text()
    second = next(outcomes)
    assert second.path == video and second.error is None and next(outcomes, None) is None
    write_outputs(crashcast.predict(video, "physics", "classic", stride_s=1.0), tmp_path / "one")
    for name in ("timeline.csv", "timeline.json"):
        assert (out / video.stem / name).read_bytes() == (tmp_path / "one" / name).read_bytes()


def test_real_clips_risk_timelines(real_dir):
    """Recorded, not asserted beyond sanity: the classic path's behaviour on real footage is
    discussed in the closing note (ccd_000007's crash is a side impact on the car ahead)."""
    for name in ("ccd_000007.mp4", "udacity_solid_white_right.mp4"):
        pred = crashcast.predict(real_dir / name)
        assert len(pred.timeline) >= 8 and pred.timeline.risk.between(0, 1).all()


def test_a_saved_model_folder_is_accepted(tmp_path, synth_small):
    from crashcast.risk.models import create_model

    folder = create_model("ttc").save(tmp_path / "ttc_model")
    clip = read_csv(synth_small / "annotations.csv")[1]
    pred = crashcast.predict(clip.video_path, model=folder)
    assert pred.model == "ttc"
