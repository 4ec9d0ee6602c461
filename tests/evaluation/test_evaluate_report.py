from __future__ import annotations

import json
import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from crashcast.cli import app
from crashcast.evaluation.report import write_report

runner = CliRunner()
HOSTILE_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;_"  # the hostile clip's window ids, escaped


def test_evaluate_writes_metrics_with_intervals_and_paper_rows(toy_run):
    res = json.loads((toy_run / "metrics.json").read_text())
    assert set(res["models"]) == {"ttc", "physics", "lightgbm", "xgboost", "mlp"}
    lgb = res["models"]["lightgbm"]
    for m in ("precision", "recall", "f1", "mae", "brier", "ece", "ap", "auc"):
        assert m in lgb["window"]
    lo, hi = lgb["ci95"]["ap"]
    assert lo <= lgb["window"]["ap"] <= hi
    assert lgb["window"]["ap"] > 0.85
    md = (toy_run / "metrics.md").read_text()
    assert "paper: Enhanced FT" in md and "94.05" in md and "| lightgbm |" in md
    assert "`crashcast dense`" in md  # where the per-frame mTTA is: the window-end one is capped by the horizons
    pred = (toy_run / "predictions" / "lightgbm.csv").read_text()
    assert "rationale" in pred.splitlines()[0]
    assert (toy_run / "models" / "lightgbm" / "booster.txt").exists()
    test_clips = set(res["split"]["test_clip_ids"])
    train_ids = set(pd.read_parquet(toy_run / "features.parquet").clip_id) - test_clips
    assert not (train_ids & test_clips)


def test_report_is_self_contained_and_escapes_text(cv_run):
    """Under CV every clip is scored, so the hostile clip (the worst case) is in the gallery: its id
    must be shown, escaped (this fails with jinja2 autoescape off)."""
    html = write_report(cv_run).read_text()
    assert HOSTILE_ESCAPED in html
    assert "<script" not in html
    srcs = re.findall(r'src="([^"]+)"', html)
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    for heading in ("Metrics", "Reliability", "Precision-recall", "ROC", "Score distributions", "Risk against the event", "Gallery"):
        assert heading in html or heading.lower() in html.lower(), heading


def test_a_window_whose_keyframe_is_gone_is_left_out_of_the_gallery(cv_run, tmp_path, caplog):
    """The hostile clip is the worst case; without one of its keyframes it is left out of the gallery
    (not shown with two images), and the warning (`runs.left_out`, as `crashcast prompts` gives it)
    names the missing file."""
    import logging

    run = tmp_path / "run"
    shutil.copytree(cv_run, run)
    gone = sorted(run.glob("clips/**/kf1.png"))
    assert len(gone) == 3  # the hostile clip's three windows
    for f in gone:
        f.unlink()
    with caplog.at_level(logging.WARNING, logger="crashcast.runs"):
        html = write_report(run).read_text()
    assert HOSTILE_ESCAPED not in html
    left = [r.getMessage() for r in caplog.records if r.getMessage().startswith("report: window <script>")]
    assert left and all("kf1.png" in m and "does not exist" in m for m in left)


def test_report_of_a_single_split_run(toy_run):
    res = json.loads((toy_run / "metrics.json").read_text())
    html = write_report(toy_run).read_text()
    p = res["protocol"]
    assert f"Scored: test split: {p['scored_clips']} of {p['clips']} clips, {p['scored_windows']} windows" in html
    assert p["scored_clips"] == res["split"]["test_clips"] < p["clips"]
    assert "<td>lightgbm</td>" in html


def _chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(_chromium() is None, reason="chromium not installed (Debian package `chromium`; CI installs it)")
def test_report_renders_in_headless_chromium(cv_run, tmp_path):
    path = write_report(cv_run)
    shot = tmp_path / "shot.png"
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--enable-logging=stderr", "--v=0", "--window-size=1280,2000",
           f"--screenshot={shot}", path.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert shot.exists(), out.stderr[-2000:]
    console = [line for line in out.stderr.splitlines() if "CONSOLE" in line or "Uncaught" in line or "Failed to load resource" in line]
    assert not console, console
    import cv2

    img = cv2.imread(str(shot))
    assert img is not None and img.shape[0] >= 1000
    assert img.std() > 10  # not a blank page: tables, curves and images are drawn


def test_evaluate_cli_reports_missing_features(tmp_path):
    r = runner.invoke(app, ["evaluate", str(tmp_path)])
    assert r.exit_code != 0
    assert "features.parquet" in str(r.exception) + r.output


@pytest.mark.parametrize("run", ["toy_run", "cv_run"])
def test_scores_are_probabilities(run, request):
    folder = request.getfixturevalue(run) / "predictions"
    files = list(folder.glob("*.csv"))
    assert len(files) == 5
    for f in files:
        s = pd.read_csv(f).score.to_numpy()
        assert np.all((s >= 0) & (s <= 1)), f
