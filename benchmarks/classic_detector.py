"""Precision and recall of the classic (weight-free) detector on hand-labelled frames of real clips.

Perception runs over each whole clip as `extract` runs it (the `classic` preset: 640 px long side,
every 3rd frame at 30 fps, the road-motion context); at the 30 labelled frames of
tests/data/real_labels.json the boxes are matched class-agnostically to the labelled vehicles,
people and cyclists within about 30 m (see `crashcast.evaluation.detection_labels`). Prints, per
clip and overall, precision and recall at IoU 0.3 and 0.5 for the detector's own boxes and for the
tracked boxes (what a run records), and the detector's ms per perceived frame.

    python benchmarks/classic_detector.py [--videos ../shared/data/real] [--set key=value ...]
        [--draw OUT_DIR]   # also write each labelled frame with labels (green) and detections (red)
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from crashcast.config import load_config
from crashcast.evaluation.detection_labels import load_labels, run_labels, score

ROOT = Path(__file__).resolve().parents[1]


def draw(runs, videos: Path, out: Path, cfg) -> None:
    import cv2

    from crashcast.data.video import decode

    out.mkdir(parents=True, exist_ok=True)
    for run in runs:
        frames = decode(videos / run.clip, 0.0, None, cfg.video.fps, cfg.video.long_side, step=cfg.perception.frame_step)
        for fd in run.frames:
            lf = fd.frame
            img = cv2.cvtColor(frames.frames[int(np.argmin(np.abs(frames.times_s - lf.time_s)))], cv2.COLOR_RGB2BGR)
            img = cv2.resize(img, lf.frame_size)
            for box, counted in zip(lf.boxes, lf.counted, strict=True):
                cv2.rectangle(img, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (0, 200, 0) if counted else (0, 120, 0), 1)
            for box, name in zip(fd.tracked.xyxy, fd.tracked.class_name, strict=True):
                cv2.rectangle(img, tuple(int(v) for v in box[:2]), tuple(int(v) for v in box[2:]), (0, 0, 255), 2)
                cv2.putText(img, str(name), (int(box[0]), int(box[1]) - 2), 0, 0.4, (0, 0, 255), 1)
            cv2.imwrite(str(out / f"{Path(run.clip).stem}_{lf.time_s:.1f}.png"), img)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--videos", type=Path, default=ROOT.parent / "shared" / "data" / "real")
    ap.add_argument("--labels", type=Path, default=ROOT / "tests" / "data" / "real_labels.json")
    ap.add_argument("--preset", default="classic")
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="config override, e.g. perception.frame_step=2")
    ap.add_argument("--draw", type=Path, help="write annotated labelled frames here")
    args = ap.parse_args()
    cfg = load_config(args.preset, args.overrides)
    labels = load_labels(args.labels)
    runs = run_labels(args.videos, labels, cfg)
    n_counted = sum(int(lf.counted.sum()) for lf in labels)
    print(f"{len(labels)} labelled frames of {len(runs)} clips, {n_counted} counted road users")
    for which in ("detected", "tracked"):
        s3, s5 = score(runs, 0.3, which), score(runs, 0.5, which)
        print(f"\n{which}: precision / recall (TP FP FN) at IoU 0.3 | at IoU 0.5")
        for clip in s3:
            a, b = s3[clip], s5[clip]
            print(f"  {clip:32s} P {a.precision:.2f} R {a.recall:.2f} ({a.tp:2d} {a.fp:2d} {a.fn:2d}) | "
                  f"P {b.precision:.2f} R {b.recall:.2f} ({b.tp:2d} {b.fp:2d} {b.fn:2d})")
    frames = sum(r.frames_processed for r in runs)
    detect = sum(r.stage_seconds.get("detect", 0.0) for r in runs)
    total = sum(sum(v for k, v in r.stage_seconds.items() if k != "wall") for r in runs)
    print(f"\n{frames} perceived frames: detect {1000 * detect / frames:.1f} ms/frame, all stages {1000 * total / frames:.1f} ms/frame")
    if args.draw:
        draw(runs, args.videos, args.draw, cfg)


if __name__ == "__main__":
    main()
