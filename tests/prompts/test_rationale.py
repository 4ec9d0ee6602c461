"""The rationale line (`Reason:`) names the agent that drives the risk and says only numbers the same
prompt's table prints: each reason is parsed, the table row of the letter it names is parsed, and
its distance, closing speed and TTC are recomputed from that row's cells, for both templates."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from crashcast.features.window_meta import WindowMeta, read_window_meta
from crashcast.prompts.builder import build_prompt

GOLDEN_META = Path(__file__).parent / "golden" / "window_meta.json"
TEMPLATES = ("risk_v2", "paper_fig3")

_OBJECT = re.compile(
    r"^Reason: (?P<cls>\S+) (?P<letter>[A-Z]), (?:(?P<dist>\S+) m ahead|distance unknown), "
    r"(?:closing at (?P<closing>\S+) m/s|not closing in|closing speed unknown), (?:TTC (?P<ttc>\S+) s|no finite TTC)\.$"
)
_PAIR = re.compile(
    r"^Reason: (?P<cls_a>\S+) (?P<a>[A-Z]), (?P<dist_a>\S+) m ahead, and (?P<cls_b>\S+) (?P<b>[A-Z]), "
    r"(?P<dist_b>\S+) m ahead, are converging on each other\.$"
)


def _num(cell: str) -> float | None:
    return None if cell in ("-", "nan") else float(cell)


def _table(text: str, template: str) -> dict[str, tuple[str, list[float | None], float | None]]:
    """letter -> (class, Depths, the ΔDepth value the reason reads: the current one for risk_v2, the
    last interval's for paper_fig3), parsed from the printed table."""
    sep = "|" if template == "risk_v2" else " | "
    out = {}
    for line in text.splitlines():
        cells = line.split(sep)
        if len(cells) != 11 or not re.fullmatch("[A-Z]", cells[0]):
            continue
        depths = [_num(c.strip()) for c in cells[2].strip("[]").split(",")]
        rates = [_num(c.strip()) for c in cells[3].strip("[]").split(",")]
        out[cells[0]] = (cells[1], depths, rates[-1])
    return out


def _check_object(reason: str, table: dict) -> str:
    """The reason's numbers against its letter's row; returns the letter."""
    m = _OBJECT.match(reason)
    assert m, reason
    cls, depths, rate = table[m["letter"]]
    assert m["cls"] == cls
    d = next((v for v in reversed(depths) if v is not None), None)
    assert m["dist"] == (None if d is None else f"{d:.1f}")
    closing = None if rate is None else -rate
    if closing is not None and closing > 0:
        assert m["closing"] == f"{closing:.1f}"
        assert m["ttc"] == (None if d is None else f"{d / closing:.1f}")
    else:
        assert m["closing"] is None and m["ttc"] is None
    return m["letter"]


def _reason(meta: WindowMeta, template: str, top_k: int = 3) -> tuple[str, dict]:
    p = build_prompt(meta, None, top_k=top_k, template=template, rationale=True)
    return p.assistant.splitlines()[1], _table(p.text, template)


@pytest.fixture
def base() -> WindowMeta:
    return read_window_meta(GOLDEN_META)  # frame times 12.0, 13.5, 15.0


def _obj(oid: int, cls: str, depth: list[float | None], lateral: float | None = 0.3, frames: int = 20) -> dict:
    """An object whose depth rate is the slope of its keyframe depths (a consistent track)."""
    known = [(k, d) for k, d in enumerate(depth) if d is not None]
    rate = (known[-1][1] - known[0][1]) / (1.5 * (known[-1][0] - known[0][0])) if len(known) >= 2 else None
    return dict(object_id=oid, class_name=cls, depth_m=depth, centroid_m=[None] * 3,
                mean_depth_m=sum(d for _, d in known) / len(known) if known else None, depth_rate_mps=rate,
                closing_speed_mps=None if rate is None else -rate, ttc_s=None, ttc_depth_s=None, ttc_scale_s=None,
                lateral_offset_m=lateral, speed_valid=False, acc_valid=False, speed_mps=None, accel_mps2=None,
                frames_seen=frames, depth_track_m=[], depth_track_t=[])


def _window(base: WindowMeta, objects: list[dict], pair: dict | None = None) -> WindowMeta:
    data = base.model_dump()
    data.update(objects=objects, instances=[], pair=pair)
    return WindowMeta.model_validate(data)


def _pair(a: int, b: int, tcpa: float = 1.5, dcpa: float = 1.0, closing: float = 3.0) -> dict:
    return dict(object_a=a, object_b=b, class_a="car", class_b="person", distance_m=6.0, tcpa_s=tcpa,
                dcpa_m=dcpa, closing_mps=closing)


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_further_object_closing_fast_is_named_not_the_closest(base, template):
    meta = _window(base, [_obj(1, "car", [8.0, 8.0, 8.0]),  # A: in the path, not closing
                          _obj(2, "truck", [30.0, 24.0, 18.0]),  # B: closing at 4 m/s, TTC 4.5 s
                          _obj(3, "bus", [40.0, 40.0, 40.0])])
    reason, table = _reason(meta, template)
    assert _check_object(reason, table) == "B"
    assert reason == "Reason: truck B, 18.0 m ahead, closing at 4.0 m/s, TTC 4.5 s."


@pytest.mark.parametrize("template", TEMPLATES)
def test_the_soonest_contact_in_the_path_is_named(base, template):
    # B closes faster (TTC 15 / 5 = 3.0 s) than C (TTC 20 / 4 = 5.0 s); A does not close
    meta = _window(base, [_obj(1, "car", [8.0, 8.0, 8.0]), _obj(2, "van", [30.0, 22.5, 15.0]),
                          _obj(3, "truck", [32.0, 26.0, 20.0])])
    reason, table = _reason(meta, template)
    assert _check_object(reason, table) == "B"


@pytest.mark.parametrize("template", TEMPLATES)
def test_objects_beside_the_path_or_young_do_not_drive(base, template):
    fast = [30.0, 24.0, 18.0]
    for other in (_obj(2, "truck", fast, lateral=3.0), _obj(2, "truck", fast, frames=3), _obj(2, "truck", fast, lateral=None)):
        reason, table = _reason(_window(base, [_obj(1, "car", [8.0, 8.0, 8.0]), other]), template)
        assert _check_object(reason, table) == "A"


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_driver_outside_the_table_gives_the_closest(base, template):
    meta = _window(base, [_obj(1, "car", [8.0, 8.0, 8.0]), _obj(2, "truck", [30.0, 24.0, 18.0])])
    reason, table = _reason(meta, template, top_k=1)
    assert list(table) == ["A"] and _check_object(reason, table) == "A"
    assert reason == "Reason: car A, 8.0 m ahead, not closing in, no finite TTC."


@pytest.mark.parametrize("template", TEMPLATES)
def test_a_converging_third_party_pair_is_named_by_its_letters(base, template):
    objects = [_obj(1, "car", [8.0, 8.0, 8.0]), _obj(2, "person", [15.0, 15.0, 15.0], lateral=4.0),
               _obj(3, "car", [21.0, 20.5, 20.0], lateral=3.0)]
    reason, table = _reason(_window(base, objects, _pair(3, 2)), template)
    m = _PAIR.match(reason)
    assert m, reason
    assert (m["a"], m["b"]) == ("B", "C")  # in table order, whatever the pair's order
    for letter, cls, dist in ((m["a"], m["cls_a"], m["dist_a"]), (m["b"], m["cls_b"], m["dist_b"])):
        assert table[letter][0] == cls and dist == f"{table[letter][1][-1]:.1f}"
    assert reason == "Reason: person B, 15.0 m ahead, and car C, 20.0 m ahead, are converging on each other."


@pytest.mark.parametrize("template", TEMPLATES)
@pytest.mark.parametrize(
    ("pair", "letter"),
    [
        (_pair(3, 2, tcpa=4.0), "A"),  # clamped at the pair's horizon: no approach within it
        (_pair(3, 2, dcpa=8.0), "A"),  # they pass far apart
        (_pair(3, 2, closing=-1.0), "A"),  # separating
        (_pair(3, 9), "A"),  # one member untracked in the window
    ],
)
def test_a_pair_that_does_not_converge_is_not_named(base, template, pair, letter):
    objects = [_obj(1, "car", [8.0, 8.0, 8.0]), _obj(2, "person", [15.0, 15.0, 15.0], lateral=4.0),
               _obj(3, "car", [21.0, 20.5, 20.0], lateral=3.0)]
    reason, table = _reason(_window(base, objects, pair), template)
    assert _check_object(reason, table) == letter


@pytest.mark.parametrize("template", TEMPLATES)
def test_an_in_path_contact_sooner_than_the_pair_wins(base, template):
    objects = [_obj(1, "car", [12.0, 9.0, 6.0]),  # A: TTC 6 / 2 = 3.0 s, before the pair's 3.5 s
               _obj(2, "person", [15.0, 15.0, 15.0], lateral=4.0), _obj(3, "car", [21.0, 20.5, 20.0], lateral=3.0)]
    reason, table = _reason(_window(base, objects, _pair(3, 2, tcpa=3.5)), template)
    assert _check_object(reason, table) == "A"
    reason, _ = _reason(_window(base, objects, _pair(3, 2, tcpa=2.5)), template)
    assert _PAIR.match(reason), reason
    reason, table = _reason(_window(base, objects, _pair(3, 2)), template, top_k=2)  # C not in the table
    assert _check_object(reason, table) == "A"


@pytest.mark.parametrize("template", TEMPLATES)
def test_missing_numbers_are_not_invented(base, template):
    # the last keyframe missed: the distance is the last one printed; no depth at all: unknown
    objects = [_obj(1, "car", [12.0, 10.5, None]), _obj(2, "car", [None, None, None])]
    reason, table = _reason(_window(base, objects), template)
    assert _check_object(reason, table) == "A"
    reason, table = _reason(_window(base, [_obj(2, "car", [None, None, None])]), template)
    assert reason == "Reason: car A, distance unknown, closing speed unknown, no finite TTC."


@pytest.mark.parametrize("template", TEMPLATES)
def test_nothing_tracked(base, template):
    reason, table = _reason(_window(base, []), template)
    assert table == {} and reason == "Reason: no objects were tracked."


def test_reason_pair_is_an_optional_template_key(base, tmp_path):
    import yaml

    from crashcast.errors import ConfigError

    source = Path(__file__).parents[2] / "src" / "crashcast" / "prompts" / "templates" / "risk_v1.yaml"
    data = yaml.safe_load(source.read_text(encoding="utf-8"))
    assert "reason_pair" not in data  # risk_v1 stays as it was trained; the builder's default applies
    data.update(version="risk_test", reason_rule="driver", reason_pair="Reason: {letter_a} meets {letter_b}.")
    custom = tmp_path / "risk_test.yaml"
    custom.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    objects = [_obj(1, "car", [8.0, 8.0, 8.0]), _obj(2, "person", [15.0, 15.0, 15.0], lateral=4.0),
               _obj(3, "car", [21.0, 20.5, 20.0], lateral=3.0)]
    p = build_prompt(_window(base, objects, _pair(3, 2)), None, template=custom, rationale=True)
    assert p.assistant.splitlines()[1] == "Reason: B meets C."
    data["reason_pair"] = 3
    custom.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match="reason_pair"):
        build_prompt(base, None, template=custom, rationale=True)
    data.update(reason_pair="Reason: {letter_a} meets {letter_b}.", reason_rule="nearest")
    custom.write_text(yaml.safe_dump(data, allow_unicode=True), encoding="utf-8")
    with pytest.raises(ConfigError, match="reason_rule: 'nearest' \\(choose closest-v1 or driver\\)"):
        build_prompt(base, None, template=custom, rationale=True)
