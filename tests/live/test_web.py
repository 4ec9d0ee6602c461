"""The live web page (`crashcast.live.web`, `crashcast watch --serve`): /state.json is the row noted,
/frame.jpg the frame added (JPEG, its size and colours), 404 elsewhere, the port released by close();
headless Chromium renders the page and its script shows the risk and the alert from /state.json; and
watch(serve=...) serves each stride while it runs."""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pytest

from crashcast.live.web import LiveView, parse_serve

ROW = {"time_s": 9.5, "risk": 0.83, "risk_raw": float("nan"), "alert": True, "reason": "vehicle 3 closing: TTC 1.2 s",
       "latency_s": 0.21, "dropped": 0, "drop_rate": 0.02, "reconnects": 0}


def _get(url: str) -> tuple[int, str, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return r.status, r.headers["Content-Type"], r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read()


def _frame(h: int = 120, w: int = 200) -> np.ndarray:
    """A smooth picture (JPEG keeps it within a few levels): a horizontal ramp over a blue-ish field."""
    img = np.zeros((h, w, 3), np.uint8)
    img[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    img[..., 1] = 60
    img[..., 2] = 180
    return img


def test_state_and_frame_are_what_was_fed_and_unknown_paths_are_404():
    import cv2

    with LiveView("127.0.0.1", 0) as view:
        assert view.url == f"http://127.0.0.1:{view.port}/" and view.port > 0
        assert _get(view.url + "state.json")[2] == b"null"  # nothing noted yet
        assert _get(view.url + "frame.jpg")[0] == 503  # no frame yet
        frame = _frame()
        view.add(9.5, frame)
        view.note(ROW)
        status, ctype, body = _get(view.url + "state.json")
        assert (status, ctype) == (200, "application/json")
        assert json.loads(body) == {**ROW, "risk_raw": None}  # NaN as null: strict JSON
        status, ctype, body = _get(view.url + "frame.jpg?t=1")
        assert (status, ctype) == (200, "image/jpeg")
        bgr = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
        assert bgr.shape == frame.shape
        assert np.abs(bgr[..., ::-1].astype(int) - frame.astype(int)).mean() < 3  # RGB in, the same colours out
        status, ctype, body = _get(view.url)
        assert status == 200 and ctype.startswith("text/html") and b"state.json" in body and b"frame.jpg" in body
        assert b"http://" not in body and b"https://" not in body  # self-contained: nothing fetched from elsewhere
        assert _get(view.url + "nothing-here")[0] == 404
        assert _get(view.url + "state.json/../x")[0] == 404


def _get_as(url: str, host: str) -> int:
    req = urllib.request.Request(url, headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_a_page_on_127_0_0_1_answers_only_requests_addressed_to_it():
    """DNS rebinding: a page of evil.example whose name now points at 127.0.0.1 makes the browser send
    `Host: evil.example:PORT`; the view on a loopback address refuses it (the camera's frames stay here)."""
    with LiveView("127.0.0.1", 0) as view:
        view.note(ROW)
        port = view.port
        for host in (f"127.0.0.1:{port}", f"localhost:{port}", "localhost", f"[::1]:{port}"):
            assert _get_as(view.url + "state.json", host) == 200, host
        for host in (f"evil.example:{port}", "evil.example", f"192.168.1.5:{port}", ""):
            assert _get_as(view.url + "state.json", host) == 403, host
            assert _get_as(view.url + "frame.jpg", host) == 403, host


def test_a_page_put_on_the_network_answers_any_host():
    with LiveView("0.0.0.0", 0) as view:
        assert _get_as(f"http://127.0.0.1:{view.port}/state.json", f"dashcam.local:{view.port}") == 200


def test_close_releases_the_port_and_a_port_in_use_is_named():
    view = LiveView("127.0.0.1", 0)
    port = view.port
    _get(view.url + "state.json")
    with pytest.raises(OSError, match=rf"127\.0\.0\.1:{port}: the port is in use"):
        LiveView("127.0.0.1", port)
    view.close()
    view.close()  # twice: nothing more
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(view.url, timeout=5)
    again = LiveView("127.0.0.1", port)  # the port is free again
    try:
        assert _get(again.url + "state.json")[0] == 200
    finally:
        again.close()


def test_wants_frames_only_while_a_browser_looks_and_at_most_max_fps():
    with LiveView() as view:
        assert not view.wants(0.0)  # nobody asked: frames need not even be drawn
        _get(view.url + "frame.jpg")
        assert view.wants(0.0)
        view.add(0.0, _frame())
        assert not view.wants(1 / 30)  # 1/30 s after the last frame: sooner than 15 fps
        assert view.wants(0.1)


@pytest.mark.parametrize(("value", "expected"), [("127.0.0.1:8080", ("127.0.0.1", 8080)), (":0", ("127.0.0.1", 0)),
                                                 ("0.0.0.0:80", ("0.0.0.0", 80)), ("[::1]:9000", ("::1", 9000))])
def test_serve_values_parse(value, expected):
    assert parse_serve(value) == expected


@pytest.mark.parametrize(("value", "problem"), [("8080", "HOST:PORT"), ("localhost:http", "port must be a number"),
                                                ("h:70000", "port must be a number"), ("::1:80", "brackets")])
def test_bad_serve_values_say_what_is_wrong(value, problem):
    with pytest.raises(ValueError, match=problem):
        parse_serve(value)


def _chromium() -> str | None:
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def test_headless_chromium_renders_the_risk_and_the_alert(tmp_path):
    browser = _chromium()
    if browser is None:
        pytest.skip("no Chromium found (chromium, chromium-browser or google-chrome on PATH)")
    with LiveView() as view:
        view.add(9.5, _frame())
        view.note(ROW)
        cmd = [browser, "--headless", "--disable-gpu", "--no-sandbox", "--no-first-run", f"--user-data-dir={tmp_path}",
               "--virtual-time-budget=3000", "--dump-dom", view.url]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=90)  # stderr: the browser's own noise
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = proc.stdout
    gauge = next(line for line in dom.splitlines() if 'id="gauge"' in line)
    assert 'class="gauge alert"' in gauge and 'data-risk="0.83"' in gauge and 'data-alert="true"' in gauge
    assert '<span id="risk-value">0.83</span>' in dom
    assert '<div id="alert-state">ALERT</div>' in dom
    assert "vehicle 3 closing: TTC 1.2 s" in dom
    assert '<dd id="time">9.5 s</dd>' in dom and '<dd id="drop-rate">2.0 %</dd>' in dom
    assert 'data-size="200x120"' in dom  # the frame came and was decoded by the browser


def test_watch_serves_each_stride_and_the_frames_while_it_runs(synth_small, caplog):
    import cv2

    from crashcast.config import load_config
    from crashcast.data.video import probe, target_size
    from crashcast.live.watch import watch

    clip = synth_small / "synth0007_0000.mp4"
    caplog.set_level(logging.INFO, logger="crashcast.live.watch")
    stream = watch(clip, serve="127.0.0.1:0", realtime=False)
    rows, served, frames = [], [], []
    try:
        for row in stream:
            if not rows:
                url = next(r.args[0] for r in caplog.records if r.msg == "live view: %s")
            rows.append(row)
            served.append(json.loads(_get(url + "state.json")[2]))
            status, _, body = _get(url + "frame.jpg")  # the first ask: no frame yet; then drawn for the page
            if status == 200:
                frames.append(cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR))
            if len(rows) == 6:
                break
    finally:
        stream.close()
    assert [s["time_s"] for s in served] == [r["time_s"] for r in rows]  # the newest stride, each time
    assert served[-1] == json.loads(json.dumps({k: (None if v != v else v) for k, v in rows[-1].items()}))
    info = probe(clip)
    w, h = target_size(info.width, info.height, load_config("classic").video.long_side)
    assert len(frames) >= 4 and all(f.shape == (h, w, 3) for f in frames)  # the perceived size, annotated
    with pytest.raises(urllib.error.URLError):  # closed with the stream
        urllib.request.urlopen(url, timeout=5)
