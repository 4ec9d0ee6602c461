"""Ray addresses and limits (issue 23, item 6): a malformed `--address` is refused before Ray sees it
(Ray gives a traceback, or imports a Python module named by an unknown scheme), naming the option and
the value; a cluster whose port does not answer is refused within a bound (Ray waits minutes); the
limits on a Ray run are settings with ranges. Through the CLI and the Python API; no Ray is started."""

from __future__ import annotations

import socket
import time

import pytest
from tests.conftest import cli_exit_code

from crashcast import api
from crashcast.config import load_config
from crashcast.errors import ConfigError
from crashcast.runtime.executor import ExecutorError
from crashcast.runtime.executors import get_executor
from crashcast.runtime.ray_executor import check_address, init_ray

pytest.importorskip("ray", reason="the Ray executor needs ray (pip install 'crashcast[distributed]')")

MALFORMED = {  # address -> what the message says
    "head-node": "no port", "head-node:": "not a Ray address", "head:abc": "not a Ray address",
    "head:0": "out of range", "head:70000": "out of range", ":6379": "not a Ray address",
    "a b:6379": "not a Ray address", "999.1.2.3:6379": "not an IPv4 address", "[zz::1]:6379": "not a Ray address",
    "[1::2::3]:6379": "not an IPv6 address", "h:1:2": "not a Ray address", "os://x": "os:// is not a Ray address scheme",
    "http://head:8265": "http:// is not a Ray address scheme", "ray://head": "no port", "auto ": "not a Ray address",
    "": "not a Ray address", "h:6379\n": "not a Ray address",
}


def _errors(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


@pytest.mark.parametrize("address", [None, "auto", "local", "10.0.0.5:6379", "head-node:6379", "head.example.org:6379",
                                     "[::1]:6379", "ray-head_0.svc:65535"])
def test_the_forms_ray_init_documents_are_accepted(address):
    assert check_address(address) == address
    assert get_executor("ray", 2, address).address == address


@pytest.mark.parametrize("address", sorted(MALFORMED))
def test_a_malformed_address_is_refused_naming_the_option_and_the_value(address):
    with pytest.raises(ExecutorError) as e:
        get_executor("ray", 2, address)
    assert f"--address {address!r}" in str(e.value) and MALFORMED[address] in str(e.value)
    assert isinstance(e.value, ConfigError)  # the CLI's clean error, exit 2


def test_a_ray_client_address_without_ray_client_says_what_to_install():
    import importlib.util

    if importlib.util.find_spec("grpc") is not None:
        assert check_address("ray://head:10001") == "ray://head:10001"
    else:
        with pytest.raises(ExecutorError, match=r"--address 'ray://head:10001'.*ray\[client\]"):
            check_address("ray://head:10001")


@pytest.mark.parametrize("address", ["head-node", "os://x"])
def test_a_malformed_address_through_the_cli_and_the_api_writes_nothing(address, synth_small, tmp_path, capsys):
    csv = synth_small / "annotations.csv"
    run = tmp_path / "run"
    argv = ["extract", "--annotations", csv, "--videos", synth_small, "--out", run, "--backend", "classic",
            "--executor", "ray", "--address", address]
    assert cli_exit_code(argv) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and f"--address {address!r}" in errors[0], errors
    with pytest.raises(ExecutorError, match=f"--address {address!r}"):
        api.extract(csv, run, synth_small, backend="classic", executor="ray", address=address, progress=False)
    with pytest.raises(ExecutorError, match=f"--address {address!r}"):
        list(api.predict_many([synth_small], "physics", backend="classic", out=tmp_path / "pred", workers=2,
                              executor="ray", address=address, progress=False))
    argv = ["predict", synth_small, "--model", "physics", "--backend", "classic", "--out", tmp_path / "pred",
            "--workers", "2", "--executor", "ray", "--address", address]
    assert cli_exit_code(argv) == 2
    assert f"--address {address!r}" in _errors(capsys)[0]
    for out in (run, tmp_path / "pred"):  # the API makes --out (checked writable) first; nothing goes in
        assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_cluster_that_does_not_answer_is_refused_within_a_bound(synth_small, tmp_path, capsys):
    """Nothing listens on the port: ray.init would wait minutes (measured: over 100 s); refused at once."""
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    address = f"127.0.0.1:{_closed_port()}"
    t0 = time.monotonic()
    with pytest.raises(ExecutorError, match=rf"--address '{address}': cannot reach the Ray cluster"):
        init_ray(address)
    csv = synth_small / "annotations.csv"
    with pytest.raises(ExecutorError, match=rf"--address '{address}': cannot reach the Ray cluster"):
        api.extract(csv, tmp_path / "run", synth_small, backend="classic", executor="ray", address=address, progress=False)
    assert cli_exit_code(["extract", "--annotations", csv, "--videos", synth_small, "--out", tmp_path / "run2",
                          "--backend", "classic", "--executor", "ray", "--address", address]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "cannot reach the Ray cluster" in errors[0] and address in errors[0]
    with pytest.raises(ExecutorError, match="cannot resolve the host"):
        init_ray("no-such-host.invalid:6379")
    assert time.monotonic() - t0 < 60  # three refusals, each bounded (CONNECT_TIMEOUT_S; a closed port answers at once)
    assert not ray.is_initialized()


def test_a_malformed_ray_address_in_the_environment_is_named(monkeypatch):
    import ray

    if ray.is_initialized():
        pytest.skip("Ray is already initialised in this process")
    monkeypatch.setenv("RAY_ADDRESS", "head-node")
    with pytest.raises(ExecutorError, match=r"\$RAY_ADDRESS \(--address auto\) 'head-node': no port"):
        init_ray("auto")


@pytest.mark.parametrize("override,field", [
    ("runtime.ray_task_timeout_s=0", "ray_task_timeout_s"), ("runtime.ray_task_timeout_s=.nan", "ray_task_timeout_s"),
    ("runtime.ray_task_timeout_s=1e308", "ray_task_timeout_s"), ("runtime.ray_task_retries=-1", "ray_task_retries"),
    ("runtime.ray_task_retries=1000", "ray_task_retries"), ("runtime.ray_start_timeout_s=-5", "ray_start_timeout_s"),
    ("runtime.ray_start_timeout_s=.inf", "ray_start_timeout_s"),
])
def test_the_ray_limits_are_settings_with_ranges(override, field, capsys, tmp_path):
    with pytest.raises(ConfigError, match=field):
        load_config("classic", [override])
    assert cli_exit_code(["extract", "--annotations", tmp_path / "none.csv", "--out", tmp_path / "run", "--backend", "classic",
                          "--executor", "ray", "--set", override]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and field in errors[0]


def test_the_ray_limits_reach_the_executor():
    runtime = load_config("classic", ["runtime.ray_task_timeout_s=7", "runtime.ray_task_retries=0",
                                      "runtime.ray_start_timeout_s=9", "runtime.device=cpu"]).runtime
    ex = get_executor("ray", 2, None, runtime=runtime)
    assert (ex.task_timeout_s, ex.task_retries, ex.start_timeout_s, ex.device) == (7, 0, 9, "cpu")
