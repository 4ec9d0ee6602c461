"""Bounded work (issue 23, item 4): every read has a size before it is parsed, every setting a range,
and YAML aliases (which expand to gigabytes) are refused; through the CLI and the Python API."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from tests.conftest import cli_exit_code

from crashcast import api
from crashcast.config import load_config
from crashcast.errors import ConfigError, CrashcastError, InputLimitError
from crashcast.runtime.store import read_bounded

BOMB = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True))


def _errors(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path, capsys):
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text(BOMB)  # 9^9 = 387 million leaves once expanded
    with pytest.raises(ConfigError, match="aliases"):
        load_config(cfg)
    with pytest.raises(ConfigError, match="aliases"):
        api.load(cfg)
    assert cli_exit_code(["windows", "--annotations", tmp_path / "none.csv", "--config", cfg]) == 2
    assert any("aliases" in e for e in _errors(capsys))
    with pytest.raises(ConfigError, match="aliases"):  # an override's value too
        load_config("classic", ["windows.horizons_s=" + "&a [0, *a]"])


@pytest.mark.parametrize("override,field", [
    ("evaluation.ece_bins=1e9", "ece_bins"), ("evaluation.ece_bins=1000000000", "ece_bins"),
    ("windows.span_s=1e308", "span_s"), ("video.long_side=100000", "long_side"),
    ("evaluation.threshold=-1", "threshold"), ("evaluation.threshold=.nan", "threshold"),
    ("evaluation.bootstrap=10000000", "bootstrap"), ("windows.horizons_s=[1e6]", "horizons"),
])
def test_settings_have_ranges(override, field, capsys, tmp_path):
    with pytest.raises(ConfigError, match=field):
        load_config("classic", [override])
    assert cli_exit_code(["extract", "--annotations", tmp_path / "none.csv", "--out", tmp_path / "run", "--backend", "classic",
                          "--set", override]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and field in errors[0]


def test_a_link_to_dev_zero_or_a_fifo_is_not_read(tmp_path):
    zero, fifo, big = tmp_path / "metrics.json", tmp_path / "pipe", tmp_path / "big"
    os.symlink("/dev/zero", zero)
    os.mkfifo(fifo)
    big.write_bytes(b"x" * 2048)
    with pytest.raises(InputLimitError, match="a device, not a regular file"):
        read_bounded(zero)
    with pytest.raises(InputLimitError, match="FIFO"):
        read_bounded(fifo)  # would block forever if opened
    with pytest.raises(InputLimitError, match="2048 bytes, more than the 1024"):
        read_bounded(big, 1024)
    assert issubclass(InputLimitError, CrashcastError)


def test_a_run_whose_files_are_links_to_dev_zero(tmp_path, capsys):
    """metrics.json read by the report, booster.txt read by a saved LightGBM model: refused, named."""
    from tests.evaluation.conftest import toy_table

    from crashcast.risk.models import create_model, load_model

    folder = create_model("lightgbm").fit(toy_table(12)).save(tmp_path / "lgb")
    (folder / "booster.txt").unlink()
    os.symlink("/dev/zero", folder / "booster.txt")
    with pytest.raises(CrashcastError, match=r"booster\.txt: is a device"):
        load_model(folder)
    run = tmp_path / "run"
    run.mkdir()
    os.symlink("/dev/zero", run / "metrics.json")
    assert cli_exit_code(["report", run]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "metrics.json: is a device" in errors[0]


def test_a_device_or_a_fifo_is_not_called_an_empty_video(tmp_path):
    """(issue 23, item 9) /dev/zero and a FIFO were reported as "empty file (0 bytes)"."""
    from crashcast.data.annotations import read_csv
    from crashcast.data.video import probe
    from crashcast.errors import AnnotationError, VideoError

    fifo = tmp_path / "clip.mp4"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo):
        with pytest.raises(VideoError, match="not a regular file") as e:
            probe(path)
        assert "empty" not in str(e.value)
        with pytest.raises(AnnotationError, match="not a regular file"):
            read_csv(path)


@pytest.mark.parametrize("kwargs,word", [
    ({"stride_s": 0}, "stride_s"), ({"stride_s": float("nan")}, "stride_s"), ({"stride_s": 1e9}, "stride_s"),
    ({"threshold": -1}, "threshold"), ({"threshold": float("nan")}, "threshold"),
    ({"smooth": 0}, "smooth"), ({"smooth": 2.5}, "smooth"),
])
def test_predict_settings_are_bounded_before_any_video_is_read(kwargs, word, tmp_path):
    """`predict(stride_s=0)` looped forever; a NaN or negative threshold and smooth=0 were accepted."""
    missing = tmp_path / "not-read.mp4"  # never opened: the settings are refused first
    with pytest.raises(ConfigError, match=word):
        api.predict(missing, **kwargs)
    if "smooth" not in kwargs:
        with pytest.raises(ConfigError, match=word):
            list(api.predict_many([tmp_path], out=tmp_path / "out", **kwargs))
        assert not (tmp_path / "out").exists()
