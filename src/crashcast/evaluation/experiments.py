"""The experiments runner behind `crashcast evaluate`: split by video, train, calibrate on the
validation split, score the test split, and write metrics.json, metrics.md (the paper's Table III
layout, ours beside the paper's) and predictions/<model>.csv.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd

from crashcast.config import CrashcastConfig
from crashcast.errors import CrashcastError
from crashcast.evaluation import metrics as M
from crashcast.evaluation.splits import train_val_test
from crashcast.risk.calibration import Calibrator
from crashcast.risk.models import create_model
from crashcast.runtime.store import atomic_write_text

log = logging.getLogger(__name__)

#: PAPER.md §6 (Table III, threshold 0.5), in percent.
PAPER_TABLE_III = {
    "paper: Baseline SFT": {"precision": 92.86, "recall": 43.33, "f1": 59.09, "mae": 31.45, "brier": 30.02, "ece": 29.72},
    "paper: Enhanced FT": {"precision": 94.05, "recall": 46.34, "f1": 64.41, "mae": 29.98, "brier": 28.22, "ece": 27.21},
}
TABLE_METRICS = ("precision", "recall", "f1", "mae", "brier", "ece", "ap", "auc")
CI_METRICS = ("precision", "recall", "f1", "brier", "ece", "ap", "auc")


def load_features(run_dir: Path) -> pd.DataFrame:
    path = Path(run_dir) / "features.parquet"
    if not path.exists():
        raise CrashcastError(f"{path}: not found; run `crashcast extract` first")
    df = pd.read_parquet(path)
    if df.empty:
        raise CrashcastError(f"{path}: no windows (did every clip fail? see errors.jsonl)")
    return df.reset_index(drop=True)


def _window_metrics(df: pd.DataFrame, score: np.ndarray, cfg: CrashcastConfig) -> tuple[dict, dict]:
    ev = cfg.evaluation
    y, tgt = df.label.to_numpy(int), df.soft_target.to_numpy(float)
    point = M.paper_metrics(y, score, tgt, ev.threshold, ev.ece_bins)
    groups = df.clip_id.to_numpy()

    def metric(name):
        def f(idx):
            m = M.paper_metrics(y[idx], score[idx], tgt[idx], ev.threshold, ev.ece_bins)
            return m[name]

        return f

    ci = {name: M.bootstrap_ci(groups, metric(name), n=ev.bootstrap, seed=ev.seed) for name in CI_METRICS}
    return point, ci


def _video_metrics(df: pd.DataFrame, score: np.ndarray) -> dict:
    """Video-level AP/mTTA/TTA@R80 on each clip's timeline (its 'max' windows at every horizon),
    and the Nexar mAP when horizons 0.5/1.0/1.5 are present."""
    d = df.assign(score=score)
    d = d[d.phase == "max"]
    vids = []
    for _, g in d.groupby("clip_id"):
        g = g.sort_values("end_s")
        event = float((g.end_s + g.horizon_s).max()) if g.label.iloc[0] else None
        vids.append(M.VideoScores(g.end_s.to_numpy(), g.score.to_numpy(), int(g.label.iloc[0]), event))
    out = M.video_ap_tta(vids)
    by_h = {float(h): (g.label.to_numpy(), g.score.to_numpy()) for h, g in d.groupby("horizon_s")}
    if all(h in by_h for h in (0.5, 1.0, 1.5)):
        out["nexar_map"] = M.nexar_map(by_h)
    return out


def run_experiments(run_dir: Path, model_names: list[str], cfg: CrashcastConfig, calibration: str = "platt") -> dict:
    run_dir = Path(run_dir)
    df = load_features(run_dir)
    ev = cfg.evaluation
    split = train_val_test(df, ev.test_fraction, ev.val_fraction, ev.seed)
    train, val, test = df.iloc[split.train], df.iloc[split.val], df.iloc[split.test]
    if test.label.nunique() < 2:
        raise CrashcastError(f"{run_dir}: the test split has only one class ({len(test)} windows); use more clips")
    results: dict = {
        "split": {"train_clips": train.clip_id.nunique(), "val_clips": val.clip_id.nunique(), "test_clips": test.clip_id.nunique(),
                  "train_windows": len(train), "val_windows": len(val), "test_windows": len(test), "seed": ev.seed,
                  "test_clip_ids": sorted(test.clip_id.unique().tolist())},
        "threshold": ev.threshold, "calibration": calibration, "models": {},
    }
    (run_dir / "predictions").mkdir(exist_ok=True)
    for name in model_names:
        model = create_model(name, cfg.physics.model_dump() if name in ("ttc", "physics") else None)
        if model.trainable:
            if train.label.nunique() < 2:
                raise CrashcastError(f"{run_dir}: the training split has one class only; use more clips")
            model.fit(train)
        raw_test = model.raw_scores(test)
        if len(val) and val.label.nunique() == 2:
            model.calibration = Calibrator.fit(calibration, model.raw_scores(val), val.label.to_numpy())
        score = np.clip(model.calibration(raw_test), 0, 1)
        point, ci = _window_metrics(test, score, cfg)
        before, _ = _window_metrics(test, raw_test, cfg) if model.calibration.method != "none" else (point, None)
        video = _video_metrics(test, score)
        entry = {"window": point, "ci95": ci, "before_calibration": {k: before[k] for k in ("brier", "ece", "ap", "auc")},
                 "video": video, "calibration": model.calibration.to_dict()}
        results["models"][name] = entry
        model.save(run_dir / "models" / name, {"metrics": point, "trained_on_clips": int(train.clip_id.nunique()),
                                                "config_hash": cfg.hash()})
        reasons = model.explain(test)
        pred = test[["window_id", "clip_id", "phase", "horizon_s", "end_s", "label", "soft_target"]].assign(
            score=np.round(score, 6), score_raw=np.round(raw_test, 6), rationale=reasons)
        atomic_write_text(run_dir / "predictions" / f"{name}.csv", pred.to_csv(index=False))
        log.info("%s: AP %.3f AUC %.3f F1 %.3f", name, point["ap"], point["auc"], point["f1"])
    atomic_write_text(run_dir / "metrics.json", json.dumps(results, indent=2, default=_json_default))
    atomic_write_text(run_dir / "metrics.md", metrics_markdown(results))
    return results


def _json_default(v):
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(type(v))


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def metrics_markdown(results: dict) -> str:
    """Table III layout: every metric in percent with its bootstrap 95 % interval, paper rows below."""
    s = results["split"]
    lines = [
        f"# Window-level results (test split: {s['test_clips']} clips, {s['test_windows']} windows; threshold {results['threshold']}; "
        f"calibration: {results['calibration']})",
        "",
        "| model | " + " | ".join(m.upper() if m in ("ap", "auc", "ece", "mae", "f1") else m.capitalize() for m in TABLE_METRICS) + " |",
        "|---" * (len(TABLE_METRICS) + 1) + "|",
    ]
    for name, r in results["models"].items():
        cells = []
        for m in TABLE_METRICS:
            v = r["window"][m]
            lo_hi = r["ci95"].get(m)
            cells.append(_pct(v) + (f" [{_pct(lo_hi[0])}, {_pct(lo_hi[1])}]" if lo_hi else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    for name, r in PAPER_TABLE_III.items():
        lines.append(f"| {name} | " + " | ".join(f"{r[m]:.2f}" if m in r else "n/a" for m in TABLE_METRICS) + " |")
    lines += ["", "All values in percent; [95 % bootstrap interval over test videos]. Paper rows: PAPER.md §6 (their data, not ours).", ""]
    lines += ["## Video level (each clip's 'max' windows as its timeline)", "", "| model | video AP | mTTA (s) | TTA@R80 (s) | Nexar mAP | ECE before → after calibration |", "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        v = r["video"]
        nexar = f"{v['nexar_map']:.3f}" if "nexar_map" in v else "n/a (needs horizons 0.5,1,1.5)"
        lines.append(f"| {name} | {v['video_ap']:.3f} | {v['mtta_s']:.2f} | {v['tta_r80_s']:.2f} | {nexar} | "
                     f"{_pct(r['before_calibration']['ece'])} → {_pct(r['window']['ece'])} |")
    return "\n".join(lines) + "\n"
