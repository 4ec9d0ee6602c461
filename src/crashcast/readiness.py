"""What can run here, now, without downloading anything: the one answer `crashcast doctor`,
`crashcast weights` and `--backend auto` read (`auto_backend`, the one function here that may
download: the `fast` preset's weights on first use when online).

It sits above both registries and asks them: each perception stage's backend (its packages and
weight files as functions of its config, composite backends included) and, for the presets that
define a `vlm` section (paper-zero-shot, paper-baseline, paper-enhanced), the vision-language risk
model's (torch, transformers, peft for the fine-tuned modes; the Qwen2.5-VL weights). Files are
found by `crashcast.runtime.weights`, packages by `crashcast.runtime.packages`; neither of those
knows a backend or a preset.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

import yaml

from crashcast.config import CrashcastConfig, load_config, preset_names
from crashcast.errors import ConfigError
from crashcast.perception import registry
from crashcast.risk import models as risk_models
from crashcast.runtime import packages
from crashcast.runtime import weights as W
from crashcast.runtime.context import weights_dir_for
from crashcast.runtime.packages import install_hint
from crashcast.runtime.store import read_text_bounded
from crashcast.runtime.weights import WeightFile, locate, target
from crashcast.settings import parse_yaml

log = logging.getLogger(__name__)

#: the presets `--backend auto` tries, best first (names that do not exist are skipped)
AUTO_CANDIDATES = ("paper", "fast", "classic")

#: the preset whose weights `--backend auto` downloads on first use when online (about 105 MB); the
#: paper preset's (gigabytes) stay an explicit `crashcast weights download paper`
FETCH_PRESET = "fast"


@dataclass(frozen=True)
class WeightStatus:
    """One weight file a stage's backend needs, and whether it is on disk."""

    stage: str
    backend: str
    file: WeightFile
    path: Path | None  # where it is now, None when missing
    target: Path  # where it would be put

    @property
    def present(self) -> bool:
        return self.path is not None


def vlm_kind(cfg: CrashcastConfig) -> str:
    """The risk model a config's `vlm` section describes (vlm-zero-shot, vlm-baseline, vlm-enhanced)."""
    return f"vlm-{cfg.vlm.mode}"


def required(cfg: CrashcastConfig, vlm: bool = False) -> list[tuple[str, str, WeightFile]]:
    """(stage, backend name, weight file) for every weight file the config's stages need; with `vlm`,
    also the vision-language model's (stage `vlm`)."""
    out = []
    for stage in registry.STAGES:
        stage_cfg = getattr(cfg.perception, stage)
        out += [(stage, stage_cfg.name, wf) for wf in registry.weights(stage, stage_cfg)]
    if vlm:
        out += [("vlm", vlm_kind(cfg), wf) for wf in risk_models.weights(vlm_kind(cfg), cfg.vlm)]
    return out


def requires(cfg: CrashcastConfig, vlm: bool = False) -> list[str]:
    """The packages (import names) the config's stages need; with `vlm`, the VLM's too."""
    out: list[str] = []
    for stage in registry.STAGES:
        out += registry.requires(stage, getattr(cfg.perception, stage))
    if vlm:
        out += risk_models.requires(vlm_kind(cfg), cfg.vlm)
    return list(dict.fromkeys(out))


def weight_status(cfg: CrashcastConfig, weights_dir: str | Path | None = None, vlm: bool = False) -> list[WeightStatus]:
    """Every weight file the config needs (with `vlm`, the VLM's too), located on disk (no network call)."""
    d = weights_dir_for(cfg.runtime, weights_dir)
    return [WeightStatus(stage, name, wf, locate(wf, d), target(wf, d)) for stage, name, wf in required(cfg, vlm)]


def _preset_data(preset: str | Path) -> dict:
    path = Path(preset)
    if not path.is_file() and str(preset) in preset_names():
        path = Path(str(resources.files("crashcast.configs") / f"{preset}.yaml"))
    try:
        data = parse_yaml(read_text_bounded(path, what="config file")) or {}
    except (OSError, ValueError, yaml.YAMLError):
        return {}
    return data if isinstance(data, dict) else {}


def is_vlm_preset(preset: str | Path) -> bool:
    """Whether a preset only sets the VLM risk model (a `vlm` section and no `perception`): not a
    perception preset for `--backend`, whose perception would silently be the classic one."""
    data = _preset_data(preset)
    return "vlm" in data and "perception" not in data


def defines_vlm(preset: str | Path) -> bool:
    """Whether a preset (or YAML file) defines a VLM: its own `vlm` section naming the model (`mode` or
    `base_model`: the paper-zero-shot/baseline/enhanced presets): only then do the VLM's packages and
    weights belong to it. A perception preset may hold a `vlm` section choosing the prompt only (the
    paper preset's `prompt_template`), which loads no VLM."""
    vlm = _preset_data(preset).get("vlm")
    return isinstance(vlm, dict) and bool({"mode", "base_model"} & set(vlm))


