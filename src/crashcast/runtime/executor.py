"""Run independent jobs (one per clip) in local processes with a progress bar.

A job that raises is returned as a failure (never hides it, never stops the others). Workers are
started the platform's default way (fork on Linux, spawn on macOS and Windows) and run OpenCV on
one thread each: the workers already use every core, and OpenCV's own threads would compete with
them (2 clip-extraction workers x 1 thread measured 7 % faster than x 2).

Workers end when their parent dies, however it dies (kill -9 included): otherwise they would wait
forever on the job pipe, re-parented to init. On Linux the kernel kills them (PR_SET_PDEATHSIG);
everywhere a watchdog thread also notices the new parent within a second and exits.

Forked workers must never free objects the parent made: a PyAV frame left in a reference cycle (an
exception's traceback holds one) owns an swscale context whose slice threads exist only in the
parent, and freeing it in a child waits on them forever (seen: a worker hung in
`avpriv_slicethread_free` during a garbage collection). So the parent collects its garbage and
freezes what is left (`gc.freeze`) before forking; the children's collections skip those objects.
"""

from __future__ import annotations

import gc
import logging
import os
import sys
import threading
import time
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


WATCHDOG_PERIOD_S = 1.0


def _die_with_parent(parent_pid: int) -> None:
    """Make this worker exit when `parent_pid` is gone (see the module docstring)."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        try:  # PR_SET_PDEATHSIG = 1: the kernel sends SIGKILL when the parent exits
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)
        except (OSError, AttributeError):  # pragma: no cover - no prctl: the watchdog still runs
            pass
    if os.getppid() != parent_pid:  # the parent died before we got here
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(WATCHDOG_PERIOD_S)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="crashcast-parent-watchdog", daemon=True).start()


def _init_worker(parent_pid: int) -> None:
    """Worker initializer: exit with the parent, and use one OpenCV thread. A forked worker
    inherits the OpenCV setting from `run_jobs` (reconfiguring OpenCV's thread pool inside a forked
    child whose parent had used it deadlocks); a spawned one sets it here."""
    _die_with_parent(parent_pid)
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
    from rich.console import Console

    with Progress(*columns, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=len(jobs))
        if workers <= 1 or len(jobs) <= 1:
            for key, args in jobs:
                results[key] = _call(fn, key, args)
                bar.advance(task)
        else:
            import cv2

            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # inherited by forked workers (see _init_worker)
            gc.collect()  # the parent's garbage is freed here, where its threads exist (module docstring)
            gc.freeze()
            try:
                with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(os.getpid(),)) as pool:
                    futures = {pool.submit(_call, fn, key, args): key for key, args in jobs}
                    for fut in as_completed(futures):
                        key = futures[fut]
                        try:
                            results[key] = fut.result()
                        except Exception as e:  # the worker process itself died (e.g. killed for memory)
                            results[key] = JobResult(key, False, error=f"worker died: {e}", error_type=type(e).__name__)
                        bar.advance(task)
            finally:
                gc.unfreeze()
                cv2.setNumThreads(threads)
    return [results[k] for k, _ in jobs]
