"""Run independent jobs (one per clip) in local processes with a progress bar.

A job that raises is returned as a failure (never hides it, never stops the others). Workers are
started the platform's default way (fork on Linux, spawn on macOS and Windows) and run OpenCV on
one thread each: the workers already use every core, and OpenCV's own threads would compete with
them (2 clip-extraction workers x 1 thread measured 7 % faster than x 2).

Workers end when their parent dies, however it dies (kill -9 included): otherwise they would wait
forever on the job pipe, re-parented to init. On Linux the kernel kills them (PR_SET_PDEATHSIG);
everywhere a watchdog thread also notices the new parent within a second and exits.

Per-worker resources (a perception config's backends: model weights take seconds and gigabytes to
load) come from `setup`: each worker calls it once, before its first job, and hands the result to
every job it runs (`fn(resource, *args)`); in-process (one worker) it is called once. A setup that
fails stops the run with its error (`WorkerSetupError`): it is not one clip's fault. The Ray
executor uses the same interface in an actor's constructor; `get_executor` picks one of the two.

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

from crashcast.errors import ConfigError, CrashcastError

log = logging.getLogger(__name__)


@dataclass
class JobResult:
    key: str
    ok: bool
    value: Any = None
    error: str | None = None
    error_type: str | None = None
    setup_failed: bool = False


_NO_SETUP = object()


class WorkerSetupError(CrashcastError):
    """A worker could not build its resources (e.g. a model's weights are missing)."""


class ExecutorError(ConfigError):
    """An executor that cannot be used here: an unknown name, an address without Ray, or Ray not installed."""


class Lazy:
    """A per-worker resource built on first use (`get()`), so a resumed run whose clips are all done
    never loads a model. A failure to build is a `WorkerSetupError`: it stops the run."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build
        self._value: Any = _NO_SETUP

    def get(self) -> Any:
        if isinstance(self._value, WorkerSetupError):
            raise self._value  # failed once: never retry a multi-GB build for the next clip
        if self._value is _NO_SETUP:
            try:
                self._value = self._build()
            except Exception as e:
                self._value = e if isinstance(e, WorkerSetupError) else WorkerSetupError(str(e) or repr(e))
                raise self._value from e
        return self._value


_setup: Callable[[], Any] | None = None  # this worker's setup, and what it returned (built once)
_resource: Any = _NO_SETUP


def _call(fn: Callable[..., Any], key: str, args: tuple) -> JobResult:
    global _resource
    if _setup is not None and _resource is _NO_SETUP:
        try:
            _resource = _setup()
        except Exception as e:
            log.debug("worker setup failed", exc_info=True)
            return JobResult(key, False, error=str(e) or repr(e), error_type=type(e).__name__, setup_failed=True)
    try:
        return JobResult(key, True, fn(_resource, *args) if _setup is not None else fn(*args))
    except WorkerSetupError as e:
        return JobResult(key, False, error=str(e), error_type=type(e).__name__, setup_failed=True)
    except Exception as e:  # one bad clip must not stop the run: report it to the caller
        log.debug("job %s failed", key, exc_info=True)
        return JobResult(key, False, error=str(e) or repr(e), error_type=type(e).__name__)


def _use_setup(setup: Callable[[], Any] | None) -> None:
    global _setup, _resource
    _setup, _resource = setup, _NO_SETUP


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


def _init_worker(parent_pid: int, setup: Callable[[], Any] | None = None, threads: int | None = None) -> None:
    """Worker initializer: exit with the parent, use one OpenCV thread, and remember the per-worker
    `setup` (run before the first job). A forked worker inherits the OpenCV setting from `run_jobs`
    (reconfiguring OpenCV's thread pool inside a forked child whose parent had used it deadlocks); a
    spawned one sets it here."""
    _die_with_parent(parent_pid)
    _use_setup(setup)
    if threads and "torch" not in sys.modules:  # torch reads these when it starts its thread pools
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))  # N workers x all cores each would oversubscribe
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


def run_jobs(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[str, tuple]],
    workers: int = 1,
    description: str = "working",
    progress: bool = True,
    setup: Callable[[], Any] | None = None,
) -> list[JobResult]:
    """Call fn(*args) for every (key, args), or fn(resource, *args) with `resource = setup()` built
    once per worker; with workers > 1 in a process pool. Results in job order. Raises
    WorkerSetupError when `setup` fails (the remaining jobs are cancelled)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    results: dict[str, JobResult] = {}
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    from rich.console import Console

    with Progress(*columns, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
        task = bar.add_task(description, total=len(jobs))
        if workers <= 1 or len(jobs) <= 1:
            _use_setup(setup)
            try:
                for key, args in jobs:
                    results[key] = r = _call(fn, key, args)
                    if r.setup_failed:
                        raise WorkerSetupError(r.error or "worker setup failed")
                    bar.advance(task)
            finally:
                _use_setup(None)
        else:
            import cv2

            threads = cv2.getNumThreads()
            cv2.setNumThreads(1)  # inherited by forked workers (see _init_worker)
            gc.collect()  # the parent's garbage is freed here, where its threads exist (module docstring)
            gc.freeze()
            try:
                with ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                         initargs=(os.getpid(), setup, max(1, (os.cpu_count() or 1) // workers))) as pool:
                    futures = {pool.submit(_call, fn, key, args): key for key, args in jobs}
                    for fut in as_completed(futures):
                        key = futures[fut]
                        try:
                            results[key] = r = fut.result()
                        except Exception as e:  # the worker process itself died (e.g. killed for memory)
                            results[key] = r = JobResult(key, False, error=f"worker died: {e}", error_type=type(e).__name__)
                        if r.setup_failed:
                            pool.shutdown(wait=True, cancel_futures=True)
                            raise WorkerSetupError(r.error or "worker setup failed")
                        bar.advance(task)
            finally:
                gc.unfreeze()
                cv2.setNumThreads(threads)
    return [results[k] for k, _ in jobs]


#: what the Ray executor needs (`runtime.executors.get_executor` and `runtime.ray_executor` say it)
RAY_INSTALL_HINT = 'the Ray executor needs ray: pip install "crashcast[distributed]"'
