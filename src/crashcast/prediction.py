"""Prediction on any dashcam video: a causal risk timeline, the first alert and the reasons.

Every `stride_s` seconds a window ends "now" and uses only past frames (the paper's 'max' window
geometry, horizon 0; clamped at the start of the video). Perception state carries forward: flow
and tracks are computed once per perceived frame, not once per window, and perception keeps only
the frames the window can reach (its span plus a margin), so the work per stride is the same at
the first minute as at the hundredth. The default model is the training-free physics model; any
saved model folder (`crashcast evaluate` and `crashcast train vlm` write them under run/models/) can
be passed instead. A model that reads prompts (the VLMs) gets each window's three keyframe overlays,
drawn from the perceived frames it keeps for the window span and written to a scratch folder, and
gives its own rationale as the reason.
A video shorter than one stride gets an empty timeline (no risk estimate, no alert).

    >>> p = crashcast.predict("drive.mp4")
    >>> p.first_alert, p.timeline.head(), p.reasons
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crashcast.config import CrashcastConfig, load_config
from crashcast.data.video import VideoWriter, iter_resampled
from crashcast.errors import ConfigError, CrashcastError, ModelError
from crashcast.features import overlays
from crashcast.features.kinematics import lookback_s, window_objects
from crashcast.features.table import feature_columns
from crashcast.perception.bundle import Backends
from crashcast.perception.pipeline import Perception
from crashcast.risk import alerts
from crashcast.risk.alerts import AlertPolicy
from crashcast.risk.base import RiskModel
from crashcast.risk.models import TRAINING_FREE, create_model, load_model
from crashcast.risk.windows import WindowSet
from crashcast.runtime.executor import Terminated, sigterm_raises, stop_reason
from crashcast.runtime.store import atomic_write_text
from crashcast.types import Phase, Window

if TYPE_CHECKING:
    from crashcast.runtime.executors import JobExecutor

log = logging.getLogger(__name__)

MODEL_PHASE: Phase = "max"  # the window the risk model sees: the most context


@dataclass
class Prediction:
    """A video's risk timeline (one row per stride: time_s, risk (shown), risk_raw (the model's),
    alert (0/1), reason, min_ttc_s, looming_per_s, n_objects; a VLM adds its answer as written:
    answer, written, parse_error, score_source; last, driving_term and evidence: what risk_raw came
    from, as JSON, which the reason is rendered from), the first stride the alert policy was on (None
    if never) and the reasons given at the alert and at the peak. `alert_policy` describes the policy
    that turned risk_raw into risk and alert (`crashcast.risk.alerts`); `perception` says which
    perception produced it (preset, extraction hash, the backend of each stage)."""

    video: Path
    timeline: pd.DataFrame
    threshold: float
    model: str
    first_alert: float | None
    reasons: list[str] = field(default_factory=list)
    seconds: float = 0.0
    frames_perceived: int = 0
    # wall time of each stride (decode, perception, features, model since the previous one): a
    # measurement, kept out of to_dict and the output files so those stay deterministic
    stride_seconds: list[float] = field(default_factory=list, repr=False)
    alert_policy: str = ""
    perception: dict = field(default_factory=dict)

    @property
    def peak(self) -> tuple[float, float] | None:
        """(time_s, risk) of the highest risk; None when the timeline is empty (a video shorter
        than one stride has no risk estimate)."""
        if self.timeline.empty:
            return None
        i = int(self.timeline.risk.idxmax())
        return float(self.timeline.time_s[i]), float(self.timeline.risk[i])

    def to_dict(self) -> dict:
        peak = self.peak
        return {
            "video": str(self.video), "model": self.model, "perception": self.perception, "threshold": self.threshold,
            "alert_policy": self.alert_policy, "first_alert_s": self.first_alert,
            "peak": None if peak is None else {"time_s": peak[0], "risk": peak[1]}, "reasons": self.reasons,
            "timeline": [{**r, "evidence": json.loads(r["evidence"])} if r.get("evidence") else r
                         for r in json.loads(self.timeline.to_json(orient="records"))],
        }


def resolve_model(model: str | Path | RiskModel | None, cfg: CrashcastConfig) -> RiskModel:
    """A risk model from a model, a saved model folder, or the name of a training-free one (physics, ttc).
    A saved VLM runs on `cfg.runtime`'s device, weights folder and batch size."""
    if isinstance(model, RiskModel):
        return model
    if model is None or str(model) in TRAINING_FREE:
        return create_model(str(model or "physics"), cfg.physics.model_dump())
    loaded = load_model(model, runtime=cfg.runtime)  # checked whole: a bad folder fails before any video is read
    computed = set(feature_columns(cfg.features.top_k))
    missing = [c for c in loaded.columns() if c not in computed]
    if missing:
        raise ModelError(f"{Path(model) / 'model.json'}: the model reads {', '.join(missing[:3])}, which features.top_k="
                         f"{cfg.features.top_k} does not compute; predict with the config it was trained with "
                         "(--config <its run>/config.yaml) or --set features.top_k=<its value>")
    return loaded


