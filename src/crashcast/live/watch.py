"""Collision warnings from a live source, one stride at a time (`crashcast watch`, `crashcast.live.watch`).

`watch(source)` yields one dict per stride: what `predict`'s timeline row holds (time_s, risk,
risk_raw, alert, reason, ...) plus how live it was: `latency_s` (from the decoding of the newest
frame the stride used to its risk), `dropped` (frames the bounded queue dropped since the previous
stride because perception fell behind), `drop_rate` (of all frames received so far), `reconnects`.
It runs the same causal `prediction.Stepper` as `predict`: on a file played without drops the
timeline is predict's (the frames are put on the same `video.fps` grid by the same hold rule: a
grid time shows the last frame decoded at or before it).

Keeping up: the backends and the model are built before the source opens, then (`probe`) timed on
a synthetic scene, and a line says whether they keep up; after the first strides a second line says
what the stream itself cost. When perception falls behind, the source's queue drops the oldest
frames; the picture before a run of dropped frames is then shown for its own duration only
(perceiving it again over the missing ones would cost the very time that was missing), and the
stepper sees a gap, as it does where nothing came for more than `GAP_LIMIT_S` beyond a picture's
duration (predict's rule for a damaged file). When the source ends, its last picture lasts a typical
frame, as the last frame of a file does in predict.

The event recorder (`record`): the annotated frames of the last `pre_s` seconds are kept; at each
alert onset a clip from `pre_s` before to `post_s` after (extended while alerts go on) is written
as MP4 + JSON, atomically, into the folder, the oldest clips deleted beyond `max_record_bytes`.

The live page (`serve`, "HOST:PORT" or ":PORT" for 127.0.0.1): `live.web.LiveView` shows the newest
annotated frame and stride; frames are drawn for it only while a browser is looking (at most 15 a second).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from collections import deque
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from crashcast.config import CrashcastConfig, load_config
from crashcast.data.video import GAP_LIMIT_S, MAX_FRAME_S, target_size
from crashcast.live.probe import keep_up_message, probe_size, work_per_stride
from crashcast.live.source import LiveSource
from crashcast.perception.pipeline import Backends
from crashcast.prediction import Stepper, alert_policy_for, check_settings, resolve_model
from crashcast.risk.alerts import AlertPolicy
from crashcast.risk.models import RiskModel

log = logging.getLogger(__name__)

INTERVALS_KEPT = 31  # times between frames whose median is a picture's duration
_EPS = 1e-9
KEEP_UP_STRIDES = 4  # strides measured before saying whether the preset keeps up


def watch(source: str | Path, model: str | Path | RiskModel | None = None,
          config: str | Path | CrashcastConfig | None = None, stride_s: float = 0.5, threshold: float = 0.5,
          alert_policy: str | AlertPolicy | None = None, record: str | Path | None = None, pre_s: float = 5.0,
          post_s: float = 5.0, max_record_bytes: int = 2 * 2**30, queue_size: int = 8, realtime: bool | None = None,
          reconnect: bool | None = None, timeout_s: float = 10.0, probe: bool = True,
          serve: str | None = None) -> Iterator[dict]:
    """One dict per stride from `source` (a camera device, a stream URL, or a file played at its real
    rate), until the source ends for good; see the module docstring. Closing the iterator (or
    Ctrl-C) stops the reader and finishes the recording being written. `timeout_s`: a source that
    gives no frame for that long has dropped (reopened when `reconnect`: streams and devices).
    The perception backends and the model are built before the source opens; `probe` then measures
    them on a synthetic scene and says whether they keep up (`crashcast.live.probe`).
    `serve`: "HOST:PORT" of the live page (`live.web`; port 0: any free one), its URL logged."""
    check_settings(stride_s, threshold)
    cfg = config if isinstance(config, CrashcastConfig) else load_config(config or "classic")
    policy = alert_policy_for(cfg, threshold, alert_policy)
    name = Path(str(source)).stem if "://" not in str(source) else "stream"
    # what can fail without a model fails first: the source's name, the page's address and port
    src = LiveSource(str(source), queue_size=queue_size, realtime=realtime, reconnect=reconnect, open_timeout_s=timeout_s)
    view = recorder = stepper = None
    try:
        if serve is not None:
            from crashcast.live.web import LiveView, parse_serve

            view = LiveView(*parse_serve(serve))
            log.info("live view: %s", view.url)
        risk_model = resolve_model(model, cfg)
        backends = Backends.build(cfg.perception, cfg.runtime)  # before the source opens: no frame waits for it
        if probe:
            _say_probe(risk_model, cfg, backends, stride_s, threshold, policy, annotate=record is not None)
        stepper = Stepper(risk_model, cfg, stride_s, threshold, policy, name, backends)
        if record is not None:
            from crashcast.live.recorder import EventRecorder

            recorder = EventRecorder(Path(record), cfg.video.fps, pre_s=pre_s, post_s=post_s, max_bytes=max_record_bytes)
        yield from _run(src, stepper, recorder, view, cfg, stride_s)
    finally:
        _close_all(src, stepper, recorder, view, source)


def _run(src: LiveSource, stepper: Stepper, recorder, view, cfg: CrashcastConfig, stride_s: float) -> Iterator[dict]:
    """The source's frames onto the `video.fps` grid and through the stepper, one row per stride."""
    fps, step = cfg.video.fps, cfg.perception.frame_step
    k, prev, size = 0, None, None
    intervals: deque[float] = deque(maxlen=INTERVALS_KEPT)  # between the last frames received in sequence
    work = 0.0  # seconds spent in perception, the model and the recorder after the first stride
    counts_at_first = (0, 0)  # (dropped, received) at the first stride
    dropped_before = 0
    alert_before = False

    def through(until: float) -> Iterator[dict]:
        """Feed `prev`'s picture to every grid time before `until`; the rows of strides that end."""
        nonlocal k, work, dropped_before, alert_before, counts_at_first
        while k / fps < until - _EPS:
            t0 = time.perf_counter()
            row = _feed(stepper, recorder, view, k, prev, fps, step, size)
            if stepper.rows:  # the first stride is not counted
                work += time.perf_counter() - t0
            k += 1
            if row is None:
                continue
            dropped = src.dropped  # read once: the reader thread goes on counting
            out = _live_row(row, prev, src, dropped - dropped_before, dropped)
            dropped_before = dropped
            if view is not None:
                view.note(out)
            if recorder is not None:
                recorder.note(out)
                if out["alert"] and not alert_before:
                    recorder.trigger(out["time_s"], {"reason": out["reason"], "risk": out["risk"]})
            alert_before = bool(out["alert"])
            if len(stepper.rows) == 1:
                counts_at_first = (dropped, src.received)
            _keep_up(len(stepper.rows), work, stride_s, cfg.name, dropped - counts_at_first[0],
                     src.received - counts_at_first[1])
            yield out

    src.__enter__()
    for live in src.frames():
        if prev is None:
            size = target_size(live.frame.width, live.frame.height, cfg.video.long_side)
            k = math.ceil(live.t * fps - _EPS)
        else:
            if live.seq == prev.seq + 1:
                intervals.append(live.t - prev.t)
            # as predict's decoding: the previous picture is shown until the next one, unless nothing came
            # for more than GAP_LIMIT_S beyond its own duration (a gap: shown for its duration only). And
            # where the queue dropped the frames between the two, for its duration only too: perceiving it
            # again over the dropped ones would cost the very time that was missing.
            shown_until = prev.t + _frame_duration(intervals, fps)
            gap = live.seq != prev.seq + 1 or live.t - shown_until > GAP_LIMIT_S + _EPS
            yield from through(min(live.t, shown_until) if gap else live.t)
            k = max(k, math.ceil(live.t * fps - _EPS))
        prev = live
    if prev is not None and not src.stopped:  # the source ended: its last picture lasts a typical frame
        yield from through(prev.t + _frame_duration(intervals, fps))


