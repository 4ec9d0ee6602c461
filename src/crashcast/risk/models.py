"""The registry of risk models and the way back from a saved folder.

- `ttc`, `physics` (training-free, `risk.physics`);
- `lightgbm` (the default learned model), `xgboost`, `mlp` (class-weighted, on the feature table,
  `risk.tabular`);
- `vlm-zero-shot`, `vlm-baseline`, `vlm-enhanced` (Qwen2.5-VL on prompts with keyframes,
  `risk.vlm_model`).
All share `crashcast.risk.base.RiskModel`; each class carries its typed settings (`Config`, peft's
config class per method), the packages a config needs (`needs(settings)`) and the weight files it
loads (`weight_files(settings)`), so this registry, `crashcast.readiness` and `crashcast doctor` ask
the classes. No risk module imports this one. A model folder holds model.json (kind, features,
calibration, settings) and the model's own files (booster text/JSON, MLP weights as JSON, a LoRA
adapter as safetensors; never pickle), so `load_model(folder)` knows what to build.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from crashcast.errors import CrashcastError, ModelError
from crashcast.risk.base import MODEL_JSON, RiskModel
from crashcast.risk.physics import PhysicsModel, TTCRule
from crashcast.risk.tabular import LightGBMModel, MLPModel, XGBoostModel
from crashcast.risk.vlm_model import VLM_MODELS
from crashcast.runtime import packages
from crashcast.runtime.store import read_text_bounded

MODELS: dict[str, type[RiskModel]] = {
    m.kind: m for m in (TTCRule, PhysicsModel, LightGBMModel, XGBoostModel, MLPModel, *VLM_MODELS)}
TRAINING_FREE = ("physics", "ttc")


def model_class(kind: str) -> type[RiskModel]:
    if kind not in MODELS:
        raise ModelError(f"unknown model {kind!r}; available: {', '.join(MODELS)}")
    return MODELS[kind]


def requires(kind: str, settings: Any = None) -> list[str]:
    """The packages (import names) a `kind` model with these settings (None: its defaults) needs."""
    return model_class(kind).needs(settings)


def weights(kind: str, settings: Any = None) -> list:
    """The weight files a `kind` model with these settings (None: its defaults) loads."""
    return model_class(kind).weight_files(settings)


def create_model(kind: str, params: dict | None = None, **options: Any) -> RiskModel:
    """An untrained model of `kind` with `params` (validated by its `Config`); `options` go to models
    that take them (a VLM's runtime, adapter, top_k). A missing package is one line naming the fix."""
    cls = model_class(kind)
    model = cls(params=params, **options)
    packages.require(cls.needs(model.settings), f"the {kind} model")
    return model


def load_model(folder: str | Path, **options: Any) -> RiskModel:
    """Load a saved model folder (its model.json says the kind), checked whole before it is used:
    model.json (the kind, feature names the model can read, a calibrator of finite parameters, the
    settings), then the model's own files (a booster's trees and feature count, MLP weight shapes, a
    LoRA adapter's config and safetensors header), so a damaged or foreign folder fails here, before
    any video is read, with a ModelError naming the file and the problem. `options`
    (runtime=RuntimeConfig, base_model=...) reach the models that use them (the VLMs)."""
    folder = Path(folder)
    card_path = folder / MODEL_JSON
    if not card_path.is_file():
        raise ModelError(f"{folder}: not a crashcast model folder (no model.json); give a folder written by "
                         f"`crashcast evaluate` or `crashcast train vlm` (run/models/<name>) or one of: {', '.join(TRAINING_FREE)}")
    try:
        card = json.loads(read_text_bounded(card_path, what="model card"))
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError, too many digits
        raise ModelError(f"{card_path}: unreadable model card ({type(e).__name__}: {str(e)[:200]})") from None
    if not isinstance(card, dict):
        raise ModelError(f"{card_path}: a model card is a JSON object, not {type(card).__name__}")
    kind = card.get("kind")
    cls = MODELS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise ModelError(f"{card_path}: unknown model kind {str(kind)[:60]!r}; known: {', '.join(MODELS)}")
    try:
        settings = cls.Config.model_validate(card.get("params") or {}) if cls.Config is not None else None
    except Exception as e:
        raise ModelError(f"{card_path}: its params are not {kind} settings ({type(e).__name__}: {e})") from None
    try:
        cls.check_card(card)
    except ValueError as e:
        raise ModelError(f"{card_path}: {e}") from None
    packages.require(cls.needs(settings), f"the {kind} model in {folder}")
    try:
        return cls.load(folder, card, **options)
    except CrashcastError:
        raise  # already names the file and the problem
    except Exception as e:  # a damaged file fails inside its library, with its own error types
        raise ModelError(f"{folder}: the saved {kind} model cannot be loaded ({type(e).__name__}: {e}); "
                         "re-save it with `crashcast evaluate`") from None
