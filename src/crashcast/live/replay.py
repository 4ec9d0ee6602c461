"""A video file replayed as a live camera stream: its own H.264 packets, remuxed (not re-encoded) as
MPEG-TS and sent at their real rate to a URL (e.g. `udp://127.0.0.1:5000?pkt_size=1316`), for demos,
tests and benchmarks of `crashcast watch` without a camera. The receiver sees exactly the file's
pictures, so `watch` on the stream gives `predict`'s timeline on the file where no frame is dropped."""

from __future__ import annotations

import threading
import time
from pathlib import Path


def replay(path: str | Path, url: str, stop: threading.Event | None = None) -> None:
    """Send `path`'s video packets to `url` as MPEG-TS, each at its own time after the start (blocks
    until the file ends or `stop` is set)."""
    import av

    inp = av.open(str(path))
    out = av.open(url, mode="w", format="mpegts")
    try:
        src = inp.streams.video[0]
        dst = out.add_stream_from_template(src)
        t0 = time.monotonic()
        for pkt in inp.demux(src):
            if pkt.dts is None:
                continue
            wait = t0 + float(pkt.dts * pkt.time_base) - time.monotonic()
            if wait > 0 and stop is not None and stop.wait(wait):
                break
            if wait > 0 and stop is None:
                time.sleep(wait)
            pkt.stream = dst
            out.mux(pkt)
    finally:
        out.close()
        inp.close()


def replay_in_thread(path: str | Path, url: str, start_after_s: float = 0.5) -> threading.Thread:
    """`replay` on a daemon thread, after `start_after_s` seconds (the receiver listens by then)."""

    def run() -> None:
        time.sleep(start_after_s)
        replay(path, url)

    th = threading.Thread(target=run, name=f"crashcast-replay {Path(path).name}", daemon=True)
    th.start()
    return th
