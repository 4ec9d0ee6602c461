"""The `crashcast` command line (typer)."""

from __future__ import annotations

import json
import logging
import math
import re
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crashcast import api
from crashcast.errors import CrashcastError
from crashcast.runtime.executor import sigterm_raises

app = typer.Typer(
    help="crashcast: how likely is a collision in the next seconds of this dashcam video, and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# stdout carries what a command produces (tables, JSON, CSV); messages and progress go to stderr
# (lines are never folded: a path in a message stays whole when piped to a file or another program)
console = Console(width=None if Console().is_terminal else 140, soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
log = logging.getLogger("crashcast")


class MissingEvent(StrEnum):
    skip = "skip"
    end = "end"
    error = "error"


class AnnotationFormat(StrEnum):
    auto = "auto"
    nexar = "nexar"
    nexar_metadata = "nexar-metadata"
    ccd = "ccd"
    dad = "dad"
    consensus = "consensus"


class OutputFormat(StrEnum):
    table = "table"
    json = "json"
    csv = "csv"


class AlertPolicyChoice(StrEnum):
    none = "none"
    median = "median"
    k_of_n = "k-of-n"
    hysteresis = "hysteresis"
    ema = "ema"
    max = "max"


ALERT_POLICY_HELP = ("how each stride's raw risk becomes the risk shown and the alert (default: the config's "
                     "alert.policy, hysteresis; see above and docs/ALERTS.md)")


class Calibration(StrEnum):
    none = "none"
    platt = "platt"
    isotonic = "isotonic"


class Protocol(StrEnum):
    crashcast = "crashcast"
    paper = "paper"


MISSING_EVENT_HELP = "positive without an event time: skip (reported) | end (anchor its windows at the video's end) | error"
ANNOTATIONS_HELP = "annotation file (Nexar train.csv or metadata.csv, CCD .txt, consensus CSV) or a DAD folder"


def _setup_logging(verbose: int) -> None:
    """Messages go to stderr: rich's columns on a terminal, plain `LEVEL message` lines elsewhere."""
    from rich.logging import RichHandler

    level = max(logging.WARNING - 10 * verbose, logging.DEBUG)
    handler: logging.Handler
    if err_console.is_terminal:
        handler = RichHandler(console=err_console, show_path=False)
        handler.setFormatter(logging.Formatter("%(message)s"))
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logging.basicConfig(level=level, handlers=[handler], force=True)
    logging.getLogger("crashcast").setLevel(level)


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug")] = 1) -> None:
    _setup_logging(verbose)


def _horizons(text: str) -> list[float]:
    """`--horizons 0,0.5` as seconds."""
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated seconds, got {text!r}", param_hint="--horizons") from None


def _usage(e: api.UsageError) -> typer.BadParameter:
    """An argument the library refused, as typer reports a bad option."""
    return typer.BadParameter(str(e), param_hint=e.option)


# ----------------------------------------------------------------------------- synth


class SynthMix(StrEnum):
    default = "default"
    third_party = "third-party"


@app.command()
def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="number of clips (half positives)")] = 20,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("synthetic"),
    seed: Annotated[int, typer.Option(help="random seed (same seed, same clips)")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="parallel processes")] = 1,
    mix: Annotated[SynthMix, typer.Option(help="default: the ego vehicle's own near crashes; third-party: other "
                                               "road users collide ahead (two vehicles, a vehicle and a person)")] = SynthMix.default,
) -> None:
    """Render synthetic dashcam clips with exact ground truth (MP4 + annotations.csv + truth/*.json)."""
    t0 = time.time()
    csv_path = api.synth(n, out, seed=seed, workers=workers, progress=True, mix=SynthMix(mix).value)
    console.print(f"wrote {n} clips to [bold]{out}[/] ({time.time() - t0:.1f} s); annotations: {csv_path}")


# ----------------------------------------------------------------------------- windows


