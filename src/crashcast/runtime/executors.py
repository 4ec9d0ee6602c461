"""Choosing where jobs run: `get_executor("local" | "ray", workers, address)` checks the choice
before any work starts and gives a `JobExecutor` whose `run` hands the jobs to local processes
(`runtime.executor.run_jobs`) or to Ray actors (`runtime.ray_executor.run_jobs_ray`): the same
contract, the same outputs. Extraction and prediction both use it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from crashcast.runtime.executor import RAY_INSTALL_HINT, ExecutorError, JobResult, run_jobs

ExecutorKind = Literal["local", "ray"]
EXECUTORS: tuple[ExecutorKind, ...] = ("local", "ray")


@dataclass(frozen=True)
class JobExecutor:
    """Where `run` sends the jobs: `workers` local processes, or `workers` Ray actors (on this machine,
    or on the cluster at `address`; each asks for the GPUs `device` needs). The outputs are the same."""

    kind: ExecutorKind
    workers: int = 1
    address: str | None = None
    device: str = "auto"

    def run(self, fn: Callable[..., Any], jobs: Sequence[tuple[str, tuple]], description: str = "working",
            progress: bool = True, setup: Callable[[], Any] | None = None) -> list[JobResult]:
        """`run_jobs` (or `run_jobs_ray`): one `JobResult` per job, in job order."""
        if self.kind == "ray":
            from crashcast.runtime.ray_executor import run_jobs_ray

            return run_jobs_ray(fn, jobs, self.workers, description, progress, setup=setup, address=self.address,
                                device=self.device)
        return run_jobs(fn, jobs, self.workers, description, progress, setup=setup)


def get_executor(kind: str, workers: int = 1, address: str | None = None, device: str = "auto") -> JobExecutor:
    """The executor named `kind` ("local" or "ray"), checked before any work starts: an unknown name,
    an `address` for the local executor, or Ray not installed raise `ExecutorError`."""
    if kind not in EXECUTORS:
        raise ExecutorError(f"unknown executor {kind!r}: local or ray")
    if address and kind != "ray":
        raise ExecutorError(f"a cluster address ({address}) needs the ray executor")
    if kind == "ray":
        import importlib.util

        if importlib.util.find_spec("ray") is None:
            raise ExecutorError(RAY_INSTALL_HINT)
    return JobExecutor(kind, workers, address, device)  # type: ignore[arg-type]
