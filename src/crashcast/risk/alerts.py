"""Causal alert policies: from the raw risk of each stride to the risk shown and the alert state.

A policy sees the raw risk stream one stride at a time, in order, and answers at once with
(shown risk, alert on/off): no look-ahead, so it behaves the same live as on a recorded timeline.
Each policy is a frozen dataclass (its typed settings) registered by name in `POLICIES`;
`policy.start()` gives a fresh stream with its own state, `policy.apply(raws)` runs a whole
sequence (what benchmarks/alert_policies.py does offline). `from_settings` builds one from the
config's `alert` section (`crashcast.settings.AlertConfig`).

Which policy is the default, and why, is measured in docs/ALERTS.md.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING, ClassVar

from crashcast.errors import ConfigError

if TYPE_CHECKING:
    from crashcast.settings import AlertConfig


@dataclass(frozen=True)
class AlertStep:
    """One stride's answer: the risk to show (0-1) and whether the alert is on."""

    shown: float
    alert: bool


class AlertStream:
    """A policy's running state over one video: `step(raw)` once per stride, in time order."""

    def __init__(self, policy: AlertPolicy) -> None:
        self.policy = policy
        self.history: deque[float] = deque(maxlen=policy.memory())
        self.state: dict[str, float | bool] = {}

    def step(self, raw: float) -> AlertStep:
        raw = float(raw)
        if not math.isfinite(raw):
            raise ValueError(f"raw risk {raw!r}: a risk is a finite number")
        self.history.append(raw)
        return self.policy.decide(self)


@dataclass(frozen=True)
class AlertPolicy:
    """Base of the policies: `threshold` (0-1) is the level at which the alert goes on."""

    name: ClassVar[str] = ""
    threshold: float = 0.5

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise ConfigError(f"alert policy {self.name}: {f.name}={v!r} is not a finite number")
        if not 0 <= self.threshold <= 1:
            raise ConfigError(f"alert policy {self.name}: threshold={self.threshold!r}: a probability from 0 to 1")

    def memory(self) -> int:
        """How many past raw risks (this stride's included) the policy looks at."""
        return 1

    def decide(self, s: AlertStream) -> AlertStep:
        raise NotImplementedError

    def start(self) -> AlertStream:
        return AlertStream(self)

    def apply(self, raws: Iterable[float]) -> list[AlertStep]:
        """The policy over a whole raw stream, stride by stride (the same answers as live)."""
        stream = self.start()
        return [stream.step(r) for r in raws]

    def describe(self) -> str:
        """The policy and its settings in one short phrase, e.g. `hysteresis (on 0.5, off 0.3)`."""
        params = ", ".join(f"{f.name} {getattr(self, f.name):g}" for f in fields(self) if f.name != "threshold")
        return f"{self.name} (threshold {self.threshold:g}{', ' + params if params else ''})"

    def settings(self) -> dict[str, float | int | str]:
        return {"policy": self.name, **{f.name: getattr(self, f.name) for f in fields(self)}}


def _whole(policy: AlertPolicy, name: str, lo: int, hi: int) -> None:
    v = getattr(policy, name)
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise ConfigError(f"alert policy {policy.name}: {name}={v!r}: a whole number of strides from {lo} to {hi}")


@dataclass(frozen=True)
class _Windowed(AlertPolicy):
    """A policy over the last `window` raw risks (1 to 100 strides)."""

    window: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _whole(self, "window", 1, 100)

    def memory(self) -> int:
        return self.window


POLICIES: dict[str, type[AlertPolicy]] = {}


def _register(cls: type[AlertPolicy]) -> type[AlertPolicy]:
    POLICIES[cls.name] = cls
    return cls


@_register
@dataclass(frozen=True)
class Raw(AlertPolicy):
    """No policy: shows the raw risk; alert while it is at or above the threshold."""

    name: ClassVar[str] = "none"

    def decide(self, s: AlertStream) -> AlertStep:
        r = s.history[-1]
        return AlertStep(r, r >= self.threshold)


