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
returned as a failure ("worker died ...") while the run goes on. Nothing is waited on without a
bound: a clip still running after `task_timeout_s` has its actor killed and is returned as a failure
(not retried: a clip that hangs once hangs again); an actor not started (scheduled, its resource
built) within `start_timeout_s` is given up, and with no actor left the run stops (`ExecutorError`).
The address is checked before Ray sees it (`check_address`) and the cluster's port is tried with a
bound before `ray.init`, which otherwise waits minutes on an address where nothing answers. A run whose driver dies leaves
every finished clip complete on disk (the job writes atomically, `crashcast.runtime.store`) and a
rerun resumes. Outputs are written by the actor, under the run folder's path as the driver sees it:
on a cluster that folder must be on a file system every node mounts at the same path.
"""

from __future__ import annotations

import logging
import os
import re
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from crashcast.runtime.executor import (
    RAY_INSTALL_HINT,
    ExecutorError,
    JobResult,
    Terminated,
    WorkerSetupError,
    _call,
    _use_setup,
    stop_reason,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_RETRIES = 2  # a clip whose worker died is tried on this many fresh workers, then recorded as failed
DEFAULT_TASK_TIMEOUT_S = 3600.0  # a clip still running after this long is stopped and recorded as failed
DEFAULT_START_TIMEOUT_S = 600.0  # an actor not started after this long is given up
CONNECT_TIMEOUT_S = 10.0  # the cluster's port must answer within this long
POLL_S = 5.0  # the longest single wait on Ray (deadlines are checked between waits)
ADDRESS_FORMS = ("auto (the cluster this machine belongs to), local (a new Ray instance here), host:port (a "
                 "cluster's head node, e.g. 10.0.0.5:6379) or ray://host:port (Ray Client, e.g. ray://head:10001)")
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


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_PORT = re.compile(rf"(?P<host>\[[0-9A-Fa-f:.]+\]|{_LABEL}(?:\.{_LABEL})*):(?P<port>[0-9]{{1,5}})")


def split_address(address: str, what: str = "--address") -> tuple[str, int]:
    """(host, port) of a `host:port` or `ray://host:port` address; `ExecutorError` naming `what` and the
    value when it is not one (a bracketed IPv6 host, `[::1]:6379`, is one)."""
    import ipaddress

    rest = address.removeprefix("ray://")
    m = _HOST_PORT.fullmatch(rest)
    if m is None:
        if "://" in address and not address.startswith("ray://"):
            problem = f"{address.split('://')[0]}:// is not a Ray address scheme (only ray://)"
        elif re.fullmatch(rf"{_LABEL}(?:\.{_LABEL})*", rest):
            problem = "no port (host:port)"
        else:
            problem = "not a Ray address"
        raise ExecutorError(f"{what} {address!r}: {problem}; use {ADDRESS_FORMS}")
    host, port = m["host"], int(m["port"])
    if not 1 <= port <= 65535:
        raise ExecutorError(f"{what} {address!r}: port {port} is out of range (1 to 65535)")
    if host.startswith("["):
        try:
            host = str(ipaddress.IPv6Address(host[1:-1]))
        except ValueError:
            raise ExecutorError(f"{what} {address!r}: {host} is not an IPv6 address") from None
    elif re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            raise ExecutorError(f"{what} {address!r}: {host} is not an IPv4 address") from None
    return host, port


def check_address(address: str | None, what: str = "--address") -> str | None:
    """`address` as `ray.init` takes it, checked without importing Ray: None or "local" (a new Ray
    instance on this machine), "auto" (the cluster this machine belongs to: $RAY_ADDRESS, else the
    latest `ray start`), "host:port" (a head node's GCS port) or "ray://host:port" (Ray Client,
    which needs `ray[client]`), the forms `ray.init` documents. Anything else (a bare host, a port
    out of range, another scheme: Ray imports a Python module named by it) raises `ExecutorError`
    naming `what` and the value; Ray itself gives a traceback or waits minutes."""
    if address is None or address in ("auto", "local"):
        return address
    if not isinstance(address, str):
        raise ExecutorError(f"{what} {address!r}: not a Ray address; use {ADDRESS_FORMS}")
    split_address(address, what)
    if address.startswith("ray://"):
        import importlib.util

        if importlib.util.find_spec("grpc") is None:
            raise ExecutorError(f'{what} {address!r}: a ray:// address needs Ray Client: pip install "ray[client]"')
    return address


def _reach(address: str, what: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Open (and close) a TCP connection to the cluster at `address` within `timeout` seconds, or raise
    `ExecutorError` saying why: `ray.init` would otherwise wait minutes on a closed port."""
    import socket

    host, port = split_address(address, what)
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except socket.gaierror as e:
        raise ExecutorError(f"{what} {address!r}: cannot resolve the host {host} ({e.strerror or e})") from None
    except TimeoutError:
        raise ExecutorError(f"{what} {address!r}: no answer from the Ray cluster within {timeout:g} s") from None
    except OSError as e:
        raise ExecutorError(f"{what} {address!r}: cannot reach the Ray cluster ({e.strerror or e}); is `ray start "
                            "--head` running there, with that port open to this machine?") from None


