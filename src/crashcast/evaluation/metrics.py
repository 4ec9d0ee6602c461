"""Metrics: the paper's (precision, recall, F1, MAE, Brier, ECE) and the field's (AP, ROC-AUC,
video-level AP with mTTA and TTA@R80, the Nexar challenge's mAP over horizons), with bootstrap
intervals that resample videos.

Written in numpy so they can be checked against scikit-learn (tests do, to 1e-9) and used where
sklearn has no equivalent. Scores are probabilities in [0, 1]; labels are 0/1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64).reshape(-1)


def confusion(y: Sequence[int], score: Sequence[float], threshold: float = 0.5) -> tuple[int, int, int, int]:
    """(tp, fp, fn, tn) with `score >= threshold` predicted positive."""
    y, s = _arr(y).astype(int), _arr(score)
    pred = s >= threshold
    tp = int(np.sum(pred & (y == 1)))
    fp = int(np.sum(pred & (y == 0)))
    fn = int(np.sum(~pred & (y == 1)))
    return tp, fp, fn, int(len(y) - tp - fp - fn)


def precision_recall_f1(y, score, threshold: float = 0.5) -> tuple[float, float, float]:
    """Precision, recall, F1 at `threshold` (0 where undefined, as sklearn's zero_division=0)."""
    tp, fp, fn, _ = confusion(y, score, threshold)
    p = tp / (tp + fp) if tp + fp else 0.0
    r = tp / (tp + fn) if tp + fn else 0.0
    f = 2 * p * r / (p + r) if p + r else 0.0
    return p, r, f


def mae(target, score) -> float:
    return float(np.mean(np.abs(_arr(target) - _arr(score))))


def brier(y, score) -> float:
    return float(np.mean((_arr(score) - _arr(y)) ** 2))


def ece(y, score, bins: int = 10, adaptive: bool = False) -> float:
    """Expected calibration error: sum over bins of |mean label - mean score| weighted by bin size.

    Equal-width bins over [0, 1] (a score of exactly 1 falls in the last bin), or with
    `adaptive=True` equal-count bins (quantiles of the scores)."""
    y, s = _arr(y), _arr(score)
    if len(s) == 0:
        return float("nan")
    if adaptive:
        order = np.argsort(s, kind="mergesort")
        groups = np.array_split(order, min(bins, len(s)))
    else:
        idx = np.minimum((s * bins).astype(int), bins - 1)
        groups = [np.flatnonzero(idx == b) for b in range(bins)]
    total = 0.0
    for g in groups:
        if len(g):
            total += len(g) * abs(y[g].mean() - s[g].mean())
    return float(total / len(s))


def _binary_clf_curve(y: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Cumulative (fps, tps, thresholds) at each distinct score, highest first (as sklearn)."""
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    distinct = np.flatnonzero(np.diff(s)) if len(s) > 1 else np.array([], int)
    ends = np.r_[distinct, len(y) - 1]
    tps = np.cumsum(y)[ends]
    fps = 1 + ends - tps
    return fps, tps, s[ends]


def average_precision(y, score) -> float:
    """AP = sum over thresholds of (R_n - R_{n-1}) P_n (no interpolation; sklearn's definition)."""
    y, s = _arr(y), _arr(score)
    if y.sum() == 0:
        return float("nan")
    fps, tps, _ = _binary_clf_curve(y, s)
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    r_prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - r_prev) * precision))


def roc_auc(y, score) -> float:
    """Area under the ROC curve (trapezoids between distinct thresholds; ties count half)."""
    y, s = _arr(y), _arr(score)
    n_pos, n_neg = y.sum(), len(y) - y.sum()
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    fps, tps, _ = _binary_clf_curve(y, s)
    tpr = np.r_[0.0, tps / n_pos]
    fpr = np.r_[0.0, fps / n_neg]
    return float(np.trapezoid(tpr, fpr))


def paper_metrics(label, score, target=None, threshold: float = 0.5, ece_bins: int = 10) -> dict[str, float]:
    """The paper's Table III metrics plus AP and ROC-AUC. MAE is against `target` (the soft target
    the model learns) when given, else against the label; Brier is against the label."""
    p, r, f = precision_recall_f1(label, score, threshold)
    return {
        "precision": p, "recall": r, "f1": f,
        "mae": mae(label if target is None else target, score),
        "brier": brier(label, score),
        "ece": ece(label, score, ece_bins),
        "ece_adaptive": ece(label, score, ece_bins, adaptive=True),
        "ap": average_precision(label, score),
        "auc": roc_auc(label, score),
        "n": int(len(_arr(label))), "positives": int(_arr(label).sum()),
    }


# ----------------------------------------------------------------------------- video level


@dataclass
class VideoScores:
    """One video's risk timeline: times (s) and scores, its label and event time (s, positives)."""

    times_s: np.ndarray
    scores: np.ndarray
    label: int
    event_s: float | None = None


