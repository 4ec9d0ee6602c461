"""The `crashcast` command line (typer)."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from crashcast.errors import CrashcastError

app = typer.Typer(
    help="crashcast: how likely is a collision in the next seconds of this dashcam video, and why.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(width=None if Console().is_terminal else 140)
log = logging.getLogger("crashcast")


def _setup_logging(verbose: int) -> None:
    from rich.logging import RichHandler

    level = logging.WARNING - 10 * verbose
    logging.basicConfig(level=max(level, logging.DEBUG), format="%(message)s", handlers=[RichHandler(console=Console(stderr=True), show_path=False)], force=True)
    logging.getLogger("crashcast").setLevel(max(level, logging.DEBUG))


@app.callback()
def _main(verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="-v info, -vv debug")] = 1) -> None:
    _setup_logging(verbose)


def _floats(text: str) -> list[float]:
    try:
        return [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise typer.BadParameter(f"expected comma-separated seconds, got {text!r}") from None


# ----------------------------------------------------------------------------- synth


@app.command()
def synth(
    n: Annotated[int, typer.Option("--n", help="number of clips (half positives)")] = 20,
    out: Annotated[Path, typer.Option(help="output folder")] = Path("synthetic"),
    seed: Annotated[int, typer.Option(help="random seed (same seed, same clips)")] = 0,
    workers: Annotated[int, typer.Option(help="parallel processes")] = 1,
) -> None:
    """Render synthetic dashcam clips with exact ground truth (MP4 + annotations.csv + truth/*.json)."""
    from crashcast.data.synthetic import generate

    t0 = time.time()
    csv_path = generate(n, out, seed=seed, workers=workers, progress=True)
    console.print(f"wrote {n} clips to [bold]{out}[/] ({time.time() - t0:.1f} s); annotations: {csv_path}")


# ----------------------------------------------------------------------------- windows


def load_clips(annotations: Path, videos: Path | None, missing_event: str) -> tuple[list, list]:
    """Clips from an annotation file; bad rows are logged, recorded and skipped ('skip') or fatal."""
    from crashcast.data.annotations import load_annotations

    errors: list = []
    mode = "error" if missing_event == "skip" else missing_event
    clips = load_annotations(annotations, videos, missing_event=mode, errors=errors)  # type: ignore[arg-type]
    if errors and missing_event == "error":
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
    annotations: Annotated[Path, typer.Option(help="annotation CSV (Nexar layout, metadata.csv, CCD, consensus)")],
    videos: Annotated[Path | None, typer.Option(help="folder with <id>.mp4 (default: the CSV's folder)")] = None,
    horizons: Annotated[str, typer.Option(help="seconds before the event the windows end, e.g. 0,0.5,1,1.5")] = "0",
    missing_event: Annotated[str, typer.Option(help="positive without event time: skip | end (anchor at the video's end) | error")] = "skip",
    out: Annotated[Path | None, typer.Option(help="also write the table as CSV here")] = None,
    config: Annotated[str | None, typer.Option(help="config preset or YAML")] = None,
) -> None:
    """List the max/mid/mini windows, keyframe times and labels of every clip."""
    from crashcast.config import load_config
    from crashcast.data.windows import windows_table
    from crashcast.runtime.store import atomic_write_text

    cfg = load_config(config, [f"windows.horizons_s=[{horizons}]"])
    clips, errors = load_clips(annotations, videos, missing_event)
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
        console.print(f"[yellow]{len(errors)} clip(s) skipped:[/]")
        for e in errors:
            console.print(f"  {e}")
    if out:
        atomic_write_text(out, df.to_csv(index=False))
        console.print(f"wrote {out}")


# ----------------------------------------------------------------------------- extract


@app.command()
def extract(
    annotations: Annotated[Path, typer.Option(help="annotation CSV")],
    out: Annotated[Path, typer.Option(help="run folder")],
    videos: Annotated[Path | None, typer.Option(help="folder with <id>.mp4 (default: the CSV's folder)")] = None,
    backend: Annotated[str, typer.Option(help="perception preset: classic")] = "classic",
    horizons: Annotated[str | None, typer.Option(help="e.g. 0,0.5,1,1.5 (default: the config's)")] = None,
    workers: Annotated[int, typer.Option(help="parallel processes")] = 1,
    missing_event: Annotated[str, typer.Option(help="positive without event time: skip | end | error")] = "skip",
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the backend's preset)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field: section.field=value")] = None,
    new_run: Annotated[bool, typer.Option(help="start over in a folder holding another config's outputs")] = False,
) -> None:
    """Perceive each clip once and write window_meta.json, keyframe overlays and features.parquet."""
    from crashcast.config import load_config
    from crashcast.extract import extract_run, record_error

    overrides = list(set_ or [])
    if horizons:
        overrides.append(f"windows.horizons_s=[{horizons}]")
    cfg = load_config(config or backend, overrides)
    clips, errors = load_clips(annotations, videos, missing_event)
    summary = extract_run(clips, out, cfg, workers=workers)
    for e in errors:
        record_error(out, getattr(e, "path", "?").__str__(), "annotations", str(e), type(e).__name__)
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
    console.print(f"  run folder: {s.run_dir}  (features.parquet, clips/<id>/<window>/window_meta.json + kf*.png)")
    if s.failed:
        console.print(f"  [yellow]failures recorded in {s.run_dir / 'errors.jsonl'}[/]")


# ----------------------------------------------------------------------------- evaluate / report


@app.command()
def evaluate(
    run: Annotated[Path, typer.Argument(help="run folder made by `crashcast extract`")],
    models: Annotated[str, typer.Option(help="comma-separated: ttc, physics, lightgbm, xgboost, mlp")] = "ttc,lightgbm,xgboost,mlp",
    calibration: Annotated[str, typer.Option(help="none | platt | isotonic (fitted on the validation split)")] = "platt",
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the run's config.yaml)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override: section.field=value, e.g. evaluation.seed=1")] = None,
) -> None:
    """Train on the train split, score the test split, write metrics.json / metrics.md / predictions."""
    from crashcast.config import load_config
    from crashcast.evaluation.experiments import run_experiments

    cfg = load_config(config or (run / "config.yaml" if (run / "config.yaml").exists() else "classic"), list(set_ or []))
    run_experiments(run, [m.strip() for m in models.split(",") if m.strip()], cfg, calibration)
    console.print((run / "metrics.md").read_text())
    console.print(f"wrote {run / 'metrics.json'}, {run / 'metrics.md'}, {run / 'predictions'}/, {run / 'models'}/")


@app.command()
def report(run: Annotated[Path, typer.Argument(help="run folder with metrics.json (after `crashcast evaluate`)")]) -> None:
    """Write a self-contained HTML report (run/report/index.html)."""
    from crashcast.evaluation.report import write_report

    path = write_report(run)
    console.print(f"report: {path}")


# ----------------------------------------------------------------------------- predict


@app.command()
def predict(
    videos: Annotated[list[Path], typer.Argument(help="video files or folders of videos")],
    model: Annotated[str | None, typer.Option(help="a saved model folder (run/models/<name>), or physics | ttc")] = None,
    backend: Annotated[str, typer.Option(help="perception preset: classic")] = "classic",
    stride: Annotated[float, typer.Option(help="seconds between risk estimates")] = 0.5,
    threshold: Annotated[float, typer.Option(help="alert when the risk reaches this")] = 0.5,
    out: Annotated[Path, typer.Option(help="output folder (one subfolder per video)")] = Path("crashcast-predictions"),
    fmt: Annotated[str, typer.Option("--format", help="what to print: table | json | csv")] = "table",
    annotate: Annotated[bool, typer.Option(help="also write annotated.mp4 (boxes, ids, depth, TTC, risk gauge)")] = False,
    config: Annotated[str | None, typer.Option(help="config preset or YAML (default: the backend's preset)")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="override a config field, e.g. perception.classic.horizon=0.55")] = None,
) -> None:
    """Risk timeline of each video: when does it get dangerous, and why."""
    import json as _json

    from rich.markup import escape

    from crashcast.config import load_config
    from crashcast.extract import record_error
    from crashcast.prediction import predict as run_predict
    from crashcast.prediction import videos_in, write_outputs

    if fmt not in ("table", "json", "csv"):
        raise typer.BadParameter("--format must be table, json or csv")
    cfg = load_config(config or backend, list(set_ or []))
    paths = videos_in(videos)
    if not paths:
        raise typer.BadParameter("no video files given or found in the folders")
    out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in paths:
        sub = out / path.stem
        try:
            pred = run_predict(path, model, cfg, stride, threshold, annotate=(sub / "annotated.mp4") if annotate else None)
        except CrashcastError as e:
            failed += 1
            console.print(f"{path}: failed: {e}", markup=False, style="red")
            record_error(out, path.stem, "predict", str(e), type(e).__name__)
            continue
        files = write_outputs(pred, sub)
        alert = f"first alert at {pred.first_alert:.1f} s" if pred.first_alert is not None else "no alert"
        peak_t, peak = pred.peak
        if fmt == "json":
            console.print_json(_json.dumps(pred.to_dict(), default=str))
        elif fmt == "csv":
            console.print(pred.timeline.to_csv(index=False), end="")
        elif len(paths) == 1:
            table = Table(title=f"{path.name}: {alert} (threshold {threshold}, model {pred.model})")
            for col in ("time (s)", "risk", "top reason"):
                table.add_column(col)
            for r in pred.timeline.itertuples():
                style = "bold red" if r.risk >= threshold else None
                table.add_row(f"{r.time_s:.1f}", f"{r.risk:.2f}", escape(r.reason), style=style)
            console.print(table)
        console.print(f"{path.name}: {alert}; peak risk {peak:.2f} at {peak_t:.1f} s"
                      + (f" - {pred.reasons[0]}" if pred.reasons else "") + f"  -> {files['csv'].parent}", markup=False)
    if failed:
        console.print(f"[yellow]{failed} of {len(paths)} video(s) failed; see {out / 'errors.jsonl'}[/]")
        raise typer.Exit(1)


# ----------------------------------------------------------------------------- demo


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="where the demo writes everything")] = Path("crashcast-demo"),
    n: Annotated[int, typer.Option("--n", help="synthetic clips to render")] = 24,
    seed: Annotated[int, typer.Option(help="random seed")] = 0,
    workers: Annotated[int, typer.Option(help="parallel processes")] = 2,
) -> None:
    """The whole classic pipeline on built-in synthetic clips: synth -> extract -> evaluate -> report."""
    from crashcast.config import load_config
    from crashcast.data.synthetic import generate
    from crashcast.evaluation.experiments import run_experiments
    from crashcast.evaluation.report import write_report
    from crashcast.extract import extract_run

    t0 = time.time()
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
    run_experiments(run, ["ttc", "physics", "lightgbm"], cfg, "platt")
    console.print((run / "metrics.md").read_text())
    report_path = write_report(run)
    console.print(f"[bold green]demo finished[/] in {time.time() - t0:.1f} s")
    console.print(f"  clips + annotations + ground truth: {data}")
    console.print(f"  run (window_meta.json, overlays, features.parquet, models, predictions): {run}")
    console.print(f"  metrics: {run / 'metrics.md'}")
    console.print(f"  report:  {report_path}")


def main() -> None:
    try:
        app()
    except CrashcastError as e:
        console.print(f"[red]error:[/] {e}")
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
