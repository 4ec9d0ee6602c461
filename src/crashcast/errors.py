"""Exceptions crashcast raises for bad input. Each names the file (and row or clip) and the problem."""

from __future__ import annotations


class CrashcastError(Exception):
    """Base class of every error crashcast raises on purpose."""


class AnnotationError(CrashcastError, ValueError):
    """An annotation file is missing, malformed or inconsistent."""

    def __init__(self, path: object, problem: str, row: int | None = None) -> None:
        where = f"{path}" if row is None else f"{path}, row {row}"
        super().__init__(f"{where}: {problem}")
        self.path = path
        self.row = row
        self.problem = problem


class VideoError(CrashcastError):
    """A video cannot be opened or decoded (missing, empty, corrupt, not a video, no frames)."""

    def __init__(self, path: object, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ConfigError(CrashcastError, ValueError):
    """A config file or override is invalid."""


class SchemaError(CrashcastError, ValueError):
    """A window_meta.json (or another artefact) does not match its schema."""


class ModelError(CrashcastError):
    """A model cannot be loaded, trained or applied."""


class PerceptionError(CrashcastError):
    """A perception stage cannot give a trustworthy result for this clip (e.g. relative depth that
    does not fit the road)."""


class InputLimitError(CrashcastError, ValueError):
    """A file is not a regular file (a FIFO, a device such as /dev/zero, a folder), or is larger than
    crashcast reads for its kind: refused before it is read."""
