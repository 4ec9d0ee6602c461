"""The one interface every risk model has, whatever it reads (a feature table, or prompts with
keyframe images):

    model.fit(train, val, workdir)   # training as its own step; a VLM writes its adapter into workdir
    model.score(windows)             # RiskScores: raw scores and a rationale per window, in one pass
    model.predict(windows)           # calibrated probabilities
    model.save(folder)               # model.json (+ the model's own files); models.load_model(folder)

`windows` is a `crashcast.risk.windows.WindowSet` (a bare feature table is taken as one). The registry
of kinds and `load_model` are in `crashcast.risk.models`.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from pydantic import BaseModel

from crashcast.features.table import feature_columns
from crashcast.risk.calibration import Calibrator
from crashcast.risk.evidence import Evidence
from crashcast.risk.windows import WindowSet, as_windows
from crashcast.runtime.store import atomic_write_text

MODEL_JSON = "model.json"
#: every column a feature table can have, with `features.top_k` at its largest (50)
KNOWN_FEATURES = frozenset(feature_columns(50))


def check_features(features: Any) -> list[str]:
    """`features` (a model card's) when it is a list of distinct feature-table column names; else
    ValueError naming the problem (a name such as `../../etc/passwd` is no column)."""
    if not isinstance(features, list):
        raise ValueError(f"features: a list of feature-table column names is needed, not {type(features).__name__}")
    odd = [f for f in features if not isinstance(f, str)]
    if odd:
        raise ValueError(f"features: names are strings, not {odd[0]!r}")
    unknown = [f for f in features if f not in KNOWN_FEATURES]
    if unknown:
        shown = ", ".join(repr(f[:60]) for f in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise ValueError(f"features: {shown} {'is not a' if len(unknown) == 1 else 'are not'} feature-table "
                         f"column{'' if len(unknown) == 1 else 's'} (e.g. {', '.join(feature_columns(1)[:3])})")
    if len(set(features)) != len(features):
        twice = sorted(f for f, n in Counter(features).items() if n > 1)
        raise ValueError(f"features: {', '.join(twice[:3])} named more than once")
    return features


@dataclass
class RiskScores:
    """A model's reading of some windows (in their order): `raw` uncalibrated scores, `rationale` one
    short reason each (rendered from `evidence`, `crashcast.risk.rationale.render`), `evidence` what
    each score came from (`crashcast.risk.evidence.Evidence`), `columns` any further per-window
    outputs the predictions file should keep (a VLM's answer text and parse failures)."""

    raw: np.ndarray
    rationale: list[str]
    columns: dict[str, list[Any]] = field(default_factory=dict)
    evidence: list[Evidence] | None = None

    def __post_init__(self) -> None:
        self.raw = np.asarray(self.raw, float)
        n = len(self.raw)
        if (len(self.rationale) != n or any(len(v) != n for v in self.columns.values())
                or (self.evidence is not None and len(self.evidence) != n)):
            raise ValueError("RiskScores: every field needs one entry per window")


def sigmoid(x: Any) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(np.asarray(x, float), -500.0, 500.0)))


