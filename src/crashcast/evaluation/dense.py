"""Dense per-video metrics: the field's per-frame AP, mTTA and TTA@R80, and recall with the time
to alert at a capped false-alarm rate, on each test video's causal risk timeline.

A timeline is what `crashcast predict` gives for a whole video: one risk per stride (a window
ending "now", using only past frames), not only the few window ends `evaluate` scores. Here the
stride plays the role of the frame of DAD/CCD reports: it is the evaluation's time step, while
perception runs at `video.fps / perception.frame_step` (every video is resampled to `video.fps`), so a
stride below the perceived frame interval repeats frames rather than matching a dataset's own rate.

The field's definition (UString and DSTA `src/eval_tools.py`, `evaluation()`; checked in both
repositories): a positive video keeps only the frames before its accident, a negative all of its
frames; at each threshold th a video is flagged when any kept frame scores >= th; precision =
flagged positives / flagged videos, recall = flagged positives / positives; a flagged positive's
time-to-accident (TTA) is the accident time minus the time of its first frame >= th, averaged over
the flagged positives. Per recall level the best precision and the best mean TTA are kept (each on
its own); AP is the area under that precision-recall curve (the first level's precision back to
recall 0, then trapezoids), mTTA the mean of the TTAs over the recall levels, TTA@R80 the TTA at the
recall level nearest 0.8. Where this module differs from that code (all documented in
`field_ap_tta`): thresholds are every distinct score rather than a 0.001 grid below 1.0; TTA is in
seconds from the timeline's own times, where their code scales the relative TTA (1 - first
frame / accident frame) by the whole clip's length (on DAD, 100 frames with the accident at 90,
that reports 10/9 of the time actually left); the last recall level keeps its best TTA and
precision like every other level. A positive with no stride before its event is a positive never
detected (their code would fail on it).

False-alarm-capped figures (what a driver would live with; reported mTTA shrinks a lot at a fixed
false-alarm rate):
- `capped_by_share`: the field's view (any stride reaching th alarms a video) at the lowest
  threshold where at most `max_share` (10 %) of the negative videos alarm;
- `capped_per_hour`: the product's view: the causal alert policy `predict` applies; a false alarm
  is an alert onset (off -> on, a first stride already on counts) on a negative timeline, counted
  per hour of negative footage (strides x stride); at the lowest threshold from which on no higher
  threshold exceeds `max_per_hour` (1/h); a positive is detected when the alert is on at a stride
  before its event, its time to alert being the event minus that stride's time.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crashcast.risk.alerts import POLICIES, AlertPolicy, Hysteresis

log = logging.getLogger(__name__)

#: the columns of a dense run's timelines.csv: one row per stride of each video
TIMELINE_COLUMNS = ("clip_id", "event_s", "time_s", "risk_raw")
_EPS = 1e-9


@dataclass(frozen=True)
class DenseTimeline:
    """One video's causal risk timeline: stride times (s), the model's risk per stride (0-1, before
    any alert policy) and the event time (s) for a positive, None for a negative."""

    clip_id: str
    times_s: np.ndarray
    scores: np.ndarray
    event_s: float | None = None

    def __post_init__(self) -> None:
        t = np.asarray(self.times_s, float).reshape(-1)
        s = np.asarray(self.scores, float).reshape(-1)
        if len(t) != len(s):
            raise ValueError(f"{self.clip_id}: {len(t)} times for {len(s)} scores")
        if len(t) > 1 and np.any(np.diff(t) <= 0):
            raise ValueError(f"{self.clip_id}: stride times must increase")
        if not np.all(np.isfinite(s)):
            raise ValueError(f"{self.clip_id}: a risk is not a finite number")
        if self.event_s is not None and not math.isfinite(self.event_s):
            raise ValueError(f"{self.clip_id}: event time {self.event_s!r} is not a finite number")
        object.__setattr__(self, "times_s", t)
        object.__setattr__(self, "scores", s)

    @property
    def positive(self) -> bool:
        return self.event_s is not None

    def kept(self) -> tuple[np.ndarray, np.ndarray]:
        """(times, scores) that may alarm: a positive's strides strictly before its event (a window
        ending at the event has seen the collision), all of a negative's."""
        if self.event_s is None:
            return self.times_s, self.scores
        keep = self.times_s < self.event_s - _EPS
        return self.times_s[keep], self.scores[keep]


