"""Model weights: where each one is looked for, offline first; what a preset needs; whether it can run here.

`resolve(name_or_path, weights_dir)`: an existing path is used as is; with a weights folder
(`--weights-dir`, `runtime.weights_dir` or $CRASHCAST_WEIGHTS_DIR) a hub id `org/name` or a file
name must be inside it (`<dir>/org/name`, `<dir>/name`), and nothing is downloaded; without one
the name goes to the library (Hugging Face hub cache, ultralytics), which may download it.

The rest answers "can this preset run here, now, without downloading anything?" for `crashcast
doctor`, `crashcast weights` and `--backend auto`: `required(cfg)` lists the weight files every stage
of a config needs (each backend's registered `weights` function), `locate` finds one on disk (the
weights folder when one is set, since that is the only place `resolve` then loads from; else the
Hugging Face cache, ultralytics' weights folder (CLIP: its `clip/` subfolder), torch's hub cache or
the working directory) without a network call, `preset_status` adds the missing Python packages, and
`choose_backend` picks the best preset that is ready. `download` is the only function here that
touches the network, and with none (or HF_HUB_OFFLINE=1) it says what to fetch, from where, its size
and licence, and where to put it.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

from crashcast.errors import ConfigError, ModelError
from crashcast.runtime.devices import WEIGHTS_ENV

log = logging.getLogger(__name__)

#: `weights: random:<arch>` builds the backend's architecture with random weights: no file needed
RANDOM_PREFIX = "random:"

#: the presets `--backend auto` tries, best first (names that do not exist are skipped)
AUTO_CANDIDATES = ("paper", "fast", "classic")

#: packages whose import loads torchvision's compiled operators (the CPU/CUDA mismatch breaks them)
_TORCHVISION_USERS = frozenset({"torchvision", "ultralytics", "transformers"})

#: where a weights folder is suggested in messages when none is set
SUGGESTED_DIR = Path("~/crashcast-weights")

#: the source of CLIP checkpoints as ultralytics reads them (`ultralytics.nn.text_model.CLIP` loads
#: `clip.load(size, download_root=WEIGHTS_DIR / "clip")`)
ULTRALYTICS_CLIP = "ultralytics-clip"
#: ultralytics' default `weights_dir` before its settings file exists (a pip install, not a git checkout):
#: relative, so inside the working directory
ULTRALYTICS_DEFAULT_WEIGHTS = Path("weights")


def is_random(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


@dataclass(frozen=True)
class WeightFile:
    """One set of weights a backend's config needs.

    name: what the config names (a hub id like `facebook/sam2.1-hiera-large`, or a file name like
    `yolov8x.pt`); source: `huggingface` (a hub repository: `files` lists the files needed, empty for
    the whole snapshot), `ultralytics` (an asset ultralytics downloads by name), `ultralytics-clip`
    (a CLIP checkpoint fetched from `url`, which ultralytics' text model reads from
    `<ultralytics weights folder>/clip/`), `url` (a file fetched from `url` into torch's hub cache) or
    `local` (a path nobody can fetch); size_mb: approximate download size; licence: the weights'
    licence (SPDX id); url: where to fetch it by hand."""

    name: str
    source: str
    licence: str
    size_mb: float | None = None
    url: str | None = None
    files: tuple[str, ...] = ()

    @property
    def fetch_url(self) -> str:
        """Where a person fetches it by hand (the registered url, else the hub page)."""
        if self.url:
            return self.url
        if self.source == "huggingface":
            return f"https://huggingface.co/{self.name}"
        if self.source == "ultralytics":
            return f"https://github.com/ultralytics/assets/releases (asset {self.name})"
        return self.name


def candidates(name: str, weights_dir: Path) -> list[Path]:
    """The places inside `weights_dir` where `name` may be."""
    out = [weights_dir / name]
    if "/" in name:
        out += [weights_dir / name.replace("/", "--"), weights_dir / name.rsplit("/", 1)[1]]
    return out


def resolve(name_or_path: str, weights_dir: Path | None = None) -> str:
    """The local path or library name to load `name_or_path` from (see the module docstring)."""
    p = Path(name_or_path).expanduser()
    if p.exists():
        return str(p)
    if weights_dir is None:
        return name_or_path
    for c in candidates(name_or_path, weights_dir):
        if c.exists():
            return str(c)
    raise ConfigError(f"{name_or_path}: not in the weights folder {weights_dir} (looked for "
                      f"{', '.join(str(c) for c in candidates(name_or_path, weights_dir))}); "
                      "`crashcast weights list` says what to fetch and where to put it")


# ----------------------------------------------------------------------------- where files live


def weights_dir_for(cfg: Any = None, weights_dir: str | Path | None = None) -> Path | None:
    """The weights folder in force: `--weights-dir`, else the config's `runtime.weights_dir`, else
    $CRASHCAST_WEIGHTS_DIR, else None (the libraries' own caches)."""
    d = weights_dir or (cfg.runtime.weights_dir if cfg is not None else None) or os.environ.get(WEIGHTS_ENV)
    return Path(d).expanduser() if d else None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache, read from the environment now (huggingface_hub reads it once, at
    import): HF_HUB_CACHE, else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub."""
    for var in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if os.environ.get(var):
            return Path(os.environ[var]).expanduser()
    home = os.environ.get("HF_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "huggingface"
    return Path(home).expanduser() / "hub"


def ultralytics_weights_dir() -> Path | None:
    """ultralytics' `weights_dir` setting, read from its settings.json (importing ultralytics would
    import torch and probe the network)."""
    base = os.environ.get("YOLO_CONFIG_DIR")
    root = Path(base).expanduser() if base else Path(os.environ.get("XDG_CONFIG_HOME") or "~/.config").expanduser()
    try:
        d = json.loads((root / "Ultralytics" / "settings.json").read_text(encoding="utf-8")).get("weights_dir")
    except (OSError, ValueError, AttributeError):
        return None
    return Path(d).expanduser() if isinstance(d, str) and d else None


def ultralytics_clip_dir() -> Path:
    """Where ultralytics' YOLO-World text model reads (and downloads) CLIP checkpoints:
    `<weights_dir>/clip` (ultralytics/nn/text_model.py), with ultralytics' default weights folder
    when its settings file does not exist yet."""
    d = ultralytics_weights_dir() or ULTRALYTICS_DEFAULT_WEIGHTS
    return (d if d.is_absolute() else Path.cwd() / d) / "clip"


def torch_hub_checkpoints() -> Path:
    """torch.hub's checkpoint cache (where torchvision's weights land): $TORCH_HOME/hub/checkpoints."""
    home = os.environ.get("TORCH_HOME") or Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache") / "torch"
    return Path(home).expanduser() / "hub" / "checkpoints"


def _url_file_name(wf: WeightFile) -> str:
    return Path(wf.url.split("?", 1)[0]).name if wf.url and wf.source == "url" else Path(wf.name).name


def _is_glob(pattern: str) -> bool:
    return any(c in pattern for c in "*?[")


def _complete(folder: Path, files: tuple[str, ...]) -> bool:
    """A downloaded hub folder: every listed file inside it (a glob pattern such as `*.json`: at least
    one match, as `snapshot_download(allow_patterns=...)` fetches them), or (none listed) any file."""
    if not folder.is_dir():
        return False
    if files:
        return all(any(p.is_file() for p in folder.glob(f)) if _is_glob(f) else (folder / f).is_file() for f in files)
    return any(p.is_file() for p in folder.rglob("*"))


def _hf_cached(wf: WeightFile, cache: Path) -> Path | None:
    """The snapshot folder holding `wf` in the hub cache `cache`, or None; no network call."""
    repo = cache / ("models--" + wf.name.replace("/", "--"))
    if wf.files and not any(map(_is_glob, wf.files)) and importlib.util.find_spec("huggingface_hub") is not None:
        from huggingface_hub import try_to_load_from_cache

        paths = [try_to_load_from_cache(wf.name, f, cache_dir=cache) for f in wf.files]
        if all(isinstance(p, str) for p in paths):  # the snapshot folder holding the first file
            return Path(paths[0]).parents[len(Path(wf.files[0]).parts) - 1]
        return None
    snap = _snapshot(repo)  # the same layout, read directly (globs, whole snapshots, no huggingface_hub)
    return snap if snap is not None and _complete(snap, wf.files) else None


def _snapshot(repo: Path) -> Path | None:
    """The snapshot `refs/main` points to in a hub-cache repository folder."""
    try:
        rev = (repo / "refs" / "main").read_text(encoding="utf-8").strip()
    except OSError:
        return None
    snap = repo / "snapshots" / rev
    return snap if snap.is_dir() else None


def locate(wf: WeightFile, weights_dir: Path | None = None) -> Path | None:
    """Where `wf` is on disk now, or None: an existing path as is (as `resolve` takes it); then, with a
    weights folder, only that folder (the only place `resolve` loads from then); without one, the
    place its library loads it from."""
    p = Path(wf.name).expanduser()
    if p.exists():  # a path, or a file in the working directory: `resolve` and the libraries use it as is
        return p.resolve()
    if weights_dir is not None:
        for c in candidates(wf.name, weights_dir):
            if (c.is_dir() and wf.source == "huggingface" and _complete(c, wf.files)) or c.is_file():
                return c
        return None
    if wf.source == "huggingface":
        return _hf_cached(wf, hf_cache_dir())
    if wf.source == "ultralytics":
        d = ultralytics_weights_dir()
        return d / wf.name if d is not None and (d / wf.name).is_file() else None
    if wf.source == ULTRALYTICS_CLIP:
        f = ultralytics_clip_dir() / wf.name
        return f if f.is_file() else None
    f = torch_hub_checkpoints() / _url_file_name(wf)
    return f if f.is_file() else None


def target(wf: WeightFile, weights_dir: Path | None = None) -> Path:
    """Where `download` puts `wf` (and where a person copies it): `<weights folder>/<name>` (a hub
    id is a folder `<dir>/org/name`), else the library's cache."""
    if weights_dir is not None:
        return weights_dir / wf.name
    if wf.source == "huggingface":
        return hf_cache_dir() / ("models--" + wf.name.replace("/", "--"))
    if wf.source == "ultralytics":
        return (ultralytics_weights_dir() or Path.cwd()) / wf.name
    if wf.source == ULTRALYTICS_CLIP:
        return ultralytics_clip_dir() / wf.name
    return torch_hub_checkpoints() / _url_file_name(wf)


