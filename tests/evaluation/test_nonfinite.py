"""No number is computed over non-finite data (issue 23, item 3): a model that scores a window NaN
stops evaluate naming the windows and the feature columns; duplicate window rows are refused; an
undefined metric is null in metrics.json, never a bare NaN."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from tests.conftest import cli_exit_code
from tests.evaluation.conftest import toy_table

from crashcast import api
from crashcast.config import load_config
from crashcast.errors import CrashcastError, ModelError
from crashcast.evaluation.dense import json_safe
from crashcast.evaluation.experiments import run_experiments
from crashcast.runs import RunFileError
from crashcast.runtime.store import atomic_write_bytes


def _run(tmp_path, df):
    run = tmp_path / "run"
    run.mkdir()
    atomic_write_bytes(run / "features.parquet", df.to_parquet(index=False))
    return run


def _strict(text: str):
    def refuse(const):
        raise ValueError(f"bare {const} in metrics.json")
    return json.loads(text, parse_constant=refuse)


@pytest.fixture
def nan_run(tmp_path):
    df = toy_table(30)
    df.loc[df.window_id.isin(["c1_max", "c3_mid"]), "path_min_ttc_s"] = np.nan  # two positives' TTC lost
    return _run(tmp_path, df)


def test_a_nan_score_stops_evaluate_naming_windows_and_columns(nan_run, capsys):
    with pytest.raises(ModelError) as e:
        run_experiments(nan_run, ["physics"], load_config("classic"), "platt", folds=3)
    msg = str(e.value)
    assert "physics" in msg and "path_min_ttc_s" in msg and "NaN" in msg
    assert ("c1_max" in msg) or ("c3_mid" in msg)
    assert not (nan_run / "metrics.json").exists() and not (nan_run / "predictions").exists()
    # the CLI: one error line, exit 2; the API: the same error
    assert cli_exit_code(["evaluate", nan_run, "--models", "physics", "--folds", "3"]) == 2
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]
    assert len(err) == 1 and "path_min_ttc_s" in err[0]
    with pytest.raises(ModelError, match="path_min_ttc_s"):
        api.evaluate(nan_run, ["physics"], folds=3)


def test_models_that_take_nan_features_still_evaluate(nan_run):
    """LightGBM handles missing values itself: its scores are finite, so it is evaluated."""
    res = run_experiments(nan_run, ["lightgbm"], load_config("classic"), "platt", folds=3)
    assert np.isfinite(res["models"]["lightgbm"]["window"]["ap"])
    _strict((nan_run / "metrics.json").read_text())


def test_duplicate_window_rows_are_refused(tmp_path):
    df = toy_table(12)
    df = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    run = _run(tmp_path, df)
    with pytest.raises(RunFileError, match=r"features.parquet: 1 window id\(s\) appear more than once \(c1_mid\)"):
        run_experiments(run, ["physics"], load_config("classic"), "platt")
    assert issubclass(RunFileError, CrashcastError)


def test_an_undefined_metric_is_null_in_json():
    safe = json_safe({"a": float("nan"), "b": [1.0, np.float64("inf"), {"c": -np.inf}], "d": 0.5, "e": "x"})
    assert safe == {"a": None, "b": [1.0, None, {"c": None}], "d": 0.5, "e": "x"}
    _strict(json.dumps(safe, allow_nan=False))