class RiskModel:
    """Base of every risk model. Subclasses set `kind` (the registry name), `trainable`, and implement
    `raw_scores` (tabular) or `score` (models whose one pass gives both scores and rationales)."""

    kind: ClassVar[str] = ""
    trainable: ClassVar[bool] = False
    #: whether it reads prompts (window_meta + keyframe overlays), not only the feature table
    reads_prompts: ClassVar[bool] = False
    #: the model's typed settings (peft's config class per method): `params` are validated by it
    Config: ClassVar[type[BaseModel] | None] = None
    #: the packages (import names) it needs; a model whose needs depend on its settings overrides `needs`
    requires: ClassVar[tuple[str, ...]] = ()

    def __init__(self, features: list[str] | None = None, calibration: Calibrator | None = None,
                 params: dict | None = None) -> None:
        self.features = features if features is not None else feature_columns()
        self.calibration = calibration or Calibrator()
        self.params = params or {}
        self.settings: Any = self.Config.model_validate(self.params) if self.Config is not None else None

    @classmethod
    def settings_from(cls, config: Any) -> dict | None:
        """The model's settings held in a crashcast config (None: its own defaults)."""
        return None

    @classmethod
    def needs(cls, settings: Any = None) -> list[str]:
        """The packages (import names) a model of these settings needs to run."""
        return list(cls.requires)

    @classmethod
    def weight_files(cls, settings: Any = None) -> list:
        """The weight files (`runtime.weights.WeightFile`) a model of these settings loads (none for
        models trained here: their files are in the model folder)."""
        return []

    def columns(self) -> list[str]:
        """The feature-table columns the model reads (checked before any work)."""
        return list(self.features)

    def fit(self, train: WindowSet | pd.DataFrame, val: WindowSet | pd.DataFrame | None = None,
            workdir: Path | None = None) -> RiskModel:
        """Train on `train` (validating on `val` where the model does); `workdir` is the folder a model
        that trains out of memory writes into (its final model folder). Training-free models return
        themselves."""
        return self

    def raw_scores(self, windows: WindowSet | pd.DataFrame) -> np.ndarray:
        return self.score(windows).raw

    def score(self, windows: WindowSet | pd.DataFrame) -> RiskScores:
        """Raw scores, and with each the evidence it came from and the reason rendered from it."""
        from crashcast.risk.rationale import render

        ws = as_windows(windows)
        if type(self).raw_scores is RiskModel.raw_scores:
            raise NotImplementedError(f"{type(self).__name__} implements neither score nor raw_scores")
        raw = np.asarray(self.raw_scores(ws), float)
        evidence = self.evidence(ws, raw)
        risk = np.clip(self.calibration(raw), 0.0, 1.0) if len(raw) else raw
        for ev, r in zip(evidence, risk, strict=True):
            ev.risk = float(r)
        return RiskScores(raw, [render(ev) for ev in evidence], evidence=evidence)

    def predict(self, windows: WindowSet | pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities in [0, 1]."""
        return np.clip(self.calibration(self.raw_scores(windows)), 0.0, 1.0)

    def contributions(self, windows: WindowSet) -> pd.DataFrame | None:
        """Per-row, per-feature contributions to the score (None if the model has none)."""
        return None

    def evidence(self, windows: WindowSet, raw: np.ndarray) -> list[Evidence]:
        """What each window's score (`raw`, this model's scores of `windows`) came from. Here: the
        features that moved it most (`contributions`; `crashcast.risk.rationale.feature_evidence`);
        models that know their terms (physics) override it."""
        from crashcast.risk.rationale import feature_evidence

        ws = as_windows(windows)
        contrib = self.contributions(ws)
        if contrib is None:
            raise NotImplementedError(f"{type(self).__name__} gives neither evidence nor contributions")
        risk = np.clip(self.calibration(raw), 0.0, 1.0) if len(raw) else raw
        metas = ws.metas if ws.metas is not None else [None] * len(ws)
        return [feature_evidence(self.kind, float(raw[i]), float(risk[i]), row, contrib.iloc[i], metas[i])
                for i, (_, row) in enumerate(ws.table.iterrows())]

    def explain(self, windows: WindowSet | pd.DataFrame) -> list[str]:
        """One reason per window, rendered from the evidence of its score (`score`)."""
        return self.score(windows).rationale

    # --- persistence

    def _save_weights(self, folder: Path) -> None:
        pass

    def card(self) -> dict:
        """What model.json records besides the caller's `extra`."""
        return {"kind": self.kind, "features": self.features, "calibration": self.calibration.to_dict(),
                "params": self.params}

    def save(self, folder: str | Path, extra: dict | None = None) -> Path:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self._save_weights(folder)
        atomic_write_text(folder / MODEL_JSON, json.dumps({**self.card(), **(extra or {})}, indent=2, default=float))
        return folder

    @classmethod
    def check_card(cls, card: dict) -> None:
        """ValueError naming the field and the problem unless `card` (a model.json, read) is one this
        class can load: feature names it could read, a calibrator of finite parameters. The model's
        own files are checked by `load`."""
        check_features(card.get("features"))
        Calibrator.from_dict(card.get("calibration"))

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> RiskModel:
        """The model saved in `folder` (its model.json already read into `card` and `check_card`ed)."""
        return cls(card["features"], Calibrator.from_dict(card["calibration"]), card.get("params"))
