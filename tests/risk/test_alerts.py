"""Alert policies on hand-made raw risk streams: each one's rule, stride by stride."""

from __future__ import annotations

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.errors import ConfigError
from crashcast.risk import alerts
from crashcast.risk.alerts import create_policy, from_settings, onsets

SPIKE = [0.0, 0.0, 0.96, 0.0, 0.0, 0.0, 0.0, 0.0, 0.97]  # ccd_000007's raw risk (classic, physics), crash at 3.1 s


def run(name: str, raws: list[float], threshold: float = 0.5, **params) -> tuple[list[float], list[bool]]:
    steps = create_policy(name, threshold, **params).apply(raws)
    return [s.shown for s in steps], [s.alert for s in steps]


def test_none_is_the_raw_risk_against_the_threshold() -> None:
    shown, alert = run("none", [0.2, 0.5, 0.49, 0.9])
    assert shown == [0.2, 0.5, 0.49, 0.9]
    assert alert == [False, True, False, True]


def test_median_hides_a_single_high_stride_as_before() -> None:
    """The rule before issue 24 (median of 3): one 0.96 stride between zeros never alerts."""
    shown, alert = run("median", SPIKE, window=3)
    assert not any(alert) and max(shown) == 0.0
    shown, alert = run("median", [0.0, 0.8, 0.9, 0.1], window=3)
    assert shown == pytest.approx([0.0, 0.4, 0.8, 0.8]) and alert == [False, False, True, True]
    np.testing.assert_allclose(shown, [np.median([0.0, 0.8, 0.9, 0.1][max(0, i - 2): i + 1]) for i in range(4)])


def test_k_of_n_needs_k_strides_at_the_threshold() -> None:
    raws = [0.9, 0.1, 0.1, 0.6, 0.2, 0.7, 0.1, 0.1, 0.1]
    _, alert = run("k-of-n", raws, k=2, n=3)
    # on only where 2 of the last 3 reach 0.5: index 5 (0.6, 0.2, 0.7); never for the lone 0.9
    assert alert == [False, False, False, False, False, True, False, False, False]
    shown, _ = run("k-of-n", raws, k=2, n=3)
    assert shown[5] == 0.6 and shown[0] == 0.0  # the 2nd highest of the last 3 (none before the video)
    _, alert = run("k-of-n", [0.9] * 3, k=3, n=3)
    assert alert == [False, False, True]
    with pytest.raises(ConfigError, match="k="):
        create_policy("k-of-n", 0.5, k=4, n=3)


def test_hysteresis_holds_until_the_risk_falls_below_off() -> None:
    raws = [0.1, 0.55, 0.45, 0.31, 0.29, 0.45, 0.5]
    shown, alert = run("hysteresis", raws, off=0.6)  # on at 0.5, off below 0.3
    assert shown == raws
    assert alert == [False, True, True, True, False, False, True]
    _, alert = run("hysteresis", SPIKE, off=0.6)
    assert alert[2] and not alert[3]  # a lone spike: on, then off at once (0 < 0.3)


def test_ema_lags_as_computed() -> None:
    raws = [0.0, 1.0, 1.0, 0.0]
    shown, alert = run("ema", raws, alpha=0.5)
    assert shown == pytest.approx([0.0, 0.5, 0.75, 0.375])
    assert alert == [False, True, True, False]
    shown, _ = run("ema", [0.8, 0.0], alpha=0.3)
    assert shown == pytest.approx([0.8, 0.56])  # starts at the first raw risk, then 0.3 x new + 0.7 x old


def test_max_holds_a_spike_for_the_window() -> None:
    shown, alert = run("max", SPIKE, window=3)
    assert shown[2:6] == [0.96, 0.96, 0.96, 0.0]
    assert alert[:6] == [False, False, True, True, True, False]
    assert onsets(np.arange(1, 10) * 0.5, alert) == [1.5, 4.5]


def test_streams_are_independent_and_causal() -> None:
    """A stride's answer depends only on the strides so far: the prefix of a stream gets the same answers."""
    rng = np.random.default_rng(0)
    raws = list(rng.random(40))
    for name, cls in alerts.POLICIES.items():
        policy = cls(threshold=0.5)
        whole = policy.apply(raws)
        assert policy.apply(raws[:17]) == whole[:17], name
        a, b = policy.start(), policy.start()
        a.step(0.99)
        assert b.step(0.0) == policy.apply([0.0])[0], name  # one stream's state is not another's


def test_bad_settings_and_inputs_are_refused() -> None:
    with pytest.raises(ConfigError, match="unknown; known: none, median"):
        create_policy("majority")
    with pytest.raises(ConfigError, match="no setting window"):
        create_policy("ema", 0.5, window=3)
    with pytest.raises(ConfigError, match="alpha"):
        create_policy("ema", 0.5, alpha=0.0)
    with pytest.raises(ConfigError, match="threshold"):
        create_policy("none", float("nan"))
    with pytest.raises(ValueError, match="finite"):
        create_policy("none").start().step(float("nan"))


def test_the_config_section_builds_the_policy() -> None:
    cfg = load_config("classic", ["alert.policy=k-of-n", "alert.k=3", "alert.n=5"])
    policy = from_settings(cfg.alert, 0.4)
    assert isinstance(policy, alerts.KOfN) and (policy.k, policy.n, policy.threshold) == (3, 5, 0.4)
    assert isinstance(from_settings(cfg.alert, 0.5, "median"), alerts.Median)
    with pytest.raises(ConfigError, match="k <= n"):
        load_config("classic", ["alert.k=4", "alert.n=3"])
    with pytest.raises(ConfigError, match=r"alert\.policy"):
        load_config("classic", ["alert.policy=majority"])
    with pytest.raises(ConfigError, match=r"alert\.max_window"):
        load_config("classic", ["alert.max_window=0"])
    default = from_settings(load_config("classic").alert, 0.5)
    assert isinstance(default, alerts.Hysteresis) and default.off == 0.6  # the measured default (docs/ALERTS.md)
