"""Alert policies compared: how early each one alerts before the event, how many positives it misses,
and how many false alerts it raises per hour of normal driving (crashcast.risk.alerts; the table is
docs/ALERTS.md).

Every clip is predicted once with the policy `none` and its raw risk stream (`risk_raw`, one value
per stride) is cached; every policy of the grid is then applied to the cached streams offline, stride
by stride, exactly as `predict` applies it live (a policy is causal, so this is the same answer).

    crashcast synth --n 40 --seed 7 --out synth-alerts
    python benchmarks/alert_policies.py --data synthetic=synth-alerts --data real=../shared/data/real \\
        [--model physics] [--model crashcast-demo/run/models/lightgbm] [--cache alert-cache] [--json out.json]

A data folder is any folder with an annotations.csv in the Nexar layout (id,time_of_event,
time_of_alert,target) and the videos beside it (`crashcast synth` writes one; its event times are
the generator's). How it counts, per data set and model:
- positives: clips with target 1 and an event time (a positive without one is listed, not scored);
  missed: no alert starts at a stride before the event (time_s < event);
  time to alert: event - the first stride with the alert on before the event (median over the
  positives alerted in time);
- false alerts per hour on negatives: alert episodes (off -> on) on the negatives, over their
  predicted hours (strides x stride);
- false alerts per hour early on positives: alert episodes starting more than `--early-s` (2 s)
  before the event, over the positives' predicted time before event - early_s. An alert that early
  is counted here AND as the positive's time to alert: both columns are shown, so neither hides it.
Perception: the `--config` preset (default classic: the default install's path with no weights).
"""

from __future__ import annotations

import argparse
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.perception.bundle import Backends
from crashcast.prediction import predict, resolve_model
from crashcast.risk.alerts import AlertPolicy, create_policy, onsets

log = logging.getLogger("alert_policies")

#: the grid: each policy with a few settings around its default
GRID: list[tuple[str, dict]] = [
    ("none", {}),
    *[("median", {"window": w}) for w in (2, 3, 5)],
    *[("k-of-n", {"k": k, "n": n}) for k, n in ((2, 3), (2, 4), (3, 5))],
    *[("hysteresis", {"off": f}) for f in (0.4, 0.6, 0.8)],
    *[("ema", {"alpha": a}) for a in (0.3, 0.5, 0.7)],
    *[("max", {"window": w}) for w in (2, 3, 5, 8)],
]


@dataclass
class Stream:
    """One clip's cached raw risk stream and its label."""

    clip_id: str
    target: int
    event_s: float | None
    times_s: np.ndarray
    raw: np.ndarray


def raw_streams(folder: Path, model: str, cfg_name: str, cache: Path, stride_s: float) -> list[Stream]:
    """Each clip's raw risk per stride, from the cache or predicted once (policy `none`)."""
    cfg = load_config(cfg_name)
    risk_model = resolve_model(model, cfg)
    tag = f"{Path(model).name}-{cfg.name}-{cfg.extraction_hash()}-s{stride_s:g}"
    where = cache / folder.resolve().name / tag
    where.mkdir(parents=True, exist_ok=True)
    backends = None
    out = []
    for clip in read_csv(folder / "annotations.csv", missing_event="end"):
        path = where / f"{clip.id}.csv"
        if not path.exists():
            if backends is None:
                backends = Backends.build(cfg.perception, cfg.runtime)
            pred = predict(clip.video_path, risk_model, cfg, stride_s, 0.5, backends=backends, alert_policy="none")
            pred.timeline[["time_s", "risk_raw"]].to_csv(path, index=False)
            log.info("%s: %d strides predicted (%.1f s)", clip.id, len(pred.timeline), pred.seconds)
        table = pd.read_csv(path)
        event = clip.time_of_event_s
        out.append(Stream(clip.id, int(clip.target), event, table.time_s.to_numpy(), table.risk_raw.to_numpy()))
    return out


