"""The experiments runner behind `crashcast evaluate`, under one of two protocols:

- `split` (the default): split by video into train/val/test, train on train, calibrate on val,
  score the test split only;
- `cv` (k folds): grouped, stratified k-fold by video; in each fold the model is trained on part
  of the other folds' clips, calibrated on the rest of them (by video) and scores the fold's
  clips, so every clip is scored exactly once by a model that never saw it. Metrics are computed
  on the pooled out-of-fold predictions of all clips; the saved model is then refit on all clips.

Writes metrics.json, metrics.md (the paper's Table III layout, ours beside the paper's),
predictions/<model>.csv and models/<model>/; `explain_results` says in plain words what the
headline numbers mean.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from crashcast.config import CrashcastConfig
from crashcast.data.domain import training_domain
from crashcast.data.splits import Split, cv_folds
from crashcast.errors import ConfigError, CrashcastError, ModelError
from crashcast.evaluation import metrics as M
from crashcast.evaluation.dense import explain_window_video_metrics, json_safe
from crashcast.risk.base import RiskModel
from crashcast.risk.calibration import Calibrator
from crashcast.risk.models import MODELS, create_model, model_class
from crashcast.risk.windows import META_COLUMNS, WindowSet, load_features
from crashcast.runs import run_split
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import atomic_write_text

log = logging.getLogger(__name__)

PAPER_CITATION = ('W. Zhu, "End-to-End Vision-Language Fine-Tuning: Prompt-Based Early Collision Risk Assessment '
                  'on Dashcam Videos", Table III')
#: The paper's Table III (threshold 0.5), in percent: PAPER_CITATION.
PAPER_TABLE_III = {
    "paper: Baseline SFT": {"precision": 92.86, "recall": 43.33, "f1": 59.09, "mae": 31.45, "brier": 30.02, "ece": 29.72},
    "paper: Enhanced FT": {"precision": 94.05, "recall": 46.34, "f1": 64.41, "mae": 29.98, "brier": 28.22, "ece": 27.21},
}
TABLE_METRICS = ("precision", "recall", "f1", "mae", "brier", "ece", "ap", "auc")
CI_METRICS = ("precision", "recall", "f1", "brier", "ece", "ap", "auc")
RANK_METRICS = ("ap", "auc")  # depend only on how the scores order the windows
CALIBRATIONS = ("none", "platt", "isotonic")
PAPER_THRESHOLD = 0.5  # Table III's
__all__ = ["META_COLUMNS", "load_features", "run_experiments"]


# ----------------------------------------------------------------------------- checks and input


def check_request(model_names: list[str], calibration: str, folds: int | None = None) -> list[str]:
    """Validate what was asked before any work is done: known model names (duplicates dropped,
    order kept), a known calibration method and a usable number of folds."""
    names = list(dict.fromkeys(n.strip() for n in model_names if n and n.strip()))
    if not names:
        raise ModelError(f"no model to evaluate; available: {', '.join(MODELS)}")
    unknown = [n for n in names if n not in MODELS]
    if unknown:
        raise ModelError(f"unknown model{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))}; "
                         f"available: {', '.join(MODELS)}")
    if calibration not in CALIBRATIONS:
        raise ConfigError(f"unknown calibration {calibration!r}; choose {', '.join(CALIBRATIONS)}")
    if folds is not None and (isinstance(folds, bool) or not isinstance(folds, (int, np.integer)) or folds < 2):
        raise ConfigError(f"folds must be an integer of at least 2 (or none for the single split); got {folds!r}")
    fine_tuned = [n for n in names if n.startswith("vlm-") and MODELS[n].trainable]
    if folds is not None and fine_tuned:
        raise ModelError(f"{', '.join(fine_tuned)} under {folds}-fold cross-validation would fine-tune the VLM {folds + 1} "
                         "times; evaluate it on the split (drop --folds), or cross-validate the other models alone")
    return names


def _needed_columns(models: dict[str, RiskModel]) -> list[str]:
    """The feature-table columns an evaluation of these models reads."""
    cols = list(META_COLUMNS)
    for model in models.values():
        cols += model.columns()
    return list(dict.fromkeys(cols))


# ----------------------------------------------------------------------------- metrics


def _window_metrics(df: pd.DataFrame, score: np.ndarray, cfg: CrashcastConfig, rank_score: np.ndarray | None = None,
                    intervals: bool = True) -> tuple[dict, dict]:
    """The paper's metrics plus AP/AUC on these windows, with bootstrap 95 % intervals over videos.
    With `rank_score`, the ranking metrics (AP, AUC) rank it instead of `score`."""
    ev = cfg.evaluation
    y, tgt = df.label.to_numpy(int), df.soft_target.to_numpy(float)

    def metrics_of(idx: np.ndarray | slice) -> dict:
        m = M.paper_metrics(y[idx], score[idx], tgt[idx], ev.threshold, ev.ece_bins)
        if rank_score is not None:
            m.update(ap=M.average_precision(y[idx], rank_score[idx]), auc=M.roc_auc(y[idx], rank_score[idx]))
        return m

    point = metrics_of(slice(None))
    if not intervals:
        return point, {}
    return point, M.bootstrap_cis(df.clip_id.to_numpy(), lambda idx: {m: metrics_of(idx)[m] for m in CI_METRICS},
                                  ev.bootstrap, ev.seed)


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


# ----------------------------------------------------------------------------- protocol


def paper_scores(scored: ModelScores) -> tuple[np.ndarray, int, str]:
    """Each scored window's score as the paper reads it (docs/PAPER_PROTOCOL.md), the count of
    unreadable answers, and what the score is: a VLM's `written` number (an answer without one reads
    0.0, no collision claimed, and is counted), any other model's raw score, both uncalibrated."""
    if "written" in scored.columns:
        written = np.array([np.nan if v is None or v == "" else float(v) for v in scored.columns["written"]], float)
        failures = int(np.isnan(written).sum())
        return np.nan_to_num(written, nan=0.0), failures, "the number the model wrote (unreadable: 0.0)"
    return np.clip(scored.raw, 0.0, 1.0), 0, "the model's raw score"