def size_on_disk_mb(path: Path | None) -> float | None:
    """Megabytes of a file, or of the files under a folder (hub-cache symlinks followed)."""
    if path is None:
        return None
    try:
        if path.is_file():
            return path.stat().st_size / 1e6
        return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    except OSError:
        return None


# ----------------------------------------------------------------------------- what a config needs


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


def required(cfg: Any, vlm: bool = False) -> list[tuple[str, str, WeightFile]]:
    """(stage, backend name, weight file) for every weight file the config's stages need; with `vlm`,
    also the vision-language model's (`cfg.vlm.base_model`; perception readiness never needs it)."""
    from crashcast.perception import registry

    out = []
    for stage in registry.STAGES:
        stage_cfg = getattr(cfg.perception, stage)
        s = registry.spec(stage, stage_cfg.name)
        if s.weights is not None:
            out += [(stage, stage_cfg.name, wf) for wf in s.weights(stage_cfg) or []]
    if vlm:
        from crashcast.risk.vlm import vlm_weights

        out += [("vlm", "qwen2.5-vl", wf) for wf in vlm_weights(cfg.vlm)]
    return out


def weight_status(cfg: Any, weights_dir: str | Path | None = None, vlm: bool = False) -> list[WeightStatus]:
    """Every weight file the config needs (with `vlm`, the VLM's too), located on disk (no network call)."""
    d = weights_dir_for(cfg, weights_dir)
    return [WeightStatus(stage, name, wf, locate(wf, d), target(wf, d)) for stage, name, wf in required(cfg, vlm)]


