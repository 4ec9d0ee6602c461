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


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=14)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--video", type=Path, nargs="*", default=[])
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        generate(args.n, tmp, seed=args.seed, workers=2)
        hits, false_alarms, leads, step_costs = [], [], [], []
        for clip in read_csv(Path(tmp) / "annotations.csv"):
            pred = crashcast.predict(clip.video_path)
            step_costs.append(pred.seconds / max(1, len(pred.timeline)))
            if clip.target:
                ok = pred.first_alert is not None and pred.first_alert <= clip.time_of_event_s
                hits.append(ok)
                if ok:
                    leads.append(clip.time_of_event_s - pred.first_alert)
            else:
                false_alarms.append(pred.first_alert is not None)
    print(f"synthetic (seed {args.seed}, {args.n} clips, physics model, threshold 0.5): alert before the event in "
          f"{sum(hits)}/{len(hits)} positives ({np.mean(hits):.0%}), false alerts in {sum(false_alarms)}/{len(false_alarms)} "
          f"negatives ({np.mean(false_alarms):.0%}), mean lead time {np.mean(leads) if leads else float('nan'):.2f} s")
    print(f"cost per 0.5 s step at 640x360 (decode + perception + features + model): mean {np.mean(step_costs):.3f} s, "
          f"max {np.max(step_costs):.3f} s over clips")
    for video in args.video:
        pred = crashcast.predict(video)
        print(f"{video.name}: {pred.seconds / max(1, len(pred.timeline)):.3f} s per step; first alert {pred.first_alert}")


if __name__ == "__main__":
    main()