def _frame_duration(intervals: deque[float], fps: float) -> float:
    """How long a picture is shown: the median time between the last frames received in sequence
    (at most MAX_FRAME_S); one grid step before any."""
    return min(float(np.median(intervals)), MAX_FRAME_S) if intervals else 1.0 / fps


def _say_probe(model: RiskModel, cfg: CrashcastConfig, backends: Backends, stride_s: float, threshold: float,
               policy: AlertPolicy, annotate: bool) -> None:
    per_stride = work_per_stride(model, cfg, backends, stride_s, threshold, policy, annotate=annotate)
    w, h = probe_size(cfg)
    if per_stride is None:
        log.info("no start-up estimate for a %.2f s stride (the probe scene is too short); it is said after the "
                 "first strides", stride_s)
        return
    level, said = keep_up_message(per_stride, stride_s, cfg.name, f"at start, on a synthetic {w}x{h} scene")
    log.log(level, said)


def _close_all(src: LiveSource, stepper: Stepper | None, recorder, view, source) -> None:
    """Finish the recording first (the clip in progress is written whole), then stop the page, the
    reader and the stepper. Each is closed even when another fails; a failure is raised only when no
    other exception is on its way out (Ctrl-C keeps its exit status), else logged."""
    errors: list[BaseException] = []
    steps = [("event recorder", recorder), ("live view", view), ("source", src), ("stepper", stepper)]
    for what, thing in steps:
        if thing is None:
            continue
        try:
            done = thing.close()
            if what == "event recorder":
                for path in done:
                    log.info("event recording %s", path)
        except Exception as e:
            log.error("closing the %s: %s", what, e)
            errors.append(e)
    if src.received:
        log.info("%s: %d frames received, %d dropped (%.1f %%), %d reconnection(s)", source, src.received,
                 src.dropped, 100.0 * src.dropped / max(1, src.received), src.reconnects)
    in_flight = sys.exc_info()[1]
    if errors and (in_flight is None or isinstance(in_flight, GeneratorExit)):
        raise errors[0]


