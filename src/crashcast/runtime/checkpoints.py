"""Which checkpoint files may be unpickled: weights are data, and a file the user did not trust never
runs code.

A `.pt`/`.pth` file is a pickle, and unpickling one with `torch.load(weights_only=False)` runs
whatever it carries. People trade weights folders and run folders, so a file's name or place says
nothing about it. crashcast loads a checkpoint in one of three ways, in this order:

1. **A known file**: the weight table records its published SHA-256 (`WeightFile.sha256`); the file
   is hashed before anything reads it, and a different file is refused (`verify_known`).
2. **Restricted loading**: `torch.load(weights_only=True)` or safetensors wherever the library
   allows (VDA, RAFT, transformers and peft already do), and for ultralytics checkpoints its own
   allow-list loader (ultralytics >= 8.4.67, `torch_safe_load(safe_only=True)`): only known model
   classes are rebuilt, and a checkpoint that references anything else is refused.
3. **Trust, said explicitly** (never read from a config file, which a traded run folder carries):
   `--trust-checkpoint PATH` on the command line, `trust_checkpoints=[...]` in `crashcast.api`, or
   $CRASHCAST_TRUST_CHECKPOINTS (paths separated by the OS path separator). Only then is a file that
   restricted loading refuses unpickled in full.

The trusted set lives in the environment (`TRUST_ENV`), so worker processes (local pools, a Ray
cluster started on this machine) see the same set as the command that started them.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

from crashcast.errors import ModelError

#: the environment variable holding the trusted checkpoint paths (os.pathsep-separated)
TRUST_ENV = "CRASHCAST_TRUST_CHECKPOINTS"
#: how the refusal tells a person to trust a file
TRUST_HOW = (f"--trust-checkpoint PATH on the command line, trust_checkpoints=[PATH] in crashcast.api, or "
             f"${TRUST_ENV}")


class UntrustedCheckpoint(ModelError):
    """A checkpoint would have to be unpickled in full (which may run code) and the user did not trust
    it; or a known file's SHA-256 is not the published one."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def _key(path: str | Path) -> str:
    return str(Path(path).expanduser().resolve())


def trusted_paths() -> frozenset[str]:
    """The resolved paths the user trusts now (read from the environment each time)."""
    raw = os.environ.get(TRUST_ENV, "")
    return frozenset(_key(p) for p in raw.split(os.pathsep) if p.strip())


def is_trusted(path: str | Path) -> bool:
    """Whether the user named this file (its resolved path) as trusted."""
    return _key(path) in trusted_paths()


def checked_trust(paths: Iterable[str | Path]) -> list[str]:
    """The resolved paths of `paths`, each an existing file; else UntrustedCheckpoint naming it."""
    out = []
    for p in paths:
        q = Path(p).expanduser()
        if not q.is_file():
            raise UntrustedCheckpoint(p, "--trust-checkpoint names no file here (give the checkpoint's path)")
        out.append(_key(q))
    return out


@contextlib.contextmanager
def trusting(paths: Iterable[str | Path]) -> Iterator[None]:
    """Trust `paths` (each must be an existing file) for the duration: the environment variable is set
    for this process and the workers it starts, and restored afterwards."""
    extra = checked_trust(paths)
    if not extra:
        yield
        return
    before = os.environ.get(TRUST_ENV)
    os.environ[TRUST_ENV] = os.pathsep.join([*([before] if before else []), *extra])
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(TRUST_ENV, None)
        else:
            os.environ[TRUST_ENV] = before


def sha256_of(path: str | Path) -> str:
    """The file's SHA-256, read in 1 MiB blocks (no size limit: a hash needs no memory)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_known(path: str | Path, expected_sha256: str, what: str) -> None:
    """Refuse `path` unless its SHA-256 is `expected_sha256` (the published one) or the user trusts it.
    Called before anything unpickles the file."""
    if is_trusted(path):
        return
    actual = sha256_of(path)
    if actual != expected_sha256.lower():
        raise UntrustedCheckpoint(
            path, f"not the published {what}: its SHA-256 is {actual[:16]}..., the published file's is "
            f"{expected_sha256[:16]}... Loading it would unpickle a file nobody vouched for (which can run code). "
            f"Fetch the file again (`crashcast weights list` says from where), or, if you trust this one, name "
            f"it: {TRUST_HOW}")


def refusal(path: str | Path, detail: str) -> UntrustedCheckpoint:
    """The error for a checkpoint that restricted loading refused (`detail`: what it references)."""
    return UntrustedCheckpoint(
        path, f"not loaded: {detail}. Unpickling it in full would run whatever code it carries, so crashcast "
        f"loads a checkpoint only through a restricted loader unless you trust the file. If you made it or it "
        f"comes from its publisher, name it: {TRUST_HOW}")
