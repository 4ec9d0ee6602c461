"""Run independent jobs (one per clip) on Ray actors: one machine or a cluster (extra `[distributed]`).

The same contract as `crashcast.runtime.executor.run_jobs`: `fn(resource, *args)` for every
(key, args) with `resource = setup()` built once per worker, a rich progress bar, one `JobResult` per
job in job order, a job that raises returned as a failure, and a `setup` that fails raising
`WorkerSetupError` (not one clip's fault: the run stops).

Each worker is one Ray actor (its own process, on whichever node has room): it builds its resource
in its constructor (the model weights load once per actor) and is handed one job at a time, so a
fast machine takes more clips than a slow one. An actor asks for 1 CPU and `num_gpus` GPUs
(fractions allowed: 0.5 packs two actors on one GPU); Ray then shows it only its GPU(s)
(CUDA_VISIBLE_DEVICES), so a config's device is `cuda` or `auto`, not `cuda:1`.

Faults: an actor whose process dies (killed, out of memory, its node lost) costs only the clip it
was running; that clip goes to a fresh actor, at most `max_retries` more times, and is then
returned as a failure ("worker died ...") while the run goes on. A run whose driver dies leaves
every finished clip complete on disk (the job writes atomically, `crashcast.runtime.store`) and a
rerun resumes. Outputs are written by the actor, under the run folder's path as the driver sees it:
on a cluster that folder must be on a file system every node mounts at the same path.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from crashcast.runtime.executor import (
    RAY_INSTALL_HINT,
    ExecutorError,
    JobResult,
    WorkerSetupError,
    _call,
    _use_setup,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2  # a clip whose worker died is tried on this many fresh workers, then recorded as failed
GPUS_ENV = "CRASHCAST_RAY_GPUS_PER_WORKER"  # overrides the GPUs each actor asks for (e.g. 0.5)

INSTALL_HINT = RAY_INSTALL_HINT


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ExecutorError(INSTALL_HINT) from None
    return ray


class _Worker:
    """One worker: builds `setup()` once, then runs the jobs it is handed (`executor._call`)."""

    def __init__(self, fn: Callable[..., Any], setup: Callable[[], Any] | None) -> None:
        import cv2

        if cv2.getNumThreads() != 1:
            cv2.setNumThreads(1)  # one thread per worker, as the local executor (its module docstring)
        self._fn = fn
        self._setup_error: JobResult | None = None
        _use_setup(setup)
        if setup is not None:  # in the constructor, as the local worker's initializer; a failure is
            from crashcast.runtime import executor  # reported by the first job (setup_failed), not here

            try:
                executor._resource = setup()
            except Exception as e:
                log.debug("worker setup failed", exc_info=True)
                self._setup_error = JobResult("", False, error=str(e) or repr(e), error_type=type(e).__name__,
                                              setup_failed=True)

    def run(self, key: str, args: tuple) -> JobResult:
        if self._setup_error is not None:
            self._setup_error.key = key
            return self._setup_error
        return _call(self._fn, key, args)

    def pid(self) -> int:
        return os.getpid()


def init_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Start a new local Ray instance (`address` None, `num_cpus` CPUs) or join a cluster (`address`,
    e.g. "auto" or "head-node:6379"). Returns whether this call started or joined it (and so
    should shut it down); an already initialised Ray is used as it is."""
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
    if address:
        kwargs["address"] = address
    else:  # "local": a new instance, even where a cluster runs or RAY_ADDRESS is set (that is --address auto)
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count() or 1)
    ray.init(**kwargs)
    return True


def gpus_per_worker(device: str = "auto") -> float:
    """GPUs each actor asks for: $CRASHCAST_RAY_GPUS_PER_WORKER when set; 0 for a `cpu` or `mps`
    device; 1 for `cuda`; for `auto`, 1 when the Ray cluster has a GPU, else 0. Ray must be running."""
    if os.environ.get(GPUS_ENV):
        return float(os.environ[GPUS_ENV])
    if device in ("cpu", "mps"):
        return 0.0
    if device.startswith("cuda"):
        return 1.0
    return 1.0 if _ray().cluster_resources().get("GPU", 0) >= 1 else 0.0


