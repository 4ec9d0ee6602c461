"""Bad requests and bad feature tables fail early with errors naming the problem (and the file)."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from crashcast.cli import app
from crashcast.config import load_config
from crashcast.errors import ConfigError, CrashcastError, ModelError
from crashcast.evaluation.experiments import run_experiments
from crashcast.runtime.store import atomic_write_bytes

CFG = load_config("classic")


def test_unknown_model_is_named_before_any_work(tmp_path):
    """The run folder has no features.parquet: the error must be about the model, not the file."""
    with pytest.raises(ModelError) as e:
        run_experiments(tmp_path, ["ttc", "lightgbn"], CFG)
    msg = str(e.value)
    assert "'lightgbn'" in msg and "available: ttc, physics, lightgbm, xgboost, mlp" in msg
    assert "features.parquet" not in msg
    assert not (tmp_path / "predictions").exists()
    with pytest.raises(ModelError, match="no model to evaluate"):
        run_experiments(tmp_path, [" ", ""], CFG)


def test_unknown_calibration_and_bad_folds_are_named_before_any_work(tmp_path):
    with pytest.raises(ConfigError, match="unknown calibration 'platypus'; choose none, platt, isotonic"):
        run_experiments(tmp_path, ["ttc"], CFG, "platypus")
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ConfigError, match="folds must be an integer of at least 2"):
            run_experiments(tmp_path, ["ttc"], CFG, "platt", folds=bad)


def test_evaluate_cli_names_the_unknown_model(tmp_path):
    r = CliRunner().invoke(app, ["evaluate", str(tmp_path), "--models", "lightgbn"])
    assert r.exit_code != 0
    assert "unknown model 'lightgbn'" in str(r.exception) + r.output


def _corrupt(kind: str, table: bytes) -> bytes:
    if kind == "random bytes":
        return np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes()
    if kind == "truncated":
        return table[: len(table) // 2]
    return b""  # empty file


@pytest.mark.parametrize("kind", ["random bytes", "truncated", "empty"])
def test_corrupt_features_parquet_is_a_clear_error(kind, tmp_path, make_toy_table):
    table = make_toy_table(10).to_parquet(index=False)
    path = tmp_path / "features.parquet"
    atomic_write_bytes(path, _corrupt(kind, table))
    with pytest.raises(CrashcastError) as e:
        run_experiments(tmp_path, ["ttc"], CFG)
    msg = str(e.value)
    assert str(path) in msg and "not a readable Parquet file" in msg and "rerun `crashcast extract`" in msg


def test_features_lacking_columns_is_a_clear_error(tmp_path, make_toy_table):
    df = make_toy_table(10)
    path = tmp_path / "features.parquet"
    atomic_write_bytes(path, df.drop(columns=["soft_target", "scene_ttc_s"]).to_parquet(index=False))
    with pytest.raises(CrashcastError, match=r"features.parquet: missing column\(s\) soft_target, scene_ttc_s;"):
        run_experiments(tmp_path, ["ttc"], CFG)
    # a learned model needs every feature column; the rules only theirs
    atomic_write_bytes(path, df.drop(columns=["obj3_present"]).to_parquet(index=False))
    with pytest.raises(CrashcastError, match=r"missing column\(s\) obj3_present;"):
        run_experiments(tmp_path, ["ttc", "lightgbm"], CFG)
    run_experiments(tmp_path, ["ttc"], CFG)
    assert (tmp_path / "metrics.json").exists()


def test_non_binary_labels_are_a_clear_error(tmp_path, make_toy_table):
    df = make_toy_table(10)
    df.loc[0, "label"] = 2
    atomic_write_bytes(tmp_path / "features.parquet", df.to_parquet(index=False))
    with pytest.raises(CrashcastError, match=r"features\.parquet: column label must be 0 or 1"):
        run_experiments(tmp_path, ["ttc"], CFG)
