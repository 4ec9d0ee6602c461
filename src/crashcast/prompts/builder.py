"""One window's conversational prompt (W. Zhu, the paper's section 4): the keyframe overlays as images,
a table of the K closest objects, Task and Note; the answer `Collision Probability: 0.xyz` from the
window's soft target. All wording and number formats come from a versioned template file
(`templates/<name>.yaml`), so a trained model can be traced to the exact prompt it learnt.

Decisions (the paper leaves them open):
- id: the window id, `<clip>_<phase>` at horizon 0 (the paper's `<video>_<phase>`) and
  `<clip>_<phase>_h<horizon>` otherwise, so prompts of several horizons stay unique.
- Keyframe times are given relative to the window's end (-3.00, -1.50, 0.00 s): the clip time of an
  event differs between positives and negatives, and printing it would let a model learn that.
- Ranking: ascending mean of the depths measured at the keyframes. Objects no keyframe measured go
  after every measured one (among themselves by the track's own depth, `mean_depth_m`, then id);
  objects with no depth at all go last by id. None is dropped before the top-K cut.
- Columns whose name is plural (Depths, OptFlowMags, OptFlowAngs) list one value per keyframe;
  singular ones hold one current value: ΔDepth = the causal depth rate at the window's end (else the
  slope between the first and last keyframes with a depth), Speed and Accel = the last estimates,
  Occl = the occlusion at the last keyframe the object was seen. A missing value is `-` (one short
  token, unlike `nan`, and never mistaken for a number).
- Layout (the template's `table`): risk_v1 and risk_v2 (the default; risk_v1 with the Reason rule
  below) are the layout above; paper_fig3 (the paper's Fig. 3) lists
  ΔDepth and the optical flow once per interval between keyframes (`depth_rate`/`flow: intervals`:
  the depth difference over the time difference; the mean of the two ends' flow magnitudes and the
  angle of the mean of their flow vectors), angles in radians, lists in brackets.
- Images: the three overlays, resolved inside `window_dir` (absolute paths). A window without
  images (no `window_dir`, or `frame_paths` not all set) gives a text-only prompt with no `<image>`
  token; a named image that does not exist is an error. The `<image>` count always equals the
  number of images (checked when a Prompt is made).
- Rationale (optional second answer line): about the agent that drives the risk (`risk_driver`),
  told only with numbers the same prompt's table shows: an object's letter; its distance = the last
  Depths value printed; its closing speed = minus the ΔDepth printed (the current value; with
  per-interval ΔDepth, the last interval's); TTC = that distance / that closing speed when it closes
  (else no finite TTC). A converging pair of other road users is named by its two letters and their
  distances (`reason_pair`, an optional template key).
"""

from __future__ import annotations

import itertools
import logging
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path

import yaml

from crashcast.errors import ConfigError, InputLimitError, SchemaError
from crashcast.features.convergence import PAIR_HORIZON_S
from crashcast.features.table import IN_PATH_M, MIN_FRAMES_FOR_TTC
from crashcast.features.window_meta import Instance, ObjectSummary, WindowMeta
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import inside, read_bounded, read_text_bounded
from crashcast.settings import parse_yaml

log = logging.getLogger(__name__)

DEFAULT_TEMPLATE = "risk_v2"
IMAGE_TOKEN = "<image>"  # the placeholder LLaMA-Factory and ms-swift replace with the model's image tokens
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_TEXT_KEYS = ("user", "role", "keyframes_images", "keyframes_text", "valid_note", "table_intro",
              "table_header", "no_objects", "task", "task_rationale", "note", "answer", "reason",
              "reason_none", "distance", "distance_unknown", "closing", "not_closing", "closing_unknown",
              "ttc", "ttc_none")
_TABLE_KEYS = ("column_sep", "list_sep", "missing", "bool_true", "bool_false")
_FORMAT_KEYS = ("time", "depth", "depth_rate", "flow_mag", "flow_ang", "speed", "accel", "occlusion")
#: optional table keys: their choices (the first is the default, risk_v1's layout)
_LAYOUT_CHOICES = {
    "depth_rate": ("current", "intervals"),  # one value now, or one per interval between keyframes
    "flow": ("keyframes", "intervals"),  # one flow value per keyframe, or one per interval
    "angle_unit": ("degrees", "radians"),
}
_LIST_KEYS = ("list_open", "list_close")  # around every list of values (default: nothing)
#: optional top-level key `reason_rule`: which agent the Reason line names, and with which numbers
#: ('closest-v1', the default: object A with its window_meta kinematics, as risk_v1 was trained;
#: 'driver': `risk_driver` with the table's own numbers, risk_v2 and paper_fig3)
_REASON_RULES = ("closest-v1", "driver")
#: optional text keys, with their defaults (templates written before them, as risk_v1, stay valid)
_OPTIONAL_TEXT = {
    "reason_pair": "Reason: {class_a} {letter_a}, {distance_a}, and {class_b} {letter_b}, {distance_b}, "
                   "are converging on each other.",
}


