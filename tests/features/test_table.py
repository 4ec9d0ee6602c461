"""The feature table keeps what window_meta.json measured: a measured zero is zero, never seen is NaN."""

from __future__ import annotations

import math

import pytest

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.extract import extract_run
from crashcast.features.table import feature_row
from crashcast.features.window_meta import read_window_meta


@pytest.fixture(scope="module")
def meta(synth_small, tmp_path_factory):
    clip = next(c for c in read_csv(synth_small / "annotations.csv") if c.target)
    run = tmp_path_factory.mktemp("table_run")
    extract_run([clip], run, load_config("classic"), progress=False)
    for path in sorted((run / "clips" / clip.id).glob("*/window_meta.json")):
        m = read_window_meta(path)
        if m.objects and any(i.object_id == m.objects[0].object_id for i in m.instances):
            return m  # its closest object was seen at a keyframe
    pytest.fail("no window whose closest object is seen at a keyframe")


def test_measured_zeros_stay_zero(meta):
    m = meta.model_copy(deep=True)
    first = m.objects[0].object_id
    for inst in m.instances:
        if inst.object_id == first:
            inst.optical_flow.avg_mag, inst.mask_area, inst.occlusion = 0.0, 0.0, 0.0
    row = feature_row(m)
    assert (row["obj1_flow_mag"], row["obj1_mask_area"], row["obj1_occlusion"]) == (0.0, 0.0, 0.0)


def test_values_come_from_the_latest_keyframe_the_object_was_seen(meta):
    first = meta.objects[0].object_id
    seen = [i for i in meta.instances if i.object_id == first]
    row = feature_row(meta)
    assert row["obj1_flow_mag"] == seen[-1].optical_flow.avg_mag and row["obj1_mask_area"] == seen[-1].mask_area


def test_an_object_never_seen_at_a_keyframe_has_no_value(meta):
    m = meta.model_copy(deep=True)
    first = m.objects[0].object_id
    m.instances = [i for i in m.instances if i.object_id != first]
    row = feature_row(m)
    assert all(math.isnan(row[f"obj1_{f}"]) for f in ("flow_mag", "mask_area", "occlusion"))
