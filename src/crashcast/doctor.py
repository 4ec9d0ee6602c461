"""What is installed here, what can run, and why not (`crashcast doctor`, `crashcast weights`).

The doctor answers the questions an install goes wrong on, offline and without torch: which
Python, crashcast, torch (CUDA build or not, which GPU), which extras import, which presets can run
now (packages and weights on disk), and the known traps explained with their fix:
- a CPU-only torch with a CUDA-linked torchvision: `import torchvision` fails with "operator
  torchvision::nms does not exist" (checked in a subprocess, so the doctor itself never breaks);
- a torch the extras would replace: a torchvision whose required torch is not the installed one, or
  no torchvision at all (installing `[vision]` then pulls the newest, which requires a newer torch);
- opencv-python and opencv-python-headless together (they overwrite each other's `cv2`).

`preset_weights`, `weights_plan` and `download_weights` list every weight file a preset needs (hub id
or URL, size, licence, where it is or would be) and download them. This module is library code: it
collects the report (`collect`) and renders it to a rich Console it is given (`render`); the typer
commands live in `crashcast.cli`.
"""

from __future__ import annotations

import importlib.metadata as md
import importlib.util
import platform
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crashcast import readiness as R
from crashcast.runtime import packages as P
from crashcast.runtime import weights as W
from crashcast.runtime.context import weights_dir_for

#: the optional packages the doctor reports besides the extras' own (dist name -> import name)
IMPORT_NAMES = {"huggingface_hub": "huggingface_hub", "opencv-python": "cv2", "opencv-python-headless": "cv2",
                "scikit-learn": "sklearn", "pyyaml": "yaml", "xgboost-cpu": "xgboost"}

NMS_MISSING = "torchvision::nms does not exist"


@dataclass
class Trap:
    """A known install problem found here: what it is, why it happens and how to fix it."""

    title: str
    explanation: str
    fix: str


@dataclass
class TorchInfo:
    version: str | None = None  # None: torch is not installed (or does not import)
    cuda: str | None = None  # the CUDA version torch was built for; None: a CPU-only build
    gpus: list[tuple[str, float]] = field(default_factory=list)  # (name, GiB)
    mps: bool = False
    error: str | None = None  # importing torch failed
    device_error: str | None = None  # torch imported, querying its devices failed
    torchvision: str | None = None
    torchvision_requires: str | None = None  # its Requires-Dist on torch, e.g. "torch==2.13.0"


@dataclass
class DoctorReport:
    python: str
    crashcast: str
    torch: TorchInfo
    extras: dict[str, list[tuple[str, str | None]]]  # extra -> [(dist, installed version or None)]
    presets: list[R.PresetStatus]
    traps: list[Trap]
    weights_dir: Path | None


# ----------------------------------------------------------------------------- collecting