def video_ap_tta(videos: Sequence[VideoScores], recall_level: float = 0.8) -> dict[str, float]:
    """Video-level AP, mTTA and TTA@R80 in the manner of the UString/DSTA evaluation.

    For each threshold th (every distinct score): a video is flagged if any of its scores up to
    the event (all of them for negatives) reaches th; precision = flagged positives / flagged,
    recall = flagged positives / positives; a flagged positive's time-to-accident is the event
    time minus the time of its first score >= th. Per recall level the best precision and the
    best mean TTA are kept; AP is the trapezoidal area under that precision-recall curve (the first
    level's precision back to recall 0), mTTA the mean of the TTAs over recall levels, TTA@R80 the
    TTA at the recall level nearest `recall_level`. Thresholds flagging no positive (recall 0) are
    no point of the curve, as in their code: a negative scoring above every positive lowers the
    precision of the levels, not an extra point at precision 0. The dense, per-stride version (the
    field's per-frame figures) is `crashcast.evaluation.dense.field_ap_tta`."""
    clipped = []
    for v in videos:
        t, s = np.asarray(v.times_s, float), np.asarray(v.scores, float)
        if v.label and v.event_s is not None:
            keep = t <= v.event_s + 1e-9
            t, s = t[keep], s[keep]
        clipped.append((t, s, v))
    n_pos = sum(v.label for v in videos)
    if n_pos == 0:
        return {"video_ap": float("nan"), "mtta_s": float("nan"), "tta_r80_s": float("nan")}
    thresholds = np.unique(np.concatenate([s for _, s, _ in clipped if len(s)]))
    rows = []
    for th in thresholds:
        tp = flagged = 0
        ttas = []
        for t, s, v in clipped:
            hit = np.flatnonzero(s >= th)
            if len(hit) == 0:
                continue
            flagged += 1
            if v.label:
                tp += 1
                ttas.append((v.event_s - t[hit[0]]) if v.event_s is not None else 0.0)
        if tp == 0:  # recall 0: dropped, as UString/DSTA drop their lowest recall level (rep_index[1:])
            continue
        rows.append((tp / n_pos, tp / flagged, float(np.mean(ttas)) if ttas else 0.0))
    if not rows:
        return {"video_ap": 0.0, "mtta_s": 0.0, "tta_r80_s": 0.0}
    arr = np.array(rows)
    levels = np.unique(arr[:, 0])
    prec = np.array([arr[arr[:, 0] == r, 1].max() for r in levels])
    tta = np.array([arr[arr[:, 0] == r, 2].max() for r in levels])
    rec = np.r_[0.0, levels]
    pr = np.r_[prec[0], prec]
    ap = float(np.sum((rec[1:] - rec[:-1]) * (pr[1:] + pr[:-1]) / 2))
    nonzero = levels > 0
    mtta = float(np.mean(tta[nonzero])) if nonzero.any() else 0.0
    r80 = float(tta[int(np.argmin(np.abs(levels - recall_level)))])
    return {"video_ap": ap, "mtta_s": mtta, "tta_r80_s": r80}


def nexar_map(labels_by_horizon: dict[float, tuple[Sequence[int], Sequence[float]]], horizons=(0.5, 1.0, 1.5)) -> float:
    """The Nexar challenge's mAP: AP of the clip scores cut h seconds before the event (with the
    negatives), averaged over the horizons h."""
    aps = [average_precision(*labels_by_horizon[h]) for h in horizons if h in labels_by_horizon]
    return float(np.mean(aps)) if aps else float("nan")


# ----------------------------------------------------------------------------- intervals


def bootstrap_cis(groups: Sequence[str], fn: Callable[[np.ndarray], dict[str, float]], n: int = 500, seed: int = 0,
                  alpha: float = 0.05) -> dict[str, tuple[float, float]]:
    """Percentile intervals of each value of fn(row indices) when whole videos (`groups`) are resampled
    with replacement: one set of resamples, each metric computed from the same draws."""
    uniq, inv = np.unique(np.asarray(groups), return_inverse=True)
    members = [np.flatnonzero(inv == g) for g in range(len(uniq))]
    rng = np.random.default_rng(seed)
    vals: dict[str, list[float]] = {}
    for _ in range(n):
        pick = rng.integers(0, len(uniq), len(uniq))
        for name, v in fn(np.concatenate([members[g] for g in pick])).items():
            vals.setdefault(name, [])
            if np.isfinite(v):
                vals[name].append(v)
    return {m: (float(np.quantile(v, alpha / 2)), float(np.quantile(v, 1 - alpha / 2))) if v else (float("nan"), float("nan"))
            for m, v in vals.items()}


def bootstrap_ci(groups: Sequence[str], fn: Callable[[np.ndarray], float], n: int = 500, seed: int = 0,
                 alpha: float = 0.05) -> tuple[float, float]:
    """Percentile interval of fn(row indices) when whole videos (`groups`) are resampled with replacement."""
    return bootstrap_cis(groups, lambda idx: {"v": fn(idx)}, n, seed, alpha).get("v", (float("nan"), float("nan")))


def alert_stats(events: Sequence[float | None], first_alerts: Sequence[float | None]) -> dict[str, float]:
    """Alerting quality over videos: share of positives (event time given) alerted at or before
    the event, share of negatives (event None) alerted at all, and the mean lead time (s) of the
    timely alerts."""
    hits, false_alarms, leads = [], [], []
    for event, alert in zip(events, first_alerts, strict=True):
        if event is not None:
            ok = alert is not None and alert <= event
            hits.append(ok)
            if ok:
                leads.append(event - alert)
        else:
            false_alarms.append(alert is not None)
    return {
        "alert_rate": float(np.mean(hits)) if hits else float("nan"),
        "false_alert_rate": float(np.mean(false_alarms)) if false_alarms else float("nan"),
        "mean_lead_s": float(np.mean(leads)) if leads else float("nan"),
        "positives": len(hits), "negatives": len(false_alarms), "alerted": int(sum(hits)), "false_alerts": int(sum(false_alarms)),
    }