def defines_vlm(preset: str | Path) -> bool:
    """Whether a preset (or YAML file) has its own `vlm` section (the paper-zero-shot/baseline/enhanced
    presets): only then do its VLM weights belong to it."""
    import yaml

    from crashcast.config import preset_names

    path = Path(preset)
    if not path.is_file() and str(preset) in preset_names():
        from importlib import resources

        path = Path(str(resources.files("crashcast.configs") / f"{preset}.yaml"))
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(data, dict) and "vlm" in data


# ----------------------------------------------------------------------------- readiness


@lru_cache(maxsize=1)
def torchvision_problem() -> str | None:
    """Why `import torchvision` fails here (e.g. a CUDA-linked torchvision with a CPU-only torch:
    "operator torchvision::nms does not exist"), or None when it imports or is not installed.
    Checked in a subprocess, so a failing import cannot leave this process half-initialised."""
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is None:
        return None
    try:
        r = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True,
                           timeout=300, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"could not check `import torchvision` ({e})"
    if r.returncode == 0:
        return None
    lines = [ln for ln in r.stderr.strip().splitlines() if ln.strip()]
    return lines[-1].strip() if lines else f"`import torchvision` exited with status {r.returncode}"


@dataclass
class PresetStatus:
    """Whether a preset can run here without downloading anything, and what it lacks."""

    name: str
    missing_packages: list[str] = field(default_factory=list)
    weights: list[WeightStatus] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # the config does not load; a package fails to import
    weights_dir: Path | None = None

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


