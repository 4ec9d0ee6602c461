"""The typed settings sections a crashcast config is made of (video, windows, one stage's backend,
geometry, the road-motion context, runtime, features, physics, evaluation, the VLM).

These are the leaves of the configuration: every module may import them (a backend its own config
class, risk models theirs). The assembled config (`CrashcastConfig`, the perception section whose
stages are typed by the backend registry, presets and `load_config`) is `crashcast.config`, which
sits above the registries.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    field_validator,
    model_validator,
)


class _NoAliases(yaml.SafeLoader):
    """`yaml.safe_load` without aliases: a crashcast YAML file never needs them, and aliases of aliases
    expand to gigabytes from a few hundred bytes (a "billion laughs" file)."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.composer.ComposerError(None, None, "aliases (*name) are not accepted", mark)
        return super().compose_node(parent, index)


def parse_yaml(text: str) -> Any:
    """Plain YAML (no Python tags, no aliases) as Python data; yaml.YAMLError when it is not."""
    return yaml.load(text, Loader=_NoAliases)


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VideoConfig(Section):
    fps: float = Field(30.0, gt=0, le=240, description="frames per second after resampling")
    long_side: int | None = Field(640, ge=32, le=8192, description="resize so the long side has this many pixels (None: keep)")


class WindowConfig(Section):
    """The paper's three windows (max, mid, mini, all ending at the event) and anticipation horizons."""

    span_s: float = Field(6.0, gt=0, le=60, description="length of the reference (max) window")
    keyframe_fractions: dict[str, tuple[float, float, float]] = {
        "max": (0.0, 0.5, 1.0),
        "mid": (0.5, 0.75, 1.0),
        "mini": (0.75, 0.875, 1.0),
    }
    horizons_s: list[float] = Field(default_factory=lambda: [0.0], min_length=1, max_length=100,
                                    description="seconds before the anchor the windows end (>= 0, each once)")

    @field_validator("keyframe_fractions")
    @classmethod
    def _fractions(cls, v: dict[str, tuple[float, float, float]]) -> dict[str, tuple[float, float, float]]:
        if set(v) != {"max", "mid", "mini"}:
            raise ValueError(f"keyframe fractions are given for exactly max, mid and mini, got {sorted(v)}")
        for phase, fr in v.items():
            if not (all(math.isfinite(f) for f in fr) and 0 <= fr[0] < fr[1] < fr[2] <= 1):
                raise ValueError(f"{phase}: three increasing fractions of the span in [0, 1], got {list(fr)}")
        return v
    negative_min_anchor_s: float = Field(6.0, ge=0, le=3600, description="negatives are anchored at least this far into the clip")
    soft_target_decay_s: float = Field(2.0, gt=0, le=600, description="e-folding time of the soft target before the alert")
    default_alert_lead_s: float = Field(1.0, ge=0, le=60, description="alert = event - this, when no alert time is annotated")

    @field_validator("horizons_s")
    @classmethod
    def _horizons(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(h) or h < 0 or h > 60 for h in v):
            raise ValueError(f"horizons must be finite, >= 0 and <= 60 seconds, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"horizons must not repeat, got {v}")
        return v


class BackendConfig(Section):
    """One perception stage's backend: `name` picks it (see `crashcast.perception.registry`); the
    backend's own config class (a subclass, registered with its factory) adds and checks the rest.
    In YAML a stage is `{name: yolo, weights: yolov8x.pt, conf: 0.25}`, or just the name."""

    name: str


#: stage -> backend name -> its config class; filled by `crashcast.perception.registry` as backends
#: register (this module never imports the registry: it only holds the table the registry writes)
BACKEND_CONFIGS: dict[str, dict[str, type[BackendConfig]]] = {}


def validation_problems(e: ValidationError, fallback: str = "(top level)") -> list[str]:
    """One line per pydantic error: `field.path: message (got value)` (mappings are not echoed)."""
    return [f"{'.'.join(str(p) for p in err['loc']) or fallback}: {err['msg']}"
            + (f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else "")
            for err in e.errors()]


def backend_config(stage: str, value: Any, default: str | None = None,
                   known: dict[str, type[BackendConfig]] | None = None) -> BackendConfig:
    """`value` (a backend name, a mapping with a `name`, or a config) validated by the config class
    registered for that backend. A mapping without a name sets fields of the `default` backend (the
    stage's weight-free one), e.g. `--set perception.tracker.track_buffer_frames=20`. ValueError
    names the stage, the backend and the problem. `known`: config classes a caller knows itself, beside
    the registered ones (a composite's own sub-backends, typed before the registry is loaded)."""
    if isinstance(value, str):
        value = {"name": value}
    if isinstance(value, BackendConfig):
        if type(value) is not BackendConfig:
            return value  # already the backend's own class
        value = value.model_dump()
    if isinstance(value, dict) and "name" not in value and default is not None:
        value = {"name": default, **value}
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError(f"a {stage} is a backend name or a mapping with a 'name' (got {value!r})")
    known = {**(known or {}), **BACKEND_CONFIGS.get(stage, {})}
    if value["name"] not in known:
        raise ValueError(f"no {stage} backend named {value['name']!r}; available: {', '.join(sorted(known))}")
    try:
        return known[value["name"]].model_validate(value)
    except ValidationError as e:
        raise ValueError(f"{stage} {value['name']!r}: {'; '.join(validation_problems(e, value['name']))}") from None


def stage_type(stage: str, check: Callable[[Any], Any] | None = None) -> Any:
    """The annotation of a field holding one `stage` backend's config (typed by `check`, by default
    `backend_config(stage, value)`): a fusion's sub-detectors, the perception section's stages."""
    return Annotated[SerializeAsAny[BackendConfig], BeforeValidator(check or (lambda v: backend_config(stage, v)))]


class GeometryConfig(Section):
    """The dashcam's geometry, shared by every stage that turns pixels into metres."""

    hfov_deg: float = Field(70.0, gt=10, lt=170, description="horizontal field of view of the dashcam")
    camera_height_m: float = Field(1.4, gt=0, le=10)
    horizon: float = Field(0.5, gt=0, lt=1, description="horizon row as a fraction of the image height (where the road vanishes)")
    sky_margin: float | None = Field(0.05, ge=0, lt=1, description="perceive only the rows below horizon - this fraction of the height "
                                     "(the classic detector finds objects on the road, below the horizon); null: the whole frame")
    ego_front_m: float = Field(1.0, ge=0, le=20, description="distance from the camera to the front bumper")
    ego_path_half_width_m: float = Field(1.6, gt=0, le=20, description="half width of the ego path (looming looks there)")


class ContextConfig(Section):
    """The road-motion context: the road plane's flow fitted to the dense flow, the residual that
    marks obstacles, and the detection-free ego-path looming. It runs only where something uses it
    (a detector that needs it, or `looming`)."""

    looming: bool = Field(True, description="measure the ego-path looming (scene TTC); needs flow and the road fit")
    max_road_flow_px: float = Field(24.0, gt=0, le=1000, description="road motion beyond this many pixels per step is not measurable (very near rows)")
    residual_threshold_px: float = Field(0.25, gt=0, le=100, description="flow residual vs the road plane (pixels/frame) that marks an obstacle")
    residual_relative: float = Field(0.3, ge=0, le=100, description="plus this fraction of the road-plane flow at the pixel")
    max_off_road_fraction: float = Field(0.3, gt=0, le=1, description="more of the ego path off the road plane than this means the fit failed")


class RuntimeConfig(Section):
    """How perception runs, not what it computes: outside the extraction hash, so a run moved from a
    GPU to a CPU (or to another batch size) resumes."""

    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: float16 on CUDA, float32 elsewhere")
    batch_size: int = Field(8, ge=1, le=4096, description="frames per batch for the per-frame stages; windows per generate call "
                            "when a VLM scores")
    weights_dir: str | None = Field(None, description="load every model from this folder, offline "
                                    "(also CRASHCAST_WEIGHTS_DIR); see `crashcast weights list`")
    ray_task_timeout_s: float = Field(3600.0, gt=0, le=7 * 86400,
                                      description="with --executor ray: a clip still running after this many seconds is "
                                      "stopped (its worker killed) and recorded as failed; the run goes on")
    ray_task_retries: int = Field(2, ge=0, le=10, description="with --executor ray: a clip whose worker died (killed, out "
                                  "of memory, its node lost) is tried on this many fresh workers, then recorded as failed")
    ray_start_timeout_s: float = Field(600.0, gt=0, le=86400,
                                       description="with --executor ray: a worker not started after this many seconds "
                                       "(no room on the cluster, models still loading) is given up; with none started "
                                       "the run stops")


class FeatureConfig(Section):
    top_k: int = Field(3, ge=1, le=50, description="objects per window in the feature table and prompts, closest first")
    min_track_frames: int = Field(4, ge=2, le=10_000, description="shorter tracks get SpeedValid/AccValid=False")
    max_valid_depth_m: float = Field(80.0, gt=0, le=1000, description="beyond this, depth is too coarse for speed")
    write_overlays: bool = True
    keyframe_caption: Literal["relative", "full", "none"] = Field(
        "relative", description="the line printed on each keyframe image, which a VLM's prompt shows: 'relative' "
        "(keyframe k/3 and its time before the window's end, nothing the prompt's text does not say), 'full' (also "
        "the window id and the clip time: a model could learn an event's clip time from them), 'none'")


class PhysicsConfig(Section):
    """Training-free risk from time-to-contact (see crashcast.risk.physics for the reasoning)."""

    ttc_mid_s: float = Field(2.0, gt=0, le=60, description="TTC at which the risk is 0.5 (FCW tests warn at 1.5-2.5 s)")
    ttc_scale_s: float = Field(0.45, gt=0, le=60, description="softness of the TTC logistic")
    min_closing_mps: float = Field(0.8, ge=0, le=100, description="slower closing speeds carry no risk")
    looming_weight: float = Field(0.45, ge=0, le=1, description="how much the detection-free looming TTC counts (below the default threshold: looming alone never alerts)")
    third_party_weight: float = Field(1.0, ge=0, le=1, description="how much the third-party term counts (two other road "
                                      "users converging ahead, or sudden motion the ego motion does not explain; "
                                      "crashcast.risk.third_party); it and the looming term combine by their maximum; "
                                      "0: the ego path only")


AlertPolicyName = Literal["none", "median", "k-of-n", "hysteresis", "ema", "max"]


class AlertConfig(Section):
    """How `predict` turns each stride's raw risk into the risk shown and the alert
    (`crashcast.risk.alerts`). The default, hysteresis (on at the threshold, off below 0.6 x the
    threshold), was chosen by measurement (docs/ALERTS.md, benchmarks/alert_policies.py): it alerts
    on the first stride whose raw risk reaches the threshold (as early as no policy, never hiding
    one high stride as the median of 3 did), does not flicker on a risk hovering near the threshold,
    and shows the model's own risk of each stride. The threshold is predict's `threshold`."""

    policy: AlertPolicyName = Field("hysteresis", description="none (raw >= threshold), median (of the last median_window "
                                    "strides), k-of-n (k of the last n), hysteresis (on at the threshold, off below "
                                    "off_fraction x threshold), ema (alpha), max (of the last max_window strides)")
    max_window: int = Field(5, ge=1, le=100, description="max: strides looked at, this one included (an alert holds "
                            "max_window - 1 strides after the raw risk falls)")
    median_window: int = Field(3, ge=1, le=100, description="median: strides looked at, this one included")
    k: int = Field(2, ge=1, le=100, description="k-of-n: strides of the last n that must reach the threshold")
    n: int = Field(3, ge=1, le=100, description="k-of-n: strides looked at, this one included")
    off_fraction: float = Field(0.6, gt=0, le=1, description="hysteresis: the alert ends when the raw risk falls "
                                "below this fraction of the threshold")
    alpha: float = Field(0.5, gt=0, le=1, description="ema: the newest stride's weight")

    @model_validator(mode="after")
    def _k_of_n(self) -> AlertConfig:
        if self.k > self.n:
            raise ValueError(f"k={self.k} of n={self.n}: k-of-n needs k <= n")
        return self


class EvaluationConfig(Section):
    folds: int | None = Field(None, ge=2, le=100, description="k-fold cross-validation by video (every clip scored once, out of "
                              "fold); null: one train/validation/test split")
    test_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = Field(0, ge=0, lt=2**32, description="the split's random seed (numpy's range)")
    threshold: float = Field(0.5, ge=0, le=1, allow_inf_nan=False)
    ece_bins: int = Field(10, ge=2, le=1000)
    bootstrap: int = Field(500, ge=0, le=100_000)
    split: Literal["random", "official"] = Field(
        "random", description="'random': clips split by video, stratified, seeded (test_fraction, val_fraction); "
        "'official': the dataset's own train/test split recorded in run/split.json (`crashcast reproduce` writes it "
        "for DAD, CCD and DoTA), a val_fraction / (1 - test_fraction) share of its training clips validating")
    protocol: Literal["crashcast", "paper"] = Field(
        "crashcast", description="the headline table of metrics.md (metrics.json holds both): 'crashcast' (each "
        "model's calibrated score, a VLM's expected-digit score, at evaluation.threshold) or 'paper' (Table III as "
        "the paper reads it: the number each model wrote, uncalibrated, at 0.5, unreadable answers counted)")

    @model_validator(mode="after")
    def _fractions(self) -> EvaluationConfig:
        if self.test_fraction + self.val_fraction >= 1:
            raise ValueError(f"test_fraction + val_fraction must leave clips to train on (< 1), got "
                             f"{self.test_fraction} + {self.val_fraction}")
        return self


class LoraSettings(Section):
    r: int = Field(8, ge=1, le=1024)
    alpha: int = Field(16, ge=1, le=4096)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                                      description="module names inside the language model to adapt (matched there only, "
                                      "never in the vision tower; Qwen2.5-VL and Qwen3-VL: q_proj, k_proj, v_proj, o_proj, "
                                      "gate_proj, up_proj, down_proj)")


