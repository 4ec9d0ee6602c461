"""The paper's three windows per clip (W. Zhu, "End-to-End Vision-Language Fine-Tuning: Prompt-Based
Early Collision Risk Assessment on Dashcam Videos": max, mid and mini, all ending at the event),
anticipation horizons, keyframes and labels.

All windows end at the clip's anchor minus a horizon h. The anchor is the event time for
positives; for negatives it is drawn deterministically from the clip id (sha256) inside the
clip, at least `negative_min_anchor_s` in when the clip is long enough. Keyframes sit at fixed
fractions of the 6 s reference span ending at the window's end; a window that would start before
the first frame is clamped to it (its keyframes spread over what remains) and marked `clamped`.
"""

from __future__ import annotations

import hashlib
import math

from crashcast.errors import AnnotationError
from crashcast.settings import WindowConfig
from crashcast.types import PHASES, AnchorSource, Clip, Window

_ROUND = 6  # seconds are rounded to the microsecond so windows print and compare cleanly


def hashed_fraction(clip_id: str) -> float:
    """A number in [0, 1) fixed by the clip id (same on every machine and run)."""
    return int.from_bytes(hashlib.sha256(clip_id.encode()).digest()[:8], "big") / 2**64


def anchor_time(clip: Clip, duration_s: float | None, cfg: WindowConfig) -> tuple[float, AnchorSource]:
    """(anchor seconds, how it was chosen: 'event', 'video_end' or 'hashed')."""
    if clip.is_positive and clip.time_of_event_s is not None:
        if duration_s is not None and clip.time_of_event_s > duration_s + 0.05:
            raise AnnotationError(
                clip.video_path,
                f"clip {clip.id!r}: time_of_event {clip.time_of_event_s} s is after the end of the video ({duration_s:.2f} s)",
            )
        return clip.time_of_event_s, "event"
    if duration_s is None:
        raise AnnotationError(clip.video_path, f"clip {clip.id!r}: the video's duration is needed to anchor its windows")
    if clip.is_positive:  # positive without an event time (kept with missing_event='end')
        return duration_s, "video_end"
    lo = min(cfg.negative_min_anchor_s + max(cfg.horizons_s), duration_s)
    return lo + hashed_fraction(clip.id) * (duration_s - lo), "hashed"


def soft_target(clip: Clip, end_s: float, cfg: WindowConfig) -> float:
    """Regression target of a window ending at `end_s`.

    0 for negatives; for positives 1 when the window ends at or after the alert time, and
    exp(-(alert - end) / soft_target_decay_s) before it, rising toward 1 as the alert nears.
    Without an annotated alert, alert = event - default_alert_lead_s.
    """
    if not clip.is_positive:
        return 0.0
    alert = clip.time_of_alert_s
    if alert is None:
        if clip.time_of_event_s is None:
            return 1.0
        alert = clip.time_of_event_s - cfg.default_alert_lead_s
    if end_s >= alert:
        return 1.0
    return round(math.exp(-(alert - end_s) / cfg.soft_target_decay_s), _ROUND)


def _since(t: float | None, kf: float) -> float | None:
    return None if t is None else round(t - kf, _ROUND)


def make_windows(clip: Clip, duration_s: float | None = None, cfg: WindowConfig | None = None) -> list[Window]:
    """The max/mid/mini windows of `clip` for every horizon in `cfg.horizons_s`."""
    cfg = cfg or WindowConfig()
    anchor, source = anchor_time(clip, duration_s, cfg)
    windows: list[Window] = []
    for h in cfg.horizons_s:
        if h < 0:
            raise AnnotationError(clip.video_path, f"horizon {h} s is negative")
        end = anchor - h
        if end <= 0:
            continue  # the whole window would lie before the video starts
        for phase in PHASES:
            fr = cfg.keyframe_fractions[phase]
            ref_start = end - cfg.span_s
            kfs = [ref_start + f * cfg.span_s for f in fr]
            clamped = kfs[0] < 0
            if clamped:  # keep three distinct keyframes at the same fractions of what remains
                rel = [(f - fr[0]) / (fr[2] - fr[0]) for f in fr]
                kfs = [end * r for r in rel]
            kfs_r = tuple(round(max(0.0, k), _ROUND) for k in kfs)
            y_alert = tuple(_since(clip.time_of_alert_s, k) for k in kfs_r) if clip.is_positive else (None,) * 3
            y_event = tuple(_since(clip.time_of_event_s, k) for k in kfs_r) if clip.is_positive else (None,) * 3
            windows.append(
                Window(
                    clip_id=clip.id,
                    phase=phase,
                    horizon_s=float(h),
                    anchor_s=round(anchor, _ROUND),
                    start_s=kfs_r[0],
                    end_s=round(end, _ROUND),
                    keyframe_times_s=kfs_r,  # type: ignore[arg-type]
                    clamped=clamped,
                    label=clip.target,
                    y_alert=y_alert,
                    y_event=y_event,
                    soft_target=soft_target(clip, end, cfg),
                    anchor_source=source,
                )
            )
    return windows


def clip_span(windows: list[Window]) -> tuple[float, float]:
    """The union of the windows' spans: perception runs once over it."""
    return min(w.start_s for w in windows), max(w.end_s for w in windows)


def windows_table(windows: list[Window]):
    """A pandas DataFrame with one row per window (for printing and CSV)."""
    import pandas as pd

    rows = []
    for w in windows:
        rows.append(
            {
                "window_id": w.id,
                "clip_id": w.clip_id,
                "phase": w.phase,
                "horizon_s": w.horizon_s,
                "start_s": w.start_s,
                "end_s": w.end_s,
                "kf1_s": w.keyframe_times_s[0],
                "kf2_s": w.keyframe_times_s[1],
                "kf3_s": w.keyframe_times_s[2],
                "clamped": w.clamped,
                "label": w.label,
                "soft_target": w.soft_target,
                "anchor": w.anchor_source,
            }
        )
    return pd.DataFrame(rows)
