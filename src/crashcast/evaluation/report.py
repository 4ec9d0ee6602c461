"""`crashcast report RUN`: one self-contained HTML page (every image embedded, every string escaped)."""

from __future__ import annotations

import base64
import json
import logging
import math
from pathlib import Path

import pandas as pd

from crashcast.errors import CrashcastError, SchemaError
from crashcast.evaluation import plots
from crashcast.evaluation.experiments import PAPER_TABLE_III, TABLE_METRICS, protocol_text
from crashcast.features.window_meta import read_window_meta
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import atomic_write_text, inside

log = logging.getLogger(__name__)

GALLERY_CASES = 3
PREDICTION_COLUMNS = ("window_id", "clip_id", "phase", "horizon_s", "end_s", "label", "score")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def write_report(run_dir: str | Path) -> Path:
    from importlib import resources

    import jinja2

    import crashcast

    run = Path(run_dir)
    metrics_path = RunLayout(run).metrics_json
    if not metrics_path.exists():
        raise CrashcastError(f"{metrics_path}: not found; run `crashcast evaluate {run}` first")
    try:
        res = json.loads(metrics_path.read_text(encoding="utf-8"))
        models = res["models"]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise CrashcastError(f"{metrics_path}: not a metrics file written by `crashcast evaluate` ({type(e).__name__}: {e}); "
                             f"rerun `crashcast evaluate {run}`") from None
    preds = {}
    for name in models:
        try:
            path = inside(run, RunLayout.rel_prediction(name))  # model names come from metrics.json
        except ValueError as e:
            raise CrashcastError(f"{metrics_path}: model name {name!r} is not a file name ({e})") from None
        if path.exists():
            try:
                df = pd.read_csv(path, dtype={"clip_id": str, "window_id": str})
                missing = sorted(set(PREDICTION_COLUMNS) - set(df.columns))
                if missing:
                    raise ValueError(f"missing column(s) {missing}")
                preds[name] = df
            except (ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError) as e:
                raise CrashcastError(f"{path}: not a predictions file written by `crashcast evaluate` ({e}); "
                                     f"rerun `crashcast evaluate {run}`") from None
    if not preds:
        raise CrashcastError(f"{run}/predictions: no prediction files")
    try:
        table, video = _tables(res)
        summary = {"protocol": protocol_text(res), "threshold": res["threshold"], "calibration": res["calibration"]}
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise CrashcastError(f"{metrics_path}: incomplete or foreign metrics file ({type(e).__name__}: {e}); "
                             f"rerun `crashcast evaluate {run}`") from None
    # under cross-validation, ranking metrics use the raw out-of-fold scores (experiments.py says why)
    raw_ranking = res.get("protocol", {}).get("ranking_scores") == "raw out-of-fold"
    curves = {n: (p.label.to_numpy(), p.score.to_numpy()) for n, p in preds.items()}
    ranking = {n: (p.label.to_numpy(), p.score_raw.to_numpy()) for n, p in preds.items()} if raw_ranking else curves
    pr, roc = plots.pr_roc(ranking)
    figures = [("reliability", _b64(plots.reliability(curves))), ("precision-recall", _b64(pr)), ("ROC", _b64(roc))]
    distributions = [(n, _b64(plots.score_distribution(n, *c))) for n, c in curves.items()]
    primary = "lightgbm" if "lightgbm" in preds else next(iter(preds))
    p = preds[primary]
    risk = []
    for label_value, title in ((1, "positive scored videos"), (0, "negative scored videos")):
        series = []
        for cid, g in list(p[p.label == label_value].groupby("clip_id"))[:8]:
            g = g[g.phase == "max"].sort_values("end_s")
            event = float((g.end_s + g.horizon_s).max()) if label_value else None
            series.append((cid, g.end_s.to_numpy(), g.score.to_numpy(), event, None))
        if series:
            risk.append((title, _b64(plots.risk_curves(series, f"{primary}: {title}"))))
    gallery = _gallery(run, p, preds)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("crashcast.templates").joinpath("report.html.j2").read_text())
    html = template.render(
        run_name=run.resolve().name, raw_ranking=raw_ranking, **summary,
        metric_names=[m.upper() if m in ("ap", "auc", "ece", "mae", "f1") else m.capitalize() for m in TABLE_METRICS],
        table=table, video=video, figures=figures, distributions=distributions, risk=risk, primary=primary,
        gallery=gallery, version=crashcast.__version__,
    )
    out = RunLayout(run).report / "index.html"
    atomic_write_text(out, html)
    return out