class VlmConfig(Section):
    """The vision-language risk model (the paper, §5): Qwen2.5-VL zero-shot, or fine-tuned with 4-bit NF4
    QLoRA (baseline: cross-entropy on the answer; enhanced: + mse_weight x MSE of the expected-digit
    probability, positives weighted, negatives down-sampled). Presets: paper-zero-shot,
    paper-baseline, paper-enhanced (all Qwen2.5-VL-3B-Instruct, NF4).

    Other base models: Qwen3-VL (`Qwen/Qwen3-VL-2B-Instruct`, `-4B-Instruct`) or any model
    `AutoModelForImageTextToText` loads with a ChatML template like Qwen's; `random:tiny` and
    `random:tiny-qwen3-vl` are tiny random ones for tests. Two fine-tuning modes
    (`quantization`): nf4, QLoRA (the paper's); none, plain LoRA on the unquantized model in
    `compute_dtype` (bf16 LoRA with `compute_dtype: bfloat16`; float32 on a CPU), which some newer
    models fine-tune better with, at about 4x the base model's memory of NF4. docs/VLM_MODELS.md."""

    mode: Literal["zero-shot", "baseline", "enhanced"] = "baseline"
    base_model: str = Field("Qwen/Qwen2.5-VL-3B-Instruct", description="hub id or local folder (random:tiny, "
                            "random:tiny-qwen3-vl: a tiny random Qwen2.5-VL, Qwen3-VL)")
    quantization: Literal["nf4", "none"] = Field("nf4", description="nf4: QLoRA, the base model in 4-bit NF4 "
                                                 "(bitsandbytes) under the LoRA adapters; none: LoRA on the "
                                                 "unquantized model in compute_dtype (float32 on a CPU)")
    compute_dtype: Literal["float16", "bfloat16", "float32"] = Field(
        "float16", description="on CUDA: the dtype the model computes in (nf4) or is loaded and computes in "
        "(none: bfloat16 for bf16 LoRA); float32 on a CPU")
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(2e-5, gt=0, le=1)
    epochs: float = Field(3.0, gt=0, le=1000)
    batch_size: int = Field(1, ge=1, le=1024)
    gradient_accumulation: int = Field(16, ge=1, le=4096)
    scheduler: Literal["linear", "cosine", "cosine_with_restarts", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    num_cycles: int = Field(1, ge=1, le=1000, description="cosine_with_restarts: cosine cycles after the warmup, each "
                            "restarting at the full learning rate (1: no restart, transformers' default)")
    mse_weight: float = Field(0.0, ge=0, le=1000, description="enhanced: loss = CE + mse_weight x weighted MSE")
    positive_weight: float = Field(3.0, gt=0, le=1000, description="weight of positive windows in the MSE term")
    negative_fraction: float = Field(1.0, gt=0, le=1, description="share of negative windows kept for training (all positives kept)")
    rationale: bool = Field(False, description="the answer gets a second line with the kinematic reason")
    prompt_template: str = Field("risk_v2", min_length=1, max_length=4096,
                                 description="the prompt's wording and table layout: a template shipped in "
                                 "crashcast/prompts/templates/ (risk_v2: crashcast's; risk_v1: as before issue 25, "
                                 "whose Reason line names the closest object; paper_fig3: the paper's Fig. 3) or a "
                                 "YAML path")
    max_new_tokens: int = Field(24, ge=4, le=4096, json_schema_extra={"scoring_only": True},
                                description="how a trained model answers, not what it learnt: not compared when an adapter is reused")
    max_pixels: int | None = Field(None, ge=28 * 28, le=8192 * 8192, description="cap on image pixels the processor keeps (None: its default)")
    seed: int = Field(0, ge=0, lt=2**32)

    @classmethod
    def scoring_only(cls) -> tuple[str, ...]:
        """The fields that change how a trained model answers, not what it learnt (marked on the field)."""
        return tuple(n for n, f in cls.model_fields.items()
                     if isinstance(f.json_schema_extra, dict) and f.json_schema_extra.get("scoring_only"))