def install_hint(packages: Iterable[str]) -> str:
    """How to install missing packages: torch and torchvision first (the build for this machine),
    then the extras that hold the rest."""
    packages = list(dict.fromkeys(packages))
    torchlike = [p for p in packages if p in ("torch", "torchvision")]
    extras = extras_map()
    wanted: list[str] = []
    loose: list[str] = []
    for p in packages:
        if p in torchlike:
            continue
        found = [e for e in ("vision", "vlm", "distributed") if _norm(p) in {_norm(d) for d in extras.get(e, [])}]
        if found:
            wanted += [x for x in found[:1] if x not in wanted]
        else:
            loose.append(p)
    steps = []
    if torchlike:
        steps.append("install torch and torchvision together, the build for this machine (docs/INSTALL.md)")
    if wanted:
        steps.append(f'python -m pip install -e ".[{",".join(wanted)}]"')
    if loose:
        steps.append(f"python -m pip install {' '.join(loose)}")
    return "; then ".join(steps)


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


@lru_cache(maxsize=1)
def extras_map() -> dict[str, list[str]]:
    """crashcast's extras and the distributions each installs (self-references expanded), from the
    installed package's metadata ({} when crashcast is not installed as a distribution)."""
    import importlib.metadata as md

    try:
        reqs = md.requires("crashcast") or []
    except md.PackageNotFoundError:
        return {}
    raw: dict[str, list[str]] = {}
    for r in reqs:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+)(\[[^\]]*\])?[^;]*;\s*.*extra\s*==\s*['\"]([^'\"]+)['\"]", r)
        if m:
            dist = m.group(1) + (m.group(2) or "")
            raw.setdefault(m.group(3), []).append(dist)

    def expand(extra: str, seen: frozenset[str]) -> list[str]:
        out: list[str] = []
        for d in raw.get(extra, []):
            name, _, sub = d.partition("[")
            if _norm(name) == "crashcast" and sub:
                for e in sub.rstrip("]").split(","):
                    if e.strip() not in seen:
                        out += expand(e.strip(), seen | {e.strip()})
            else:
                out.append(name)
        return list(dict.fromkeys(out))

    return {e: expand(e, frozenset({e})) for e in raw}


