"""The prompt builder: the golden prompt of a fixed window, top-K ranking, missing values, windows
without objects or images, the rationale line and the template file.

Regenerate the golden files after a deliberate template change (a new template version):
CRASHCAST_UPDATE_GOLDEN=1 pytest tests/prompts/test_builder.py
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import yaml

from crashcast.errors import ConfigError, SchemaError
from crashcast.features.window_meta import WindowMeta, read_window_meta
from crashcast.prompts.builder import IMAGE_TOKEN, LETTERS, Prompt, build_prompt, load_template, rank_objects


def _png() -> bytes:
    """A real 16x16 PNG: prompts check that each keyframe decodes."""
    import cv2
    import numpy as np

    return cv2.imencode(".png", np.zeros((16, 16, 3), np.uint8))[1].tobytes()


GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("CRASHCAST_UPDATE_GOLDEN") == "1"


@pytest.fixture
def window(tmp_path) -> tuple[WindowMeta, Path]:
    """The checked-in window (5 objects; one seen only between keyframes, one without depth) in a
    window folder with its three keyframe images."""
    folder = tmp_path / "clips" / "00822" / "mid"
    folder.mkdir(parents=True)
    shutil.copy(GOLDEN / "window_meta.json", folder / "window_meta.json")
    for k in range(3):
        (folder / f"kf{k}.png").write_bytes(_png())
    return read_window_meta(folder / "window_meta.json"), folder


def _golden(name: str, text: str) -> None:
    """`text` equals the golden file (which ends with one newline more, as text files do)."""
    path = GOLDEN / name
    if UPDATE:
        path.write_text(text + "\n", encoding="utf-8")
    assert text + "\n" == path.read_text(encoding="utf-8"), (
        f"differs from {path} (CRASHCAST_UPDATE_GOLDEN=1 rewrites)"
    )


def _rows(p: Prompt) -> list[list[str]]:
    """The table rows (cells) under the header."""
    lines = p.text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("ID|Class|"))
    return [line.split("|") for line in lines[start + 1 :] if line[:2] in {f"{c}|" for c in LETTERS}]


def _with_objects(meta: WindowMeta, objects: list[dict], instances: list[dict] | None = None) -> WindowMeta:
    data = meta.model_dump()
    data["objects"] = objects
    data["instances"] = instances if instances is not None else []
    return WindowMeta.model_validate(data)


def _object(oid: int, depth: list[float | None], mean: float | None = None, **kw) -> dict:
    base = dict(
        object_id=oid,
        class_name=kw.pop("class_name", "car"),
        depth_m=depth,
        centroid_m=[None] * 3,
        mean_depth_m=mean,
        depth_rate_mps=None,
        closing_speed_mps=None,
        ttc_s=None,
        ttc_depth_s=None,
        ttc_scale_s=None,
        lateral_offset_m=None,
        speed_valid=False,
        acc_valid=False,
        speed_mps=None,
        accel_mps2=None,
        frames_seen=3,
        depth_track_m=[],
        depth_track_t=[],
    )
    base.update(kw)
    return base


# --- the golden prompt ---


def test_golden_prompt(window):
    """The default template, risk_v2: its prompt is risk_v1's, character for character (they differ
    in the Reason rule only)."""
    meta, folder = window
    p = build_prompt(meta, folder)
    _golden("risk_v1_00822_mid.user.txt", p.user)
    _golden("risk_v1_00822_mid.assistant.txt", p.assistant)
    assert p.id == "00822_mid" and p.template == "risk_v2"
    old = build_prompt(meta, folder, template="risk_v1")
    assert (old.user, old.assistant, old.template) == (p.user, p.assistant, "risk_v1")
    assert [i.name for i in p.images] == ["kf0.png", "kf1.png", "kf2.png"]
    assert all(i.is_absolute() and i.parent == folder.resolve() for i in p.images)
    assert p.user == IMAGE_TOKEN * 3 + "\n" + p.text
    assert p.assistant == "Collision Probability: 0.872"
    assert (p.clip_id, p.phase, p.horizon_s, p.label, p.soft_target) == ("00822", "mid", 0.0, 1, 0.8724)


def test_golden_rationale(window):
    meta, folder = window
    p = build_prompt(meta, folder, rationale=True)
    _golden("risk_v2_00822_mid.rationale.txt", p.assistant)
    assert p.assistant.splitlines() == [
        "Collision Probability: 0.872",
        # car B drives the risk (in the path, closing): not pedestrian A, the closest (no finite TTC)
        "Reason: car B, 11.5 m ahead, closing at 1.8 m/s, TTC 6.4 s.",  # 11.5 / 1.80 = 6.39
    ]
    assert "`Reason:`" in p.text and "`Reason:`" not in build_prompt(meta, folder).text
    assert "driving the risk" in p.text


def test_risk_v1_keeps_the_reason_it_was_trained_with(window):
    """risk_v1 (`reason_rule` closest-v1 by default): object A and its window_meta kinematics, as before
    risk_v2, so an adapter trained on it sees the same answers."""
    meta, folder = window
    p = build_prompt(meta, folder, rationale=True, template="risk_v1")
    _golden("risk_v1_00822_mid.rationale.txt", p.assistant)
    assert p.assistant.splitlines()[1] == "Reason: pedestrian A, 8.1 m ahead, closing at 0.2 m/s, no finite TTC."
    assert "names the closest object" in p.text


def test_window_id_with_horizon_is_the_prompt_id(window):
    meta, folder = window
    p = build_prompt(meta.model_copy(update={"window_id": "00822_mid_h1", "horizon_s": 1.0}), folder)
    assert p.id == "00822_mid_h1" and p.horizon_s == 1.0


# --- images ---


def test_image_tokens_match_images(window):
    meta, folder = window
    cases = {
        "images": build_prompt(meta, folder),
        "no window folder": build_prompt(meta, None),
        "no images written": build_prompt(meta.model_copy(update={"frame_paths": [None] * 3}), folder),
        "some images": build_prompt(
            meta.model_copy(update={"frame_paths": ["kf0.png", None, "kf2.png"]}), folder
        ),
    }
    assert len(cases["images"].images) == 3
    for name, p in cases.items():
        assert p.user.count(IMAGE_TOKEN) == len(p.images), name
        assert IMAGE_TOKEN not in p.text, name
    for name in ("no window folder", "no images written", "some images"):
        p = cases[name]
        assert p.images == () and p.user == p.text, name
        assert "no images are attached" in p.text and "The images are" not in p.text
        assert _rows(p) == _rows(cases["images"])  # the same table either way


def test_missing_image_file_is_an_error(window):
    meta, folder = window
    (folder / "kf1.png").unlink()
    with pytest.raises(SchemaError, match=r"kf1\.png"):
        build_prompt(meta, folder)


def test_image_outside_the_window_folder_is_refused(window, tmp_path):
    meta, folder = window
    (tmp_path / "secret.png").write_bytes(b"x")
    bad = meta.model_copy(update={"frame_paths": ["kf0.png", "../../../secret.png", "kf2.png"]})
    with pytest.raises(SchemaError, match="outside"):
        build_prompt(bad, folder)


# --- top-K ---


def test_top_k_by_mean_keyframe_depth(window):
    meta, folder = window
    rows = _rows(build_prompt(meta, folder))
    # pedestrian (8.4, 8.1 -> 8.25) before car (12.87) before truck (25.03); the vehicle with no keyframe
    # depth (its track says 6.0 m) and the bicycle without depth are cut at K = 3
    assert [(r[0], r[1]) for r in rows] == [("A", "pedestrian"), ("B", "car"), ("C", "truck")]
    rows5 = _rows(build_prompt(meta, folder, top_k=5))
    assert [(r[0], r[1]) for r in rows5] == [
        ("A", "pedestrian"),
        ("B", "car"),
        ("C", "truck"),
        ("D", "vehicle"),
        ("E", "bicycle"),
    ]
    assert [r[1] for r in _rows(build_prompt(meta, folder, top_k=1))] == ["pedestrian"]


def test_ranking_ignores_input_order_and_puts_depthless_last(window):
    meta, _ = window
    objs = [
        _object(1, [None, None, None], None),  # no depth at all: last
        _object(2, [None, None, None], 3.0),  # only its track's depth: after every keyframe depth
        _object(3, [30.0, 20.0, 10.0], 20.0),  # mean 20
        _object(4, [None, None, 19.0], 19.0),  # mean 19 from one keyframe
        _object(5, [21.0, None, 19.5], 20.25),  # mean 20.25
        _object(6, [None, None, None], 2.0),  # track depth 2.0 < 3.0
        _object(0, [None, None, None], None),  # depthless, lower id first
    ]
    for order in (objs, objs[::-1], objs[3:] + objs[:3]):
        ranked = rank_objects(_with_objects(meta, order))
        assert [o.object_id for o in ranked] == [4, 3, 5, 6, 2, 0, 1]
    rows = _rows(build_prompt(_with_objects(meta, objs[::-1]), None, top_k=7))
    assert [r[0] for r in rows] == list("ABCDEFG")
    assert [r[2] for r in rows[:3]] == ["-,-,19.0", "30.0,20.0,10.0", "21.0,-,19.5"]


def test_top_k_bounds(window):
    meta, folder = window
    for k in (0, 27):
        with pytest.raises(ValueError, match="top_k"):
            build_prompt(meta, folder, top_k=k)


# --- cells, missing values ---


def test_cells_of_the_fixed_window(window):
    meta, folder = window
    a, b, c = _rows(build_prompt(meta, folder))
    header = "ID|Class|Depths(m)|ΔDepth(m/s)|OptFlowMags|OptFlowAngs|SpeedValid|Speed|AccValid|Accel|Occl"
    assert header in build_prompt(meta, folder).text.splitlines()
    assert len(a) == len(b) == len(c) == len(header.split("|"))
    # the pedestrian was not at keyframe 0: '-' there; no acceleration yet
    assert a == [
        "A",
        "pedestrian",
        "-,8.4,8.1",
        "-0.25",
        "-,3.10,2.90",
        "-,179,175",
        "False",
        "1.21",
        "False",
        "-",
        "0.25",
    ]
    assert b == [
        "B",
        "car",
        "14.2,12.9,11.5",
        "-1.80",
        "1.23,1.87,2.46",
        "-12,-8,4",
        "True",
        "1.93",
        "True",
        "-0.41",
        "0.00",
    ]
    # a flow angle of -0.3 degrees prints as 0, not -0
    assert c[5] == "90,91,0"


def test_missing_and_non_finite_values_are_dashes(window):
    meta, _ = window
    nan, inf = float("nan"), float("inf")
    objs = [_object(1, [nan, 10.0, inf], 10.0, depth_rate_mps=nan, speed_mps=inf, accel_mps2=None)]
    (row,) = _rows(build_prompt(_with_objects(meta, objs), None))
    assert row == ["A", "car", "-,10.0,-", "-", "-,-,-", "-,-,-", "False", "-", "False", "-", "-"]
    assert "nan" not in row and "inf" not in " ".join(row)


def test_depth_rate_falls_back_to_the_keyframe_slope(window):
    meta, _ = window  # keyframes at 12.0, 13.5, 15.0 s
    objs = [
        _object(1, [10.0, None, 7.0], 8.5),
        _object(2, [None, 12.0, None], 12.0),
        _object(3, [20.0, 19.0, 18.0], 19.0, depth_rate_mps=-2.5),
    ]
    rows = _rows(build_prompt(_with_objects(meta, objs), None))
    assert {r[2]: r[3] for r in rows} == {"10.0,-,7.0": "-1.00", "-,12.0,-": "-", "20.0,19.0,18.0": "-2.50"}


def test_class_names_cannot_break_the_table(window):
    meta, _ = window
    objs = [_object(1, [5.0, 5.0, 5.0], 5.0, class_name="car|truck\n<image>x")]
    p = build_prompt(_with_objects(meta, objs), None)
    (row,) = _rows(p)
    assert row[1] == "car/truck x" and len(row) == 11 and IMAGE_TOKEN not in p.user


# --- no objects ---


def test_window_without_objects_is_a_valid_prompt(window):
    meta, folder = window
    empty = _with_objects(meta, [], [])
    p = build_prompt(empty, folder, rationale=True)
    lines = p.text.splitlines()
    i = lines.index(
        "ID|Class|Depths(m)|ΔDepth(m/s)|OptFlowMags|OptFlowAngs|SpeedValid|Speed|AccValid|Accel|Occl"
    )
    assert lines[i + 1] == "(none: no objects were tracked in this window)"
    assert lines[i + 2].startswith("Task:") and lines[-1].startswith("Note:")
    assert p.assistant == "Collision Probability: 0.872\nReason: no objects were tracked."
    assert p.user.count(IMAGE_TOKEN) == len(p.images) == 3


# --- the answer and the rationale ---


@pytest.mark.parametrize(
    ("target", "answer"), [(0.0, "0.000"), (1.0, "1.000"), (0.05, "0.050"), (0.87249, "0.872")]
)
def test_answer_has_three_decimals(window, target, answer):
    meta, folder = window
    p = build_prompt(meta.model_copy(update={"soft_target": target}), folder)
    assert p.assistant == f"Collision Probability: {answer}"


@pytest.mark.parametrize(
    ("kw", "reason"),
    [
        (
            dict(depth=[12.0, 10.0, 8.2], depth_rate_mps=-4.1, closing_speed_mps=4.1, ttc_s=2.0),
            "Reason: car A, 8.2 m ahead, closing at 4.1 m/s, TTC 2.0 s.",
        ),
        (
            dict(depth=[12.0, 10.0, None], depth_rate_mps=0.7, closing_speed_mps=-0.7, ttc_s=None),  # last measured: 10.0
            "Reason: car A, 10.0 m ahead, not closing in, no finite TTC.",
        ),
        (  # image expansion gives a TTC while the depth rate says receding (issue 24): no TTC stated
            dict(depth=[12.0, 10.0, 8.2], depth_rate_mps=0.4, closing_speed_mps=-0.4, ttc_s=0.5),
            "Reason: car A, 8.2 m ahead, not closing in, no finite TTC.",
        ),
        (
            # the track's own depth (6.5) is not in the table: the reason does not say it
            dict(depth=[None, None, None], mean=6.5, closing_speed_mps=None, ttc_s=None),
            "Reason: car A, distance unknown, closing speed unknown, no finite TTC.",
        ),
        (  # the closing speed is the table's ΔDepth (the slope 12.0 -> 8.2 over 3 s: -1.27), not closing_speed_mps
            dict(depth=[12.0, 10.0, 8.2], closing_speed_mps=4.1, ttc_s=2.0),
            "Reason: car A, 8.2 m ahead, closing at 1.3 m/s, TTC 6.5 s.",  # 8.2 / 1.27 = 6.46
        ),
        (
            dict(depth=[None, None, None], mean=None, closing_speed_mps=float("nan"), ttc_s=float("inf")),
            "Reason: car A, distance unknown, closing speed unknown, no finite TTC.",
        ),
    ],
)
def test_rationale_variants(window, kw, reason):
    meta, _ = window
    depth, mean = kw.pop("depth"), kw.pop("mean", 10.0)
    p = build_prompt(_with_objects(meta, [_object(1, depth, mean, **kw)]), None, rationale=True)
    assert p.assistant.splitlines()[1] == reason


def test_rationale_names_the_driver_by_its_letter(window):
    meta, folder = window
    p = build_prompt(meta, folder, rationale=True, top_k=5)
    assert _rows(p)[1][1] == "car" and p.assistant.splitlines()[1].startswith("Reason: car B,")
    # with one row, car B is not in the table: the reason is about A, the closest
    q = build_prompt(meta, folder, rationale=True, top_k=1)
    assert q.assistant.splitlines()[1] == "Reason: pedestrian A, 8.1 m ahead, closing at 0.2 m/s, TTC 32.4 s."


def test_prompt_is_deterministic(window):
    meta, folder = window
    assert build_prompt(meta, folder, rationale=True) == build_prompt(meta, folder, rationale=True)


# --- the template file ---


def test_template_holds_the_wording(window, tmp_path):
    meta, folder = window
    source = Path(__file__).parents[2] / "src" / "crashcast" / "prompts" / "templates" / "risk_v1.yaml"
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    p = build_prompt(meta, folder)
    for key in ("role", "valid_note", "table_intro", "table_header", "task", "note"):
        assert data[key] in p.text.splitlines(), key
    data["version"] = "risk_test"
    data["role"] = "You assess collision risk."
    data["table"]["missing"] = "?"
    custom = tmp_path / "risk_test.yaml"
    custom.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    q = build_prompt(meta, folder, template=custom)
    assert q.template == "risk_test" and q.text.splitlines()[0] == "You assess collision risk."
    assert _rows(q)[0][2] == "?,8.4,8.1"


def test_bad_templates_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_template("risk_v999")
    data = yaml.safe_load(
        (Path(__file__).parents[2] / "src/crashcast/prompts/templates/risk_v1.yaml").read_text("utf-8")
    )
    del data["note"]
    del data["table"]["formats"]["depth"]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError, match=r"note.*table\.formats\.depth"):
        load_template(bad)


def test_prompt_refuses_image_tokens_in_text():
    with pytest.raises(ValueError, match="inside the text"):
        Prompt(
            id="x",
            images=(),
            text=f"{IMAGE_TOKEN} hi",
            assistant="a",
            template="t",
            clip_id="c",
            phase="max",
            horizon_s=0.0,
            label=0,
            soft_target=0.0,
        )


# --- the paper's table (Fig. 3), template paper_fig3 ---


def test_golden_prompt_in_the_papers_format(window):
    """Fig. 3's table: Depths at the 3 keyframes, ΔDepth and the flow once per interval (2 values), flow
    angles in radians, bracketed lists; the golden record character for character, and its cells checked
    against the window's numbers by hand below."""
    meta, folder = window
    p = build_prompt(meta, folder, template="paper_fig3")
    _golden("paper_fig3_00822_mid.user.txt", p.user)
    assert p.assistant == "Collision Probability: 0.872" and p.template == "paper_fig3"
    lines = p.text.splitlines()
    header = lines.index("ID/Class/Depths(m)/ΔDepth(m/s)/OptFlowMags/OptFlowAngs/SpeedValid/Speed/AccValid/Accel/Occl")
    rows = [line.split(" | ") for line in lines[header + 1 : header + 4]]
    car = rows[1]  # B: depths 14.2, 12.9, 11.5 at t = 12.0, 13.5, 15.0
    assert car[:3] == ["B", "car", "[14.20, 12.90, 11.50]"]
    assert car[3] == "[-0.87, -0.93]"  # (12.9 - 14.2) / 1.5 = -0.8667; (11.5 - 12.9) / 1.5 = -0.9333
    # flow per interval: the mean of the two keyframes' magnitudes, the angle of their mean vector
    assert car[4] == "[1.55, 2.16]"  # (1.234 + 1.87) / 2 = 1.552; (1.87 + 2.456) / 2 = 2.163
    # vectors: 1.234 at -12.5 deg = (1.2047, -0.2671), 1.87 at -8.04 deg = (1.8516, -0.2615): mean angle
    # atan2(-0.5286, 3.0563) = -0.1716 rad; 1.87 at -8.04 and 2.456 at 3.6 deg = (2.4512, 0.1542):
    # atan2(-0.1073, 4.3028) = -0.0249 rad
    assert car[5] == "[-0.17, -0.02]"
    assert car[6:] == ["True", "1.93", "True", "-0.41", "0.00"]
    ped = rows[0]  # A: not measured at the first keyframe: the first interval has one end only
    assert ped[2] == "[nan, 8.40, 8.10]" and ped[3] == "[nan, -0.20]"  # (8.1 - 8.4) / 1.5 = -0.2
    assert ped[4] == "[3.10, 3.00]"  # the measured end alone; (3.1 + 2.9) / 2
    assert ped[5].startswith("[3.12, ")  # 178.9 deg = 3.1224 rad


