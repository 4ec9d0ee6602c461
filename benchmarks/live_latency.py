"""Live latency: end-to-end latency (a frame decoded -> the stride's risk) and frame drop rate of
`crashcast watch` for a perception preset at a frame size, on this machine.

A synthetic collision clip is rendered at each size and played to `crashcast.live.watch` at its real
rate (30 fps, as a camera delivers frames; `--udp` streams it over UDP MPEG-TS on 127.0.0.1
instead, through FFmpeg's network input); perception runs at the preset's `video.long_side` set to
the size's long side. Printed per preset and size: strides, latency median and 95th percentile,
the share of frames the bounded queue dropped because perception fell behind (all, in the first
stride, after it: a stream's opening delivers the frames FFmpeg read while probing it at once), and
whether it kept up (under 1 % dropped after the first stride).

    python benchmarks/live_latency.py                         # classic and fast, 640x360 and 1280x720
    python benchmarks/live_latency.py --preset classic --size 640x360 --seconds 8

A preset whose weights are not on disk (fast: `crashcast weights download fast`) is skipped with a
line saying so, unless `--random-weights`: every model weight is then replaced by its full-size
`random:<arch>` architecture (benchmarks/perception_models.py's table: yolo11n.pt -> random:yolo11n,
Depth-Anything-V2-Metric-Outdoor-Small-hf -> random:small), which costs what the checkpoint costs
per frame without a download. A random detector finds arbitrary boxes, so its boxes per frame are
capped at --boxes (8, a plausible street; the tracker and features then see that many objects).
The figures of such a run are marked "random weights". On a GPU machine the model presets run on
CUDA (runtime.device auto). Also printed: what watch's start-up probe estimated (a synthetic scene,
before the source opened) next to what the stream measured.

    # the fast preset's figures on this CPU without its weights (ultralytics needs a torchvision
    # that matches torch: the torch 2.14.1 + torchvision 0.29.1 pair of docs/INSTALL.md)
    python benchmarks/live_latency.py --preset fast --random-weights
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import numpy as np

from crashcast.config import load_config
from crashcast.data.synthetic import SynthConfig, generate
from crashcast.live.replay import replay_in_thread
from crashcast.live.watch import watch
from crashcast.readiness import preset_status

log = logging.getLogger("live_latency")


def _clip(folder: Path, width: int, height: int, seconds: float) -> Path:
    """A positive synthetic clip at `width`x`height` (the generator's own renderer)."""
    out = folder / f"{width}x{height}"
    generate(2, out, seed=3, workers=1, cfg=SynthConfig(width=width, height=height, min_duration_s=seconds,
                                                        max_duration_s=seconds))
    import csv

    rows = list(csv.DictReader((out / "annotations.csv").open()))
    positive = next(r for r in rows if r["target"] == "1")
    return out / f"{positive['id']}.mp4"


class _Said(logging.Handler):
    """Keeps what watch says about keeping up; `at_start` is called on its start-up line (the source
    opens next: a UDP sender started then is heard from its first packet)."""

    def __init__(self, at_start=None) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.at_start = at_start

    def emit(self, record: logging.LogRecord) -> None:
        said = record.getMessage()
        if said.startswith(("keeping up", "at the limit", "falling behind")):
            self.lines.append(said)
            if "(at start" in said and self.at_start is not None:
                self.at_start()


def bench_config(preset: str, long_side: int, random_weights: bool, boxes: int):
    """The preset at `long_side`; with `random_weights` every weight its full-size random architecture
    and each random detector capped at `boxes` boxes a frame. Returns the config and what was replaced."""
    from crashcast.config import CrashcastConfig

    data = load_config(preset, [f"video.long_side={long_side}"]).model_dump(mode="json")
    changed: list[str] = []
    if random_weights:
        from perception_models import randomize_weights  # benchmarks/ (this script's folder, on sys.path)

        randomize_weights(data["perception"], changed)
        for det in [data["perception"]["detector"], *data["perception"]["detector"].get("detectors", [])]:
            if str(det.get("weights", "")).startswith("random:") and "max_det" in det:
                det["max_det"] = boxes
    return CrashcastConfig.model_validate(data), changed


def run(preset: str, clip: Path, long_side: int, udp: bool, random_weights: bool = False, boxes: int = 8) -> dict:
    cfg, changed = bench_config(preset, long_side, random_weights, boxes)
    for line in changed:
        print(f"  random weights: {line}")
    said = _Said()
    logging.getLogger("crashcast.live.watch").addHandler(said)
    logging.getLogger("crashcast.live.watch").setLevel(logging.INFO)
    if udp:
        import socket

        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        senders = []  # started once watch has built and timed the models (it opens the source next)
        said.at_start = lambda: senders.append(replay_in_thread(clip, f"udp://127.0.0.1:{port}?pkt_size=1316"))
        source = f"udp://127.0.0.1:{port}?overrun_nonfatal=1"
        rows = list(watch(source, config=cfg, reconnect=False, timeout_s=3.0))
        for sender in senders:
            sender.join(timeout=30)
    else:
        rows = list(watch(str(clip), config=cfg, realtime=True))
    logging.getLogger("crashcast.live.watch").removeHandler(said)
    lat = np.array([r["latency_s"] for r in rows[1:]])  # the first stride also built the models
    return {"preset": preset, "random_weights": bool(changed), "said": said.lines, "strides": len(rows),
            "latency_median_s": float(np.median(lat)) if len(lat) else None,
            "latency_p95_s": float(np.percentile(lat, 95)) if len(lat) else None,
            "drop_rate": rows[-1]["drop_rate"] if rows else None,
            # after the first stride: a stream's opening delivers the frames FFmpeg read while probing it
            # (up to 1 s) at once, and those beyond the queue are dropped as stale
            "dropped_first_stride": rows[0]["dropped"] if rows else None,
            "drop_rate_after_first_stride": (sum(r["dropped"] for r in rows[1:]) / max(1, round(
                (rows[-1]["time_s"] - rows[0]["time_s"]) * cfg.video.fps))) if len(rows) > 1 else None}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", help="perception preset (repeatable; default: classic, fast)")
    ap.add_argument("--size", action="append", help="WxH (repeatable; default: 640x360, 1280x720)")
    ap.add_argument("--seconds", type=float, default=10.0, help="clip length")
    ap.add_argument("--udp", action="store_true", help="stream over UDP MPEG-TS on 127.0.0.1 instead of a file")
    ap.add_argument("--random-weights", action="store_true",
                    help="replace every model weight by its full-size random architecture (no download)")
    ap.add_argument("--boxes", type=int, default=8, help="with --random-weights: a random detector's boxes per frame")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    presets = args.preset or ["classic", "fast"]
    sizes = [tuple(int(v) for v in s.lower().split("x")) for s in (args.size or ["640x360", "1280x720"])]
    results = []
    with tempfile.TemporaryDirectory(prefix="crashcast-live-bench-") as tmp:
        for w, h in sizes:
            clip = _clip(Path(tmp), w, h, args.seconds)
            for preset in presets:
                status = preset_status(preset)
                if not status.ready and not args.random_weights:
                    print(f"{preset} {w}x{h}: skipped ({status.why()})")
                    continue
                r = {**run(preset, clip, max(w, h), args.udp, args.random_weights, args.boxes), "size": f"{w}x{h}",
                     "source": "udp" if args.udp else "file"}
                results.append(r)
                kept = "keeps up" if (r["drop_rate_after_first_stride"] or 0) < 0.01 else "falls behind"
                weights = ", random weights" if r["random_weights"] else ""
                print(f"{preset:8s} {w}x{h} ({r['source']}{weights}): {r['strides']} strides, latency median "
                      f"{r['latency_median_s']:.3f} s, p95 {r['latency_p95_s']:.3f} s, dropped "
                      f"{100 * r['drop_rate']:.1f} % of frames ({r['dropped_first_stride']} in the first stride, "
                      f"{100 * r['drop_rate_after_first_stride']:.1f} % after it): {kept}", flush=True)
                for line in r["said"]:
                    print(f"  watch said: {line}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