def history_s(cfg: CrashcastConfig) -> float:
    """Seconds of perception the streaming predictor keeps: what a window reaches back from its end,
    plus one perceived-frame interval (with `annotate` every frame is read, so a window can end up to
    an interval after the last perceived frame), plus 0.1 s so float rounding never cuts a frame a
    window needs. Older frames are forgotten: constant work per stride."""
    return lookback_s(cfg.windows.span_s) + cfg.perception.frame_step / cfg.video.fps + 0.1


def _window_at(t: float, cfg: CrashcastConfig, clip_id: str, phase: Phase = MODEL_PHASE) -> Window:
    """The `phase` window ending at t (keyframes at the paper's fractions, clamped at 0)."""
    span = cfg.windows.span_s
    fr = cfg.windows.keyframe_fractions[phase]
    kfs = [t - span + f * span for f in fr]
    clamped = kfs[0] < 0
    if clamped:
        kfs = [t * (f - fr[0]) / (fr[2] - fr[0]) for f in fr]
    kfs = tuple(max(0.0, k) for k in kfs)
    return Window(clip_id, phase, 0.0, t, kfs[0], t, kfs, clamped, 0, (None,) * 3, (None,) * 3, 0.0, "now")


#: the stride's range: 0 would never advance, and beyond a minute nothing is anticipated
STRIDE_RANGE_S = (0.05, 60.0)


def check_settings(stride_s: float, threshold: float, smooth: int | None = None) -> None:
    """ConfigError unless the stride is within `STRIDE_RANGE_S`, the threshold a number in [0, 1] and
    `smooth` (when given) a whole number of strides from 1 to 100 (checked before any video is read)."""
    lo, hi = STRIDE_RANGE_S
    if not (isinstance(stride_s, int | float) and math.isfinite(stride_s) and lo <= stride_s <= hi):
        raise ConfigError(f"stride_s={stride_s!r}: seconds between risk estimates must be from {lo} to {hi}")
    if not (isinstance(threshold, int | float) and math.isfinite(threshold) and 0 <= threshold <= 1):
        raise ConfigError(f"threshold={threshold!r}: an alert threshold is a probability from 0 to 1")
    if smooth is not None and (isinstance(smooth, bool) or not isinstance(smooth, int) or not 1 <= smooth <= 100):
        raise ConfigError(f"smooth={smooth!r}: the number of strides the risk is smoothed over is a whole number from 1 to 100")


def alert_policy_for(cfg: CrashcastConfig, threshold: float, policy: str | AlertPolicy | None = None,
                     smooth: int | None = None) -> AlertPolicy:
    """The alert policy predict applies: `policy` (a policy, whose threshold becomes `threshold`, or a
    registered name with the config's `alert` settings), else the median of `smooth` strides when
    `smooth` is given (the rule before issue 24), else the config's `alert` section."""
    import dataclasses

    if isinstance(policy, AlertPolicy):
        return dataclasses.replace(policy, threshold=threshold)
    if policy is None and smooth is not None:
        return alerts.Median(threshold=threshold, window=smooth)
    return alerts.from_settings(cfg.alert, threshold, policy)


def with_alert_policy(cfg: CrashcastConfig, policy: str) -> CrashcastConfig:
    """`cfg` with `alert.policy` set to `policy` (its other alert settings kept); ConfigError names
    the known policies."""
    if policy not in alerts.POLICIES:
        raise ConfigError(f"alert policy {policy!r}: unknown; known: {', '.join(alerts.POLICIES)}")
    return cfg.model_copy(update={"alert": cfg.alert.model_copy(update={"policy": policy})})