@dataclass(frozen=True)
class PromptTemplate:
    """A template file's content: `text` (the wording, format strings), `table` (separators and the
    missing-value mark) and `formats` (one format per kind of number)."""

    version: str
    text: Mapping[str, str]
    table: Mapping[str, str]
    formats: Mapping[str, str]


def load_template(template: str | Path = DEFAULT_TEMPLATE) -> PromptTemplate:
    """A template by name (a file shipped in `crashcast/prompts/templates/`) or by path to a YAML file."""
    path = Path(template)
    if path.suffix in (".yaml", ".yml"):
        try:
            text = read_text_bounded(path, what="prompt template")
        except (OSError, InputLimitError, UnicodeDecodeError) as e:
            raise ConfigError(f"prompt template {path}: cannot be read ({e})") from None
        return _parse_template(text, str(path))
    return _packaged_template(str(template))


@lru_cache(maxsize=8)
def _packaged_template(name: str) -> PromptTemplate:
    res = resources.files("crashcast.prompts") / "templates" / f"{name}.yaml"
    if not res.is_file():
        known = sorted(
            p.name.removesuffix(".yaml")
            for p in (resources.files("crashcast.prompts") / "templates").iterdir()
            if p.name.endswith(".yaml")
        )
        raise ConfigError(
            f"prompt template {name!r}: not found (known: {', '.join(known)}; or give a YAML path)"
        )
    return _parse_template(res.read_text(encoding="utf-8"), name)


