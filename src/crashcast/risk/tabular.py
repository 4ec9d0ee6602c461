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

from crashcast.errors import ModelError
from crashcast.risk.base import RiskModel, sigmoid
from crashcast.risk.booster_files import lightgbm_model, xgboost_model
from crashcast.risk.calibration import Calibrator
from crashcast.risk.windows import WindowSet, as_windows
from crashcast.runtime.store import MODEL_FILE_LIMIT, atomic_write_text, read_bounded
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

        path = folder / "booster.txt"
        try:
            text = _model_file(path, "LightGBM booster").decode("utf-8")
        except UnicodeDecodeError:
            raise ModelError(f"{path}: not a LightGBM text model (not UTF-8 text)") from None
        n, checked = _checked(path, lightgbm_model, text)  # LightGBM's parser aborts the process on a damaged file
        _same_count(path, n, card["features"])
        try:
            booster = lgb.Booster(model_str=checked)
        except lgb.basic.LightGBMError as e:
            raise ModelError(f"{path}: not a LightGBM model LightGBM reads ({e})") from None
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

    def contributions(self, windows: WindowSet | pd.DataFrame) -> pd.DataFrame:
        """SHAP contributions (log-odds) of each feature to each row's score (XGBoost's `pred_contribs`)."""
        import xgboost as xgb

        ws = as_windows(windows)
        c = self.booster.predict(xgb.DMatrix(self._x(ws)), pred_contribs=True)
        return pd.DataFrame(c[:, :-1], columns=self.features, index=ws.table.index)

    def _save_weights(self, folder: Path) -> None:
        self.booster.save_model(str(folder / "booster.json"))

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> XGBoostModel:
        import xgboost as xgb

        path = folder / "booster.json"
        data = _model_file(path, "XGBoost booster")
        n = _checked(path, xgboost_model, _json(path, data))  # XGBoost crashes on a tree with a cycle
        _same_count(path, n, card["features"])
        booster = xgb.Booster()
        try:
            booster.load_model(bytearray(data))
        except xgb.core.XGBoostError as e:
            raise ModelError(f"{path}: not an XGBoost model XGBoost reads ({str(e).strip().splitlines()[0]})") from None
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

    def contributions(self, windows: WindowSet | pd.DataFrame) -> pd.DataFrame:
        """Each feature's contribution (probability) to each row's score: the score minus the score
        with that feature set to its training median (occlusion; the MLP has no exact attribution)."""
        ws = as_windows(windows)
        x = self._x(ws)
        base = self.raw_scores(ws)
        med = np.asarray(self.weights["median"])
        out = np.empty_like(x)
        for j in range(x.shape[1]):
            xj = x.copy()
            xj[:, j] = med[j]
            out[:, j] = base - self.raw_scores(pd.DataFrame(xj, columns=self.features))
        return pd.DataFrame(out, columns=self.features, index=ws.table.index)

    def _save_weights(self, folder: Path) -> None:
        atomic_write_text(folder / "weights.json", json.dumps(self.weights))

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> MLPModel:
        path = folder / "weights.json"
        weights = _checked(path, mlp_weights, _json(path, _model_file(path, "MLP weights file")), len(card["features"]))
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), weights=weights)


def _model_file(path: Path, what: str) -> bytes:
    if not path.exists():  # a link to nothing too
        raise ModelError(f"{path}: missing; a saved model folder has its {what} beside model.json")
    return read_bounded(path, MODEL_FILE_LIMIT, what)


def _json(path: Path, data: bytes) -> Any:
    try:
        return json.loads(data)
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UTF-8, too many digits
        raise ModelError(f"{path}: not JSON ({type(e).__name__}: {str(e)[:200]})") from None


def _checked(path: Path, check: Any, *args: Any) -> Any:
    """`check(*args)`, its ValueError made a ModelError naming `path`."""
    try:
        return check(*args)
    except ValueError as e:
        raise ModelError(f"{path}: {e}") from None


def _same_count(path: Path, n: int, features: list[str]) -> None:
    if n != len(features):
        raise ModelError(f"{path}: a model of {n} features, but its model.json names {len(features)}; "
                         "the two files do not belong together")


def mlp_weights(w: Any, n_features: int) -> dict:
    """`w` (an MLP's weights.json) when its arrays are finite and chain from `n_features` inputs to one
    output: median/mean/scale of `n_features` (scale non-zero), coefs[i] (d_i x d_i+1), intercepts[i]
    (d_i+1), the last layer of width 1; else ValueError naming the array."""
    if not isinstance(w, dict) or not {"median", "mean", "scale", "coefs", "intercepts"} <= set(w):
        raise ValueError("not MLP weights (median, mean, scale, coefs, intercepts)")

    def array(v: Any, name: str, ndim: int) -> np.ndarray:
        try:
            a = np.asarray(v, dtype=float)
        except (ValueError, TypeError):
            a = None
        if a is None or a.ndim != ndim or not np.isfinite(a).all():
            raise ValueError(f"{name}: not a {'vector' if ndim == 1 else 'matrix'} of finite numbers")
        return a

    for name in ("median", "mean", "scale"):
        if array(w[name], name, 1).shape != (n_features,):
            raise ValueError(f"{name}: {len(w[name])} values, but model.json names {n_features} features")
    if (array(w["scale"], "scale", 1) == 0).any():
        raise ValueError("scale: a zero (features are divided by it)")
    coefs, inter = w["coefs"], w["intercepts"]
    if not isinstance(coefs, list) or not isinstance(inter, list) or not coefs or len(coefs) != len(inter):
        raise ValueError("coefs and intercepts: one matrix and one vector per layer")
    width = n_features
    for i, (c, b) in enumerate(zip(coefs, inter, strict=True)):
        c, b = array(c, f"coefs[{i}]", 2), array(b, f"intercepts[{i}]", 1)
        if c.shape[0] != width or b.shape != (c.shape[1],):
            raise ValueError(f"layer {i}: coefs {c.shape} and intercepts {b.shape} do not follow {width} inputs")
        width = c.shape[1]
    if width != 1:
        raise ValueError(f"the last layer gives {width} outputs; a risk score is one")
    return w
