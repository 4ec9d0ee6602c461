"""Backend registry: each stage's backends by name, each with its config class and factory.

As peft registers a method's config class with its model class, a backend registers its config
class (a `BackendConfig` subclass: the settings it accepts, checked when a config is loaded) with
the factory that builds it from that config and a `BuildContext` (device, dtype, weights folder).
A backend module registers itself when imported; its heavy imports (torch, transformers,
ultralytics) happen inside the factory, so importing it (and `import crashcast`) stays light. The
built-in modules are imported the first time the registry is asked anything.

    @register("detector", "yolo", YoloConfig, requires=("torch", "ultralytics"), weights=yolo_weights)
    def _build(cfg: YoloConfig, ctx: BuildContext) -> YoloDetector: ...
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from crashcast.config import BackendConfig
from crashcast.errors import ConfigError
from crashcast.perception.base import STAGE_PROTOCOLS
from crashcast.runtime.devices import BuildContext

STAGES = tuple(STAGE_PROTOCOLS)  # flow, detector, segmenter, tracker, depth

#: modules whose import registers the built-in backends (light: no torch at import time)
BUILTIN_MODULES = (
    "crashcast.perception.classic.flow",
    "crashcast.perception.classic.detect",
    "crashcast.perception.classic.masks",
    "crashcast.perception.classic.track",
    "crashcast.perception.classic.depth",
    "crashcast.perception.models.yolo",
    "crashcast.perception.models.grounding_dino",
    "crashcast.perception.models.fusion",
    "crashcast.perception.models.sam2",
    "crashcast.perception.models.sam2_video",
    "crashcast.perception.models.raft",
    "crashcast.perception.models.depth_anything_v2",
    "crashcast.perception.models.vda",
)

Factory = Callable[[Any, BuildContext], Any]


@dataclass(frozen=True)
class BackendSpec:
    """A registered backend: its stage, name, config class and factory; the Python packages it needs
    (`requires`, import names) and, for model backends, the weight files a config needs
    (`weights(cfg) -> list[crashcast.runtime.weights.WeightFile]`)."""

    stage: str
    name: str
    config: type[BackendConfig]
    factory: Factory
    requires: tuple[str, ...] = ()
    weights: Callable[[Any], list] | None = None

    def missing_packages(self) -> list[str]:
        """The required packages that cannot be imported here."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]


_REGISTRY: dict[str, dict[str, BackendSpec]] = {s: {} for s in STAGES}
_loaded = False


def register(stage: str, name: str, config: type[BackendConfig] = BackendConfig, *, requires: tuple[str, ...] = (),
             weights: Callable[[Any], list] | None = None) -> Callable[[Factory], Factory]:
    """Decorator registering `factory(cfg, ctx)` as the `stage` backend `name` with its config class."""
    if stage not in _REGISTRY:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if not (isinstance(config, type) and issubclass(config, BackendConfig)):
        raise TypeError(f"{stage} {name!r}: config must be a BackendConfig subclass, got {config!r}")

    def deco(factory: Factory) -> Factory:
        _load_builtins()  # so a user's backend can never take a built-in's name unnoticed
        if name in _REGISTRY[stage]:  # a second backend must not silently replace the first
            raise ValueError(f"a {stage} backend named {name!r} is already registered ({_REGISTRY[stage][name].factory.__module__})")
        _REGISTRY[stage][name] = BackendSpec(stage, name, config, factory, tuple(requires), weights)
        return factory

    return deco


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for module in BUILTIN_MODULES:
            importlib.import_module(module)


def available(stage: str) -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY[stage])


def spec(stage: str, name: str) -> BackendSpec:
    """The registered backend, or ConfigError naming the field and the choices."""
    _load_builtins()
    if stage not in _REGISTRY:
        raise KeyError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if name not in _REGISTRY[stage]:
        raise ConfigError(f"perception.{stage}: no {stage} backend named {name!r}; available: {', '.join(available(stage))}")
    return _REGISTRY[stage][name]


def config_class(stage: str, name: str) -> type[BackendConfig]:
    """The config class of a backend (ValueError when unknown: config validation reports it)."""
    try:
        return spec(stage, name).config
    except ConfigError as e:
        raise ValueError(str(e).split(": ", 1)[1]) from None


def create(stage: str, cfg: BackendConfig, ctx: BuildContext) -> Any:
    """Build the backend `cfg.name` of `stage` and check it against the stage's Protocol."""
    s = spec(stage, cfg.name)
    if not isinstance(cfg, s.config):
        cfg = s.config.model_validate(cfg.model_dump())
    missing = s.missing_packages()
    if missing:
        from crashcast.runtime.weights import install_hint

        raise ConfigError(f"perception.{stage}: the {cfg.name!r} backend needs {', '.join(missing)}: "
                          f"{install_hint(missing)}")
    obj = s.factory(cfg, ctx)
    protocol = STAGE_PROTOCOLS[stage]
    if not isinstance(obj, protocol):
        raise TypeError(f"the {stage} backend {cfg.name!r} built a {type(obj).__name__}, which lacks the "
                        f"{protocol.__name__} methods")
    return obj
