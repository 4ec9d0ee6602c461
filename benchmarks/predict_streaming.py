"""Streaming prediction: cost per 0.5 s step (target: < 0.5 s, real time), whether that cost stays
flat over a long video (target: the last minute within 1.2x of the first), and the physics model's
alerts on held-out synthetic clips (alert rate before the event, false alert rate, mean lead time).

The long video loops one synthetic clip's frames to `--minutes` minutes (an MP4 in a temp folder);
per-stride wall times come from `Prediction.stride_seconds`.

    python benchmarks/predict_streaming.py [--n 14 --seed 11] [--minutes 10] [--video path.mp4 ...]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

import crashcast
from crashcast.data.annotations import read_csv
from crashcast.data.synthetic import generate
from crashcast.data.video import VideoWriter, decode
from crashcast.evaluation.metrics import alert_stats

TARGET_RATIO = 1.2


def looped_video(out_dir: Path, minutes: float, seed: int) -> Path:
    """A `minutes`-long MP4 made by repeating one synthetic clip's frames (at its own size)."""
    generate(1, out_dir / "loop", seed=seed)
    clip = read_csv(out_dir / "loop" / "annotations.csv")[0]
    frames = decode(clip.video_path, long_side=None)
    n = round(minutes * 60 * frames.fps)
    path = out_dir / f"loop_{minutes:g}min.mp4"
    with VideoWriter(path, frames.fps, frames.size) as writer:
        for i in range(n):
            writer.write(frames.frames[i % len(frames.frames)])
    return path


def cost_drift(times_s: np.ndarray, stride_s: np.ndarray, span_s: float = 60.0) -> tuple[float, float]:
    """Mean seconds per stride over the first and over the last `span_s` seconds of video. The first
    stride also pays for opening the video and starting perception (~10x a stride): it is left out,
    or it would hide up to ~8 % of drift."""
    times_s, stride_s = times_s[1:], stride_s[1:]
    first = stride_s[times_s <= times_s[0] + span_s]
    last = stride_s[times_s > times_s[-1] - span_s]
    return float(first.mean()), float(last.mean())


def report_long(minutes: float, seed: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        video = looped_video(Path(tmp), minutes, seed)
        pred = crashcast.predict(video)
    times = pred.timeline.time_s.to_numpy()
    strides = np.array(pred.stride_seconds)
    first, last = cost_drift(times, strides)
    ratio = last / first
    verdict = "within" if ratio <= TARGET_RATIO else "OVER"
    print(f"{minutes:g}-minute looped synthetic video ({len(strides)} strides, {pred.seconds:.0f} s in all): "
          f"{first:.3f} s per stride over the first minute, {last:.3f} s over the last; ratio {ratio:.2f} "
          f"({verdict} the {TARGET_RATIO}x target)")
    print(f"  per stride: median {np.median(strides):.3f} s, p95 {np.percentile(strides, 95):.3f} s, max {strides.max():.3f} s")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=14)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--minutes", type=float, default=10.0, help="length of the looped video (0: skip it)")
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
    if args.minutes > 0:
        report_long(args.minutes, args.seed)
    for video in args.video:
        pred = crashcast.predict(video)
        print(f"{video.name}: {pred.seconds / max(1, len(pred.timeline)):.3f} s per step; first alert {pred.first_alert}")


if __name__ == "__main__":
    main()