def _paper_protocol(test: pd.DataFrame, scored: ModelScores, cfg: CrashcastConfig) -> dict:
    """Table III under the paper's protocol: `paper_scores`, no calibration, threshold 0.5, every
    scored window; MAE against the soft target the answer was trained to write."""
    score, failures, what = paper_scores(scored)
    metrics = M.paper_metrics(test.label.to_numpy(int), score, test.soft_target.to_numpy(float), PAPER_THRESHOLD,
                              cfg.evaluation.ece_bins)
    return {"window": metrics, "parse_failures": failures, "score": what, "threshold": PAPER_THRESHOLD,
            "calibration": "none"}


def _part_sizes(df: pd.DataFrame, part: Split) -> dict:
    sizes = {}
    for key, idx in (("train", part.train), ("val", part.val), ("test", part.test)):
        sizes[f"{key}_clips"] = int(df.clip_id.iloc[idx].nunique())
        sizes[f"{key}_windows"] = len(idx)
    return sizes


def _protocol(df: pd.DataFrame, parts: list[Split], folds: int | None, seed: int) -> dict:
    """What metrics.json says about the protocol: kind, folds, clips and windows in all and scored."""
    scored = np.concatenate([p.test for p in parts])
    y = df.label.to_numpy(int)[scored]
    return {"kind": "split" if folds is None else "cv", "folds": folds, "seed": seed,
            "clips": int(df.clip_id.nunique()), "windows": len(df),
            "scored_clips": int(df.clip_id.iloc[scored].nunique()), "scored_windows": len(scored),
            "scored_positive_windows": int(y.sum()), "positive_rate": float(y.mean())}


def _split_summary(df: pd.DataFrame, parts: list[Split], seed: int) -> dict:
    """The `split` block: the split's sizes, or under CV each part's mean size per fold with every
    clip counted as a test clip (each was scored once), so readers of the split keep working."""
    sizes = [_part_sizes(df, p) for p in parts]
    out = {k: int(round(np.mean([s[k] for s in sizes]))) for k in sizes[0]}
    scored = np.concatenate([p.test for p in parts])
    out.update(test_clips=int(df.clip_id.iloc[scored].nunique()), test_windows=len(scored), seed=seed,
               test_clip_ids=sorted(df.clip_id.iloc[scored].unique().tolist()))
    return out