def perception_label(perception: dict) -> str:
    """`classic 1a2b3c4d5e6f` (the preset and extraction hash) for a title or an overlay."""
    return f"{perception.get('preset', '?')} {perception.get('extraction_hash', '')}".strip()


class Stepper:
    """The causal core of `predict`, one frame at a time: `feed(t, frame)` takes the frames of the
    `video.fps` grid in time order (t = k / fps; every `frame_step`-th is perceived, the others only
    drawn on) and returns the stride's row when a window ends at t (every `stride_s` seconds, the
    first at `stride_s`), else None. Perception keeps only the frames a window reaches back to, so
    the work per stride stays the same however long the stream runs; a gap (missing frames: a
    damaged file, frames a live source dropped) is one stride, not many. Between strides it keeps
    what an annotated frame shows (`annotated(frame, t)`). `predict` runs it over a file;
    `crashcast.live` over a camera stream."""

    def __init__(self, model: RiskModel, cfg: CrashcastConfig, stride_s: float, threshold: float,
                 policy: AlertPolicy, clip_id: str, backends: Backends | None = None) -> None:
        self.model, self.cfg, self.stride_s, self.threshold, self.clip_id = model, cfg, stride_s, threshold, clip_id
        self.policy = policy
        self._alerts = policy.start()
        self._backends = backends
        self.perception: Perception | None = None
        self._chash = cfg.extraction_hash()
        self.perception_info: dict = {"preset": cfg.name, "extraction_hash": self._chash}
        self.rows: list[dict] = []
        self.stride_seconds: list[float] = []
        self.last_det = None
        self.last_depths: dict[int, float] = {}
        self.last_ttc: dict[int, float] = {}
        self.risk, self.raw, self.alert, self.reason = 0.0, 0.0, False, ""
        self._next_t = stride_s
        self._t_stride = time.perf_counter()
        # a model that reads prompts sees keyframe overlays: the perceived frames of the window span are
        # kept (by frame index) and the overlays written to a scratch folder at each stride
        self._scratch = tempfile.TemporaryDirectory(prefix="crashcast-predict-") if model.reads_prompts else None
        self._recent: dict[int, np.ndarray] = {}
        self._keep_frames = round(history_s(cfg) * cfg.video.fps) + cfg.perception.frame_step

    def close(self) -> None:
        """Remove the scratch folder of keyframe overlays (a model that reads prompts)."""
        if self._scratch is not None:
            self._scratch.cleanup()
            self._scratch = None

    def feed(self, t: float, frame: np.ndarray) -> dict | None:
        from crashcast.features.build import build_window_meta

        cfg, fps, step = self.cfg, self.cfg.video.fps, self.cfg.perception.frame_step
        k = round(t * fps)  # the frame's index on the fps grid
        if self.perception is None:
            h, w = frame.shape[:2]
            if self._backends is None:
                self._backends = Backends.build(cfg.perception, cfg.runtime)
            self.perception = Perception(self._backends, cfg.perception, w, h, fps, self.clip_id, history_s=history_s(cfg))
            self.perception_info["backends"] = dict(self.perception.backend_names)
        if k % step == 0:
            if self._scratch is not None:
                self._recent[k] = frame
                for old in [i for i in self._recent if i < k - self._keep_frames]:
                    del self._recent[old]
            # a model reading prompts sees the overlays extraction draws: with the masks
            result = self.perception.step(frame, t, keep_masks=self._scratch is not None)
            self.last_det = result.detections
            self.last_depths = {o.track_id: o.depth_m for o in result.objects}
        if t + 1e-9 < self._next_t:
            return None
        perc = self.perception.result()
        win = _window_at(t, cfg, self.clip_id)
        objects = window_objects(perc, win, cfg.features, cfg.perception.geometry.ego_front_m, fps)
        names: list[str | None] = [None] * 3
        if self._scratch is not None:
            names = overlays.write_keyframes(Path(self._scratch.name), win, perc,
                                             lambda j, times=perc.times_s: self._recent[round(times[j] * fps)], objects,
                                             caption=cfg.features.keyframe_caption)
        meta = build_window_meta(win, perc, cfg, names, objects, self._chash)
        windows = WindowSet.from_metas([meta], [Path(self._scratch.name) if self._scratch else None], cfg.features.top_k)
        main = windows.table
        self.last_ttc = {o.object_id: o.ttc_s for o in meta.objects if o.ttc_s is not None}
        scores = self.model.score(windows)
        raw = float(np.clip(self.model.calibration(scores.raw), 0.0, 1.0)[0])
        if not math.isfinite(raw):
            raise ModelError(f"{self.clip_id}: the {self.model.kind} model gave a non-finite risk ({raw}) at {t:.2f} s")
        decided = self._alerts.step(raw)  # the alert policy: causal, one stride at a time
        self.risk, self.raw, self.alert, self.reason = decided.shown, raw, decided.alert, scores.rationale[0]
        row = {"time_s": round(t, 3), "risk": round(self.risk, 4), "risk_raw": round(raw, 4),
               "alert": int(self.alert), "reason": self.reason,
               "min_ttc_s": float(main.min_ttc_s.iloc[0]), "looming_per_s": float(main.looming_per_s.iloc[0]),
               "n_objects": int(main.n_objects.iloc[0]),
               **{k: v[0] for k, v in scores.columns.items()},  # a VLM's answer, as it wrote it
               **_evidence_columns(scores)}
        self.rows.append(row)
        while self._next_t <= t + 1e-9:  # once, unless frames were missing (a gap)
            self._next_t += self.stride_s
        now = time.perf_counter()
        self.stride_seconds.append(now - self._t_stride)
        self._t_stride = now
        return row

    def annotated(self, frame: np.ndarray, t: float) -> np.ndarray:
        """`frame` with the latest boxes, depths, TTCs, risk gauge, alert and reason drawn on."""
        return _annotated(frame, self.last_det, self.last_depths, self.last_ttc, self.risk, self.threshold, self.reason,
                          t, raw=self.raw, alert=self.alert, perception=perception_label(self.perception_info))

    def prediction(self, video: Path, seconds: float) -> Prediction:
        """The strides so far as a `Prediction` (timeline, first alert, reasons)."""
        return _prediction(video, self, seconds)


