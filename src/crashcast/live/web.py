"""A small local web page of a live run (`crashcast watch --serve`): the annotated view and a risk gauge.

    view = LiveView("127.0.0.1", 8080)        # port 0: any free port; view.url says which
    try:
        for t, frame in stream:                # stream time in seconds
            if view.wants(t):                  # a browser is looking, and the last frame is 1/15 s old
                view.add(t, annotated(frame))
            for record in strides_done_at(t):
                view.note(record)
    finally:
        view.close()

Endpoints (HTTP/1.0, one request per connection, stdlib `http.server` on a daemon thread):

* `/` one self-contained page (inline CSS and JS, nothing fetched from elsewhere): the newest
  annotated frame, polled about 10 times a second, and a gauge (the risk 0..1, coloured, with the
  alert state, the reason, the stream time, the latency, the drop rate), polled 4 times a second.
* `/frame.jpg` the newest frame as JPEG; 503 before the first frame.
* `/state.json` the newest stride record as noted (non-finite numbers as null; `null` before the first).
* anything else: 404.

CPU: `add` keeps a reference to the newest frame (nothing copied, nothing encoded); a frame is JPEG
encoded only when a browser asks for it, at most `MAX_FPS` times a second however many browsers
look (a request sooner gets the last encoding). `wants(t)` lets the caller skip drawing frames
nobody looks at: it is false while no browser asked for a frame in the last `IDLE_S` seconds.

The page is served to whoever reaches the address: the default host 127.0.0.1 keeps it on this
machine; another host (0.0.0.0, a LAN address) shows the camera's video on that network, without
any authentication.

Thread-safe: `add`, `note` and `wants` come from the caller's thread, requests are answered on
threads of the server; one lock hands the newest frame and record over.
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import math
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from crashcast.errors import ConfigError

log = logging.getLogger(__name__)

#: the most JPEG encodings a second (frames asked for sooner get the last encoding)
MAX_FPS = 15.0
#: seconds after a browser's last frame request during which `wants` says frames are looked at
IDLE_S = 3.0
JPEG_QUALITY = 80


def parse_serve(value: str) -> tuple[str, int]:
    """("host", port) from "HOST:PORT", ":PORT" (host 127.0.0.1) or "[IPv6]:PORT"; port 0: any free
    port. A ConfigError (a ValueError) names what is wrong."""
    text = value.strip()
    host, sep, port = text.rpartition(":")
    if not sep:
        raise ConfigError(f"serve={value!r}: expected HOST:PORT or :PORT (e.g. 127.0.0.1:8080)")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"serve={value!r}: write an IPv6 host in brackets, e.g. [::1]:8080")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ConfigError(f"serve={value!r}: the port must be a number from 0 to 65535 (0: any free port)")
    return host or "127.0.0.1", int(port)


def json_safe(value: Any) -> Any:
    """`value` as JSON can hold it: non-finite floats as None, numpy scalars and arrays as Python
    numbers and lists, other objects as their str."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy scalar or array
        return json_safe(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


class LiveView:
    """The page of one live run, served from `host`:`port` until `close()` (see the module docstring).
    Binding fails at once with an OSError naming the address and the problem (e.g. a port in use)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self._lock = threading.Lock()  # the newest frame, its sequence number, the newest record
        self._encode_lock = threading.Lock()  # one encoding at a time, shared by all requests
        self._frame: Any = None  # np.ndarray, RGB
        self._frame_t: float | None = None
        self._seq = 0
        self._row_json = b"null"
        self._jpeg: bytes | None = None
        self._jpeg_seq = -1
        self._jpeg_at = -math.inf
        self._asked_at = -math.inf  # monotonic time of the last frame request
        self._closed = False
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._server = _Server((host, port), _handler(self), family)
        except OSError as e:
            why = "the port is in use" if e.errno == errno.EADDRINUSE else (e.strerror or str(e))
            raise OSError(e.errno, f"cannot serve the live view on {_hostport(host, port)}: {why}") from None
        except (OverflowError, UnicodeError) as e:  # a port out of range, a host name IDNA cannot encode
            raise ConfigError(f"cannot serve the live view on {_hostport(host, port)}: {e}") from None
        self.host, self.port = host, int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name=f"crashcast-web {self.url}", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        """The page's address (for an any-address host such as 0.0.0.0: as seen from this machine)."""
        host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(self.host, self.host)
        return f"http://{_hostport(host, self.port)}/"

    def wants(self, t: float) -> bool:
        """Whether a frame at stream time `t` would be seen: a browser asked for a frame in the last
        `IDLE_S` seconds and the newest frame is at least 1 / MAX_FPS older than `t` (or absent)."""
        with self._lock:
            if time.monotonic() - self._asked_at > IDLE_S:
                return False
            return self._frame_t is None or t - self._frame_t >= 1.0 / MAX_FPS - 1e-9 or t < self._frame_t

    def add(self, t: float, frame_rgb: Any) -> None:
        """The newest frame (H x W x 3 uint8 RGB) at stream time `t`; kept by reference, so the caller
        must not write into it afterwards."""
        with self._lock:
            self._frame, self._frame_t = frame_rgb, float(t)
            self._seq += 1

    def note(self, row: dict) -> None:
        """The newest stride record (served as /state.json)."""
        body = json.dumps(json_safe(row), allow_nan=False).encode()
        with self._lock:
            self._row_json = body

    def close(self) -> None:
        """Stop serving and release the port (returns within about a second; a request being answered
        is cut off)."""
        if self._closed:
            return
        self._closed = True
        if self._thread.is_alive():
            self._server.shutdown()  # the serve_forever loop ends within its poll interval
            self._thread.join(timeout=2.0)
        self._server.server_close()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ----------------------------------------------------------------- answered on server threads

    def _state(self) -> bytes:
        with self._lock:
            return self._row_json

    def _jpeg_now(self) -> bytes | None:
        """The newest frame as JPEG, encoded at most MAX_FPS times a second; None before the first frame."""
        with self._lock:
            self._asked_at = time.monotonic()
        with self._encode_lock:
            with self._lock:
                frame, seq = self._frame, self._seq
            fresh = time.monotonic() - self._jpeg_at < 1.0 / MAX_FPS
            if frame is None or seq == self._jpeg_seq or (fresh and self._jpeg is not None):
                return self._jpeg
            import cv2

            ok, buf = cv2.imencode(".jpg", frame[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
            if not ok:
                log.warning("live view: a frame of shape %s could not be encoded as JPEG", getattr(frame, "shape", None))
                return self._jpeg
            self._jpeg, self._jpeg_seq, self._jpeg_at = buf.tobytes(), seq, time.monotonic()
            return self._jpeg


REQUEST_TIMEOUT_S = 10.0


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return host.lower() in ("localhost", "localhost.")


def _host_allowed(bound: str, header: str | None) -> bool:
    """A view bound to a loopback address answers only requests addressed to a loopback name or
    address (the Host header): a web page elsewhere that rebinds its own domain name to 127.0.0.1 (DNS
    rebinding) cannot read the camera's frames through the visitor's browser. A view bound to another
    host was put on the network by its user and answers any."""
    if not _is_loopback(bound):
        return True
    if not header:
        return False
    host = header.strip()
    if host.startswith("["):  # [::1]:8080
        host = host[1:].split("]", 1)[0]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return _is_loopback(host)


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Server(ThreadingHTTPServer):
    daemon_threads = True  # a request being answered never holds the process (or close()) up

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], family: int) -> None:
        self.address_family = family
        super().__init__(address, handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind looks the host's name up (getfqdn): a DNS wait for nothing here
        import socketserver

        socketserver.TCPServer.server_bind(self)
        self.server_name, self.server_port = str(self.server_address[0]), int(self.server_address[1])

    def handle_error(self, request: Any, client_address: Any) -> None:
        log.debug("live view: error answering %s", client_address, exc_info=True)


def _handler(view: LiveView) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "crashcast-live"

        timeout = REQUEST_TIMEOUT_S  # a client that sends nothing does not hold its thread

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if not _host_allowed(view.host, self.headers.get("Host")):
                self._send(403, "text/plain; charset=utf-8", b"this page answers to 127.0.0.1 and localhost only\n")
            elif path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", PAGE.encode())
            elif path == "/state.json":
                self._send(200, "application/json", view._state())
            elif path == "/frame.jpg":
                jpeg = view._jpeg_now()
                if jpeg is None:
                    self._send(503, "text/plain; charset=utf-8", b"no frame yet\n")
                else:
                    self._send(200, "image/jpeg", jpeg)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, status: int, ctype: str, body: bytes) -> None:
            try:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Cache-Control", "no-store")
                self.end_headers()
                self.wfile.write(body)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the browser went away (a page closed, a poll given up on)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("live view %s: " + format, self.address_string(), *args)

    return Handler


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>crashcast live</title>
<style>
  body { margin: 0; background: #111; color: #eee; font: 15px/1.4 system-ui, sans-serif; }
  main { display: flex; flex-wrap: wrap; gap: 16px; padding: 16px; align-items: flex-start; }
  #view { flex: 1 1 480px; min-width: 280px; background: #000; aspect-ratio: 16 / 9; }
  #frame { width: 100%; display: block; }
  #panel { flex: 0 0 280px; }
  #gauge { text-align: center; padding: 8px; border: 2px solid #333; border-radius: 8px; }
  #gauge.alert { border-color: #e62828; background: #3a0d0d; }
  #risk-value { font-size: 40px; font-weight: bold; }
  #alert-state { font-weight: bold; letter-spacing: 0.1em; }
  #gauge.alert #alert-state { color: #ff4b4b; }
  #reason { min-height: 2.8em; margin: 8px 0; }
  dl { display: grid; grid-template-columns: auto 1fr; gap: 2px 12px; margin: 0; }
  dt { color: #999; } dd { margin: 0; font-variant-numeric: tabular-nums; }
  #status { color: #999; margin-top: 8px; }
</style></head>
<body><main>
<div id="view"><img id="frame" alt="live annotated view"></div>
<div id="panel">
  <div id="gauge" class="gauge" data-risk="" data-alert="false">
    <svg viewBox="0 0 200 115" width="240" aria-label="risk gauge">
      <path d="M 20 100 A 80 80 0 0 1 180 100" fill="none" stroke="#333" stroke-width="18"/>
      <path id="arc" d="M 20 100 A 80 80 0 0 1 180 100" fill="none" stroke="#3c3" stroke-width="18"
            pathLength="100" stroke-dasharray="0 100"/>
    </svg>
    <div>risk <span id="risk-value">&ndash;</span></div>
    <div id="alert-state">waiting</div>
  </div>
  <div id="reason"></div>
  <dl>
    <dt>time</dt><dd id="time">&ndash;</dd>
    <dt>latency</dt><dd id="latency">&ndash;</dd>
    <dt>dropped</dt><dd id="drop-rate">&ndash;</dd>
    <dt>reconnects</dt><dd id="reconnects">&ndash;</dd>
  </dl>
  <div id="status">connecting</div>
</div>
</main>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const num = (v, digits, unit) => (typeof v === "number" ? v.toFixed(digits) + unit : "\\u2013");

function render(s) {
  const gauge = $("gauge");
  if (!s) { $("status").textContent = "waiting for the first stride"; return; }
  const risk = typeof s.risk === "number" ? Math.min(Math.max(s.risk, 0), 1) : null;
  gauge.dataset.risk = risk === null ? "" : risk.toFixed(2);
  gauge.dataset.alert = String(!!s.alert);
  gauge.classList.toggle("alert", !!s.alert);
  $("risk-value").textContent = risk === null ? "\\u2013" : risk.toFixed(2);
  const arc = $("arc");
  arc.setAttribute("stroke-dasharray", ((risk || 0) * 100).toFixed(1) + " 100");
  arc.setAttribute("stroke", s.alert ? "#e62828" : "hsl(" + Math.round(120 * (1 - (risk || 0))) + ", 75%, 50%)");
  $("alert-state").textContent = s.alert ? "ALERT" : "no alert";
  $("reason").textContent = s.reason || "";
  $("time").textContent = num(s.time_s, 1, " s");
  $("latency").textContent = num(s.latency_s, 2, " s");
  $("drop-rate").textContent = typeof s.drop_rate === "number" ? (100 * s.drop_rate).toFixed(1) + " %" : "\\u2013";
  $("reconnects").textContent = s.reconnects ?? "\\u2013";
  $("status").textContent = "live";
}

async function pollState() {
  try {
    const r = await fetch("state.json", {cache: "no-store"});
    render(await r.json());
  } catch (e) {
    $("status").textContent = "disconnected (the run has ended?)";
  }
  setTimeout(pollState, 250);
}

const img = $("frame");
function nextFrame(delay) { setTimeout(() => { img.src = "frame.jpg?t=" + Date.now(); }, delay); }
img.onload = () => { img.dataset.size = img.naturalWidth + "x" + img.naturalHeight; nextFrame(100); };
img.onerror = () => nextFrame(500);

pollState();
nextFrame(0);
</script>
</body></html>
"""