@_register
@dataclass(frozen=True)
class Median(_Windowed):
    """The median of the last `window` strides (fewer at the start); alert while it reaches the
    threshold. crashcast's rule before issue 24 (window 3): one high stride never alerts."""

    name: ClassVar[str] = "median"
    window: int = 3

    def decide(self, s: AlertStream) -> AlertStep:
        xs = sorted(s.history)
        n = len(xs)
        m = xs[n // 2] if n % 2 else (xs[n // 2 - 1] + xs[n // 2]) / 2
        return AlertStep(m, m >= self.threshold)


@_register
@dataclass(frozen=True)
class KOfN(AlertPolicy):
    """Alert while at least `k` of the last `n` strides reach the threshold. Shown: the k-th highest
    of the last n (strides before the video counting as 0), which reaches the threshold exactly then."""

    name: ClassVar[str] = "k-of-n"
    k: int = 2
    n: int = 3

    def __post_init__(self) -> None:
        super().__post_init__()
        _whole(self, "n", 1, 100)
        _whole(self, "k", 1, self.n)

    def memory(self) -> int:
        return self.n

    def decide(self, s: AlertStream) -> AlertStep:
        xs = sorted(s.history, reverse=True)
        kth = xs[self.k - 1] if len(xs) >= self.k else 0.0
        return AlertStep(kth, kth >= self.threshold)


@_register
@dataclass(frozen=True)
class Hysteresis(AlertPolicy):
    """Shows the raw risk; the alert goes on when it reaches the threshold and stays on until it
    falls below `off` x threshold (so a risk hovering near the threshold does not flicker)."""

    name: ClassVar[str] = "hysteresis"
    off: float = 0.6

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.off <= 1:
            raise ConfigError(f"alert policy hysteresis: off={self.off!r}: the fraction of the threshold below which the "
                              "alert ends, from 0 (exclusive) to 1")

    def decide(self, s: AlertStream) -> AlertStep:
        r = s.history[-1]
        on = bool(s.state.get("on", False))
        on = r >= self.off * self.threshold if on else r >= self.threshold
        s.state["on"] = on
        return AlertStep(r, on)


@_register
@dataclass(frozen=True)
class Ema(AlertPolicy):
    """Exponential moving average: shown = alpha x raw + (1 - alpha) x the previous shown (the first
    stride: its raw risk); alert while it reaches the threshold."""

    name: ClassVar[str] = "ema"
    alpha: float = 0.5

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 < self.alpha <= 1:
            raise ConfigError(f"alert policy ema: alpha={self.alpha!r}: the newest stride's weight, from 0 (exclusive) to 1")

    def decide(self, s: AlertStream) -> AlertStep:
        r = s.history[-1]
        prev = s.state.get("ema")
        v = r if prev is None else self.alpha * r + (1 - self.alpha) * float(prev)
        s.state["ema"] = v
        return AlertStep(v, v >= self.threshold)


@_register
@dataclass(frozen=True)
class MaxOf(_Windowed):
    """The highest raw risk of the last `window` strides: alerts on the first high stride and holds
    the alert `window` - 1 strides after the risk falls."""

    name: ClassVar[str] = "max"
    window: int = 5

    def decide(self, s: AlertStream) -> AlertStep:
        m = max(s.history)
        return AlertStep(m, m >= self.threshold)


def create_policy(name: str, threshold: float = 0.5, **params: float | int) -> AlertPolicy:
    """The policy registered as `name` with these settings; ConfigError names the known ones."""
    if name not in POLICIES:
        raise ConfigError(f"alert policy {name!r}: unknown; known: {', '.join(POLICIES)}")
    cls = POLICIES[name]
    known = {f.name for f in fields(cls)} - {"threshold"}
    extra = set(params) - known
    if extra:
        raise ConfigError(f"alert policy {name}: no setting {', '.join(sorted(extra))} (it has: {', '.join(sorted(known)) or 'none'})")
    return cls(threshold=threshold, **params)


#: which field of `AlertConfig` feeds which setting of each policy
_SETTING_FIELDS: dict[str, dict[str, str]] = {
    "none": {}, "median": {"window": "median_window"}, "max": {"window": "max_window"}, "k-of-n": {"k": "k", "n": "n"},
    "hysteresis": {"off": "off_fraction"}, "ema": {"alpha": "alpha"},
}


def from_settings(cfg: AlertConfig, threshold: float, policy: str | None = None) -> AlertPolicy:
    """The policy the `alert` config section describes (`policy` overrides its name), at `threshold`."""
    name = policy or cfg.policy
    if name not in POLICIES:
        raise ConfigError(f"alert policy {name!r}: unknown; known: {', '.join(POLICIES)}")
    return create_policy(name, threshold, **{p: getattr(cfg, f) for p, f in _SETTING_FIELDS[name].items()})


def onsets(times_s: Iterable[float], alerts: Iterable[bool]) -> list[float]:
    """The times at which the alert goes from off to on (the first stride counts when it is on)."""
    out, prev = [], False
    for t, a in zip(times_s, alerts, strict=True):
        if a and not prev:
            out.append(float(t))
        prev = bool(a)
    return out


__all__ = ["POLICIES", "AlertPolicy", "AlertStep", "AlertStream", "Ema", "Hysteresis", "KOfN", "MaxOf", "Median", "Raw",
           "create_policy", "from_settings", "onsets"]