def _parse_template(source: str, where: str) -> PromptTemplate:
    try:
        data = parse_yaml(source)
    except yaml.YAMLError as e:
        raise ConfigError(f"prompt template {where}: not valid YAML: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"prompt template {where}: expected a mapping")
    table = data.get("table") or {}
    formats = table.get("formats") or {}
    missing = [k for k in ("version", *_TEXT_KEYS) if not isinstance(data.get(k), str)]
    missing += [k for k in _OPTIONAL_TEXT if k in data and not isinstance(data[k], str)]
    missing += [f"table.{k}" for k in _TABLE_KEYS if not isinstance(table.get(k), str)]
    missing += [f"table.formats.{k}" for k in _FORMAT_KEYS if not isinstance(formats.get(k), str)]
    missing += [f"table.{k}" for k in (*_LIST_KEYS, *_LAYOUT_CHOICES) if k in table and not isinstance(table[k], str)]
    if missing:
        raise ConfigError(f"prompt template {where}: missing or not text: {', '.join(missing)}")
    layout = {k: table.get(k, choices[0]) for k, choices in _LAYOUT_CHOICES.items()}
    wrong = [f"table.{k}: {v!r} (choose {' or '.join(_LAYOUT_CHOICES[k])})" for k, v in layout.items()
             if v not in _LAYOUT_CHOICES[k]]
    rule = data.get("reason_rule", _REASON_RULES[0])
    if rule not in _REASON_RULES:
        wrong.append(f"reason_rule: {rule!r} (choose {' or '.join(_REASON_RULES)})")
    if wrong:
        raise ConfigError(f"prompt template {where}: {'; '.join(wrong)}")
    return PromptTemplate(
        version=data["version"],
        text={**{k: data[k] for k in _TEXT_KEYS}, **{k: data.get(k, v) for k, v in _OPTIONAL_TEXT.items()}},
        table={**{k: table[k] for k in _TABLE_KEYS}, **{k: table.get(k, "") for k in _LIST_KEYS}, **layout,
               "reason_rule": rule},
        formats={k: formats[k] for k in _FORMAT_KEYS},
    )


@dataclass(frozen=True)
class Prompt:
    """One window's conversation. `text` is the user turn without image tokens (the chat-message form
    puts image entries before it); `user` is the ShareGPT form: one `<image>` per image, then a
    newline and `text`. `assistant` is the target answer. The other fields say where it came from
    (for splits grouped by clip, and for losses that need the label or the soft target)."""

    id: str
    images: tuple[Path, ...]
    text: str
    assistant: str
    template: str
    clip_id: str
    phase: str
    horizon_s: float
    label: int
    soft_target: float
    #: the window_meta.json it was built from (None: built from memory); for messages, not compared
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if IMAGE_TOKEN in self.text or IMAGE_TOKEN in self.assistant:
            raise ValueError(f"prompt {self.id}: {IMAGE_TOKEN} inside the text; images go in `images`")

    @property
    def user(self) -> str:
        if not self.images:
            return self.text
        return IMAGE_TOKEN * len(self.images) + "\n" + self.text


def build_prompt(
    meta: WindowMeta,
    window_dir: Path | None,
    top_k: int = 3,
    template: str | Path = DEFAULT_TEMPLATE,
    rationale: bool = False,
) -> Prompt:
    """The prompt of one window. `window_dir` is the folder of its window_meta.json (its keyframe
    overlays are named relative to it); None builds a text-only prompt. `rationale` adds a second
    answer line explaining the number by the agent that drives the risk, with its table numbers."""
    if not 1 <= top_k <= len(LETTERS):
        raise ConfigError(f"features.top_k: prompts show 1..{len(LETTERS)} objects (one letter each), got {top_k}")
    tpl = load_template(template)
    t = tpl.text
    images = keyframe_paths(meta, window_dir)
    times = [_num(tpl, "time", ft - meta.frame_times[-1]) for ft in meta.frame_times]
    keyframes = t["keyframes_images" if images else "keyframes_text"].format(
        t0=times[0], t1=times[1], t2=times[2]
    )
    ranked = rank_objects(meta)[:top_k]
    rows = [_row(tpl, meta, o, LETTERS[i]) for i, o in enumerate(ranked)] or [t["no_objects"]]
    table = "\n".join([t["table_header"], *rows])
    text = t["user"].format(
        role=t["role"],
        keyframes=keyframes,
        valid_note=t["valid_note"],
        table_intro=t["table_intro"],
        table=table,
        task=t["task_rationale" if rationale else "task"],
        note=t["note"],
    )
    answer = t["answer"].format(probability=meta.soft_target)
    if rationale:
        if tpl.table["reason_rule"] == "driver":
            answer += "\n" + reason_line(tpl, meta, ranked, risk_driver(tpl, meta, ranked))
        else:
            answer += "\n" + reason_line_v1(tpl, meta, ranked[0] if ranked else None)
    return Prompt(
        id=meta.window_id,
        images=images,
        text=text,
        assistant=answer,
        template=tpl.version,
        clip_id=meta.clip_id,
        phase=meta.phase,
        horizon_s=meta.horizon_s,
        label=meta.label,
        soft_target=meta.soft_target,
        source=str(Path(window_dir) / RunLayout.WINDOW_META) if window_dir is not None else None,
    )


def keyframe_paths(meta: WindowMeta, window_dir: Path | None) -> tuple[Path, ...]:
    """The window's three keyframe overlays, resolved inside `window_dir`; () when it has none (or
    only some: a warning). One that lies outside the folder or does not exist raises SchemaError."""
    if window_dir is None or all(p is None for p in meta.frame_paths):
        return ()
    if any(p is None for p in meta.frame_paths):
        log.warning(
            "window %s: only some keyframe images were written; building a text-only prompt", meta.window_id
        )
        return ()
    out = []
    for rel in meta.frame_paths:
        try:
            path = inside(window_dir, rel)
        except ValueError:
            raise SchemaError(
                f"{Path(window_dir) / RunLayout.WINDOW_META}: keyframe image {rel!r} lies outside the "
                "window folder"
            ) from None
        if not path.is_file():
            raise SchemaError(f"{path}: keyframe image named by window {meta.window_id} does not exist")
        _check_image(path, meta.window_id)
        out.append(path)
    return tuple(out)


#: a keyframe overlay's plausible size in pixels (each side)
KEYFRAME_SIDE_PX = (16, 8192)
#: the most bytes a keyframe image file may have
KEYFRAME_FILE_LIMIT = 64 * 2**20
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _png_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a PNG's IHDR chunk, read before decoding (a small file can declare a
    gigapixel image); None when `data` is not a PNG."""
    if data[:8] != _PNG_SIGNATURE or data[12:16] != b"IHDR" or len(data) < 24:
        return None
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


def _check_image(path: Path, window_id: str) -> None:
    """SchemaError unless `path` decodes as an image of a plausible size: an empty or corrupt PNG
    would otherwise reach the exports and fail a VLM's training an epoch in."""
    import cv2
    import numpy as np

    try:
        data = read_bounded(path, KEYFRAME_FILE_LIMIT, "keyframe image")
    except (OSError, InputLimitError) as e:
        raise SchemaError(f"{path}: keyframe image of window {window_id} cannot be read ({e})") from None
    lo, hi = KEYFRAME_SIDE_PX
    declared = _png_size(data)
    if declared is not None and not all(lo <= side <= hi for side in declared):
        raise SchemaError(f"{path}: keyframe image of window {window_id} declares {declared[0]}x{declared[1]} pixels, "
                          f"not a keyframe overlay (each side {lo}-{hi}); not decoded")
    img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED) if data else None
    if img is None:
        raise SchemaError(f"{path}: keyframe image of window {window_id} does not decode "
                          f"({len(data)} bytes: empty or corrupt); rerun `crashcast extract` on the run")
    h, w = img.shape[:2]
    if not (lo <= h <= hi and lo <= w <= hi):
        raise SchemaError(f"{path}: keyframe image of window {window_id} is {w}x{h} pixels, not a keyframe overlay "
                          f"(each side {lo}-{hi})")