def _load(preset: str | Path, overrides: list[str] | None = None) -> Any:
    from crashcast.config import load_config

    return load_config(preset, overrides)


def _torchvision_checked() -> bool:
    """Whether `torchvision_problem` has run in this process already (its answer is cached)."""
    info = getattr(torchvision_problem, "cache_info", None)
    return bool(info is not None and info().currsize)


def preset_status(name: str | Path, weights_dir: str | Path | None = None, *, check_imports: bool = True,
                  overrides: list[str] | None = None) -> PresetStatus:
    """Whether the preset `name` (or a config YAML), with the config `overrides` (`--set a.b=v`)
    applied, can run here: its backends' packages installed, its weights on disk (see `locate`), and
    (check_imports) torchvision importable when a backend needs it. The torchvision check spawns a
    Python process (seconds), so it runs only for a preset nothing else stops (packages installed,
    weights on disk), or when its cached answer is already known. Never downloads or touches the
    network."""
    from crashcast.perception import registry

    status = PresetStatus(str(name), weights_dir=Path(weights_dir).expanduser() if weights_dir else None)
    try:
        cfg = _load(name, overrides)
    except ConfigError as e:
        status.problems.append(str(e))
        return status
    status.weights_dir = weights_dir_for(cfg, weights_dir)
    requires: list[str] = []
    for stage in registry.STAGES:
        s = registry.spec(stage, getattr(cfg.perception, stage).name)
        requires += s.requires
        status.missing_packages += [p for p in s.missing_packages() if p not in status.missing_packages]
    try:
        status.weights = weight_status(cfg, weights_dir)
    except Exception as e:  # a backend's weights function failed: the preset cannot be judged ready
        status.problems.append(f"listing its weights failed: {type(e).__name__}: {e}")
    blocked = bool(status.missing_packages or status.missing_weights or status.problems)
    if check_imports and _TORCHVISION_USERS & set(requires) and not status.missing_packages \
            and (not blocked or _torchvision_checked()):
        problem = torchvision_problem()
        if problem:
            status.problems.append(f"torchvision does not import: {problem}")
    return status


def _exists(preset: str) -> bool:
    from crashcast.config import preset_names

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
    raise ConfigError("--backend auto: no preset can run here: "
                      + "; ".join(f"{p.name}: {p.why()}" for p in passed))


# ----------------------------------------------------------------------------- download


class WeightsUnavailable(ModelError):
    """Weights could not be downloaded; the message says what to fetch by hand and where to put it."""

    def __init__(self, message: str, files: list[WeightFile]) -> None:
        super().__init__(message)
        self.files = files


