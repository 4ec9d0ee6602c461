"""Which Python packages import here, and how to install the ones that do not.

Every model (a perception backend, a risk model) declares the packages it needs as import names;
`require` checks them before anything is loaded, so a missing extra or a torchvision that cannot
import ends in one line naming the fix instead of a traceback from deep inside a library.
"""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from collections.abc import Iterable
from functools import lru_cache

from crashcast.errors import ConfigError

#: packages whose import loads torchvision's compiled operators (a CPU/CUDA mismatch breaks them)
TORCHVISION_USERS = frozenset({"torchvision", "ultralytics", "transformers"})


class MissingPackages(ConfigError):
    """A model needs packages that are not installed (or torchvision does not import)."""


def missing(packages: Iterable[str]) -> list[str]:
    """The import names among `packages` that cannot be found here (nothing is imported)."""
    out = []
    for p in dict.fromkeys(packages):
        try:
            found = importlib.util.find_spec(p) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            out.append(p)
    return out


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


def torchvision_checked() -> bool:
    """Whether `torchvision_problem` has run in this process already (its answer is cached)."""
    info = getattr(torchvision_problem, "cache_info", None)  # (a test may replace the function)
    return bool(info is not None and info().currsize)


def require(packages: Iterable[str], what: str) -> None:
    """Raise MissingPackages (one line: what needs which package, and the install command) when a
    package is missing, or when one of them needs torchvision and torchvision does not import."""
    packages = list(dict.fromkeys(packages))
    absent = missing(packages)
    if absent:
        raise MissingPackages(f"{what} needs {', '.join(absent)} (not installed): {install_hint(absent)}")
    if TORCHVISION_USERS & set(packages):
        problem = torchvision_problem()
        if problem:
            raise MissingPackages(f"{what} needs torchvision, which does not import here ({problem}); "
                                  "`crashcast doctor` says why and how to fix it")


def install_hint(packages: Iterable[str]) -> str:
    """How to install missing packages: torch and torchvision first (the build for this machine),
    then the extras that hold the rest."""
    packages = list(dict.fromkeys(packages))
    torchlike = [p for p in packages if p in ("torch", "torchvision")]
    extras = extras_map()
    rest = [p for p in packages if p not in torchlike]
    holds = {e: {_norm(d) for d in extras.get(e, [])} for e in ("vision", "vlm", "distributed")}  # ties: the first
    wanted: list[str] = []
    while True:  # the fewest extras that hold them: each time the one holding most of what is left
        best = max(holds, key=lambda e: sum(_norm(p) in holds[e] for p in rest))
        if not any(_norm(p) in holds[best] for p in rest):
            break
        wanted.append(best)
        rest = [p for p in rest if _norm(p) not in holds[best]]
    loose = rest
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
