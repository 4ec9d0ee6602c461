"""The `tiny` preset end to end: every model of the paper path (YOLO + Grounding DINO fused, SAM2
masks, SAM2 video tracking), built from tiny configs with random weights, through `crashcast
extract` and `crashcast predict`, with the network forbidden. The features are meaningless (random
weights); what is checked is that model outputs go through the same code as the classic ones."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from crashcast.cli import main
from crashcast.data.annotations import read_csv
from crashcast.features.window_meta import read_window_meta

for module in ("torch", "torchvision", "transformers", "ultralytics"):
    pytest.importorskip(module)

TINY = {"flow": "raft", "detector": "fusion", "segmenter": "sam2", "tracker": "sam2-video", "depth": "video-depth-anything"}


@pytest.fixture
def offline(offline_caches):
    """No network (a connection attempt fails), every model cache empty: tiny models need no file."""
    return offline_caches


def _run(argv: list[str]) -> None:
    try:
        main([str(a) for a in argv])
    except SystemExit as e:
        assert e.code in (0, None), f"crashcast {' '.join(map(str, argv))} exited {e.code}"


def test_extract_with_the_tiny_preset_runs_every_paper_stage(synth_small, tmp_path, offline):
    clips = read_csv(synth_small / "annotations.csv")
    ann = tmp_path / "two.csv"
    pd.read_csv(synth_small / "annotations.csv").head(2).to_csv(ann, index=False)
    run = tmp_path / "tiny"
    _run(["extract", "--annotations", ann, "--videos", synth_small, "--out", run, "--config", "tiny",
          "--set", "windows.span_s=2.0", "--workers", "1"])
    classic = tmp_path / "classic"
    _run(["extract", "--annotations", ann, "--videos", synth_small, "--out", classic, "--config", "classic",
          "--set", "windows.span_s=2.0"])
    metas = sorted(run.glob("clips/*/*/window_meta.json"))
    assert len(metas) == 6 and {m.parts[-3] for m in metas} == {c.id for c in clips[:2]}
    n_objects = 0
    for path in metas:
        meta = read_window_meta(path)  # the same schema as the classic outputs
        assert meta.backends == TINY and meta.depth_kind == "metric"
        ids = {o.object_id for o in meta.objects}
        assert all(i.object_id in ids and i.frame_idx in (0, 1, 2) for i in meta.instances)
        n_objects += len(meta.objects)
    assert n_objects > 0  # the tracker handed objects on to the kinematics
    tiny_df, classic_df = pd.read_parquet(run / "features.parquet"), pd.read_parquet(classic / "features.parquet")
    assert list(tiny_df.columns) == list(classic_df.columns)
    assert dict(tiny_df.dtypes) == dict(classic_df.dtypes)


def test_predict_with_the_tiny_backend(synth_small, tmp_path, capsys, offline):
    video = read_csv(synth_small / "annotations.csv")[0].video_path
    _run(["predict", video, "--backend", "tiny", "--out", tmp_path / "pred", "--format", "json",
          "--set", "windows.span_s=2.0"])
    doc = json.loads(capsys.readouterr().out)
    assert doc["timeline"] and all(0.0 <= r["risk"] <= 1.0 for r in doc["timeline"])
    assert (tmp_path / "pred" / video.stem / "timeline.csv").exists()


def test_backend_auto_picks_a_preset_that_can_run_and_says_why(synth_small, tmp_path, capsys, offline, monkeypatch):
    """No model weights on disk here: `auto` must fall back to the classic preset, in one short log
    line that says how to get a better one - and start no download (a weights folder is loaded
    offline); the full reason (what was passed over and why) at -vv."""
    monkeypatch.chdir(tmp_path)
    ann = tmp_path / "one.csv"
    pd.read_csv(synth_small / "annotations.csv").head(1).to_csv(ann, index=False)
    _run(["extract", "--annotations", ann, "--videos", synth_small, "--out", tmp_path / "run",
          "--weights-dir", tmp_path / "weights"])
    lines = [line for line in capsys.readouterr().err.splitlines() if "perception: " in line]
    assert len(lines) == 1 and len(lines[0]) <= 150 + len("INFO "), lines
    assert "perception: classic (weight-free;" in lines[0] and "crashcast weights download fast" in lines[0]
    _run(["-vv", "extract", "--annotations", ann, "--videos", synth_small, "--out", tmp_path / "run2",
          "--weights-dir", tmp_path / "weights"])
    debug = [line for line in capsys.readouterr().err.splitlines() if "--backend auto chose" in line]
    assert len(debug) == 1 and "paper is not ready" in debug[0] and "crashcast weights download paper" in debug[0]
    meta = read_window_meta(next((tmp_path / "run").glob("clips/*/max/window_meta.json")))
    assert meta.backends["detector"] == "classic-motion"
