"""Risk models on the feature table, behind one interface, saved as text/JSON (never pickle).

- `ttc`: training-free rule: a logistic of the smallest time-to-contact in the ego path.
- `physics`: training-free; TTC and closing speed of objects in the ego path and the
  detection-free looming of the road ahead (see `physics_risk`).
- `lightgbm` (default learned model), `xgboost`, `mlp` (scikit-learn): class-weighted.
A model directory holds `model.json` (kind, feature list, calibration, config) and, for the
learned ones, the booster text/JSON or the MLP's weights, so `load_model(dir)` knows the kind.
The vision-language models join this registry as `vlm-zero-shot`, `vlm-baseline`, `vlm-enhanced`.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from crashcast.config import PhysicsConfig
from crashcast.errors import ModelError
from crashcast.features.table import TTC_CAP_S, feature_columns
from crashcast.risk.calibration import Calibrator
from crashcast.runtime.store import atomic_write_text

LETTERS = "ABCDEFGHIJ"


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, float), -500.0, 500.0)))


def physics_risk(path_min_ttc_s, scene_ttc_s, path_max_closing_mps, cfg: PhysicsConfig) -> np.ndarray:
    """Collision probability from kinematics alone.

    r_obj  = sigmoid((ttc_mid - TTC) / ttc_scale) for the smallest TTC of an object in the ego path,
             counted only if it closes faster than `min_closing_mps`;
    r_loom = the same logistic of the detection-free looming TTC of the road ahead;
    risk   = 1 - (1 - r_obj) (1 - looming_weight r_loom).
    ttc_mid = 2.0 s because forward-collision-warning tests (Euro NCAP, NHTSA) expect warnings at
    TTC 1.5-2.5 s; ttc_scale = 0.45 s takes the risk from 0.1 at 3 s to 0.9 at 1 s.
    """
    ttc = np.asarray(path_min_ttc_s, float)
    closing = np.nan_to_num(np.asarray(path_max_closing_mps, float), nan=0.0)
    ttc = np.where(closing >= cfg.min_closing_mps, ttc, TTC_CAP_S)
    r_obj = _sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s)
    r_loom = _sigmoid((cfg.ttc_mid_s - np.asarray(scene_ttc_s, float)) / cfg.ttc_scale_s)
    return 1.0 - (1.0 - r_obj) * (1.0 - cfg.looming_weight * r_loom)


class RiskModel:
    """Base: `fit(df)`, `predict(df) -> probabilities`, `save(dir)`, `explain(df) -> rationales`."""

    kind: ClassVar[str] = ""
    trainable: ClassVar[bool] = False

    def __init__(self, features: list[str] | None = None, calibration: Calibrator | None = None, params: dict | None = None) -> None:
        self.features = features or feature_columns()
        self.calibration = calibration or Calibrator()
        self.params = params or {}

    def fit(self, df: pd.DataFrame) -> RiskModel:
        return self

    def raw_scores(self, df: pd.DataFrame) -> np.ndarray:
        raise NotImplementedError

    def predict(self, df: pd.DataFrame) -> np.ndarray:
        return np.clip(self.calibration(self.raw_scores(df)), 0.0, 1.0)

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame | None:
        """Per-row, per-feature contributions to the score (None if the model has none)."""
        return None

    def explain(self, df: pd.DataFrame) -> list[str]:
        contrib = self.contributions(df)
        return [rationale(row, None if contrib is None else contrib.iloc[i]) for i, (_, row) in enumerate(df.iterrows())]

    # persistence
    def _save_weights(self, folder: Path) -> None:
        pass

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_weights(folder)
        card = {"kind": self.kind, "features": self.features, "calibration": self.calibration.to_dict(),
                "params": self.params, **(extra or {})}
        atomic_write_text(folder / "model.json", json.dumps(card, indent=2, default=float))
        return folder


class TTCRule(RiskModel):
    kind = "ttc"

    def raw_scores(self, df: pd.DataFrame) -> np.ndarray:
        cfg = PhysicsConfig(**self.params) if self.params else PhysicsConfig()
        ttc = np.minimum(df["path_min_ttc_s"].to_numpy(float), df["scene_ttc_s"].to_numpy(float))
        return _sigmoid((cfg.ttc_mid_s - ttc) / cfg.ttc_scale_s)


class PhysicsModel(RiskModel):
    kind = "physics"

    def raw_scores(self, df: pd.DataFrame) -> np.ndarray:
        cfg = PhysicsConfig(**self.params) if self.params else PhysicsConfig()
        return physics_risk(df["path_min_ttc_s"], df["scene_ttc_s"], df["path_max_closing_mps"], cfg)


def _weights(y: np.ndarray) -> np.ndarray:
    pos = max(1, int(y.sum()))
    neg = max(1, len(y) - pos)
    return np.where(y == 1, len(y) / (2 * pos), len(y) / (2 * neg))


class LightGBMModel(RiskModel):
    kind = "lightgbm"
    trainable = True
    defaults: ClassVar[dict] = {"n_estimators": 200, "learning_rate": 0.05, "num_leaves": 15, "min_child_samples": 5,
                                "subsample": 0.9, "subsample_freq": 1, "colsample_bytree": 0.9, "random_state": 0, "verbose": -1,
                                "n_jobs": 1}  # one thread: extraction workers use the cores; threads made it 1.6-52 s under load

    def __init__(self, *a: Any, booster: Any = None, **k: Any) -> None:
        super().__init__(*a, **k)
        self.booster = booster

    def fit(self, df: pd.DataFrame) -> LightGBMModel:
        import lightgbm as lgb

        y = df["label"].to_numpy(int)
        params = {**self.defaults, **self.params}
        clf = lgb.LGBMClassifier(**params).fit(df[self.features].to_numpy(float), y, sample_weight=_weights(y))
        self.booster = clf.booster_
        return self

    def raw_scores(self, df: pd.DataFrame) -> np.ndarray:
        return self.booster.predict(df[self.features].to_numpy(float))

    def contributions(self, df: pd.DataFrame) -> pd.DataFrame:
        c = self.booster.predict(df[self.features].to_numpy(float), pred_contrib=True)
        return pd.DataFrame(c[:, :-1], columns=self.features, index=df.index)

    def _save_weights(self, folder: Path) -> None:
        atomic_write_text(folder / "booster.txt", self.booster.model_to_string())

    @classmethod
    def _load(cls, folder: Path, card: dict) -> LightGBMModel:
        import lightgbm as lgb

        booster = lgb.Booster(model_str=(folder / "booster.txt").read_text())
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), booster=booster)


class XGBoostModel(RiskModel):
    kind = "xgboost"
    trainable = True
    defaults: ClassVar[dict] = {"n_estimators": 200, "max_depth": 4, "learning_rate": 0.05, "subsample": 0.9,
                                "colsample_bytree": 0.9, "random_state": 0, "n_jobs": 1}

    def __init__(self, *a: Any, booster: Any = None, **k: Any) -> None:
        super().__init__(*a, **k)
        self.booster = booster

    def fit(self, df: pd.DataFrame) -> XGBoostModel:
        import xgboost as xgb

        y = df["label"].to_numpy(int)
        clf = xgb.XGBClassifier(**{**self.defaults, **self.params}).fit(df[self.features].to_numpy(float), y, sample_weight=_weights(y))
        self.booster = clf.get_booster()
        return self

    def raw_scores(self, df: pd.DataFrame) -> np.ndarray:
        import xgboost as xgb

        return self.booster.predict(xgb.DMatrix(df[self.features].to_numpy(float)))

    def _save_weights(self, folder: Path) -> None:
        self.booster.save_model(str(folder / "booster.json"))

    @classmethod
    def _load(cls, folder: Path, card: dict) -> XGBoostModel:
        import xgboost as xgb

        booster = xgb.Booster()
        booster.load_model(str(folder / "booster.json"))
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), booster=booster)


class MLPModel(RiskModel):
    """A small MLP (scikit-learn) on standardised features; NaNs imputed with training medians."""

    kind = "mlp"
    trainable = True
    defaults: ClassVar[dict] = {"hidden_layer_sizes": [32, 16], "alpha": 1e-3, "max_iter": 600, "random_state": 0}

    def __init__(self, *a: Any, weights: dict | None = None, **k: Any) -> None:
        super().__init__(*a, **k)
        self.weights = weights

    def _prep(self, df: pd.DataFrame) -> np.ndarray:
        x = df[self.features].to_numpy(float)
        w = self.weights
        x = np.where(np.isnan(x), np.asarray(w["median"]), x)
        return (x - np.asarray(w["mean"])) / np.asarray(w["scale"])

    def fit(self, df: pd.DataFrame) -> MLPModel:
        from sklearn.neural_network import MLPClassifier

        x = df[self.features].to_numpy(float)
        with warnings.catch_warnings():  # a feature that is NaN everywhere (e.g. no third object) gets 0
            warnings.simplefilter("ignore", RuntimeWarning)
            med = np.nan_to_num(np.nanmedian(np.where(np.isfinite(x), x, np.nan), axis=0), nan=0.0)
        x = np.where(np.isnan(x), med, x)
        mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
        y = df["label"].to_numpy(int)
        params = {**self.defaults, **self.params}
        params["hidden_layer_sizes"] = tuple(params["hidden_layer_sizes"])
        clf = MLPClassifier(**params).fit((x - mean) / scale, y, sample_weight=_weights(y))
        self.weights = {"median": med.tolist(), "mean": mean.tolist(), "scale": scale.tolist(),
                        "coefs": [c.tolist() for c in clf.coefs_], "intercepts": [b.tolist() for b in clf.intercepts_]}
        return self

    def raw_scores(self, df: pd.DataFrame) -> np.ndarray:
        h = self._prep(df)
        coefs, inter = self.weights["coefs"], self.weights["intercepts"]
        for i, (w, b) in enumerate(zip(coefs, inter, strict=True)):
            h = h @ np.asarray(w) + np.asarray(b)
            if i < len(coefs) - 1:
                h = np.maximum(h, 0.0)
        return _sigmoid(h[:, 0])

    def _save_weights(self, folder: Path) -> None:
        atomic_write_text(folder / "weights.json", json.dumps(self.weights))

    @classmethod
    def _load(cls, folder: Path, card: dict) -> MLPModel:
        weights = json.loads((folder / "weights.json").read_text())
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"), weights=weights)


MODELS: dict[str, type[RiskModel]] = {m.kind: m for m in (TTCRule, PhysicsModel, LightGBMModel, XGBoostModel, MLPModel)}


def create_model(kind: str, params: dict | None = None) -> RiskModel:
    if kind not in MODELS:
        raise ModelError(f"unknown model {kind!r}; available: {', '.join(MODELS)}")
    return MODELS[kind](params=params)


def load_model(folder: str | Path) -> RiskModel:
    """Load a saved model directory (its model.json says the kind). A missing, foreign or damaged
    folder raises ModelError naming the file and the problem."""
    folder = Path(folder)
    card_path = folder / "model.json"
    if not card_path.is_file():
        raise ModelError(f"{folder}: not a crashcast model folder (no model.json); give a folder written by "
                         "`crashcast evaluate` (run/models/<name>) or one of: physics, ttc")
    try:
        card = json.loads(card_path.read_text(encoding="utf-8"))
        kind = card["kind"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise ModelError(f"{card_path}: unreadable model card ({type(e).__name__}: {e})") from None
    cls = MODELS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ModelError(f"{card_path}: unknown model kind {kind!r}; known: {', '.join(MODELS)}")
    try:
        if hasattr(cls, "_load"):
            return cls._load(folder, card)  # type: ignore[attr-defined]
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"))
    except Exception as e:  # a damaged booster/weights file fails inside its library, with its own error types
        raise ModelError(f"{folder}: the saved {kind} model cannot be loaded ({type(e).__name__}: {e}); "
                         "re-save it with `crashcast evaluate`") from None


# ----------------------------------------------------------------------------- rationales


def describe_object(row: pd.Series, k: int) -> str | None:
    """'vehicle B, 14 m ahead, closing at 6.0 m/s, TTC 2.3 s' for the k-th closest object (1-based)."""
    pre = f"obj{k}_"
    if not row.get(pre + "present", 0):
        return None
    cls = "person" if row.get(pre + "is_person", 0) else ("vehicle" if row.get(pre + "is_vehicle", 0) else "object")
    parts = [f"{cls} {LETTERS[k - 1]}"]
    depth = row.get(pre + "depth_end_m", row.get(pre + "depth_m"))  # where it is now, at the window's end
    if depth is None or not math.isfinite(depth):
        depth = row.get(pre + "depth_m")
    if depth is not None and math.isfinite(depth):
        parts.append(f"{depth:.0f} m ahead" if row.get(pre + "in_path", 0) else f"{depth:.0f} m away, beside the path")
    closing = row.get(pre + "closing_mps")
    if closing is not None and math.isfinite(closing) and closing > 0.3:
        parts.append(f"closing at {closing:.1f} m/s")
    ttc = row.get(pre + "ttc_s")
    if ttc is not None and math.isfinite(ttc) and ttc < TTC_CAP_S:
        parts.append(f"TTC {ttc:.1f} s")
    return ", ".join(parts)


def rationale(row: pd.Series, contrib: pd.Series | None = None, top_k: int = 3) -> str:
    """A short reason: the object (or scene cue) that drives the score most."""
    if contrib is not None:
        ranked = contrib.sort_values(ascending=False)
        for feat, value in ranked.items():
            if value <= 0:
                break
            if feat.startswith("obj") and "_" in feat:
                d = describe_object(row, int(feat[3 : feat.index("_")]))
                if d:
                    return d
            if feat in ("looming_per_s", "scene_ttc_s") and row.get("scene_ttc_s", TTC_CAP_S) < TTC_CAP_S:
                return f"the road ahead looms: contact in {row['scene_ttc_s']:.1f} s at this rate"
            if feat.startswith("path_") or feat == "min_ttc_s":
                break
    # most threatening object by TTC, else the closest
    best, best_ttc = None, math.inf
    for k in range(1, top_k + 1):
        ttc = row.get(f"obj{k}_ttc_s", math.nan)
        if row.get(f"obj{k}_present", 0) and math.isfinite(ttc) and ttc < best_ttc:
            best, best_ttc = k, ttc
    if best is not None and best_ttc < TTC_CAP_S:
        return describe_object(row, best) or "an object closes in"
    if row.get("scene_ttc_s", TTC_CAP_S) < TTC_CAP_S:
        return f"the road ahead looms: contact in {row['scene_ttc_s']:.1f} s at this rate"
    d = describe_object(row, 1) if row.get("obj1_present", 0) else None
    return f"nothing closing in ({d})" if d else "nothing closing in"
