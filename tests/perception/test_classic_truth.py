"""Classic perception measured against the synthetic ground truth.

Thresholds are the issue's targets; measured on these clips (seed 11, 14 clips; see
benchmarks/perception_accuracy.py): depth median relative error 5.9 %, lead TTC median abs error
0.29 s, one id per object in 18/20 windows, looming of positives above negatives in 84 % of pairs.
Other seeds vary (seed 13 alone: lead TTC error 0.85 s, looming 43 % of pairs: the classic
detector loses road-coloured vehicles in the last second before a collision); pooled over seeds
11-15 (70 clips, `--seed 11 12 13 14 15`): depth 5.2 %, lead TTC 0.46 s, tracking 64/69 windows
(93 %), looming 64 % of pairs.
- depth of tracked vehicles: median relative error <= 15 %;
- TTC of the lead vehicle in the last 3 s before a braking collision: median abs error <= 0.5 s;
- one track id per true object over a window in >= 90 % of windows;
- ego-path looming in the last 1.5 s of positives above the negatives' maximum for most
  (more than 60 %) of (positive, negative) pairs.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.evaluation.perception_truth import evaluate_clip


@pytest.fixture(scope="module")
def reports(synth_medium):
    cfg = load_config("classic")
    out = []
    for clip in read_csv(synth_medium / "annotations.csv"):
        truth = json.loads((synth_medium / "truth" / f"{clip.id}.json").read_text())
        out.append(evaluate_clip(clip, truth, cfg))
    return out


def test_vehicle_depth_median_relative_error(reports):
    errors = np.concatenate([r.depth_rel_errors for r in reports])
    assert len(errors) > 100
    assert np.median(errors) <= 0.15


def test_lead_ttc_in_braking_collisions(reports):
    errors = np.concatenate([r.ttc_abs_errors for r in reports if r.ttc_abs_errors])
    assert len(errors) >= 20
    assert np.median(errors) <= 0.5


def test_one_track_id_per_object_per_window(reports):
    tracked = sum(r.windows_tracked for r in reports)
    single = sum(r.windows_single_id for r in reports)
    assert tracked >= 10
    assert single / tracked >= 0.9


def test_ego_path_looming_separates_positives(reports):
    pos = [r.looming_last_1_5s for r in reports if r.target == 1]
    neg = [r.looming_max for r in reports if r.target == 0]
    pairs = np.mean([p > n for p in pos for n in neg])
    assert pairs > 0.6, (pos, neg)
