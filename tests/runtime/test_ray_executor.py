"""The Ray executor (`extract --executor ray`) on a local Ray instance: the same outputs as the local
executor byte for byte, backends built once per actor, a worker killed mid-run costing only its clip
(retried, then recorded), a backend that cannot be built stopping the run, and kill -9 of the driver
followed by a rerun that resumes.

The jobs run in Ray worker processes, which import this module (it is on their PYTHONPATH) when they
unpickle `_job`: that registers the test backends there too."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="the Ray executor needs ray (pip install 'crashcast[distributed]')")

from crashcast import extract as extract_mod  # noqa: E402
from crashcast.config import BackendConfig, load_config  # noqa: E402
from crashcast.data.annotations import read_csv  # noqa: E402
from crashcast.errors import ConfigError  # noqa: E402
from crashcast.extract import extract_run  # noqa: E402
from crashcast.perception import registry  # noqa: E402
from crashcast.perception.classic.detect import MotionDetector, MotionDetectorConfig  # noqa: E402
from crashcast.perception.spec import BuildContext  # noqa: E402
from crashcast.runtime.executor import ExecutorError, WorkerSetupError  # noqa: E402

HERE = Path(__file__).resolve().parent
N_CLIPS = 4


class RayCountingConfig(MotionDetectorConfig):
    name: str = "test-ray-counting-motion"
    log_file: str


@registry.register("detector", "test-ray-counting-motion", RayCountingConfig)
def _counting(cfg: RayCountingConfig, ctx: BuildContext) -> MotionDetector:
    """The classic detector, writing one line (its process id) per construction."""
    with open(cfg.log_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    return MotionDetector(cfg, ctx.perception.context.residual_threshold_px)


@registry.register("flow", "test-ray-fails-to-build", BackendConfig)
def _fails(cfg: BackendConfig, ctx: BuildContext):
    raise ConfigError("test-ray-fails-to-build: weights missing from the weights folder")


_extract_job = extract_mod._extract_job


def _job(backends, clip, run_dir, cfg_json):
    """`extract._extract_job`, which first kills its own process (SIGKILL: as the kernel's OOM killer
    does) when <run>/../kill.json names this clip and fewer than its `times` kills happened, or hangs
    when <run>/../hang.json names it."""
    hang = Path(run_dir).parent / "hang.json"
    if hang.exists() and clip.id == json.loads(hang.read_text())["clip"]:
        time.sleep(600)  # far past any limit a test sets
    plan = Path(run_dir).parent / "kill.json"
    if plan.exists():
        spec = json.loads(plan.read_text())
        if clip.id == spec["clip"]:
            kills = Path(run_dir).parent / "kills"
            kills.mkdir(exist_ok=True)
            n = len(list(kills.iterdir()))
            if n < spec["times"]:
                (kills / f"{n}-{os.getpid()}").touch()
                os.kill(os.getpid(), signal.SIGKILL)
    return _extract_job(backends, clip, run_dir, cfg_json)


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray instance for this module (2 CPUs, no dashboard), whose workers can import this file."""
    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    mp = pytest.MonkeyPatch()
    mp.setenv("PYTHONPATH", os.pathsep.join([str(HERE), *filter(None, [os.environ.get("PYTHONPATH")])]))
    try:
        ray.init(address="local", num_cpus=2, include_dashboard=False, ignore_reinit_error=True, log_to_driver=False)
    finally:
        mp.undo()
    yield
    ray.shutdown()


@pytest.fixture
def ray_jobs(local_ray, monkeypatch):
    monkeypatch.setattr(extract_mod, "_extract_job", _job)  # so the workers import this module


@pytest.fixture(scope="module")
def clips(synth_small):
    return read_csv(synth_small / "annotations.csv")[:N_CLIPS]


@pytest.fixture(scope="module")
def reference(clips, tmp_path_factory) -> Path:
    """The local executor's run (2 workers) on the same clips and config."""
    run = tmp_path_factory.mktemp("ref") / "run"
    assert extract_run(clips, run, load_config("classic"), workers=2, progress=False).ok == N_CLIPS
    return run


def _tree(run: Path, pattern: str = "*") -> dict[str, bytes]:
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob(pattern))
            if p.is_file() and p.name != "errors.jsonl"}