def _check_classes(run_dir: Path, df: pd.DataFrame, parts: list[Split], trainable: bool) -> None:
    scored = np.concatenate([p.test for p in parts])
    if df.label.iloc[scored].nunique() < 2:
        where = "the test split has" if len(parts) == 1 else "the clips have"
        raise CrashcastError(f"{run_dir}: {where} only one class ({len(scored)} windows); use more clips")
    for i, p in enumerate(parts):
        if trainable and df.label.iloc[p.train].nunique() < 2:
            where = "the training split has" if len(parts) == 1 else f"fold {i}'s training clips have"
            raise CrashcastError(f"{run_dir}: {where} one class only; use more clips")
        if len(p.val) and df.label.iloc[p.val].nunique() < 2:
            log.warning("%s: validation clips of %s have one class: no calibration there", run_dir,
                        "the split" if len(parts) == 1 else f"fold {i}")


# ----------------------------------------------------------------------------- scoring


@dataclass
class ModelScores:
    """One model's scores for the scored windows (rows of the feature table, in table order);
    `columns`: the model's further per-window outputs (a VLM's answers), in the same order."""

    rows: np.ndarray
    fold: np.ndarray
    raw: np.ndarray
    score: np.ndarray
    rationale: list[str]
    calibrations: list[Calibrator]
    last_model: RiskModel
    columns: dict[str, list]


def _new_model(name: str, cfg: CrashcastConfig, vlm_overrides: tuple[str, ...] = (), workdir: Path | None = None,
               retrain_vlm: bool = False) -> RiskModel:
    """An untrained model, its settings taken from the config section its class names
    (`RiskModel.settings_from`: the rules their physics parameters). A VLM takes the runtime (device,
    weights folder with its $CRASHCAST_WEIGHTS_DIR fallback, batch size), the config's top_k, and its
    settings: the `paper-<mode>` preset with `vlm_overrides`; without overrides, those of the adapter
    already in `workdir` (`crashcast train vlm --config my.yaml` then `evaluate` uses what was
    trained); `retrain_vlm` lets it replace an adapter trained otherwise."""
    from crashcast.risk.vlm_model import VlmRiskModel, trained_config, vlm_config

    cls = model_class(name)
    if issubclass(cls, VlmRiskModel):
        settings = trained_config(workdir) if workdir is not None and not vlm_overrides else None
        if settings is None or settings.mode != cls.mode:
            settings = vlm_config(cls.mode, vlm_overrides)
        return create_model(name, settings.model_dump(mode="json"), runtime=cfg.runtime, top_k=cfg.features.top_k,
                            retrain=retrain_vlm)
    return create_model(name, cls.settings_from(cfg))


def _fit_part(model: RiskModel, ws: WindowSet, part: Split, calibration: str, workdir: Path) -> RiskModel:
    """`model` trained on the part's train windows (validating on its val windows, where it does) and
    calibrated on its val windows (both classes needed)."""
    val = ws.subset(part.val)
    if model.trainable:
        model.fit(ws.subset(part.train), val, workdir=workdir)
    if len(val) and len(np.unique(val.labels)) == 2:
        model.calibration = Calibrator.fit(calibration, _finite(model, val, model.raw_scores(val)), val.labels)
    return model


def _finite(model: RiskModel, ws: WindowSet, raw: np.ndarray) -> np.ndarray:
    """`raw` when every score is finite; else ModelError naming the model, the windows and the
    non-finite feature columns of their rows (a NaN score would be ranked as if it were safe)."""
    raw = np.asarray(raw, float)
    bad = ~np.isfinite(raw)
    if not bad.any():
        return raw
    ids = [i for i, b in zip(ws.ids, bad, strict=True) if b]
    cols = [c for c in model.columns() if c in ws.table.columns]
    rows = ws.table.loc[bad, cols].apply(pd.to_numeric, errors="coerce")
    culprits = [c for c in cols if not np.isfinite(rows[c].to_numpy(float)).all()]
    raise ModelError(f"{model.kind}: {int(bad.sum())} of {len(raw)} window(s) score NaN or infinity "
                     f"({', '.join(ids[:3])}{' ...' if bad.sum() > 3 else ''})"
                     + (f"; their feature column(s) {', '.join(culprits)} are not finite in features.parquet"
                        if culprits else "")
                     + "; no metric is computed over them (fix or re-extract the run)")


