"""`crashcast doctor` and `crashcast weights`: the sections it prints, with and without torch, the
install traps it explains, and the weights commands (offline: what to fetch and where).

The commands are `crashcast.cli`'s, mounted on a local typer app; the report is the library's
(`crashcast.doctor`, which imports nothing from the CLI). No test touches the network
(HF_HUB_OFFLINE=1; sockets raise).
"""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from crashcast import cli
from crashcast import doctor as D
from crashcast.config import BackendConfig
from crashcast.perception import registry
from crashcast.runtime import packages as P
from crashcast.runtime import weights as W
from crashcast.runtime.weights import WeightFile

HUB_ID = "cc-dtest-org/tiny-segmenter"


class HubSegCfg(BackendConfig):
    name: str = "cc-dtest-hub"
    weights: str = HUB_ID


def _never_built(cfg, ctx):
    raise AssertionError("the doctor never builds a backend")


if "cc-dtest-hub" not in registry.available("segmenter"):
    registry.register("segmenter", "cc-dtest-hub", HubSegCfg, requires=("json",),
                      weights=lambda cfg: [WeightFile(cfg.weights, "huggingface", "Apache-2.0", size_mb=898.0,
                                                      files=("config.json", "model.safetensors"))])(_never_built)

app = typer.Typer()
app.command("doctor")(cli.doctor_command)
app.add_typer(cli.weights_app, name="weights")
runner = CliRunner()


@pytest.fixture(autouse=True)
def isolated(offline_caches, monkeypatch):
    # the subprocess check is tested on its own (test_doctor_in_a_fresh_process); here torchvision imports
    monkeypatch.setattr(P, "torchvision_problem", lambda: None)
    return offline_caches


def seg_preset(tmp_path: Path) -> Path:
    path = tmp_path / "seg.yaml"
    path.write_text(f"name: seg\nperception:\n  segmenter: {{name: cc-dtest-hub, weights: {HUB_ID}}}\n")
    return path


def rendered(report: D.DoctorReport) -> str:
    buf = io.StringIO()
    D.render(report, Console(file=buf, width=400, soft_wrap=True, color_system=None))
    return buf.getvalue()


def test_doctor_prints_every_section():
    r = runner.invoke(app, ["doctor"])
    assert r.exit_code == 0, r.output
    for section in ("Python:", "crashcast:", "torch:", "torchvision:", "weights folder:", "Extras", "Presets", "classic"):
        assert section in r.output, section
    assert sys.version.split()[0] in r.output
    report = D.collect()
    if report.torch.version is not None:  # torch installed here: its version and build are shown
        import torch

        assert torch.__version__ in r.output
        assert ("CPU-only build" in r.output) == (torch.version.cuda is None)
    classic = next(p for p in report.presets if p.name == "classic")
    assert classic.ready and classic.weights == []


