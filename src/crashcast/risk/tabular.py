"""Learned models on the feature table: `lightgbm` (the default), `xgboost`, and a small `mlp`
(scikit-learn), all class-weighted. Saved as text/JSON, never pickle: the booster's own text/JSON
format, the MLP's weights as JSON."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pydantic import Field

from crashcast.risk.base import RiskModel, sigmoid
from crashcast.risk.calibration import Calibrator
from crashcast.risk.windows import WindowSet, as_windows
from crashcast.runtime.store import MODEL_FILE_LIMIT, atomic_write_text, read_bounded, read_text_bounded
from crashcast.settings import Section


def _weights(y: np.ndarray) -> np.ndarray:
    pos = max(1, int(y.sum()))
    neg = max(1, len(y) - pos)
    return np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))


class LightGBMConfig(Section):
    """LightGBM's settings (`lgb.LGBMClassifier` keyword arguments). One thread: extraction workers use
    the cores; threads made a fit take 1.6-52 s under load."""

    n_estimators: int = 200
    learning_rate: float = 0.05
    num_leaves: int = 15
    min_child_samples: int = 5
    subsample: float = 0.9
    subsample_freq: int = 1
    colsample_bytree: float = 0.9
    random_state: int = 0
    verbose: int = -1
    n_jobs: int = 1


class XGBoostConfig(Section):
    """XGBoost's settings (`xgb.XGBClassifier` keyword arguments)."""

    n_estimators: int = 200
    max_depth: int = 4
    learning_rate: float = 0.05
    subsample: float = 0.9
    colsample_bytree: float = 0.9
    random_state: int = 0
    n_jobs: int = 1


class MLPConfig(Section):
    """The MLP's settings (`sklearn.neural_network.MLPClassifier` keyword arguments)."""

    hidden_layer_sizes: list[int] = Field(default_factory=lambda: [32, 16])
    alpha: float = 1e-3
    max_iter: int = 600
    random_state: int = 0


class _Tabular(RiskModel):
    trainable = True

    def _x(self, windows: WindowSet | pd.DataFrame) -> np.ndarray:
        return as_windows(windows).table[self.features].to_numpy(float)


class LightGBMModel(_Tabular):
    kind = "lightgbm"
    Config = LightGBMConfig
    requires = ("lightgbm",)

    def __init__(self, *a: Any, booster: Any = None, **k: Any) -> None:
        super().__init__(*a, **k)
        self.booster = booster

    def fit(self, train, val=None, workdir=None) -> LightGBMModel:
        import lightgbm as lgb

        y = as_windows(train).labels
        clf = lgb.LGBMClassifier(**self.settings.model_dump()).fit(self._x(train), y, sample_weight=_weights(y))
        self.booster = clf.booster_
        return self

    def raw_scores(self, windows) -> np.ndarray:
        return self.booster.predict(self._x(windows))

    def contributions(self, windows: WindowSet | pd.DataFrame) -> pd.DataFrame:
        ws = as_windows(windows)
        c = self.booster.predict(self._x(ws), pred_contrib=True)
        return pd.DataFrame(c[:, :-1], columns=self.features, index=ws.table.index)

    def _save_weights(self, folder: Path) -> None:
        atomic_write_text(folder / "booster.txt", self.booster.model_to_string())

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> LightGBMModel:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=read_text_bounded(folder / "booster.txt", MODEL_FILE_LIMIT, "LightGBM booster"))
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), booster=booster)


class XGBoostModel(_Tabular):
    kind = "xgboost"
    Config = XGBoostConfig
    requires = ("xgboost",)

    def __init__(self, *a: Any, booster: Any = None, **k: Any) -> None:
        super().__init__(*a, **k)
        self.booster = booster

    def fit(self, train, val=None, workdir=None) -> XGBoostModel:
        import xgboost as xgb

        y = as_windows(train).labels
        clf = xgb.XGBClassifier(**self.settings.model_dump()).fit(self._x(train), y, sample_weight=_weights(y))
        self.booster = clf.get_booster()
        return self

    def raw_scores(self, windows) -> np.ndarray:
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(self._x(windows)))

    def _save_weights(self, folder: Path) -> None:
        self.booster.save_model(str(folder / "booster.json"))

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> XGBoostModel:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(bytearray(read_bounded(folder / "booster.json", MODEL_FILE_LIMIT, "XGBoost booster")))
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), booster=booster)


class MLPModel(_Tabular):
    """A small MLP (scikit-learn) on standardised features; NaNs imputed with training medians."""

    kind = "mlp"
    Config = MLPConfig
    requires = ("sklearn",)

    def __init__(self, *a: Any, weights: dict | None = None, **k: Any) -> None:
        super().__init__(*a, **k)
        self.weights = weights

    def _prep(self, windows) -> np.ndarray:
        x = self._x(windows)
        w = self.weights
        x = np.where(np.isnan(x), np.asarray(w["median"]), x)
        return (x - np.asarray(w["mean"])) / np.asarray(w["scale"])

    def fit(self, train, val=None, workdir=None) -> MLPModel:
        from sklearn.neural_network import MLPClassifier

        x = self._x(train)
        with warnings.catch_warnings():  # a feature that is NaN everywhere (e.g. no third object) gets 0
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nan_to_num(np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0), nan=0.0)
        x = np.where(np.isnan(x), med, x)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        y = as_windows(train).labels
        params = self.settings.model_dump()
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        clf = MLPClassifier(**params).fit((x - mean) / scale, y, sample_weight=_weights(y))
        self.weights = {"median": med.tolist(), "mean": mean.tolist(), "scale": scale.tolist(),
                        "coefs": [c.tolist() for c in clf.coefs_], "intercepts": [b.tolist() for b in clf.intercepts_]}
        return self

    def raw_scores(self, windows) -> np.ndarray:
        h = self._prep(windows)
        coefs, inter = self.weights["coefs"], self.weights["intercepts"]
        for i, (w, b) in enumerate(zip(coefs, inter, strict=True)):
            h = h @ np.asarray(w) + np.asarray(b)
            if i < len(coefs) - 1:
                h = np.maximum(h, 0.0)
        return sigmoid(h[:, 0])

    def _save_weights(self, folder: Path) -> None:
        atomic_write_text(folder / "weights.json", json.dumps(self.weights))

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> MLPModel:
        weights = json.loads(read_text_bounded(folder / "weights.json", MODEL_FILE_LIMIT, "MLP weights file"))
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), weights=weights)