def _dist_version(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def _importable(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def _import_name(dist: str) -> str:
    return IMPORT_NAMES.get(dist.lower(), re.sub(r"[-.]+", "_", dist).lower())


def package_version(dist: str) -> str | None:
    """The installed version of a distribution whose module imports here, else None."""
    return _dist_version(dist) if _importable(_import_name(dist)) else None


def torch_info() -> TorchInfo:
    """torch's build and devices; torch is imported only when installed, and a failing import is
    reported, not raised."""
    info = TorchInfo()
    if _importable("torchvision"):
        info.torchvision = _dist_version("torchvision")
        info.torchvision_requires = _torch_requirement("torchvision")
    if not _importable("torch"):
        return info
    try:
        import torch
    except Exception as e:  # a broken install must not break the doctor
        info.error = f"{type(e).__name__}: {e}"
        info.version = _dist_version("torch")
        return info
    info.version = str(torch.__version__)
    info.cuda = torch.version.cuda
    try:
        if torch.cuda.is_available():
            for i in range(torch.cuda.device_count()):
                p = torch.cuda.get_device_properties(i)
                info.gpus.append((p.name, p.total_memory / 2**30))
        mps = getattr(torch.backends, "mps", None)
        info.mps = bool(mps is not None and mps.is_available())
    except Exception as e:
        info.device_error = f"{type(e).__name__}: {e}"
    return info


def _torch_requirement(dist: str) -> str | None:
    """`dist`'s requirement on torch from its metadata (e.g. 'torch==2.13.0'), or None."""
    try:
        reqs = md.requires(dist) or []
    except md.PackageNotFoundError:
        return None
    for r in reqs:
        m = re.match(r"^\s*torch\b\s*\(?([^;)]*)\)?\s*(;.*)?$", r)
        if m and not (m.group(2) and "extra" in m.group(2)):
            return "torch" + m.group(1).replace(" ", "")
    return None


def _satisfies(version: str, requirement: str) -> bool:
    """Whether `version` of torch meets `requirement` ('torch==2.13.0'; a local label like +cpu counts
    as the same version, as pip counts it)."""
    spec = requirement.removeprefix("torch")
    if not spec:
        return True
    try:
        from packaging.specifiers import SpecifierSet

        return SpecifierSet(spec).contains(version, prereleases=True)
    except Exception:
        return all(version.split("+")[0] == s.lstrip("=") for s in spec.split(",") if s.startswith("=="))


def extras_report() -> dict[str, list[tuple[str, str | None]]]:
    """Each extra of crashcast and its packages with their installed versions (None: missing)."""
    return {extra: [(d, package_version(d)) for d in dists] for extra, dists in P.extras_map().items()}


def find_traps(t: TorchInfo) -> list[Trap]:
    """The known install problems present here (see the module docstring)."""
    traps = []
    if t.torchvision is not None and t.version is not None:
        problem = P.torchvision_problem()
        if problem and NMS_MISSING in problem:
            build = "a CPU-only build" if t.cuda is None else f"built for CUDA {t.cuda}"
            traps.append(Trap(
                "torchvision does not match torch's build (CPU vs CUDA)",
                f"torch {t.version} is {build}, and torchvision {t.torchvision} was built for another one (PyPI's Linux "
                f"wheels are CUDA builds): its compiled operators do not load, so `import torchvision` fails with "
                f"'{problem}'; ultralytics and transformers' image processors import it and fail too.",
                "reinstall torchvision from the index made for your torch's build (pytorch.org): `python -m pip install "
                f"--force-reinstall --no-deps torchvision=={t.torchvision} --index-url "
                f"https://download.pytorch.org/whl/{_index_tag(t.cuda)}`; docs/INSTALL.md."))
        elif problem:
            traps.append(Trap("torchvision does not import", problem,
                              "reinstall torchvision built for your torch (docs/INSTALL.md)"))
    if t.version is not None and t.torchvision is not None and t.torchvision_requires \
            and not _satisfies(t.version, t.torchvision_requires):
        traps.append(Trap(
            "torchvision asks for another torch",
            f"torchvision {t.torchvision} requires {t.torchvision_requires} but torch {t.version} is installed: the next "
            f"pip install that resolves them (any crashcast extra) replaces your torch with the one torchvision asks for.",
            f'install the torchvision made for your torch: `python -m pip install "torch=={t.version}" torchvision '
            f"--index-url https://download.pytorch.org/whl/{_index_tag(t.cuda)}` (pip keeps torch and picks the "
            "matching torchvision, of the same build)."))
    if t.version is not None and t.torchvision is None:
        traps.append(Trap(
            "torch without torchvision: the extras would replace your torch",
            f"`[vision]` (ultralytics) needs torchvision; with none installed, pip takes the newest, which requires a "
            f"newer torch than {t.version}, and installs that torch in place of yours (seen: 2.13.0 -> 2.15.0 with "
            "~6 GB of CUDA packages).",
            f'first: `python -m pip install "torch=={t.version}" torchvision --index-url '
            f'https://download.pytorch.org/whl/{_index_tag(t.cuda)}` (pip keeps torch and picks the matching '
            'torchvision, of the same build); then `python -m pip install -e ".[vision]"`.'))
    if _dist_version("opencv-python") and _dist_version("opencv-python-headless"):
        traps.append(Trap(
            "opencv-python and opencv-python-headless are both installed",
            "both write the same `cv2` folder; whichever was installed last wins and uninstalling one breaks the other.",
            "`python -m pip uninstall -y opencv-python-headless && python -m pip install --force-reinstall "
            "opencv-python` (ultralytics, supervision and trackers require opencv-python)."))
    return traps


def _index_tag(cuda: str | None) -> str:
    """pytorch.org's wheel index for a build: 'cpu', or 'cu126' for CUDA 12.6."""
    return "cpu" if not cuda else "cu" + "".join(cuda.split(".")[:2])


def collect(weights_dir: str | Path | None = None) -> DoctorReport:
    """Everything the doctor prints; offline, no downloads."""
    from crashcast.config import preset_names

    t = torch_info()
    traps = find_traps(t)  # first: its torchvision check is cached, and each preset below then reports it
    presets = []
    for name in preset_names():
        try:
            presets.append(R.preset_status(name, weights_dir))
        except Exception as e:  # a broken backend module must not break the doctor
            presets.append(R.PresetStatus(name, problems=[f"checking it failed: {type(e).__name__}: {e}"]))
    return DoctorReport(
        python=f"{platform.python_version()} ({sys.executable}) on {platform.system()} {platform.machine()}",
        crashcast=_crashcast_version(),
        torch=t,
        extras=extras_report(),
        presets=presets,
        traps=traps,
        weights_dir=weights_dir_for(None, weights_dir),
    )


def _crashcast_version() -> str:
    from crashcast.version import __version__

    return f"{__version__} ({Path(__file__).parent})"


# ----------------------------------------------------------------------------- printing


def _torch_line(t: TorchInfo) -> str:
    if t.version is None:
        return "not installed (the classic path needs none; the model backends do: docs/INSTALL.md)"
    if t.error:
        return f"{t.version}, but `import torch` fails: {t.error}"
    build = f"CUDA {t.cuda} build" if t.cuda else "CPU-only build"
    if t.gpus:
        devices = "; ".join(f"GPU {i}: {name}, {gib:.1f} GiB" for i, (name, gib) in enumerate(t.gpus))
    elif t.cuda:
        devices = "no CUDA device usable here"
    else:
        devices = "Apple MPS available" if t.mps else "runs on the CPU"
    if t.device_error:
        devices += f" (querying the devices failed: {t.device_error})"
    return f"{t.version}, {build}; {devices}"


def _mb(x: float | None) -> str:
    if x is None:
        return "?"
    return f"{x / 1000:.1f} GB" if x >= 1000 else f"{x:.0f} MB"


def print_weights(statuses: list[tuple[str, R.WeightStatus]], title: str, console: Any) -> None:
    """A table (preset, stage, backend, weights, size, licence, present or not), then one line per file
    with where to fetch it and where it is or would be, unfolded so paths and URLs can be copied."""
    from rich.markup import escape
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("preset", "stage", "backend", "weights", "size", "licence", "on disk"):
        table.add_column(col)
    for preset, s in statuses:
        table.add_row(escape(preset), s.stage, s.backend, escape(s.file.name), _mb(s.file.size_mb), s.file.licence,
                      "[green]present[/]" if s.present else "[yellow]missing[/]")
    console.print(table)
    seen = set()
    for _, s in statuses:
        if (s.file.name, s.target) in seen:
            continue
        seen.add((s.file.name, s.target))
        where = (f"at {s.path} ({_mb(W.size_on_disk_mb(s.path))} on disk)" if s.present
                 else f"missing; would be at {s.target}")
        console.print(f"  {s.file.name}: {s.file.source}, from {s.file.fetch_url}; {where}", markup=False)


def render(r: DoctorReport, console: Any) -> None:
    """Print the report: versions, extras, presets, weights, traps."""
    from rich.markup import escape
    from rich.table import Table

    console.print("[bold]crashcast doctor[/]")
    console.print(f"  Python:      {escape(r.python)}")
    console.print(f"  crashcast:   {escape(r.crashcast)}")
    console.print(f"  torch:       {escape(_torch_line(r.torch))}")
    tv = r.torch.torchvision
    console.print("  torchvision: " + (escape(f"{tv} (requires {r.torch.torchvision_requires or 'any torch'})") if tv
                                       else "not installed"))
    where = escape(str(r.weights_dir)) if r.weights_dir else "none (the libraries' own caches)"
    console.print(f"  weights folder: {where}")

    extras = Table(title="Extras (pip install -e \".\\[name]\")", title_justify="left")
    for col in ("extra", "status", "packages"):
        extras.add_column(col, overflow="fold")
    for extra, pkgs in r.extras.items():
        missing = [d for d, v in pkgs if v is None]
        status = "[green]installed[/]" if not missing else ("[red]not installed[/]" if len(missing) == len(pkgs)
                                                             else "[yellow]partly[/]")
        extras.add_row(extra, status, ", ".join(f"{d} {v}" if v else f"{d} [dim](missing)[/]" for d, v in pkgs))
    if not r.extras:
        console.print("  extras: unknown (crashcast is not installed as a package: python -m pip install -e .)")
    else:
        console.print(extras)

    presets = Table(title="Presets (--backend NAME)", title_justify="left")
    for col in ("preset", "runs here", "what it lacks", "to fix"):
        presets.add_column(col, overflow="fold")
    for p in r.presets:
        presets.add_row(p.name, "[green]yes[/]" if p.ready else "[red]no[/]", escape(p.why()), escape(p.hint() or ""))
    console.print(presets)

    rows = [(p.name, s) for p in r.presets for s in p.weights]
    if rows:
        print_weights(rows, "Model weights (crashcast weights list / download)", console)
    else:
        console.print("Model weights: no preset here needs any (the classic presets run without weights)")

    if not r.traps:
        console.print("[green]Known traps: none found[/]")
    for trap in r.traps:
        console.print(f"[red]Trap:[/] [bold]{escape(trap.title)}[/]")
        console.print(f"  why: {escape(trap.explanation)}")
        console.print(f"  fix: {escape(trap.fix)}")


# ----------------------------------------------------------------------------- weights


def preset_weights(preset: str | Path, weights_dir: Path | None = None) -> list[R.WeightStatus]:
    """Every weight file `preset` (a preset name or config YAML) needs, and whether it is on disk."""
    from crashcast.config import load_config

    return R.weight_status(load_config(preset), weights_dir, vlm=R.defines_vlm(preset))


@dataclass
class WeightsPlan:
    """What `download_weights` fetches for a preset: where (`weights_dir`; None: the libraries'
    caches), what the preset needs (`statuses`) and what is missing (`missing`, each file once)."""

    preset: str
    weights_dir: Path | None
    vlm: bool
    statuses: list[R.WeightStatus]
    missing: list[W.WeightFile]


def weights_plan(preset: str | Path, weights_dir: Path | None = None) -> WeightsPlan:
    """The weights of `preset` to fetch into `weights_dir` (default: runtime.weights_dir,
    $CRASHCAST_WEIGHTS_DIR, else the libraries' caches)."""
    from crashcast.config import load_config

    cfg = load_config(preset)
    d = weights_dir_for(cfg.runtime, weights_dir)
    vlm = R.defines_vlm(preset)
    statuses = R.weight_status(cfg, d, vlm=vlm)
    missing = list({(s.file.name, s.file.source): s.file for s in statuses if not s.present}.values())  # once each
    return WeightsPlan(str(preset), d, vlm, statuses, missing)


def download_weights(plan: WeightsPlan) -> list[R.WeightStatus]:
    """Download what `plan` misses (offline: `WeightsUnavailable` says what to fetch and where to put
    it); the preset's weights as they are on disk afterwards."""
    from crashcast.config import load_config

    W.download(plan.missing, plan.weights_dir)
    return R.weight_status(load_config(plan.preset), plan.weights_dir, vlm=plan.vlm)