def keyframe_mean_depth(o: ObjectSummary) -> float | None:
    """Mean of the depths measured at the keyframes (the paper's ranking key); None if none was."""
    ds = [d for d in o.depth_m if _finite(d)]
    return sum(ds) / len(ds) if ds else None


def rank_objects(meta: WindowMeta) -> list[ObjectSummary]:
    """The window's objects, closest first (see the module docstring for objects without depth)."""

    def key(o: ObjectSummary) -> tuple:
        kf = keyframe_mean_depth(o)
        if kf is not None:
            return (0, kf, o.object_id)
        if _finite(o.mean_depth_m):
            return (1, o.mean_depth_m, o.object_id)
        return (2, 0.0, o.object_id)

    return sorted(meta.objects, key=key)


def _row(tpl: PromptTemplate, meta: WindowMeta, o: ObjectSummary, letter: str) -> str:
    inst: dict[int, Instance] = {i.frame_idx: i for i in meta.instances if i.object_id == o.object_id}
    per_kf = [inst.get(k) for k in range(3)]
    seen = [i for i in per_kf if i is not None]
    if tpl.table["depth_rate"] == "intervals":
        depth_rate = _list(tpl, "depth_rate", _interval_depth_rates(meta, o))
    else:
        depth_rate = _num(tpl, "depth_rate", _depth_rate(meta, o))
    flows = [(i.optical_flow.avg_mag, i.optical_flow.avg_ang) if i else None for i in per_kf]
    if tpl.table["flow"] == "intervals":
        flows = [_mean_flow(a, b) for a, b in itertools.pairwise(flows)]
    to_unit = math.radians if tpl.table["angle_unit"] == "radians" else float
    cells = [
        letter,
        _clean(o.class_name, tpl),
        _list(tpl, "depth", o.depth_m),
        depth_rate,
        _list(tpl, "flow_mag", [f[0] if f else None for f in flows]),
        _list(tpl, "flow_ang", [to_unit(f[1]) if f else None for f in flows]),
        _bool(tpl, o.speed_valid),
        _num(tpl, "speed", o.speed_mps),
        _bool(tpl, o.acc_valid),
        _num(tpl, "accel", o.accel_mps2),
        _num(tpl, "occlusion", seen[-1].occlusion if seen else None),
    ]
    return tpl.table["column_sep"].join(cells)


def _interval_depth_rates(meta: WindowMeta, o: ObjectSummary) -> list[float | None]:
    """d(depth)/dt in m/s over each interval between consecutive keyframes (negative: approaching):
    (depth[k+1] - depth[k]) / (time[k+1] - time[k]); None where either depth was not measured."""
    out: list[float | None] = []
    for k in range(2):
        d0, d1 = o.depth_m[k], o.depth_m[k + 1]
        dt = meta.frame_times[k + 1] - meta.frame_times[k]
        out.append((d1 - d0) / dt if _finite(d0) and _finite(d1) and dt > 0 else None)
    return out


