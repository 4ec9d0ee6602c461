"""The reason a person reads for a window's score, rendered from the score's `Evidence` only (the one
renderer), so its numbers are the numbers the score came from: 'vehicle A (#3) 9 m ahead, closing at
7.9 m/s, TTC 1.1 s from the depth rate'; when the risk is low it says so, with what kept it low:
'low: vehicle B (#4) 24 m ahead, not closing (0.0 m/s), no TTC under 10 s; the road ahead does not
loom (no contact under 10 s)'. A vision-language model's reason is its own words (its evidence
says so: `text_source`).

`feature_evidence` turns a learned model's per-feature contributions into evidence: the object (or
the scene) whose features moved the score most in its direction, with those features' values.
"""

from __future__ import annotations

import math
from typing import Any

from crashcast.risk.evidence import Agent, Evidence, Measurement, Term, finite, table_agent

# feature-table column (its object-free suffix) -> (unit, decimals, phrase with {v} for the number)
_PHRASES: dict[str, tuple[str, int, str]] = {
    "depth_m": ("m", 0, "{v} m away on average"),
    "depth_end_m": ("m", 0, "{v} m away"),
    "closing_mps": ("m/s", 1, "closing at {v} m/s"),
    "ttc_s": ("s", 1, "TTC {v} s"),
    "lateral_m": ("m", 1, "{v} m off the path axis"),
    "speed_mps": ("m/s", 1, "moving at {v} m/s"),
    "accel_mps2": ("m/s²", 1, "acceleration {v} m/s²"),
    "flow_mag": ("px", 1, "image motion {v} px"),
    "occlusion": ("", 2, "occlusion {v}"),
    "mask_area": ("px²", 0, "mask {v} px²"),
    "looming_per_s": ("/s", 2, "road looming {v} per s"),
    "scene_ttc_s": ("s", 1, "road contact in {v} s"),
    "n_objects": ("", 0, "{v} objects seen"),
    "path_min_ttc_s": ("s", 1, "smallest TTC in the path {v} s"),
    "path_ttc_closing_mps": ("m/s", 1, "the object with that TTC closing at {v} m/s"),
    "path_max_closing_mps": ("m/s", 1, "fastest closing in the path {v} m/s"),
    "path_min_depth_m": ("m", 0, "nearest in the path {v} m"),
    "min_ttc_s": ("s", 1, "smallest TTC {v} s"),
}
_FLAGS = {"present": ("present", "absent"), "in_path": ("in the path", "beside the path"),
          "is_vehicle": ("a vehicle", "not a vehicle"), "is_person": ("a person", "not a person")}


def agent_name(a: Agent) -> str:
    """'vehicle A (#3)': class, rank letter, track id (as on the annotated video)."""
    name = f"{a.class_name} {a.letter}" if a.letter else a.class_name
    return f"{name} (#{a.object_id})" if a.object_id is not None else name


def _ttc(m: Measurement) -> str:
    if m.decimals == 0:
        return f"no TTC under {m.shown()} s"
    return f"TTC {m.shown()} s" + (f" from {m.source}" if m.source else "")


def _object(t: Term) -> str:
    dist, closing, ttc, gate = t.get("distance"), t.get("closing"), t.get("ttc"), t.get("min_closing")
    if not t.agents:  # the object is beyond the table's top-K when its numbers are said
        head = "an object in the path" if closing is not None and closing.in_text else "nothing in the path"
    else:
        head = agent_name(t.agents[0]) + (f" {dist.shown()} m ahead" if dist else "")
    parts = [head]
    if closing is not None and closing.in_text:
        parts.append(f"closing at {closing.shown()} m/s" if closing.value > 0.05 else f"not closing ({closing.shown()} m/s)")
    if ttc is not None and ttc.in_text:
        said_ttc = _ttc(ttc)
        if gate is not None and gate.in_text:
            said_ttc += f", not counted: it closes slower than {gate.shown()} m/s"
        parts.append(said_ttc)
    return ", ".join(parts)


def _looming(t: Term) -> str:
    m = t.get("scene_ttc")
    if m.decimals == 0:
        return f"the road ahead does not loom (no contact under {m.shown()} s)"
    return f"the road ahead looms: contact in {m.shown()} s at this rate"


