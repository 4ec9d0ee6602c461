"""`crashcast reproduce paper` end to end on synthetic clips laid out as Nexar's Kaggle download, with
the tiny random perception models (`--perception tiny`) and the tiny random VLM: import, extraction,
prompts in Fig. 3's format, the three VLMs under the paper's protocol, Table III beside the paper's
with every command; killed in the enhanced model's training, the rerun resumes (no clip extracted
again, the baseline adapter used as it was) and finishes the table.

The tiny models answer nonsense: only the plumbing is asserted, never quality."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast.errors import CrashcastError

VLM = ["vlm.base_model=random:tiny", "vlm.max_pixels=3136", "vlm.learning_rate=0.02", "vlm.gradient_accumulation=1",
       "vlm.epochs=1"]


def _kaggle_layout(synth: Path, root: Path, test: tuple[str, ...] = ()) -> Path:
    """train.csv + train/<id>.mp4, as Kaggle's nexar-collision-prediction download (videos linked);
    the clips in `test` go to a labelled test.csv + test/ instead (an official test split)."""
    rows = (synth / "annotations.csv").read_text().splitlines()
    for part in ("train", "test"):
        (root / part).mkdir(parents=True)
        mine = [r for r in rows[1:] if (r.split(",")[0] in test) == (part == "test")]
        if mine:
            (root / f"{part}.csv").write_text("\n".join([rows[0], *mine]) + "\n")
        for r in mine:
            clip = r.split(",")[0]
            (root / part / f"{clip}.mp4").symlink_to(synth / f"{clip}.mp4")
    return root


def _fingerprints(paths) -> dict[str, tuple[int, str]]:
    return {str(p): (p.stat().st_mtime_ns, hashlib.sha256(p.read_bytes()).hexdigest()) for p in paths}


def _child(argv: list[str]) -> list[str]:
    """`crashcast <argv>` in a child process, with the test session's torchvision CPU kernels
    (tests/torchvision_cpu_ops.py: the README's test pair has a CUDA-only torchvision)."""
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import torchvision_cpu_ops; torchvision_cpu_ops.install(); "
            "from crashcast.cli import main; main(sys.argv[2:])")
    return [sys.executable, "-c", code, str(Path(__file__).parent), *map(str, argv)]


def test_reproduce_paper_runs_end_to_end_and_resumes_after_a_kill(synth_small, tmp_path, tiny_cache, offline_caches):
    for module in ("torch", "transformers", "peft", "torchvision"):
        pytest.importorskip(module)
    rows = (synth_small / "annotations.csv").read_text().splitlines()[1:]
    official_test = (next(r for r in rows if r.endswith(",1")).split(",")[0],
                     next(r for r in rows if r.endswith(",0")).split(",")[0])
    data = _kaggle_layout(synth_small, tmp_path / "nexar", official_test)
    run = tmp_path / "run"
    argv = ["reproduce", "paper", "--data", data, "--out", run, "--perception", "tiny", "--workers", "1",
            *(a for o in VLM for a in ("--set", o))]

    # kill -9 once the enhanced model's training has begun: extraction and the baseline adapter are done
    proc = subprocess.Popen(_child(argv), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ.copy(),
                            start_new_session=True)
    deadline = time.time() + 600
    enhanced = run / "models" / "vlm-enhanced"
    while proc.poll() is None and time.time() < deadline and not (enhanced.is_dir() and any(enhanced.iterdir())):
        time.sleep(0.2)
    assert proc.poll() is None, "the run ended (or failed) before it could be killed in the enhanced training"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    metas = sorted(run.glob("clips/*/*/window_meta.json"))
    assert len(metas) == 8 * 3  # 8 clips, 3 windows each
    adapter = run / "models" / "vlm-baseline" / "adapter_model.safetensors"
    assert adapter.is_file() and not (run / "reproduce" / "table_iii.md").exists()
    before = _fingerprints([*metas, adapter])

    assert cli_exit_code(argv) == 0
    assert _fingerprints([*metas, adapter]) == before  # nothing extracted or trained again
    assert (run / "models" / "vlm-enhanced" / "adapter_model.safetensors").is_file()

    # the run is the paper's: Fig. 3's prompts, the paper protocol's headline, three VLM rows
    record = json.loads((run / "prompts" / "train.jsonl").read_text().splitlines()[0])
    human = record["conversations"][0]["value"]
    assert "ID/Class/Depths(m)/ΔDepth(m/s)/OptFlowMags/OptFlowAngs/SpeedValid/Speed/AccValid/Accel/Occl" in human
    results = json.loads((run / "metrics.json").read_text())
    assert results["headline"] == "paper" and list(results["models"]) == ["vlm-zero-shot", "vlm-baseline", "vlm-enhanced"]
    # the dataset's own split: its labelled test.csv is the test split
    assert sorted(results["split"]["test_clip_ids"]) == sorted(official_test)
    assert json.loads((run / "split.json").read_text())["clips"][official_test[0]] == "test"
    imported = json.loads((run / "reproduce" / "import.json").read_text())
    assert (imported["layout"], imported["clips"], imported["positives"]) == ("nexar-kaggle", 8, 4)

    table = (run / "reproduce" / "table_iii.md").read_text()
    assert table.startswith("# Table III reproduced (nexar-kaggle: 8 clips;")
    for name, r in results["models"].items():  # each row is metrics.json's paper protocol, in percent
        m = r["paper"]["window"]
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        assert row.split(" | ")[1:4] == [f"{100 * m[k]:.2f}" for k in ("precision", "recall", "f1")]
        assert row.endswith(f"| {r['paper']['parse_failures']} of {m['n']} |")
        pred = pd.read_csv(run / "predictions" / f"{name}.csv", keep_default_na=False)
        assert len(pred) == m["n"]
    assert "| paper: Baseline SFT | 92.86 | 43.33 | 59.09 | 31.45 | 30.02 | 29.72 | n/a |" in table
    # every command, the killed session's and the resumed one's
    commands = (run / "reproduce" / "commands.txt").read_text().splitlines()
    starts = [c for c in commands if c.startswith("# ")]
    assert len(starts) == 2 and starts[1].endswith("# resumes the run above")
    assert sum(c.startswith("crashcast evaluate ") for c in commands) == 2
    assert "--protocol paper" in commands[-2] and "vlm.base_model=random:tiny" in commands[-2]


def test_reproduce_refuses_a_folder_that_is_no_known_dataset(tmp_path):
    from crashcast.reproduce import reproduce_paper

    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "notes.txt").write_text("hello")
    with pytest.raises(CrashcastError, match=r"train\.csv"):
        reproduce_paper(tmp_path / "data", tmp_path / "run", perception="tiny")


def test_reproduce_refuses_one_class_before_extracting_anything(synth_small, tmp_path):
    """DoTA (no negatives) or a positives-only download: refused at import, not after hours of extraction."""
    from crashcast.reproduce import reproduce_paper

    root = tmp_path / "nexar"
    (root / "train").mkdir(parents=True)
    rows = (synth_small / "annotations.csv").read_text().splitlines()
    positives = [r for r in rows[1:] if r.endswith(",1")]
    (root / "train.csv").write_text("\n".join([rows[0], *positives]) + "\n")
    for r in positives:
        clip = r.split(",")[0]
        (root / "train" / f"{clip}.mp4").symlink_to(synth_small / f"{clip}.mp4")
    with pytest.raises(CrashcastError, match=f"every clip the nexar-kaggle layout gave is positive \\({len(positives)} clips\\)"):
        reproduce_paper(root, tmp_path / "run", perception="tiny")
    assert not (tmp_path / "run" / "clips").exists()