def test_ray_outputs_equal_the_local_executors_and_backends_are_built_once_per_actor(ray_jobs, clips, reference, tmp_path):
    cfg = load_config("classic")
    summary = extract_run(clips, tmp_path / "run", cfg, workers=2, progress=False, executor="ray")
    assert (summary.ok, summary.failed, summary.windows) == (N_CLIPS, 0, 3 * N_CLIPS)
    metas = _tree(tmp_path / "run", "window_meta.json")
    assert len(metas) == 3 * N_CLIPS and metas == _tree(reference, "window_meta.json")  # byte-identical
    assert _tree(tmp_path / "run") == _tree(reference)  # overlays, features.parquet and config.yaml too

    log = tmp_path / "constructions.txt"
    counting = load_config("classic", ["perception.detector.name=test-ray-counting-motion", f"perception.detector.log_file={log}"])
    assert extract_run(clips, tmp_path / "counted", counting, workers=2, progress=False, executor="ray").ok == N_CLIPS
    pids = log.read_text().split()
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)  # once per actor, never once per clip
    assert str(os.getpid()) not in pids  # the driver never loads the models
    log.unlink()
    again = extract_run(clips, tmp_path / "counted", counting, workers=2, progress=False, executor="ray")
    assert again.skipped == N_CLIPS and not log.exists()  # a resumed run with nothing to do loads nothing


@pytest.mark.parametrize("times,retries", [(1, None), (10, None), (1, 0)])
def test_a_worker_killed_mid_run_costs_only_its_clip(ray_jobs, clips, reference, tmp_path, times, retries):
    """Killed once: the clip is redone on a fresh worker. Killed on every try: after 1 + 2 retries (the
    default runtime.ray_task_retries) it is recorded in errors.jsonl, and the other clips are done all
    the same; with no retries, one kill is enough."""
    victim = clips[1].id
    (tmp_path / "kill.json").write_text(json.dumps({"clip": victim, "times": times}))
    run = tmp_path / "run"
    cfg = load_config("classic", [] if retries is None else [f"runtime.ray_task_retries={retries}"])
    summary = extract_run(clips, run, cfg, workers=2, progress=False, executor="ray")
    kills = len(list((tmp_path / "kills").iterdir()))
    if times == 1 and retries != 0:
        assert kills == 1 and (summary.ok, summary.failed) == (N_CLIPS, 0)
        assert not (run / "errors.jsonl").exists()
        assert _tree(run) == _tree(reference)
    else:
        tries = 1 + (2 if retries is None else retries)
        assert kills == tries and (summary.ok, summary.failed) == (N_CLIPS - 1, 1)
        errors = [json.loads(line) for line in (run / "errors.jsonl").read_text().splitlines()]
        assert [(e["clip_id"], e["stage"]) for e in errors] == [(victim, "extract")]
        assert "worker died" in errors[0]["error"] and errors[0]["error_type"]
        done = _tree(run, "window_meta.json")
        assert done == {k: v for k, v in _tree(reference, "window_meta.json").items() if not k.startswith(f"clips/{victim}/")}


def test_a_backend_that_cannot_be_built_stops_the_ray_run(ray_jobs, clips, tmp_path):
    cfg = load_config("classic", ["perception.flow=test-ray-fails-to-build"])
    with pytest.raises(WorkerSetupError, match="weights missing"):
        extract_run(clips[:3], tmp_path / "run", cfg, workers=2, progress=False, executor="ray")
    assert not (tmp_path / "run" / "errors.jsonl").exists()  # not the clips' fault


