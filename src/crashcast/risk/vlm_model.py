"""Qwen2.5-VL behind the risk-model interface: `vlm-zero-shot`, `vlm-baseline`, `vlm-enhanced`.

- Settings: the `paper-<mode>` preset's vlm section, then any `vlm.field=value` overrides
  (`vlm_config`), so `crashcast evaluate --models vlm-baseline --set vlm.base_model=random:tiny`
  runs the paper's baseline recipe on the tiny random model.
- `fit(train, val, workdir)` fine-tunes (`risk.finetune.train_vlm`) into `workdir`, the model's
  folder; an adapter already there (`crashcast train vlm`) is used as it is when it was trained with
  the same settings on the same training and validation prompts (the model card's hashes). One
  trained otherwise is never silently replaced (hours of GPU work): fitting stops with an error
  naming the difference unless `retrain` is set (`crashcast evaluate --retrain-vlm`).
- `score(windows)`: one generation per window gives the score (the expected-digit probability) and
  the rationale (its `Reason:` line); the answer, the number it wrote and any parse failure are
  kept as columns of the predictions file.
- The folder holds model.json (kind, settings, calibration) beside the adapter and its card, so
  `load_model(folder)` and `crashcast predict --model folder` load it.

torch, transformers and peft are imported only when a model is loaded or trained.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any, ClassVar, Literal

import numpy as np

from crashcast.config import load_config
from crashcast.errors import ConfigError, ModelError
from crashcast.risk.base import RiskModel, RiskScores
from crashcast.risk.calibration import Calibrator
from crashcast.risk.evidence import Evidence, Term
from crashcast.risk.vlm import vlm_requires, vlm_weights
from crashcast.risk.windows import WindowSet, as_windows
from crashcast.runtime.context import RuntimeContext
from crashcast.settings import RuntimeConfig, VlmConfig

log = logging.getLogger(__name__)

Mode = Literal["zero-shot", "baseline", "enhanced"]
#: files of a trained folder that belong to the adapter (copied when the model is saved elsewhere)
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "README.md")


def vlm_config(mode: Mode, overrides: list[str] | tuple[str, ...] = ()) -> VlmConfig:
    """The `paper-<mode>` preset's vlm settings with `vlm.field=value` overrides applied (others ignored)."""
    cfg = load_config(f"paper-{mode}", [o for o in overrides if o.strip().startswith("vlm.")]).vlm
    if cfg.mode != mode:
        raise ConfigError(f"vlm.mode={cfg.mode} contradicts the model vlm-{mode}; drop the override")
    return cfg


