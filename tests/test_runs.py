"""`crashcast.runs`: a run folder read in one place. Each window read through it is the one extract
wrote (its table row is derived from its window_meta.json); a missing or damaged file is one
`RunFileError` naming the file, raised by `WindowSet` and reported, word for word, by `crashcast
prompts` when it leaves the window out."""

from __future__ import annotations

import logging
import shutil

import cv2
import numpy as np
import pytest

from crashcast import runs
from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.extract import extract_run
from crashcast.features.table import feature_columns, feature_row
from crashcast.prompts.builder import build_prompt
from crashcast.prompts.dataset import split_prompts
from crashcast.risk.windows import WindowSet
from crashcast.runtime.layout import RunLayout, window_folder


@pytest.fixture(scope="module")
def run(synth_small, tmp_path_factory):
    """Four synthetic clips extracted with the classic preset; never modified."""
    run = tmp_path_factory.mktemp("runs") / "run"
    clips = read_csv(synth_small / "annotations.csv")[:4]
    assert extract_run(clips, run, load_config("classic"), workers=2, progress=False).ok == 4
    return run


def test_each_window_is_the_one_extract_wrote(run):
    df = runs.load_features(run, feature_columns())
    cfg = load_config(RunLayout(run).config)
    for r in df.itertuples(index=False):
        folder = runs.window_dir(run, r.clip_id, r.phase, r.horizon_s)
        assert folder == (run / "clips" / r.clip_id / window_folder(r.phase, r.horizon_s)).resolve()
        meta = runs.read_meta(folder)
        assert (meta.window_id, meta.clip_id, meta.label) == (r.window_id, r.clip_id, r.label)
        row = feature_row(meta, cfg.features.top_k)
        np.testing.assert_allclose([row[c] for c in feature_columns()], [getattr(r, c) for c in feature_columns()])
        frames = runs.keyframes(meta, folder)
        assert [f.name for f in frames] == meta.frame_paths
        images = [cv2.imread(str(f)) for f in frames]
        assert all(im is not None and max(im.shape[:2]) == cfg.video.long_side for im in images)
        prompt = runs.window_prompt(meta, folder, cfg.features.top_k)
        assert prompt == build_prompt(meta, folder, cfg.features.top_k) and prompt.images == frames


def test_a_clip_id_cannot_lead_outside_the_run(run):
    with pytest.raises(runs.RunFileError, match="outside the run"):
        runs.window_dir(run, "../../..", "max", 0.0)


def test_damaged_windows_are_named_the_same_way_everywhere(run, tmp_path, caplog):
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ws = WindowSet.from_run(copy)
    gone, damaged, no_image = 0, 4, 7
    (ws.window_dir(gone) / RunLayout.WINDOW_META).unlink()
    (ws.window_dir(damaged) / RunLayout.WINDOW_META).write_text('{"window_id": ', encoding="utf-8")
    (ws.window_dir(no_image) / ws.meta(no_image).frame_paths[1]).unlink()

    errors = {}
    for i, named in ((gone, RunLayout.WINDOW_META), (damaged, RunLayout.WINDOW_META),
                     (no_image, ws.meta(no_image).frame_paths[1])):
        with pytest.raises(runs.RunFileError) as e:
            ws.prompt(i)
        assert str(ws.window_dir(i) / RunLayout.WINDOW_META) in str(e.value) and named in str(e.value)
        assert "rerun `crashcast extract`" in str(e.value)
        errors[ws.ids[i]] = str(e.value)

    cfg = load_config(RunLayout(copy).config)
    with caplog.at_level(logging.WARNING, logger="crashcast.runs"):
        prompts, skipped = split_prompts(copy, cfg)
    assert sorted(skipped) == sorted(f"{w}: {e}" for w, e in errors.items())
    assert {r.getMessage() for r in caplog.records} == {f"prompts: window {w} left out: {e}" for w, e in errors.items()}
    kept = [p.id for split in ("train", "val", "test") for p in prompts[split]]
    assert sorted(kept) == sorted(set(ws.ids) - set(errors))
    by_id = {p.id: p for split in prompts.values() for p in split}
    for i, wid in enumerate(ws.ids):
        if wid not in errors:
            assert by_id[wid] == ws.prompt(i, cfg.features.top_k)
