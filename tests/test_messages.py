"""Messages that misled (issue 23, item 9), through the CLI and the Python API: an output path that is
a folder is named as the user gave it (never a temporary name), a metrics.json whose `models` is not a
mapping is called malformed, `--set a=1 b=2` says to repeat --set, and a window folder or table that
would give two prompts one id names the ids and the files, writes no prompt file and blames no option."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast import api
from crashcast.config import load_config
from crashcast.errors import ConfigError, CrashcastError
from crashcast.extract import extract_run


def _errors(capsys) -> list[str]:
    return [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error:")]


@pytest.fixture(scope="module")
def run(synth_small, tmp_path_factory):
    from crashcast.data.annotations import read_csv

    run = tmp_path_factory.mktemp("msg_run") / "run"
    clips = read_csv(synth_small / "annotations.csv")[:4]
    assert extract_run(clips, run, load_config("classic"), workers=2, progress=False).ok == 4
    return run


@pytest.fixture
def own_run(run, tmp_path):
    """A copy of the module's run that a test may damage."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    return copy


# ----------------------------------------------------------------------------- an output path that is a folder


def test_windows_out_a_folder_names_the_folder_not_a_temporary_file(synth_small, tmp_path, capsys):
    folder = tmp_path / "here"
    folder.mkdir()
    assert cli_exit_code(["windows", "--annotations", synth_small / "annotations.csv", "--out", folder]) == 2
    err = capsys.readouterr().err
    assert str(folder) in " ".join(err.split()) and "is a folder" in err and ".part" not in err
    assert list(folder.iterdir()) == []


def test_an_api_output_file_that_is_a_folder_is_named_as_given(synth_small, tmp_path):
    """api.predict(out=...) writes timeline.csv there: a folder in its place is named, not `.timeline.csv.<pid>...part`."""
    out = tmp_path / "pred"
    (out / "timeline.csv").mkdir(parents=True)
    video = sorted(synth_small.glob("*.mp4"))[0]
    with pytest.raises(IsADirectoryError) as e:
        api.predict(video, out=out)
    assert e.value.filename == str(out / "timeline.csv") and ".part" not in str(e.value)
    assert not [p for p in out.iterdir() if ".part" in p.name]  # no temporary file left either


# ----------------------------------------------------------------------------- metrics.json's models


@pytest.mark.parametrize("models,word", [("lightgbm", "str"), (["lightgbm"], "list"), ({}, "empty"),
                                         ({"lightgbm": "0.9"}, "lightgbm")])