def _score_parts(new: Callable[[], RiskModel], ws: WindowSet, parts: list[Split], calibration: str, workdir: Path) -> ModelScores:
    """Each part's test windows scored by a model (`new()`) fitted and calibrated on that part."""
    rows, fold, raw, score, reasons, cals = [], [], [], [], [], []
    columns: dict[str, list] = {}
    model = None
    for i, part in enumerate(parts):
        model = _fit_part(new(), ws, part, calibration, workdir)
        test = ws.subset(part.test)
        scores = model.score(test)
        _finite(model, test, scores.raw)
        rows.append(part.test)
        fold.append(np.full(len(part.test), i))
        raw.append(scores.raw)
        score.append(np.clip(model.calibration(scores.raw), 0, 1))
        reasons += scores.rationale
        for k, v in scores.columns.items():
            columns.setdefault(k, []).extend(v)
        cals.append(model.calibration)
    order = np.argsort(np.concatenate(rows), kind="stable")
    cat = [np.concatenate(a)[order] for a in (rows, fold, raw, score)]
    return ModelScores(*cat, [reasons[j] for j in order], cals, model, {k: [v[j] for j in order] for k, v in columns.items()})


def _final_model(new: Callable[[], RiskModel], ws: WindowSet, scored: ModelScores, calibration: str, workdir: Path) -> RiskModel:
    """Under CV: the model refit on all clips, calibrated on the pooled out-of-fold raw scores (the
    raw scores of models that had not seen those clips, as scikit-learn's CalibratedClassifierCV
    with ensemble=False)."""
    model = new()
    if model.trainable:
        model.fit(ws, workdir=workdir)
    model.calibration = Calibrator.fit(calibration, scored.raw, ws.labels[scored.rows])
    return model


def _model_to_save(run_dir: Path, name: str, new: Callable[[], RiskModel], ws: WindowSet, parts: list[Split],
                   scored: ModelScores, point: dict, protocol: dict, cfg: CrashcastConfig, calibration: str) -> tuple[RiskModel, dict]:
    """The model to save in run/models/<name> (the split's, or under CV the refit one) and its card's extras."""
    df = ws.table
    common = {"metrics": point, "protocol": protocol["kind"], "config_hash": cfg.hash(), "extraction_hash": cfg.extraction_hash(),
              "perception_preset": cfg.name}
    if protocol["kind"] == "split":
        model = scored.last_model
        seen = set(df.clip_id.iloc[parts[0].train]) | set(df.clip_id.iloc[parts[0].val])
        meta = {**common, "trained_on_clips": int(df.clip_id.iloc[parts[0].train].nunique()),
                "calibrated_on_clips": int(df.clip_id.iloc[parts[0].val].nunique())}
    else:
        model = _final_model(new, ws, scored, calibration, RunLayout(run_dir).model_dir(name))
        seen = set(df.clip_id)
        meta = {**common, "folds": protocol["folds"], "trained_on_clips": protocol["clips"], "refit_on_all_clips": True,
                "calibration_fitted_on": f"pooled out-of-fold raw scores of all {protocol['clips']} clips",
                "metrics_note": "out-of-fold estimate of this training procedure; this model itself has seen every clip"}
    # the clips whose windows fitted it or calibrated it: synthetic, real (`crashcast.data.domain`)
    meta["training_domain"] = training_domain(run_dir, seen)
    return model, meta


def _write_predictions(run_dir: Path, name: str, df: pd.DataFrame, scored: ModelScores, cv: bool) -> None:
    pred = df.iloc[scored.rows][["window_id", "clip_id", "phase", "horizon_s", "end_s", "label", "soft_target"]]
    if cv:
        pred = pred.assign(fold=scored.fold)
    pred = pred.assign(score=np.round(scored.score, 6), score_raw=np.round(scored.raw, 6), rationale=scored.rationale,
                       **scored.columns)
    atomic_write_text(RunLayout(run_dir).prediction(name), pred.to_csv(index=False))


def _parts(run_dir: Path, df: pd.DataFrame, cfg: CrashcastConfig, folds: int | None) -> list[Split]:
    """The protocol's (train, val, test) row sets: one split (`runs.run_split`: random or the
    dataset's official one), or one per fold."""
    ev = cfg.evaluation
    if folds is None:
        return [run_split(run_dir, df, cfg)]
    if ev.split == "official":
        raise ConfigError(f"evaluation.split official and {folds} folds: the official split fixes the test clips, "
                          "cross-validation scores every clip; choose one (evaluation.split=random for folds)")
    # the split's train:val ratio (0.5 : 0.2 of all clips by default) among each fold's training clips
    return cv_folds(df, int(folds), _val_share(cfg), ev.seed)


