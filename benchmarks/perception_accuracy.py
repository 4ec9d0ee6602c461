"""Classic perception against the synthetic ground truth (the figures behind the tests' thresholds).

    python benchmarks/perception_accuracy.py [--n 14] [--seed 11]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.synthetic import generate
from crashcast.evaluation.perception_truth import evaluate_clip


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=14)
    ap.add_argument("--seed", type=int, default=11)
    args = ap.parse_args()
    cfg = load_config("classic")
    with tempfile.TemporaryDirectory() as tmp:
        generate(args.n, tmp, seed=args.seed, workers=2)
        reps = []
        for clip in read_csv(Path(tmp) / "annotations.csv"):
            truth = json.loads((Path(tmp) / "truth" / f"{clip.id}.json").read_text())
            reps.append(evaluate_clip(clip, truth, cfg))
    depth = np.concatenate([r.depth_rel_errors for r in reps])
    ttc = np.concatenate([r.ttc_abs_errors for r in reps if r.ttc_abs_errors] or [np.array([])])
    tracked = sum(r.windows_tracked for r in reps)
    single = sum(r.windows_single_id for r in reps)
    pos = [r.looming_last_1_5s for r in reps if r.target == 1]
    neg = [r.looming_max for r in reps if r.target == 0]
    print(f"clips: {len(reps)} (seed {args.seed})")
    print(f"vehicle depth: median relative error {np.median(depth):.3f} over {len(depth)} tracked observations")
    print(f"lead TTC, last 3 s before braking collisions: median abs error {np.median(ttc):.2f} s over {len(ttc)} window ends")
    print(f"tracking: one id per true object in {single}/{tracked} windows ({single / max(tracked, 1):.0%})")
    print(f"looming: positives' last 1.5 s above negatives' maximum in {np.mean([p > n for p in pos for n in neg]):.0%} of pairs; "
          f"{np.mean([p > max(neg) for p in pos]):.0%} of positives above every negative")


if __name__ == "__main__":
    main()