@app.command()
def windows(
    annotations: Annotated[Path, typer.Option(help=ANNOTATIONS_HELP)],
    videos: Annotated[Path | None, typer.Option(help="folder with <id>.mp4 (default: the annotation file's folder)")] = None,
    horizons: Annotated[str, typer.Option(help="seconds before the event the windows end, e.g. 0,0.5,1,1.5")] = "0",
    missing_event: Annotated[MissingEvent, typer.Option(help=MISSING_EVENT_HELP)] = MissingEvent.skip,
    annotation_format: Annotated[AnnotationFormat, typer.Option(help="how to read --annotations (auto: from its name and header)")] = AnnotationFormat.auto,
    out: Annotated[Path | None, typer.Option(help="also write the table as CSV here")] = None,
    config: Annotated[str | None, typer.Option(help="config preset or YAML")] = None,
) -> None:
    """List the max/mid/mini windows, keyframe times and labels of every clip."""
    from crashcast.runtime.store import atomic_write_text

    if out is not None and out.is_dir():  # said before any work, with the path the user gave
        raise CrashcastError(f"{out}: is a folder; --out names the CSV file to write, e.g. {out / 'windows.csv'}")
    found = api.windows(annotations, videos, config, _horizons(horizons), missing_event.value, annotation_format.value)
    wins, errors = found.windows, found.errors
    df = found.table()
    table = Table(title=f"{len(wins)} windows of {len({w.clip_id for w in wins})} clips")
    for col in ("window", "start", "end", "keyframes (s)", "clamped", "label", "target", "anchor"):
        table.add_column(col, no_wrap=col in ("window", "keyframes (s)"))
    for w in wins:
        kfs = " / ".join(f"{k:.2f}" for k in w.keyframe_times_s)
        table.add_row(w.id, f"{w.start_s:.2f}", f"{w.end_s:.2f}", kfs, "yes" if w.clamped else "", str(w.label),
                      f"{w.soft_target:.3f}", w.anchor_source)
    console.print(table)
    if errors:
        err_console.print(f"[yellow]{len(errors)} clip(s) skipped:[/]")
        for e in errors:
            err_console.print(f"  {e}", markup=False)
    if out:
        atomic_write_text(out, df.to_csv(index=False))
        console.print(f"wrote {out}")


# ----------------------------------------------------------------------------- extract

BACKEND_HELP = ("perception preset: auto (the best of paper, fast, classic whose packages are installed and whose "
                "weights are on disk; online, it first downloads the fast preset's weights once, 105 MB, unless "
                "--offline), paper, fast, classic, tiny (random tiny models, for trying the wiring)")
OFFLINE_HELP = "download nothing: --backend auto takes what is on disk (also CRASHCAST_OFFLINE=1 or HF_HUB_OFFLINE=1)"
WEIGHTS_DIR_HELP = "load every model from this folder, offline (also CRASHCAST_WEIGHTS_DIR; see `crashcast weights list`)"
TRUST_HELP = ("a checkpoint file you trust to be unpickled in full (it may run code): only needed for one that "
              "the restricted loader refuses; repeat for several")


class Executor(StrEnum):
    local = "local"
    ray = "ray"