def _val_share(cfg: CrashcastConfig) -> float:
    ev = cfg.evaluation
    return ev.val_fraction / max(1e-9, 1 - ev.test_fraction)


def _evaluate_model(run_dir: Path, name: str, new: Callable[[], RiskModel], ws: WindowSet, parts: list[Split],
                    protocol: dict, cfg: CrashcastConfig, calibration: str) -> tuple[dict, Callable[[], None]]:
    """Train (when it learns), score and measure one model: its metrics.json entry, and the writing of
    its model folder and predictions, left to the caller so that a later model's failure leaves no
    run output half updated."""
    cv = protocol["kind"] == "cv"
    df = ws.table
    scored = _score_parts(new, ws, parts, calibration, RunLayout(run_dir).model_dir(name))
    test = df.iloc[scored.rows]
    # Under CV each fold has its own calibration map: pooled, the maps' differences (not the model)
    # would decide how windows of different folds rank, so AP, AUC and the video-level metrics rank
    # the models' own out-of-fold scores; the threshold and calibration metrics use calibrated ones.
    rank = scored.raw if cv else scored.score
    point, ci = _window_metrics(test, scored.score, cfg, rank_score=rank if cv else None)
    calibrated = any(c.method != "none" for c in scored.calibrations)
    before = _window_metrics(test, scored.raw, cfg, intervals=False)[0] if calibrated else point
    saved, card = _model_to_save(run_dir, name, new, ws, parts, scored, point, protocol, cfg, calibration)
    entry = {"window": point, "ci95": ci, "before_calibration": {k: before[k] for k in ("brier", "ece", "ap", "auc")},
             "video": _video_metrics(test, rank), "calibration": saved.calibration.to_dict()}
    if "parse_error" in scored.columns:  # a VLM: how many answers held no readable number
        entry["parse_failures"] = sum(bool(e) for e in scored.columns["parse_error"])
    entry["paper"] = _paper_protocol(test, scored, cfg)
    if cv:
        pooled = _window_metrics(test, scored.score, cfg, intervals=False)[0]
        entry.update(fold_calibrations=[c.to_dict() for c in scored.calibrations],
                     pooled_calibrated_ranking={k: pooled[k] for k in RANK_METRICS})
    log.info("%s: AP %.3f AUC %.3f F1 %.3f", name, point["ap"], point["auc"], point["f1"])

    def write() -> None:
        saved.save(RunLayout(run_dir).model_dir(name), card)
        _write_predictions(run_dir, name, df, scored, cv)

    return entry, write


def run_experiments(run_dir: Path, model_names: list[str], cfg: CrashcastConfig, calibration: str = "platt",
                    folds: int | None = None, vlm_overrides: list[str] | tuple[str, ...] = (),
                    retrain_vlm: bool = False) -> dict:
    """Evaluate each model on the run's windows and write metrics.json, metrics.md, predictions/ and
    models/. `folds` (default: `cfg.evaluation.folds` where the config has it, else none) switches
    from the single split to k-fold cross-validation by video. `vlm_overrides` (`vlm.field=value`)
    change the `paper-<mode>` settings of the vlm-* models; `retrain_vlm` lets them replace an adapter
    in run/models/ trained with other settings or on other windows (otherwise an error)."""
    run_dir = Path(run_dir)
    folds = folds if folds is not None else cfg.evaluation.folds
    names = check_request(model_names, calibration, folds)
    vlm_overrides = tuple(vlm_overrides)
    models = {n: _new_model(n, cfg, vlm_overrides) for n in names}
    df = load_features(run_dir, _needed_columns(models))
    ws = WindowSet(df, root=run_dir)
    parts = _parts(run_dir, df, cfg, folds)
    _check_classes(run_dir, df, parts, any(m.trainable for m in models.values()))
    protocol = {**_protocol(df, parts, folds, cfg.evaluation.seed),
                "ranking_scores": "calibrated" if folds is None else "raw out-of-fold"}
    results: dict = {"protocol": protocol, "split": _split_summary(df, parts, cfg.evaluation.seed),
                     "threshold": cfg.evaluation.threshold, "calibration": calibration,
                     "headline": cfg.evaluation.protocol, "models": {}}
    if folds is not None:
        results["cv"] = {"folds": [{"fold": i, **_part_sizes(df, p)} for i, p in enumerate(parts)],
                         "val_share_of_training_clips": _val_share(cfg)}
    writes = []
    for name in names:
        new = partial(_new_model, name, cfg, vlm_overrides, RunLayout(run_dir).model_dir(name), retrain_vlm)
        results["models"][name], write = _evaluate_model(run_dir, name, new, ws, parts, protocol, cfg, calibration)
        writes.append(write)
    RunLayout(run_dir).predictions.mkdir(exist_ok=True)
    for write in writes:  # every model succeeded: now the run's outputs change, all together
        write()
    atomic_write_text(RunLayout(run_dir).metrics_json,
                      json.dumps(json_safe(results), indent=2, allow_nan=False))
    atomic_write_text(RunLayout(run_dir).metrics_md, metrics_markdown(results))
    return results