def test_a_metrics_file_whose_models_is_not_a_mapping_is_malformed(tmp_path, capsys, models, word):
    run = tmp_path / "run"
    (run / "predictions").mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({"models": models, "threshold": 0.5}))
    assert cli_exit_code(["report", run]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "metrics.json" in errors[0] and "malformed" in errors[0] and "models" in errors[0]
    assert word in errors[0] and "no prediction files" not in errors[0]
    with pytest.raises(CrashcastError, match=f"malformed.*models.*{word}|malformed.*{word}"):
        api.report(run)


# ----------------------------------------------------------------------------- --set a=1 b=2


@pytest.mark.parametrize("command", [
    ["extract", "--annotations", "{csv}", "--out", "{tmp}/r", "--backend", "classic"],
    ["evaluate", "{tmp}"], ["prompts", "{tmp}"], ["predict", "{video}"], ["train", "vlm", "--run", "{tmp}"],
])
@pytest.mark.parametrize("pairs", [["--set", "a=1", "b=2"], ["--set", "windows.span_s=3", "video.fps=10"],
                                   ["--set=evaluation.seed=1", "evaluation.ece_bins=5"]])
def test_several_pairs_after_one_set_say_to_repeat_set(command, pairs, synth_small, tmp_path, capsys):
    video = sorted(synth_small.glob("*.mp4"))[0]
    argv = [a.format(csv=synth_small / "annotations.csv", tmp=tmp_path, video=video) for a in command] + pairs
    assert cli_exit_code(argv) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "repeat --set" in errors[0] and pairs[-1] in errors[0], errors
    assert not (tmp_path / "r").exists()


def test_one_set_per_pair_still_works_and_a_file_named_like_a_pair_is_an_argument(tmp_path, capsys):
    assert load_config("classic", ["windows.span_s=3", "video.fps=10"]).video.fps == 10
    odd = tmp_path / "x=1"  # an existing path after a --set pair is the command's argument, not a pair
    odd.mkdir()
    assert cli_exit_code(["prompts", "--set", "evaluation.seed=1", odd]) == 2
    assert not any("repeat --set" in e for e in _errors(capsys))


@pytest.mark.parametrize("override", ["windows.span_s=3 video.fps=10", "evaluation.seed=1  evaluation.ece_bins=5"])
def test_the_api_says_one_override_per_item(override, tmp_path):
    with pytest.raises(ConfigError, match=r"one section\.field=value per --set.*its own"):
        api.load("classic", [override])
    with pytest.raises(ConfigError, match="its own"):
        api.extract(tmp_path / "none.csv", tmp_path / "r", backend="classic", overrides=[override])
    assert not (tmp_path / "r").exists()
    # a quoted text value may hold such words
    assert api.load("classic", ['vlm.base_model="a b.c=d"']).vlm.base_model == "a b.c=d"


# ----------------------------------------------------------------------------- duplicate window ids in prompts


def test_a_copied_window_folder_is_named_and_gives_no_duplicate_prompt(own_run, capsys):
    clip = sorted((own_run / "clips").iterdir())[0]
    shutil.copy(clip / "mid" / "window_meta.json", clip / "mini" / "window_meta.json")  # mini's folder holds mid's
    assert cli_exit_code(["prompts", own_run]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert f"{clip.name}_mini" in err and f"holds window {clip.name}_mid" in err
    assert str(clip / "mini" / "window_meta.json") in err and "--split" not in err
    ids = [json.loads(line)["id"] for split in ("train", "val", "test")
           for line in (own_run / "prompts" / f"{split}.jsonl").read_text().splitlines()]
    assert len(ids) == len(set(ids)) and f"{clip.name}_mini" not in ids and f"{clip.name}_mid" in ids
    written = api.prompts(own_run)
    assert [s for s in written.skipped if s.startswith(f"{clip.name}_mini:")]


def test_duplicate_rows_in_the_table_name_the_ids_and_write_nothing(own_run, capsys):
    table = own_run / "features.parquet"
    df = pd.read_parquet(table)
    pd.concat([df, df.iloc[[0]]], ignore_index=True).to_parquet(table)
    twice = df.window_id.iloc[0]
    assert cli_exit_code(["prompts", own_run]) == 2
    errors = _errors(capsys)
    assert len(errors) == 1 and "features.parquet" in errors[0] and twice in errors[0] and "--split" not in errors[0]
    with pytest.raises(CrashcastError, match=twice):
        api.prompts(own_run)
    assert not (own_run / "prompts").exists() or not list((own_run / "prompts").iterdir())


def test_an_export_with_one_id_twice_names_it_and_writes_no_file(run, tmp_path):
    from crashcast.prompts.dataset import split_prompts
    from crashcast.prompts.exports import export_prompts

    splits, _ = split_prompts(run, load_config("classic"))
    dup = splits["test"][0]
    splits["val"] = [*splits["val"], dup]  # one window in two splits
    with pytest.raises(CrashcastError, match=f"{dup.id} \\(val: .*window_meta.json, test: .*\\); nothing was written"):
        export_prompts(splits, tmp_path / "prompts")
    assert not (tmp_path / "prompts").exists() or not list((tmp_path / "prompts").iterdir())


def test_an_unknown_split_still_names_split(run, capsys):
    assert cli_exit_code(["prompts", run, "--split", "tset"]) == 2
    assert "--split" in capsys.readouterr().err
    with pytest.raises(api.UsageError, match="tset") as e:
        api.prompts(run, ["tset"])
    assert e.value.option == "--split"
