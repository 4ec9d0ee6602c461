"""Run independent jobs (one per clip) in local processes with a progress bar.

A job that raises is returned as a failure (never hides it, never stops the others). Workers are
started the platform's default way (fork on Linux, spawn on macOS and Windows) and run OpenCV on
one thread each: the workers already use every core, and OpenCV's own threads would compete with
them (2 clip-extraction workers x 1 thread measured 7 % faster than x 2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None


def _call(fn: Callable[..., Any], key: str, args: tuple) -> JobResult:
    try:
        return JobResult(key, True, fn(*args))
    except Exception as e:  # one bad clip must not stop the run: report it to the caller
        log.debug("job %s failed", key, exc_info=True)
        return JobResult(key, False, error=str(e) or repr(e), error_type=type(e).__name__)


def _one_opencv_thread() -> None:
    """Worker initializer. A forked worker inherits the setting from `run_jobs` (reconfiguring
    OpenCV's thread pool inside a forked child whose parent had used it deadlocks); a spawned one
    sets it here."""
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[str, tuple]],
    workers: int = 1,
    description: str = "working",
    progress: bool = True,
) -> list[JobResult]:
    """Call fn(*args) for every (key, args); with workers > 1 in a process pool. Results in job order."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: dict[str, JobResult] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task(description, total=len(jobs))
        if workers <= 1 or len(jobs) <= 1:
            for key, args in jobs:
                results[key] = _call(fn, key, args)
                bar.advance(task)
        else:
            import cv2

            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # inherited by forked workers (see _one_opencv_thread)
            try:
                with ProcessPoolExecutor(max_workers=workers, initializer=_one_opencv_thread) as pool:
                    futures = {pool.submit(_call, fn, key, args): key for key, args in jobs}
                    for fut in as_completed(futures):
                        key = futures[fut]
                        try:
                            results[key] = fut.result()
                        except Exception as e:  # the worker process itself died (e.g. killed for memory)
                            results[key] = JobResult(key, False, error=f"worker died: {e}", error_type=type(e).__name__)
                        bar.advance(task)
            finally:
                cv2.setNumThreads(threads)
    return [results[k] for k, _ in jobs]