class VlmRiskModel(RiskModel):
    """A Qwen2.5-VL risk model (see the module docstring). `runtime` says where it runs and where its
    base weights are (the weights folder rule every model shares: `runtime.context`); it is never
    saved with the model. `adapter` is a folder with a trained LoRA adapter."""

    mode: ClassVar[Mode] = "zero-shot"
    reads_prompts = True
    Config = VlmConfig

    def __init__(self, features: list[str] | None = None, calibration: Calibrator | None = None,
                 params: dict | None = None, *, runtime: RuntimeConfig | RuntimeContext | None = None,
                 adapter: Path | None = None, top_k: int = 3, retrain: bool = False) -> None:
        config = VlmConfig.model_validate(params) if params else vlm_config(self.mode)
        if config.mode != self.mode:
            raise ConfigError(f"{self.kind}: the settings are for vlm mode {config.mode!r}")
        super().__init__([], calibration, config.model_dump(mode="json"))
        self.config = config
        self.runtime = RuntimeContext.of(runtime)
        self.adapter = Path(adapter) if adapter is not None else None
        self.top_k = top_k
        self.retrain = retrain
        self._scorer: Any = None
        #: what the adapter was trained on (model.json's `training`), kept when the model is saved
        self.training: dict | None = _training_of(self.adapter)

    @classmethod
    def needs(cls, settings: Any = None) -> list[str]:
        return vlm_requires(settings if settings is not None else vlm_config(cls.mode))

    @classmethod
    def weight_files(cls, settings: Any = None) -> list:
        return vlm_weights(settings if settings is not None else vlm_config(cls.mode))

    def columns(self) -> list[str]:
        return []  # it reads window_meta.json and the keyframes, not the feature table

    # --- training

    def _prompts(self, windows: WindowSet) -> list:
        return windows.prompts(self.top_k, rationale=self.config.rationale, template=self.config.prompt_template)

    def fit(self, train, val=None, workdir: Path | None = None) -> VlmRiskModel:
        if not self.trainable:
            return self
        if workdir is None:
            raise ConfigError(f"{self.kind}: training writes an adapter; give the model's folder as workdir")
        from crashcast.risk.finetune import downsample, prompts_hash, train_vlm

        workdir = Path(workdir)
        train_p = self._prompts(as_windows(train))
        val_p = self._prompts(as_windows(val)) if val is not None else []
        want = {"config": _training_settings(self.config.model_dump(mode="json")),
                "train_hash": prompts_hash(downsample(train_p, self.config.negative_fraction, self.config.seed)),
                "val_hash": prompts_hash(val_p)}
        have = _trained_with(workdir)
        if have == want:
            log.info("%s: using the adapter in %s (trained on these training and validation windows with these settings)",
                     self.kind, workdir)
        else:
            why = "no adapter there yet" if have is None else _difference(have, want)
            if have is not None and not self.retrain:
                raise ModelError(f"{workdir}: {why}; fitting {self.kind} here would replace it. Use the settings it was "
                                 f"trained with (its {_card_name()}), or retrain and replace it (crashcast evaluate "
                                 "--retrain-vlm)")
            log.info("%s: fine-tuning %s into %s (%s)", self.kind, self.config.base_model, workdir, why)
            # the folder's model.json describes the adapter being replaced: gone until this one is saved
            (workdir / "model.json").unlink(missing_ok=True)
            train_vlm(train_p, val_p, self.config, workdir, device=self.runtime.runtime.device,
                      weights_dir=self.runtime.weights_dir)
        self.adapter = workdir
        self.training = _training_of(workdir)
        self._scorer = None
        return self

    # --- scoring

    def scorer(self) -> Any:
        """The loaded model (`risk.vlm.RiskVlm`), loaded at first use."""
        if self._scorer is None:
            from crashcast.risk.vlm import load_vlm

            if self.trainable and self.adapter is None:
                raise ConfigError(f"{self.kind} has no adapter: train it first (`crashcast train vlm`, or fit)")
            self._scorer = load_vlm(self.config, adapter=self.adapter, device=self.runtime.runtime.device,
                                   weights_dir=self.runtime.weights_dir)
        return self._scorer

    def score(self, windows) -> RiskScores:
        ws = as_windows(windows)
        prompts = self._prompts(ws)
        scored = self.scorer().score(prompts, batch_size=self.runtime.batch_size) if prompts else []
        failures = sum(s.written is None for s in scored)
        if failures:  # once per call: predict scores one window per stride and says so in its timeline
            log.log(logging.WARNING if len(scored) > 1 else logging.DEBUG,
                    "%s: %d of %d answers held no readable probability; those windows are scored by a teacher-forced "
                    "reading (column parse_error says why)", self.kind, failures, len(scored))
        reasons = [reason_of(s) for s in scored]
        columns = {"answer": [s.text for s in scored], "written": [s.written for s in scored],
                   "parse_error": [s.error or "" for s in scored], "score_source": [s.source for s in scored]}
        raw = np.array([s.probability for s in scored], float)
        risk = np.clip(self.calibration(raw), 0.0, 1.0) if len(raw) else raw
        # the VLM's reason is its own words: the evidence says so (its score is its answer, read as `score_source` says)
        evidence = [Evidence(self.kind, float(p), [Term("vlm", float(p))], float(r), text=reason,
                             text_source=f"{self.kind} (its own words)") for p, r, reason in zip(raw, risk, reasons, strict=True)]
        return RiskScores(raw, reasons, columns, evidence)

    def explain(self, windows) -> list[str]:
        return self.score(windows).rationale

    # --- persistence

    def card(self) -> dict:
        card = {**super().card(), "prompt_top_k": self.top_k, "adapter": self.adapter is not None}
        return {**card, "training": self.training} if self.training else card

    def _save_weights(self, folder: Path) -> None:
        if self.adapter is None or self.adapter.resolve() == folder.resolve():
            return
        for name in ADAPTER_FILES:
            if (self.adapter / name).exists():
                shutil.copy2(self.adapter / name, folder / name)

    @classmethod
    def check_card(cls, card: dict) -> None:
        """A VLM's card: no feature columns (it reads prompts), an `adapter` flag that a fine-tuned mode
        has set, a `prompt_top_k` of 1 to 50, a calibrator of finite parameters."""
        if card.get("features", []) != []:
            raise ValueError(f"features: a {cls.kind} model reads prompts, not feature columns; the list is empty")
        if not isinstance(card.get("adapter", False), bool):
            raise ValueError("adapter: true or false")
        if cls.trainable and not card.get("adapter"):
            raise ValueError(f"adapter: {cls.kind} is fine-tuned, so its folder holds its adapter (adapter: true); "
                             "train it first (`crashcast train vlm`)")
        top_k = card.get("prompt_top_k", 3)
        if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= 50:
            raise ValueError(f"prompt_top_k: {str(top_k)[:40]} is not a number of objects from 1 to 50")
        Calibrator.from_dict(card.get("calibration"))

    @classmethod
    def load(cls, folder: Path, card: dict, **options: Any) -> VlmRiskModel:
        from crashcast.risk.adapter_files import check_adapter

        kw: dict[str, Any] = {"runtime": options.get("runtime")}
        params = dict(card.get("params") or {})
        if options.get("base_model"):
            params["base_model"] = options["base_model"]
        adapter = folder if card.get("adapter") else None
        if adapter is not None:  # checked now, not when the first window is scored
            check_adapter(adapter, VlmConfig.model_validate(params).lora.r)
        return cls(None, Calibrator.from_dict(card["calibration"]), params, adapter=adapter,
                   top_k=card.get("prompt_top_k", 3), **kw)


