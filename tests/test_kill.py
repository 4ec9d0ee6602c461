"""kill -9 of an extraction: no crashcast process outlives it, and the rerun's outputs equal an
uninterrupted run's, byte for byte (atomic writes, resume, and workers that exit with their parent)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="reads /proc to find processes")

N_CLIPS = 6


def _extract(csv: Path, videos: Path, run: Path, workers: int) -> list[str]:
    return [sys.executable, "-m", "crashcast.cli", "extract", "--annotations", str(csv), "--videos", str(videos),
            "--out", str(run), "--workers", str(workers)]


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (forked workers keep their parent's)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((line for line in (d / "status").read_text().splitlines() if line.startswith("State:")), "")
        except OSError:
            continue
        if text in cmd and "zombie" not in state:
            pids.append(int(d.name))
    return pids


def _tree(run: Path) -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file() and p.name != "errors.jsonl"}


def _done_clips(run: Path) -> int:
    return sum(len(list(d.glob("*/window_meta.json"))) == 3 for d in (run / "clips").glob("*")) if (run / "clips").exists() else 0


@pytest.mark.parametrize("workers", [2, 1])
def test_kill_9_midway_leaves_no_process_and_the_rerun_equals_an_uninterrupted_run(synth_small, tmp_path, workers):
    csv = tmp_path / "a.csv"
    csv.write_text("".join((synth_small / "annotations.csv").read_text().splitlines(keepends=True)[: N_CLIPS + 1]))
    reference, run = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(_extract(csv, synth_small, reference, workers), check=True, capture_output=True, timeout=300)

    proc = subprocess.Popen(_extract(csv, synth_small, run, workers), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _done_clips(run) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and _done_clips(run) < N_CLIPS, "the run ended before it could be killed midway"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t_kill = time.time()
    while _processes_mentioning(str(run)) and time.time() < t_kill + 10:
        time.sleep(0.2)
    left = _processes_mentioning(str(run))
    for pid in left:  # do not leave them behind for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"crashcast processes still alive 10 s after kill -9 of their parent: {left}"
    assert not (run / "features.parquet").exists(), "killed before the end: the table must not exist yet"

    rerun = subprocess.run(_extract(csv, synth_small, run, workers), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stdout and "(0 already done)" not in rerun.stdout
    assert _tree(run) == _tree(reference)  # every file, byte for byte; no temporary file left behind


def test_ctrl_c_midway_ends_cleanly_and_the_rerun_equals_an_uninterrupted_run(synth_small, tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("".join((synth_small / "annotations.csv").read_text().splitlines(keepends=True)[: N_CLIPS + 1]))
    reference, run = tmp_path / "reference", tmp_path / "interrupted"
    subprocess.run(_extract(csv, synth_small, reference, 2), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(_extract(csv, synth_small, run, 2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C
    deadline = time.time() + 120
    while _done_clips(run) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and _done_clips(run) < N_CLIPS, "the run ended before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "Traceback" not in err, err
    time.sleep(1.5)  # the watchdog period
    assert not _processes_mentioning(str(run))
    rerun = subprocess.run(_extract(csv, synth_small, run, 2), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert _tree(run) == _tree(reference)


def test_two_concurrent_extracts_into_one_run_both_finish_with_the_same_outputs(synth_small, tmp_path):
    csv = tmp_path / "a.csv"
    csv.write_text("".join((synth_small / "annotations.csv").read_text().splitlines(keepends=True)[:4]))
    reference, run = tmp_path / "reference", tmp_path / "shared"
    subprocess.run(_extract(csv, synth_small, reference, 1), check=True, capture_output=True, timeout=300)
    procs = [subprocess.Popen(_extract(csv, synth_small, run, 1), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e for _, e in results]
    assert _tree(run) == _tree(reference)
