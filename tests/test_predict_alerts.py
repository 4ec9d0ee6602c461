"""The alert policy in predict's outputs (timeline CSV/JSON, risk.png, the annotated video), through the
CLI and the API, and which perception produced them (issue 24, items 2 and 6)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

import crashcast
from crashcast import api
from crashcast.cli import app
from crashcast.config import load_config
from crashcast.data.video import decode
from crashcast.prediction import alert_intervals, alert_policy_for, risk_figure
from crashcast.risk.alerts import create_policy

runner = CliRunner()
CCD_EVENT_S = 3.1  # ccd_000007: the crash (annotations.csv)


@pytest.fixture(scope="module")
def ccd_cli(real_dir, tmp_path_factory):
    """`crashcast predict ccd_000007.mp4 --annotate` with the default alert policy, run once."""
    out = tmp_path_factory.mktemp("ccd")
    r = runner.invoke(app, ["predict", str(real_dir / "ccd_000007.mp4"), "--backend", "classic", "--annotate",
                            "--out", str(out)])
    assert r.exit_code == 0, r.output
    return out / "ccd_000007", r.output


def test_the_default_policy_shows_ccd_000007s_raw_alert(ccd_cli):
    """Before issue 24 the median of 3 strides hid ccd_000007's raw 0.96 at 1.5 s (crash at 3.1 s):
    the default policy alerts at the first stride whose raw risk reaches the threshold, before the
    crash, and every column agrees with the policy applied to risk_raw."""
    folder, output = ccd_cli
    tl = pd.read_csv(folder / "timeline.csv")
    assert list(tl.columns[:4]) == ["time_s", "risk", "risk_raw", "alert"]
    doc = json.loads((folder / "timeline.json").read_text())
    crossing = tl.time_s[tl.risk_raw >= doc["threshold"]]
    assert len(crossing) and crossing.iloc[0] < CCD_EVENT_S, "the raw risk no longer reaches the threshold before the crash"
    assert doc["first_alert_s"] == crossing.iloc[0] < CCD_EVENT_S
    policy = alert_policy_for(load_config("classic"), doc["threshold"])
    steps = policy.apply(tl.risk_raw)
    assert tl.alert.tolist() == [int(s.alert) for s in steps]
    np.testing.assert_allclose(tl.risk, [s.shown for s in steps], atol=1e-4)
    assert doc["alert_policy"] == policy.describe() and "ALERT" in output
    assert [r["alert"] for r in doc["timeline"]] == tl.alert.tolist()


def test_outputs_name_the_perception(ccd_cli):
    folder, _ = ccd_cli
    cfg = load_config("classic")
    doc = json.loads((folder / "timeline.json").read_text())
    assert doc["perception"]["preset"] == "classic"
    assert doc["perception"]["extraction_hash"] == cfg.extraction_hash()
    assert doc["perception"]["backends"] == {"flow": "classic-flow", "detector": "classic-motion", "segmenter": "classic-box",
                                             "tracker": "bytetrack", "depth": "classic-ground"}
    tl = pd.read_csv(folder / "timeline.csv")
    assert set(tl.perception) == {f"classic {cfg.extraction_hash()}"}


def test_risk_plot_draws_raw_shown_threshold_and_alert_intervals(real_dir):
    pred = api.predict(real_dir / "ccd_000007.mp4", config="classic")
    fig = risk_figure(pred)
    ax = fig.axes[0]
    lines = {ln.get_label(): ln for ln in ax.get_lines()}
    np.testing.assert_allclose(lines["raw risk"].get_ydata(), pred.timeline.risk_raw)
    np.testing.assert_allclose(lines["risk shown"].get_ydata(), pred.timeline.risk)
    assert lines[f"threshold {pred.threshold}"].get_ydata()[0] == pred.threshold
    spans = list(ax.patches)  # the shaded alert intervals (axvspan), nothing else is a patch of the axes
    intervals = alert_intervals(pred.timeline.time_s, pred.timeline.alert)
    assert len(intervals) >= 1 and len(spans) == len(intervals)
    for (a, b), patch in zip(intervals, spans, strict=True):
        assert (patch.get_x(), patch.get_x() + patch.get_width()) == pytest.approx((a, b))  # a Rectangle
    assert f"perception: classic {pred.perception['extraction_hash']}" in ax.get_title()
    assert pred.alert_policy in ax.get_title()


def test_annotated_video_shows_the_alert_and_the_perception(ccd_cli, real_dir):
    folder, _ = ccd_cli
    tl = pd.read_csv(folder / "timeline.csv")
    drawn = decode(folder / "annotated.mp4", long_side=None)
    source = decode(real_dir / "ccd_000007.mp4")
    h, w = drawn.frames.shape[1:3]
    x0, y0, gh = w - 30, 30, h - 60
    for t, raw, alert in zip(tl.time_s, tl.risk_raw, tl.alert, strict=True):
        img = drawn.frames[round(t * 30)].astype(int)
        bottom = img[y0 + gh - 2, x0 + 4: x0 + 12].mean(axis=0)  # the bar's foot: the alert colour when on
        assert (np.abs(bottom - (230, 40, 40)).sum() < 60) == bool(alert), (t, alert, bottom)
        label = img[y0 + 2: y0 + 18, x0 - 56: x0 - 10].reshape(-1, 3)  # "ALERT" left of the gauge's top
        assert ((np.abs(label - (230, 40, 40)).sum(axis=1) < 90).sum() > 20) == bool(alert), t
        tick_row = y0 + gh - int(gh * min(max(raw, 0.0), 1.0))  # the raw risk's cyan tick left of the gauge
        tick = img[max(0, tick_row - 2): tick_row + 3, x0 - 7: x0 - 2].reshape(-1, 3)
        assert (np.abs(tick - (40, 220, 240)).sum(axis=1) < 90).any(), (t, raw)
    # the perception's name is written at the bottom left of every frame
    k = 10
    strip = np.abs(drawn.frames[k, h - 16:, :200].astype(int) - source.frames[k, h - 16:, :200].astype(int)).max(axis=2)
    assert (strip > 100).mean() > 0.05


def test_alert_policy_choice_through_cli_and_api(real_dir, tmp_path):
    video = real_dir / "ccd_000007.mp4"
    r = runner.invoke(app, ["predict", str(video), "--backend", "classic", "--alert-policy", "median", "--format", "json",
                            "--out", str(tmp_path / "cli")])
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout.strip().splitlines()[-1])
    raws = [row["risk_raw"] for row in doc["timeline"]]
    expected = create_policy("median", 0.5, window=3).apply(raws)
    assert [row["alert"] for row in doc["timeline"]] == [int(s.alert) for s in expected]
    assert doc["alert_policy"].startswith("median") and doc["first_alert_s"] == next(
        (row["time_s"] for row in doc["timeline"] if row["alert"]), None)
    # the same through the API: a name, a policy object, the old `smooth`, a --set of the config
    by_name = crashcast.predict(video, alert_policy="k-of-n")
    kofn = create_policy("k-of-n", 0.5, k=2, n=3).apply(by_name.timeline.risk_raw)
    assert by_name.timeline.alert.tolist() == [int(s.alert) for s in kofn]
    obj = crashcast.predict(video, threshold=0.3, alert_policy=create_policy("max", 0.9, window=2))
    assert obj.alert_policy.startswith("max (threshold 0.3")  # predict's threshold wins
    assert crashcast.predict(video, smooth=3).alert_policy == "median (threshold 0.5, window 3)"
    r = runner.invoke(app, ["predict", str(video), "--backend", "classic", "--set", "alert.policy=ema", "--set",
                            "alert.alpha=0.7", "--format", "json", "--out", str(tmp_path / "set")])
    assert r.exit_code == 0 and json.loads(r.stdout.strip().splitlines()[-1])["alert_policy"] == "ema (threshold 0.5, alpha 0.7)"


def test_bad_alert_settings_fail_before_any_video_is_read(tmp_path):
    missing = tmp_path / "never-read.mp4"
    r = runner.invoke(app, ["predict", str(missing), "--alert-policy", "majority"])
    assert r.exit_code == 2 and "majority" in r.output
    r = runner.invoke(app, ["predict", str(tmp_path), "--set", "alert.k=5", "--out", str(tmp_path / "out")])
    assert r.exit_code != 0 and "k <= n" in str(r.exception)  # main() prints it as one line
    with pytest.raises(crashcast.errors.ConfigError, match="majority"):
        api.predict(missing, alert_policy="majority")
    with pytest.raises(crashcast.errors.ConfigError, match="majority"):
        list(api.predict_many([missing], out=tmp_path / "o", alert_policy="majority"))
    assert not (tmp_path / "o").exists()