def run_jobs_ray(
    fn: Callable[..., Any],
    jobs: Sequence[tuple[str, tuple]],
    workers: int = 1,
    description: str = "working",
    progress: bool = True,
    setup: Callable[[], Any] | None = None,
    *,
    address: str | None = None,
    num_gpus: float | None = None,
    device: str = "auto",
    max_retries: int = DEFAULT_MAX_RETRIES,
) -> list[JobResult]:
    """`run_jobs` on `workers` Ray actors (see the module docstring). Ray is started locally, or joins
    the cluster at `address`, unless it is already initialised (then it is left running). Each actor
    asks for `num_gpus` GPUs (None: `gpus_per_worker(device)`)."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    ray = _ray()
    from ray.exceptions import (
        ActorUnavailableError,
        NodeDiedError,
        ObjectLostError,
        OutOfMemoryError,
        OwnerDiedError,
        RayActorError,
        RayTaskError,
        WorkerCrashedError,
    )

    died = (RayActorError, WorkerCrashedError, OutOfMemoryError, NodeDiedError, ObjectLostError, OwnerDiedError,
            ActorUnavailableError)
    results: dict[str, JobResult] = {}
    if not jobs:
        return []
    started = init_ray(address, max(workers, os.cpu_count() or 1))
    gpus = gpus_per_worker(device) if num_gpus is None else float(num_gpus)
    remote_worker = ray.remote(_Worker).options(num_cpus=1, num_gpus=gpus, max_restarts=0, max_concurrency=1)
    actors: list[Any] = []

    def new_actor() -> Any:
        a = remote_worker.remote(fn, setup)
        actors.append(a)
        return a

    pending = deque((key, args, 0) for key, args in jobs)  # (key, args, deaths so far)
    running: dict[Any, tuple[Any, str, tuple, int]] = {}  # object ref -> (actor, key, args, deaths)
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
            task = bar.add_task(description, total=len(jobs))
            idle = [new_actor() for _ in range(max(1, min(workers, len(jobs))))]
            while pending or running:
                while pending and idle:
                    actor = idle.pop()
                    key, args, deaths = pending.popleft()
                    running[actor.run.remote(key, args)] = (actor, key, args, deaths)
                ready, _ = ray.wait(list(running), num_returns=1)
                for ref in ready:
                    actor, key, args, deaths = running.pop(ref)
                    try:
                        r = ray.get(ref)
                    except died as e:
                        ray.kill(actor, no_restart=True)
                        if getattr(e, "actor_init_failed", False):  # e.g. crashcast not importable on that node
                            raise WorkerSetupError(f"a Ray worker could not start: {e}") from e
                        if pending or deaths < max_retries:
                            idle.append(new_actor())
                        if deaths < max_retries:
                            log.warning("clip %s: its worker died (%s); retrying on a fresh worker (%d of %d)",
                                        key, type(e).__name__, deaths + 1, max_retries)
                            pending.appendleft((key, args, deaths + 1))
                            continue
                        first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
                        r = JobResult(key, False, error=f"worker died on every try ({deaths + 1}): {first}",
                                      error_type=type(e).__name__)
                    except RayTaskError as e:  # not one of fn's exceptions (`_call` returns those), e.g. a
                        idle.append(actor)  # result that cannot be pickled
                        r = JobResult(key, False, error=str(e).strip().splitlines()[-1], error_type=type(e).__name__)
                    else:
                        idle.append(actor)
                    if r.setup_failed:
                        raise WorkerSetupError(r.error or "worker setup failed")
                    results[key] = r
                    bar.advance(task)
    finally:
        for a in actors:
            try:
                ray.kill(a, no_restart=True)
            except Exception:  # pragma: no cover - already gone
                pass
        if started:
            ray.shutdown()
    return [results[k] for k, _ in jobs]
