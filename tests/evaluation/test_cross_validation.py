"""Cross-validation by video: folds, out-of-fold scoring, pooled metrics, the refit model, the
protocol in metrics.json/metrics.md, and `explain_results`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from crashcast.config import load_config
from crashcast.data.splits import clip_folds, cv_folds
from crashcast.errors import CrashcastError
from crashcast.evaluation import metrics as M
from crashcast.evaluation.experiments import explain_results, load_features
from crashcast.risk.calibration import Calibrator
from crashcast.risk.models import create_model, load_model

CV_FOLDS = 5  # as the cv_run fixture (conftest.py)
HOSTILE = "<script>alert(1)</script>"
CFG = load_config("classic")
VAL_SHARE = CFG.evaluation.val_fraction / (1 - CFG.evaluation.test_fraction)


def _clips(df: pd.DataFrame, rows: np.ndarray) -> set[str]:
    return set(df.clip_id.iloc[rows])


def test_clip_folds_partition_the_clips_stratified_and_seeded(make_toy_table):
    df = make_toy_table(23)  # 12 negatives, 11 positives: folds of 4 or 5 clips
    folds = clip_folds(df, 5, seed=0)
    assert set().union(*folds) == set(df.clip_id)
    assert sum(len(f) for f in folds) == 23  # no clip in two folds
    assert {len(f) for f in folds} == {4, 5}
    labels = df.groupby("clip_id").label.max()
    for f in folds:
        assert set(labels[list(f)]) == {0, 1}  # both classes in every fold
    assert clip_folds(df, 5, seed=0) == folds
    assert clip_folds(df, 5, seed=1) != folds
    with pytest.raises(CrashcastError, match="at least 2 folds"):
        clip_folds(df, 1)
    with pytest.raises(CrashcastError, match="needs at least 24 clips; the table has 23"):
        clip_folds(df, 24)


def test_cv_folds_never_mix_a_clip_into_training_and_test(make_toy_table):
    df = make_toy_table(40)
    splits = cv_folds(df, 5, VAL_SHARE, seed=0)
    assert [_clips(df, s.test) for s in splits] == clip_folds(df, 5, seed=0)
    for s in splits:
        train, val, test = _clips(df, s.train), _clips(df, s.val), _clips(df, s.test)
        assert not (train & val) and not (train & test) and not (val & test)
        assert len(s.train) + len(s.val) + len(s.test) == len(df)
        assert set(df.label.iloc[s.val]) == {0, 1}  # calibration sees both classes
    scored = np.sort(np.concatenate([s.test for s in splits]))
    np.testing.assert_array_equal(scored, np.arange(len(df)))  # every window scored exactly once


def test_cv_scores_every_clip_once_by_a_model_that_never_saw_it(cv_run):
    """Each out-of-fold score equals a model trained on that fold's training clips and calibrated on
    its validation clips, recomputed here from scratch."""
    df = load_features(cv_run)
    pred = pd.read_csv(cv_run / "predictions" / "lightgbm.csv", dtype={"clip_id": str, "window_id": str})
    assert sorted(pred.window_id) == sorted(df.window_id)  # every window, once
    assert pred.groupby("clip_id").fold.nunique().max() == 1
    splits = cv_folds(df, CV_FOLDS, VAL_SHARE, CFG.evaluation.seed)
    for i, s in enumerate(splits):
        assert set(pred.clip_id[pred.fold == i]) == _clips(df, s.test)
        model = create_model("lightgbm").fit(df.iloc[s.train])
        val = df.iloc[s.val]
        cal = Calibrator.fit("platt", model.raw_scores(val), val.label.to_numpy())
        test = df.iloc[s.test]
        raw = model.raw_scores(test)
        got = pred.set_index("window_id").loc[test.window_id]
        np.testing.assert_allclose(got.score_raw, raw, atol=1e-6)
        np.testing.assert_allclose(got.score, np.clip(cal(raw), 0, 1), atol=1e-6)


def test_cv_metrics_are_those_of_the_pooled_out_of_fold_predictions(cv_run):
    res = json.loads((cv_run / "metrics.json").read_text())
    assert res["protocol"] == {"kind": "cv", "folds": CV_FOLDS, "seed": 0, "clips": 60, "windows": 180,
                               "scored_clips": 60, "scored_windows": 180, "scored_positive_windows": 63,
                               "positive_rate": 63 / 180, "ranking_scores": "raw out-of-fold"}
    assert len(res["cv"]["folds"]) == CV_FOLDS and sum(f["test_clips"] for f in res["cv"]["folds"]) == 60
    df = load_features(cv_run).set_index("window_id")
    for name, r in res["models"].items():
        pred = pd.read_csv(cv_run / "predictions" / f"{name}.csv", dtype={"window_id": str})
        y = pred.label.to_numpy()
        m = M.paper_metrics(y, pred.score.to_numpy(), pred.soft_target.to_numpy())
        for k in ("precision", "recall", "f1", "mae", "brier", "ece"):
            assert r["window"][k] == pytest.approx(m[k], abs=1e-5), (name, k)
        # AP and AUC rank the models' own out-of-fold scores (see run_experiments): exactly the rules'
        # scores, or the CSV's (rounded to 1e-6, which ties a few saturated scores) for learned models
        if name in ("ttc", "physics"):
            raw, tol = create_model(name, CFG.physics.model_dump()).raw_scores(df.loc[pred.window_id]), 1e-12
        else:
            raw, tol = pred.score_raw.to_numpy(), 5e-3
        assert r["window"]["ap"] == pytest.approx(M.average_precision(y, raw), abs=tol), name
        assert r["window"]["auc"] == pytest.approx(M.roc_auc(y, raw), abs=tol), name
        assert set(r["pooled_calibrated_ranking"]) == {"ap", "auc"}  # kept for comparison
        lo, hi = r["ci95"]["ap"]
        assert lo <= r["window"]["ap"] <= hi
        assert len(r["fold_calibrations"]) == CV_FOLDS
    assert res["models"]["lightgbm"]["window"]["auc"] > 0.9
    md = (cv_run / "metrics.md").read_text()
    assert md.startswith("# Window-level results (5-fold cross-validation by video: all 60 clips, 180 windows scored out of fold;")
    assert "Zhu" in md and "Table III" in md and "PAPER.md" not in md
    assert "AP, AUC and the video-level metrics rank each model's own out-of-fold scores" in md


def test_cv_saves_a_model_refit_on_all_clips(cv_run):
    df = load_features(cv_run)
    folder = cv_run / "models" / "lightgbm"
    card = json.loads((folder / "model.json").read_text())
    assert card["protocol"] == "cv" and card["folds"] == CV_FOLDS
    assert card["refit_on_all_clips"] is True and card["trained_on_clips"] == 60
    saved = load_model(folder)
    np.testing.assert_allclose(saved.raw_scores(df), create_model("lightgbm").fit(df).raw_scores(df), rtol=1e-9)
    pred = pd.read_csv(cv_run / "predictions" / "lightgbm.csv")
    expected = Calibrator.fit("platt", pred.score_raw, pred.label)  # on the pooled out-of-fold raw scores
    assert saved.calibration.method == "platt"
    assert (saved.calibration.a, saved.calibration.b) == pytest.approx((expected.a, expected.b), rel=1e-3)


def test_split_stays_the_default_and_says_so(toy_run):
    res = json.loads((toy_run / "metrics.json").read_text())
    p = res["protocol"]
    assert p["kind"] == "split" and p["folds"] is None and (p["clips"], p["windows"]) == (60, 180)
    assert p["scored_clips"] == res["split"]["test_clips"] == len(res["split"]["test_clip_ids"])
    assert p["scored_windows"] == res["split"]["test_windows"] == 3 * p["scored_clips"]
    pred = pd.read_csv(toy_run / "predictions" / "lightgbm.csv")
    assert "fold" not in pred.columns and len(pred) == p["scored_windows"]
    md = (toy_run / "metrics.md").read_text()
    assert md.startswith(f"# Window-level results (test split: {p['scored_clips']} of 60 clips, {p['scored_windows']} windows;")
    assert "out-of-fold" not in md
    card = json.loads((toy_run / "models" / "lightgbm" / "model.json").read_text())
    assert card["protocol"] == "split" and card["trained_on_clips"] == res["split"]["train_clips"]


def test_explain_results_states_protocol_chance_levels_and_the_paper(cv_run, toy_run):
    res = json.loads((cv_run / "metrics.json").read_text())
    pred = pd.read_csv(cv_run / "predictions" / "ttc.csv")
    pos, n = int(pred.label.sum()), len(pred)
    text = explain_results(res)
    assert f"all 60 clips ({n} windows) by 5-fold cross-validation" in text
    assert f"here {100 * pos / n:.1f} ({pos} of {n})" in text  # AP's chance level: 35.0 (63 of 180)
    assert "50 is a coin toss" in text and "95 % bootstrap interval" in text
    assert "paper's own results on its own data" in text and "Zhu" in text
    lgb_ap = 100 * res["models"]["lightgbm"]["window"]["ap"]
    assert f"lightgbm AP {lgb_ap:.1f}" in text
    split = json.loads((toy_run / "metrics.json").read_text())
    text = explain_results(split)
    assert f"the test split only, {split['split']['test_clips']} of 60 clips ({split['split']['test_windows']} windows)" in text
    assert len(text.splitlines()) <= 8


def test_bootstrap_of_several_metrics_matches_metrics_bootstrap_ci():
    rng = np.random.default_rng(5)
    groups = np.repeat([f"v{i}" for i in range(30)], 4)
    y = np.repeat(rng.integers(0, 2, 30), 4)
    s = np.clip(y * 0.3 + rng.uniform(0, 0.7, len(y)), 0, 1)

    def both(idx):
        return {"ap": M.average_precision(y[idx], s[idx]), "brier": M.brier(y[idx], s[idx])}

    got = M.bootstrap_cis(groups, both, n=200, seed=3)
    for name in ("ap", "brier"):
        assert got[name] == M.bootstrap_ci(groups, lambda idx, name=name: both(idx)[name], n=200, seed=3)


def test_hostile_clip_is_scored_out_of_fold(cv_run):
    pred = pd.read_csv(cv_run / "predictions" / "lightgbm.csv", dtype={"clip_id": str})
    assert (pred.clip_id == HOSTILE).sum() == 3