@sigterm_raises()  # SIGTERM as Ctrl-C: the annotated video's temporary file and the scratch folder are removed
def predict(
    path: str | Path,
    model: str | Path | RiskModel | None = None,
    config: str | Path | CrashcastConfig | None = None,
    stride_s: float = 0.5,
    threshold: float = 0.5,
    annotate: str | Path | None = None,
    smooth: int | None = None,
    backends: Backends | None = None,
    alert_policy: str | AlertPolicy | None = None,
) -> Prediction:
    """Risk timeline of one video (see the module docstring). The alert policy (`alert_policy`: a
    name or a policy; None: the config's `alert` section, `smooth` given: the median of that many
    strides) turns each stride's raw risk (`risk_raw`) into the risk shown (`risk`) and the alert
    state (`alert`), causally; `annotate` writes an MP4 with boxes and a risk gauge.
    `backends`: perception backends built once for many videos (`Backends.build`); built here when None."""
    check_settings(stride_s, threshold, smooth)
    t_start = time.time()
    path = Path(path)
    cfg = config if isinstance(config, CrashcastConfig) else load_config(config or "classic")
    policy = alert_policy_for(cfg, threshold, alert_policy, smooth)
    stepper = Stepper(resolve_model(model, cfg), cfg, stride_s, threshold, policy, path.stem, backends)
    writer: VideoWriter | None = None
    try:
        # without an annotated video only the perceived frames are needed (the others are never converted)
        every = 1 if annotate else cfg.perception.frame_step
        for t, frame in iter_resampled(path, cfg.video.fps, cfg.video.long_side, every=every):
            if annotate and writer is None:
                writer = VideoWriter(annotate, cfg.video.fps, (frame.shape[1], frame.shape[0]))
            stepper.feed(t, frame)
            if writer is not None:
                writer.write(stepper.annotated(frame, t))
    except BaseException:
        if writer is not None:
            writer.close(keep=False)  # no half video under the final name
        raise
    finally:
        stepper.close()
    if writer is not None:
        writer.close()
    if stepper.perception is None:
        raise CrashcastError(f"{path}: no frames")
    return stepper.prediction(path, time.time() - t_start)


