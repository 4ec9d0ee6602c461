"""`crashcast prompts RUN`: every window of a run becomes a prompt, in the split `evaluate` uses."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.splits import train_val_test
from crashcast.extract import extract_run


@pytest.fixture(scope="module")
def run(synth_small, tmp_path_factory):
    run = tmp_path_factory.mktemp("prompt_run")
    clips = read_csv(synth_small / "annotations.csv")[:6]
    assert extract_run(clips, run, load_config("classic"), workers=2, progress=False).ok == 6
    return run


def _cli(argv) -> int:
    return cli_exit_code(argv)


def _records(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_prompts_follow_the_evaluation_split_and_name_their_images(run):
    assert _cli(["prompts", run]) == 0
    df = pd.read_parquet(run / "features.parquet")
    part = train_val_test(df, 0.3, 0.2, 0)  # the classic config's evaluation split
    folder = run / "prompts"
    seen = {}
    for name, rows in (("train", part.train), ("val", part.val), ("test", part.test)):
        records = _records(folder / f"{name}.jsonl")
        assert [r["id"] for r in records] == list(df.window_id.iloc[rows])
        seen[name] = {r["meta"]["clip_id"] for r in records}
        for r in records:
            user = r["conversations"][0]["value"]
            assert user.count("<image>") == len(r["images"]) == 3
            assert all((folder / p).resolve().is_file() for p in r["images"])  # relative to prompts/
            assert r["conversations"][1]["value"].startswith("Collision Probability: ")
        for suffix in (".swift.jsonl", ".chat.jsonl"):
            assert len(_records(folder / f"{name}{suffix}")) == len(records)
    assert not (seen["train"] & seen["test"]) and not (seen["val"] & (seen["train"] | seen["test"]))
    assert sum(len(_records(folder / f"{n}.jsonl")) for n in ("train", "val", "test")) == len(df)
    info = json.loads((folder / "dataset_info.json").read_text())
    assert {"crashcast_train", "crashcast_val", "crashcast_test"} <= set(info)


def test_one_split_with_rationale_and_a_bad_split_name(run, capsys):
    assert _cli(["prompts", run, "--split", "test", "--rationale"]) == 0
    records = _records(run / "prompts" / "test.jsonl")
    assert records and all("\nReason: " in r["conversations"][1]["value"] for r in records)
    assert _cli(["prompts", run, "--split", "tset"]) == 2
    assert "tset" in capsys.readouterr().err


def test_train_vlm_on_a_run_writes_an_adapter_from_the_training_split(run, capsys, tiny_cache):
    for module in ("torch", "transformers", "peft", "bitsandbytes"):
        pytest.importorskip(module)
    argv = ["train", "vlm", "--run", run, "--config", "paper-baseline", "--base-model", "random:tiny",
            "--device", "cpu", "--set", "vlm.epochs=1", "--set", "vlm.gradient_accumulation=1", "--rationale"]
    assert _cli(argv) == 0
    folder = run / "models" / "vlm-baseline"
    assert (folder / "adapter_model.safetensors").is_file()
    card = json.loads((folder / "model.json").read_text())["training"]
    from crashcast.prompts.dataset import split_prompts
    from crashcast.risk.finetune import prompts_hash

    # the paper preset's prompts: Fig. 3's table (vlm.prompt_template paper_fig3)
    # with --rationale every training answer carries its Reason line
    splits, _ = split_prompts(run, load_config("paper-baseline", ["vlm.rationale=true"]), ("train", "val"))
    assert {p.template for p in splits["train"]} == {"paper_fig3"} and card["data"]["templates"] == ["paper_fig3"]
    assert all(p.assistant.splitlines()[1].startswith("Reason: ") for p in splits["train"])
    assert card["config"]["rationale"] is True
    # trained on evaluate's training windows (all of them: the baseline keeps every negative)
    assert card["data"]["n_train"] == len(splits["train"]) > 0 and card["data"]["n_val"] == len(splits["val"])
    assert card["data"]["train_hash"] == prompts_hash(splits["train"])
    assert "trained baseline on" in capsys.readouterr().out
    assert _cli(["train", "vlm", "--run", run, "--config", "paper-zero-shot"]) == 2


@pytest.mark.parametrize("damage", ["empty", "corrupt", "tiny"])
def test_a_keyframe_that_does_not_decode_leaves_its_window_out(synth_small, tmp_path, capsys, damage):
    """(issue 23, item 8) empty or corrupt PNGs went into the exports, and `train vlm` failed an epoch
    in; now the window is left out, named, through the CLI and the Python API."""
    import cv2
    import numpy as np

    from crashcast import api

    run = tmp_path / "run"
    clips = read_csv(synth_small / "annotations.csv")[:3]
    assert extract_run(clips, run, load_config("classic"), workers=1, progress=False).ok == 3
    kf = sorted(run.glob("clips/*/max/*.png"))[0]
    window = f"{kf.parent.parent.name}_max"
    if damage == "empty":
        kf.write_bytes(b"")
    elif damage == "corrupt":
        kf.write_bytes(kf.read_bytes()[:40])
    else:
        cv2.imwrite(str(kf), np.zeros((4, 4, 3), np.uint8))
    assert _cli(["prompts", run]) == 1
    err = capsys.readouterr().err
    assert window in err and kf.name in err and ("does not decode" in err or "not a keyframe overlay" in err)
    written = [r["id"] for n in ("train", "val", "test") for r in _records(run / "prompts" / f"{n}.jsonl")]
    assert window not in written and len(written) == 3 * 3 - 1
    files = api.prompts(run)
    assert files.skipped and any(window in s for s in files.skipped)