@app.command()
def extract(
    annotations: Annotated[Path, typer.Option(help=ANNOTATIONS_HELP)],
    out: Annotated[Path, typer.Option(help="run folder")],
    videos: Annotated[Path | None, typer.Option(help="folder with <id>.mp4 (default: the annotation file's folder)")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    weights_dir: Annotated[Path | None, typer.Option(help=WEIGHTS_DIR_HELP)] = None,
    horizons: Annotated[str | None, typer.Option(help="e.g. 0,0.5,1,1.5 (default: the config's)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="parallel processes")] = 1,
    missing_event: Annotated[MissingEvent, typer.Option(help=MISSING_EVENT_HELP)] = MissingEvent.skip,
    annotation_format: Annotated[AnnotationFormat, typer.Option(help="how to read --annotations (auto: from its name and header)")] = AnnotationFormat.auto,
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the backend's preset)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: section.field=value")] = None,
    new_run: Annotated[bool, typer.Option(help="start over: delete the run folder's previous outputs (clips/, "
                                               "features, metrics, models, predictions, report) first")] = False,
    executor: Annotated[Executor, typer.Option(help="local: processes on this machine; ray: Ray actors, one per worker "
                                               "(pip install 'crashcast[distributed]'; docs/SCALING.md)")] = Executor.local,
    address: Annotated[str | None, typer.Option(help="with --executor ray: the Ray cluster to join (auto: the one "
                                                     "this node belongs to; default: start Ray on this machine)")] = None,
    trust_checkpoint: Annotated[list[Path] | None, typer.Option(help=TRUST_HELP)] = None,
    offline: Annotated[bool, typer.Option("--offline", help=OFFLINE_HELP)] = False,
) -> None:
    """Perceive each clip once and write window_meta.json, keyframe overlays and features.parquet."""
    overrides = list(set_ or [])
    if horizons:
        overrides.append(api.horizons_override(_horizons(horizons)))
    if address and executor is not Executor.ray:
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    summary = api.extract(annotations, out, videos, backend=backend, config=config, overrides=overrides,
                          weights_dir=weights_dir, workers=workers, missing_event=missing_event.value,
                          annotation_format=annotation_format.value, new_run=new_run, executor=executor.value,
                          address=address, trust_checkpoints=trust_checkpoint or (), offline=offline or None)
    _print_extract(summary, len(summary.annotation_errors))
    if summary.failed or summary.annotation_errors:
        raise typer.Exit(1)


def _print_extract(s, bad_rows: int = 0) -> None:
    rate = s.clip_seconds / s.seconds if s.seconds > 0 else float("nan")
    console.print(
        f"extracted {s.ok} clip(s) ({s.skipped} already done), {s.windows} windows, {s.failed} failed"
        + (f", {bad_rows} annotation row(s) skipped" if bad_rows else "")
        + f" in {s.seconds:.1f} s ({s.frames_processed} frames perceived; {rate:.1f}x real time)"
    )
    console.print(f"  run folder: {s.run_dir}  (features.parquet, clips/<id>/<window>/window_meta.json + kf*.png)", markup=False)
    if s.failed or bad_rows:
        err_console.print(f"  failures recorded in {s.run_dir / 'errors.jsonl'}", style="yellow", markup=False)


# ----------------------------------------------------------------------------- evaluate / report


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run folder made by `crashcast extract`")],
    models: Annotated[str, typer.Option(help="comma-separated: ttc, physics, lightgbm, xgboost, mlp, vlm-zero-shot, vlm-baseline, "
                                             "vlm-enhanced (the VLMs: the paper-<mode> preset; change it with --set vlm.field=value, "
                                             "e.g. vlm.base_model=random:tiny)")] = "ttc,lightgbm,xgboost,mlp",
    calibration: Annotated[Calibration, typer.Option(help="fitted on validation clips: the split's, or each fold's")] = Calibration.platt,
    folds: Annotated[int | None, typer.Option(min=2, help="k-fold cross-validation by video: every clip scored once by a "
                                                          "model that never saw it (default: one train/validation/test split)")] = None,
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the run's config.yaml)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value, e.g. evaluation.seed=1")] = None,
    retrain_vlm: Annotated[bool, typer.Option(help="let vlm-baseline/vlm-enhanced replace an adapter in run/models/ that was "
                                                   "trained with other settings or on other windows")] = False,
    protocol: Annotated[Protocol | None, typer.Option(help="the headline table (both are written): crashcast (calibrated "
                                                           "scores) or paper (Table III as the paper reads it: the written "
                                                           "number, uncalibrated, at 0.5); default: the config's "
                                                           "evaluation.protocol")] = None,
) -> None:
    """Train, calibrate and score by video (a split, or --folds cross-validation); write metrics.json / metrics.md / predictions.
    A fine-tuned VLM already in run/models/vlm-<mode>/ (`crashcast train vlm`) is used when it was trained on this split."""
    api.evaluate(run, models, calibration.value, folds=folds, config=config, overrides=list(set_ or []),
                 retrain_vlm=retrain_vlm, protocol=protocol.value if protocol else None)
    console.print((run / "metrics.md").read_text(), markup=False)
    console.print(f"wrote {run / 'metrics.json'}, {run / 'metrics.md'}, {run / 'predictions'}/, {run / 'models'}/", markup=False)


@app.command()
def prompts(
    run: Annotated[Path, typer.Argument(help="run folder made by `crashcast extract`")],
    split: Annotated[str, typer.Option(help="comma-separated: train, val, test (the video-grouped split `evaluate` uses)")] = "train,val,test",
    rationale: Annotated[bool | None, typer.Option("--rationale/--no-rationale", help="answers get a second line with the "
                                                   "kinematic reason (default: the config's vlm.rationale)")] = None,
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the run's config.yaml)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value, e.g. evaluation.seed=1")] = None,
) -> None:
    """Write each window as a VLM prompt (three keyframes + the closest objects' table + Task + Note) into run/prompts/:
    ShareGPT JSONL + dataset_info.json (LLaMA-Factory), ms-swift JSONL, chat messages (TRL, transformers)."""
    splits = tuple(s.strip() for s in split.split(",") if s.strip())
    try:
        written = api.prompts(run, splits, rationale, config=config, overrides=list(set_ or []))
    except api.UsageError as e:
        raise _usage(e) from None
    skipped = written.skipped
    table = Table(title=escape(f"prompts in {written.folder}"))
    for col in ("split", "prompts", "positive", "ShareGPT (LLaMA-Factory)", "ms-swift", "chat (TRL)"):
        table.add_column(col)
    for name, f in written.files.items():
        ps = written.prompts[name]
        table.add_row(name, str(len(ps)), str(sum(p.label for p in ps)), f.sharegpt.name, f.swift.name, f.chat.name)
    console.print(table)
    if skipped:
        err_console.print(f"{len(skipped)} window(s) left out (window_meta unreadable or not the table's, or keyframes unreadable): "
                          + "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""), style="yellow", markup=False)
        raise typer.Exit(1)


train_app = typer.Typer(help="Train a risk model on a run's windows (the VLM: `crashcast train vlm`).", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("vlm")
def train_vlm_command(
    run: Annotated[Path, typer.Option(help="run folder made by `crashcast extract`")],
    config: Annotated[str, typer.Option(help="the VLM preset or YAML: paper-baseline or paper-enhanced (its vlm section)")] = "paper-baseline",
    base_model: Annotated[str | None, typer.Option(help="hub id or local folder of the base VLM, e.g. "
                                                        "Qwen/Qwen3-VL-4B-Instruct (default: the preset's Qwen2.5-VL-3B; "
                                                        "random:tiny or random:tiny-qwen3-vl for a tiny random model)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value, e.g. vlm.epochs=1")] = None,
    rationale: Annotated[bool | None, typer.Option("--rationale/--no-rationale", help="train answers with a Reason line "
                                                   "(the agent driving the risk, with the table's numbers) so the model "
                                                   "learns to give one (default: the preset's vlm.rationale)")] = None,
) -> None:
    """Fine-tune the VLM on the run's training windows (evaluate's video split; validation each epoch) with
    4-bit NF4 QLoRA (vlm.quantization nf4) or LoRA on the unquantized model (none); write the adapter and its
    model card to run/models/vlm-<mode>/."""
    try:
        overrides = [*(set_ or []), *([f"vlm.rationale={str(rationale).lower()}"] if rationale is not None else [])]
        data = api.vlm_training_data(run, config, base_model, overrides)
    except api.UsageError as e:
        raise _usage(e) from None
    if data.skipped:
        err_console.print(f"{len(data.skipped)} window(s) left out (unreadable window_meta or keyframes)", style="yellow", markup=False)
    result = api.train_vlm(data, device)
    vlm, out = data.vlm, data.out_dir
    best = f"{result.best_eval_loss:.4f}" if result.best_eval_loss is not None else "n/a (no validation windows)"
    console.print(f"trained {vlm.mode} on {result.n_train} windows ({result.n_val} for validation): training loss "
                  f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}, best validation loss {best}", markup=False)
    console.print(f"  adapter and model card: {out}", markup=False)


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run folder with metrics.json (after `crashcast evaluate`)")]) -> None:
    """Write a self-contained HTML report (run/report/index.html)."""
    path = api.report(run)
    console.print(f"report: {path}", markup=False)


@app.command()
def dense(
    run: Annotated[Path, typer.Argument(help="run folder after `crashcast evaluate` (its test clips and saved models)")],
    annotations: Annotated[Path, typer.Argument(help="the annotations the run was extracted from (" + ANNOTATIONS_HELP + ")")],
    videos: Annotated[Path | None, typer.Option(help="folder with <id>.mp4 (default: the annotation file's folder)")] = None,
    model: Annotated[str, typer.Option(help="a model evaluate saved in run/models/ (physics, ttc, lightgbm, ...)")] = "physics",
    stride: Annotated[float, typer.Option(min=0.05, help="seconds between risk estimates (the evaluation's frame; "
                                                             "perception runs at video.fps / frame_step)")] = 0.5,
    alert_policy: Annotated[AlertPolicyChoice | None, typer.Option(help="the policy of the per-hour cap (default: the "
                                                                        "config's alert.policy)")] = None,
    max_false_alarm_share: Annotated[float, typer.Option(min=0.0, max=1.0, help="cap: share of negative videos with any "
                                                                                "stride at the threshold")] = 0.1,
    max_false_alarms_per_hour: Annotated[float, typer.Option(min=0.0, help="cap: alert onsets per hour of negative "
                                                                           "footage")] = 1.0,
    annotation_format: Annotated[AnnotationFormat, typer.Option(help="how to read ANNOTATIONS")] = AnnotationFormat.auto,
    workers: Annotated[int, typer.Option(min=1, help="videos predicted in parallel")] = 1,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value")] = None,
) -> None:
    """Dense per-video metrics of a saved model on the run's test videos: each whole video predicted causally
    every --stride seconds (as predict does); the field's per-frame AP, mTTA and TTA@R80 (DAD/CCD-comparable), and
    recall and time to alert at a capped false-alarm rate. Writes dense_metrics.json, dense.md and dense/<model>/."""
    from crashcast.evaluation.dense import explain_dense

    try:
        results = api.dense(run, annotations, videos, model, stride_s=stride,
                            alert_policy=alert_policy.value if alert_policy else None, max_share=max_false_alarm_share,
                            max_per_hour=max_false_alarms_per_hour, annotation_format=annotation_format.value,
                            workers=workers, overrides=list(set_ or []))
    except api.UsageError as e:
        raise _usage(e) from None
    console.print((run / "dense.md").read_text(), markup=False)
    console.print(explain_dense(results), markup=False)
    console.print(f"wrote {run / 'dense_metrics.json'}, {run / 'dense.md'}, {run / 'dense' / model}/", markup=False)


# ----------------------------------------------------------------------------- predict


@app.command()
def predict(
    videos: Annotated[list[Path], typer.Argument(help="video files or folders of videos")],
    model: Annotated[str | None, typer.Option(help="a saved model folder (run/models/<name>), or physics | ttc")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    weights_dir: Annotated[Path | None, typer.Option(help=WEIGHTS_DIR_HELP)] = None,
    stride: Annotated[float, typer.Option(min=0.05, help="seconds between risk estimates")] = 0.5,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="alert when the risk reaches this")] = 0.5,
    out: Annotated[Path, typer.Option(help="output folder (one subfolder per video)")] = Path("crashcast-predictions"),
    fmt: Annotated[OutputFormat, typer.Option("--format", help="what stdout gets: table, or only a JSON / CSV document "
                                                               "(one video: its object; several: a list / rows with a video column)")] = OutputFormat.table,
    annotate: Annotated[bool, typer.Option(help="also write annotated.mp4 (boxes, ids, depth, TTC, risk gauge)")] = False,
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the backend's preset)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field, e.g. perception.geometry.horizon=0.55")] = None,
    workers: Annotated[int, typer.Option(min=1, help="videos predicted in parallel, each worker building the models once")] = 1,
    executor: Annotated[Executor, typer.Option(help="with several videos: local processes, or Ray actors "
                                               "(pip install 'crashcast[distributed]'; docs/SCALING.md)")] = Executor.local,
    address: Annotated[str | None, typer.Option(help="with --executor ray: the Ray cluster to join (auto: the one "
                                                     "this node belongs to; default: start Ray on this machine)")] = None,
    trust_checkpoint: Annotated[list[Path] | None, typer.Option(help=TRUST_HELP)] = None,
    offline: Annotated[bool, typer.Option("--offline", help=OFFLINE_HELP)] = False,
    alert_policy: Annotated[AlertPolicyChoice | None, typer.Option(help=ALERT_POLICY_HELP)] = None,
) -> None:
    """Risk timeline of each video: when does it get dangerous, and why.

    Each stride's raw model risk (risk_raw) goes through the alert policy, which gives the risk shown (risk) and the alert state (alert, 0/1); the first alert is the first stride with the alert on.

    The default policy, hysteresis (chosen by measurement, docs/ALERTS.md), shows the raw risk, turns the alert on at the first stride that reaches --threshold and off when the risk falls below 0.6 x the threshold (--set alert.off_fraction=...). The others: none (alert while raw >= threshold), median (of the last alert.median_window strides: the rule before, which hid single high strides), k-of-n (alert.k of the last alert.n), ema (alert.alpha), max (of the last alert.max_window)."""
    cfg = api.config_for(backend, config, list(set_ or []), weights_dir, run=api.model_run(model),
                         offline=offline or None)
    paths = api.videos_in(videos)
    if not paths:
        raise typer.BadParameter("no video files given or found in the folders", param_hint="VIDEOS")
    if address and executor is not Executor.ray:
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    machine = fmt is not OutputFormat.table
    # one after another in this process (each printed as it is done), or in workers, each building the
    # backends and the model once; failures are recorded in out/errors.jsonl
    outcomes = api.predict_many(paths, model, cfg, out, stride_s=stride, threshold=threshold, annotate=annotate,
                                workers=workers, executor=executor.value, address=address, progress=not machine,
                                trust_checkpoints=trust_checkpoint or (),
                                alert_policy=alert_policy.value if alert_policy else None)
    say = err_console if machine else console  # machine formats: only the document on stdout
    docs, frames, failed = [], [], 0
    for outcome in outcomes:
        path, pred, files = outcome.path, outcome.prediction, outcome.files
        if pred is None or files is None:
            failed += 1
            err_console.print(f"{path}: failed: {outcome.error}", markup=False, style="red")
            continue
        if fmt is OutputFormat.json:
            docs.append(pred.to_dict())
        elif fmt is OutputFormat.csv:
            frames.append(pred.timeline.assign(video=str(path))[["video", *pred.timeline.columns]])
        elif len(paths) == 1:
            _print_timeline(pred, path, threshold)
        say.print(_summary_line(pred, path) + f"  -> {files['csv'].parent}", markup=False)
    single = len(videos) == 1 and videos[0].is_file()
    if fmt is OutputFormat.json:  # always one document: null / [] when nothing could be predicted
        sys.stdout.write(json.dumps((docs[0] if docs else None) if single else docs, allow_nan=False) + "\n")
    elif fmt is OutputFormat.csv and frames:
        import pandas as pd

        sys.stdout.write(pd.concat(frames, ignore_index=True).to_csv(index=False))
    if failed:
        err_console.print(f"{failed} of {len(paths)} video(s) failed; see {out / 'errors.jsonl'}", style="yellow", markup=False)
        raise typer.Exit(1)


def _summary_line(pred, path: Path) -> str:
    """One line a person reads: 'first alert at 2.5 s (risk 0.81): <the reason then>; peak 0.93 at
    3.0 s', or 'no alert (peak risk 0.12 at 4.0 s)'. The reason is the one given with the risk at
    the alert (rendered from that stride's evidence)."""
    if pred.peak is None:
        return f"{path.name}: no risk estimate (the video is shorter than one stride)"
    peak_t, peak = pred.peak
    if pred.first_alert is None:
        return f"{path.name}: no alert (peak risk {peak:.2f} at {peak_t:.1f} s)"
    tl = pred.timeline
    at = tl[(tl.time_s - pred.first_alert).abs() < 1e-6]
    row = at.iloc[0] if len(at) else None
    head = f"{path.name}: first alert at {pred.first_alert:.1f} s" + (f" (risk {row.risk:.2f}): {row.reason}" if row is not None else "")
    return head + ("" if abs(peak_t - pred.first_alert) < 1e-6 else f"; peak {peak:.2f} at {peak_t:.1f} s")


def _print_timeline(pred, path: Path, threshold: float) -> None:
    """The timeline as a table: the (smoothed) risk the alert reads, the stride's own risk, and the
    reason for that stride's risk (rendered from its evidence)."""
    alert = f"first alert at {pred.first_alert:.1f} s" if pred.first_alert is not None else "no alert"
    table = Table(title=escape(f"{path.name}: {alert} (threshold {threshold}, model {pred.model})"))
    for col in ("time (s)", "risk", "raw", "alert", "why this stride's risk"):
        table.add_column(col)
    for r in pred.timeline.itertuples():
        style = "bold red" if r.alert else None
        table.add_row(f"{r.time_s:.1f}", f"{r.risk:.2f}", f"{r.risk_raw:.2f}", "ALERT" if r.alert else "",
                      escape(r.reason), style=style)
    console.print(table)


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where the demo writes everything")] = Path("crashcast-demo"),
    n: Annotated[int, typer.Option("--n", min=4, help="synthetic clips to render")] = 24,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="parallel processes")] = 2,
    offline: Annotated[bool, typer.Option("--offline", help="download nothing (the demo never does: it runs the "
                                                            "weight-free classic preset; accepted like predict's and extract's)")] = False,
) -> None:
    """The whole classic pipeline on built-in synthetic clips: synth -> extract -> evaluate -> report.

    The evaluation cross-validates by video (every clip scored once by a model that never saw it):
    with a couple of dozen clips, one held-out split of 8 clips gives numbers that swing with the seed."""
    from crashcast.evaluation.experiments import explain_results

    t0 = time.time()
    api.writable_dir(out)
    data, run = out / "data", out / "run"
    # the clips of this n and seed: reused only when exactly those are there, else rendered (replacing
    # another seed's), and then the run starts over so no number mixes two sets of clips
    csv_path, reused = api.synthetic_clips(n, data, seed=seed, workers=workers, progress=True)
    if reused:
        console.print(f"synthetic clips already in {data}", markup=False)
    cfg = api.load("classic", [api.horizons_override([0, 0.5, 1.0, 1.5])])
    summary = api.extract(csv_path, run, data, config=cfg, workers=workers, missing_event="error", new_run=not reused,
                          offline=True)
    _print_extract(summary)
    results = api.evaluate(run, ["ttc", "physics", "lightgbm"], "platt", folds=min(5, n // 2), config=cfg)
    console.print((run / "metrics.md").read_text(), markup=False)
    console.print(explain_results(results), markup=False)
    report_path = api.report(run)
    console.print(f"[bold green]demo finished[/] in {time.time() - t0:.1f} s")
    console.print(f"  clips + annotations + ground truth: {data}")
    console.print(f"  run (window_meta.json, overlays, features.parquet, models, predictions): {run}")
    console.print(f"  metrics: {run / 'metrics.md'}")
    console.print(f"  report:  {report_path}")


@app.command("watch")
def watch_command(
    source: Annotated[str, typer.Argument(help="a camera (/dev/video0), a stream URL (rtsp://, udp://, http://, srt://, "
                                               "...) or a video file, played at its real rate")],
    model: Annotated[str | None, typer.Option(help="a saved model folder (run/models/<name>), or physics | ttc")] = None,
    backend: Annotated[str, typer.Option(help=BACKEND_HELP)] = "auto",
    weights_dir: Annotated[Path | None, typer.Option(help=WEIGHTS_DIR_HELP)] = None,
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the backend's preset)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field")] = None,
    stride: Annotated[float, typer.Option(min=0.05, help="seconds between risk estimates")] = 0.5,
    threshold: Annotated[float, typer.Option(min=0.0, max=1.0, help="alert when the risk reaches this")] = 0.5,
    alert_policy: Annotated[AlertPolicyChoice | None, typer.Option(help=ALERT_POLICY_HELP)] = None,
    record: Annotated[Path | None, typer.Option(help="folder for event recordings: at each alert an MP4 (annotated) "
                                                     "from --pre seconds before to --post after, with its timeline JSON")] = None,
    pre: Annotated[float, typer.Option(min=0.0, help="seconds recorded before an alert")] = 5.0,
    post: Annotated[float, typer.Option(min=0.0, help="seconds recorded after the last alert of an event")] = 5.0,
    record_max_mb: Annotated[int, typer.Option(min=1, help="the recordings folder's size cap; the oldest go first")] = 2048,
    queue: Annotated[int, typer.Option(min=1, help="frames waiting for perception at most; beyond, the oldest is dropped")] = 8,
    timeout: Annotated[float, typer.Option(min=0.1, help="seconds without a frame after which a stream has dropped "
                                                         "(it is reopened, with backoff)")] = 10.0,
    realtime: Annotated[bool | None, typer.Option("--realtime/--no-realtime", help="play a file at its real rate "
                                                  "(default) or as fast as it is processed (nothing dropped)")] = None,
    reconnect: Annotated[bool | None, typer.Option("--reconnect/--no-reconnect", help="reopen a stream or camera that "
                                                   "drops, with backoff (default for them; a file ends at its end)")] = None,
    probe: Annotated[bool, typer.Option("--probe/--no-probe", help="time the preset on a short synthetic scene before "
                                        "the source opens and say whether it keeps up")] = True,
    serve: Annotated[str | None, typer.Option(metavar="HOST:PORT", help="serve a web page with the live annotated view "
                                              "and the risk gauge; :PORT binds 127.0.0.1 (this machine only), another "
                                              "host (0.0.0.0) shows the video to the network, unauthenticated; port 0: "
                                              "any free port (the URL is logged)")] = None,
    offline: Annotated[bool, typer.Option("--offline", help=OFFLINE_HELP)] = False,
) -> None:
    """Collision warnings from a live camera stream: one JSON line per stride on stdout (time_s, risk, risk_raw, alert,
    reason, latency_s, dropped, drop_rate, ...), logs on stderr. Ctrl-C or SIGTERM stops it; the recording in progress
    is finished."""
    cfg = api.config_for(backend, config, list(set_ or []), weights_dir, run=api.model_run(model),
                         offline=offline or None)
    stream = api.watch(source, model, cfg, stride_s=stride, threshold=threshold,
                       alert_policy=alert_policy.value if alert_policy else None, record=record, pre_s=pre, post_s=post,
                       max_record_bytes=record_max_mb * 2**20, queue_size=queue, realtime=realtime, reconnect=reconnect,
                       timeout_s=timeout, probe=probe, serve=serve)
    with sigterm_raises():
        try:
            for row in stream:
                if row.get("evidence"):
                    row = {**row, "evidence": json.loads(row["evidence"])}
                row = {k: None if isinstance(v, float) and not math.isfinite(v) else v for k, v in row.items()}
                sys.stdout.write(json.dumps(row, allow_nan=False, default=str) + "\n")
                sys.stdout.flush()
        finally:
            stream.close()  # the reader stops; the recording in progress is finished


class Reproducible(StrEnum):
    paper = "paper"


@app.command()
def reproduce(
    what: Annotated[Reproducible, typer.Argument(help="paper: Table III of the paper (docs/PAPER_PROTOCOL.md)")],
    data: Annotated[Path, typer.Option(help="the dataset's root folder as downloaded: Nexar (Kaggle train.csv + train/, "
                                            "or the Hugging Face layout), DAD (videos/training, videos/testing), CCD "
                                            "(videos/Crash-1500, Normal), DoTA (dataset/metadata_*.json + videos/)")],
    out: Annotated[Path, typer.Option(help="run folder (a rerun resumes)")],
    perception: Annotated[str, typer.Option(help="perception preset: paper (the paper's models, every frame; weights: "
                                                 "`crashcast weights download paper`), or tiny (random tiny models: "
                                                 "the wiring, offline)")] = "paper",
    models: Annotated[str, typer.Option(help="comma-separated VLMs")] = "vlm-zero-shot,vlm-baseline,vlm-enhanced",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value; vlm.* change the three "
                                                              "VLM presets (e.g. vlm.base_model=random:tiny)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="parallel extraction processes")] = 1,
    rationale: Annotated[bool, typer.Option("--rationale", help="fine-tune with a Reason line in every answer (the agent "
                                                              "driving the risk, with the table's numbers)")] = False,
) -> None:
    """Table III in one command: import the dataset, extract with the paper's perception, write the prompts
    (Fig. 3's table), evaluate the zero-shot, baseline and enhanced VLMs under the paper's protocol, and write
    run/reproduce/table_iii.md beside the paper's numbers with every command used. A rerun resumes."""
    from crashcast.reproduce import reproduce_paper

    names = [m.strip() for m in models.split(",") if m.strip()]
    overrides = [*(set_ or []), *(["vlm.rationale=true"] if rationale else [])]
    rep = reproduce_paper(data, out, perception=perception, overrides=overrides, models=names, workers=workers,
                          argv=["crashcast", *sys.argv[1:]] if sys.argv[1:2] == ["reproduce"] else None)
    console.print(rep.table.read_text(encoding="utf-8"), markup=False)
    console.print(f"{rep.layout}: {rep.clips} clips imported ({len(rep.problems)} bad entries), {rep.failed_clips} failed "
                  f"extraction; wrote {rep.table}, {out / 'metrics.md'}", markup=False)
    if rep.failed_clips or rep.problems:
        err_console.print(f"  problems recorded in {out / 'errors.jsonl'}", style="yellow", markup=False)


# ----------------------------------------------------------------------------- doctor / weights

WEIGHTS_DIR_LOOK_HELP = "weights folder to look in (default: runtime.weights_dir, then $CRASHCAST_WEIGHTS_DIR)"


@app.command("doctor")
def doctor_command(
    weights_dir: Annotated[Path | None, typer.Option("--weights-dir", help=WEIGHTS_DIR_LOOK_HELP)] = None,
) -> None:
    """What is installed here, which presets can run (packages, weights on disk), and the known install traps."""
    from crashcast.doctor import render

    render(api.doctor(weights_dir), console)


weights_app = typer.Typer(help="Model weights each preset needs: list them (what, size, licence, where) and download them.",
                          no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
app.add_typer(weights_app, name="weights")


@weights_app.command("list")
def weights_list(
    preset: Annotated[str | None, typer.Option(help="one preset (or config YAML); default: every preset")] = None,
    weights_dir: Annotated[Path | None, typer.Option("--weights-dir", help=WEIGHTS_DIR_LOOK_HELP)] = None,
) -> None:
    """Every weight file a preset needs: hub id or URL, size, licence, and where it is or would be."""
    from crashcast.config import preset_names
    from crashcast.doctor import preset_weights, print_weights

    names = [preset] if preset else preset_names()
    rows = [(name, s) for name in names for s in preset_weights(name, weights_dir)]
    if not rows:
        err_console.print(f"preset {preset} needs no model weights" if preset else "no preset needs model weights", markup=False)
        return
    print_weights(rows, "Model weights", console)
    if any(not s.present for _, s in rows):
        err_console.print("missing weights: `crashcast weights download PRESET` fetches them; offline, fetch them "
                          "elsewhere and copy them into a weights folder (--weights-dir, docs/INSTALL.md)", markup=False)


@weights_app.command("download")
def weights_download(
    preset: Annotated[str, typer.Argument(help="preset (or config YAML) whose weights to fetch")],
    dir: Annotated[Path | None, typer.Option("--dir", help="weights folder to put them in (default: "
                                             "runtime.weights_dir, $CRASHCAST_WEIGHTS_DIR, else the libraries' caches)")] = None,
) -> None:
    """Download the weights a preset needs (offline: says what to fetch and where to put it)."""
    from crashcast.doctor import download_weights, weights_plan

    plan = weights_plan(preset, dir)
    if not plan.statuses:
        err_console.print(f"preset {preset} needs no model weights", markup=False)
        return
    if plan.missing:
        err_console.print(f"downloading {len(plan.missing)} weight file(s) for {preset}"
                          + (f" into {plan.weights_dir}" if plan.weights_dir else " into the libraries' caches"), markup=False)
    for s in download_weights(plan):
        console.print(f"{s.file.name}: {s.path}", markup=False)


_OVERRIDE_PAIR = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*=")


def _one_pair_per_set(argv: list[str]) -> str | None:
    """The problem when a `--set` is followed by a second `section.field=value` (`--set a=1 b=2`): an
    option takes one value, so click would call the second an unexpected argument (or, for predict,
    a video). None when every pair has its own --set."""
    for i, arg in enumerate(argv):
        if arg == "--set" and i + 2 < len(argv):
            value, after = argv[i + 1], argv[i + 2]
        elif arg.startswith("--set=") and i + 1 < len(argv):
            value, after = arg.removeprefix("--set="), argv[i + 1]
        else:
            continue
        if _OVERRIDE_PAIR.match(after) and not Path(after).exists():
            return (f"--set takes one section.field=value; repeat --set for each pair: --set {value} --set {after} "
                    f"({after!r} follows --set {value} without its own --set)")
    return None


def main(argv: list[str] | None = None) -> None:
    """The `crashcast` entry point: errors crashcast expects (bad input, unwritable folders) end in one
    line naming the file or option and the problem, on stderr, with exit code 2."""
    problem = _one_pair_per_set([str(a) for a in (sys.argv[1:] if argv is None else argv)])
    if problem:
        err_console.print(f"[red]error:[/] {escape(problem)}")
        raise SystemExit(2)
    try:
        app(args=argv, prog_name="crashcast")
    except CrashcastError as e:
        err_console.print(f"[red]error:[/] {escape(str(e))}")
        raise SystemExit(2) from None
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        err_console.print(f"[red]error:[/] {escape(where + (e.strerror or str(e)))}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
