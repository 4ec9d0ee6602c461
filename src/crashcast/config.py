"""Typed configuration. Presets live in `crashcast/configs/*.yaml`; the CLI overrides fields with
`--set section.field=value`; the resolved config and its hash are saved with every run.

YAML is read as plain data only (no Python object tags, no aliases, at most 16 MB: `settings.parse_yaml`)
and unknown keys are refused.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from crashcast.errors import ConfigError
from crashcast.perception import registry
from crashcast.runtime.store import read_text_bounded
from crashcast.settings import (
    AlertConfig,
    BackendConfig,
    ContextConfig,
    EvaluationConfig,
    FeatureConfig,
    GeometryConfig,
    LoraSettings,
    PhysicsConfig,
    RuntimeConfig,
    Section,
    VideoConfig,
    VlmConfig,
    WindowConfig,
    backend_config,
    parse_yaml,
    stage_type,
    validation_problems,
)

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_BACKENDS", "AlertConfig", "BackendConfig", "ContextConfig", "CrashcastConfig", "EvaluationConfig", "FeatureConfig",
    "GeometryConfig", "LoraSettings", "PerceptionConfig", "PhysicsConfig", "RuntimeConfig", "VideoConfig",
    "VlmConfig", "WindowConfig", "load_config", "preset_names",
]

#: each stage's backend when a config names none (the weight-free ones)
DEFAULT_BACKENDS = {"flow": "classic-flow", "detector": "classic-motion", "segmenter": "classic-box",
                    "tracker": "bytetrack", "depth": "classic-ground"}


def _checker(stage: str) -> Any:
    """Validate a stage's config with the class registered for its backend name (a mapping without a
    name sets fields of the default backend, e.g. `--set perception.tracker.track_buffer_frames=20`)."""

    def check(value: Any) -> Any:
        registry.load()  # every built-in backend's config class is known
        return backend_config(stage, value, DEFAULT_BACKENDS[stage])

    return check


def _default(stage: str) -> Any:
    return Field(default_factory=lambda: _checker(stage)(DEFAULT_BACKENDS[stage]))


FlowStage = stage_type("flow", _checker("flow"))
DetectorStage = stage_type("detector", _checker("detector"))
SegmenterStage = stage_type("segmenter", _checker("segmenter"))
TrackerStage = stage_type("tracker", _checker("tracker"))
DepthStage = stage_type("depth", _checker("depth"))


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


class PerceptionConfig(Section):
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
    object_depth: Literal["median", "mean"] = Field(
        "median", description="an object's depth in a frame: the median of the depth map inside its mask (crashcast: "
        "robust to background pixels a mask leaks onto) or the mean (the paper's 'per-object mean distance')")
    depth_alignment: Literal["ground", "refuse"] = Field(
        "ground", description="relative (non-metric) depth: 'ground' fits its scale and shift to the ground-plane "
        "depth of the road pixels ahead; 'refuse' stops (never used as metres either way)")


class CrashcastConfig(Section):
    name: str = "classic"
    video: VideoConfig = Field(default_factory=VideoConfig)
    windows: WindowConfig = Field(default_factory=WindowConfig)
    perception: PerceptionConfig = Field(default_factory=PerceptionConfig)
    features: FeatureConfig = Field(default_factory=FeatureConfig)
    physics: PhysicsConfig = Field(default_factory=PhysicsConfig)
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    vlm: VlmConfig = Field(default_factory=VlmConfig)
    alert: AlertConfig = Field(default_factory=AlertConfig)

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
            data = parse_yaml(read_text_bounded(path, what="config file")) or {}
        except UnicodeDecodeError:
            raise ConfigError(f"{path}: not a UTF-8 text (YAML) file") from None
        except yaml.YAMLError as e:
            raise ConfigError(f"{path}: not valid YAML (only plain YAML is accepted, no Python tags, no aliases): "
                              f"{e}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level")
    for item in overrides or []:
        _apply_override(data, item)
    try:
        return CrashcastConfig.model_validate(data)
    except ValidationError as e:
        where = origin + (f" with --set {' --set '.join(overrides)}" if overrides else "")
        problems = "\n".join(f"  {p}" for p in validation_problems(e))
        raise ConfigError(f"{where}: invalid config:\n{problems}") from None


_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
#: a second `section.field=value` inside one override's value (`--set "a.b=1 c.d=2"`)
_SECOND_PAIR = re.compile(r"\s([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)+=\S*)")


def _apply_override(data: dict[str, Any], item: str) -> None:
    """Set `section.field=value` (value parsed as YAML) in the raw config mapping."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not _KEY.match(key):
        raise ConfigError(f"--set {item!r}: must look like section.field=value, e.g. windows.horizons_s=[0,0.5]")
    second = _SECOND_PAIR.search(value)
    if second and not value.lstrip().startswith(("'", '"')):
        raise ConfigError(f"--set {item!r}: one section.field=value per --set; give {second.group(1)!r} its own "
                          "(--set a.b=1 --set c.d=2; in the Python API, one list item per override)")
    try:
        parsed = parse_yaml(value)
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
