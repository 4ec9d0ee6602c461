"""Choosing where jobs run: `get_executor("local" | "ray", workers, address)` checks the choice
before any work starts and gives a `JobExecutor` whose `run` hands the jobs to local processes
(`runtime.executor.run_jobs`) or to Ray actors (`runtime.ray_executor.run_jobs_ray`): the same
contract, the same outputs. Extraction and prediction both use it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from crashcast.runtime.executor import RAY_INSTALL_HINT, ExecutorError, JobResult, run_jobs

if TYPE_CHECKING:
    from crashcast.settings import RuntimeConfig

ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorKind, ...] = ("local", "ray")


@dataclass(frozen=True)
class JobExecutor:
    """Where `run` sends the jobs: `workers` local processes, or `workers` Ray actors (on this machine,
    or on the cluster at `address`; each asks for the GPUs `device` needs). The outputs are the same.
    On Ray a clip is stopped after `task_timeout_s`, retried `task_retries` times when its worker dies,
    and a worker not started within `start_timeout_s` is given up (`runtime.ray_*`, RuntimeConfig)."""

    kind: ExecutorKind
    workers: int = 1
    address: str | None = None
    device: str = "auto"
    task_timeout_s: float | None = None  # None: the RuntimeConfig defaults
    task_retries: int | None = None
    start_timeout_s: float | None = None

    def run(self, fn: Callable[..., Any], jobs: Sequence[tuple[str, tuple]], description: str = "working",
            progress: bool = True, setup: Callable[[], Any] | None = None) -> list[JobResult]:
        """`run_jobs` (or `run_jobs_ray`): one `JobResult` per job, in job order."""
        if self.kind == "ray":
            from crashcast.runtime.ray_executor import run_jobs_ray

            limits = {k: v for k, v in (("task_timeout_s", self.task_timeout_s), ("max_retries", self.task_retries),
                                        ("start_timeout_s", self.start_timeout_s)) if v is not None}
            return run_jobs_ray(fn, jobs, self.workers, description, progress, setup=setup, address=self.address,
                                device=self.device, **limits)
        return run_jobs(fn, jobs, self.workers, description, progress, setup=setup)


def get_executor(kind: str, workers: int = 1, address: str | None = None, device: str = "auto",
                 runtime: RuntimeConfig | None = None) -> JobExecutor:
    """The executor named `kind` ("local" or "ray"), checked before any work starts: an unknown name,
    an `address` for the local executor, a malformed Ray address (`ray_executor.check_address`), or
    Ray not installed raise `ExecutorError`. `runtime`: its device and Ray limits (else `device` and
    the defaults)."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor {kind!r}: local or ray")
    if address and kind != "ray":
        raise ExecutorError(f"a cluster address ({address}) needs the ray executor")
    if kind == "ray":
        import importlib.util

        from crashcast.runtime.ray_executor import check_address

        check_address(address)  # before Ray's own parsing: a traceback, a hang or a module import there
        if importlib.util.find_spec("ray") is None:
            raise ExecutorError(RAY_INSTALL_HINT)
    if runtime is None:
        return JobExecutor(kind, workers, address, device)  # type: ignore[arg-type]
    return JobExecutor(kind, workers, address, runtime.device, runtime.ray_task_timeout_s,  # type: ignore[arg-type]
                       runtime.ray_task_retries, runtime.ray_start_timeout_s)
