from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from crashcast.cli import app
from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.errors import SchemaError
from crashcast.extract import extract_run
from crashcast.features.table import feature_columns
from crashcast.features.window_meta import json_schema, read_window_meta

runner = CliRunner()


@pytest.fixture(scope="module")
def run_small(synth_small, tmp_path_factory):
    run = tmp_path_factory.mktemp("run_small")
    clips = read_csv(synth_small / "annotations.csv")[:4]
    summary = extract_run(clips, run, load_config("classic"), workers=2, progress=False)
    return run, summary, clips


def test_every_window_meta_validates_and_has_the_paper_fields(run_small):
    run, summary, _clips = run_small
    assert summary.ok == 4 and summary.failed == 0 and summary.windows == 12
    paths = sorted(run.glob("clips/*/*/window_meta.json"))
    assert len(paths) == 12
    for p in paths:
        raw = json.loads(p.read_text())
        for key in ("phase", "frame_paths", "frame_times", "label", "y_alert", "y_event", "instances", "box_depths", "mask_stats"):
            assert key in raw, key
        meta = read_window_meta(p)
        assert all((p.parent / f).exists() for f in meta.frame_paths)
        assert meta.config_hash and meta.backends["detector"] == "classic-motion"
    assert "properties" in json_schema()


def test_perception_runs_once_per_clip_over_the_windows_union(run_small):
    _run, summary, _ = run_small
    # 6 s (+0.5 s warm-up) per clip at 30 fps decoded, perceived every 3rd frame
    assert summary.frames_decoded <= 4 * int(6.5 * 30 + 2)
    assert summary.frames_processed <= 4 * (int(6.5 * 10) + 2)


def test_feature_table_one_row_per_window(run_small):
    run, _, _ = run_small
    df = pd.read_parquet(run / "features.parquet")
    assert len(df) == 12 and set(feature_columns()) <= set(df.columns)
    assert df.window_id.is_unique
    assert set(df.label) == {0, 1}


def test_rerun_skips_finished_clips_and_redoes_a_truncated_meta(run_small, synth_small):
    run, _, clips = run_small
    victim = next(run.glob("clips/*/mid/window_meta.json"))
    victim.write_text(victim.read_text()[:100])  # as left by a killed run
    with pytest.raises(SchemaError, match="not valid JSON"):
        read_window_meta(victim)
    summary = extract_run(clips, run, load_config("classic"), workers=1, progress=False)
    assert summary.skipped == 3 and summary.ok == 4
    read_window_meta(victim)


def test_changed_config_refuses_to_mix(run_small):
    run, _, clips = run_small
    from crashcast.errors import ConfigError

    with pytest.raises(ConfigError, match="different extraction config"):
        extract_run(clips[:1], run, load_config("classic", ["perception.geometry.hfov_deg=60"]), progress=False)


def test_bad_clip_is_recorded_and_skipped(tmp_path, synth_small):
    csv = tmp_path / "a.csv"
    good = read_csv(synth_small / "annotations.csv")[0]
    (tmp_path / "broken.mp4").write_text("not a video")
    import shutil

    shutil.copy(good.video_path, tmp_path / f"{good.id}.mp4")
    csv.write_text(f"id,time_of_event,time_of_alert,target\n{good.id},{good.time_of_event_s},{good.time_of_alert_s or ''},1\nbroken,5.0,,1\n")
    r = runner.invoke(app, ["extract", "--annotations", str(csv), "--out", str(tmp_path / "run")])
    assert r.exit_code == 1
    errors = [json.loads(line) for line in (tmp_path / "run" / "errors.jsonl").read_text().splitlines()]
    assert errors[0]["clip_id"] == "broken" and "not a readable video" in errors[0]["error"]
    assert len(list((tmp_path / "run").glob(f"clips/{good.id}/*/window_meta.json"))) == 3


def test_real_clips_extract_validate_and_overlays_show_objects(real_dir, tmp_path):
    r = runner.invoke(app, ["extract", "--annotations", str(real_dir / "annotations.csv"), "--out", str(tmp_path),
                            "--missing-event", "end"])
    assert r.exit_code == 0, r.output
    metas = [read_window_meta(p) for p in tmp_path.glob("clips/*/*/window_meta.json")]
    clips = len((real_dir / "annotations.csv").read_text().splitlines()) - 1
    assert clips >= 3 and len(metas) == 3 * clips  # max, mid and mini of every clip
    import cv2

    for m in metas:
        wdir = tmp_path / "clips" / m.clip_id
        for f in m.frame_paths:
            img = cv2.imread(str(next(wdir.glob(f"*/{f}"))))
            assert img is not None and img.shape[1] == 640
    ccd = [m for m in metas if m.clip_id == "ccd_000007"]
    assert any(len(m.instances) > 0 for m in ccd)  # cars are found in the crash clip
    # the two short crash clips of the first three: their 6 s window starts before the video does
    assert all(m.clamped for m in metas if m.phase == "max" and m.clip_id in ("ccd_000007", "bus_dashcam_rollover"))
