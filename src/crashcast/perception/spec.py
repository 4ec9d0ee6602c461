"""What a perception backend declares about itself, and what its factory is given.

A backend module declares its backend with `@backend(stage, name, ConfigClass, requires=...,
weights=...)` on its factory `factory(cfg, ctx) -> object`. The decorator only records a
`BackendSpec` on the factory: nothing is registered here, and no backend module imports the
registry (`crashcast.perception.registry`, which sits above every backend and collects the specs
of the built-in modules, as peft's `mapping.py` does for its methods).

`requires` and `weights` are functions of the backend's config (a constant tuple is accepted for
`requires`): the packages to import and the weight files to have on disk for that config. A
composite backend (the fusion of detectors) names its sub-backends with `children(cfg)`; the
registry adds theirs to its own, and its factory builds them through `ctx.create`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crashcast.runtime.context import RuntimeContext
from crashcast.settings import BackendConfig, ContextConfig, GeometryConfig, RuntimeConfig

if TYPE_CHECKING:
    from crashcast.runtime.weights import WeightFile

#: the attribute of a factory that holds its spec
SPEC_ATTR = "__crashcast_backend__"

Factory = Callable[[Any, "BuildContext"], Any]


@dataclass(frozen=True)
class BackendSpec:
    """A backend: its stage, name, config class and factory; the Python packages it needs (import
    names) and the weight files a config needs, each as a function of the config; the sub-backends
    (stage, config) a composite config holds."""

    stage: str
    name: str
    config: type[BackendConfig]
    factory: Factory
    requires: Callable[[Any], Sequence[str]] = lambda cfg: ()
    weights: Callable[[Any], Sequence[WeightFile]] = lambda cfg: ()
    children: Callable[[Any], Sequence[tuple[str, BackendConfig]]] = lambda cfg: ()


def backend(stage: str, name: str, config: type[BackendConfig] = BackendConfig, *,
            requires: Sequence[str] | Callable[[Any], Sequence[str]] = (),
            weights: Callable[[Any], Sequence[WeightFile]] | None = None,
            children: Callable[[Any], Sequence[tuple[str, BackendConfig]]] | None = None,
            ) -> Callable[[Factory], Factory]:
    """Declare `factory(cfg, ctx)` as the `stage` backend `name` (see the module docstring)."""
    if not (isinstance(config, type) and issubclass(config, BackendConfig)):
        raise TypeError(f"{stage} {name!r}: config must be a BackendConfig subclass, got {config!r}")
    fixed = tuple(requires) if not callable(requires) else None

    def deco(factory: Factory) -> Factory:
        spec = BackendSpec(stage, name, config, factory,
                           requires=(lambda cfg: fixed) if fixed is not None else requires,  # type: ignore[arg-type]
                           weights=weights or (lambda cfg: ()), children=children or (lambda cfg: ()))
        setattr(factory, SPEC_ATTR, spec)
        return factory

    return deco


@dataclass(frozen=True)
class BuildContext:
    """What a backend factory is given besides its own config: the perception section's shared
    settings (geometry, the road-motion context, frame_step; None: the defaults), the runtime (device,
    dtype, batch size, weights folder: `RuntimeContext`), and `create(stage, cfg)` to build a
    sub-backend (set by the registry)."""

    #: the perception section (`crashcast.config.PerceptionConfig`, which sits above the backends: not
    #: imported here, even for typing); only its `geometry` and `context` are read
    perception: Any = None
    runtime: RuntimeConfig | RuntimeContext = field(default_factory=RuntimeConfig)
    create: Callable[[str, BackendConfig], Any] | None = None

    @property
    def run(self) -> RuntimeContext:
        return RuntimeContext.of(self.runtime)

    @property
    def geometry(self) -> GeometryConfig:
        return self.perception.geometry if self.perception is not None else GeometryConfig()

    @property
    def road_context(self) -> ContextConfig:
        return self.perception.context if self.perception is not None else ContextConfig()

    @property
    def device(self) -> str:
        return self.run.device

    @property
    def dtype(self) -> Any:
        return self.run.dtype

    @property
    def weights_dir(self) -> Path | None:
        return self.run.weights_dir

    def weights(self, name_or_path: str) -> str:
        return self.run.weights(name_or_path)
