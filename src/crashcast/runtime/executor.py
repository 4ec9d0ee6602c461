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

Interrupts stop a run promptly: on Ctrl-C (SIGINT) or SIGTERM the queued jobs are cancelled, the
running workers are terminated (their outputs are atomic: a killed job leaves no file under its final
name, and the next run removes its temporary one), the progress bar stops, and the exception goes on
to the caller with a warning saying how many jobs finished. Workers ignore SIGINT (a terminal's Ctrl-C
reaches the whole process group: the parent decides) and die at once on SIGTERM. SIGTERM, whose
default action would end the parent before any cleanup, is raised as `Terminated` while a run is in
`sigterm_raises()`; once the cleanup is done the process still ends by SIGTERM (exit status 143).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import contextmanager
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


class Terminated(BaseException):
    """SIGTERM, raised in the main thread inside `sigterm_raises()` so that cleanup runs (like
    KeyboardInterrupt, not an `Exception`: no `except Exception` swallows it)."""


_sigterm_depth = 0  # how many `sigterm_raises` blocks are active (the outermost installed the handler)
_terminating = False  # a SIGTERM was raised: later ones wait for the cleanup to finish


def _raise_terminated(signum: int, frame: object) -> None:
    global _terminating
    if _terminating:
        return  # already stopping: a second SIGTERM must not interrupt the cleanup
    _terminating = True
    raise Terminated(f"signal {signum} (SIGTERM)")


@contextmanager
def sigterm_raises() -> Iterator[None]:
    """Inside this block SIGTERM raises `Terminated` in the main thread, so `finally` blocks run
    (workers stopped, temporary files removed); leaving the outermost block by it, the process ends by
    SIGTERM as it would have at once (exit status 143). Nothing changes outside the main thread, or
    where a program has its own SIGTERM handler (only the default action is deferred). Nests."""
    global _sigterm_depth, _terminating
    if _sigterm_depth == 0:
        if (threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM")
                or signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL):
            yield
            return
        _terminating = False
        signal.signal(signal.SIGTERM, _raise_terminated)
    _sigterm_depth += 1
    terminated = False
    try:
        yield
    except Terminated:
        terminated = True
        raise
    finally:
        _sigterm_depth -= 1
        if _sigterm_depth == 0:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            if terminated:  # the cleanup is done: end as the signal's default action would have
                logging.shutdown()
                sys.stdout.flush()
                sys.stderr.flush()
                os.kill(os.getpid(), signal.SIGTERM)


def stop_reason(e: BaseException) -> str:
    """How an interrupt is named in messages."""
    return "Ctrl-C (SIGINT)" if isinstance(e, KeyboardInterrupt) else "SIGTERM" if isinstance(e, Terminated) else type(e).__name__


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
    """Worker initializer: exit with the parent, leave Ctrl-C to the parent and die at once on
    SIGTERM (the parent's, inherited by a fork, would raise), use one OpenCV thread, and remember the
    per-worker `setup` (run before the first job). A forked worker inherits the OpenCV setting from
    `run_jobs` (reconfiguring OpenCV's thread pool inside a forked child whose parent had used it
    deadlocks); a spawned one sets it here."""
    global _sigterm_depth, _terminating
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # else a job catches it and the worker takes the next one
    if hasattr(signal, "SIGTERM"):
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    _sigterm_depth, _terminating = 0, False  # a fork inherits the parent's (inside `sigterm_raises`)
    _die_with_parent(parent_pid)
    _use_setup(setup)
    if threads and "torch" not in sys.modules:  # torch reads these when it starts its thread pools
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, str(threads))  # N workers x all cores each would oversubscribe
    import cv2

    if cv2.getNumThreads() != 1:
        cv2.setNumThreads(1)


STOP_GRACE_S = 2.0  # how long a terminated worker may take to exit before it is killed


def _stop_pool(pool: ProcessPoolExecutor, futures: dict[Future, str], results: dict[str, JobResult]) -> None:
    """End the run now: terminate the workers (killed when they take longer than STOP_GRACE_S), so
    that the pool fails every job not done (none is started any more), then add to `results` the
    jobs whose result arrived meanwhile. Futures are not cancelled here: Python 3.11's pool would
    then fail setting a cancelled future's error when it finds its workers dead."""
    # the executor has no public way to stop a running job: its worker processes are ended directly
    processes = list((getattr(pool, "_processes", None) or {}).values())
    for p in processes:
        if p.is_alive():
            p.terminate()
    deadline = time.monotonic() + STOP_GRACE_S
    for p in processes:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            p.kill()
            p.join(1.0)
    pool.shutdown(wait=True, cancel_futures=True)  # quick: no worker is left to wait for
    for fut, key in futures.items():
        if key not in results and fut.done() and not fut.cancelled() and fut.exception() is None:
            results[key] = fut.result()


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
    WorkerSetupError when `setup` fails (the remaining jobs are cancelled). Ctrl-C or SIGTERM stops
    the run within a few seconds (module docstring): KeyboardInterrupt or `Terminated` is raised
    once the queued jobs are cancelled and the running ones stopped, after a warning with the counts."""
    results: dict[str, JobResult] = {}
    try:
        with sigterm_raises():
            _run(fn, jobs, workers, description, progress, setup, results)
    except (KeyboardInterrupt, Terminated) as e:
        log.warning("%s: stopped by %s: %d of %d finished; the other %d were stopped or never started", description,
                    stop_reason(e), len(results), len(jobs), len(jobs) - len(results))
        raise
    return [results[k] for k, _ in jobs]


def _run(fn: Callable[..., Any], jobs: Sequence[tuple[str, tuple]], workers: int, description: str, progress: bool,
         setup: Callable[[], Any] | None, results: dict[str, JobResult]) -> None:
    """`run_jobs`' work: fills `results` (key -> result) as jobs finish."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
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
            return
        import cv2

        threads = cv2.getNumThreads()
        cv2.setNumThreads(1)  # inherited by forked workers (see _init_worker)
        gc.collect()  # the parent's garbage is freed here, where its threads exist (module docstring)
        gc.freeze()
        try:
            pool = ProcessPoolExecutor(max_workers=workers, initializer=_init_worker,
                                       initargs=(os.getpid(), setup, max(1, (os.cpu_count() or 1) // workers)))
            futures: dict[Future, str] = {}
            try:
                futures.update((pool.submit(_call, fn, key, args), key) for key, args in jobs)
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
            except BaseException:  # Ctrl-C, SIGTERM or an error here: nothing more starts, nothing keeps running
                old = _ignore_sigint()  # a second Ctrl-C must not cut the stop short
                try:
                    _stop_pool(pool, futures, results)
                finally:
                    _restore_sigint(old)
                raise
            pool.shutdown(wait=True)
        finally:
            gc.unfreeze()
            cv2.setNumThreads(threads)


def _ignore_sigint() -> Any:
    if threading.current_thread() is not threading.main_thread():
        return None
    return signal.signal(signal.SIGINT, signal.SIG_IGN)


def _restore_sigint(old: Any) -> None:
    if old is not None:
        signal.signal(signal.SIGINT, old)


#: what the Ray executor needs (`runtime.executors.get_executor` and `runtime.ray_executor` say it)
RAY_INSTALL_HINT = 'the Ray executor needs ray: pip install "crashcast[distributed]"'
