"""The live source joined mid-stream, as a camera already sending: the packets before the next
keyframe cannot be decoded (no parameter sets yet); they are skipped and the pictures start at that
keyframe, instead of the connection failing."""

from __future__ import annotations

import socket
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

from crashcast.live.replay import replay_in_thread
from crashcast.live.source import LiveSource

FPS, GOP = 30, 120  # a keyframe every 4 s: longer than crashcast lets FFmpeg probe a stream before it opens


def _picture(i: int) -> np.ndarray:
    """Frame i: a flat gray of level 40 + i (each frame tells its index)."""
    return np.full((180, 320, 3), 40 + i, np.uint8)


def _clip(path: Path, seconds: float) -> Path:
    import av

    out = av.open(str(path), mode="w")
    try:
        st = out.add_stream("libx264", rate=FPS)
        st.width, st.height, st.pix_fmt = 320, 180, "yuv420p"
        st.options = {"g": str(GOP), "keyint_min": str(GOP), "sc_threshold": "0", "preset": "ultrafast", "crf": "12"}
        for i in range(round(seconds * FPS)):
            frame = av.VideoFrame.from_ndarray(_picture(i), format="rgb24")
            frame.pts, frame.time_base = i, Fraction(1, FPS)
            for pkt in st.encode(frame):
                out.mux(pkt)
        for pkt in st.encode():
            out.mux(pkt)
    finally:
        out.close()
    return path


def test_a_stream_joined_between_keyframes_starts_at_the_next_keyframe(tmp_path):
    clip = _clip(tmp_path / "camera.mp4", 6.0)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sender = replay_in_thread(clip, f"udp://127.0.0.1:{port}?pkt_size=1316", start_after_s=0.0)
    time.sleep(1.3)  # the camera has been sending for 1.3 s: the receiver joins after its first keyframe
    src = LiveSource(f"udp://127.0.0.1:{port}?overrun_nonfatal=1", queue_size=1000, reconnect=False,
                     open_timeout_s=5.0)
    with src:
        frames = [(f.t, f.frame.rgb((320, 180))) for f in src.frames()]
    sender.join(timeout=10)
    assert src.undecodable > 0  # the packets before the keyframe at 4 s
    assert len(frames) >= 50  # the keyframe at 4 s and what followed it (up to 60 frames)
    assert frames[0][0] == 0.0  # stream time starts at the first picture
    # which picture came first: its gray level tells its index (within the YUV round trip's 2 levels),
    # that of the keyframe at 4 s
    assert abs(float(frames[0][1].mean()) - 40 - GOP) <= 2
    assert abs(frames[1][0] - 1 / FPS) < 1e-6