def _mean_flow(a: tuple[float, float] | None, b: tuple[float, float] | None) -> tuple[float, float] | None:
    """The flow of one interval from its two keyframes' (magnitude, angle in degrees): the mean
    magnitude, and the direction of the sum of the two ends' vectors (each its mean magnitude along its
    mean-flow direction: window_meta keeps no mean vector); the one measured end when the
    other was not (the image motion per frame over the interval, read at its ends)."""
    if a is None or b is None:
        return a or b
    u = [m * math.cos(math.radians(ang)) for m, ang in (a, b)]
    v = [m * math.sin(math.radians(ang)) for m, ang in (a, b)]
    return (a[0] + b[0]) / 2, math.degrees(math.atan2(sum(v), sum(u)))


def _depth_rate(meta: WindowMeta, o: ObjectSummary) -> float | None:
    """d(depth)/dt in m/s (negative: approaching): the causal fit at the window's end, else the slope
    between the first and the last keyframe that measured a depth."""
    if _finite(o.depth_rate_mps):
        return o.depth_rate_mps
    known = [(meta.frame_times[k], d) for k, d in enumerate(o.depth_m) if _finite(d)]
    if len(known) >= 2 and known[-1][0] > known[0][0]:
        return (known[-1][1] - known[0][1]) / (known[-1][0] - known[0][0])
    return None


#: a pair of other road users drives the risk only if their centroids come this near each other (the
#: third-party term's contact distance for two vehicles, `risk.third_party.ThirdPartyConfig.contact_m`)
PAIR_NEAR_M = 5.0


def _printed(tpl: PromptTemplate, kind: str, v: float | None) -> float | None:
    """`v` as the table prints it, read back; None where the table shows it missing."""
    s = _num(tpl, kind, v)
    if s == tpl.table["missing"]:
        return None
    try:
        return float(s)
    except ValueError:  # a template whose format holds more than the number: the value itself
        return float(v)  # type: ignore[arg-type]


def shown_kinematics(tpl: PromptTemplate, meta: WindowMeta, o: ObjectSummary) -> tuple[float | None, float | None, float | None]:
    """(distance, closing speed, TTC) of object `o` from the numbers its table row prints: the last
    Depths value measured; minus the ΔDepth shown (the current value, or the last interval's when
    the template lists one per interval); distance / closing speed when it closes, else None. None
    where the row shows no such number."""
    last = next((d for d in reversed(o.depth_m) if _finite(d)), None)
    distance = _printed(tpl, "depth", last)
    rate = _interval_depth_rates(meta, o)[-1] if tpl.table["depth_rate"] == "intervals" else _depth_rate(meta, o)
    shown_rate = _printed(tpl, "depth_rate", rate)
    closing = None if shown_rate is None else 0.0 - shown_rate
    ttc = distance / closing if distance is not None and closing is not None and closing > 0 else None
    return distance, closing, ttc


def risk_driver(tpl: PromptTemplate, meta: WindowMeta, shown: list[ObjectSummary]) -> tuple[ObjectSummary, ...]:
    """The agent(s) the reason names: those the physics model's evidence names as driving the risk
    (`risk.physics`), by a small rule on the window's own fields, since prompts may not import risk:

    1. the settled object in the ego path (lateral offset under `IN_PATH_M`, seen in at least
       `MIN_FRAMES_FOR_TTC` frames: the objects `features.table` aggregates into the path TTC) with
       the smallest finite TTC, its TTC computed from its table numbers (`shown_kinematics`), the
       closer one on a tie (not capped: over `features.table.TTC_CAP_S` it drives nothing, but it is still the
       in-path object nearest to contact, the one the physics model's object term names);
    2. instead, the closest pair of other road users (`meta.pair`) when they close, come within
       `PAIR_NEAR_M` of each other (dcpa), and do so (tcpa) within the pair's horizon
       (`features.convergence.PAIR_HORIZON_S`: a tcpa at it is clamped) and sooner than that TTC;
    3. else, and whenever the driver is not among the table's rows (`shown`, the top K), the closest
       object (A).

    () when no object was tracked; one object; or a pair, in table order."""
    if not shown:
        return ()
    ranked = rank_objects(meta)
    driver: tuple[ObjectSummary, ...] = ()
    soonest = math.inf
    for o in ranked:
        if o.lateral_offset_m is None or o.lateral_offset_m >= IN_PATH_M or o.frames_seen < MIN_FRAMES_FOR_TTC:
            continue
        ttc = shown_kinematics(tpl, meta, o)[2]
        if ttc is not None and ttc < soonest:
            driver, soonest = (o,), ttc
    p = meta.pair
    if p is not None and p.closing_mps > 0 and p.dcpa_m < PAIR_NEAR_M and p.tcpa_s < min(soonest, PAIR_HORIZON_S):
        members = [o for o in ranked if o.object_id in (p.object_a, p.object_b)]
        driver = tuple(members) if len(members) == 2 else (shown[0],)
    position = {id(o): i for i, o in enumerate(shown)}
    if not driver or any(id(o) not in position for o in driver):
        return (shown[0],)
    return tuple(sorted(driver, key=lambda o: position[id(o)]))


