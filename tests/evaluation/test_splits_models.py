from __future__ import annotations

import json

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.data.splits import kfold, official_split, train_val_test
from crashcast.errors import ConfigError
from crashcast.evaluation import metrics as M
from crashcast.evaluation.experiments import run_experiments
from crashcast.risk.calibration import Calibrator
from crashcast.risk.models import MODELS, create_model, load_model
from crashcast.runtime.store import atomic_write_bytes


def test_splits_are_grouped_by_video_and_deterministic(make_toy_table):
    df = make_toy_table()
    s1, s2 = train_val_test(df, 0.3, 0.2, seed=3), train_val_test(df, 0.3, 0.2, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip((s1.train, s1.val, s1.test), (s2.train, s2.val, s2.test), strict=True))
    parts = [set(df.clip_id.iloc[idx]) for idx in (s1.train, s1.val, s1.test)]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])  # no leakage
    assert sum(len(x) for x in (s1.train, s1.val, s1.test)) == len(df)
    for idx in (s1.train, s1.val, s1.test):
        assert set(df.label.iloc[idx]) == {0, 1}  # stratified
    assert train_val_test(df, 0.3, 0.2, seed=4).test.tolist() != s1.test.tolist()
    for tr, te in kfold(df, 5, seed=0):
        assert not set(df.clip_id.iloc[tr]) & set(df.clip_id.iloc[te])


def _official(df, n_test: int = 20) -> dict[str, str]:
    """The first `n_test` clips as the official test part, the others but the last 4 as train (those 4: in no part)."""
    clips = sorted(set(df.clip_id), key=lambda c: int(c[1:]))
    return {**{c: "test" for c in clips[:n_test]}, **{c: "train" for c in clips[n_test:-4]}}


def test_an_official_split_keeps_its_test_clips_and_validates_on_part_of_its_training_clips(make_toy_table):
    df = make_toy_table()
    assignment = _official(df)
    s = official_split(df, assignment, val_share=0.25, seed=1)
    test, val, train = (set(df.clip_id.iloc[idx]) for idx in (s.test, s.val, s.train))
    assert test == {c for c, p in assignment.items() if p == "test"}
    assert val | train == {c for c, p in assignment.items() if p == "train"} and not val & train
    assert len(val) == pytest.approx(0.25 * 36, abs=1) and set(df.label.iloc[s.val]) == {0, 1}  # stratified
    assert len(s.train) + len(s.val) + len(s.test) == len(df) - 4 * 3  # the 4 unnamed clips: in no part
    assert official_split(df, assignment, 0.25, seed=2).test.tolist() == s.test.tolist()  # the seed moves val only
    with pytest.raises(Exception, match="expected train and test"):
        official_split(df, {**assignment, "c1": "holdout"})


def test_evaluate_scores_the_official_test_clips(make_toy_table, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    df = make_toy_table()
    atomic_write_bytes(run / "features.parquet", df.to_parquet(index=False))
    assignment = _official(df)
    (run / "split.json").write_text(json.dumps({"clips": assignment}))
    cfg = load_config("classic", ["evaluation.split=official"])
    results = run_experiments(run, ["ttc", "lightgbm"], cfg, "platt")
    assert sorted(results["split"]["test_clip_ids"]) == sorted(c for c, p in assignment.items() if p == "test")
    with pytest.raises(ConfigError, match="official and 3 folds"):
        run_experiments(run, ["ttc"], cfg, "platt", folds=3)
    (run / "split.json").unlink()
    with pytest.raises(ConfigError, match=r"split\.json not found"):
        run_experiments(run, ["ttc"], cfg, "platt")


@pytest.mark.parametrize("kind", [k for k in MODELS if not k.startswith("vlm-")])  # the VLMs: tests/risk
def test_models_learn_save_and_reload_without_pickle(kind, tmp_path, make_toy_table):
    df = make_toy_table(80)
    train, test = df[df.clip_id.str[1:].astype(int) < 60], df[df.clip_id.str[1:].astype(int) >= 60]
    model = create_model(kind)
    if model.trainable:
        model.fit(train)
    score = model.predict(test)
    assert M.average_precision(test.label, score) > 0.85
    folder = model.save(tmp_path / kind)
    assert not list(folder.glob("*.pkl")) and (folder / "model.json").exists()
    again = load_model(folder)
    np.testing.assert_allclose(again.predict(test), score, rtol=1e-6, atol=1e-9)


def test_lightgbm_rationale_names_what_drove_its_score(make_toy_table):
    """The toy positives close at 8.0 m/s: LightGBM's SHAP contributions put that first (the path's
    closing speed), and its reason says so with the row's values; the physics reason gives the path
    TTC and closing speed it scored."""
    df = make_toy_table(80)
    model = create_model("lightgbm").fit(df)
    pos = df[df.label == 1].head(3)
    scores = model.score(pos)
    assert all("closing" in r and "8.0 m/s" in r for r in scores.rationale), scores.rationale
    contrib = model.contributions(pos)
    for (_, row), ev, reason, (_, c) in zip(pos.iterrows(), scores.evidence, scores.rationale, contrib.iterrows(), strict=True):
        assert ev.driving.measurements[0].name == c.idxmax()
        for m in ev.driving.measurements:  # the reason's numbers are the row's values of the driving features
            if m.unit != "flag":
                assert m.value == row[m.name] and m.shown() in reason
    row = pos.iloc[0]
    physics = create_model("physics").score(pos.head(1)).rationale[0]  # the physics reason: the path aggregates it scored
    assert f"TTC {row.path_min_ttc_s:.1f} s" in physics and f"closing at {row.path_ttc_closing_mps:.1f} m/s" in physics


def test_calibration_fixes_overconfident_scores():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 4000)
    p_true = np.where(y == 1, rng.uniform(0.4, 0.9, len(y)), rng.uniform(0.1, 0.6, len(y)))
    y = (rng.random(len(y)) < p_true).astype(int)
    overconfident = 1 / (1 + np.exp(-4 * np.log(p_true / (1 - p_true))))  # temperature 1/4
    val, test = slice(0, 2000), slice(2000, None)
    for method in ("platt", "isotonic"):
        cal = Calibrator.fit(method, overconfident[val], y[val])
        before = M.ece(y[test], overconfident[test])
        after = M.ece(y[test], cal(overconfident[test]))
        assert after < 0.5 * before, (method, before, after)
        again = Calibrator.from_dict(cal.to_dict())
        np.testing.assert_allclose(again(overconfident[test]), cal(overconfident[test]))