@dataclass
class PresetStatus:
    """Whether a preset can run here without downloading anything, and what it lacks."""

    name: str
    missing_packages: list[str] = field(default_factory=list)
    weights: list[WeightStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the config does not load; a package fails to import
    weights_dir: Path | None = None
    config_error: str | None = None  # the config (with the overrides) does not load: why

    @property
    def missing_weights(self) -> list[WeightStatus]:
        return [w for w in self.weights if not w.present]

    @property
    def ready(self) -> bool:
        return not (self.missing_packages or self.missing_weights or self.problems)

    def why(self) -> str:
        """What stands in the way, in one line ('' when ready)."""
        parts = list(self.problems)
        if self.missing_packages:
            parts.append(f"needs {', '.join(self.missing_packages)} (not installed)")
        if self.missing_weights:
            names = list(dict.fromkeys(w.file.name for w in self.missing_weights))
            parts.append(f"weights not on disk: {', '.join(names)}"
                         + (f" (weights folder {self.weights_dir})" if self.weights_dir else ""))
        return "; ".join(parts)

    def hint(self) -> str | None:
        """The commands that would make it ready (None when ready)."""
        steps = []
        if self.missing_packages:
            steps.append(install_hint(self.missing_packages))
        if any("torchvision" in p for p in self.problems):
            steps.append("install the torchvision built for your torch (see `crashcast doctor` and docs/INSTALL.md)")
        if self.missing_weights:
            steps.append(f"`crashcast weights download {self.name}` (or `crashcast weights list --preset {self.name}` "
                         "to fetch them by hand)")
        return "; then ".join(steps) or None


def preset_status(name: str | Path, weights_dir: str | Path | None = None, *, check_imports: bool = True,
                  overrides: list[str] | None = None) -> PresetStatus:
    """Whether the preset `name` (or a config YAML), with the config `overrides` (`--set a.b=v`)
    applied, can run here: its backends' packages installed (a preset with a `vlm` section: the VLM's
    too), its weights on disk (see `runtime.weights.locate`), and (check_imports) torchvision
    importable when something needs it. The torchvision check spawns a Python process (seconds), so
    it runs only for a preset nothing else stops (packages installed, weights on disk), or when its
    cached answer is already known. Never downloads or touches the network."""
    status = PresetStatus(str(name), weights_dir=Path(weights_dir).expanduser() if weights_dir else None)
    try:
        cfg = load_config(name, overrides)
    except ConfigError as e:
        status.problems.append(str(e))
        status.config_error = str(e)
        return status
    vlm = defines_vlm(name)
    status.weights_dir = weights_dir_for(cfg.runtime, weights_dir)
    needed: list[str] = []
    try:
        needed = requires(cfg, vlm)
        status.weights = weight_status(cfg, weights_dir, vlm)
    except Exception as e:  # a backend's requires/weights function failed: the preset cannot be judged ready
        status.problems.append(f"listing what it needs failed: {type(e).__name__}: {e}")
    status.missing_packages = packages.missing(needed)
    blocked = bool(status.missing_packages or status.missing_weights or status.problems)
    if check_imports and packages.TORCHVISION_USERS & set(needed) and not status.missing_packages \
            and (not blocked or packages.torchvision_checked()):
        problem = packages.torchvision_problem()
        if problem:
            status.problems.append(f"torchvision does not import: {problem}")
    return status


def _exists(preset: str) -> bool:
    return preset in preset_names() or Path(preset).expanduser().is_file()


def choose_backend(candidates: Iterable[str | Path] = AUTO_CANDIDATES, weights_dir: str | Path | None = None,
                   overrides: list[str] | None = None) -> tuple[str, str, str | None]:
    """(preset, reason, hint): the first candidate whose packages are installed and whose weights are
    already on disk (candidates that do not exist are skipped; nothing is downloaded). `overrides`
    are the run's `--set` overrides, applied to every candidate as the run will apply them to the
    one chosen (`--set runtime.weights_dir=...`, another checkpoint); a candidate they do not fit
    is not ready. `reason` says why it was chosen, `hint` how to make the better ones that were
    passed over usable (None when the first one was taken)."""
    candidates = list(candidates)
    passed: list[PresetStatus] = []
    for c in candidates:
        if not _exists(str(c)):
            continue
        st = preset_status(c, weights_dir, overrides=overrides)
        if st.ready:
            if not passed:
                return st.name, f"{st.name}: its packages are installed and its weights are on disk", None
            reason = f"{st.name}, because " + "; ".join(f"{p.name} is not ready ({p.why()})" for p in passed)
            best = passed[0]
            return st.name, reason, f"to use {best.name}: {best.hint()}"
        passed.append(st)
    if not passed:
        raise ConfigError(f"--backend auto: none of the presets {', '.join(map(str, candidates))} exists")
    if overrides and all(p.config_error for p in passed):  # the overrides fit none: say so once
        raise ConfigError(f"--set {' --set '.join(overrides)}: fits none of the presets "
                          f"{', '.join(p.name for p in passed)} (--backend auto tries them); "
                          f"with the last: {passed[-1].config_error}")
    raise ConfigError("--backend auto: no preset can run here: "
                      + "; ".join(f"{p.name}: {p.why()}" for p in passed))


def _mb(files: Iterable[WeightFile]) -> str:
    total = sum(f.size_mb or 0.0 for f in {(f.name, f.source): f for f in files}.values())
    return f"{total / 1000:.1f} GB" if total >= 1000 else f"{total:.0f} MB"


def _how_to_get(st: PresetStatus) -> str:
    """A short phrase: what would make the preset `st` usable."""
    if st.missing_packages:
        return f"{st.name} needs {', '.join(st.missing_packages)} (`crashcast doctor` says how)"
    if st.problems or not st.missing_weights:
        return f"{st.name} does not run here (`crashcast doctor` says why)"
    return f"`crashcast weights download {st.name}` for {st.name}, {_mb(w.file for w in st.missing_weights)}"


@dataclass(frozen=True)
class AutoChoice:
    """What `--backend auto` runs: the preset, one short line for the log (what it is and how to get a
    better one), the full reason and hint (`choose_backend`'s), and the files downloaded on the way."""

    preset: str
    line: str
    reason: str
    hint: str | None = None
    downloaded: tuple[Path, ...] = ()


def auto_backend(weights_dir: str | Path | None = None, overrides: list[str] | None = None, *,
                 offline: bool | None = None, candidates: Iterable[str | Path] = AUTO_CANDIDATES,
                 fetch: str = FETCH_PRESET, progress: bool = True) -> AutoChoice:
    """`--backend auto`: the best candidate ready here (`choose_backend`); when that is worse than
    `fetch` (the fast preset) and all `fetch` lacks is weights, download them once, with a progress
    bar, into the libraries' caches and take it. Nothing is downloaded when `offline` (None: the
    environment, CRASHCAST_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), when a weights folder
    is set (`--weights-dir`, runtime.weights_dir, $CRASHCAST_WEIGHTS_DIR: loaded offline), or when
    the hosts cannot be reached; then, or when the download fails (nothing partial is kept; the next
    run tries again), the weight-free choice stands and the line says why in a few words."""
    candidates = [str(c) for c in candidates]
    preset, reason, hint = choose_backend(candidates, weights_dir, overrides)
    if preset == candidates[0] or fetch not in candidates or candidates.index(preset) <= candidates.index(fetch):
        if hint is None:
            return AutoChoice(preset, f"perception: {preset} (its weights are on disk)", reason)
        best = preset_status(candidates[0], weights_dir, overrides=overrides)
        return AutoChoice(preset, f"perception: {preset} ({_how_to_get(best)})", reason, hint)
    st = preset_status(fetch, weights_dir, overrides=overrides)  # the torchvision check: choose_backend's answer
    what = "weight-free" if preset == "classic" else preset

    def stay(why: str) -> AutoChoice:
        return AutoChoice(preset, f"perception: {preset} ({what}; {why})", reason, hint)

    if st.missing_packages or st.problems or not st.missing_weights:
        return stay(_how_to_get(st))
    files = list({(w.file.name, w.file.source): w.file for w in st.missing_weights}.values())
    size = _mb(files)
    if st.weights_dir is not None:
        return stay(f"the weights folder has no {fetch} weights: `crashcast weights download {fetch}` puts them there")
    if W.offline() if offline is None else offline:
        return stay(f"offline; `crashcast weights download {fetch}` for better, {size}")
    if not W.reachable(files):
        return stay(f"no network to fetch the {fetch} preset's weights, {size}")
    log.info("--backend auto: downloading the %s preset's weights once (%s; --offline skips this)", fetch, size)
    try:
        got = W.download(files, None, offline_only=offline, progress=progress)
    except Exception as e:  # network, HTTP, disk: the weight-free choice stands, the next run tries again
        log.debug("downloading the %s weights failed", fetch, exc_info=True)
        why = (e.reasons[0] if isinstance(e, W.WeightsUnavailable) and e.reasons else
               (str(e).splitlines() or [type(e).__name__])[0])
        why = why if len(why) <= 70 else why[:67].rsplit(" ", 1)[0] + "..."
        return stay(f"the download failed: {why}; the next run retries")
    preset, reason, hint = choose_backend(candidates, weights_dir, overrides)
    if preset != fetch:
        return AutoChoice(preset, f"perception: {preset} ({fetch}'s weights were fetched, but {fetch} is not ready: "
                          "`crashcast doctor` says why)", reason, hint, tuple(got))
    return AutoChoice(preset, f"perception: {fetch} (its weights, {size}, were downloaded just now)", reason, hint,
                      tuple(got))
