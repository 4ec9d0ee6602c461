"""A missing extra or a torchvision that cannot import ends in one line naming the fix, before any
model loads, for every command that loads a model (issue 22, item 8)."""

from __future__ import annotations

import pytest
from tests.conftest import cli_exit_code

from crashcast.data.synthetic import generate
from crashcast.runtime import packages

NMS = "RuntimeError: operator torchvision::nms does not exist"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    out = tmp_path_factory.mktemp("clip")
    generate(1, out, seed=5)
    return next(out.glob("*.mp4"))


def _one_error_line(capsys) -> str:
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.strip()]
    errors = [ln for ln in err if ln.startswith("error:")]
    assert len(errors) == 1, err
    assert not any("Traceback" in ln for ln in err), err
    return errors[0]


def test_predict_with_an_unimportable_torchvision(clip, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(packages, "torchvision_problem", lambda: NMS)
    assert cli_exit_code(["predict", clip, "--backend", "tiny", "--out", tmp_path / "p"]) == 2
    line = _one_error_line(capsys)
    assert "torchvision::nms" in line and "crashcast doctor" in line


def test_predict_with_a_missing_extra(clip, tmp_path, monkeypatch, capsys):
    real = packages.missing
    monkeypatch.setattr(packages, "missing", lambda names: [*real(names), *(n for n in names if n == "ultralytics")])
    assert cli_exit_code(["predict", clip, "--backend", "tiny", "--out", tmp_path / "p"]) == 2
    line = _one_error_line(capsys)
    assert "ultralytics" in line and '".[vision]"' in line


@pytest.mark.parametrize("missing,extra", [("peft", "vlm"), ("transformers", "vision")])
def test_a_vlm_model_with_a_missing_extra(missing, extra, monkeypatch):
    from crashcast.risk.models import create_model

    real = packages.missing
    monkeypatch.setattr(packages, "missing", lambda names: [*real(names), *(n for n in names if n == missing)])
    with pytest.raises(packages.MissingPackages) as e:
        create_model("vlm-baseline")
    assert "\n" not in str(e.value) and missing in str(e.value) and f'".[{extra}]"' in str(e.value)


def test_a_vlm_with_an_unimportable_torchvision(monkeypatch):
    from crashcast.risk.models import create_model

    monkeypatch.setattr(packages, "torchvision_problem", lambda: NMS)
    with pytest.raises(packages.MissingPackages, match=r"torchvision::nms.*crashcast doctor"):
        create_model("vlm-zero-shot")
    assert create_model("physics").kind == "physics"  # models that need no torchvision are unaffected


def test_training_the_vlm_checks_its_packages_first(monkeypatch, tmp_path):
    from crashcast.config import load_config
    from crashcast.risk.finetune import train_vlm

    real = packages.missing
    monkeypatch.setattr(packages, "missing", lambda names: [*real(names), *(n for n in names if n == "peft")])
    with pytest.raises(packages.MissingPackages, match=r"peft.*\[vlm\]"):
        train_vlm([], [], load_config("paper-baseline").vlm, tmp_path / "out")
    assert not (tmp_path / "out").exists()
