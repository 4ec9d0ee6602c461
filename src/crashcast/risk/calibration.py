"""Post-hoc calibration fitted on the validation split: Platt / temperature scaling and isotonic.

Both save as JSON (parameters or the isotonic step function), never pickle.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_EPS = 1e-6


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, float), _EPS, 1 - _EPS)
    return np.log(p / (1 - p))


@dataclass
class Calibrator:
    """`method`: 'none', 'platt' (p' = sigmoid(a * logit(p) + b); a = 1/T, b = 0 is temperature
    scaling) or 'isotonic' (monotone step function through `x`, `y`)."""

    method: str = "none"
    a: float = 1.0
    b: float = 0.0
    x: list[float] = field(default_factory=list)
    y: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, method: str, score, label) -> Calibrator:
        score, label = np.asarray(score, float), np.asarray(label, int)
        if method == "none" or len(np.unique(label)) < 2:
            return cls("none")
        if method == "platt":
            from sklearn.linear_model import LogisticRegression

            lr = LogisticRegression(C=1e4, max_iter=1000).fit(_logit(score)[:, None], label)
            a, b = float(lr.coef_[0, 0]), float(lr.intercept_[0])
            if a <= 0:  # calibration must never reverse a model's ranking (seen on 6-clip validation folds)
                log.info("Platt scaling fitted a slope of %.3f on %d validation windows (the scores do not rank "
                            "them); left uncalibrated", a, len(label))
                return cls("none")
            return cls("platt", a, b)
        if method == "isotonic":
            from sklearn.isotonic import IsotonicRegression

            iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(score, label)
            return cls("isotonic", x=[float(v) for v in iso.X_thresholds_], y=[float(v) for v in iso.y_thresholds_])
        raise ValueError(f"unknown calibration {method!r}; choose none, platt or isotonic")

    def __call__(self, score) -> np.ndarray:
        s = np.asarray(score, float)
        if self.method == "platt":
            return 1.0 / (1.0 + np.exp(-(self.a * _logit(s) + self.b)))
        if self.method == "isotonic" and self.x:
            return np.interp(s, self.x, self.y)
        return s

    def to_dict(self) -> dict:
        return {"method": self.method, "a": self.a, "b": self.b, "x": self.x, "y": self.y}

    @classmethod
    def from_dict(cls, d: Any) -> Calibrator:
        """The calibrator a model card records (`to_dict`); ValueError naming the field and the problem
        unless its parameters are finite numbers of the right shape for its method."""
        if not isinstance(d, dict):
            raise ValueError(f"calibration: an object (method, a, b, x, y) is needed, not {type(d).__name__}")
        unknown = sorted(str(k) for k in set(d) - set(FIELDS))
        if unknown:
            raise ValueError(f"calibration: unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}")
        method = d.get("method", "none")
        if method not in METHODS:
            raise ValueError(f"calibration.method: {method!r} is not one of {', '.join(METHODS)}")
        a, b = _number(d.get("a", 1.0), "a"), _number(d.get("b", 0.0), "b")
        x, y = _numbers(d.get("x", []), "x"), _numbers(d.get("y", []), "y")
        if method == "platt" and a <= 0:  # `fit` never gives one: it would reverse the model's ranking
            raise ValueError(f"calibration.a: {a} (a Platt slope must be positive; one of 0 or below reverses or "
                             "erases the model's ranking)")
        if method == "isotonic":
            if len(x) != len(y) or not x:
                raise ValueError(f"calibration: an isotonic map needs x and y of one length (at least 1), "
                                 f"not {len(x)} and {len(y)}")
            if np.any(np.diff(x) < 0) or np.any(np.diff(y) < 0):
                raise ValueError("calibration: an isotonic map's x and y must both be non-decreasing")
            if min(y) < 0 or max(y) > 1:
                raise ValueError("calibration.y: an isotonic map's values are probabilities, from 0 to 1")
        return cls(method, a, b, x, y)


#: the calibration methods `Calibrator` applies, and the fields of its saved form
METHODS = ("none", "platt", "isotonic")
FIELDS = ("method", "a", "b", "x", "y")
#: the most points a saved isotonic map may have (a fit has at most one per validation window)
MAX_POINTS = 1_000_000


def _number(v: Any, name: str) -> float:
    try:
        f = float(v) if isinstance(v, int | float) and not isinstance(v, bool) else math.nan
    except OverflowError:  # an integer beyond float's range
        f = math.inf
    if not math.isfinite(f):
        raise ValueError(f"calibration.{name}: {str(v)[:40]} is not a finite number")
    return f


def _numbers(v: Any, name: str) -> list[float]:
    if not isinstance(v, list):
        raise ValueError(f"calibration.{name}: a list of numbers is needed, not {type(v).__name__}")
    if len(v) > MAX_POINTS:
        raise ValueError(f"calibration.{name}: {len(v)} points, more than {MAX_POINTS}")
    return [_number(e, f"{name}[{i}]") for i, e in enumerate(v)]