# ----------------------------------------------------------------------------- text


def _pct(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.2f}"


def _pct1(v: float) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def protocol_text(results: dict) -> str:
    """One line on how the numbers were obtained: 'test split: 8 of 24 clips, 96 windows' or
    '5-fold cross-validation by video: all 24 clips, 288 windows scored out of fold'."""
    p = results.get("protocol")
    if p is None:  # metrics.json written before protocols were recorded
        s = results["split"]
        return f"test split: {s['test_clips']} clips, {s['test_windows']} windows"
    if p["kind"] == "cv":
        return (f"{p['folds']}-fold cross-validation by video: all {p['scored_clips']} clips, "
                f"{p['scored_windows']} windows scored out of fold")
    return f"test split: {p['scored_clips']} of {p['clips']} clips, {p['scored_windows']} windows"


PAPER_METRICS = ("precision", "recall", "f1", "mae", "brier", "ece")


def _header(metrics: tuple[str, ...], extra: tuple[str, ...] = ()) -> list[str]:
    names = [m.upper() if m in ("ap", "auc", "ece", "mae", "f1") else m.capitalize() for m in metrics]
    return ["| model | " + " | ".join([*names, *extra]) + " |", "|---" * (len(metrics) + len(extra) + 1) + "|"]


def _paper_rows(metrics: tuple[str, ...], extra: int = 0) -> list[str]:
    return [f"| {name} | " + " | ".join([*(f"{r[m]:.2f}" if m in r else "n/a" for m in metrics), *["n/a"] * extra]) + " |"
            for name, r in PAPER_TABLE_III.items()]


