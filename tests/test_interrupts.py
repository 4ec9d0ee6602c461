"""Ctrl-C (SIGINT) and SIGTERM while workers run (issue 23, item 5): the run stops within seconds (the
queued jobs cancelled, the running workers ended, none left behind), says how many finished, keeps
the finished outputs complete, and a rerun finishes the rest; a temporary file a killed run left is
removed by the next run that writes the same file, and nothing else is."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from crashcast import api
from crashcast.data.video import probe
from crashcast.features.window_meta import read_window_meta
from crashcast.runtime.store import atomic_write_text, inside

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL") or not Path("/proc/self/cmdline").exists(),
                                reason="POSIX signals; reads /proc to find processes")

STOP_BOUND_S = 4.0  # a couple of seconds, with room for a loaded test machine (before the fix: until every clip was done)
N_CLIPS = 4  # two workers: one clip done when interrupted, one running, two queued


@pytest.fixture
def clips(synth_small, tmp_path) -> tuple[Path, list[Path]]:
    """An annotation file of the first N_CLIPS synthetic clips (`crashcast synth`), and their videos."""
    rows = (synth_small / "annotations.csv").read_text().splitlines(keepends=True)[: N_CLIPS + 1]
    csv = tmp_path / "annotations.csv"
    csv.write_text("".join(rows))
    return csv, [synth_small / f"{row.split(',')[0]}.mp4" for row in rows[1:]]


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "crashcast.cli", *args]


def _extract_cmd(csv: Path, videos: list[Path], run: Path) -> list[str]:
    return _cli("extract", "--annotations", str(csv), "--videos", str(videos[0].parent), "--out", str(run),
                "--workers", "2", "--backend", "classic")


def _predict_cmd(videos: list[Path], out: Path, *extra: str) -> list[str]:
    return _cli("predict", *map(str, videos), "--out", str(out), "--backend", "classic", *extra)


def _complete_clips(run: Path) -> list[Path]:
    """Clip folders whose three windows all have a window_meta.json."""
    clips = run / "clips"
    return [d for d in sorted(clips.glob("*")) if len(list(d.glob("*/window_meta.json"))) == 3] if clips.is_dir() else []


def _assert_clips_complete(run: Path) -> None:
    """Every window_meta.json under the final name reads and validates, and names keyframes that exist."""
    for path in (run / "clips").glob("*/*/window_meta.json"):
        meta = read_window_meta(path)
        for name in meta.frame_paths:
            if name is not None:
                assert inside(path.parent, name).stat().st_size > 0, f"{path}: keyframe {name} missing or empty"


def _parts(folder: Path) -> list[Path]:
    return [p for p in folder.rglob("*") if ".part" in p.name]


def _processes_mentioning(text: str) -> list[int]:
    """Live processes whose command line holds `text` (forked workers keep their parent's)."""
    pids = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit() or int(d.name) == os.getpid():
            continue
        try:
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((s for s in (d / "status").read_text().splitlines() if s.startswith("State:")), "")
        except OSError:
            continue
        if text in cmd and "zombie" not in state:
            pids.append(int(d.name))
    return pids


def _signal_when(proc: subprocess.Popen, ready: Callable[[], bool], sig: int, timeout_s: float = 120) -> float:
    """Send `sig` to `proc` once `ready()`; the time it was sent."""
    deadline = time.time() + timeout_s
    while not ready() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and ready(), "the run ended (or never got going) before it could be interrupted"
    proc.send_signal(sig)
    return time.time()


def _no_process_left(text: str) -> None:
    deadline = time.time() + 3
    while _processes_mentioning(text) and time.time() < deadline:
        time.sleep(0.1)
    left = _processes_mentioning(text)
    for pid in left:  # never leave them running for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    assert not left, f"processes still running after the run stopped: {left}"


# ----------------------------------------------------------------------------- the CLI


def test_ctrl_c_stops_extract_workers_at_once_keeps_finished_clips_and_a_rerun_resumes(clips, tmp_path):
    csv, videos = clips
    run, n = tmp_path / "run", len(videos)
    proc = subprocess.Popen(_extract_cmd(csv, videos, run), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # as a terminal's Ctrl-C
    sent = _signal_when(proc, lambda: len(_complete_clips(run)) >= 1, signal.SIGINT)
    _out, err = proc.communicate(timeout=60)
    stop_s = time.time() - sent
    assert proc.returncode == 130, err
    assert stop_s < STOP_BOUND_S, f"took {stop_s:.1f} s to stop after Ctrl-C"
    assert "Traceback" not in err, err
    assert "stopped by Ctrl-C (SIGINT)" in err and f"of {n} finished" in err and "again to resume" in err, err
    _no_process_left(str(run))
    done = _complete_clips(run)
    time.sleep(1.0)
    assert _complete_clips(run) == done, "workers went on writing clips after the run stopped"
    assert 1 <= len(done) < n, f"{len(done)} of {n} clips written: the interrupt did not stop the queued ones"
    _assert_clips_complete(run)
    assert not (run / "features.parquet").exists()

    rerun = subprocess.run(_extract_cmd(csv, videos, run), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"({len(done)} already done)" in rerun.stdout, rerun.stdout
    assert len(_complete_clips(run)) == n and (run / "features.parquet").is_file()
    _assert_clips_complete(run)
    assert not _parts(run), _parts(run)  # what the killed workers were writing is gone


def test_sigterm_stops_predict_workers_and_leaves_no_part_of_an_annotated_video(clips, tmp_path):
    out, videos = tmp_path / "pred", clips[1]
    cmd = _predict_cmd(videos, out, "--workers", "2", "--annotate")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = _signal_when(proc, lambda: len(list(out.glob("*/timeline.json"))) >= 1, signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    stop_s = time.time() - sent
    assert proc.returncode == -signal.SIGTERM, err  # ended by the signal after the cleanup: 143 in a shell
    assert stop_s < STOP_BOUND_S, f"took {stop_s:.1f} s to stop after SIGTERM"
    assert "stopped by SIGTERM" in err and f"of {len(videos)} finished" in err, err
    _no_process_left(str(out))
    finished = sorted(out.glob("*/timeline.json"))
    assert 1 <= len(finished) < len(videos)
    assert not list(out.rglob(".annotated.mp4.*")), "an annotated video's temporary file was left behind"
    _assert_annotated_whole(out, videos)

    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert len(list(out.glob("*/annotated.mp4"))) == len(videos) and not _parts(out)


def test_a_part_file_of_a_killed_annotate_is_removed_by_the_rerun_and_sigterm_leaves_none(clips, tmp_path):
    video = clips[1][:1]
    for sig in (signal.SIGKILL, signal.SIGTERM):
        out = tmp_path / sig.name
        proc = subprocess.Popen(_predict_cmd(video, out, "--annotate"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)
        _signal_when(proc, lambda o=out: bool(list(o.rglob(".annotated.mp4.*.part.mp4"))), sig)
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == -sig, err
        left = list(out.rglob(".annotated.mp4.*.part.mp4"))
        if sig == signal.SIGTERM:
            assert not left, "SIGTERM left the annotated video's temporary file"
            continue
        assert len(left) == 1  # kill -9 leaves it: nothing can run then
        rerun = subprocess.run(_predict_cmd(video, out, "--annotate"), capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert not left[0].exists(), "the rerun did not remove the killed run's temporary file"
        assert (left[0].parent / "annotated.mp4").is_file() and not _parts(out)


# ----------------------------------------------------------------------------- the Python API


def _interrupt_when(ready: Callable[[], bool]) -> dict[str, float]:
    """Start a thread that sends SIGINT to this process once `ready()` (KeyboardInterrupt in the main
    thread); the dict gets the time it was sent ("sent")."""
    sent: dict[str, float] = {}

    def watch() -> None:
        deadline = time.time() + 120
        while not ready() and time.time() < deadline:
            time.sleep(0.05)
        sent["sent"] = time.time()
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, daemon=True).start()
    return sent


def _assert_annotated_whole(out: Path, videos: list[Path]) -> None:
    """Every annotated.mp4 under its final name opens and lasts as long as its video."""
    by_name = {v.stem: v for v in videos}
    for video in out.glob("*/annotated.mp4"):
        assert abs(probe(video).duration_s - probe(by_name[video.parent.name]).duration_s) < 0.2, video


def test_api_extract_with_workers_stops_on_keyboard_interrupt_and_resumes(clips, tmp_path, caplog):
    csv, videos = clips
    run, n = tmp_path / "run", len(videos)
    sent = _interrupt_when(lambda: len(_complete_clips(run)) >= 1)
    with pytest.raises(KeyboardInterrupt):
        api.extract(csv, run, videos[0].parent, backend="classic", workers=2, progress=False)
    stop_s = time.time() - sent["sent"]
    assert stop_s < STOP_BOUND_S, f"took {stop_s:.1f} s to stop after KeyboardInterrupt"
    assert not multiprocessing.active_children(), "worker processes outlived the interrupt"
    assert any("stopped by Ctrl-C (SIGINT)" in r.getMessage() and f"of {n} finished" in r.getMessage()
               for r in caplog.records), caplog.text
    done = _complete_clips(run)
    assert 1 <= len(done) < n
    _assert_clips_complete(run)

    summary = api.extract(csv, run, videos[0].parent, backend="classic", workers=2, progress=False)
    assert (summary.ok, summary.failed, summary.skipped) == (n, 0, len(done))
    assert len(_complete_clips(run)) == n and not _parts(run)


def test_api_predict_many_with_workers_stops_on_keyboard_interrupt(clips, tmp_path):
    out, videos = tmp_path / "pred", clips[1]
    sent = _interrupt_when(lambda: len(list(out.glob("*/timeline.json"))) >= 1)
    with pytest.raises(KeyboardInterrupt):
        list(api.predict_many(videos, out=out, backend="classic", workers=2, annotate=True, progress=False))
    stop_s = time.time() - sent["sent"]
    assert stop_s < STOP_BOUND_S, f"took {stop_s:.1f} s to stop after KeyboardInterrupt"
    assert not multiprocessing.active_children()
    time.sleep(0.5)
    finished = list(out.glob("*/timeline.json"))
    assert 1 <= len(finished) < len(videos), "the interrupt did not stop the queued videos"
    _assert_annotated_whole(out, videos)


def test_api_extract_with_workers_on_sigterm_ends_by_the_signal_after_stopping_its_workers(clips, tmp_path):
    """SIGTERM to a program that calls the API (no handler of its own): it still ends by SIGTERM, but
    only after its workers are stopped, and says so."""
    csv, videos = clips
    run, n = tmp_path / "run", len(videos)
    script = ("import sys; from crashcast import api; "
              "api.extract(sys.argv[1], sys.argv[2], sys.argv[3], backend='classic', workers=2, progress=False)")
    cmd = [sys.executable, "-c", script, str(csv), str(run), str(videos[0].parent)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sent = _signal_when(proc, lambda: len(_complete_clips(run)) >= 1, signal.SIGTERM)
    _out, err = proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGTERM, err
    assert time.time() - sent < STOP_BOUND_S
    assert "stopped by SIGTERM" in err and "Traceback" not in err, err
    _no_process_left(str(run))
    assert 1 <= len(_complete_clips(run)) < n
    _assert_clips_complete(run)
    api.extract(csv, run, videos[0].parent, backend="classic", workers=2, progress=False)
    assert len(_complete_clips(run)) == n and not _parts(run)


# ----------------------------------------------------------------------------- temporary files


def test_a_write_removes_only_a_dead_writers_temporary_file_of_the_same_file(tmp_path):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()  # a pid no live process has (the kernel does not reuse it at once)
    stale = tmp_path / f".timeline.csv.{dead.pid}-0123abcd.part.csv"
    live = tmp_path / f".timeline.csv.{os.getppid()}-0123abcd.part.csv"  # a live writer's: a concurrent run
    other = tmp_path / f".timeline.json.{dead.pid}-0123abcd.part.json"  # another file's: its own write clears it
    users = [tmp_path / ".timeline.csv.notes", tmp_path / "timeline.csv.part", tmp_path / f".timeline.csv.{dead.pid}.part"]
    for p in [stale, live, other, *users]:
        p.write_text("x")
    atomic_write_text(tmp_path / "timeline.csv", "a,b\n")
    assert not stale.exists()
    assert live.exists() and other.exists() and all(p.exists() for p in users)
    assert (tmp_path / "timeline.csv").read_text() == "a,b\n"