def test_a_clip_that_hangs_is_stopped_at_the_time_limit_and_recorded(ray_jobs, clips, reference, tmp_path):
    """The victim sleeps for 10 minutes: after runtime.ray_task_timeout_s its worker is killed, the clip
    is recorded in errors.jsonl, and the other clips are done (by the other worker and a fresh one)."""
    limit = 20.0  # well above one classic clip here (about 5 s on 2 shared cores), far below the hang
    victim = clips[0].id
    (tmp_path / "hang.json").write_text(json.dumps({"clip": victim}))
    run = tmp_path / "run"
    cfg = load_config("classic", [f"runtime.ray_task_timeout_s={limit}"])
    t0 = time.monotonic()
    summary = extract_run(clips[:3], run, cfg, workers=2, progress=False, executor="ray")
    took = time.monotonic() - t0
    assert (summary.ok, summary.failed) == (2, 1)
    assert limit <= took < limit + 60, took  # bounded: never the victim's 600 s
    errors = [json.loads(line) for line in (run / "errors.jsonl").read_text().splitlines()]
    assert [(e["clip_id"], e["stage"], e["error_type"]) for e in errors] == [(victim, "extract", "TimeoutError")]
    assert f"still running after {limit:g} s" in errors[0]["error"] and "ray_task_timeout_s" in errors[0]["error"]
    done = _tree(run, "window_meta.json")
    assert done == {k: v for k, v in _tree(reference, "window_meta.json").items()
                    if k.split("/")[1] in {c.id for c in clips[1:3]}}


def _sleep(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def _die_once(marker: str) -> str:
    """Kills its own worker process the first time (when `marker` does not exist yet)."""
    if not os.path.exists(marker):
        Path(marker).touch()
        os._exit(1)
    return "second try"


def test_run_jobs_ray_bounds_every_wait(local_ray, tmp_path):
    """The executor itself, on trivial jobs: a hang is cut at the limit while the others finish; a
    worker whose process exits is replaced and its job retried; a worker that cannot be placed (it asks
    for a GPU this Ray does not have) is given up after the start limit, with a clear error."""
    from crashcast.runtime.ray_executor import run_jobs_ray

    t0 = time.monotonic()
    jobs = [("hangs", (600.0,)), ("quick", (0.0,)), ("quick too", (0.1,))]
    results = run_jobs_ray(_sleep, jobs, workers=2, progress=False, task_timeout_s=3)
    assert [(r.key, r.ok, r.value, r.error_type) for r in results] == [
        ("hangs", False, None, "TimeoutError"), ("quick", True, 0.0, None), ("quick too", True, 0.1, None)]
    assert "still running after 3 s" in results[0].error and time.monotonic() - t0 < 45

    marker = tmp_path / "died"
    [r] = run_jobs_ray(_die_once, [("dies once", (str(marker),))], workers=1, progress=False, max_retries=1)
    assert (r.ok, r.value) == (True, "second try") and marker.exists()
    marker.unlink()
    [r] = run_jobs_ray(_die_once, [("dies once", (str(marker),))], workers=1, progress=False, max_retries=0)
    assert not r.ok and "worker died on every try (1)" in r.error

    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray has a GPU: a worker asking for one starts")
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=r"did not start within 2 s .*none is left to run the 1 clip"):
        run_jobs_ray(_sleep, [("never placed", (0.0,))], workers=1, progress=False, num_gpus=1, start_timeout_s=2)
    assert time.monotonic() - t0 < 30


def test_workers_that_cannot_start_stop_the_extract_run_with_a_clear_error(ray_jobs, clips, tmp_path, monkeypatch):
    if ray.cluster_resources().get("GPU", 0):
        pytest.skip("this Ray has a GPU: a worker asking for one starts")
    monkeypatch.setenv("CRASHCAST_RAY_GPUS_PER_WORKER", "1")
    cfg = load_config("classic", ["runtime.ray_start_timeout_s=2"])
    with pytest.raises(ExecutorError, match="did not start within 2 s"):
        extract_run(clips[:2], tmp_path / "run", cfg, workers=2, progress=False, executor="ray")
    assert not (tmp_path / "run" / "errors.jsonl").exists()  # not the clips' fault; a rerun does them


def test_unknown_executor_is_refused_before_anything_is_written(clips, tmp_path):
    with pytest.raises(ExecutorError, match="unknown executor"):
        extract_run(clips, tmp_path / "run", load_config("classic"), executor="dask")
    assert not (tmp_path / "run").exists()


# ----------------------------------------------------------------------------- kill -9 of the driver


def _children(pid: int) -> set[int]:
    """Every live descendant of `pid` (from /proc)."""
    parent = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parent[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in out]
        out.update(kids)
        todo += kids
    return out


def _alive(pid: int) -> bool:
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


