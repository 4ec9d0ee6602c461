"""`crashcast watch`: a synthetic collision clip streamed at its real rate over UDP (MPEG-TS) on
127.0.0.1 into watch: the alert arrives before the event, every stdout line is JSON, the event
recording exists and plays, and the timeline equals predict's on the same file (the stream carries
the file's own packets, remuxed: the same pictures, so the tolerance is exact where no frame was
dropped). A stream cut mid-way is reopened and watch goes on; Ctrl-C (SIGINT) or SIGTERM leaves a complete
recording and no temporary file."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import cli_exit_code

from crashcast.data.video import probe
from crashcast.live.replay import replay_in_thread
from crashcast.prediction import predict

POSITIVE = "synth0007_0000"  # synth_small's first clip: a collision at 9.99 s the physics model sees coming


def _free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _encode_part(path: Path, url: str, start_s: float, end_s: float) -> None:
    """Send the frames of [start_s, end_s) of `path`, encoded afresh (its first frame a keyframe) as
    MPEG-TS at their real rate: one connection of a camera that then goes away."""
    import av

    inp = av.open(str(path))
    out = av.open(url, mode="w", format="mpegts")
    try:
        src = inp.streams.video[0]
        dst = out.add_stream("libx264", rate=30)
        dst.width, dst.height, dst.pix_fmt = src.width, src.height, "yuv420p"
        dst.options = {"preset": "ultrafast", "tune": "zerolatency", "g": "15"}
        t0, i = time.monotonic(), 0
        for frame in inp.decode(src):
            if frame.time < start_s:
                continue
            if frame.time >= end_s:
                break
            wait = t0 + (frame.time - start_s) - time.monotonic()
            if wait > 0:
                time.sleep(wait)
            new = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            new.pts, new.time_base = i, frame.time_base.__class__(1, 30)
            i += 1
            for pkt in dst.encode(new):
                out.mux(pkt)
        for pkt in dst.encode():
            out.mux(pkt)
    finally:
        out.close()
        inp.close()


def _lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_a_udp_stream_alerts_before_the_event_records_it_and_equals_predict(synth_small, tmp_path, capsys):
    clip = synth_small / f"{POSITIVE}.mp4"
    event = next(float(r.split(",")[1]) for r in (synth_small / "annotations.csv").read_text().splitlines()
                 if r.startswith(POSITIVE + ","))
    port = _free_udp_port()
    sender = replay_in_thread(clip, f"udp://127.0.0.1:{port}?pkt_size=1316")
    record = tmp_path / "events"
    rc = cli_exit_code(["watch", f"udp://127.0.0.1:{port}?overrun_nonfatal=1&fifo_size=10000000", "--record", record,
                        "--pre", "2", "--post", "1", "--timeout", "3", "--queue", "64", "--no-reconnect", "--offline",
                        "--no-probe"])  # listening before the sender starts: the stream's times are the file's
    sender.join(timeout=30)
    assert rc == 0
    rows = _lines(capsys.readouterr().out)  # every stdout line parses
    assert rows and all({"time_s", "risk", "risk_raw", "alert", "reason", "latency_s", "drop_rate"} <= set(r) for r in rows)
    first_alert = next(r["time_s"] for r in rows if r["alert"])
    assert first_alert < event
    # the same pictures as the file: predict's timeline, stride for stride, where no frame was dropped
    pred = predict(clip)
    expected = dict(zip(pred.timeline.time_s, pred.timeline.risk_raw, strict=True))
    dropped = sum(r["dropped"] for r in rows)
    got = {r["time_s"]: r["risk_raw"] for r in rows}
    if dropped == 0:
        assert got == pytest.approx(expected, abs=1e-9)
    else:  # a loaded machine dropped frames: a stride missed ends at the next frame that came, on the grid
        times = list(got)
        assert times == sorted(times) and all(abs(t * 30 - round(t * 30)) < 0.02 for t in times)
        assert len(times) >= len(expected) // 2
    assert all(0 <= r["latency_s"] < 5 for r in rows)
    # the event recording: an MP4 that plays, from 2 s before the first alert to 1 s after the last
    mp4s = sorted(record.glob("*.mp4"))
    assert len(mp4s) >= 1 and {p.with_suffix(".json") for p in mp4s} <= set(record.iterdir())
    info = probe(mp4s[0])
    assert info.n_frames > 0 and 2.0 <= info.duration_s <= 2.0 + (rows[-1]["time_s"] - first_alert) + 1.5
    meta = json.loads(mp4s[0].with_suffix(".json").read_text())
    assert any(r.get("alert") for r in meta["records"])  # the strides it covers, the alert among them
    assert not [p for p in record.iterdir() if p.suffix not in (".mp4", ".json")]  # no temporary file left


def test_a_cut_stream_is_reopened_and_watch_goes_on(synth_small):
    from crashcast.live.watch import watch

    clip = synth_small / f"{POSITIVE}.mp4"
    port = _free_udp_port()
    url = f"udp://127.0.0.1:{port}?pkt_size=1316"

    def camera() -> None:  # 4 s, a 2.5 s cut (the receiver times out after 1 s), then 5.5 s more
        time.sleep(0.5)
        _encode_part(clip, url, 0.0, 4.0)
        time.sleep(2.5)
        _encode_part(clip, url, 4.0, 9.5)

    sender = threading.Thread(target=camera, daemon=True)
    sender.start()
    stream = watch(f"udp://127.0.0.1:{port}?overrun_nonfatal=1", timeout_s=1.0, queue_size=64, probe=False)
    rows = []
    try:
        for row in stream:  # (after the second part the stream ends: stop at 4 strides after the cut)
            rows.append(row)
            if sum(r["reconnects"] >= 1 for r in rows) >= 4 or len(rows) > 40:
                break
    finally:
        stream.close()
    sender.join(timeout=30)
    reconnected = [r for r in rows if r["reconnects"] >= 1]
    assert reconnected, "no stride after the stream came back"
    before = [r for r in rows if r["reconnects"] == 0]
    # time goes on across the cut by about the outage (2.5 s without data), not by one frame
    assert before and reconnected[0]["time_s"] - before[-1]["time_s"] >= 2.0
    assert len(reconnected) >= 4  # of about 4 s of strides after it


@pytest.mark.parametrize(("sig", "status"), [(signal.SIGINT, 130), (signal.SIGTERM, -signal.SIGTERM)])
def test_ctrl_c_or_sigterm_leaves_a_complete_recording_and_no_temporary_file(synth_small, tmp_path, sig, status):
    clip = synth_small / f"{POSITIVE}.mp4"
    record = tmp_path / "events"
    cmd = [sys.executable, "-m", "crashcast.cli", "watch", str(clip), "--record", str(record), "--pre", "1",
           "--post", "30", "--offline"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=os.environ.copy())
    try:
        for line in proc.stdout:  # at its real rate: the alert comes about 9 s in
            if json.loads(line)["alert"]:
                break
        time.sleep(1.0)  # a second into the 30 s after the alert: the clip is being written
        proc.send_signal(sig)
        rc = proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert rc == status  # Ctrl-C: 130; SIGTERM: the process ends by SIGTERM, after the recording is finished
    mp4s = sorted(record.glob("*.mp4"))
    assert len(mp4s) == 1
    info = probe(mp4s[0])  # complete: its header and every frame read back
    assert info.n_frames >= 30 and np.isclose(info.duration_s, info.n_frames / info.fps, atol=0.2)
    assert mp4s[0].with_suffix(".json").is_file()
    assert sorted(p.name for p in record.iterdir()) == sorted([mp4s[0].name, mp4s[0].with_suffix(".json").name])