def test_golden_rationale_in_the_papers_format(window):
    """The reason told with paper_fig3's numbers: the last Depths value and the last interval's ΔDepth."""
    meta, folder = window
    p = build_prompt(meta, folder, template="paper_fig3", rationale=True)
    _golden("paper_fig3_00822_mid.rationale.txt", p.assistant)
    lines = p.text.splitlines()
    car = next(line for line in lines if line.startswith("B | ")).split(" | ")
    assert car[1:4] == ["car", "[14.20, 12.90, 11.50]", "[-0.87, -0.93]"]
    # distance 11.50 -> 11.5 m; closing -(-0.93) = 0.93 -> 0.9 m/s; TTC 11.50 / 0.93 = 12.37 -> 12.4 s
    assert p.assistant.splitlines() == [
        "Collision Probability: 0.872",
        "Reason: car B, 11.5 m ahead, closing at 0.9 m/s, TTC 12.4 s.",
    ]
    assert "`Reason:`" in p.text


def test_template_layout_choices_are_checked(tmp_path):
    text = (Path(__file__).parents[2] / "src/crashcast/prompts/templates/paper_fig3.yaml").read_text(encoding="utf-8")
    bad = tmp_path / "bad.yaml"
    bad.write_text(text.replace("angle_unit: radians", "angle_unit: gradians"), encoding="utf-8")
    with pytest.raises(ConfigError, match="angle_unit: 'gradians' \\(choose degrees or radians\\)"):
        load_template(bad)
