"""Issue 23 item 1: no code runs from a checkpoint the user did not trust.

The payload of every hostile checkpoint here is harmless: unpickling it creates an empty file (the
marker). The marker's absence proves that no checkpoint code ran; its presence after `--trust-checkpoint`
proves that the refusal, and nothing else, is what kept it from running.
"""

from __future__ import annotations

import os
import pickle
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import cli_exit_code

from crashcast.errors import ConfigError, CrashcastError
from crashcast.runtime import checkpoints as C
from crashcast.runtime import weights as W

REPO = Path(__file__).resolve().parents[2]


class Payload:
    """Unpickling this creates `marker` (harmless; it proves the code ran)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.fixture(autouse=True)
def no_trust(monkeypatch):
    monkeypatch.delenv(C.TRUST_ENV, raising=False)


# ----------------------------------------------------------------------------- trust and known files


def test_trust_is_said_explicitly_and_restored(tmp_path):
    f = tmp_path / "mine.pt"
    f.write_bytes(b"x")
    assert not C.is_trusted(f)
    with C.trusting([f]):
        assert C.is_trusted(f) and C.is_trusted(str(tmp_path / "." / "mine.pt"))  # the resolved path counts
        assert os.environ[C.TRUST_ENV]  # worker processes inherit it
    assert not C.is_trusted(f) and C.TRUST_ENV not in os.environ
    with pytest.raises(C.UntrustedCheckpoint, match=r"nothere\.pt: --trust-checkpoint names no file"):
        with C.trusting([tmp_path / "nothere.pt"]):
            pass


def test_a_known_file_is_checked_against_its_published_sha256(tmp_path):
    good, bad = tmp_path / "good.bin", tmp_path / "bad.bin"
    good.write_bytes(b"the published bytes")
    bad.write_bytes(b"other bytes")
    published = C.sha256_of(good)
    import hashlib

    assert published == hashlib.sha256(b"the published bytes").hexdigest()
    C.verify_known(good, published, "test file")  # passes
    with pytest.raises(C.UntrustedCheckpoint, match=r"bad\.bin: not the published test file: its SHA-256 is") as e:
        C.verify_known(bad, published, "test file")
    assert "--trust-checkpoint" in str(e.value)
    with C.trusting([bad]):
        C.verify_known(bad, published, "test file")  # trusted by the user: no hash check


def test_clip_from_a_weights_folder_is_hash_checked_before_it_is_read(tmp_path):
    """ViT-B-32.pt is a pickle/TorchScript archive; the weight table knows its SHA-256 (its URL names it)."""
    from crashcast.config import RuntimeConfig
    from crashcast.perception.models.yolo import CLIP_WEIGHTS, _clip_checkpoint
    from crashcast.perception.spec import BuildContext

    assert CLIP_WEIGHTS.sha256 and CLIP_WEIGHTS.sha256 in CLIP_WEIGHTS.url and W.expected_sha256(CLIP_WEIGHTS)
    (tmp_path / "ViT-B-32.pt").write_bytes(b"a file someone put there")
    ctx = BuildContext(runtime=RuntimeConfig(device="cpu", weights_dir=str(tmp_path)))
    with pytest.raises(C.UntrustedCheckpoint, match=r"ViT-B-32\.pt: not the published CLIP ViT-B/32"):
        _clip_checkpoint(ctx)


# ----------------------------------------------------------------------------- no working-directory lookup


def test_a_bare_name_is_never_taken_from_the_working_directory(tmp_path, monkeypatch, offline_caches):
    cwd = tmp_path / "somewhere"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    (cwd / "yolov8x.pt").write_bytes(b"planted")
    assert not W.is_path("yolov8x.pt") and W.is_path("./yolov8x.pt") and W.is_path(str(cwd / "yolov8x.pt"))
    weights = tmp_path / "weights"
    weights.mkdir()
    with pytest.raises(ConfigError, match=r"yolov8x\.pt: not in the weights folder"):
        W.resolve("yolov8x.pt", weights)  # before: the planted file in the working directory
    assert W.resolve("yolov8x.pt") == "yolov8x.pt"  # without a folder: a name for the library ...
    placed = Path(W.weights_path("yolov8x.pt"))  # ... which the YOLO backend places in ultralytics' folder
    assert placed.is_absolute() and placed.parent != cwd and placed.name == "yolov8x.pt"
    assert W.locate(W.WeightFile("yolov8x.pt", "ultralytics", "AGPL-3.0")) is None  # the planted file is not it
    assert W.resolve("./yolov8x.pt") == "./yolov8x.pt"  # said as a path: the user's choice


# ----------------------------------------------------------------------------- ultralytics checkpoints


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """A genuine ultralytics checkpoint (the random tiny YOLO, saved by ultralytics) and hostile ones."""
    pytest.importorskip("ultralytics")
    import torch

    from crashcast.perception.models.yolo import _random_model

    d = tmp_path_factory.mktemp("ckpt")
    genuine = d / "genuine.pt"
    _random_model("tiny").save(str(genuine))
    marker = d / "PAYLOAD-RAN"
    ck = torch.load(genuine, weights_only=False)  # our own file
    ck["extra"] = Payload(marker)
    torch.save(ck, d / "evil.pt")  # a real checkpoint that also carries code
    torch.save(ck, d / "evil-legacy.pt", _use_new_zipfile_serialization=False)
    with (d / "raw.pt").open("wb") as f:  # a bare pickle named .pt
        pickle.dump(Payload(marker), f)
    return d, marker


def _detector(weights, **kw):
    from tests.perception.models.scenes import build_detector

    from crashcast.perception.models.yolo import YoloConfig

    return build_detector(YoloConfig, weights=str(weights), conf=0.05, **kw)


@pytest.fixture
def scene_frames():
    rng = np.random.default_rng(3)
    return [rng.integers(0, 255, (96, 128, 3), dtype=np.uint8) for _ in range(2)]


def test_a_genuine_checkpoint_loads_through_the_restricted_loader(checkpoints, scene_frames):
    d, _ = checkpoints
    restricted = _detector(d / "genuine.pt")
    with C.trusting([d / "genuine.pt"]):
        full = _detector(d / "genuine.pt")
    a, b = restricted.detect(scene_frames), full.detect(scene_frames)
    assert sum(len(x) for x in a) > 0  # boxes to compare
    for x, y in zip(a, b, strict=True):  # the same network either way
        np.testing.assert_allclose(x.xyxy, y.xyxy, atol=1e-4)
        np.testing.assert_allclose(x.confidence, y.confidence, atol=1e-5)


@pytest.mark.parametrize("name", ["evil.pt", "evil-legacy.pt", "raw.pt"])
def test_a_checkpoint_carrying_code_is_refused_and_runs_nothing(checkpoints, name):
    d, marker = checkpoints
    marker.unlink(missing_ok=True)
    with pytest.raises(C.UntrustedCheckpoint, match=rf"{name}: not loaded: .*--trust-checkpoint") as e:
        _detector(d / name)
    if name == "evil.pt":  # torch names the global a checkpoint in its zip format refers to
        assert "references io.open" in str(e.value) or "references builtins.open" in str(e.value)
    assert not marker.exists()


def _tiny_with(weights: Path, where: Path, extra: str = "max_det: 10") -> Path:
    """The tiny preset with its YOLO loading `weights` (a config file a traded run folder could carry)."""
    text = (REPO / "src" / "crashcast" / "configs" / "tiny.yaml").read_text()
    old = '{name: yolo, weights: "random:tiny", max_det: 10}'
    assert old in text
    where.write_text(text.replace(old, f'{{name: yolo, weights: "{weights}", {extra}}}'))
    return where


def test_extract_refuses_through_the_cli_and_the_api_and_loads_when_trusted(checkpoints, synth_small, tmp_path, capsys):
    from crashcast import api

    d, marker = checkpoints
    marker.unlink(missing_ok=True)
    cfg = _tiny_with(d / "evil.pt", tmp_path / "evil.yaml")
    ann = tmp_path / "one.csv"
    lines = (synth_small / "annotations.csv").read_text().splitlines()
    ann.write_text("\n".join(lines[:2]) + "\n")
    args = ["extract", "--annotations", ann, "--videos", synth_small, "--out", tmp_path / "run", "--config", cfg]
    assert cli_exit_code(args) == 2  # a clean error, one line
    err = capsys.readouterr()
    assert "evil.pt: not loaded" in err.out + err.err and "--trust-checkpoint" in err.out + err.err
    assert not marker.exists()
    with pytest.raises(CrashcastError, match=r"evil\.pt: not loaded"):  # the worker's setup failed, saying why
        api.extract(ann, tmp_path / "run2", synth_small, config=cfg, progress=False)
    assert not marker.exists()
    # trusted: the same file is unpickled in full and its code runs (which is all the refusal prevents);
    # a class filter that fails right after loading keeps the run short
    quick = _tiny_with(d / "evil.pt", tmp_path / "quick.yaml", "classes: [no-such-class]")
    args = ["extract", "--annotations", ann, "--videos", synth_small, "--out", tmp_path / "run3", "--config", quick]
    assert cli_exit_code([*args, "--trust-checkpoint", d / "evil.pt"]) == 2
    assert "no-such-class not among" in "".join(capsys.readouterr())
    assert marker.exists()
    marker.unlink()
    with pytest.raises(CrashcastError, match="no-such-class not among"):
        api.extract(ann, tmp_path / "run4", synth_small, config=quick, progress=False, trust_checkpoints=[d / "evil.pt"])
    assert marker.exists()


def test_predict_with_a_model_whose_run_config_names_a_hostile_checkpoint(checkpoints, synth_small, tmp_path, capsys):
    """`predict --model run/models/x` takes the run's config.yaml: a traded run folder is data too."""
    from crashcast import api
    from crashcast.risk.models import create_model

    d, marker = checkpoints
    marker.unlink(missing_ok=True)
    run = tmp_path / "traded-run"
    create_model("ttc").save(run / "models" / "ttc")
    from crashcast.extract import RUN_MARK

    text = _tiny_with(d / "evil.pt", tmp_path / "evil.yaml").read_text()
    (run / "config.yaml").write_text(f"{RUN_MARK}0123abcd\n{text}")  # what `extract` writes first
    video = sorted(synth_small.glob("*.mp4"))[0]
    assert cli_exit_code(["predict", video, "--model", run / "models" / "ttc", "--out", tmp_path / "p"]) != 0
    err = capsys.readouterr()
    assert "evil.pt: not loaded" in err.out + err.err
    with pytest.raises(C.UntrustedCheckpoint, match=r"evil\.pt: not loaded"):  # perception is built once, first
        list(api.predict_many([video], model=run / "models" / "ttc", out=tmp_path / "p2", progress=False))
    assert not marker.exists()
