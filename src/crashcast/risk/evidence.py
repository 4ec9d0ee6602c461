"""What a risk score came from: every risk model returns, with each window's score, the `Evidence`
that produced it, and the reason shown to a person is rendered from that evidence alone
(`crashcast.risk.rationale.render`), so the reason's numbers are the numbers the score was computed from.

    Evidence(model="physics", raw=0.93, risk=0.93, terms=[
        Term("object", 0.93, agents=(Agent("A", 3, "vehicle"),), measurements=(
            Measurement("distance", 9.0, "m", "in the path", agent=0),
            Measurement("closing", 7.9, "m/s", "the depth rate", agent=0),
            Measurement("ttc", 1.1, "s", "the depth rate", agent=0))),
        Term("looming", 0.02, measurements=(Measurement("scene_ttc", 8.0, "s", "road looming"),))])

`terms[0]` is the driving term (the one that contributed most in the direction of the score). A term
may name several agents: a third-party term (two road users converging ahead) is
`Term("third_party", c, agents=(a, b), measurements=(Measurement("closest_approach", 1.2, "s", agent=None), ...))`,
its measurements pointing at one agent (`agent=0`/`1`) or at the pair (`agent=None`).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

#: below this (calibrated) risk the reason says the window is low risk, with the numbers that made it so
LOW_RISK = 0.2

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


@dataclass(frozen=True)
class Agent:
    """A road user a term is about: `letter` its rank by distance in the window (A = closest, the
    feature table's obj1), `object_id` its track id (`#3` on the annotated video; None when only the
    feature table is known), `class_name` vehicle / person / object."""

    letter: str | None
    object_id: int | None
    class_name: str


@dataclass(frozen=True)
class Measurement:
    """One number a term used: `name` (ttc, closing, distance, scene_ttc, or a feature-table column
    for the learned models), `value` in `unit` (s, m, m/s, /s, px, "" for a count or a
    fraction, "flag" for a yes/no feature), `source` how it was measured (depth rate, image expansion, road looming, ...),
    `agent` the index into its term's agents (None: the scene or the pair). `decimals`: the precision
    a reason shows it with (its number in the text is `f"{value:.{decimals}f}"`)."""

    name: str
    value: float
    unit: str
    source: str = ""
    agent: int | None = None
    decimals: int = 1
    in_text: bool = True  # False: used by the score, but a reason says it in words (e.g. 'nothing in the path')

    def shown(self) -> str:
        return f"{self.value:.{self.decimals}f}"


@dataclass(frozen=True)
class Term:
    """One part of a score: `name` (object, looming, features, vlm, third_party, ...), `contribution`
    what it added to the score in the model's own units (physics: the term's probability; boosters:
    log-odds from their SHAP contributions; the MLP: the change of its probability when the features
    are set to their training medians), the agents it is about and the measurements it used."""

    name: str
    contribution: float
    agents: tuple[Agent, ...] = ()
    measurements: tuple[Measurement, ...] = ()

    def get(self, name: str) -> Measurement | None:
        return next((m for m in self.measurements if m.name == name), None)


@dataclass
class Evidence:
    """Why one window got its score: `raw` the model's score, `risk` the calibrated probability
    (set by `RiskModel.score`), `terms` driving term first. `text` is a model's own rationale in its
    own words (a VLM's `Reason:` line), `text_source` who wrote it."""

    model: str
    raw: float
    terms: list[Term] = field(default_factory=list)
    risk: float | None = None
    text: str | None = None
    text_source: str | None = None

    @property
    def driving(self) -> Term | None:
        return self.terms[0] if self.terms else None

    @property
    def low(self) -> bool:
        """Whether the window is low risk (`LOW_RISK`), by the calibrated risk when it is known."""
        r = self.raw if self.risk is None else self.risk
        return math.isfinite(r) and r < LOW_RISK

    def shown_terms(self) -> list[Term]:
        """The terms a reason tells: the driving one; the two strongest when the window is low risk
        (what kept the score down)."""
        return self.terms[:2] if self.low else self.terms[:1]

    def numbers(self) -> list[str]:
        """Every number a rendered reason holds, as shown: the agents' track ids and the measurements
        of `shown_terms` (a model's own words excepted)."""
        out = []
        for t in self.shown_terms():
            out += [str(a.object_id) for a in t.agents if a.object_id is not None]
            out += [m.shown() for m in t.measurements if m.in_text and m.unit != "flag" and math.isfinite(m.value)]
        return out

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        for t in d["terms"]:
            for m in t["measurements"]:
                m["value"] = _json_num(m["value"])
            t["contribution"] = _json_num(t["contribution"])
        d["raw"], d["risk"] = _json_num(d["raw"]), _json_num(d["risk"])
        return {k: v for k, v in d.items() if v is not None}


def evidence_from_dict(d: dict[str, Any]) -> Evidence:
    """The inverse of `Evidence.to_dict` (a timeline.json row's `evidence`); None numbers read as NaN."""
    def num(v: Any) -> float:
        return math.nan if v is None else float(v)

    terms = [Term(t["name"], num(t["contribution"]), tuple(Agent(**a) for a in t["agents"]),
                  tuple(Measurement(**{**m, "value": num(m["value"])}) for m in t["measurements"])) for t in d["terms"]]
    return Evidence(d["model"], num(d["raw"]), terms, None if d.get("risk") is None else float(d["risk"]), d.get("text"),
                    d.get("text_source"))


def _json_num(v: float | None) -> float | None:
    if v is None or not math.isfinite(v):
        return None
    return round(float(v), 4)


def finite(v: Any) -> float | None:
    """`v` as a float when it is a finite number; else None."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def class_of(row: Any, k: int) -> str:
    """vehicle / person / object for the feature table's k-th object (1-based)."""
    if row.get(f"obj{k}_is_person", 0):
        return "person"
    return "vehicle" if row.get(f"obj{k}_is_vehicle", 0) else "object"


def table_agent(row: Any, k: int, meta: Any = None) -> Agent:
    """The feature table's k-th object (1-based) as an Agent; its track id from the window's metadata
    when it is at hand (the table holds objects closest first, as `meta.objects`)."""
    oid = None
    if meta is not None and k <= len(meta.objects):
        oid = int(meta.objects[k - 1].object_id)
    return Agent(LETTERS[k - 1] if k <= len(LETTERS) else None, oid, class_of(row, k))


def ttc_source(ttc_s: float | None, ttc_depth_s: float | None, ttc_scale_s: float | None) -> str:
    """How an object's TTC was measured (`features.kinematics.object_kinematics`): from the depth
    rate, from image expansion, the mean of both, or the lower of the two when they disagree."""
    d, e = finite(ttc_depth_s), finite(ttc_scale_s)
    if ttc_s is None or (d is None and e is None):
        return ""
    if d is not None and e is not None:
        if math.isclose(ttc_s, min(d, e), abs_tol=1e-3) and not math.isclose(d, e, abs_tol=1e-3):
            return "the lower of the depth rate and image expansion"
        return "the depth rate and image expansion"
    return "the depth rate" if d is not None else "image expansion"
