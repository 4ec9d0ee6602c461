"""Typed configuration. Presets live in `crashcast/configs/*.yaml`; the CLI overrides fields with
`--set section.field=value`; the resolved config and its hash are saved with every run.

YAML is read with `yaml.safe_load` only (no Python object tags) and unknown keys are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
from importlib import resources
from pathlib import Path
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

from crashcast.errors import ConfigError

log = logging.getLogger(__name__)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class VideoConfig(_Strict):
    fps: float = Field(30.0, gt=0, description="frames per second after resampling")
    long_side: int | None = Field(640, description="resize so the long side has this many pixels (None: keep)")


class WindowConfig(_Strict):
    """The paper's three windows (max, mid, mini, all ending at the event) and anticipation horizons."""

    span_s: float = Field(6.0, gt=0, description="length of the reference (max) window")
    keyframe_fractions: dict[str, tuple[float, float, float]] = {
        "max": (0.0, 0.5, 1.0),
        "mid": (0.5, 0.75, 1.0),
        "mini": (0.75, 0.875, 1.0),
    }
    horizons_s: list[float] = Field(default_factory=lambda: [0.0], min_length=1,
                                    description="seconds before the anchor the windows end (>= 0, each once)")
    negative_min_anchor_s: float = Field(6.0, description="negatives are anchored at least this far into the clip")
    soft_target_decay_s: float = Field(2.0, gt=0, description="e-folding time of the soft target before the alert")
    default_alert_lead_s: float = Field(1.0, ge=0, description="alert = event - this, when no alert time is annotated")

    @field_validator("horizons_s")
    @classmethod
    def _horizons(cls, v: list[float]) -> list[float]:
        if any(not math.isfinite(h) or h < 0 for h in v):
            raise ValueError(f"horizons must be finite and >= 0 seconds, got {v}")
        if len(set(v)) != len(v):
            raise ValueError(f"horizons must not repeat, got {v}")
        return v


class BackendConfig(_Strict):
    """One perception stage's backend: `name` picks it (see `crashcast.perception.registry`); the
    backend's own config class (a subclass, registered with its factory) adds and checks the rest.
    In YAML a stage is `{name: yolo, weights: yolov8x.pt, conf: 0.25}`, or just the name."""

    name: str


#: each stage's backend when a config names none (the weight-free ones)
DEFAULT_BACKENDS = {"flow": "classic-flow", "detector": "classic-motion", "segmenter": "classic-box",
                    "tracker": "bytetrack", "depth": "classic-ground"}


def _checker(stage: str) -> Any:
    """Validate a stage's config with the class registered for its backend name (a mapping without a
    name sets fields of the default backend, e.g. `--set perception.tracker.track_buffer_frames=20`)."""

    def check(value: Any) -> Any:
        from crashcast.perception import registry

        if isinstance(value, str):
            value = {"name": value}
        if isinstance(value, BackendConfig):
            if type(value) is not BackendConfig:
                return value  # already the backend's own class
            value = value.model_dump()
        if isinstance(value, dict) and "name" not in value:
            value = {"name": DEFAULT_BACKENDS[stage], **value}
        if not isinstance(value, dict) or not isinstance(value.get("name"), str):
            raise ValueError(f"a {stage} is a backend name or a mapping with a 'name' (got {value!r})")
        cls = registry.config_class(stage, value["name"])  # ValueError listing the names when unknown
        try:
            return cls.model_validate(value)
        except ValidationError as e:
            problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or value['name']}: {err['msg']}"
                                 + (f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else "")
                                 for err in e.errors())
            raise ValueError(f"{stage} {value['name']!r}: {problems}") from None

    return check


def _default(stage: str) -> Any:
    return Field(default_factory=lambda: _checker(stage)(DEFAULT_BACKENDS[stage]))


FlowStage = Annotated[SerializeAsAny[BackendConfig], BeforeValidator(_checker("flow"))]
DetectorStage = Annotated[SerializeAsAny[BackendConfig], BeforeValidator(_checker("detector"))]
SegmenterStage = Annotated[SerializeAsAny[BackendConfig], BeforeValidator(_checker("segmenter"))]
TrackerStage = Annotated[SerializeAsAny[BackendConfig], BeforeValidator(_checker("tracker"))]
DepthStage = Annotated[SerializeAsAny[BackendConfig], BeforeValidator(_checker("depth"))]


