"""The perception backends by stage and name: the one place that knows them all.

Each backend module declares its backend with `crashcast.perception.spec.backend` (config class,
factory, the packages and weight files a config needs); this registry imports the built-in modules
the first time it is asked anything and collects their specs, as peft's `mapping.py` maps each
method to its config and model. No backend module imports this one, so it sits above all of them
(and `crashcast.config`, which types each stage's settings with the registered config class, sits
above it). A user's own backend is added with `register(...)`:

    @registry.register("detector", "my-detector", MyConfig, requires=("torch",))
    def build(cfg: MyConfig, ctx: BuildContext) -> MyDetector: ...
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from crashcast.errors import ConfigError
from crashcast.perception.base import STAGE_PROTOCOLS
from crashcast.perception.spec import SPEC_ATTR, BackendSpec, BuildContext, Factory, backend
from crashcast.runtime import packages
from crashcast.settings import BACKEND_CONFIGS, BackendConfig

STAGES = tuple(STAGE_PROTOCOLS)  # flow, detector, segmenter, tracker, depth

_REGISTRY: dict[str, dict[str, BackendSpec]] = {s: {} for s in STAGES}
_loaded = False


def _add(spec: BackendSpec) -> None:
    if spec.stage not in _REGISTRY:
        raise KeyError(f"unknown stage {spec.stage!r}; stages: {', '.join(STAGES)}")
    if spec.name in _REGISTRY[spec.stage]:  # a second backend must not silently replace the first
        raise ValueError(f"a {spec.stage} backend named {spec.name!r} is already registered "
                         f"({_REGISTRY[spec.stage][spec.name].factory.__module__})")
    _REGISTRY[spec.stage][spec.name] = spec
    BACKEND_CONFIGS.setdefault(spec.stage, {})[spec.name] = spec.config


def load() -> None:
    """Collect the built-in backends (once). Their modules are light: heavy imports happen inside
    the factories."""
    global _loaded
    if _loaded:
        return
    _loaded = True
    from crashcast.perception.classic import depth, detect, flow, masks, track
    from crashcast.perception.models import (
        depth_anything_v2,
        fusion,
        grounding_dino,
        raft,
        sam2,
        sam2_video,
        vda,
        yolo,
    )

    for module in (flow, detect, masks, track, depth, yolo, grounding_dino, fusion, sam2, sam2_video, raft,
                   depth_anything_v2, vda):
        for value in vars(module).values():
            spec = getattr(value, SPEC_ATTR, None)
            if isinstance(spec, BackendSpec) and spec.factory is value:
                _add(spec)


def register(stage: str, name: str, config: type[BackendConfig] = BackendConfig, *,
             requires: Sequence[str] | Callable[[Any], Sequence[str]] = (),
             weights: Callable[[Any], Sequence] | None = None,
             children: Callable[[Any], Sequence[tuple[str, BackendConfig]]] | None = None,
             ) -> Callable[[Factory], Factory]:
    """Decorator registering `factory(cfg, ctx)` as the `stage` backend `name` (a user's own backend;
    the built-in ones are collected by `load`). A name already taken is refused."""
    if not (isinstance(config, type) and issubclass(config, BackendConfig)):
        raise TypeError(f"{stage} {name!r}: config must be a BackendConfig subclass, got {config!r}")

    def deco(factory: Factory) -> Factory:
        load()  # so a user's backend can never take a built-in's name unnoticed
        backend(stage, name, config, requires=requires, weights=weights, children=children)(factory)
        _add(getattr(factory, SPEC_ATTR))
        return factory

    return deco


def available(stage: str) -> list[str]:
    load()
    return sorted(_REGISTRY[stage])


def spec(stage: str, name: str) -> BackendSpec:
    """The registered backend, or ConfigError naming the field and the choices."""
    load()
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


def requires(stage: str, cfg: BackendConfig) -> list[str]:
    """The packages (import names) the backend `cfg` needs, its sub-backends' included."""
    s = spec(stage, cfg.name)
    out = list(s.requires(cfg) or ())
    for sub_stage, sub in s.children(cfg) or ():
        out += requires(sub_stage, sub)
    return list(dict.fromkeys(out))


def weights(stage: str, cfg: BackendConfig) -> list:
    """The weight files (`runtime.weights.WeightFile`) the backend `cfg` needs, its sub-backends' included."""
    s = spec(stage, cfg.name)
    out = list(s.weights(cfg) or ())
    for sub_stage, sub in s.children(cfg) or ():
        out += [f for f in weights(sub_stage, sub) if f not in out]
    return list(dict.fromkeys(out))


def create(stage: str, cfg: BackendConfig, ctx: BuildContext | None = None) -> Any:
    """Build the backend `cfg.name` of `stage` and check it against the stage's Protocol. Its packages
    are checked first: a missing one, or a torchvision that cannot import, is one ConfigError naming
    the fix."""
    s = spec(stage, cfg.name)
    if not isinstance(cfg, s.config):
        cfg = s.config.model_validate(cfg.model_dump())
    packages.require(requires(stage, cfg), f"perception.{stage}: the {cfg.name!r} backend")
    ctx = ctx or BuildContext()
    if ctx.create is None:
        ctx = dataclasses.replace(ctx, create=lambda sub_stage, sub_cfg: create(sub_stage, sub_cfg, ctx))
    obj = s.factory(cfg, ctx)
    protocol = STAGE_PROTOCOLS[stage]
    if not isinstance(obj, protocol):
        raise TypeError(f"the {stage} backend {cfg.name!r} built a {type(obj).__name__}, which lacks the "
                        f"{protocol.__name__} methods")
    return obj
