"""`--backend auto` fetches the fast preset's weights on first use when online: against a local HTTP
server on 127.0.0.1 that serves them in the Hugging Face hub's layout (`/{repo}/resolve/{rev}/{file}`,
HF_ENDPOINT) and as ultralytics assets (CRASHCAST_ULTRALYTICS_ASSETS), small dummy files in place
of the models (what is checked is the download and what is used afterwards, never the model). A
server that dies mid-file leaves no file that is used, and the next run fetches it; `--offline`,
CRASHCAST_OFFLINE and HF_HUB_OFFLINE make no connection; without a network the weight-free preset is
taken in one short line."""

from __future__ import annotations

import hashlib
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from tests.conftest import cli_exit_code, level_frames, write_video

from crashcast import api
from crashcast import readiness as R
from crashcast.config import load_config
from crashcast.runtime import packages
from crashcast.runtime import weights as W

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LINE_MAX = 150


def _fast_files() -> list[W.WeightFile]:
    return [wf for _, _, wf in R.required(load_config(R.FETCH_PRESET))]


class Hub:
    """A local server of the fast preset's files: hub repositories at /{repo}/resolve/{rev}/{file},
    ultralytics assets at /assets/{name}. `cut`: a URL path whose next GET sends half its bytes and
    drops the connection (with `die_at_cut`, the server dies there); `dead`: every request is dropped
    unanswered (the server has died)."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        for wf in _fast_files():
            if wf.source == "huggingface":
                for f in wf.files:
                    self.files[f"/{wf.name}/resolve/main/{f}"] = hashlib.sha256(f.encode()).digest() * 8192
            else:
                self.files[f"/assets/{wf.name}"] = hashlib.sha256(wf.name.encode()).digest() * 8192
        self.requests: list[tuple[str, str]] = []
        self.cut: str | None = None
        self.die_at_cut = False
        self.dead = False
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def _drop(self) -> None:
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)

            def _serve(self, body: bool) -> None:
                hub.requests.append((self.command, self.path))
                data = hub.files.get(self.path)
                if hub.dead:
                    return self._drop()
                if data is None:
                    self.send_error(404)
                    return None
                start = 0
                rng = self.headers.get("Range", "")
                if rng.startswith("bytes=") and rng[6:].split("-")[0].isdigit():
                    start = int(rng[6:].split("-")[0])
                self.send_response(206 if start else 200)
                self.send_header("Content-Length", str(len(data) - start))
                if start:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
                self.send_header("X-Repo-Commit", COMMIT)
                self.end_headers()
                if not body:
                    return None
                if hub.cut == self.path:
                    hub.cut = None
                    hub.dead = hub.die_at_cut
                    self.wfile.write(data[start:start + (len(data) - start) // 2])
                    self.wfile.flush()
                    return self._drop()
                self.wfile.write(data[start:])
                return None

            def do_HEAD(self) -> None:
                self._serve(False)

            def do_GET(self) -> None:
                self._serve(True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def gets(self) -> list[str]:
        return [p for m, p in self.requests if m == "GET"]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """Empty caches in tmp_path, no weights folder, the network allowed to 127.0.0.1 only, and a local
    server the hub endpoint and the ultralytics assets point to; the fast preset's packages taken as
    installed (what is tested is the download, not the install)."""
    for var in ("CRASHCAST_OFFLINE", "HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CRASHCAST_WEIGHTS_DIR", "HF_HUB_CACHE",
                "HUGGINGFACE_HUB_CACHE", "XDG_CACHE_HOME", *(p for v in ("http", "https", "all")
                                                            for p in (f"{v}_proxy", f"{v.upper()}_PROXY"))):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    config_dir = tmp_path / "yolo-config" / "Ultralytics"
    config_dir.mkdir(parents=True)
    (config_dir / "settings.json").write_text(f'{{"weights_dir": "{tmp_path / "ul-weights"}"}}')
    monkeypatch.setenv("YOLO_CONFIG_DIR", str(tmp_path / "yolo-config"))
    import huggingface_hub.constants as hf_constants

    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)  # read once at import, maybe under a test's =1
    monkeypatch.setattr(packages, "missing", lambda names: [])
    monkeypatch.setattr(packages, "torchvision_problem", lambda: None)
    real_connect = socket.socket.connect

    def loopback_only(sock, address):
        if not (isinstance(address, tuple) and address[0] in ("127.0.0.1", "localhost")):
            raise OSError(f"test: no connection to {address} (only the local server)")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    server = Hub()
    server.thread.start()
    monkeypatch.setenv("HF_ENDPOINT", server.url)
    monkeypatch.setenv(W.ULTRALYTICS_ASSETS_ENV, server.url + "/assets")
    yield server
    server.server.shutdown()
    server.server.server_close()


def _auto(caplog, **kw) -> tuple[str, str]:
    """`--backend auto` through the API: the preset taken and its one log line."""
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="crashcast"):
        cfg = api.config_for("auto", **kw)
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("perception: ")]
    assert len(lines) == 1 and len(lines[0]) <= LINE_MAX, lines
    return cfg.name, lines[0]


def _on_disk(tmp_path) -> list[str]:
    return sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())


def test_auto_downloads_the_fast_weights_once_and_takes_fast(hub, tmp_path, caplog):
    files = _fast_files()
    asset = next(wf for wf in files if wf.source == "ultralytics")
    stale = tmp_path / "ul-weights" / f"{asset.name}.1234.part"  # a download killed earlier: never taken for the file
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half a file")
    assert all(W.locate(wf) is None for wf in files)
    assert R.choose_backend()[0] == "classic"
    preset, line = _auto(caplog)
    assert preset == "fast" and "downloaded" in line, line
    assert any("downloading the fast preset's weights once" in r.getMessage() for r in caplog.records)
    for wf in files:  # where the libraries load them from, with the served bytes
        where = W.locate(wf)
        assert where is not None, wf.name
        if wf.source == "huggingface":
            for f in wf.files:
                assert (where / f).read_bytes() == hub.files[f"/{wf.name}/resolve/main/{f}"]
        else:
            assert where == tmp_path / "ul-weights" / wf.name
            assert where.read_bytes() == hub.files[f"/assets/{wf.name}"]
    assert R.choose_backend()[0] == "fast"
    assert [p for p in _on_disk(tmp_path) if p.endswith((".part", ".incomplete"))] == [str(stale.relative_to(tmp_path))]
    n = len(hub.requests)
    assert _auto(caplog)[0] == "fast" and len(hub.requests) == n  # once: the next run asks nothing


def test_a_cut_asset_download_is_never_used_and_the_next_run_fetches_it(hub, tmp_path, caplog):
    asset = next(wf for wf in _fast_files() if wf.source == "ultralytics")
    hub.cut = f"/assets/{asset.name}"
    preset, line = _auto(caplog)
    assert preset == "classic" and "failed" in line and "retries" in line, line
    assert hub.cut is None  # the cut happened
    assert W.locate(asset) is None
    assert not (tmp_path / "ul-weights" / asset.name).exists()
    assert not list((tmp_path / "ul-weights").glob("*.part"))  # the half file is gone, not left to be mistaken
    assert R.choose_backend()[0] == "classic"
    n = len(hub.requests)
    preset, line = _auto(caplog)  # the network is back
    assert preset == "fast", line
    assert W.locate(asset).read_bytes() == hub.files[f"/assets/{asset.name}"]
    assert [p for m, p in hub.requests[n:] if m == "GET"] == [f"/assets/{asset.name}"]  # only what was missing


def test_a_hub_file_cut_by_a_dying_server_is_never_used_and_the_next_run_fetches_it(hub, tmp_path, caplog, monkeypatch):
    repo = next(wf for wf in _fast_files() if wf.source == "huggingface")
    big = max(repo.files, key=lambda f: len(hub.files[f"/{repo.name}/resolve/main/{f}"]))
    hub.cut, hub.die_at_cut = f"/{repo.name}/resolve/main/{big}", True
    monkeypatch.setattr("time.sleep", lambda s: None)  # huggingface_hub's pauses between its retries
    preset, line = _auto(caplog)
    assert preset == "classic" and "failed" in line and "retries" in line, line
    assert hub.cut is None and hub.dead  # it was cut, then the server died
    assert W.locate(repo) is None
    snapshots = tmp_path / "hf" / "hub" / ("models--" + repo.name.replace("/", "--")) / "snapshots"
    assert not (snapshots.exists() and [p for p in snapshots.rglob(big)])  # the half blob is not linked in
    assert R.choose_backend()[0] == "classic"
    hub.dead = False
    preset, line = _auto(caplog)
    assert preset == "fast", line
    assert (W.locate(repo) / big).read_bytes() == hub.files[f"/{repo.name}/resolve/main/{big}"]


@pytest.mark.parametrize("how", ["argument", "CRASHCAST_OFFLINE", "HF_HUB_OFFLINE"])
def test_offline_makes_no_connection(hub, tmp_path, caplog, monkeypatch, how):
    attempts = []
    monkeypatch.setattr(socket.socket, "connect", lambda sock, address: attempts.append(address))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a))
    if how != "argument":
        monkeypatch.setenv(how, "1")
    preset, line = _auto(caplog, **({"offline": True} if how == "argument" else {}))
    assert preset == "classic" and "offline" in line and "crashcast weights download fast" in line, line
    assert not attempts and not hub.requests
    assert all(W.locate(wf) is None for wf in _fast_files())


def test_a_weights_folder_is_loaded_offline_and_never_downloaded_into(hub, tmp_path, caplog):
    preset, line = _auto(caplog, weights_dir=tmp_path / "mine")
    assert preset == "classic" and "weights folder" in line, line
    assert not hub.requests


def test_without_a_network_auto_falls_back_in_one_short_line(offline_caches, tmp_path, monkeypatch, capsys):
    """No network (sockets blocked) and no offline setting: `crashcast predict` tries, fails at once,
    and runs the weight-free preset, saying so in one short line."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CRASHCAST_OFFLINE", raising=False)
    monkeypatch.setattr(packages, "missing", lambda names: [])
    monkeypatch.setattr(packages, "torchvision_problem", lambda: None)
    video = write_video(tmp_path / "v.mp4", level_frames(30, (96, 64), step=4), [i / 10 for i in range(30)])
    code = cli_exit_code(["predict", video, "--out", tmp_path / "pred", "--format", "json"])
    assert code == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "perception: " in x]
    assert len(lines) == 1 and len(lines[0]) <= LINE_MAX + len("INFO "), lines
    assert "perception: classic (weight-free; no network" in lines[0]
    assert not [p for p in _on_disk(tmp_path) if "weights" in p or p.endswith((".pt", ".safetensors", ".part"))]


def test_predict_offline_option_makes_no_connection(offline_caches, tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("CRASHCAST_OFFLINE", raising=False)
    monkeypatch.setattr(packages, "missing", lambda names: [])
    attempts = []
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: attempts.append(a))
    video = write_video(tmp_path / "v.mp4", level_frames(30, (96, 64), step=4), [i / 10 for i in range(30)])
    assert cli_exit_code(["predict", video, "--offline", "--out", tmp_path / "pred", "--format", "json"]) == 0
    lines = [x for x in capsys.readouterr().err.splitlines() if "perception: " in x]
    assert len(lines) == 1 and "offline" in lines[0] and not attempts, lines