def _split(timelines: Sequence[DenseTimeline]) -> tuple[list[tuple[np.ndarray, np.ndarray, float]], list[np.ndarray]]:
    """Positives as (kept times, kept scores, event) and negatives' scores."""
    pos = [(*tl.kept(), float(tl.event_s)) for tl in timelines if tl.event_s is not None]
    neg = [tl.scores for tl in timelines if tl.event_s is None]
    return pos, neg


def _counts_at(sorted_values: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """How many of the (ascending) values are >= each threshold."""
    return len(sorted_values) - np.searchsorted(sorted_values, thresholds, side="left")


def _detections(pos: list[tuple[np.ndarray, np.ndarray, float]], thresholds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per threshold: positives with a kept stride >= it, and the sum of their TTAs (event minus the
    time of their first stride >= it)."""
    tp = np.zeros(len(thresholds), int)
    tta_sum = np.zeros(len(thresholds))
    for t, s, event in pos:
        if len(s) == 0:
            continue
        running_max = np.maximum.accumulate(s)
        first = np.searchsorted(running_max, thresholds, side="left")  # first stride whose running max reaches th
        hit = first < len(s)
        tp += hit
        tta_sum[hit] += event - t[first[hit]]
    return tp, tta_sum


def _thresholds(pos, neg) -> np.ndarray:
    parts = [s for _, s, _ in pos if len(s)] + [s for s in neg if len(s)]
    return np.unique(np.concatenate(parts)) if parts else np.array([])


def field_ap_tta(timelines: Sequence[DenseTimeline], recall_level: float = 0.8) -> dict:
    """Per-frame AP, mTTA and TTA@R80 the field's way (the module docstring; UString/DSTA
    `evaluation()`), on dense timelines.

    Returns `ap`; `mtta_s` (mean over the recall levels of the best mean TTA at that level);
    `tta_r80_s` (the TTA at the recall level nearest `recall_level`, ties to the lower one: what
    their code reports as TTA@R80, which can lie below 80 % recall); `tta_at_r80_s` and
    `precision_at_r80` (at the lowest recall level reaching `recall_level`, as DSTA's P_R80; NaN when
    none does); the curve (`recall`, `precision`, `tta_s` per level); counts. NaN figures when
    there is no positive; AP 0 and NaN times when no positive is ever flagged.

    Differences from their code: every distinct score is a threshold (their 0.001 grid from the
    lowest score to 0.999 gives the same operating points up to scores closer than 0.001, and never
    uses a score of 1.0 as a threshold); TTA in seconds from the timeline's times (theirs: the
    relative TTA times the whole clip's length); the highest recall level keeps its best TTA and
    precision (their code takes one arbitrary threshold's values there); a positive without a
    stride before its event counts as never detected."""
    pos, neg = _split(timelines)
    n_pos = len(pos)
    out = {"ap": float("nan"), "mtta_s": float("nan"), "tta_r80_s": float("nan"), "tta_at_r80_s": float("nan"),
           "precision_at_r80": float("nan"), "recall_level": recall_level, "positives": n_pos, "negatives": len(neg),
           "positives_without_stride": sum(len(s) == 0 for _, s, _ in pos),
           "curve": {"recall": [], "precision": [], "tta_s": []}}
    if n_pos == 0:
        return out
    th = _thresholds(pos, neg)
    tp, tta_sum = _detections(pos, th)
    maxima = np.sort([s.max() for _, s, _ in pos if len(s)] + [s.max() for s in neg if len(s)])
    flagged = _counts_at(maxima, th)
    rows = tp > 0
    if not rows.any():
        out["ap"] = 0.0
        return out
    recall = tp[rows] / n_pos
    precision = tp[rows] / flagged[rows]
    tta = tta_sum[rows] / tp[rows]
    levels = np.unique(recall)
    best_p = np.array([precision[recall == r].max() for r in levels])
    best_t = np.array([tta[recall == r].max() for r in levels])
    ap = best_p[0] * levels[0] + float(np.sum((best_p[1:] + best_p[:-1]) * np.diff(levels) / 2))
    reached = np.flatnonzero(levels >= recall_level - _EPS)
    out.update(ap=float(ap), mtta_s=float(best_t.mean()),
               tta_r80_s=float(best_t[int(np.argmin(np.abs(levels - recall_level)))]),
               curve={"recall": levels.tolist(), "precision": best_p.tolist(), "tta_s": best_t.tolist()})
    if len(reached):
        out.update(tta_at_r80_s=float(best_t[reached[0]]), precision_at_r80=float(best_p[reached[0]]))
    return out


def _at(th: float, n_pos: int, detected: int, tta_sum: float) -> dict:
    return {"threshold": None if math.isinf(th) else float(th), "recall": detected / n_pos if n_pos else float("nan"),
            "detected": int(detected), "positives": n_pos,
            "mean_time_to_alert_s": tta_sum / detected if detected else float("nan")}


def capped_by_share(timelines: Sequence[DenseTimeline], max_share: float = 0.1) -> dict:
    """Recall and mean time to alert of the field's per-frame rule (a video alarms when any stride
    reaches the threshold) at the lowest threshold where at most `max_share` of the negative videos
    alarm: a false alarm is a negative video with any stride >= the threshold. The threshold is
    reported as the score value it is reached at (any threshold above the next lower score value
    gives the same figures); None when only 'never alarm' fits (recall 0). A negative without a
    stride cannot alarm and is left out of the share (counted in `negatives_without_stride`). NaN
    figures without negatives (no rate to cap) or without positives."""
    if not 0 <= max_share <= 1:
        raise ValueError(f"max_share={max_share!r}: a share of the negatives, from 0 to 1")
    pos, neg = _split(timelines)
    neg_max = np.sort([s.max() for s in neg if len(s)])
    n_neg = len(neg_max)
    base = {"max_share": max_share, "negatives": n_neg, "negatives_without_stride": len(neg) - n_neg}
    if n_neg == 0 or not pos:
        return {**base, **_at(float("nan"), len(pos), 0, 0.0), "threshold": None, "recall": float("nan"),
                "false_alarms": 0, "false_alarm_share": float("nan")}
    th = np.r_[_thresholds(pos, neg), np.inf]
    alarmed = _counts_at(neg_max, th)
    allowed = math.floor(max_share * n_neg + _EPS)
    i = int(np.flatnonzero(alarmed <= allowed)[0])  # alarms only fall as th rises: the lowest such th
    tp, tta_sum = _detections(pos, th[i:i + 1])
    return {**base, **_at(th[i], len(pos), int(tp[0]), float(tta_sum[0])), "false_alarms": int(alarmed[i]),
            "false_alarm_share": float(alarmed[i] / n_neg)}


# ----------------------------------------------------------------------------- the alert policy, swept

#: policies whose shown risk does not depend on the threshold and whose alert is `shown >= threshold`
_SHOWN_POLICIES = tuple(cls for name, cls in POLICIES.items() if name in ("none", "median", "k-of-n", "ema", "max"))


def alert_matrix(policy: AlertPolicy, raw: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """(thresholds, strides) booleans: the alert state `policy` gives at each stride of the raw
    stream when its threshold is each of `thresholds` (an infinite threshold never alerts), exactly
    as `policy.apply` would, stride by stride (a test checks every registered policy)."""
    raw = np.asarray(raw, float)
    thresholds = np.asarray(thresholds, float)
    if len(raw) == 0:
        return np.zeros((len(thresholds), 0), bool)
    if type(policy) in _SHOWN_POLICIES:
        shown = np.array([a.shown for a in policy.apply(raw)])
        return shown[None, :] >= thresholds[:, None]
    if type(policy) is Hysteresis:
        out = np.zeros((len(thresholds), len(raw)), bool)
        on = np.zeros(len(thresholds), bool)
        for j, r in enumerate(raw):
            on = np.where(on, r >= policy.off * thresholds, r >= thresholds)
            out[:, j] = on
        return out
    rows = []  # a policy this module does not know: applied once per threshold
    for th in thresholds:
        rows.append(np.zeros(len(raw), bool) if not th <= 1 else
                    np.array([a.alert for a in dataclasses.replace(policy, threshold=float(th)).apply(raw)]))
    return np.array(rows).reshape(len(thresholds), len(raw))


def _policy_thresholds(policy: AlertPolicy, streams: Iterable[np.ndarray]) -> np.ndarray:
    """The thresholds at which the policy's alerts can change, ascending, then infinity (never):
    the distinct shown risks (hysteresis: the raw risks r and r / off), none above the highest risk
    (nothing turns on there). For a policy this module does not know, the distinct raw risks (an
    approximation: its alerts might change between them)."""
    streams = [s for s in streams if len(s)]
    if not streams:
        return np.array([np.inf])
    if type(policy) in _SHOWN_POLICIES:
        values = np.concatenate([[a.shown for a in policy.apply(s)] for s in streams])
    else:
        values = np.concatenate(streams)
        if type(policy) is Hysteresis:
            values = np.r_[values, values / policy.off]
    top = max(float(s.max()) for s in streams)
    values = np.unique(values)
    return np.r_[values[values <= top + _EPS], np.inf]


def _sweep(timelines: Sequence[DenseTimeline], policy: AlertPolicy, thresholds: np.ndarray) -> dict[str, np.ndarray]:
    """Per threshold: positives alerted before their event, the sum of their times to alert, and
    the alert onsets on the negatives."""
    detected = np.zeros(len(thresholds), int)
    tta_sum = np.zeros(len(thresholds))
    onsets = np.zeros(len(thresholds), int)
    for tl in timelines:
        t, s = tl.kept()  # a causal policy over the strides before the event is the same as over all
        a = alert_matrix(policy, s, thresholds)
        if a.shape[1] == 0:
            continue
        if tl.event_s is None:
            onsets += a[:, 0] + np.sum(a[:, 1:] & ~a[:, :-1], axis=1)
        else:
            hit = a.any(axis=1)
            first = np.argmax(a, axis=1)
            detected += hit
            tta_sum[hit] += tl.event_s - t[first[hit]]
    return {"detected": detected, "tta_sum": tta_sum, "onsets": onsets}


def _negative_hours(timelines: Sequence[DenseTimeline], stride_s: float) -> float:
    return sum(len(tl.times_s) for tl in timelines if tl.event_s is None) * stride_s / 3600


def capped_per_hour(timelines: Sequence[DenseTimeline], policy: AlertPolicy, stride_s: float,
                    max_per_hour: float = 1.0) -> dict:
    """Recall and mean time to alert under the causal alert `policy` at the lowest threshold from
    which on (it and every higher one) the false alarms stay within `max_per_hour`.

    A false alarm is an alert onset (the alert going from off to on; a first stride already on
    counts) on a negative timeline; the rate divides their count by the negatives' hours of
    footage (strides x `stride_s`). Only negatives count: a positive's early alerts are not false
    alarms here. A positive is detected when the alert is on at a stride before its event, its time
    to alert being the event minus the first such stride's time. Thresholds swept: every value at
    which the policy's alerts can change (`_policy_thresholds`); `threshold` None when only 'never
    alert' fits. With under 1/`max_per_hour` hours of negatives a single false alarm exceeds the cap.
    NaN figures without negative footage (no rate to cap) or without positives."""
    if not (stride_s > 0 and max_per_hour >= 0):
        raise ValueError(f"stride_s={stride_s!r} must be > 0 and max_per_hour={max_per_hour!r} >= 0")
    hours = _negative_hours(timelines, stride_s)
    n_pos = sum(tl.event_s is not None for tl in timelines)
    base = {"max_per_hour": max_per_hour, "alert_policy": policy.describe(), "negative_hours": hours}
    if hours == 0 or n_pos == 0:
        return {**base, **_at(float("nan"), n_pos, 0, 0.0), "threshold": None, "recall": float("nan"),
                "false_alarms": 0, "false_alarms_per_hour": float("nan")}
    th = _policy_thresholds(policy, [tl.kept()[1] for tl in timelines])
    sw = _sweep(timelines, policy, th)
    within = sw["onsets"] <= max_per_hour * hours + _EPS
    from_here = np.logical_and.accumulate(within[::-1])[::-1]  # within at this threshold and every higher one
    i = int(np.flatnonzero(from_here)[0])
    return {**base, **_at(th[i], n_pos, int(sw["detected"][i]), float(sw["tta_sum"][i])),
            "false_alarms": int(sw["onsets"][i]), "false_alarms_per_hour": float(sw["onsets"][i] / hours)}


def at_threshold(timelines: Sequence[DenseTimeline], policy: AlertPolicy, stride_s: float) -> dict:
    """The same figures as `capped_per_hour` at the policy's own threshold (what `predict` alerts at)."""
    hours = _negative_hours(timelines, stride_s)
    n_pos = sum(tl.event_s is not None for tl in timelines)
    sw = _sweep(timelines, policy, np.array([policy.threshold]))
    return {**_at(policy.threshold, n_pos, int(sw["detected"][0]), float(sw["tta_sum"][0])),
            "alert_policy": policy.describe(), "negative_hours": hours, "false_alarms": int(sw["onsets"][0]),
            "false_alarms_per_hour": float(sw["onsets"][0] / hours) if hours else float("nan")}


def dense_metrics(timelines: Sequence[DenseTimeline], policy: AlertPolicy, stride_s: float, max_share: float = 0.1,
                  max_per_hour: float = 1.0, recall_level: float = 0.8) -> dict:
    """Every dense figure of the module on these timelines: `field` (`field_ap_tta`),
    `at_false_alarm_share` (`capped_by_share`), `at_false_alarms_per_hour` (`capped_per_hour`) and
    `at_threshold` (`at_threshold`)."""
    return {"field": field_ap_tta(timelines, recall_level),
            "at_false_alarm_share": capped_by_share(timelines, max_share),
            "at_false_alarms_per_hour": capped_per_hour(timelines, policy, stride_s, max_per_hour),
            "at_threshold": at_threshold(timelines, policy, stride_s)}


# ----------------------------------------------------------------------------- files and text


def timelines_table(timelines: Sequence[DenseTimeline]) -> pd.DataFrame:
    """One row per stride (`TIMELINE_COLUMNS`; event_s empty for negatives)."""
    frames = [pd.DataFrame({"clip_id": tl.clip_id, "event_s": tl.event_s, "time_s": tl.times_s, "risk_raw": tl.scores})
              for tl in timelines]
    # a video with no stride keeps one row without a time, so that it is still counted
    frames += [pd.DataFrame({"clip_id": [tl.clip_id], "event_s": [tl.event_s], "time_s": [np.nan], "risk_raw": [np.nan]})
               for tl in timelines if len(tl.times_s) == 0]
    return pd.concat(frames, ignore_index=True)[list(TIMELINE_COLUMNS)] if frames else pd.DataFrame(columns=TIMELINE_COLUMNS)


def read_timelines(path: str | Path) -> list[DenseTimeline]:
    """The timelines of a timelines.csv (`timelines_table`), in the order of their first row."""
    # clip ids as written ("NA" or "null" is an id, not a missing value); empty cells of numbers are NaN
    df = pd.read_csv(path, dtype={"clip_id": str}, keep_default_na=False,
                     na_values={"event_s": [""], "time_s": [""], "risk_raw": [""]})
    missing = sorted(set(TIMELINE_COLUMNS) - set(df.columns))
    if missing:
        raise ValueError(f"{path}: missing column(s) {missing}")
    out = []
    for cid, g in df.groupby("clip_id", sort=False):
        g = g.dropna(subset=["time_s"]).sort_values("time_s")
        ev = df.loc[df.clip_id == cid, "event_s"].iloc[0]
        out.append(DenseTimeline(str(cid), g.time_s.to_numpy(float), g.risk_raw.to_numpy(float),
                                 None if pd.isna(ev) else float(ev)))
    return out


def write_results(run_dir: str | Path, model: str, timelines: Sequence[DenseTimeline], info: dict,
                  policy: AlertPolicy, stride_s: float, max_share: float = 0.1, max_per_hour: float = 1.0) -> dict:
    """Write the model's timelines (run/dense/<model>/timelines.csv), compute every dense figure from
    that file as written (`dense_metrics`), and record them with `info` under the model in
    run/dense_metrics.json (other models' entries kept) and run/dense.md; returns the whole file's
    content (`models`: name -> entry)."""
    from crashcast.runtime.layout import RunLayout
    from crashcast.runtime.store import atomic_write_text, read_text_bounded

    layout = RunLayout(Path(run_dir))
    folder = layout.dense_dir(model)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "timelines.csv"
    atomic_write_text(path, timelines_table(timelines).to_csv(index=False))
    written = read_timelines(path)
    entry = {**info, "stride_s": stride_s, "timelines": str(path.relative_to(layout.root)),
             "metrics": dense_metrics(written, policy, stride_s, max_share, max_per_hour)}
    results: dict = {"models": {}}
    if layout.dense_json.exists():
        try:
            old = json.loads(read_text_bounded(layout.dense_json, what="dense metrics file"))
            if isinstance(old, dict) and isinstance(old.get("models"), dict):
                results["models"] = {k: v for k, v in old["models"].items() if isinstance(v, dict)}
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable (%s); written anew with %s only", layout.dense_json, e, model)
    results["models"][model] = entry
    atomic_write_text(layout.dense_json, dumps(results))
    atomic_write_text(layout.dense_md, dense_markdown(results))
    return results


def json_safe(v: object) -> object:
    """`v` with every non-finite number as None (JSON has no NaN: an undefined figure is null)."""
    if isinstance(v, dict):
        return {k: json_safe(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [json_safe(x) for x in v]
    if isinstance(v, float | np.floating):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    return v


def dumps(results: dict) -> str:
    return json.dumps(json_safe(results), indent=2, allow_nan=False)


def _s(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{v:.2f}"


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def _th(v) -> str:
    return "never" if v is None else f"{v:.3f}"


def dense_markdown(results: dict) -> str:
    """dense.md: one row per model of the field's figures and of the false-alarm-capped ones."""
    lines = ["# Dense per-video metrics (each test video's causal risk timeline, one risk per stride)", "",
             "| model | videos (pos/neg) | stride (s) | AP | mTTA (s) | TTA@R80 (s) | TTA at recall >= 80 % (s) |",
             "|---|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        f = r["metrics"]["field"]
        lines.append(f"| {name} | {f['positives'] + f['negatives']} ({f['positives']}/{f['negatives']}) | "
                     f"{r['stride_s']:g} | {_pct(f['ap'])} | {_s(f['mtta_s'])} | {_s(f['tta_r80_s'])} | "
                     f"{_s(f['tta_at_r80_s'])} |")
    lines += ["", "## At a capped false-alarm rate", "",
              "| model | cap | threshold | recall % | mean time to alert (s) | false alarms |", "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        m = r["metrics"]
        a, h, t = m["at_false_alarm_share"], m["at_false_alarms_per_hour"], m["at_threshold"]
        lines.append(f"| {name} | <= {_pct(a['max_share'])} % of negative videos (any stride) | {_th(a['threshold'])} | "
                     f"{_pct(a['recall'])} | {_s(a['mean_time_to_alert_s'])} | {a['false_alarms']} of {a['negatives']} |")
        lines.append(f"| {name} | <= {h['max_per_hour']:g} / h of negatives ({h['alert_policy']}) | {_th(h['threshold'])} | "
                     f"{_pct(h['recall'])} | {_s(h['mean_time_to_alert_s'])} | {h['false_alarms']} in "
                     f"{h['negative_hours']:.3f} h |")
        lines.append(f"| {name} | none: predict's threshold ({t['alert_policy']}) | {_th(t['threshold'])} | "
                     f"{_pct(t['recall'])} | {_s(t['mean_time_to_alert_s'])} | {t['false_alarms']} in "
                     f"{t['negative_hours']:.3f} h ({_s(t['false_alarms_per_hour'])} / h) |")
    lines += ["", "AP in percent. mTTA and TTA@R80 as the UString/DSTA evaluation computes them (TTA@R80: at the "
              "recall level nearest 80 %); 'TTA at recall >= 80 %' at the lowest level reaching it. A false alarm: a "
              "negative video with any stride at or above the threshold (share cap), or an alert onset of the alert "
              "policy on a negative video (per-hour cap, per hour of negative footage). docs/METRICS.md defines each.",
              ""]
    return "\n".join(lines)


def report_table(results: dict) -> dict | None:
    """The report's dense table: `header`, `rows` (name, cells) and a `note` (what the columns are)."""
    rows = []
    for name, r in results["models"].items():
        m = r["metrics"]
        f, a, h, t = m["field"], m["at_false_alarm_share"], m["at_false_alarms_per_hour"], m["at_threshold"]
        rows.append({"name": name, "cells": [
            f"{f['positives'] + f['negatives']} ({f['positives']}/{f['negatives']})", f"{r['stride_s']:g}",
            _pct(f["ap"]), _s(f["mtta_s"]), _s(f["tta_r80_s"]),
            f"{_pct(a['recall'])} / {_s(a['mean_time_to_alert_s'])}", f"{_pct(h['recall'])} / {_s(h['mean_time_to_alert_s'])}",
            f"{_pct(t['recall'])} / {_s(t['mean_time_to_alert_s'])} / {_s(t['false_alarms_per_hour'])}"]})
    if not results.get("models"):
        return None
    first = next(iter(results["models"].values()))["metrics"]
    share, hour = first["at_false_alarm_share"]["max_share"], first["at_false_alarms_per_hour"]["max_per_hour"]
    return {"header": ["model", "videos (pos/neg)", "stride (s)", "AP", "mTTA (s)", "TTA@R80 (s)",
                       f"<= {_pct(share)} % negatives alarmed: recall % / time to alert (s)",
                       f"<= {hour:g} false alarm / h: recall % / time to alert (s)",
                       "predict's threshold: recall % / time to alert (s) / false alarms per h"],
            "rows": rows,
            "note": "AP, mTTA and TTA@R80 as the UString/DSTA evaluation computes them, over each test video's "
                    "strides before the event; mTTA counts no false alarm. The capped columns limit false alarms: "
                    "negative videos with any stride at the threshold, or alert onsets of the alert policy per hour "
                    "of negative footage. docs/METRICS.md defines each."}


def explain_window_video_metrics() -> str:
    """One plain-words line for `explain_results` (metrics.md's video level): why its mTTA is not the
    DAD/CCD one, and where that is."""
    return ("The video-level mTTA above is measured on the window ends only (the event minus each horizon), so it "
            "can never exceed the largest horizon and is not the per-frame mTTA DAD/CCD papers report; "
            "`crashcast dense` scores every stride of each test video and gives that one, and the figures at a "
            "capped false-alarm rate (docs/METRICS.md).")


def explain_dense(results: dict) -> str:
    """Plain-words lines on the dense figures for a newcomer (the demo's explanation)."""
    lines = ["Dense figures: each test video's risk every stride, using only the past, as `crashcast predict` gives it. "
             "mTTA is how many seconds before the collision the risk first crosses a threshold, averaged over "
             "thresholds as DAD/CCD papers report it; it counts no false alarm, so it flatters."]
    for name, r in results["models"].items():
        m = r["metrics"]
        f, h = m["field"], m["at_false_alarms_per_hour"]
        recall = h["recall"]
        known = recall is not None and math.isfinite(recall)  # null in a dense_metrics.json read back: NaN
        if h["threshold"] is None and known:
            capped = f"at most {h['max_per_hour']:g} false alarm per hour of normal driving it never alerts at all"
        elif known:
            capped = (f"allowing at most {h['max_per_hour']:g} false alarm per hour of normal driving it warns on "
                      f"{_pct(h['recall'])} % of the crashes, {_s(h['mean_time_to_alert_s'])} s ahead on average")
        else:
            capped = "no capped figure (the test videos lack negatives or positives)"
        lines.append(f"{name}: mTTA {_s(f['mtta_s'])} s; {capped}.")
    hours = max((r["metrics"]["at_false_alarms_per_hour"]["negative_hours"] or 0.0 for r in results["models"].values()),
                default=0.0)
    cap = min((r["metrics"]["at_false_alarms_per_hour"]["max_per_hour"] for r in results["models"].values()), default=0.0)
    if 0 < hours and 1 / hours > cap:  # one false alarm already breaks the cap
        span = f"{hours * 3600:.0f} s" if hours < 1 / 60 else f"{hours * 60:.1f} min"
        lines.append(f"The test split holds {span} of negative footage: one false alarm there is "
                     f"{1 / hours:.0f} per hour, so the per-hour cap allows none.")
    return "\n".join(lines)


__all__ = ["TIMELINE_COLUMNS", "DenseTimeline", "alert_matrix", "at_threshold", "capped_by_share", "capped_per_hour",
           "dense_markdown", "dense_metrics", "explain_dense", "explain_window_video_metrics", "field_ap_tta", "json_safe", "read_timelines", "report_table",
           "timelines_table", "write_results"]
