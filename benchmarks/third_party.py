"""Third-party crashes: AP of the physics model with the ego path only (third_party_weight 0) and with
its third-party term (the default), LightGBM without and with the third-party columns, and the
third-party term alone, on held-out seeds of the third-party mix and of the default mix. Perception: a preset (`classic` by default), and the
generator's truth (`oracle`: what the features give with perfect perception).

    python benchmarks/third_party.py [--train 24 --test 24 --workers 2 --out DIR --perception classic,oracle]
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.synthetic import generate
from crashcast.data.windows import make_windows
from crashcast.evaluation import metrics as M
from crashcast.evaluation.oracle import oracle_perception
from crashcast.extract import extract_run
from crashcast.features.build import build_window_meta
from crashcast.features.kinematics import window_objects
from crashcast.features.table import THIRD_PARTY_COLUMNS, feature_columns, feature_row
from crashcast.risk.models import create_model
from crashcast.risk.third_party import third_party_risk
from crashcast.settings import PhysicsConfig

log = logging.getLogger("third_party")
SEEDS = {"train": 3100, "test": 3200}


def clips(n: int, seed: int, mix: str, root: Path, workers: int) -> Path:
    data = root / f"data_{mix}_{seed}_{n}"
    if not (data / "annotations.csv").exists():  # a kept --out folder is reused
        generate(n, data, seed=seed, workers=workers, progress=False, mix=mix)
    return data


def table_classic(data: Path, root: Path, cfg, workers: int) -> pd.DataFrame:
    run = root / f"run_classic_{data.name}"
    extract_run(read_csv(data / "annotations.csv"), run, cfg, workers=workers)
    return pd.read_parquet(run / "features.parquet")


def table_oracle(data: Path, cfg) -> pd.DataFrame:
    rows = []
    for clip in read_csv(data / "annotations.csv"):
        truth = json.loads((data / "truth" / f"{clip.id}.json").read_text())
        perc = oracle_perception(truth, cfg.perception.frame_step)
        for w in make_windows(clip, truth["duration_s"], cfg.windows):
            objs = window_objects(perc, w, cfg.features, truth["camera"]["ego_front_m"], cfg.video.fps)
            rows.append(feature_row(build_window_meta(w, perc, cfg, [None] * 3, objs, "oracle"), cfg.features.top_k))
    return pd.DataFrame(rows)


def scores(train: pd.DataFrame, test: pd.DataFrame, physics: dict) -> dict[str, np.ndarray]:
    """`physics`: the physics model's settings (the preset's; its third_party_weight is shown)."""
    before = [c for c in feature_columns() if c not in THIRD_PARTY_COLUMNS]
    out = {"physics, ego path only": create_model("physics", {**physics, "third_party_weight": 0.0}).predict(test),
           f"physics (+ third-party x{physics['third_party_weight']:g})": create_model("physics", physics).predict(test)}
    for name, cols in (("lightgbm before", before), ("lightgbm after", feature_columns())):
        m = create_model("lightgbm")
        m.features = cols
        out[name] = m.fit(train).predict(test)
    out["third-party term alone"] = third_party_risk(test)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train", type=int, default=24)
    ap.add_argument("--test", type=int, default=24)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="keep clips and runs here (default: a temp folder)")
    ap.add_argument("--perception", default="classic,oracle", help="comma list: classic (or another preset), oracle")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as tmp:
        root = args.out or Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        t0 = time.time()
        data = {(mix, split): clips(getattr(args, split), SEEDS[split], mix, root, args.workers)
                for mix in ("third-party", "default") for split in ("train", "test")}
        print(f"rendered in {time.time() - t0:.0f} s")
        for perception in args.perception.split(","):
            cfg = load_config("classic" if perception == "oracle" else perception)
            tables = {}
            for key, d in data.items():
                tables[key] = table_oracle(d, cfg) if perception == "oracle" else table_classic(d, root, cfg, args.workers)
            print(f"\nperception: {perception}  (train seed {SEEDS['train']}, test seed {SEEDS['test']}; AP over windows, "
                  f"{args.train}/{args.test} clips per mix)")
            print(f"{'model':32s} {'third-party mix':>16s} {'default mix':>12s} {'both mixes':>11s}")
            res: dict[str, list[float]] = {}
            for mix in ("third-party", "default", "both"):
                if mix == "both":
                    tr = pd.concat([tables[("third-party", "train")], tables[("default", "train")]], ignore_index=True)
                    te = pd.concat([tables[("third-party", "test")], tables[("default", "test")]], ignore_index=True)
                else:
                    tr, te = tables[(mix, "train")], tables[(mix, "test")]
                # oracle: perception that tracks pairs, the physics model's defaults; else the preset's
                physics = PhysicsConfig().model_dump() if perception == "oracle" else cfg.physics.model_dump()
                for name, s in scores(tr, te, physics).items():
                    res.setdefault(name, []).append(M.average_precision(te.label.to_numpy(), s))
            for name, aps in res.items():
                print(f"{name:32s} {aps[0]:16.3f} {aps[1]:12.3f} {aps[2]:11.3f}")
        print(f"\ntotal {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
