"""The process pool behind extract and synth: forked workers must not hang on the parent's objects."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
from tests.conftest import write_video

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
