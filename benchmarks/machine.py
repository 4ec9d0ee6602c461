"""What the benchmarks say about the machine they ran on, and how they measure time and memory on it
(imported by the scripts beside it)."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def load_text() -> str:
    """The load average: other work on the machine makes timings noisy."""
    try:
        one, five, fifteen = os.getloadavg()
        return f"load average {one:.2f}, {five:.2f}, {fifteen:.2f} (1, 5, 15 min)"
    except OSError:
        return "load average unknown"


#: the memory units the benchmarks report in: name -> (bytes, the suffix of the figures' keys)
UNITS = {"MiB": (2**20, "mb"), "GB": (1e9, "gb")}


def proc_memory(field: str) -> int | None:
    """A memory figure of this process in bytes, from /proc/self/status: "VmRSS" (now) or "VmHWM" (the
    peak since the last reset); for "VmHWM" the peak ru_maxrss where /proc is missing, else None."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    if field == "VmHWM":
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return None


class Meter:
    """Wall time and memory of the stages of a benchmark on one device: timings with CUDA
    synchronisation, the process's resident memory (VmRSS; peak VmHWM, reset per stage where Linux
    allows it) and, on CUDA, torch's allocated and reserved GPU memory (peaks reset per stage).
    Figures are in `unit` ("MiB" or "GB"), under keys ending in its suffix (`peak_rss_mb`, ...)."""

    def __init__(self, device: str, unit: str = "MiB") -> None:
        import torch

        self.torch = torch
        self.cuda = device.startswith("cuda")
        self.scale, self.suffix = UNITS[unit]

    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize()

    def free(self) -> None:
        """Collect garbage and give torch's cached GPU memory back, so the next stage starts clean."""
        import gc

        gc.collect()
        if self.cuda:
            self.torch.cuda.synchronize()
            self.torch.cuda.empty_cache()

    def reset(self) -> None:
        """Start the peaks anew: torch's peak GPU statistics and VmHWM (back to the current RSS)."""
        self.sync()
        if self.cuda:
            self.torch.cuda.reset_peak_memory_stats()
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass

    def _in_unit(self, n: float | None) -> float | None:
        return None if n is None else n / self.scale

    def now(self) -> dict[str, float | None]:
        """GPU memory allocated and reserved by torch (None on a CPU) and the resident memory, now."""
        c, s = self.cuda, self.suffix
        return {f"allocated_{s}": self._in_unit(self.torch.cuda.memory_allocated()) if c else None,
                f"reserved_{s}": self._in_unit(self.torch.cuda.memory_reserved()) if c else None,
                f"rss_{s}": self._in_unit(proc_memory("VmRSS"))}

    def peak(self) -> dict[str, float | None]:
        """The peaks since the last `reset()`: GPU memory allocated and reserved, resident memory."""
        self.sync()
        c, s = self.cuda, self.suffix
        return {f"peak_allocated_{s}": self._in_unit(self.torch.cuda.max_memory_allocated()) if c else None,
                f"peak_reserved_{s}": self._in_unit(self.torch.cuda.max_memory_reserved()) if c else None,
                f"peak_rss_{s}": self._in_unit(proc_memory("VmHWM"))}

    def peaks(self) -> tuple[float | None, float | None]:
        """(peak resident memory, peak GPU memory allocated or None) since the last `reset()`."""
        p = self.peak()
        return p[f"peak_rss_{self.suffix}"], p[f"peak_allocated_{self.suffix}"]

    def time(self, fn: Callable[[], Any], repeat: int) -> tuple[Any, float, float | None, float | None]:
        """fn's result, the median of `repeat` timed calls, and the peak memories over them (`peaks()`)."""
        self.reset()
        seconds = []
        out = None
        for _ in range(repeat):
            self.sync()
            t = time.perf_counter()
            out = fn()
            self.sync()
            seconds.append(time.perf_counter() - t)
        return out, statistics.median(seconds), *self.peaks()