def _crashcast_table(results: dict) -> list[str]:
    lines = [
        f"# Window-level results ({protocol_text(results)}; threshold {results['threshold']}; "
        f"calibration: {results['calibration']}; crashcast's protocol)",
        "",
        *_header(TABLE_METRICS),
    ]
    for name, r in results["models"].items():
        cells = []
        for m in TABLE_METRICS:
            v = r["window"][m]
            lo_hi = r["ci95"].get(m)
            cells.append(_pct(v) + (f" [{_pct(lo_hi[0])}, {_pct(lo_hi[1])}]" if lo_hi else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += _paper_rows(TABLE_METRICS)
    lines += ["", "All values in percent; [95 % bootstrap interval over the scored videos]. "
              f"Paper rows: {PAPER_CITATION} (their data, not ours).", ""]
    if results.get("protocol", {}).get("ranking_scores") == "raw out-of-fold":
        lines += ["AP, AUC and the video-level metrics rank each model's own out-of-fold scores: each fold has its own "
                  "calibration map, and pooled calibrated scores would rank by the maps' differences. The other "
                  "metrics use the calibrated scores.", ""]
    return lines


def paper_table_rows(results: dict) -> list[str]:
    """Table III's rows under the paper's protocol (`_paper_protocol`): header, one row per model
    (unreadable answers: 'n of N' for a VLM, 'n/a' for a model that writes no answer), the paper's rows."""
    lines = _header(PAPER_METRICS, ("unreadable answers",))
    for name, r in results["models"].items():
        p = r["paper"]
        unreadable = f"{p['parse_failures']} of {int(p['window']['n'])}" if "parse_failures" in r else "n/a"
        lines.append(f"| {name} | " + " | ".join([*(_pct(p["window"][m]) for m in PAPER_METRICS), unreadable]) + " |")
    return lines + _paper_rows(PAPER_METRICS, extra=1)


def _paper_table(results: dict) -> list[str]:
    """Table III as the paper reads it; nothing for a metrics.json written before it."""
    if not all("paper" in r for r in results["models"].values()):
        return []
    lines = [f"# Table III, the paper's protocol ({protocol_text(results)}; the number each model wrote, uncalibrated, "
             f"threshold {PAPER_THRESHOLD})", "", *paper_table_rows(results)]
    lines += ["", "All values in percent. A VLM's score is the number it wrote after `Collision Probability:` (an "
              "answer with no readable number counts as 0.0 and is counted in the last column); other models' scores "
              "are their raw, uncalibrated ones. docs/PAPER_PROTOCOL.md says how each choice follows the paper.", ""]
    return lines


def metrics_markdown(results: dict) -> str:
    """Table III layout under both protocols (metrics.json's `headline` first), every metric in
    percent (crashcast's with bootstrap 95 % intervals), the paper's rows below each; then the
    video level."""
    crashcast, paper = _crashcast_table(results), _paper_table(results)
    lines = [*paper, *crashcast] if results.get("headline") == "paper" and paper else [*crashcast, *paper]
    lines += ["## Video level (each clip's 'max' windows as its timeline)", "", "| model | video AP | mTTA (s) | TTA@R80 (s) | Nexar mAP | ECE before → after calibration |", "|---|---|---|---|---|---|"]
    for name, r in results["models"].items():
        v = r["video"]
        nexar = f"{v['nexar_map']:.3f}" if "nexar_map" in v else "n/a (needs horizons 0.5,1,1.5)"
        lines.append(f"| {name} | {v['video_ap']:.3f} | {v['mtta_s']:.2f} | {v['tta_r80_s']:.2f} | {nexar} | "
                     f"{_pct(r['before_calibration']['ece'])} → {_pct(r['window']['ece'])} |")
    lines += ["", "mTTA and TTA@R80 here are measured at the window ends only, so they cannot exceed the largest "
              "horizon; the per-frame figures DAD/CCD papers report, and recall at a capped false-alarm rate: "
              "`crashcast dense` (dense.md, docs/METRICS.md)."]
    return "\n".join(lines) + "\n"


def explain_results(results: dict) -> str:
    """A few plain-text lines for a newcomer: how the numbers were obtained, what AP and ROC-AUC
    mean and what chance would score, what the bracketed intervals are, and why the paper's rows
    are not comparable."""
    p = results.get("protocol") or {}
    first = next(iter(results["models"].values()))["window"]
    n, pos = int(first["n"]), int(first["positives"])
    rate = pos / n if n else float("nan")
    if p.get("kind") == "cv":
        how = (f"Scored: all {p['scored_clips']} clips ({n} windows) by {p['folds']}-fold cross-validation by video: "
               "each clip was scored once by a model trained and calibrated on other clips only.")
    else:
        clips = p.get("scored_clips", results["split"]["test_clips"])
        of = f" of {p['clips']}" if "clips" in p else ""
        how = (f"Scored: the test split only, {clips}{of} clips ({n} windows), by a model that never saw them; "
               "with so few clips the figures are noisy (cross-validation scores every clip).")
    return "\n".join([
        how,
        f"AP (average precision; tables show percent) summarises precision over all recall levels: 100 is perfect, and "
        f"a random score gets the share of positive windows, here {100 * rate:.1f} ({pos} of {n}).",
        "AUC (ROC-AUC) is the chance that a random positive window scores above a random negative one: 50 is a coin "
        "toss, 100 perfect.",
        "Here: " + "; ".join(f"{name} AP {_pct1(r['window']['ap'])}, AUC {_pct1(r['window']['auc'])}"
                             for name, r in results["models"].items()) + ".",
        "[lo, hi] is a 95 % bootstrap interval (whole videos resampled): wide intervals mean few videos; models whose "
        "intervals overlap are not shown to differ.",
        f"The 'paper:' rows are the paper's own results on its own data ({PAPER_CITATION}): context, not a comparison.",
        "metrics.md gives Table III twice: crashcast's protocol (calibrated scores) and the paper's (the number each "
        "model wrote, uncalibrated, at 0.5); `evaluate --protocol` says which comes first.",
        explain_window_video_metrics(),
    ])