def _resolve_auto(what: str) -> str:
    """The concrete address "auto" stands for ($RAY_ADDRESS, else the latest `ray start` on this
    machine), checked; `ExecutorError` where there is none."""
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return check_address(env, "$RAY_ADDRESS (--address auto)") or env
    try:
        from ray._private.services import canonicalize_bootstrap_address

        found = canonicalize_bootstrap_address("auto")
    except ConnectionError as e:
        raise ExecutorError(f"{what} auto: {str(e).strip().splitlines()[0]}") from None
    except Exception:  # a private helper that moved: leave the search to ray.init
        log.debug("could not resolve --address auto ahead of ray.init", exc_info=True)
        return "auto"
    return found or "auto"


def init_ray(address: str | None = None, num_cpus: int | None = None, what: str = "--address") -> bool:
    """Start a new local Ray instance (`address` None or "local", `num_cpus` CPUs) or join a cluster
    (`address`, e.g. "auto" or "head-node:6379", checked by `check_address`; its port must answer
    within CONNECT_TIMEOUT_S). Returns whether this call started or joined it (and so should shut
    it down); an already initialised Ray is used as it is. A cluster that cannot be joined raises
    `ExecutorError` naming `what` and the address."""
    check_address(address, what)
    ray = _ray()
    if ray.is_initialized():
        return False
    kwargs: dict[str, Any] = {"include_dashboard": False, "ignore_reinit_error": True, "log_to_driver": True}
    if address and address != "local":
        target = _resolve_auto(what) if address == "auto" else address
        if target != "auto":
            _reach(target, what)
        kwargs["address"] = target
    else:  # "local": a new instance, even where a cluster runs or RAY_ADDRESS is set (that is --address auto)
        kwargs.update(address="local", num_cpus=num_cpus or os.cpu_count() or 1)
    try:
        ray.init(**kwargs)
    except (ConnectionError, ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "address" not in kwargs or kwargs["address"] == "local":
            raise ExecutorError(f"cannot start Ray on this machine: {first}") from None
        raise ExecutorError(f"{what} {address!r}: cannot join the Ray cluster: {first}") from None
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
    task_timeout_s: float = DEFAULT_TASK_TIMEOUT_S,
    start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
) -> list[JobResult]:
    """`run_jobs` on `workers` Ray actors (see the module docstring). Ray is started locally, or joins
    the cluster at `address`, unless it is already initialised (then it is left running). Each actor
    asks for `num_gpus` GPUs (None: `gpus_per_worker(device)`). Every wait is bounded: a clip by
    `task_timeout_s` (then a failure), an actor's start by `start_timeout_s`."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    if not jobs:
        return []
    for name, value in (("task_timeout_s", task_timeout_s), ("start_timeout_s", start_timeout_s)):
        if not 0 < value < float("inf"):
            raise ExecutorError(f"{name}={value!r}: a positive, finite number of seconds")
    if max_retries < 0:
        raise ExecutorError(f"max_retries={max_retries!r}: 0 or more")
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
    started = init_ray(address, max(workers, os.cpu_count() or 1))
    gpus = gpus_per_worker(device) if num_gpus is None else float(num_gpus)
    remote_worker = ray.remote(_Worker).options(num_cpus=1, num_gpus=gpus, max_restarts=0, max_concurrency=1)
    actors: list[Any] = []
    n_actors = max(1, min(workers, len(jobs)))

    def first_line(e: BaseException) -> str:
        return str(e).strip().splitlines()[0] if str(e).strip() else repr(e)

    def kill(actor: Any) -> None:
        try:
            ray.kill(actor, no_restart=True)
        except Exception:  # already gone
            log.debug("ray.kill failed", exc_info=True)

    pending = deque((key, args, 0) for key, args in jobs)  # (key, args, deaths so far)
    idle: list[Any] = []  # started actors with nothing to do
    starting: dict[Any, tuple[Any, float]] = {}  # ready ref (actor.pid) -> (actor, when it was asked for)
    running: dict[Any, tuple[Any, str, tuple, int, float]] = {}  # object ref -> (actor, key, args, deaths, submitted)
    start_deaths = 0  # actors lost while starting since one last started

    def new_actor() -> None:
        a = remote_worker.remote(fn, setup)
        actors.append(a)
        starting[a.pid.remote()] = (a, time.monotonic())  # runs after the constructor (setup)

    def lost_start(actor: Any, why: str) -> None:
        """An actor that will not start: go on with the others, or stop when none is left."""
        nonlocal start_deaths
        kill(actor)
        start_deaths += 1
        if idle or running or starting:
            log.warning("a Ray worker %s; going on with the %d others", why, len(idle) + len(running) + len(starting))
        elif start_deaths <= max_retries and "died" in why:
            log.warning("a Ray worker %s; starting another (%d of %d)", why, start_deaths, max_retries)
            new_actor()
        else:
            raise ExecutorError(f"Ray: a worker {why}, and none is left to run the {len(pending)} clip(s) to do "
                                f"(each worker asks for 1 CPU and {gpus:g} GPU(s)); the finished clips are kept, "
                                "a rerun resumes")

    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    try:
        with Progress(*columns, disable=not progress, transient=False, console=Console(stderr=True)) as bar:
            task = bar.add_task(description, total=len(jobs))
            for _ in range(n_actors):
                new_actor()
            while pending or running:
                while pending and idle:
                    actor = idle.pop()
                    key, args, deaths = pending.popleft()
                    running[actor.run.remote(key, args)] = (actor, key, args, deaths, time.monotonic())
                if not pending and starting and not running:  # nothing left for the actors still starting
                    for ref, (actor, _) in list(starting.items()):
                        kill(actor)
                        del starting[ref]
                    continue
                now = time.monotonic()
                deadlines = [t + task_timeout_s for *_, t in running.values()]
                deadlines += [t + start_timeout_s for _, t in starting.values()]
                wait_s = min(POLL_S, max(0.0, min(deadlines) - now)) if deadlines else POLL_S
                ready, _ = ray.wait([*running, *starting], num_returns=1, timeout=wait_s)
                now = time.monotonic()
                for ref in ready:
                    if ref in starting:
                        actor, _ = starting.pop(ref)
                        try:
                            ray.get(ref)
                        except died as e:
                            if getattr(e, "actor_init_failed", False):  # e.g. crashcast not importable on that node
                                raise WorkerSetupError(f"a Ray worker could not start: {e}") from e
                            lost_start(actor, f"died while starting ({type(e).__name__}: {first_line(e)})")
                        else:
                            start_deaths = 0
                            idle.append(actor)
                        continue
                    actor, key, args, deaths, _ = running.pop(ref)
                    try:
                        r = ray.get(ref)
                    except died as e:
                        kill(actor)
                        if getattr(e, "actor_init_failed", False):
                            raise WorkerSetupError(f"a Ray worker could not start: {e}") from e
                        if pending or deaths < max_retries:
                            new_actor()
                        if deaths < max_retries:
                            log.warning("clip %s: its worker died (%s); retrying on a fresh worker (%d of %d)",
                                        key, type(e).__name__, deaths + 1, max_retries)
                            pending.appendleft((key, args, deaths + 1))
                            continue
                        r = JobResult(key, False, error=f"worker died on every try ({deaths + 1}): {first_line(e)}",
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
                for ref, (actor, key, _args, _deaths, t) in list(running.items()):
                    if now - t >= task_timeout_s and ref not in ready:
                        del running[ref]
                        kill(actor)  # an actor's running task cannot be cancelled; its process can
                        log.warning("clip %s: still running after %g s; stopped, recorded as failed", key, task_timeout_s)
                        results[key] = JobResult(key, False, error=f"still running after {task_timeout_s:g} s (the "
                                                 "time limit per clip, runtime.ray_task_timeout_s): stopped",
                                                 error_type="TimeoutError")
                        bar.advance(task)
                        if pending:
                            new_actor()
                for ref, (actor, t) in list(starting.items()):
                    if now - t >= start_timeout_s and ref not in ready:
                        del starting[ref]
                        lost_start(actor, f"did not start within {start_timeout_s:g} s (runtime.ray_start_timeout_s: "
                                          "no room for it on the cluster, or its models still loading)")
                if pending and not (idle or running or starting):  # every actor lost (a node with all of them)
                    new_actor()
    except (KeyboardInterrupt, Terminated) as e:  # the actors are killed below, the queued clips never start
        log.warning("%s: stopped by %s: %d of %d finished; the other %d were stopped or never started", description,
                    stop_reason(e), len(results), len(jobs), len(jobs) - len(results))
        raise
    finally:
        for a in actors:
            kill(a)
        if started:
            ray.shutdown()
    return [results[k] for k, _ in jobs]
