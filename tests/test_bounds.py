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


# ----------------------------------------------------------------------------- the audit (issue 23, item 4)


@pytest.mark.parametrize("override,field", [
    ("windows.keyframe_fractions={max: [0, 0, 0], mid: [0.5, 0.75, 1], mini: [0.75, 0.875, 1]}", "keyframe"),
    ("windows.keyframe_fractions={max: [0, 0.5, 2]}", "keyframe"),
    ("windows.default_alert_lead_s=1e308", "default_alert_lead_s"),
    ("evaluation.seed=-1", "seed"), ("evaluation.test_fraction=0.9", "fraction"),
    ("perception.geometry.camera_height_m=.inf", "camera_height_m"),
    ("physics.ttc_mid_s=1e300", "ttc_mid_s"), ("vlm.learning_rate=1e9", "learning_rate"),
    ("perception.detector={name: yolo, imgsz: 100000}", "imgsz"),
    ("perception.tracker.track_buffer_frames=1000000000", "track_buffer_frames"),
])
def test_the_settings_the_audit_found_unbounded_have_ranges(override, field, capsys, tmp_path):
    with pytest.raises(ConfigError, match=field):
        load_config("classic", [override])
    with pytest.raises(ConfigError, match=field):
        api.extract(tmp_path / "none.csv", tmp_path / "run", backend="classic", overrides=[override])
    assert cli_exit_code(["extract", "--annotations", tmp_path / "none.csv", "--out", tmp_path / "run", "--backend",
                          "classic", "--set", override]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and field in errors[0]


def test_an_annotation_file_over_its_limit_is_refused_before_it_is_read(tmp_path, monkeypatch, capsys):
    from crashcast.data import annotations
    from crashcast.errors import AnnotationError

    csv = tmp_path / "train.csv"
    csv.write_text("id,time_of_event,time_of_alert,target\n" + "".join(f"{i},,,0\n" for i in range(100)))
    monkeypatch.setattr(annotations, "ANNOTATION_FILE_LIMIT", 512)  # the real one is 256 MiB
    with pytest.raises(AnnotationError, match=r"train\.csv: \d+ bytes, more than the 512"):
        api.windows(csv)
    assert cli_exit_code(["windows", "--annotations", csv]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "train.csv" in errors[0] and "more than the 512" in errors[0]
    os.symlink("/dev/zero", tmp_path / "zero.csv")
    with pytest.raises(AnnotationError, match="not a regular file"):
        api.windows(tmp_path / "zero.csv")


@pytest.fixture(scope="module")
def small_run(synth_small, tmp_path_factory):
    from crashcast.config import load_config
    from crashcast.data.annotations import read_csv
    from crashcast.extract import extract_run

    run = tmp_path_factory.mktemp("bounds_run") / "run"
    clips = read_csv(synth_small / "annotations.csv")[:4]
    assert extract_run(clips, run, load_config("classic"), workers=2, progress=False).ok == 4
    return run


@pytest.fixture
def run_copy(small_run, tmp_path):
    import shutil

    copy = tmp_path / "run"
    shutil.copytree(small_run, copy)
    return copy


def test_a_window_meta_that_is_a_device_or_a_fifo_is_left_out_named(run_copy, capsys):
    clip = sorted((run_copy / "clips").iterdir())[0]
    (clip / "max" / "window_meta.json").unlink()
    os.symlink("/dev/zero", clip / "max" / "window_meta.json")
    (clip / "mid" / "window_meta.json").unlink()
    os.mkfifo(clip / "mid" / "window_meta.json")  # opening it would block forever
    assert cli_exit_code(["prompts", run_copy]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "window_meta.json: is a device" in err and "window_meta.json: is a FIFO" in err
    skipped = api.prompts(run_copy).skipped
    assert {s.split(":")[0] for s in skipped} == {f"{clip.name}_max", f"{clip.name}_mid"}


def test_a_keyframe_png_declaring_a_giant_image_is_not_decoded(run_copy, capsys):
    clip = sorted((run_copy / "clips").iterdir())[0]
    png = sorted((clip / "max").glob("*.png"))[0]
    data = bytearray(png.read_bytes())
    data[16:24] = (100_000).to_bytes(4, "big") * 2  # IHDR width and height: 10 gigapixels
    png.write_bytes(bytes(data))
    assert cli_exit_code(["prompts", run_copy]) == 1
    assert "declares 100000x100000 pixels" in " ".join(capsys.readouterr().err.split())
    assert [s for s in api.prompts(run_copy).skipped if s.startswith(f"{clip.name}_max:")]


def test_a_feature_table_or_predictions_file_that_is_a_device_is_named(run_copy, capsys):
    table = run_copy / "features.parquet"
    table.unlink()
    os.symlink("/dev/zero", table)
    assert cli_exit_code(["evaluate", run_copy, "--models", "ttc"]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "features.parquet: is a device" in errors[0]
    with pytest.raises(CrashcastError, match=r"features\.parquet: is a device"):
        api.evaluate(run_copy, "ttc")
    (run_copy / "predictions").mkdir()
    os.mkfifo(run_copy / "predictions" / "ttc.csv")
    (run_copy / "metrics.json").write_text('{"models": {"ttc": {}}}')
    assert cli_exit_code(["report", run_copy]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "ttc.csv: is a FIFO" in errors[0]
    with pytest.raises(CrashcastError, match=r"ttc\.csv: is a FIFO"):
        api.report(run_copy)


def test_a_run_config_that_is_a_fifo_does_not_block(run_copy, tmp_path, synth_small, capsys):
    """`is_run` opened config.yaml and read a line: a FIFO blocked for ever, /dev/zero read until memory ran out."""
    from crashcast.extract import is_run

    cfg = run_copy / "config.yaml"
    cfg.unlink()
    os.mkfifo(cfg)
    assert not is_run(run_copy)
    assert cli_exit_code(["extract", "--annotations", synth_small / "annotations.csv", "--out", run_copy,
                          "--backend", "classic"]) == 2
    assert "config.yaml" in " ".join(_errors(capsys))
    with pytest.raises(CrashcastError, match=r"config\.yaml"):
        api.extract(synth_small / "annotations.csv", run_copy, backend="classic")


def test_a_video_whose_frames_claim_hours_is_streamed_in_bounded_work(tmp_path):
    """Frames at 0, 1/30, 2/30 s, then at 1 h and 2 h: each was held on the 30 fps grid until the next
    (216,000 grid frames); a frame now lasts at most MAX_FRAME_S, the rest is a gap."""
    import itertools

    from tests.conftest import level_frames, write_video

    from crashcast.data.video import MAX_FRAME_S, iter_resampled

    video = write_video(tmp_path / "hours.mp4", level_frames(5), [0, 1 / 30, 2 / 30, 3600, 7200])
    n = sum(1 for _ in itertools.islice(iter_resampled(video, 30.0, 64), 10_000))
    assert n <= 5 * (MAX_FRAME_S * 30 + 1)
    pred = api.predict(video, stride_s=0.5)
    assert len(pred.timeline) <= 5 * (MAX_FRAME_S / 0.5 + 1)


def test_a_video_larger_than_8k_is_refused_at_its_header(tmp_path, capsys):
    import numpy as np
    from tests.conftest import write_video

    from crashcast.data.video import MAX_SOURCE_SIDE_PX, probe
    from crashcast.errors import VideoError

    wide = write_video(tmp_path / "wide.mp4", [np.zeros((16, MAX_SOURCE_SIDE_PX + 64, 3), np.uint8)] * 3, [0, 0.1, 0.2])
    with pytest.raises(VideoError, match=f"more than the {MAX_SOURCE_SIDE_PX} a side"):
        probe(wide)
    with pytest.raises(VideoError, match=r"wide\.mp4"):
        api.predict(wide)
    assert cli_exit_code(["predict", wide, "--backend", "classic", "--out", tmp_path / "out"]) == 1
    assert f"more than the {MAX_SOURCE_SIDE_PX} a side" in " ".join(capsys.readouterr().err.split())


def test_a_prompt_template_that_is_a_fifo_is_refused(tmp_path):
    from crashcast.prompts.builder import load_template

    fifo = tmp_path / "template.yaml"
    os.mkfifo(fifo)
    with pytest.raises(ConfigError, match=r"template\.yaml.*FIFO"):
        load_template(fifo)


def test_a_dataset_info_that_is_a_fifo_is_replaced_not_read(run_copy):
    """`prompts` merges its entries into an existing prompts/dataset_info.json: a FIFO there blocked the open."""
    folder = run_copy / "prompts"
    folder.mkdir()
    os.mkfifo(folder / "dataset_info.json")
    written = api.prompts(run_copy, ["test"])
    assert (folder / "dataset_info.json").is_file() and written.files["test"].sharegpt.is_file()
    import json

    assert "crashcast_test" in json.loads((folder / "dataset_info.json").read_text())