def _third_party(t: Term) -> str:
    """Two road users converging ahead (both named), or the detection-free motion anomaly."""
    contact, dcpa, tcpa = t.get("pair_contact"), t.get("pair_dcpa"), t.get("pair_tcpa")
    closing, anomaly = t.get("pair_closing"), t.get("motion_anomaly")
    if len(t.agents) == 2 and dcpa is not None and dcpa.in_text:
        a, b = (agent_name(x) for x in t.agents)
        said = f"{a} and {b} converge ahead: contact in {contact.shown()} s (closest {dcpa.shown()} m apart in {tcpa.shown()} s)"
        return said + (f", closing at {closing.shown()} m/s" if closing is not None and closing.in_text else "")
    if anomaly is not None and anomaly.in_text:
        mid = t.get("anomaly_mid")
        if mid is None or anomaly.value >= mid.value:
            return f"sudden image motion the ego motion does not explain ({anomaly.shown()} px per frame)"
        return f"no sudden unexplained image motion ({anomaly.shown()} px per frame)"
    return "no two road users converging ahead"


def _phrase(m: Measurement) -> str:
    field = m.name.split("_", 1)[1] if m.name.startswith("obj") else m.name
    if m.unit == "flag":
        yes, no = _FLAGS.get(field, (field, f"not {field}"))
        return yes if m.value else no
    if not math.isfinite(m.value):
        return f"{field.replace('_', ' ')} unknown"
    if field in _PHRASES:
        return _PHRASES[field][2].format(v=m.shown())
    return f"{m.name.replace('_', ' ')} {m.shown()}" + (f" {m.unit}" if m.unit else "")


def _features(t: Term) -> str:
    head = agent_name(t.agents[0]) if t.agents else "the scene"
    said = [_phrase(m) for m in t.measurements if m.in_text]
    return f"{head}: {', '.join(said)}" if said else head


def _generic(t: Term) -> str:
    """Any other term: the agents it names, then its measurements."""
    head = " and ".join(agent_name(a) for a in t.agents) or t.name.replace("_", " ")
    said = [_phrase(m) for m in t.measurements if m.in_text]
    return f"{head}: {', '.join(said)}" if said else head


_RENDER = {"object": _object, "looming": _looming, "features": _features, "third_party": _third_party}


def render(ev: Evidence) -> str:
    """The reason, from the evidence alone."""
    if ev.text is not None:  # a model's own words, as it wrote them (the evidence names who wrote them)
        return ev.text
    if not ev.terms:
        return "no evidence"
    said = "; ".join(_RENDER.get(t.name, _generic)(t) for t in ev.shown_terms())
    return f"low: {said}" if ev.low else said


def _measurement(row: Any, col: str) -> Measurement:
    field = col.split("_", 1)[1] if col.startswith("obj") else col
    value = finite(row.get(col))
    if field in _FLAGS:
        return Measurement(col, float(bool(value)), "flag", decimals=0)
    unit, decimals, _ = _PHRASES.get(field, ("", 2, ""))
    return Measurement(col, math.nan if value is None else value, unit, "feature table", decimals=decimals)


def feature_evidence(kind: str, raw: float, risk: float, row: Any, contrib: Any, meta: Any = None, top: int = 3) -> Evidence:
    """Evidence of a learned model from its per-feature contributions to one window's score
    (`contrib`: a Series over the features, in the model's units). Features group by object
    (obj1_* is vehicle/person A) and the scene; the group that moved the score most in its
    direction (up; down when the risk is low) drives, and its `top` features in that direction are
    its measurements, with their values."""
    sign = -1.0 if Evidence(kind, raw, risk=risk).low else 1.0
    groups: dict[str, list[str]] = {}
    for col in contrib.index:
        key = col[: col.index("_")] if col.startswith("obj") and "_" in col else "scene"
        groups.setdefault(key, []).append(col)
    terms = []
    for key, cols in groups.items():
        total = float(sum(contrib[c] for c in cols))
        pushing = sorted((c for c in cols if sign * contrib[c] > 0), key=lambda c: -sign * contrib[c])[:top]
        agents: tuple[Agent, ...] = ()
        if key != "scene":
            k = int(key[3:])
            if not row.get(f"obj{k}_present", 0):
                continue  # an absent object's features say only that it is absent
            agents = (table_agent(row, k, meta),)
        terms.append(Term("features", total, agents, tuple(_measurement(row, c) for c in pushing)))
    terms.sort(key=lambda t: -sign * t.contribution)
    return Evidence(kind, raw, terms, risk)