class GeometryConfig(_Strict):
    """The dashcam's geometry, shared by every stage that turns pixels into metres."""

    hfov_deg: float = Field(70.0, gt=10, lt=170, description="horizontal field of view of the dashcam")
    camera_height_m: float = Field(1.4, gt=0)
    horizon: float = Field(0.5, gt=0, lt=1, description="horizon row as a fraction of the image height (where the road vanishes)")
    sky_margin: float | None = Field(0.05, ge=0, lt=1, description="perceive only the rows below horizon - this fraction of the height "
                                     "(the classic detector finds objects on the road, below the horizon); null: the whole frame")
    ego_front_m: float = Field(1.0, ge=0, description="distance from the camera to the front bumper")
    ego_path_half_width_m: float = Field(1.6, gt=0, description="half width of the ego path (looming looks there)")


class ContextConfig(_Strict):
    """The road-motion context: the road plane's flow fitted to the dense flow, the residual that
    marks obstacles, and the detection-free ego-path looming. It runs only where something uses it
    (a detector that needs it, or `looming`)."""

    looming: bool = Field(True, description="measure the ego-path looming (scene TTC); needs flow and the road fit")
    max_road_flow_px: float = Field(24.0, gt=0, description="road motion beyond this many pixels per step is not measurable (very near rows)")
    residual_threshold_px: float = Field(0.25, gt=0, description="flow residual vs the road plane (pixels/frame) that marks an obstacle")
    residual_relative: float = Field(0.3, ge=0, description="plus this fraction of the road-plane flow at the pixel")
    max_off_road_fraction: float = Field(0.3, gt=0, le=1, description="more of the ego path off the road plane than this means the fit failed")


# perception.classic (before 0.2) -> the shared sections and the classic backends' own configs
_LEGACY_CLASSIC = {
    "frame_step": ("frame_step",), "hfov_deg": ("geometry", "hfov_deg"), "camera_height_m": ("geometry", "camera_height_m"),
    "horizon": ("geometry", "horizon"), "sky_margin": ("geometry", "sky_margin"), "ego_front_m": ("geometry", "ego_front_m"),
    "ego_path_half_width_m": ("geometry", "ego_path_half_width_m"), "max_road_flow_px": ("context", "max_road_flow_px"),
    "residual_threshold_px": ("context", "residual_threshold_px"), "residual_relative": ("context", "residual_relative"),
    "max_off_road_fraction": ("context", "max_off_road_fraction"), "flow_preset": ("flow", "preset"),
    "flow_refine_iterations": ("flow", "refine_iterations"), "min_parallax_px": ("detector", "min_parallax_px"),
    "road_color_k": ("detector", "road_color_k"), "parallax_ratio": ("detector", "parallax_ratio"),
    "min_box_px": ("detector", "min_box_px"), "track_buffer_frames": ("tracker", "track_buffer_frames"),
}


