"""The `crashcast` command line (typer)."""

from __future__ import annotations

import json
import logging
import sys
import tempfile
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from crashcast.doctor import doctor_command, weights_app
from crashcast.errors import CrashcastError
from crashcast.runtime.layout import RunLayout

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


class Calibration(StrEnum):
    none = "none"
    platt = "platt"
    isotonic = "isotonic"


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


def _horizons_override(text: str) -> str:
    """`--horizons 0,0.5` as the config override it stands for."""
    try:
        hs = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated seconds, got {text!r}", param_hint="--horizons") from None
    return f"windows.horizons_s=[{', '.join(repr(h) for h in hs)}]"


def writable_dir(path: Path, option: str = "--out") -> Path:
    """Create `path` if needed and check a file can be written in it (before any work is done)."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise CrashcastError(f"{path}: cannot write there ({e.strerror or e}); choose another {option} folder") from None
    return path


# ----------------------------------------------------------------------------- synth


@app.command()
def synth(
    n: Annotated[int, typer.Option("--n", min=1, help="number of clips (half positives)")] = 20,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("synthetic"),
    seed: Annotated[int, typer.Option(help="random seed (same seed, same clips)")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="parallel processes")] = 1,
) -> None:
    """Render synthetic dashcam clips with exact ground truth (MP4 + annotations.csv + truth/*.json)."""
    from crashcast.data.synthetic import generate

    t0 = time.time()
    csv_path = generate(n, writable_dir(out), seed=seed, workers=workers, progress=True)
    console.print(f"wrote {n} clips to [bold]{out}[/] ({time.time() - t0:.1f} s); annotations: {csv_path}")


# ----------------------------------------------------------------------------- windows


def load_clips(annotations: Path, videos: Path | None, missing_event: MissingEvent | str,
               fmt: AnnotationFormat | str = "auto") -> tuple[list, list]:
    """Clips from an annotation file or DAD folder; bad rows are logged and recorded, then skipped
    (missing_event 'skip' or 'end'), or the first one is fatal ('error')."""
    from crashcast.data.annotations import load_annotations

    missing_event, fmt = MissingEvent(missing_event), AnnotationFormat(fmt)
    errors: list = []
    mode = "end" if missing_event is MissingEvent.end else "error"
    clips = load_annotations(annotations, videos, fmt.value, missing_event=mode, errors=errors)
    if errors and missing_event is MissingEvent.error:
        raise errors[0]
    return clips, errors


def build_windows(clips: list, cfg, errors: list | None = None) -> list:
    """Windows for every clip; a clip whose video cannot be probed is recorded and skipped."""
    from crashcast.data.video import probe
    from crashcast.data.windows import make_windows

    windows = []
    for clip in clips:
        try:
            duration = probe(clip.video_path).duration_s
            windows += make_windows(clip, duration, cfg.windows)
        except CrashcastError as e:
            log.warning("skipping clip %s: %s", clip.id, e)
            if errors is not None:
                errors.append(e)
    return windows


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
    from crashcast.config import load_config
    from crashcast.data.windows import windows_table
    from crashcast.runtime.store import atomic_write_text

    cfg = load_config(config, [_horizons_override(horizons)])
    clips, errors = load_clips(annotations, videos, missing_event, annotation_format)
    wins = build_windows(clips, cfg, errors)
    df = windows_table(wins)
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
                "weights are on disk; never downloads), paper, fast, classic, tiny (random tiny models, for trying the wiring)")
WEIGHTS_DIR_HELP = "load every model from this folder, offline (also CRASHCAST_WEIGHTS_DIR; see `crashcast weights list`)"


def _config_for(backend: str, config: str | None, overrides: list[str], weights_dir: Path | None,
                run: Path | None = None):
    """The config of `--config` (a preset or YAML), else of the `--backend` preset. `auto` keeps the
    config of `run` when that is a crashcast run folder (resuming it, or predicting with a model
    trained on its features, must use the same perception); otherwise it picks the best preset that
    can run here now and says, in one log line, which, why, and how to get a better one."""
    from crashcast.config import load_config
    from crashcast.extract import is_run

    if weights_dir is not None:
        overrides = [*overrides, f"runtime.weights_dir={json.dumps(str(weights_dir))}"]
    if config is not None:
        return load_config(config, overrides)
    if backend == "auto" and run is not None and is_run(run):
        log.info("--backend auto: using the config of the run %s (%s)", run, RunLayout(run).config)
        return load_config(RunLayout(run).config, overrides)
    if backend == "auto":
        from crashcast.readiness import choose_backend

        preset, reason, hint = choose_backend(weights_dir=weights_dir, overrides=overrides)
        log.info("--backend auto chose %s%s", reason, f"; {hint}" if hint else "")
        backend = preset
    return load_config(backend, overrides)


def _check_model_features(model: str | None, cfg) -> None:
    """Warn when a saved model was trained on features of another perception config."""
    card = Path(model) / "model.json" if model is not None and Path(model).is_dir() else None
    try:
        trained = json.loads(card.read_text(encoding="utf-8")).get("extraction_hash") if card else None
    except (OSError, ValueError):
        return  # resolve_model has read it already; an unreadable card was reported there
    if trained and trained != cfg.extraction_hash():
        log.warning("%s was trained on features of another perception config (extraction hash %s, here %s: %s); "
                    "its scores may not mean what they say - predict with --config <its run>/config.yaml",
                    model, trained, cfg.extraction_hash(), cfg.name)


def _model_run(model: str | None) -> Path | None:
    """The run folder a saved model (run/models/<name>) was trained in, if it is one."""
    if model is None or not Path(model).is_dir():
        return None
    run = Path(model).resolve().parent.parent
    return run if Path(model).resolve().parent.name == "models" else None



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
) -> None:
    """Perceive each clip once and write window_meta.json, keyframe overlays and features.parquet."""
    from crashcast.extract import extract_run
    from crashcast.runtime.layout import record_error

    overrides = list(set_ or [])
    if horizons:
        overrides.append(_horizons_override(horizons))
    cfg = _config_for(backend, config, overrides, weights_dir, run=out)
    clips, errors = load_clips(annotations, videos, missing_event, annotation_format)
    if address and executor is not Executor.ray:
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    summary = extract_run(clips, writable_dir(out), cfg, workers=workers, new=new_run, executor=executor.value,
                          address=address)
    for e in errors:
        record_error(out, None, "annotations", str(e), type(e).__name__, file=getattr(e, "path", None), row=getattr(e, "row", None))
    _print_extract(summary, len(errors))
    if summary.failed or errors:
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
) -> None:
    """Train, calibrate and score by video (a split, or --folds cross-validation); write metrics.json / metrics.md / predictions.
    A fine-tuned VLM already in run/models/vlm-<mode>/ (`crashcast train vlm`) is used when it was trained on this split."""
    from crashcast.config import load_config
    from crashcast.evaluation.experiments import run_experiments

    if not run.is_dir():
        raise CrashcastError(f"{run}: no such run folder; make one with `crashcast extract --out {run}`")
    overrides = list(set_ or [])
    cfg = load_config(config or (run / "config.yaml" if (run / "config.yaml").exists() else "classic"), overrides)
    writable_dir(run, "run")
    run_experiments(run, [m.strip() for m in models.split(",") if m.strip()], cfg, calibration.value, folds=folds,
                    vlm_overrides=[o for o in overrides if o.strip().startswith("vlm.")], retrain_vlm=retrain_vlm)
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
    from crashcast.config import load_config
    from crashcast.prompts.dataset import write_prompts

    if not run.is_dir():
        raise CrashcastError(f"{run}: no such run folder; make one with `crashcast extract --out {run}`")
    cfg = load_config(config or (RunLayout(run).config if RunLayout(run).config.exists() else "classic"), list(set_ or []))
    splits = tuple(s.strip() for s in split.split(",") if s.strip())
    try:
        files, written, skipped = write_prompts(writable_dir(run, "run"), cfg, splits, rationale)
    except ValueError as e:
        raise typer.BadParameter(str(e), param_hint="--split") from None
    table = Table(title=escape(f"prompts in {RunLayout(run).prompts}"))
    for col in ("split", "prompts", "positive", "ShareGPT (LLaMA-Factory)", "ms-swift", "chat (TRL)"):
        table.add_column(col)
    for name, f in files.items():
        ps = written[name]
        table.add_row(name, str(len(ps)), str(sum(p.label for p in ps)), f.sharegpt.name, f.swift.name, f.chat.name)
    console.print(table)
    if skipped:
        err_console.print(f"{len(skipped)} window(s) left out (unreadable window_meta or keyframes): "
                          + "; ".join(skipped[:3]) + (" ..." if len(skipped) > 3 else ""), style="yellow", markup=False)
        raise typer.Exit(1)


train_app = typer.Typer(help="Train a risk model on a run's windows (the VLM: `crashcast train vlm`).", no_args_is_help=True)
app.add_typer(train_app, name="train")


@train_app.command("vlm")
def train_vlm_command(
    run: Annotated[Path, typer.Option(help="run folder made by `crashcast extract`")],
    config: Annotated[str, typer.Option(help="the VLM preset or YAML: paper-baseline or paper-enhanced (its vlm section)")] = "paper-baseline",
    base_model: Annotated[str | None, typer.Option(help="hub id or local folder of Qwen2.5-VL (default: the preset's; "
                                                        "random:tiny for a tiny random model)")] = None,
    device: Annotated[str, typer.Option(help="auto, cpu, cuda, cuda:1")] = "auto",
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value, e.g. vlm.epochs=1")] = None,
) -> None:
    """Fine-tune Qwen2.5-VL on the run's training windows (evaluate's video split; validation each epoch) with
    4-bit NF4 QLoRA; write the adapter and its model card to run/models/vlm-<mode>/."""
    from crashcast.config import load_config
    from crashcast.prompts.dataset import split_prompts
    from crashcast.risk.finetune import train_vlm

    layout = RunLayout(run)
    if not layout.config.exists():
        raise CrashcastError(f"{run}: not a run folder (no config.yaml); make one with `crashcast extract --out {run}`")
    overrides = list(set_ or [])
    cfg = load_config(layout.config, overrides)  # the run's split and features
    vlm = load_config(config, [o for o in overrides if o.startswith("vlm.")]).vlm
    if base_model is not None:
        vlm = vlm.model_copy(update={"base_model": base_model})
    if vlm.mode == "zero-shot":
        raise typer.BadParameter(f"{config} is zero-shot: nothing to train (evaluate scores it as it is)", param_hint="--config")
    cfg = cfg.model_copy(update={"vlm": vlm})
    splits, skipped = split_prompts(run, cfg, ("train", "val"))
    if skipped:
        err_console.print(f"{len(skipped)} window(s) left out (unreadable window_meta or keyframes)", style="yellow", markup=False)
    out = writable_dir(layout.model_dir(f"vlm-{vlm.mode}"), "--run")
    weights_dir = Path(cfg.runtime.weights_dir) if cfg.runtime.weights_dir else None
    result = train_vlm(splits["train"], splits["val"], vlm, out, device=device, weights_dir=weights_dir)
    from crashcast.risk.models import create_model

    # model.json beside the adapter: `crashcast predict --model` and `evaluate` load the folder as it is
    create_model(f"vlm-{vlm.mode}", vlm.model_dump(mode="json"), adapter=out, top_k=cfg.features.top_k).save(
        out, {"config_hash": cfg.hash(), "extraction_hash": cfg.extraction_hash(), "perception_preset": cfg.name,
              "trained_on_clips": len({p.clip_id for p in splits["train"]})})
    best = f"{result.best_eval_loss:.4f}" if result.best_eval_loss is not None else "n/a (no validation windows)"
    console.print(f"trained {vlm.mode} on {result.n_train} windows ({result.n_val} for validation): training loss "
                  f"{result.losses[0]:.4f} -> {result.losses[-1]:.4f}, best validation loss {best}", markup=False)
    console.print(f"  adapter and model card: {out}", markup=False)


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run folder with metrics.json (after `crashcast evaluate`)")]) -> None:
    """Write a self-contained HTML report (run/report/index.html)."""
    from crashcast.evaluation.report import write_report

    if not run.is_dir():
        raise CrashcastError(f"{run}: no such run folder")
    writable_dir(run / "report", "run")
    path = write_report(run)
    console.print(f"report: {path}", markup=False)


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
) -> None:
    """Risk timeline of each video: when does it get dangerous, and why."""
    from crashcast.prediction import VideoOutcome, predict_many, resolve_model, videos_in, write_outputs
    from crashcast.prediction import predict as run_predict
    from crashcast.runtime.layout import record_error

    cfg = _config_for(backend, config, list(set_ or []), weights_dir, run=_model_run(model))
    paths = videos_in(videos)
    if not paths:
        raise typer.BadParameter("no video files given or found in the folders", param_hint="VIDEOS")
    if address and executor is not Executor.ray:
        raise typer.BadParameter("--address needs --executor ray", param_hint="--address")
    risk_model = resolve_model(model, cfg)  # a bad --model fails here, before any video is read
    _check_model_features(model, cfg)
    writable_dir(out)
    (out / "errors.jsonl").unlink(missing_ok=True)  # this run's failures only
    machine = fmt is not OutputFormat.table

    def in_process():  # one video after another, printed as each is done
        from crashcast.perception.bundle import Backends

        backends = Backends.build(cfg.perception, cfg.runtime)  # once for every video (model weights load once)
        for path in paths:
            sub = out / path.stem
            try:
                pred = run_predict(path, risk_model, cfg, stride, threshold,
                                   annotate=(sub / "annotated.mp4") if annotate else None, backends=backends)
                yield VideoOutcome(path, pred, write_outputs(pred, sub))
            except Exception as e:  # one video's failure is recorded; the others go on
                if not isinstance(e, CrashcastError | OSError):
                    log.debug("unexpected failure on %s", path, exc_info=True)
                yield VideoOutcome(path, error=str(e), error_type=type(e).__name__)

    if executor is Executor.local and (workers <= 1 or len(paths) <= 1):
        outcomes = in_process()
    else:  # each worker builds the backends and the model once (a saved model folder is read per worker)
        outcomes = predict_many(paths, model, cfg, out, stride, threshold, annotate, workers, executor.value, address,
                                progress=not machine)
    say = err_console if machine else console  # machine formats: only the document on stdout
    docs, frames, failed = [], [], 0
    for outcome in outcomes:
        path, pred, files = outcome.path, outcome.prediction, outcome.files
        if pred is None or files is None:
            failed += 1
            err_console.print(f"{path}: failed: {outcome.error}", markup=False, style="red")
            record_error(out, path.stem, "predict", outcome.error or "failed", outcome.error_type or "Error", file=str(path))
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
    alert = f"first alert at {pred.first_alert:.1f} s" if pred.first_alert is not None else "no alert"
    if pred.peak is None:
        return f"{path.name}: no risk estimate (the video is shorter than one stride)"
    peak_t, peak = pred.peak
    return f"{path.name}: {alert}; peak risk {peak:.2f} at {peak_t:.1f} s" + (f" - {pred.reasons[0]}" if pred.reasons else "")


def _print_timeline(pred, path: Path, threshold: float) -> None:
    alert = f"first alert at {pred.first_alert:.1f} s" if pred.first_alert is not None else "no alert"
    table = Table(title=escape(f"{path.name}: {alert} (threshold {threshold}, model {pred.model})"))
    for col in ("time (s)", "risk", "top reason"):
        table.add_column(col)
    for r in pred.timeline.itertuples():
        style = "bold red" if r.risk >= threshold else None
        table.add_row(f"{r.time_s:.1f}", f"{r.risk:.2f}", escape(r.reason), style=style)
    console.print(table)


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where the demo writes everything")] = Path("crashcast-demo"),
    n: Annotated[int, typer.Option("--n", min=4, help="synthetic clips to render")] = 24,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    workers: Annotated[int, typer.Option(min=1, help="parallel processes")] = 2,
) -> None:
    """The whole classic pipeline on built-in synthetic clips: synth -> extract -> evaluate -> report.

    The evaluation cross-validates by video (every clip scored once by a model that never saw it):
    with a couple of dozen clips, one held-out split of 8 clips gives numbers that swing with the seed."""
    from crashcast.config import load_config
    from crashcast.data.synthetic import generate
    from crashcast.evaluation.experiments import explain_results, run_experiments
    from crashcast.evaluation.report import write_report
    from crashcast.extract import extract_run

    t0 = time.time()
    writable_dir(out)
    data, run = out / "data", out / "run"
    csv_path = data / "annotations.csv"
    if csv_path.exists() and len(csv_path.read_text().splitlines()) == n + 1:
        console.print(f"synthetic clips already in {data}")
    else:
        generate(n, data, seed=seed, workers=workers, progress=True)
    cfg = load_config("classic", ["windows.horizons_s=[0, 0.5, 1.0, 1.5]"])
    clips, _ = load_clips(csv_path, data, "error")
    summary = extract_run(clips, run, cfg, workers=workers)
    _print_extract(summary)
    results = run_experiments(run, ["ttc", "physics", "lightgbm"], cfg, "platt", folds=min(5, n // 2))
    console.print((run / "metrics.md").read_text(), markup=False)
    console.print(explain_results(results), markup=False)
    report_path = write_report(run)
    console.print(f"[bold green]demo finished[/] in {time.time() - t0:.1f} s")
    console.print(f"  clips + annotations + ground truth: {data}")
    console.print(f"  run (window_meta.json, overlays, features.parquet, models, predictions): {run}")
    console.print(f"  metrics: {run / 'metrics.md'}")
    console.print(f"  report:  {report_path}")


# ----------------------------------------------------------------------------- doctor / weights

app.command("doctor")(doctor_command)
app.add_typer(weights_app, name="weights")


def main(argv: list[str] | None = None) -> None:
    """The `crashcast` entry point: errors crashcast expects (bad input, unwritable folders) end in one
    line naming the file or option and the problem, on stderr, with exit code 2."""
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