def reason_line(tpl: PromptTemplate, meta: WindowMeta, shown: list[ObjectSummary],
                driver: tuple[ObjectSummary, ...]) -> str:
    """The rationale about `driver` (`risk_driver`), each one named by its letter in the table
    (`shown`, its rows in order) and told with its table numbers only (`shown_kinematics`); a pair by
    its two letters and distances. Deterministic. Without a closing speed (the depth rate says it
    is not closing) no TTC is given: "not closing in, TTC 0.5 s" would contradict itself."""
    t = tpl.text
    if not driver:
        return t["reason_none"]
    letter = {id(o): LETTERS[i] for i, o in enumerate(shown)}

    def distance(v: float | None) -> str:
        return t["distance"].format(value=v) if v is not None else t["distance_unknown"]

    if len(driver) == 2:
        a, b = driver
        return t["reason_pair"].format(
            class_a=_clean(a.class_name, tpl), letter_a=letter[id(a)],
            distance_a=distance(shown_kinematics(tpl, meta, a)[0]),
            class_b=_clean(b.class_name, tpl), letter_b=letter[id(b)],
            distance_b=distance(shown_kinematics(tpl, meta, b)[0]),
        )
    o = driver[0]
    d, v, ttc = shown_kinematics(tpl, meta, o)
    if v is None:
        closing = t["closing_unknown"]
    else:
        closing = t["closing"].format(value=v) if v > 0 else t["not_closing"]
    return t["reason"].format(
        class_name=_clean(o.class_name, tpl),
        letter=letter[id(o)],
        distance=distance(d),
        closing=closing,
        ttc=t["ttc"].format(value=ttc) if ttc is not None else t["ttc_none"],
    )


def reason_line_v1(tpl: PromptTemplate, meta: WindowMeta, closest: ObjectSummary | None) -> str:
    """The rationale as risk_v1 was trained with it (`reason_rule: closest-v1`): the closest object
    (A), its distance at the last keyframe that measured it (else its track's mean depth), and the
    window_meta's closing speed and TTC, no TTC when the depth rate says it is not closing. Kept
    unchanged for the adapters trained on it; it can name an object that does not drive the risk and
    numbers the table does not show, which `reason_line` (risk_v2, paper_fig3) does not."""
    t = tpl.text
    if closest is None:
        return t["reason_none"]
    last_depth = next((d for d in reversed(closest.depth_m) if _finite(d)), None)
    if last_depth is None and _finite(closest.mean_depth_m):
        last_depth = closest.mean_depth_m
    v, ttc = closest.closing_speed_mps, closest.ttc_s
    if _finite(v) and v <= 0:
        ttc = None
    if not _finite(v):
        closing = t["closing_unknown"]
    else:
        closing = t["closing"].format(value=v) if v > 0 else t["not_closing"]
    return t["reason"].format(
        class_name=_clean(closest.class_name, tpl),
        letter=LETTERS[0],
        distance=t["distance"].format(value=last_depth) if last_depth is not None else t["distance_unknown"],
        closing=closing,
        ttc=t["ttc"].format(value=ttc) if _finite(ttc) else t["ttc_none"],
    )


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


_NEG_ZERO = re.compile(r"^-(0(\.0*)?)$")


def _num(tpl: PromptTemplate, kind: str, v: float | None) -> str:
    if not _finite(v):
        return tpl.table["missing"]
    s = tpl.formats[kind].format(v)
    return _NEG_ZERO.sub(r"\1", s)  # -0.00 reads as a direction the data does not have


def _list(tpl: PromptTemplate, kind: str, values: list[float | None]) -> str:
    t = tpl.table
    return t["list_open"] + t["list_sep"].join(_num(tpl, kind, v) for v in values) + t["list_close"]


def _bool(tpl: PromptTemplate, v: bool) -> str:
    return tpl.table["bool_true" if v else "bool_false"]


def _clean(s: str, tpl: PromptTemplate) -> str:
    """A name from the data (a class) as one cell: no image token, line break or column separator."""
    return " ".join(s.replace(IMAGE_TOKEN, "").split()).replace(tpl.table["column_sep"], "/")
