"""What runs here: readiness of every preset, perception and VLM alike, with each package and each
weight file taken away in turn; and the one weights-folder rule every model follows."""

from __future__ import annotations

from pathlib import Path

import pytest

from crashcast import readiness as R
from crashcast.config import load_config
from crashcast.perception.spec import BuildContext
from crashcast.risk.models import create_model
from crashcast.risk.vlm import resolve_base_model
from crashcast.runtime import packages
from crashcast.runtime.context import RuntimeContext
from crashcast.runtime.weights import WEIGHTS_ENV, WeightFile, candidates
from crashcast.settings import RuntimeConfig

MODEL_PRESETS = ["paper", "fast", "paper-zero-shot", "paper-baseline", "paper-enhanced"]


def _put(wf: WeightFile, d: Path) -> Path:
    """Make `wf` present in the weights folder `d`, as a person copying it there would."""
    where = d / wf.name
    if wf.source == "huggingface":
        where.mkdir(parents=True, exist_ok=True)
        for f in wf.files or ("model.safetensors",):
            (where / f.replace("*", "x")).parent.mkdir(parents=True, exist_ok=True)
            (where / f.replace("*", "x")).write_bytes(b"w")
    else:
        where.parent.mkdir(parents=True, exist_ok=True)
        where.write_bytes(b"w")
    return where


@pytest.fixture
def weights_env(tmp_path, monkeypatch):
    d = tmp_path / "weights"
    d.mkdir()
    monkeypatch.setenv(WEIGHTS_ENV, str(d))
    monkeypatch.setattr(packages, "torchvision_problem", lambda: None)
    return d


def _every_file(preset: str) -> list[WeightFile]:
    cfg = load_config(preset)
    return list({wf.name: wf for _, _, wf in R.required(cfg, vlm=R.defines_vlm(preset))}.values())


@pytest.mark.parametrize("preset", MODEL_PRESETS)
def test_readiness_with_each_package_and_weight_removed(preset, weights_env, monkeypatch):
    files = _every_file(preset)
    assert files, preset
    for wf in files:
        _put(wf, weights_env)
    monkeypatch.setattr(packages, "missing", lambda names: [])
    status = R.preset_status(preset)
    assert status.ready, status.why()
    needed = R.requires(load_config(preset), vlm=R.defines_vlm(preset))
    if preset.startswith("paper-"):
        assert {"torch", "transformers"} <= set(needed)
        assert ("peft" in needed) == (preset != "paper-zero-shot")
    for pkg in needed:
        monkeypatch.setattr(packages, "missing", lambda names, pkg=pkg: [n for n in names if n == pkg])
        status = R.preset_status(preset)
        assert not status.ready and status.missing_packages == [pkg], (pkg, status.why())
        assert pkg in status.why() and status.hint()
    monkeypatch.setattr(packages, "missing", lambda names: [])
    for wf in files:
        where = weights_env / wf.name
        hidden = where.with_name(where.name + ".away")
        where.rename(hidden)
        status = R.preset_status(preset)
        assert not status.ready and {w.file.name for w in status.missing_weights} == {wf.name}, wf.name
        assert wf.name in status.why()
        hidden.rename(where)
    assert R.preset_status(preset).ready


def test_vlm_presets_are_not_ready_without_their_packages(weights_env, monkeypatch):
    """The base install (no transformers, no peft) runs classic perception but no VLM preset."""
    monkeypatch.setattr(packages, "missing", lambda names: [n for n in names if n in ("transformers", "peft")])
    for preset in ("paper-zero-shot", "paper-baseline", "paper-enhanced"):
        for wf in _every_file(preset):
            _put(wf, weights_env)
        status = R.preset_status(preset)
        assert not status.ready and "transformers" in status.why(), preset
    assert R.preset_status("classic").ready and R.preset_status("nexar").ready


def test_auto_skips_what_cannot_run(weights_env, monkeypatch):
    monkeypatch.setattr(packages, "missing", lambda names: [])
    assert R.choose_backend()[0] == "classic"  # nothing on disk yet
    for wf in _every_file("fast"):
        _put(wf, weights_env)
    assert R.choose_backend()[0] == "fast"
    for wf in _every_file("paper"):
        _put(wf, weights_env)
    assert R.choose_backend()[0] == "paper"
    monkeypatch.setattr(packages, "missing", lambda names: [n for n in names if n == "ultralytics"])
    preset, reason, hint = R.choose_backend()  # paper and fast both detect with YOLO
    assert preset == "classic" and reason.count("ultralytics") == 2 and "[vision]" in hint
    (weights_env / "yolov8x.pt").unlink()
    monkeypatch.setattr(packages, "missing", lambda names: [])
    preset, reason, _ = R.choose_backend()
    assert preset == "fast" and "yolov8x.pt" in reason


def test_every_model_resolves_weights_from_the_env_folder_the_same_way(weights_env):
    """Perception backends (BuildContext) and the VLM (its base model) find a file in
    $CRASHCAST_WEIGHTS_DIR through one rule; `runtime.weights_dir` wins over the variable."""
    perception = [wf for p in ("paper", "fast") for wf in _every_file(p)]
    vlm = _every_file("paper-baseline")
    assert vlm and {wf.source for wf in vlm} == {"huggingface"}
    for wf in perception + vlm:
        where = _put(wf, weights_env)
        assert BuildContext().weights(wf.name) == str(where) == RuntimeContext().weights(wf.name)
        assert str(where) in [str(c) for c in candidates(wf.name, weights_env)]
    qwen = vlm[0].name
    assert resolve_base_model(qwen) == str(weights_env / qwen)
    model = create_model("vlm-zero-shot", load_config("paper-zero-shot").vlm.model_dump(mode="json"),
                         runtime=RuntimeConfig())
    assert model.runtime.weights_dir == weights_env
    other = weights_env.parent / "other"
    _put(vlm[0], other)
    assert resolve_base_model(qwen, RuntimeContext(RuntimeConfig(weights_dir=str(other))).weights_dir) == str(other / qwen)
    assert BuildContext(runtime=RuntimeConfig(weights_dir=str(other))).weights(qwen) == str(other / qwen)


def test_a_bad_override_is_said_once(monkeypatch):
    """(issue 23, item 9) a --set that fits no candidate was reported as 'no preset can run here',
    with the same error once per preset."""
    with pytest.raises(Exception) as e:
        R.choose_backend(overrides=["evaluation.ece_bins=0"])
    msg = str(e.value)
    assert msg.startswith("--set evaluation.ece_bins=0: fits none of the presets paper, fast, classic")
    assert msg.count("invalid config") == 1 and "greater than or equal to 2" in msg and "no preset can run here" not in msg
