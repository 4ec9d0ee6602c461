"""The Ray executor against the local one: the same clips, the same number of workers, this machine.

Prints for each executor the wall time of `extract_run` (Ray: also the part spent starting the local
Ray instance and its actors), clips per minute, clip-seconds per wall-second, and the peak resident
memory of each worker process (Linux `VmHWM`, read by the job itself after each clip; a forked local
worker's figure includes the pages it shares with its parent). It checks that both runs wrote the
same window_meta.json files, byte for byte.

    python benchmarks/ray_vs_local.py [--n 8] [--workers 2] [--preset classic] [--repeat 2]

This machine's speed drifts (a shared VM): the two executors run back to back, best of --repeat.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from crashcast import extract as extract_mod
from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.synthetic import generate
from crashcast.extract import extract_run

_extract_job = extract_mod._extract_job


def _job(backends, clip, run_dir, cfg_json):
    """extract's job, then one line "<pid> <peak RSS KiB>" appended to <run>/../rss.txt. Defined in
    __main__: Ray pickles it by value, so its workers need not import this file."""
    result = _extract_job(backends, clip, run_dir, cfg_json)
    hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM:")).split()[1]
    with open(Path(run_dir).parent / "rss.txt", "a") as f:
        f.write(f"{os.getpid()} {hwm}\n")
    return result


def _metas(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("window_meta.json"))}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--preset", default="classic")
    ap.add_argument("--repeat", type=int, default=2)
    args = ap.parse_args()
    import ray

    cfg = load_config(args.preset)
    extract_mod._extract_job = _job
    print(f"{args.n} synthetic clips, preset {args.preset}, {args.workers} workers, {os.cpu_count()} cores, "
          f"ray {ray.__version__}, load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        generate(args.n, data, seed=123, workers=args.workers, progress=False)
        clips = read_csv(data / "annotations.csv")
        metas = {}
        for executor in ("local", "ray"):
            best = None
            for i in range(args.repeat):
                work = Path(tmp) / f"{executor}-{i}"
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir()
                t_init = 0.0
                if executor == "ray":  # started here so its cost is measured apart from the run's
                    t0 = time.time()
                    ray.init(address="local", num_cpus=max(args.workers, os.cpu_count() or 1), include_dashboard=False,
                             log_to_driver=False)
                    t_init = time.time() - t0
                t0 = time.time()
                s = extract_run(clips, work / "run", cfg, workers=args.workers, progress=False, executor=executor)
                wall = time.time() - t0
                if executor == "ray":
                    ray.shutdown()
                rss: dict[str, int] = {}
                for line in (work / "rss.txt").read_text().splitlines():
                    pid, kib = line.split()
                    rss[pid] = max(rss.get(pid, 0), int(kib))
                if best is None or wall + t_init < best[0] + best[1]:
                    best = (wall, t_init, s, sorted(rss.values(), reverse=True))
                metas[executor] = _metas(work / "run")
            wall, t_init, s, peaks = best
            total = wall + t_init
            parts = f"ray.init {t_init:.1f} s + run {wall:.1f} s, its actors' start included" if t_init else f"run {wall:.1f} s"
            print(f"{executor:5s}: {total:6.1f} s ({parts}), {s.ok} ok / {s.failed} failed, "
                  f"{60 * s.ok / total:.1f} clips/min, {s.clip_seconds / total:.2f}x real time; "
                  f"peak RSS per worker: {', '.join(f'{k / 1024:.0f} MiB' for k in peaks)}")
        same = metas["local"] == metas["ray"] and len(metas["local"]) > 0
        print(f"window_meta.json files identical: {same} ({len(metas['local'])} files)")


if __name__ == "__main__":
    main()
