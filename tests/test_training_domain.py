"""Models carry their training domain: a run records whether each clip is synthetic (rendered by
`crashcast synth`) or real, a saved model's card says what it was trained on (how many clips of
each, which perception preset and extraction hash), and `predict` says in one line when a model
trained on synthetic clips only is applied to a real video, or when the video's perception is not
the model's."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from tests.conftest import cli_exit_code, level_frames, write_video

from crashcast import api
from crashcast.data.annotations import read_csv
from crashcast.data.domain import DOMAINS_FILE, record_domains, training_domain, video_domain

SYNTH_ONLY = "trained on synthetic clips only"
OTHER_PERCEPTION = "trained on features of another perception config"


@pytest.fixture(scope="module")
def synthetic_model(synth_small, tmp_path_factory) -> Path:
    """lightgbm trained (2-fold CV, refit on all) on the eight synthetic clips, through the CLI."""
    run = tmp_path_factory.mktemp("domain") / "run"
    assert cli_exit_code(["extract", "--annotations", synth_small / "annotations.csv", "--out", run, "--backend", "classic",
                          "--workers", "2", "--horizons", "0,1"]) == 0
    assert cli_exit_code(["evaluate", run, "--models", "lightgbm", "--folds", "2"]) == 0
    return run / "models" / "lightgbm"


def _warnings(err: str, what: str) -> list[str]:
    return [line for line in err.splitlines() if what in line]


def test_a_run_records_its_clips_domains_and_the_model_card_says_what_it_was_trained_on(synthetic_model, synth_small):
    run = synthetic_model.parent.parent
    ids = [c.id for c in read_csv(synth_small / "annotations.csv")]
    assert json.loads((run / DOMAINS_FILE).read_text()) == dict.fromkeys(ids, "synthetic")
    card = json.loads((synthetic_model / "model.json").read_text())
    assert card["training_domain"] == {"trained_on": "synthetic", "synthetic_clips": len(ids), "real_clips": 0,
                                       "unknown_clips": 0}
    cfg = api.load(run / "config.yaml")
    assert card["perception_preset"] == cfg.name and card["extraction_hash"] == cfg.extraction_hash()


def test_predict_says_in_one_line_that_a_synthetic_model_meets_a_real_video(synthetic_model, synth_small, tmp_path, capsys):
    real = write_video(tmp_path / "drive.mp4", level_frames(40, (128, 96), step=3), [i / 10 for i in range(40)])
    capsys.readouterr()
    assert cli_exit_code(["predict", real, "--model", synthetic_model, "--out", tmp_path / "pred"]) == 0
    lines = _warnings(capsys.readouterr().err, SYNTH_ONLY)
    assert len(lines) == 1 and "drive.mp4 is a real video" in lines[0] and "(8 clips)" in lines[0], lines
    assert len(lines[0]) < 250
    # several videos: one line with the count; one of the synthetic run's own clips is not counted
    synth = read_csv(synth_small / "annotations.csv")[0].video_path
    other = write_video(tmp_path / "other.mp4", level_frames(30, (128, 96), step=4), [i / 10 for i in range(30)])
    assert cli_exit_code(["predict", real, synth, other, "--model", synthetic_model, "--out", tmp_path / "pred3"]) == 0
    lines = _warnings(capsys.readouterr().err, SYNTH_ONLY)
    assert len(lines) == 1 and "2 of the 3 videos are real" in lines[0], lines
    # a synthetic clip copied out of its folder is a video like any other
    assert video_domain(shutil.copy(synth, tmp_path / synth.name)) == "real"


def test_predict_says_in_one_line_when_the_videos_perception_is_not_the_models(synthetic_model, tmp_path, capsys):
    video = write_video(tmp_path / "drive.mp4", level_frames(40, (128, 96), step=3), [i / 10 for i in range(40)])
    capsys.readouterr()
    assert cli_exit_code(["predict", video, "--model", synthetic_model, "--out", tmp_path / "pred",
                          "--config", "classic", "--set", "perception.flow.preset=medium"]) == 0
    err = capsys.readouterr().err
    lines = _warnings(err, OTHER_PERCEPTION)
    assert len(lines) == 1 and "classic" in lines[0], err
    assert len(_warnings(err, SYNTH_ONLY)) == 1  # the two misfits, one line each


def test_training_domain_counts_mixed_and_unrecorded_clips(synth_small, tmp_path):
    from crashcast.types import Clip

    synth = read_csv(synth_small / "annotations.csv")
    real = Clip(id="drive", video_path=tmp_path / "drive.mp4", target=0)
    run = tmp_path / "run"
    run.mkdir()
    assert training_domain(run, [c.id for c in synth]) == {"trained_on": "unknown", "synthetic_clips": 0,
                                                            "real_clips": 0, "unknown_clips": len(synth)}
    record_domains(run, [*synth[:2], real])
    got = training_domain(run, [synth[0].id, synth[1].id, "drive"])
    assert got == {"trained_on": "synthetic+real", "synthetic_clips": 2, "real_clips": 1, "unknown_clips": 0}
    assert training_domain(run, ["drive"])["trained_on"] == "real"
    assert video_domain(synth[0].video_path) == "synthetic" and video_domain(tmp_path / "drive.mp4") == "real"
    (synth_small / "truth" / f"{synth[0].id}.json").rename(tmp_path / "away.json")
    try:  # a folder whose ground truth is incomplete is not synth's own: its clips count as real
        assert video_domain(synth[0].video_path) == "real"
    finally:
        (tmp_path / "away.json").rename(synth_small / "truth" / f"{synth[0].id}.json")
    (run / DOMAINS_FILE).write_text("{not json")
    assert training_domain(run, ["drive"])["trained_on"] == "unknown"


def test_a_model_without_a_recorded_domain_gets_no_domain_line(synthetic_model, tmp_path, caplog):
    old = tmp_path / "old-model"
    shutil.copytree(synthetic_model, old)
    card = json.loads((old / "model.json").read_text())
    del card["training_domain"]
    (old / "model.json").write_text(json.dumps(card))
    cfg = api.load(synthetic_model.parent.parent / "config.yaml")
    assert api.check_model_features(old, cfg, [tmp_path / "drive.mp4"])
    assert not api.check_model_features(synthetic_model, cfg, [tmp_path / "drive.mp4"])
    assert api.check_model_features(synthetic_model, cfg)  # no videos named: nothing to compare