def _feed(stepper: Stepper, recorder, view, k: int, live, fps: float, step: int, size) -> dict | None:
    """Grid frame k (showing `live`'s picture) through the stepper, into the recorder, and onto the
    live page when a browser is looking."""
    t = k / fps
    fed = recorder is not None or not k % step  # the stepper's frames do not depend on the view: nor do the rows
    shown = view is not None and view.wants(t)
    if not fed and not shown:
        return None  # neither perceived, recorded nor shown: never converted (as predict without --annotate)
    rgb = live.frame.rgb(size)
    row = stepper.feed(t, rgb) if fed else None
    if recorder is not None or shown:
        frame = stepper.annotated(rgb, t)
        if recorder is not None:
            try:
                for path in recorder.add(t, frame):
                    log.info("event recording %s", path)
            except Exception as e:  # the writer's error (disk full, ...): that clip is lost, the warnings go on
                log.error("event recorder: %s; recording resumes at the next alert", e)
        if shown:
            view.add(t, frame)  # kept by reference: the recorder copies what it keeps, nothing writes into it
    return row


def _live_row(row: dict, live, src: LiveSource, dropped: int, dropped_total: int) -> dict:
    received = max(1, src.received)
    return {**row, "latency_s": round(time.monotonic() - live.captured, 4), "dropped": dropped,
            "drop_rate": round(dropped_total / received, 4), "reconnects": src.reconnects}


def _keep_up(strides: int, work_s: float, stride_s: float, preset: str, dropped: int, received: int) -> None:
    """After the first strides, say once whether perception and the model keep up with real time
    (`work_s`: the seconds they took after the first stride; `dropped` of `received` frames since).
    Frames dropped make the work per stride smaller than the preset's cost (fewer frames perceived),
    so then the share dropped is what is said."""
    if strides != KEEP_UP_STRIDES + 1:
        return
    measured_on = f"on the stream, strides 2-{strides}"
    if dropped:
        log.warning("falling behind (%s): %d of %d frames dropped (%.0f %%) with the %s preset on this machine (a "
                    "faster preset, a GPU, or a longer --stride)", measured_on, dropped, received,
                    100.0 * dropped / max(1, received), preset)
        return
    level, said = keep_up_message(work_s / KEEP_UP_STRIDES, stride_s, preset, measured_on)
    log.log(level, said)