def _tables(res: dict) -> tuple[list[dict], list[dict]]:
    """The window-level table (ours, then the paper's rows) and the video-level table."""
    table = []
    for name, r in res["models"].items():
        cells = []
        for m in TABLE_METRICS:
            ci = r["ci95"].get(m)
            cells.append(_pct(r["window"][m]) + (f" [{_pct(ci[0])}, {_pct(ci[1])}]" if ci else ""))
        table.append({"name": name, "cells": cells, "cls": ""})
    for name, r in PAPER_TABLE_III.items():
        table.append({"name": name, "cells": [f"{r[m]:.1f}" if m in r else "n/a" for m in TABLE_METRICS], "cls": "paper"})
    video = []
    for name, r in res["models"].items():
        v = r["video"]
        video.append({"name": name, "cells": [f"{v['video_ap']:.3f}", f"{v['mtta_s']:.2f}", f"{v['tta_r80_s']:.2f}",
                                              f"{v['nexar_map']:.3f}" if "nexar_map" in v else "n/a",
                                              _pct(r["before_calibration"]["ece"]), _pct(r["window"]["ece"])]})
    return table, video


def _gallery(run: Path, p: pd.DataFrame, preds: dict[str, pd.DataFrame]) -> list[dict]:
    err = (p.score - p.label).abs()
    # one window per video, so the gallery shows different clips
    best = err.groupby(p.clip_id).idxmin()
    worst = err.groupby(p.clip_id).idxmax()
    picks = [("best", i) for i in err[best.values].nsmallest(GALLERY_CASES).index]
    picks += [("worst", i) for i in err[worst.values].nlargest(GALLERY_CASES).index]
    cases = []
    for kind, i in picks:
        row = p.loc[i]
        images = _keyframes(run, row)
        if images is None:
            continue
        scores = []
        for name, q in preds.items():
            hit = q[q.window_id == row.window_id]
            if len(hit):
                scores.append((name, f"{float(hit.score.iloc[0]):.3f}"))
        cases.append({"kind": kind, "window_id": row.window_id, "label": int(row.label), "scores": scores,
                      "rationale": str(row.get("rationale", "")), "images": images})
    return cases


def _keyframes(run: Path, row) -> list[str] | None:
    """The window's keyframe images (base64), or None when its window_meta.json is missing or unusable.

    Only files inside the run folder are read: the window folder comes from the predictions' clip id
    and the images from window_meta.json's frame_paths, and either could name `../..` or an absolute
    path (a crafted or foreign run); such a window is left out with a warning, never embedded."""

    try:
        meta_path = inside(run, RunLayout.rel_window_dir(row.clip_id, row.phase, row.horizon_s) / "window_meta.json")
    except ValueError as e:
        log.warning("report: window %s left out: %s", row.window_id, e)
        return None
    if not meta_path.exists():
        return None
    try:
        meta = read_window_meta(meta_path)
        paths = [inside(meta_path.parent, f) for f in meta.frame_paths if f is not None]
    except (SchemaError, ValueError) as e:
        log.warning("report: window %s left out: %s (rerun `crashcast extract` on this run to rewrite it)", row.window_id, e)
        return None
    return [_b64(f.read_bytes()) for f in paths if f.is_file()]
