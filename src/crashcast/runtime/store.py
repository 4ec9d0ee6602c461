"""Atomic writes: every output goes to a temporary name in the same folder and is renamed into place,
so a killed run never leaves a half-written file under the final name.

Temporary files are named `.<name>.<pid>-<random>.part<suffix>` (the suffix kept: some writers choose
the format by it); a run killed mid-write can leave one behind: the next write of the same file
removes it (and `remove_partial` all of a folder's, when its work is redone), but never one whose
writer is still alive (a concurrent run's). Files are created with mode 0666 and the process's umask applies, as for
any ordinary file (no umask is read or changed).
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from crashcast.errors import InputLimitError

PART = ".part"
_PARTIAL = re.compile(r"^\.(?P<name>.+)\.(?P<pid>\d+)-[0-9a-f]{8}\.part(\.[^.]+)?$")


def _partial_name(path: Path, suffix: str) -> Path:
    return path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}{PART}{suffix}")


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # our own leftovers are dead work too
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


@contextmanager
def atomic_path(path: str | Path, suffix: str | None = None) -> Iterator[Path]:
    """Yield a fresh temporary path next to `path` (same suffix unless given); rename it to `path`
    when the block succeeds, remove it when the block fails."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_dir():  # os.replace would fail naming the temporary file, not the user's path
        raise IsADirectoryError(errno.EISDIR, "is a folder; name a file to write", str(path))
    remove_partial(path.parent, path.name)  # what a killed writer of this file left
    while True:
        tmp = _partial_name(path, path.suffix if suffix is None else suffix)
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:  # pragma: no cover - 32 random bits collided
            continue
        except OSError as e:  # named by the user's path (a read-only folder, a full disk)
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from None
    try:
        try:
            yield tmp
            os.replace(tmp, path)
        except OSError as e:
            about_tmp = os.fspath(e.filename) == os.fspath(tmp) if e.filename is not None else e.errno is not None
            if not about_tmp or type(e).__module__ != "builtins":
                raise
            # the user's path, never the temporary name (disk full, a folder in the way, no permission)
            raise type(e)(e.errno, e.strerror or str(e), str(path)) from None
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_partial(folder: str | Path, name: str | None = None) -> int:
    """Delete temporary files that writers no longer alive left in `folder` (not recursive), only
    those of the file `name` when given; returns how many. Only names made by `atomic_path` are touched."""
    folder = Path(folder)
    if not folder.is_dir():
        return 0
    n = 0
    prefix = None if name is None else f".{name}."
    for p in folder.iterdir():
        if prefix is not None and not p.name.startswith(prefix):
            continue
        m = _PARTIAL.match(p.name)
        if not m or (prefix is not None and (m["name"] != name or int(m["pid"]) == os.getpid())):
            continue  # not ours; or another thread of this process writing the same file now
        if not _alive(int(m["pid"])) and p.is_file():
            p.unlink(missing_ok=True)
            n += 1
    return n


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any, indent: int | None = 2) -> Path:
    return atomic_write_text(path, json.dumps(obj, indent=indent, allow_nan=False) + "\n")


#: the most crashcast reads of a small text file it did not write itself this time (a config, a
#: model card, metrics.json): larger ones, and anything that is not a regular file, are refused
SMALL_FILE_LIMIT = 16 * 2**20
#: a saved model's own files (a booster, MLP weights): large, never unbounded
MODEL_FILE_LIMIT = 1024 * 2**20


#: a table crashcast reads whole (features.parquet, predictions/<model>.csv, a run's window list)
TABLE_FILE_LIMIT = 1024 * 2**20
#: an annotation file (a Nexar CSV of a million clips is about 50 MB)
ANNOTATION_FILE_LIMIT = 256 * 2**20
#: one window's window_meta.json (a few kB to a few hundred kB in practice)
WINDOW_META_LIMIT = 16 * 2**20


def check_bounded(path: str | Path, limit: int = SMALL_FILE_LIMIT, what: str = "file") -> int:
    """The size of `path` when it is a regular file of at most `limit` bytes (a link is followed:
    one to /dev/zero is a device); else an InputLimitError naming the file and why. For readers that
    open the file themselves (pandas, pyarrow): nothing is read here."""
    path = Path(path)
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        kind = ("a folder" if stat.S_ISDIR(st.st_mode) else "a FIFO (named pipe)" if stat.S_ISFIFO(st.st_mode)
                else "a device" if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode) else "a socket or special file")
        raise InputLimitError(f"{path}: is {kind}, not a regular file; a {what} must be one")
    if st.st_size > limit:
        raise InputLimitError(f"{path}: {st.st_size} bytes, more than the {limit} a {what} may have")
    return st.st_size


def read_bounded(path: str | Path, limit: int = SMALL_FILE_LIMIT, what: str = "file") -> bytes:
    """The bytes of `path` when it is a regular file of at most `limit` bytes (`check_bounded`).
    Anything else is an InputLimitError naming the file and why, raised before a byte is read, so a
    FIFO or /dev/zero cannot make crashcast read forever."""
    path = Path(path)
    check_bounded(path, limit, what)
    with path.open("rb") as f:
        data = f.read(limit + 1)
    if len(data) > limit:  # grew while being read
        raise InputLimitError(f"{path}: more than the {limit} bytes a {what} may have")
    return data


def read_head(path: str | Path, n: int, limit: int = SMALL_FILE_LIMIT, what: str = "file") -> tuple[bytes, int]:
    """The first `n` bytes (fewer when the file is shorter) of a regular file of at most `limit`
    bytes, and its size: a header read without reading the rest (the refusals of `read_bounded`)."""
    path = Path(path)
    size = check_bounded(path, limit, what)
    with path.open("rb") as f:
        return f.read(max(0, n)), size


def read_text_bounded(path: str | Path, limit: int = SMALL_FILE_LIMIT, what: str = "file") -> str:
    """`read_bounded` decoded as UTF-8 (UnicodeDecodeError when it is not)."""
    return read_bounded(path, limit, what).decode("utf-8")


def inside(root: str | Path, relative: str | Path) -> Path:
    """`root / relative`, resolved (symbolic links followed), if it lies inside `root`; else ValueError.

    Everything a report or a resume reads from a run folder goes through this, so a crafted
    window_meta.json (`../../etc/passwd`, an absolute path, a link pointing out) cannot make
    crashcast read files outside the run."""
    base = Path(root).resolve()
    target = (base / relative).resolve()
    if target != base and base not in target.parents:
        raise ValueError(f"{relative} resolves outside {root}")
    return target
