"""`crashcast dense` end to end on synthetic clips: the weight-free classic perception and the physics
model saved in a run, its test clips predicted whole; the figures written are the pure functions of
`crashcast.evaluation.dense` applied to the timelines written, and those are predict's own."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.evaluation import dense as D
from crashcast.extract import prepare_run
from crashcast.risk.alerts import from_settings
from crashcast.risk.models import create_model
from crashcast.runtime.store import atomic_write_text


@pytest.fixture(scope="module")
def physics_run(synth_small, tmp_path_factory):
    """A run of the classic preset whose metrics.json (split protocol) names two positive and two
    negative synthetic clips as its test clips, plus one clip the annotations lack; the physics model
    saved in run/models/physics as `evaluate` saves it."""
    run = tmp_path_factory.mktemp("dense_run")
    cfg = load_config("classic")
    prepare_run(run, cfg)
    clips = read_csv(synth_small / "annotations.csv")
    pos = [c.id for c in clips if c.target == 1][:2]
    neg = [c.id for c in clips if c.target == 0][:2]
    assert len(pos) == 2 and len(neg) == 2
    test_ids = [*pos, *neg, "not-in-the-annotations"]
    metrics = {"protocol": {"kind": "split"}, "split": {"test_clip_ids": test_ids}, "models": {"physics": {}}}
    atomic_write_text(run / "metrics.json", json.dumps(metrics))
    create_model("physics", cfg.physics.model_dump()).save(run / "models" / "physics", {"protocol": "split"})
    assert cli_exit_code(["dense", run, synth_small / "annotations.csv", "--model", "physics"]) == 0
    return run, {c.id: c for c in clips}, cfg


def test_dense_figures_are_the_pure_functions_of_the_written_timelines(physics_run):
    run, clips, cfg = physics_run
    results = json.loads((run / "dense_metrics.json").read_text())
    entry = results["models"]["physics"]
    timelines = D.read_timelines(run / entry["timelines"])
    assert sorted(t.clip_id for t in timelines) == sorted(c for c in clips if c in _test_ids(run)[:4])
    assert entry["missing"] == ["not-in-the-annotations"] and entry["failed"] == []
    for t in timelines:  # events: the annotations' for positives, none for negatives
        c = clips[t.clip_id]
        assert t.event_s == (c.time_of_event_s if c.target else None)
        assert len(t.times_s) > 5
    policy = from_settings(cfg.alert, cfg.evaluation.threshold)
    want = D.json_safe(D.dense_metrics(timelines, policy, 0.5))
    assert entry["metrics"] == want
    f = entry["metrics"]["field"]
    assert (f["positives"], f["negatives"]) == (2, 2)
    assert entry["alert_policy"]["policy"] == cfg.alert.policy
    md = (run / "dense.md").read_text()
    assert "| physics | 4 (2/2) | 0.5 |" in md


def test_dense_timelines_are_predicts_own(physics_run):
    """Each timeline is the risk_raw column of predict's timeline.csv for that video (written beside it)."""
    run, _, _ = physics_run
    timelines = D.read_timelines(run / "dense" / "physics" / "timelines.csv")
    for t in timelines:
        own = pd.read_csv(run / "dense" / "physics" / "videos" / t.clip_id / "timeline.csv")
        np.testing.assert_array_equal(own.time_s.to_numpy(), t.times_s)
        np.testing.assert_array_equal(own.risk_raw.to_numpy(), t.scores)
        np.testing.assert_allclose(np.diff(t.times_s), 0.5, atol=0.034)  # causal, one window per stride


def test_dense_refuses_a_model_the_run_did_not_save(physics_run, synth_small, capsys):
    run, _, _ = physics_run
    assert cli_exit_code(["dense", run, synth_small / "annotations.csv", "--model", "lightgbm"]) == 2
    err = " ".join(capsys.readouterr().err.replace("│", " ").split())  # typer's box, lines folded
    assert "no saved model 'lightgbm'" in err and "saved: physics" in err


def _test_ids(run) -> list[str]:
    return json.loads((run / "metrics.json").read_text())["split"]["test_clip_ids"]


def test_report_shows_the_dense_table(tmp_path):
    """An evaluated toy run with a dense_metrics.json (written from two hand timelines) gets the dense
    table in its report; without the file, no such section."""
    from tests.evaluation.conftest import toy_table

    from crashcast.evaluation.experiments import run_experiments
    from crashcast.evaluation.report import write_report
    from crashcast.risk.alerts import create_policy
    from crashcast.runtime.store import atomic_write_bytes

    atomic_write_bytes(tmp_path / "features.parquet", toy_table(20).to_parquet(index=False))
    run_experiments(tmp_path, ["ttc"], load_config("classic"), "none")
    assert "Dense per-video" not in write_report(tmp_path).read_text()
    timelines = [D.DenseTimeline("p", np.array([1.0, 2.0]), np.array([0.2, 0.9]), 3.0),
                 D.DenseTimeline("n", np.array([1.0, 2.0]), np.array([0.1, 0.4]))]
    # one positive, one negative below its top: every threshold (0.1, 0.2, 0.4, 0.9) has recall 1;
    # best precision 1 (at 0.9): AP 100 %; TTA 3 - 1 = 2.0 at 0.1-0.2, 3 - 2 = 1.0 at 0.4-0.9: best 2.0,
    # so mTTA and TTA@R80 2.00
    D.write_results(tmp_path, "ttc", timelines, {}, create_policy("none", 0.5), 1.0)
    html = write_report(tmp_path).read_text()
    assert "Dense per-video metrics" in html
    assert "<td>ttc</td><td>2 (1/1)</td><td>1</td><td>100.0</td><td>2.00</td><td>2.00</td>" in html