RAY_AGENTS = ("ray::DashboardAgent", "ray::RuntimeEnvAgent")


def _name(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return ""


def _done_clips(run: Path) -> int:
    return sum(len(list(d.glob("*/window_meta.json"))) == 3 for d in (run / "clips").glob("*")) if (run / "clips").exists() else 0


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc to find processes")
def test_kill_9_of_the_driver_midway_and_the_rerun_equals_the_local_executors_run(synth_small, tmp_path):
    n = 6
    csv = tmp_path / "a.csv"
    csv.write_text("".join((synth_small / "annotations.csv").read_text().splitlines(keepends=True)[: n + 1]))

    def extract(run: Path, executor: str) -> list[str]:
        return [sys.executable, "-m", "crashcast.cli", "extract", "--annotations", str(csv), "--videos", str(synth_small),
                "--out", str(run), "--workers", "2", "--executor", executor]

    reference, run = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(extract(reference, "local"), check=True, capture_output=True, timeout=300)
    proc = subprocess.Popen(extract(run, "ray"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while _done_clips(run) < 1 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert proc.poll() is None and _done_clips(run) < n, "the run ended before it could be killed midway"
    ray_processes = _children(proc.pid)  # Ray's own (GCS, raylet, workers) were started by this driver
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    t_kill = time.time()
    while any(_alive(p) and _name(p) not in RAY_AGENTS for p in ray_processes) and time.time() < t_kill + 20:
        time.sleep(0.2)
    left = {p: _name(p) for p in ray_processes if _alive(p)}
    for pid in left:  # do not leave them behind for the rest of the suite
        os.kill(pid, signal.SIGKILL)
    # Ray 2.60's two agents notice the raylet's death ("The parent is dead", their logs) but hang on
    # their way out; idle, they never touch the run. Every other process (the workers) must be gone.
    assert not {p: n for p, n in left.items() if n not in RAY_AGENTS}, f"alive 20 s after kill -9 of the driver: {left}"
    assert not (run / "features.parquet").exists(), "killed before the end: the table must not exist yet"

    rerun = subprocess.run(extract(run, "ray"), capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "already done" in rerun.stdout and "(0 already done)" not in rerun.stdout
    assert _tree(run) == _tree(reference)  # every file, byte for byte; no temporary file left behind


# ----------------------------------------------------------------------------- predict on many videos


def test_predict_many_on_ray_and_local_processes_match_one_by_one(local_ray, clips, tmp_path):
    from crashcast.prediction import predict, predict_many, write_outputs

    cfg = load_config("classic")
    videos = [c.video_path for c in clips[:3]]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    for v in videos:  # one by one, in this process
        write_outputs(predict(v, "physics", cfg, stride_s=1.0), tmp_path / "one" / v.stem)
    for executor in ("local", "ray"):
        out = tmp_path / executor
        outcomes = list(predict_many([*videos, broken], "physics", cfg, out, stride_s=1.0, workers=2, executor=executor,
                                     progress=False))
        assert [o.path for o in outcomes] == [*videos, broken]
        assert all(o.prediction is not None and o.error is None for o in outcomes[:3])
        assert outcomes[3].prediction is None and "broken.mp4" in outcomes[3].error
        for v in videos:
            for name in ("timeline.csv", "timeline.json"):
                assert (out / v.stem / name).read_bytes() == (tmp_path / "one" / v.stem / name).read_bytes(), (executor, v, name)


def test_ctrl_c_stops_a_ray_run_promptly(local_ray, caplog):
    """Issue 23 item 5 on Ray: Ctrl-C while clips run kills the actors, the queued clips never start,
    and the count is said."""
    import signal
    import threading

    from crashcast.runtime.ray_executor import run_jobs_ray

    jobs = [(f"slow {i}", (30.0,)) for i in range(6)]
    timer = threading.Timer(3.0, lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt):
            run_jobs_ray(_sleep, jobs, workers=2, progress=False)
    finally:
        timer.cancel()
    took = time.monotonic() - t0
    assert took < 3.0 + 15, took  # never the 3 x 30 s the queued clips would take
    assert "stopped by Ctrl-C (SIGINT): 0 of 6 finished" in caplog.text