def score(policy: AlertPolicy, streams: list[Stream], stride_s: float, early_s: float) -> dict:
    """The counts of the module docstring for one policy over one data set's streams."""
    tta, missed, n_pos, neg_alerts, neg_s, early_alerts, early_span_s = [], 0, 0, 0, 0.0, 0, 0.0
    n_neg, neg_clips_alerted, neg_on = 0, 0, 0
    for s in streams:
        alert = [a.alert for a in policy.apply(s.raw)]
        starts = onsets(s.times_s, alert)
        if s.target == 0:
            n_neg += 1
            neg_clips_alerted += bool(starts)
            neg_alerts += len(starts)
            neg_on += sum(alert)
            neg_s += len(s.times_s) * stride_s
        elif s.event_s is not None:
            n_pos += 1
            before = [t for t, a in zip(s.times_s, alert, strict=True) if a and t < s.event_s]
            if before:
                tta.append(s.event_s - before[0])
            else:
                missed += 1
            cut = s.event_s - early_s
            early_alerts += sum(t < cut for t in starts)
            early_span_s += max(0.0, min(cut, float(s.times_s[-1]))) if len(s.times_s) else 0.0
    return {"policy": policy.name, "settings": _settings(policy), "positives": n_pos, "missed": missed,
            "median_tta_s": float(np.median(tta)) if tta else float("nan"),
            "negatives": n_neg, "negatives_alerted": neg_clips_alerted, "false_alerts_neg": neg_alerts,
            "neg_alert_on_frac": neg_on * stride_s / neg_s if neg_s else float("nan"), "neg_hours": neg_s / 3600, "fa_per_h_neg": per_hour(neg_alerts, neg_s),
            "early_alerts_pos": early_alerts, "fa_per_h_early": per_hour(early_alerts, early_span_s)}


def per_hour(count: int, seconds: float) -> float:
    return count / (seconds / 3600) if seconds > 0 else float("nan")


def _settings(policy: AlertPolicy) -> str:
    s = {k: v for k, v in policy.settings().items() if k not in ("policy", "threshold")}
    return " ".join(f"{k}={v:g}" for k, v in s.items()) or "-"


def markdown(rows: list[dict]) -> str:
    head = ("| data | model | policy | settings | missed / positives | median time to alert (s) | "
            "false alerts / h, negatives (count) | negatives alerted | alert on, negatives (% of time) | "
            "false alerts / h, > early_s before the event (count) |")
    lines = [head, "|" + "---|" * 10]
    for r in rows:
        lines.append(f"| {r['data']} | {r['model']} | {r['policy']} | {r['settings']} | {r['missed']} / {r['positives']} | "
                     f"{r['median_tta_s']:.2f} | {r['fa_per_h_neg']:.0f} ({r['false_alerts_neg']}) | "
                     f"{r['negatives_alerted']} / {r['negatives']} | {100 * r['neg_alert_on_frac']:.1f} | "
                     f"{r['fa_per_h_early']:.0f} ({r['early_alerts_pos']}) |")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", action="append", required=True, metavar="NAME=FOLDER",
                    help="a data set: a folder with annotations.csv and its videos (repeatable)")
    ap.add_argument("--model", action="append", help="physics (default), ttc, or a saved model folder (repeatable)")
    ap.add_argument("--config", default="classic", help="perception preset (default classic)")
    ap.add_argument("--cache", type=Path, default=Path("alert-cache"), help="where raw risk streams are cached")
    ap.add_argument("--stride", type=float, default=0.5)
    ap.add_argument("--threshold", type=float, default=0.5)
    ap.add_argument("--early-s", type=float, default=2.0, help="alerts starting this long before the event count as false")
    ap.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    rows = []
    for spec in args.data:
        name, _, folder = spec.partition("=")
        for model in args.model or ["physics"]:
            streams = raw_streams(Path(folder), model, args.config, args.cache, args.stride)
            unscored = [s.clip_id for s in streams if s.target == 1 and s.event_s is None]
            if unscored:
                log.info("%s: positives without an event time, not scored: %s", name, ", ".join(unscored))
            for policy_name, params in GRID:
                policy = create_policy(policy_name, args.threshold, **params)
                rows.append({"data": name, "model": Path(model).name,
                             **score(policy, streams, args.stride, args.early_s)})
    print(markdown(rows))
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
