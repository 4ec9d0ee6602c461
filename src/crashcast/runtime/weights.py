"""Model weight files: what one is, where it is looked for (offline first), where it goes, and how
it is downloaded. Nothing here knows a backend, a preset or a model: the registries say which files
a config needs (`crashcast.readiness` asks them), this module only handles files.

`resolve(name_or_path, weights_dir)`: a path (`is_path`: absolute, or with a folder in it) is used
as is; a bare file name is never looked up in the working directory; with a weights folder
(`--weights-dir`, `runtime.weights_dir` or $CRASHCAST_WEIGHTS_DIR: `runtime.context`) a hub id
`org/name` or a file name must be inside it (`<dir>/org/name`, `<dir>/name`), and nothing is
downloaded; without one the name goes to the library (Hugging Face hub cache, ultralytics), which
may download it. `locate` finds a file on disk without a network call (the weights folder when one
is set, since that is the only place `resolve` then loads from; else the Hugging Face cache,
ultralytics' weights folder (CLIP: its `clip/` subfolder) or torch's hub cache). `download` (and
`reachable`, its quick check) are the only functions here that touch the network; with none (or
CRASHCAST_OFFLINE=1 / HF_HUB_OFFLINE=1) it says what to fetch, from where, its size and licence, and
where to put it. A download lands under a temporary name and is renamed when complete.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import re
import urllib.request
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from crashcast.errors import ConfigError, ModelError
from crashcast.runtime.store import read_text_bounded

log = logging.getLogger(__name__)

#: `weights: random:<arch>` builds the backend's architecture with random weights: no file needed
RANDOM_PREFIX = "random:"

#: the environment variable naming the weights folder (below `--weights-dir` and `runtime.weights_dir`)
WEIGHTS_ENV = "CRASHCAST_WEIGHTS_DIR"

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


def is_path(name: str) -> bool:
    """A path, not a name: absolute, `~`-prefixed, or with a folder in it (`./x.pt`, `runs/best.pt`; a hub
    id `org/name` counts only when it exists). A bare file name (`yolov8x.pt`) is a name: it is looked
    up in the weights folder or the library's, never in the working directory, where anyone's download
    or archive may have left a file of that name."""
    p = Path(name).expanduser()
    if p.is_absolute() or name.startswith(("~", "./", "../", ".\\", "..\\")):
        return True
    return len(p.parts) > 1 and p.exists()


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
    #: the published SHA-256 of a single-file checkpoint, checked before it is loaded
    #: (`crashcast.runtime.checkpoints.verify_known`) and after it is downloaded; None: none is published
    sha256: str | None = None

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
    if is_path(name_or_path):
        return os.path.expanduser(name_or_path)
    if weights_dir is None:
        return name_or_path
    for c in candidates(name_or_path, weights_dir):
        if c.exists():
            return str(c)
    raise ConfigError(f"{name_or_path}: not in the weights folder {weights_dir} (looked for "
                      f"{', '.join(str(c) for c in candidates(name_or_path, weights_dir))}); "
                      "`crashcast weights list` says what to fetch and where to put it")


# ----------------------------------------------------------------------------- where files live


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
        d = json.loads(read_text_bounded(root / "Ultralytics" / "settings.json", what="ultralytics settings")
                       ).get("weights_dir")
    except (OSError, ValueError, AttributeError):  # InputLimitError is a ValueError
        return None
    return Path(d).expanduser() if isinstance(d, str) and d else None


def ultralytics_dir() -> Path:
    """ultralytics' weights folder, absolute: its `weights_dir` setting, else its default (`weights`, which
    ultralytics reads relative to the working directory)."""
    d = ultralytics_weights_dir() or ULTRALYTICS_DEFAULT_WEIGHTS
    return d if d.is_absolute() else Path.cwd() / d


def weights_path(name: str) -> str:
    """Where a bare ultralytics checkpoint name is loaded from (and downloaded to) without a crashcast
    weights folder: ultralytics' weights folder, as an absolute path, so that ultralytics does not
    first look for the name in the working directory. Paths are returned as they are."""
    return name if is_path(name) else str(ultralytics_dir() / name)


def ultralytics_clip_dir() -> Path:
    """Where ultralytics' YOLO-World text model reads (and downloads) CLIP checkpoints:
    `<weights_dir>/clip` (ultralytics/nn/text_model.py), with ultralytics' default weights folder
    when its settings file does not exist yet."""
    return ultralytics_dir() / "clip"


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
        rev = read_text_bounded(repo / "refs" / "main", 4096, "hub cache ref").strip()
    except (OSError, ValueError):
        return None
    snap = repo / "snapshots" / rev
    return snap if snap.is_dir() else None


def locate(wf: WeightFile, weights_dir: Path | None = None) -> Path | None:
    """Where `wf` is on disk now, or None: an existing path as is (as `resolve` takes it); then, with a
    weights folder, only that folder (the only place `resolve` loads from then); without one, the
    place its library loads it from."""
    p = Path(wf.name).expanduser()
    if is_path(wf.name):  # a path: `resolve` uses it as is (a bare name is never looked up in the working directory)
        return p.resolve() if p.exists() else None
    if weights_dir is not None:
        for c in candidates(wf.name, weights_dir):
            if (c.is_dir() and wf.source == "huggingface" and _complete(c, wf.files)) or c.is_file():
                return c
        return None
    if wf.source == "huggingface":
        return _hf_cached(wf, hf_cache_dir())
    if wf.source == "ultralytics":
        f = ultralytics_dir() / wf.name
        return f if f.is_file() else None
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
        return ultralytics_dir() / wf.name
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


# ----------------------------------------------------------------------------- download


class WeightsUnavailable(ModelError):
    """Weights could not be downloaded; the message says what to fetch by hand and where to put it."""

    def __init__(self, message: str, files: list[WeightFile], reasons: list[str] | None = None) -> None:
        super().__init__(message)
        self.files = files
        self.reasons = reasons or []  # why each file could not be fetched, in one line each


#: the environment variables that keep crashcast (and the libraries it calls) off the network
OFFLINE_ENV = ("CRASHCAST_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")

#: the base URL ultralytics assets (yolo11n.pt, ...) are fetched from in place of the one the
#: checkpoint table names (a mirror; the tests' local server)
ULTRALYTICS_ASSETS_ENV = "CRASHCAST_ULTRALYTICS_ASSETS"


def offline() -> bool:
    """CRASHCAST_OFFLINE / HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE set: make no network call (read now,
    not at import)."""
    return any(os.environ.get(v, "").strip().upper() in ("1", "ON", "YES", "TRUE") for v in OFFLINE_ENV)


def hf_endpoint() -> str:
    """The Hugging Face hub endpoint, read from $HF_ENDPOINT now (huggingface_hub reads it once, at import)."""
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def source_url(wf: WeightFile) -> str | None:
    """The URL `download` fetches `wf` from (a hub repository: the endpoint's page of it); None when
    its library decides (an ultralytics name without a known URL)."""
    if wf.source == "huggingface":
        return f"{hf_endpoint()}/{wf.name}"
    if wf.source == "ultralytics":
        base = os.environ.get(ULTRALYTICS_ASSETS_ENV)
        return f"{base.rstrip('/')}/{Path(wf.name).name}" if base else wf.url
    return wf.url


def reachable(files: Iterable[WeightFile], timeout: float = 3.0) -> bool:
    """Whether the hosts `download` would fetch `files` from accept a connection within `timeout`
    seconds (a quick check before a download, so that a machine without a network falls back at
    once). Behind a proxy (HTTPS_PROXY/HTTP_PROXY/ALL_PROXY set) the hosts are not dialled directly:
    True, and the download itself finds out."""
    import socket
    from urllib.parse import urlsplit

    if any(os.environ.get(v) or os.environ.get(v.lower()) for v in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY")):
        return True
    hosts = set()
    for wf in files:
        url = source_url(wf)
        if url:
            u = urlsplit(url)
            if u.hostname:
                hosts.add((u.hostname, u.port or (443 if u.scheme == "https" else 80)))
    for host in sorted(hosts):
        try:
            socket.create_connection(host, timeout=timeout).close()
        except OSError:
            log.debug("%s:%s is not reachable", *host, exc_info=True)
            return False
    return True


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
             progress: bool = True) -> list[Path]:
    """Fetch every file not yet on disk into the weights folder `dir` (`<dir>/<name>`; a hub id
    becomes the folder `<dir>/org/name`), or without one into its library's cache (Hugging Face hub
    cache, ultralytics' weights folder, torch's hub cache). Returns where each file is. When some
    cannot be fetched (no network, CRASHCAST_OFFLINE=1 or HF_HUB_OFFLINE=1, `offline_only=True`), the
    others are still fetched and WeightsUnavailable says what to fetch by hand and where to put it.
    A file is written under a temporary name and renamed when complete (its size, and its SHA-256
    when one is published, checked), so an interrupted download is never taken for the file.
    `progress`: a progress bar per file on stderr."""
    d = Path(dir).expanduser() if dir is not None else None
    no_net = offline() if offline_only is None else offline_only
    unique = list({(wf.name, wf.source): wf for wf in files}.values())
    paths: list[Path] = []
    failed: list[tuple[WeightFile, str]] = []
    with _quiet_http_logs():
        for wf in unique:
            _download_one(wf, d, no_net, progress, paths, failed)
    if failed:
        why = "; ".join(dict.fromkeys(reason for _, reason in failed))
        raise WeightsUnavailable(f"{len(failed)} weight file(s) could not be downloaded here ({why}). Fetch them on a "
                                 f"machine with internet and copy them over:\n"
                                 + fetch_instructions([wf for wf, _ in failed], d), [wf for wf, _ in failed],
                                 [reason for _, reason in failed])
    return paths


def _download_one(wf: WeightFile, d: Path | None, no_net: bool, progress: bool, paths: list[Path],
                  failed: list[tuple[WeightFile, str]]) -> None:
    """`download` of one file: where it is added to `paths`, or why not to `failed`."""
    found = locate(wf, d)
    if found is not None:
        log.info("%s: already at %s", wf.name, found)
        paths.append(found)
        return
    if no_net:
        failed.append((wf, "offline (CRASHCAST_OFFLINE / HF_HUB_OFFLINE)"))
        return
    try:
        paths.append(_fetch(wf, d, progress))
    except Exception as e:  # network, HTTP, disk: all end in the same by-hand instructions
        log.debug("downloading %s failed", wf.name, exc_info=True)
        why = str(e) if isinstance(e, ModelError) else f"{type(e).__name__}: {e}"
        failed.append((wf, (why.splitlines() or [type(e).__name__])[0][:200]))


@contextmanager
def _quiet_http_logs() -> Iterator[None]:
    """The HTTP client's per-request INFO lines (httpx, under huggingface_hub) held back while
    downloading, unless debugging: the progress bars say what is happening."""
    loggers = [logging.getLogger(name) for name in ("httpx", "httpx2", "httpcore")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        if lg.getEffectiveLevel() > logging.DEBUG:
            lg.setLevel(logging.WARNING)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def expected_sha256(wf: WeightFile) -> str | None:
    """The file's published SHA-256: the table's, else the one a CLIP checkpoint's URL names (its parent
    folder, which the `clip` package checks before using a file in its download folder); else None."""
    if wf.sha256:
        return wf.sha256.lower()
    if wf.source != ULTRALYTICS_CLIP or not wf.url:
        return None
    parts = wf.url.split("?", 1)[0].rstrip("/").split("/")
    return parts[-2].lower() if len(parts) >= 2 and re.fullmatch(r"[0-9a-fA-F]{64}", parts[-2]) else None


def _fetch(wf: WeightFile, d: Path | None, progress: bool = True) -> Path:
    """Download one file (a hub repository's listed files through huggingface_hub, which writes each
    as `<blob>.incomplete` and renames it when complete; any other file through `fetch_url`); the
    place it lands is checked with `locate`."""
    if wf.source in (ULTRALYTICS_CLIP, "ultralytics") and d is None and ultralytics_weights_dir() is None \
            and importlib.util.find_spec("ultralytics") is not None:
        try:  # ultralytics writes its settings file on import: the weights folder it will read the file from
            import ultralytics.utils  # noqa: F401
        except Exception:  # a broken install: its default folder, as `target` says
            log.debug("importing ultralytics failed", exc_info=True)
    dest = target(wf, d)
    if wf.source == "huggingface":
        _fetch_hub(wf, dest if d is not None else None, progress)
    elif wf.source == "ultralytics" and source_url(wf) is None:  # a name only ultralytics knows where to find
        from ultralytics.utils.downloads import attempt_download_asset

        dest.parent.mkdir(parents=True, exist_ok=True)
        attempt_download_asset(str(dest))
    else:
        url = source_url(wf)
        if not url:
            raise ModelError(f"{wf.name}: no url to download it from")
        fetch_url(url, dest, expected_sha256(wf), progress=progress)
    found = locate(wf, d)
    if found is None:
        raise ModelError(f"{wf.name}: the download finished but the file is not at {dest}")
    return found


def _fetch_hub(wf: WeightFile, local_dir: Path | None, progress: bool) -> None:
    """A hub repository's files from $HF_ENDPOINT (read now): the listed files one by one (each a
    `resolve` request), or with glob patterns or none listed the snapshot (the hub's API lists it)."""
    import inspect
    import sys

    from huggingface_hub import hf_hub_download, snapshot_download

    where: dict = {"local_dir": local_dir} if local_dir is not None else {"cache_dir": hf_cache_dir()}
    if wf.files and not any(map(_is_glob, wf.files)):
        if progress and sys.stderr.isatty() and "tqdm_class" in inspect.signature(hf_hub_download).parameters:
            import tqdm  # huggingface_hub's own bar stays off under a log level it does not expect

            where["tqdm_class"] = tqdm.tqdm
        for f in wf.files:
            hf_hub_download(wf.name, f, endpoint=hf_endpoint(), **where)
    else:
        snapshot_download(wf.name, allow_patterns=list(wf.files) or None, endpoint=hf_endpoint(), **where)


def fetch_url(url: str, dest: Path, sha256: str | None = None, *, progress: bool = True, timeout: float = 60.0) -> Path:
    """Download `url` to `dest` through `<dest>.<pid>.part` (this process's own, so two downloads
    at once never write one file), renamed to `dest` only when complete: as many bytes as the server
    announced (Content-Length) and, with `sha256`, that digest; otherwise the part file is removed
    and ModelError says what was wrong. A progress bar on stderr with `progress`."""
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TransferSpeedColumn

    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f"{dest.name}.{os.getpid()}.part")
    digest = hashlib.sha256()
    got = 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with part.open("wb") as f, Progress(TextColumn(dest.name), BarColumn(), DownloadColumn(),
                                                TransferSpeedColumn(), disable=not progress,
                                                console=Console(stderr=True)) as bar:
                task = bar.add_task("download", total=total)
                while chunk := r.read(1 << 20):
                    f.write(chunk)
                    digest.update(chunk)
                    got += len(chunk)
                    bar.update(task, advance=len(chunk))
        if total is not None and got != total:
            raise ModelError(f"{dest.name}: the connection was cut after {got} of {total} bytes")
        if sha256 is not None and digest.hexdigest() != sha256.lower():
            raise ModelError(f"{dest.name}: the downloaded file's SHA-256 is {digest.hexdigest()[:16]}..., not the "
                             f"published {sha256[:16]}... (a corrupt or different file)")
        part.replace(dest)
    finally:
        part.unlink(missing_ok=True)
    return dest
