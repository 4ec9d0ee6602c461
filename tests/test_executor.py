"""The process pool behind extract and synth: forked workers must not hang on the parent's objects;
and `get_executor`, the one choice of executor extract and predict make."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
from tests.conftest import write_video

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.errors import ConfigError
from crashcast.extract import extract_run
from crashcast.prediction import predict_many
from crashcast.runtime import executor as E
from crashcast.runtime import executors

SCRIPT = textwrap.dedent("""
    import gc, sys
    import av
    from crashcast.runtime.executor import run_jobs

    def job(x):
        gc.collect()  # a worker's collection must not reach the parent's garbage
        return x

    if __name__ == "__main__":
        gc.disable()
        c = av.open(sys.argv[1]); s = c.streams.video[0]; s.thread_type = "AUTO"
        for i, f in enumerate(c.decode(s)):
            f.to_ndarray(format="rgb24", width=320, height=180)  # an swscale context with slice threads
            holder = {"frame": f}; holder["self"] = holder  # garbage only a collection frees (like a traceback's)
            if i > 3:
                break
        c.close()
        results = run_jobs(job, [(str(i), (i,)) for i in range(4)], workers=2, progress=False)
        print(sum(r.value for r in results))
""")


def test_forked_workers_do_not_free_the_parents_video_frames(tmp_path):
    """Without gc.collect + gc.freeze before forking, the worker's collection frees a PyAV frame whose
    swscale slice threads live only in the parent and hangs forever (measured: timeout)."""
    video = write_video(tmp_path / "v.mp4", [np.full((360, 640, 3), 40 * i, np.uint8) for i in range(6)], [i / 30 for i in range(6)])
    (tmp_path / "s.py").write_text(SCRIPT)
    out = subprocess.run([sys.executable, str(tmp_path / "s.py"), str(video)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "6"


def test_get_executor_checks_the_choice_before_any_work():
    assert executors.get_executor("local", 3) == executors.JobExecutor("local", 3, None, "auto")
    with pytest.raises(E.ExecutorError, match="unknown executor 'dask': local or ray"):
        executors.get_executor("dask")
    with pytest.raises(E.ExecutorError, match="needs the ray executor"):
        executors.get_executor("local", 2, address="auto")
    assert issubclass(E.ExecutorError, ConfigError)  # the CLI reports it as one error line, exit code 2


def test_local_executor_runs_the_jobs_in_order():
    results = executors.get_executor("local", 1).run(divmod, [("a", (7, 2)), ("b", (1, 0)), ("c", (9, 4))], progress=False)
    assert [r.key for r in results] == ["a", "b", "c"]
    assert [r.value for r in results if r.ok] == [divmod(7, 2), divmod(9, 4)]
    assert results[1].error_type == "ZeroDivisionError"


def test_extract_and_predict_refuse_a_missing_ray_with_one_error_before_writing(synth_small, tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "ray" else find_spec(name, *a))
    cfg = load_config("classic")
    clips = read_csv(synth_small / "annotations.csv")
    for call in (lambda: extract_run(clips[:1], tmp_path / "run", cfg, executor="ray", progress=False),
                 lambda: predict_many([clips[0].video_path], None, cfg, tmp_path / "p", executor="ray", progress=False),
                 lambda: predict_many([clips[0].video_path], None, cfg, tmp_path / "p", executor="spark")):
        with pytest.raises(E.ExecutorError) as e:
            call()
        assert "crashcast[distributed]" in str(e.value) or "unknown executor 'spark'" in str(e.value)
    assert not (tmp_path / "run").exists() and not (tmp_path / "p").exists()