def _prediction(path: Path, stepper: Stepper, seconds: float) -> Prediction:
    rows = stepper.rows
    columns = ["time_s", "risk", "risk_raw", "alert", "reason", "min_ttc_s", "looming_per_s", "n_objects"]
    timeline = pd.DataFrame(rows, columns=list(dict.fromkeys(columns + [k for r in rows[:1] for k in r])))
    alert_rows = timeline[timeline.alert == 1]
    first_alert = float(alert_rows.time_s.iloc[0]) if len(alert_rows) else None
    reasons = []
    if len(alert_rows):
        reasons.append(f"at {first_alert:.1f} s: {alert_rows.reason.iloc[0]}")
    if len(timeline):
        i = int(timeline.risk.idxmax())
        peak_reason = f"peak {timeline.risk[i]:.2f} at {timeline.time_s[i]:.1f} s: {timeline.reason[i]}"
        if not reasons or timeline.reason[i] != alert_rows.reason.iloc[0]:
            reasons.append(peak_reason)
    if timeline.empty:
        log.info("%s: shorter than one stride (%.2f s): no risk estimate", path, stepper.stride_s)
    frames = stepper.perception.frames_processed if stepper.perception is not None else 0
    return Prediction(path, timeline, stepper.threshold, stepper.model.kind, first_alert, reasons, seconds,
                      frames, stepper.stride_seconds, alert_policy=stepper.policy.describe(),
                      perception=stepper.perception_info)


def _evidence_columns(scores) -> dict[str, str]:
    """The reason's evidence as the timeline keeps it (last columns): `driving_term` (object, looming,
    features, vlm, ...) and `evidence`, the whole `Evidence` as compact JSON (an object in timeline.json)."""
    if scores.evidence is None:
        return {}
    ev = scores.evidence[0]
    return {"driving_term": ev.driving.name if ev.driving else "",
            "evidence": json.dumps(ev.to_dict(), separators=(",", ":"), allow_nan=False)}