def offline() -> bool:
    """HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set: make no network call (read now, not at import)."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE")
               for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def fetch_instructions(files: Iterable[WeightFile], weights_dir: Path | None = None) -> str:
    """For each file: what it is, its size and licence, where to fetch it and where to put it."""
    d = weights_dir or SUGGESTED_DIR
    lines = []
    for wf in files:
        size = f"{wf.size_mb:.0f} MB" if wf.size_mb else "size unknown"
        dest = d / wf.name
        if wf.source == "huggingface":
            globs = any(map(_is_glob, wf.files))
            listed = "".join(f' --include "{f}"' if globs else f" {f}" for f in wf.files)
            lines.append(f"  - Hugging Face repository {wf.name} ({wf.fetch_url}): {size}, licence {wf.licence}; "
                         f"`hf download {wf.name}{listed} --local-dir {dest}` puts it in place")
        else:
            lines.append(f"  - {wf.name}: {size}, licence {wf.licence}; fetch {wf.fetch_url} and put it at {dest}")
    lines.append(f"then run with --weights-dir {d} (or set runtime.weights_dir or ${WEIGHTS_ENV})")
    return "\n".join(lines)


def download(files: Iterable[WeightFile], dir: str | Path | None = None, *, offline_only: bool | None = None,
             ) -> list[Path]:
    """Fetch every file not yet on disk into the weights folder `dir` (`<dir>/<name>`; a hub id
    becomes the folder `<dir>/org/name`), or without one into its library's cache (Hugging Face hub
    cache, ultralytics' weights folder, torch's hub cache). Returns where each file is. When some
    cannot be fetched (no network, HF_HUB_OFFLINE=1, `offline_only=True`), the others are still
    fetched and WeightsUnavailable says what to fetch by hand and where to put it."""
    d = Path(dir).expanduser() if dir is not None else None
    no_net = offline() if offline_only is None else offline_only
    unique = list({(wf.name, wf.source): wf for wf in files}.values())
    paths: list[Path] = []
    failed: list[tuple[WeightFile, str]] = []
    for wf in unique:
        found = locate(wf, d)
        if found is not None:
            log.info("%s: already at %s", wf.name, found)
            paths.append(found)
            continue
        if no_net:
            failed.append((wf, "offline (HF_HUB_OFFLINE)"))
            continue
        try:
            paths.append(_fetch(wf, d))
        except Exception as e:  # network, HTTP, disk: all end in the same by-hand instructions
            log.debug("downloading %s failed", wf.name, exc_info=True)
            failed.append((wf, f"{type(e).__name__}: {e}".splitlines()[0][:200]))
    if failed:
        why = "; ".join(dict.fromkeys(reason for _, reason in failed))
        raise WeightsUnavailable(f"{len(failed)} weight file(s) could not be downloaded here ({why}). Fetch them on a "
                                 f"machine with internet and copy them over:\n"
                                 + fetch_instructions([wf for wf, _ in failed], d), [wf for wf, _ in failed])
    return paths


def _expected_sha256(wf: WeightFile) -> str | None:
    """The SHA-256 a CLIP checkpoint's URL names (its parent folder), which the `clip` package checks
    before using a file in its download folder; None for other files."""
    if wf.source != ULTRALYTICS_CLIP or not wf.url:
        return None
    parts = wf.url.split("?", 1)[0].rstrip("/").split("/")
    return parts[-2].lower() if len(parts) >= 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[-2]) else None


def _fetch(wf: WeightFile, d: Path | None) -> Path:
    """Download one file through its library; the place it lands is checked with `locate`."""
    if wf.source == ULTRALYTICS_CLIP and d is None and importlib.util.find_spec("ultralytics") is not None:
        try:  # ultralytics writes its settings file on import: the weights folder it will read CLIP from
            import ultralytics.utils  # noqa: F401
        except Exception:  # a broken install: its default folder, as `target` says
            log.debug("importing ultralytics failed", exc_info=True)
    dest = target(wf, d)
    if wf.source == "huggingface":
        from huggingface_hub import snapshot_download

        patterns = list(wf.files) or None
        if d is not None:
            snapshot_download(wf.name, local_dir=dest, allow_patterns=patterns)
        else:
            snapshot_download(wf.name, cache_dir=hf_cache_dir(), allow_patterns=patterns)
    elif wf.source == "ultralytics":
        from ultralytics.utils.downloads import attempt_download_asset

        dest.parent.mkdir(parents=True, exist_ok=True)
        attempt_download_asset(str(dest))
    else:
        if not wf.url:
            raise ModelError(f"{wf.name}: no url to download it from")
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        digest = hashlib.sha256()
        with urllib.request.urlopen(wf.url, timeout=60) as r, part.open("wb") as f:
            while chunk := r.read(1 << 20):
                f.write(chunk)
                digest.update(chunk)
        expected = _expected_sha256(wf)
        if expected is not None and digest.hexdigest() != expected:
            part.unlink(missing_ok=True)
            raise ModelError(f"{wf.name}: the downloaded file's SHA-256 is {digest.hexdigest()[:16]}..., not the "
                             f"{expected[:16]}... its URL names (a corrupt or different file)")
        part.replace(dest)
    found = locate(wf, d)
    if found is None:
        raise ModelError(f"{wf.name}: the download finished but the file is not at {dest}")
    return found
