"""Model weights: where each one is looked for, offline first.

`resolve(name_or_path, weights_dir)`: an existing path is used as is; with a weights folder
(`--weights-dir`, `runtime.weights_dir` or $CRASHCAST_WEIGHTS_DIR) a hub id `org/name` or a file
name must be inside it (`<dir>/org/name`, `<dir>/name`), and nothing is downloaded; without one
the name goes to the library (Hugging Face hub cache, ultralytics), which may download it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from crashcast.errors import ConfigError

#: `weights: random:<arch>` builds the backend's architecture with random weights: no file needed
RANDOM_PREFIX = "random:"


def is_random(name: str) -> bool:
    return name.startswith(RANDOM_PREFIX)


@dataclass(frozen=True)
class WeightFile:
    """One set of weights a backend's config needs.

    name: what the config names (a hub id like `facebook/sam2.1-hiera-large`, or a file name like
    `yolov8x.pt`); source: `huggingface` (a hub repository: `files` lists the files needed, empty for
    the whole snapshot), `ultralytics` (an asset ultralytics downloads by name) or `url`; size_mb:
    approximate download size; licence: the weights' licence (SPDX id); url: where to fetch it by hand."""

    name: str
    source: str
    licence: str
    size_mb: float | None = None
    url: str | None = None
    files: tuple[str, ...] = ()


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
