"""LightGBM (and the training-free rules) on classic features, trained and tested on synthetic clips
of different seeds: the held-out AP the evaluation issue asks for.

    python benchmarks/lightgbm_synthetic.py [--train 200 --test 200 --workers 2 --out DIR]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.synthetic import generate
from crashcast.evaluation import metrics as M
from crashcast.extract import extract_run
from crashcast.risk.models import create_model


def build(n: int, seed: int, root: Path, workers: int, cfg) -> pd.DataFrame:
    data, run = root / f"data_{seed}", root / f"run_{seed}"
    if not (data / "annotations.csv").exists():
        generate(n, data, seed=seed, workers=workers, progress=True)
    extract_run(read_csv(data / "annotations.csv"), run, cfg, workers=workers)
    return pd.read_parquet(run / "features.parquet")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep clips and runs here (default: a temp folder)")
    args = ap.parse_args()
    cfg = load_config("classic")
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        t0 = time.time()
        train = build(args.train, 1000, root, args.workers, cfg)
        test = build(args.test, 2000, root, args.workers, cfg)
        print(f"built {len(train)} train / {len(test)} test windows in {time.time() - t0:.0f} s")
        for kind in ("ttc", "physics", "lightgbm", "xgboost", "mlp"):
            model = create_model(kind)
            if model.trainable:
                model.fit(train)
            s = model.predict(test)
            y = test.label.to_numpy()
            lo, hi = M.bootstrap_ci(test.clip_id.to_numpy(), lambda idx, s=s, y=y: M.average_precision(y[idx], s[idx]), n=500)
            per_phase = {ph: M.average_precision(y[test.phase == ph], s[(test.phase == ph).to_numpy()]) for ph in ("max", "mid", "mini")}
            print(f"{kind:9s} AP {M.average_precision(y, s):.3f} [95% CI {lo:.3f}, {hi:.3f}]  AUC {M.roc_auc(y, s):.3f}  "
                  f"F1@0.5 {M.precision_recall_f1(y, s)[2]:.3f}  per phase " + " ".join(f"{k} {v:.3f}" for k, v in per_phase.items()))
        print(f"test: {test.clip_id.nunique()} clips (seed 2000), train: {train.clip_id.nunique()} clips (seed 1000); "
              f"positives {int(np.sum(test.label))}/{len(test)} windows")


if __name__ == "__main__":
    main()
