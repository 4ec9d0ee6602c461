"""Shared fixtures of the evaluation tests: a toy feature table whose risk is driven by one TTC, and
evaluated toy runs (single split, and 5-fold cross-validation with a hostile clip id)."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from crashcast.config import load_config
from crashcast.evaluation.experiments import run_experiments
from crashcast.features.table import feature_columns
from crashcast.runtime.store import atomic_write_bytes

ALL_MODELS = ["ttc", "physics", "lightgbm", "xgboost", "mlp"]
HOSTILE = "<script>alert(1)</script>"  # a clip id that must render as text in the report
CV_FOLDS = 5


def toy_table(n_clips: int = 60, seed: int = 0, positive_every: int = 2) -> pd.DataFrame:
    """Three windows per clip, whose risk is driven by the closest object's TTC (positives close in).
    Clip c is positive when c % positive_every == 1 (every other clip by default)."""
    rng = np.random.default_rng(seed)
    rows = []
    cols = feature_columns()
    for c in range(n_clips):
        label = int(c % positive_every == 1)
        for phase in ("max", "mid", "mini"):
            row = dict.fromkeys(cols, np.nan)
            ttc = rng.uniform(0.5, 2.5) if label else rng.uniform(3.0, 10.0)
            ttc = min(10.0, ttc + rng.normal(0, 0.8))
            row.update(window_id=f"c{c}_{phase}", clip_id=f"c{c}", phase=phase, horizon_s=0.0, end_s=8.0, clamped=False,
                       label=label, soft_target=float(label), looming_per_s=rng.uniform(0, 0.5), scene_ttc_s=10.0,
                       n_objects=1, path_min_ttc_s=ttc, path_max_closing_mps=8.0 if label else rng.uniform(0, 2),
                       path_ttc_closing_mps=8.0 if label else 0.5,
                       path_min_depth_m=rng.uniform(5, 30), min_ttc_s=ttc, obj1_present=1.0, obj1_depth_m=rng.uniform(5, 30),
                       obj1_closing_mps=8.0 if label else 0.5, obj1_ttc_s=ttc, obj1_lateral_m=0.0, obj1_in_path=1.0,
                       obj1_is_vehicle=1.0, obj1_is_person=0.0, obj2_present=0.0, obj3_present=0.0)
            rows.append(row)
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def make_toy_table() -> Callable[..., pd.DataFrame]:
    """The toy-table factory: make_toy_table(n_clips=60, seed=0, positive_every=2)."""
    return toy_table


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory):
    """60 toy clips evaluated under the default protocol (one split), all models, Platt calibration."""
    run = tmp_path_factory.mktemp("toy_run")
    atomic_write_bytes(run / "features.parquet", toy_table(60).to_parquet(index=False))
    run_experiments(run, ALL_MODELS, load_config("classic"), "platt")
    return run


def _hostile_table() -> pd.DataFrame:
    """60 clips, one in three positive, plus clip c0 renamed HOSTILE and labelled positive although
    its features are a negative's: every model scores it low, so it is the report's worst case."""
    df = toy_table(60, positive_every=3)
    mask = df.clip_id == "c0"
    df.loc[mask, "window_id"] = HOSTILE + "_" + df.loc[mask, "phase"]
    df.loc[mask, "clip_id"] = HOSTILE
    df.loc[mask, "label"] = 1
    df.loc[mask, "soft_target"] = 1.0
    return df


def _write_window_metas(run, df: pd.DataFrame, clip_id: str) -> None:
    """A valid window_meta.json (no objects) and three keyframe PNGs for each window of `clip_id`,
    where the report's gallery looks for them."""
    import cv2

    from crashcast.features.window_meta import Scene, WindowMeta, write_window_meta
    from crashcast.runtime.layout import window_folder

    ok, png = cv2.imencode(".png", np.full((24, 32, 3), 128, np.uint8))
    assert ok
    for row in df[df.clip_id == clip_id].itertuples():
        folder = run / "clips" / clip_id / window_folder(row.phase, row.horizon_s)
        names = [f"kf{i}.png" for i in range(3)]
        for name in names:
            atomic_write_bytes(folder / name, png.tobytes())
        meta = WindowMeta(phase=row.phase, frame_paths=names, frame_times=[row.end_s - 2, row.end_s - 1, row.end_s],
                          label=row.label, y_alert=[None] * 3, y_event=[None] * 3, instances=[], box_depths=[{}, {}, {}],
                          mask_stats=[{}, {}, {}], clip_id=clip_id, window_id=row.window_id, horizon_s=row.horizon_s,
                          start_s=row.end_s - 2, end_s=row.end_s, clamped=False, anchor="event", soft_target=row.soft_target,
                          keyframe_indices=[0, 30, 60], backends={}, config_hash="toy", objects=[],
                          scene=Scene(looming_per_s=0.0, scene_ttc_s=None, n_objects=0))
        write_window_meta(folder / "window_meta.json", meta)


@pytest.fixture(scope="session")
def cv_run(tmp_path_factory):
    """The hostile table evaluated by 5-fold cross-validation (every clip scored), all models."""
    run = tmp_path_factory.mktemp("cv_run")
    df = _hostile_table()
    atomic_write_bytes(run / "features.parquet", df.to_parquet(index=False))
    _write_window_metas(run, df, HOSTILE)
    run_experiments(run, ALL_MODELS, load_config("classic"), "platt", folds=CV_FOLDS)
    return run