def _annotated(frame: np.ndarray, det, depths: dict[int, float], ttcs: dict[int, float], risk: float, threshold: float,
               reason: str, t: float, raw: float | None = None, alert: bool | None = None,
               perception: str = "") -> np.ndarray:
    """Boxes, ids, class, depth and TTC labels, the risk shown, the raw risk, the alert state and the
    reason, a risk gauge (the bar: the risk shown; the white tick: the threshold; the cyan tick: the
    raw risk; red and ALERT while the alert is on) and which perception produced it, on one frame."""
    import cv2

    from crashcast.types import Detections

    alert = risk >= threshold if alert is None else alert
    det = det if det is not None else Detections.empty()
    labels = []
    for i in range(len(det)):
        tid = int(det.tracker_id[i]) if det.tracker_id is not None else i
        labels.append(overlays.object_label(tid, str(det.class_name[i]), depths.get(tid), ttcs.get(tid)))
    raw_text = "" if raw is None else f" (raw {raw:.2f})"
    caption = f"t={t:5.2f}s  {'ALERT ' if alert else ''}risk {risk:.2f}{raw_text}  {reason[:60]}"
    img = overlays.draw(frame, det, labels, caption)
    h, w = img.shape[:2]
    x0, y0, gw, gh = w - 30, 30, 16, h - 60  # the gauge: a bar filling from the bottom
    cv2.rectangle(img, (x0, y0), (x0 + gw, y0 + gh), (40, 40, 40), -1)
    fill = int(gh * min(max(risk, 0.0), 1.0))
    color = (230, 40, 40) if alert else ((240, 180, 40) if risk >= 0.5 * threshold else (60, 200, 80))
    cv2.rectangle(img, (x0, y0 + gh - fill), (x0 + gw, y0 + gh), color, -1)
    ty = y0 + gh - int(gh * threshold)
    cv2.line(img, (x0 - 4, ty), (x0 + gw + 4, ty), (255, 255, 255), 1)
    if raw is not None:
        ry = y0 + gh - int(gh * min(max(raw, 0.0), 1.0))
        cv2.line(img, (x0 - 8, ry), (x0 - 1, ry), (40, 220, 240), 2)
    if alert:
        # left of the gauge's top, below the caption bar (a long caption reaches the right edge)
        cv2.putText(img, "ALERT", (max(0, x0 - 56), y0 + 14), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (230, 40, 40), 2, cv2.LINE_AA)
    if perception:  # which perception produced these boxes and numbers
        cv2.rectangle(img, (0, h - 16), (min(w, 8 + 7 * (len(perception) + 12)), h), (0, 0, 0), -1)
        cv2.putText(img, f"perception: {perception}", (4, h - 4), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return img


def write_outputs(pred: Prediction, out_dir: str | Path) -> dict[str, Path]:
    """timeline.csv, timeline.json and risk.png in out_dir. The CSV has a `perception` column (the
    preset and extraction hash, `perception_label`); timeline.json a `perception` object."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"csv": out / "timeline.csv", "json": out / "timeline.json", "png": out / "risk.png"}
    table = pred.timeline.assign(perception=perception_label(pred.perception)) if pred.perception else pred.timeline
    atomic_write_text(paths["csv"], table.to_csv(index=False))
    atomic_write_text(paths["json"], json.dumps(pred.to_dict(), indent=1, default=_num))
    from crashcast.runtime.store import atomic_write_bytes

    atomic_write_bytes(paths["png"], risk_plot(pred))
    return paths


def _num(v):
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    raise TypeError(type(v))


def alert_intervals(times_s: Sequence[float], alert: Sequence[int | bool], stride_s: float | None = None) -> list[tuple[float, float]]:
    """(start, end) seconds of each stretch with the alert on: a stride's alert holds from its time
    until the next stride (the last one: one stride on, `stride_s` or the median step)."""
    t = [float(x) for x in times_s]
    if stride_s is None:
        stride_s = float(np.median(np.diff(t))) if len(t) > 1 else 0.5
    out: list[tuple[float, float]] = []
    for i, (ti, a) in enumerate(zip(t, alert, strict=True)):
        if not a:
            continue
        end = t[i + 1] if i + 1 < len(t) else ti + stride_s
        if out and abs(out[-1][1] - ti) < 1e-9:
            out[-1] = (out[-1][0], end)
        else:
            out.append((ti, end))
    return out


def risk_plot(pred: Prediction) -> bytes:
    """risk.png: `risk_figure` as PNG bytes."""
    from crashcast.evaluation.plots import _png

    return _png(risk_figure(pred))


def risk_figure(pred: Prediction):
    """The risk shown and the raw risk against the threshold, the alert intervals shaded, and which
    perception and alert policy produced them in the title (a note instead of curves when empty)."""
    from crashcast.evaluation.plots import _fig

    fig, ax = _fig(7.0, 2.8)
    tl = pred.timeline
    if not tl.empty:
        ax.plot(tl.time_s, tl.risk, "-", color="#d04040", lw=2.2, alpha=0.8, label="risk shown")
        ax.plot(tl.time_s, tl.risk_raw, ".-", color="#303030", lw=0.7, ms=3, label="raw risk")
        alert = tl["alert"] if "alert" in tl else (tl.risk >= pred.threshold).astype(int)
        for k, (a, b) in enumerate(alert_intervals(tl.time_s, alert)):
            ax.axvspan(a, b, color="#f0a0a0", alpha=0.35, lw=0, label="alert on" if k == 0 else None)
    else:
        ax.text(0.5, 0.5, "no risk estimate: the video is shorter than one stride", ha="center", va="center",
                transform=ax.transAxes, fontsize=8)
    ax.axhline(pred.threshold, color="k", ls="--", lw=1, label=f"threshold {pred.threshold}")
    if pred.first_alert is not None:
        ax.axvline(pred.first_alert, color="#c03030", ls=":", lw=1, label=f"first alert {pred.first_alert:.1f} s")
    title = pred.video.name
    if pred.perception:
        title += f"  |  perception: {perception_label(pred.perception)}"
    if pred.alert_policy:
        title += f"\nmodel {pred.model}, alert: {pred.alert_policy}"
    ax.set(xlabel="time (s)", ylabel="collision risk", ylim=(-0.02, 1.02))
    ax.set_title(title, fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def _predict_setup(model: str | RiskModel | None, cfg_json: str) -> tuple[Backends, RiskModel, CrashcastConfig]:
    """A worker's resource for `predict_many`: the backends and the risk model, built once."""
    cfg = CrashcastConfig.model_validate_json(cfg_json)
    return Backends.build(cfg.perception, cfg.runtime), resolve_model(model, cfg), cfg


RESERVED_NAMES = frozenset({"errors.jsonl"})
"""Names in a predict --out folder that are not a video's (compared case-insensitively)."""


def _safe_name(name: str) -> str:
    """`name` as one folder name inside --out: path separators and control characters become `_`;
    a name of dots, blanks or nothing (`.`, `..`: it would be --out or its parent) becomes `video`."""
    name = "".join("_" if c in "/\\" or ord(c) < 32 else c for c in name)
    return "video" if not name.strip(". ") else name


def _shortened(name: str, max_bytes: int = 230) -> str:
    """`name` cut to `max_bytes` of UTF-8 (a whole character last), so a suffix still fits a file name (255 bytes)."""
    return name.encode()[:max_bytes].decode(errors="ignore")


def output_names(paths: list[Path]) -> list[str]:
    """The folder in --out of each video, unique (case-insensitively, so also on case-insensitive
    file systems) and a single name inside --out, decided by the inputs alone (not by the workers or
    the executor): the video's stem when no other video of the run has it; else its file name (stem
    and extension: clip.mp4, clip.avi); else that name and 8 hex digits of the SHA-256 of its
    resolved path (a/clip.mp4, b/clip.mp4); a video given twice, or a name still taken, gets -2, -3
    in input order. Unsafe stems (`.`, `..`, separators) are made safe first (`_safe_name`)."""
    import hashlib
    from collections import Counter

    def dupes(names: list[str]) -> set[str]:
        counts = Counter(n.casefold() for n in names)
        return {n for n, c in counts.items() if c > 1 or n in RESERVED_NAMES}

    names = [_safe_name(p.stem) for p in paths]
    taken = dupes(names)
    names = [_safe_name(p.name) if n.casefold() in taken else n for n, p in zip(names, paths, strict=True)]
    taken = dupes(names)
    names = [f"{_shortened(n)}-{hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:8]}" if n.casefold() in taken
             else n for n, p in zip(names, paths, strict=True)]
    unique: list[str] = []
    seen = set(RESERVED_NAMES)
    for n in names:
        name, k = n, 2
        while name.casefold() in seen:
            name, k = f"{_shortened(n)}-{k}", k + 1
        seen.add(name.casefold())
        unique.append(name)
    return unique


def _predict_job(resource: tuple[Backends, RiskModel, CrashcastConfig], path: Path, out_dir: Path, stride_s: float,
                 threshold: float, annotate: bool, name: str) -> tuple[Prediction, dict[str, Path]]:
    backends, model, cfg = resource
    sub = out_dir / name
    pred = predict(path, model, cfg, stride_s, threshold, annotate=(sub / "annotated.mp4") if annotate else None,
                   backends=backends)
    return pred, write_outputs(pred, sub)


@dataclass
class VideoOutcome:
    """One video of `predict_many`: its prediction and files, or the error that stopped it."""

    path: Path
    prediction: Prediction | None = None
    files: dict[str, Path] | None = None
    error: str | None = None
    error_type: str | None = None
    name: str = ""
    """Its folder in the output folder, also its id in errors.jsonl (`output_names`)."""


def predict_many(paths: list[Path], model: str | Path | RiskModel | None, cfg: CrashcastConfig, out_dir: Path,
                 stride_s: float = 0.5, threshold: float = 0.5, annotate: bool = False, workers: int = 1,
                 executor: str = "local", address: str | None = None, progress: bool = True) -> Iterator[VideoOutcome]:
    """`predict` + `write_outputs` (into out_dir/<name>/, `output_names`: the video's stem when unique) for many videos, one outcome per video
    in `paths` order; one video's failure is in its outcome and the others go on.
    With one local worker (or one video) the videos run one after another in this process, the
    perception backends built once (on the first video) and the model resolved once, and each outcome
    is yielded as its video finishes (nothing runs until the iterator is consumed). Otherwise `workers` local processes, or Ray actors
    (`executor="ray"`, `address` a cluster or None for this machine), each build the backends and the
    risk model (a saved folder or physics/ttc) once, and the outcomes come when all are done (the
    jobs run in this call).
    An unknown executor, or Ray not installed, raises `ExecutorError` here, before any video is read."""
    check_settings(stride_s, threshold)
    alert_policy_for(cfg, threshold)  # a bad alert setting fails before any video is read
    from crashcast.runtime.executors import get_executor

    runner = get_executor(executor, workers, address, runtime=cfg.runtime)
    risk_model = resolve_model(model, cfg)  # here too when workers load it: a bad folder fails before any video
    if runs_in_process(executor, workers, len(paths)):
        return _predict_in_process(list(paths), risk_model, cfg, Path(out_dir), stride_s, threshold, annotate)
    return _predict_parallel(runner, list(paths), model, cfg, Path(out_dir), stride_s, threshold, annotate, progress)


def runs_in_process(executor: str, workers: int, n_videos: int) -> bool:
    """Whether `predict_many` runs the videos in this process (one after another) rather than in workers."""
    return executor == "local" and (workers <= 1 or n_videos <= 1)


def _predict_in_process(paths: list[Path], risk_model: RiskModel, cfg: CrashcastConfig, out_dir: Path, stride_s: float,
                        threshold: float, annotate: bool) -> Iterator[VideoOutcome]:
    backends = Backends.build(cfg.perception, cfg.runtime)  # once for every video (model weights load once)
    for path, name in zip(paths, output_names(paths), strict=True):
        sub = out_dir / name
        try:
            pred = predict(path, risk_model, cfg, stride_s, threshold,
                           annotate=(sub / "annotated.mp4") if annotate else None, backends=backends)
            yield VideoOutcome(path, pred, write_outputs(pred, sub), name=name)
        except Exception as e:  # one video's failure is recorded; the others go on
            if not isinstance(e, CrashcastError | OSError):
                log.debug("unexpected failure on %s", path, exc_info=True)
            yield VideoOutcome(path, error=str(e), error_type=type(e).__name__, name=name)


def _predict_parallel(runner: JobExecutor, paths: list[Path], model: str | Path | RiskModel | None,
                      cfg: CrashcastConfig, out_dir: Path, stride_s: float, threshold: float, annotate: bool,
                      progress: bool) -> Iterator[VideoOutcome]:
    from functools import partial

    cfg_json = cfg.model_dump_json()
    if isinstance(model, str | Path) and Path(model).exists():
        model = str(Path(model).absolute())  # a worker's working folder is not this one (nor on this machine)
    setup = partial(_predict_setup, model, cfg_json)
    names = output_names(paths)
    jobs = [(str(i), (Path(p).absolute(), out_dir.absolute(), stride_s, threshold, annotate, name))
            for i, (p, name) in enumerate(zip(paths, names, strict=True))]
    with sigterm_raises():  # SIGTERM as Ctrl-C: the workers stopped and this said before the process ends
        try:
            results = runner.run(_predict_job, jobs, f"predicting {len(paths)} videos", progress, setup=setup)
        except (KeyboardInterrupt, Terminated) as e:
            log.warning("prediction stopped by %s: the videos that finished have complete outputs in %s, the others "
                        "none (a rerun predicts every video again)", stop_reason(e), out_dir)
            raise
    return iter([VideoOutcome(Path(path), *r.value, name=name) if r.ok
                 else VideoOutcome(Path(path), error=r.error, error_type=r.error_type, name=name)
                 for path, name, r in zip(paths, names, results, strict=True)])


def videos_in(inputs: list[Path]) -> list[Path]:
    """Expand folders into the video files inside them (sorted)."""
    from crashcast.data.annotations import VIDEO_SUFFIXES

    out = []
    for p in inputs:
        if p.is_dir():
            out += sorted(q for q in p.iterdir() if q.suffix.lower() in VIDEO_SUFFIXES)
        else:
            out.append(p)
    return out


__all__ = ["Prediction", "VideoOutcome", "alert_intervals", "alert_policy_for", "output_names", "perception_label", "predict", "predict_many", "runs_in_process", "videos_in",
           "with_alert_policy", "write_outputs"]
