"""Streaming prediction: cost per 0.5 s step (target: < 0.5 s, real time) and the physics model's
alerts on held-out synthetic clips (alert rate before the event, false alert rate, mean lead time).

    python benchmarks/predict_streaming.py [--n 14 --seed 11] [--video path.mp4 ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import crashcast
from crashcast.data.annotations import read_csv
from crashcast.data.synthetic import generate
from crashcast.evaluation.metrics import alert_stats


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=14)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--video", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(args.n, tmp, seed=args.seed, workers=2)
        events, alerts, step_costs = [], [], []
        for clip in read_csv(Path(tmp) / "annotations.csv"):
            pred = crashcast.predict(clip.video_path)
            step_costs.append(pred.seconds / max(1, len(pred.timeline)))
            events.append(clip.time_of_event_s if clip.target else None)
            alerts.append(pred.first_alert)
    s = alert_stats(events, alerts)
    print(f"synthetic (seed {args.seed}, {args.n} clips, physics model, threshold 0.5): alert before the event in "
          f"{s['alerted']}/{s['positives']} positives ({s['alert_rate']:.0%}), false alerts in {s['false_alerts']}/"
          f"{s['negatives']} negatives ({s['false_alert_rate']:.0%}), mean lead time {s['mean_lead_s']:.2f} s")
    print(f"cost per 0.5 s step at 640x360 (decode + perception + features + model): mean {np.mean(step_costs):.3f} s, "
          f"max {np.max(step_costs):.3f} s over clips")
    for video in args.video:
        pred = crashcast.predict(video)
        print(f"{video.name}: {pred.seconds / max(1, len(pred.timeline)):.3f} s per step; first alert {pred.first_alert}")


if __name__ == "__main__":
    main()