class PerceptionConfig(_Strict):
    """What perception computes (all of it is in the extraction hash). Each stage names a backend
    and its settings; `geometry`, `context` and `frame_step` are shared by all of them. How it runs
    (device, dtype, batch size) is `RuntimeConfig`, outside the hash."""

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        """Configs written before 0.2 (`perception.backend`, stage names as strings, one `classic`
        section): accept them, moving each classic field to its new home."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "backend" in data:
            log.info("perception.backend is obsolete (--backend names a config preset); ignored")
            del data["backend"]
        classic = data.pop("classic", None)
        if isinstance(classic, dict):
            log.info("perception.classic is obsolete: its fields moved to perception.geometry, .context, "
                     ".frame_step and the classic backends' own settings")
            defaults = {"flow": "classic-flow", "detector": "classic-motion", "tracker": "bytetrack"}
            for key, value in classic.items():
                if key not in _LEGACY_CLASSIC:
                    raise ValueError(f"perception.classic.{key}: unknown field")
                where = _LEGACY_CLASSIC[key]
                if len(where) == 1:
                    data.setdefault(where[0], value)
                    continue
                section, name = where
                node = data.get(section, defaults.get(section))
                node = {"name": node} if isinstance(node, str) else dict(node or {})
                if section in defaults and node.get("name") not in (None, defaults[section]):
                    continue  # a field of a classic backend this config does not use
                node.setdefault(name, value)
                data[section] = node
        return data

    frame_step: int = Field(3, ge=1, le=10, description="perceive every Nth frame of the 30 fps grid (flow between them: more signal, less work)")
    geometry: GeometryConfig = Field(default_factory=GeometryConfig)
    context: ContextConfig = Field(default_factory=ContextConfig)
    flow: FlowStage = _default("flow")
    detector: DetectorStage = _default("detector")
    segmenter: SegmenterStage = _default("segmenter")
    tracker: TrackerStage = _default("tracker")
    depth: DepthStage = _default("depth")
    depth_alignment: Literal["ground", "refuse"] = Field(
        "ground", description="relative (non-metric) depth: 'ground' fits its scale and shift to the ground-plane "
        "depth of the road pixels ahead; 'refuse' stops (never used as metres either way)")


class RuntimeConfig(_Strict):
    """How perception runs, not what it computes: outside the extraction hash, so a run moved from a
    GPU to a CPU (or to another batch size) resumes."""

    device: str = Field("auto", pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$",
                        description="auto (CUDA, then Apple MPS, then CPU), cpu, cuda, cuda:1, mps")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field("auto", description="auto: float16 on CUDA, float32 elsewhere")
    batch_size: int = Field(8, ge=1, description="frames per batch for the per-frame stages; windows per generate call "
                            "when a VLM scores")
    weights_dir: str | None = Field(None, description="load every model from this folder, offline "
                                    "(also CRASHCAST_WEIGHTS_DIR); see `crashcast weights list`")


class FeatureConfig(_Strict):
    top_k: int = Field(3, ge=1, description="objects per window in the feature table and prompts, closest first")
    min_track_frames: int = Field(4, ge=2, description="shorter tracks get SpeedValid/AccValid=False")
    max_valid_depth_m: float = Field(80.0, gt=0, description="beyond this, depth is too coarse for speed")
    write_overlays: bool = True


class PhysicsConfig(_Strict):
    """Training-free risk from time-to-contact (see crashcast.risk.physics for the reasoning)."""

    ttc_mid_s: float = Field(2.0, gt=0, description="TTC at which the risk is 0.5 (FCW tests warn at 1.5-2.5 s)")
    ttc_scale_s: float = Field(0.45, gt=0, description="softness of the TTC logistic")
    min_closing_mps: float = Field(0.8, ge=0, description="slower closing speeds carry no risk")
    looming_weight: float = Field(0.45, ge=0, le=1, description="how much the detection-free looming TTC counts (below the default threshold: looming alone never alerts)")


class EvaluationConfig(_Strict):
    folds: int | None = Field(None, ge=2, description="k-fold cross-validation by video (every clip scored once, out of "
                              "fold); null: one train/validation/test split")
    test_fraction: float = Field(0.3, gt=0, lt=1)
    val_fraction: float = Field(0.2, ge=0, lt=1)
    seed: int = 0
    threshold: float = 0.5
    ece_bins: int = 10
    bootstrap: int = 500


class LoraSettings(_Strict):
    r: int = Field(8, ge=1)
    alpha: int = Field(16, ge=1)
    dropout: float = Field(0.05, ge=0, lt=1)
    target_modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], min_length=1,
                                      description="module names of the language model to adapt (the vision tower's are fused qkv)")


class VlmConfig(_Strict):
    """The vision-language risk model (PAPER.md §5): Qwen2.5-VL zero-shot, or fine-tuned with 4-bit NF4
    QLoRA (baseline: cross-entropy on the answer; enhanced: + mse_weight x MSE of the expected-digit
    probability, positives weighted, negatives down-sampled). Presets: paper-zero-shot,
    paper-baseline, paper-enhanced."""

    mode: Literal["zero-shot", "baseline", "enhanced"] = "baseline"
    base_model: str = Field("Qwen/Qwen2.5-VL-3B-Instruct", description="hub id or local folder (random:tiny: a tiny random model)")
    quantization: Literal["nf4", "none"] = Field("nf4", description="4-bit NF4 (bitsandbytes) under the LoRA adapters")
    compute_dtype: Literal["float16", "bfloat16", "float32"] = "float16"
    lora: LoraSettings = Field(default_factory=LoraSettings)
    learning_rate: float = Field(2e-5, gt=0)
    epochs: float = Field(3.0, gt=0)
    batch_size: int = Field(1, ge=1)
    gradient_accumulation: int = Field(16, ge=1)
    scheduler: Literal["linear", "cosine", "cosine_with_restarts", "constant"] = "linear"
    warmup_ratio: float = Field(0.0, ge=0, lt=1)
    mse_weight: float = Field(0.0, ge=0, description="enhanced: loss = CE + mse_weight x weighted MSE")
    positive_weight: float = Field(3.0, gt=0, description="weight of positive windows in the MSE term")
    negative_fraction: float = Field(1.0, gt=0, le=1, description="share of negative windows kept for training (all positives kept)")
    rationale: bool = Field(False, description="the answer gets a second line with the kinematic reason")
    max_new_tokens: int = Field(24, ge=4)
    max_pixels: int | None = Field(None, ge=28 * 28, description="cap on image pixels the processor keeps (None: its default)")
    seed: int = 0


class CrashcastConfig(_Strict):
    name: str = "classic"
    video: VideoConfig = Field(default_factory=VideoConfig)
    windows: WindowConfig = Field(default_factory=WindowConfig)
    perception: PerceptionConfig = Field(default_factory=PerceptionConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    vlm: VlmConfig = Field(default_factory=VlmConfig)

    def hash(self, *sections: str) -> str:
        """Short stable hash of the whole config, or of the named sections only."""
        data = self.model_dump(mode="json")
        if sections:
            data = {k: data[k] for k in sections}
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:12]

    def extraction_hash(self) -> str:
        """What window_meta files depend on: video, windows, perception and feature settings (not
        `runtime`: a run moved from a GPU to a CPU resumes)."""
        return self.hash("video", "windows", "perception", "features")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("crashcast.configs").iterdir() if p.name.endswith(".yaml"))


def load_config(source: str | Path | None = None, overrides: list[str] | None = None) -> CrashcastConfig:
    """Load a preset name (`classic`) or a YAML path, then apply `section.field=value` overrides."""
    data: dict[str, Any] = {}
    origin = "defaults"
    if source is not None:
        path = Path(source)
        origin = str(path)
        if not path.exists() and str(source) in preset_names():
            path = Path(str(resources.files("crashcast.configs") / f"{source}.yaml"))
            origin = f"preset {source!r}"
        if not path.is_file():
            raise ConfigError(f"{source}: no such config file or preset (presets: {', '.join(preset_names())})")
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text (YAML) file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML (only plain YAML is accepted, no Python tags): {e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        _apply_override(data, item)
    try:
        return CrashcastConfig.model_validate(data)
    except ValidationError as e:
        where = origin + (f" with --set {' --set '.join(overrides)}" if overrides else "")
        problems = "\n".join(f"  {'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
                             + (f" (got {err['input']!r})" if not isinstance(err.get("input"), dict) else "")
                             for err in e.errors())
        raise ConfigError(f"{where}: invalid config:\n{problems}") from None


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")


def _apply_override(data: dict[str, Any], item: str) -> None:
    """Set `section.field=value` (value parsed as YAML) in the raw config mapping."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(f"--set {item!r}: must look like section.field=value, e.g. windows.horizons_s=[0,0.5]")
    try:
        parsed = yaml.safe_load(value)
    except yaml.YAMLError as e:
        problem = str(getattr(e, "problem", None) or e).strip()
        raise ConfigError(f"--set {item!r}: the value {value!r} is not valid YAML ({problem}); "
                          "lists look like [0, 0.5], text with special characters goes in quotes") from None
    node = data
    parts = key.split(".")
    for i, p in enumerate(parts[:-1]):
        if isinstance(node.get(p), str) and parts[: i + 1][:1] == ["perception"]:
            node[p] = {"name": node[p]}  # a stage given by its backend's name: its fields are being set
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[: i + 1])} is a value, not a section with fields")
    node[parts[-1]] = parsed