def test_the_doctor_is_library_code_without_the_cli():
    code = ("import io, sys; from rich.console import Console; import crashcast.doctor as D, crashcast.api as api; "
            "D.render(api.doctor(), Console(file=io.StringIO())); "
            "print(sorted(m for m in ('crashcast.cli', 'typer') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_extras_report_matches_installed_packages():
    extras = D.extras_report()
    assert {"vision", "vlm", "distributed", "dev", "all"} <= set(extras)
    assert "crashcast" not in {d for pkgs in extras.values() for d, _ in pkgs}  # self-references expanded
    import importlib.metadata as md
    import importlib.util

    for pkgs in extras.values():
        for dist, version in pkgs:
            module = D._import_name(dist)
            if version is not None:
                assert version == md.version(dist) and importlib.util.find_spec(module) is not None
            else:
                assert importlib.util.find_spec(module) is None or not _has_dist(dist)
    assert all(d not in ("torch", "torchvision") for pkgs in extras.values() for d, _ in pkgs)  # never in an extra


def _has_dist(dist: str) -> bool:
    import importlib.metadata as md

    try:
        md.version(dist)
        return True
    except md.PackageNotFoundError:
        return False


def test_doctor_without_torch(monkeypatch):
    """torch (and torchvision) absent: the doctor says so, finds no torch trap and imports nothing."""
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now fails, find_spec finds nothing
    monkeypatch.setitem(sys.modules, "torchvision", None)
    t = D.torch_info()
    assert t.version is None and t.torchvision is None and t.gpus == []
    assert [trap for trap in D.find_traps(t) if "torch" in trap.title] == []
    out = rendered(D.collect())
    assert "torch:       not installed" in out and "torchvision: not installed" in out
    assert "Presets" in out and "classic" in out

    # a torch that is installed but fails to import is reported, not raised
    monkeypatch.setattr(D, "_importable", lambda module: module == "torch")
    t = D.torch_info()
    assert t.error is not None
    assert t.version is None or "import torch` fails" in D._torch_line(t)  # version from metadata when installed


def test_traps_torch_that_the_extras_would_replace():
    ok = D.TorchInfo(version="2.13.0+cpu", torchvision="0.28.0", torchvision_requires="torch==2.13.0")
    assert D._satisfies("2.13.0+cpu", "torch==2.13.0")  # pip counts the local label as the same version
    assert not [t for t in D.find_traps(ok) if "torch" in t.title]

    newer = D.TorchInfo(version="2.13.0+cpu", torchvision="0.29.2", torchvision_requires="torch==2.15.0")
    trap = next(t for t in D.find_traps(newer) if t.title == "torchvision asks for another torch")
    assert "torch==2.15.0" in trap.explanation and '"torch==2.13.0+cpu" torchvision' in trap.fix

    alone = D.TorchInfo(version="2.13.0+cpu")
    trap = next(t for t in D.find_traps(alone) if "would replace" in t.title)
    assert "newest" in trap.explanation and '"torch==2.13.0+cpu" torchvision' in trap.fix
    if _req_version() is not None:  # read from the installed torchvision's metadata, as pip reads it
        assert D._torch_requirement("torchvision") == f"torch=={_req_version()}"


def _req_version() -> str | None:
    import importlib.metadata as md
    import re

    try:
        reqs = md.requires("torchvision") or []
    except md.PackageNotFoundError:
        return None
    for r in reqs:
        m = re.match(r"torch\s*\(?==\s*([^);\s]+)", r)
        if m:
            return m.group(1)
    return None


def test_trap_cpu_torch_with_cuda_torchvision(monkeypatch):
    monkeypatch.setattr(P, "torchvision_problem", lambda: "RuntimeError: operator torchvision::nms does not exist")
    t = D.TorchInfo(version="2.13.0+cpu", cuda=None, torchvision="0.28.0", torchvision_requires="torch==2.13.0")
    trap = next(t for t in D.find_traps(t) if "CPU vs CUDA" in t.title)
    assert "torchvision::nms does not exist" in trap.explanation and "CPU-only" in trap.explanation
    assert "torchvision==0.28.0 --index-url https://download.pytorch.org/whl/cpu" in trap.fix
    cuda = D.TorchInfo(version="2.13.0+cu126", cuda="12.6", torchvision="0.28.0+cpu", torchvision_requires="torch==2.13.0")
    assert "/whl/cu126" in next(t for t in D.find_traps(cuda) if "CPU vs CUDA" in t.title).fix
    out = rendered(D.DoctorReport("3.11", "0.1.0", t, {}, [], D.find_traps(t), None))
    assert "Trap:" in out and "fix:" in out


def test_doctor_in_a_fresh_process_matches_a_plain_torchvision_import():
    """The real subprocess check (no test shim in a fresh process): the doctor reports the nms trap
    exactly when `import torchvision` fails that way here, and never crashes either way."""
    code = ("import io; from rich.console import Console; from crashcast import doctor as D; b = io.StringIO(); "
            "D.render(D.collect(), Console(file=b, width=400, color_system=None)); print(b.getvalue())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    plain = subprocess.run([sys.executable, "-c", "import torchvision"], capture_output=True, text=True, timeout=300)
    broken = plain.returncode != 0 and "torchvision::nms does not exist" in plain.stderr
    has_torch = subprocess.run([sys.executable, "-c", "import torch"], capture_output=True).returncode == 0
    assert ("CPU vs CUDA" in out.stdout) == (broken and has_torch)


def test_weights_list_and_download_offline(tmp_path):
    path = seg_preset(tmp_path)
    d = tmp_path / "weights"
    r = runner.invoke(app, ["weights", "list", "--preset", str(path), "--weights-dir", str(d)])
    assert r.exit_code == 0, r.output
    for text in (HUB_ID, f"https://huggingface.co/{HUB_ID}", "898 MB", "Apache-2.0", "missing", str(d / HUB_ID)):
        assert text in r.output, text

    r = runner.invoke(app, ["weights", "download", str(path), "--dir", str(d)])
    assert isinstance(r.exception, W.WeightsUnavailable)  # cli.main prints it as one error message
    assert f"hf download {HUB_ID} config.json model.safetensors --local-dir {d / HUB_ID}" in str(r.exception)
    assert "Apache-2.0" in str(r.exception) and "898 MB" in str(r.exception)

    (d / HUB_ID).mkdir(parents=True)
    for f in ("config.json", "model.safetensors"):
        (d / HUB_ID / f).write_bytes(b"x" * 2_000_000)
    r = runner.invoke(app, ["weights", "download", str(path), "--dir", str(d)])
    assert r.exit_code == 0 and f"{HUB_ID}: {d / HUB_ID}" in r.output
    r = runner.invoke(app, ["weights", "list", "--preset", str(path), "--weights-dir", str(d)])
    assert "present" in r.output and "4 MB" in r.output  # the size on disk

    r = runner.invoke(app, ["doctor", "--weights-dir", str(d)])
    assert r.exit_code == 0 and str(d) in r.output


def test_weights_list_of_a_preset_without_weights():
    r = runner.invoke(app, ["weights", "list", "--preset", "classic"])
    assert r.exit_code == 0 and "needs no model weights" in r.output
    r = runner.invoke(app, ["weights", "download", "classic"])
    assert r.exit_code == 0 and "needs no model weights" in r.output


def test_ci_runs_the_readme_test_command():
    """.ci/run must run exactly the README's second "Start here" command (the test command)."""
    import re

    repo = Path(__file__).resolve().parents[1]
    start = (repo / "README.md").read_text(encoding="utf-8").split("## Start here", 1)[1].split("\n## ", 1)[0]
    commands = re.findall(r"```bash\n(.*?)\n```", start, re.S)
    assert commands[0] == "python -m pip install -e . && crashcast demo"  # the first stays torch-free
    test_cmd = commands[1]
    assert "pytest" in test_cmd and "torch==2.13.0 torchvision==0.28.0" in test_cmd and ".[test]" in test_cmd
    ci = [ln for ln in (repo / ".ci" / "run").read_text(encoding="utf-8").splitlines()
          if ln.strip() and not ln.lstrip().startswith("#")]
    assert ci[-1] == test_cmd


def test_torch_line_names_the_build_and_the_gpus():
    gpu = D.TorchInfo(version="2.13.0+cu126", cuda="12.6", gpus=[("NVIDIA H200", 139.8), ("NVIDIA H200", 139.8)])
    assert D._torch_line(gpu) == ("2.13.0+cu126, CUDA 12.6 build; GPU 0: NVIDIA H200, 139.8 GiB; "
                                  "GPU 1: NVIDIA H200, 139.8 GiB")
    assert "CUDA 12.6 build; no CUDA device usable here" in D._torch_line(D.TorchInfo(version="2.13.0", cuda="12.6"))
    assert D._torch_line(D.TorchInfo(version="2.13.0+cpu")) == "2.13.0+cpu, CPU-only build; runs on the CPU"
    assert D._index_tag("12.6") == "cu126" and D._index_tag("13.0.1") == "cu130" and D._index_tag(None) == "cpu"
