"""`crashcast report RUN`: one self-contained HTML page (every image embedded, every string escaped)."""

from __future__ import annotations

import base64
import logging
import math
from pathlib import Path

import pandas as pd

from crashcast import runs
from crashcast.errors import CrashcastError, InputLimitError
from crashcast.evaluation import plots
from crashcast.evaluation.experiments import PAPER_TABLE_III, TABLE_METRICS, protocol_text
from crashcast.prompts.builder import KEYFRAME_FILE_LIMIT
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import atomic_write_text, read_bounded

log = logging.getLogger(__name__)

GALLERY_CASES = 3


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _pct(v) -> str:
    return "n/a" if v is None or not math.isfinite(v) else f"{100 * v:.1f}"


def write_report(run_dir: str | Path) -> Path:
    from importlib import resources

    import jinja2

    from crashcast.version import __version__

    run = Path(run_dir)
    metrics_path = RunLayout(run).metrics_json
    res = runs.read_metrics(run)
    preds = runs.read_predictions(run, res["models"])
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
    dense = _dense(run)
    env = jinja2.Environment(autoescape=True, undefined=jinja2.StrictUndefined)
    template = env.from_string(resources.files("crashcast.templates").joinpath("report.html.j2").read_text())
    html = template.render(
        run_name=run.resolve().name, raw_ranking=raw_ranking, **summary,
        metric_names=[m.upper() if m in ("ap", "auc", "ece", "mae", "f1") else m.capitalize() for m in TABLE_METRICS],
        table=table, video=video, figures=figures, distributions=distributions, risk=risk, primary=primary,
        gallery=gallery, version=__version__, dense=dense,
    )
    out = RunLayout(run).report_page
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


def _dense(run: Path) -> dict | None:
    """The dense per-video table of dense_metrics.json (`crashcast dense`), None without one; an
    unreadable file is logged and left out."""
    import json

    from crashcast.evaluation.dense import report_table
    from crashcast.runtime.store import read_text_bounded

    path = RunLayout(run).dense_json
    if not path.exists():
        return None
    try:
        return report_table(json.loads(read_text_bounded(path, what="dense metrics file")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        log.warning("%s: left out of the report (%s: %s); rerun `crashcast dense`", path, type(e).__name__, e)
        return None


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
        # read inside the run only: a crafted clip id or keyframe path (`../..`) is left out, never embedded
        try:
            folder = runs.window_dir(run, row.clip_id, row.phase, row.horizon_s)
            meta = runs.read_meta(folder)
            images = [_b64(read_bounded(f, KEYFRAME_FILE_LIMIT, "keyframe image")) for f in runs.keyframes(meta, folder)]
        except (runs.RunFileError, OSError, InputLimitError) as e:  # an unreadable or oversized keyframe file too
            runs.left_out("report", row.window_id, e)
            continue
        scores = []
        for name, q in preds.items():
            hit = q[q.window_id == row.window_id]
            if len(hit):
                scores.append((name, f"{float(hit.score.iloc[0]):.3f}"))
        cases.append({"kind": kind, "window_id": row.window_id, "label": int(row.label), "scores": scores,
                      "rationale": str(row.get("rationale", "")), "images": images,
                      # the images' own captions say only what the prompt says (features.keyframe_caption)
                      "times": ", ".join(f"{t:.2f}" for t in meta.frame_times)})
    return cases