def _card_name() -> str:
    from crashcast.risk.vlm import MODEL_CARD_JSON

    return MODEL_CARD_JSON


def _training_of(adapter: Path | None) -> dict | None:
    """model.json's `training` record of the adapter in `adapter` (None: no adapter, or none readable)."""
    from crashcast.risk.vlm import training_record

    if adapter is None or not (adapter / "adapter_config.json").exists():
        return None
    try:
        return dict(training_record(adapter))
    except (OSError, ValueError, KeyError, TypeError):
        return None


def reason_of(scored: Any) -> str:
    """The reason shown for one scored window (`risk.vlm.VlmAnswer`): the model's `Reason:` line; else
    'no reason given' when it wrote a readable number only, or what was wrong with its answer."""
    if scored.rationale:
        return scored.rationale
    return "no reason given" if scored.written is not None else f"unreadable answer: {scored.error}"


def trained_config(folder: Path) -> VlmConfig | None:
    """The settings the adapter in `folder` was trained with (None: no readable adapter there)."""
    from crashcast.risk.vlm import training_record

    try:
        return VlmConfig.model_validate(training_record(folder)["config"]) if (folder / "adapter_config.json").exists() else None
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _training_settings(config: dict) -> dict:
    """The settings an adapter's reuse compares: all but the scoring-only ones (`VlmConfig.scoring_only`)."""
    return {k: v for k, v in config.items() if k not in VlmConfig.scoring_only()}


def _trained_with(folder: Path) -> dict | None:
    """The training settings and data hashes of the adapter in `folder`; None when there is no adapter;
    {"unreadable": why} when there is one whose card cannot be read (it is not replaced unasked either)."""
    from crashcast.risk.vlm import MODEL_CARD_JSON, training_record

    if not (folder / "adapter_config.json").exists():
        return None
    try:
        record = training_record(folder)
        return {"config": _training_settings(record["config"]), "train_hash": record["data"]["train_hash"],
                "val_hash": record["data"]["val_hash"]}
    except (OSError, ValueError, KeyError, TypeError) as e:
        return {"unreadable": f"{folder / MODEL_CARD_JSON}: {type(e).__name__}: {e}"}


def _difference(have: dict, want: dict) -> str:
    if "unreadable" in have:
        return f"there is an adapter whose card cannot be read ({have['unreadable']})"
    if have["config"] != want["config"]:
        fields = sorted(k for k in want["config"] if have["config"].get(k) != want["config"][k])
        return f"the adapter there was trained with other settings ({', '.join(fields)})"
    return "the adapter there was trained on other windows"


class VlmZeroShot(VlmRiskModel):
    kind = "vlm-zero-shot"
    mode = "zero-shot"
    trainable = False


class VlmBaseline(VlmRiskModel):
    kind = "vlm-baseline"
    mode = "baseline"
    trainable = True


class VlmEnhanced(VlmRiskModel):
    kind = "vlm-enhanced"
    mode = "enhanced"
    trainable = True


VLM_MODELS: tuple[type[VlmRiskModel], ...] = (VlmZeroShot, VlmBaseline, VlmEnhanced)
