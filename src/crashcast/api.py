"""crashcast as a library: what each `crashcast` command does, as functions with typed arguments and results.

The CLI (`crashcast.cli`) parses its options, calls these and prints what they return; a script calls
them the same way:

    >>> from crashcast import api
    >>> api.synth(4, "clips")
    >>> summary = api.extract("clips/annotations.csv", "run", backend="classic")
    >>> results = api.evaluate("run", ["ttc", "lightgbm"], folds=2)
    >>> for outcome in api.predict_many(["clips"], out="preds"):
    ...     print(outcome.path, outcome.prediction.first_alert if outcome.prediction else outcome.error)

Configs are a preset name, a YAML path or a `CrashcastConfig`, with `section.field=value` overrides;
where a command takes `--backend` (extract, predict), `config_for` resolves it. Heavy libraries are
imported inside the functions that need them.
"""

from __future__ import annotations

import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from crashcast.errors import ConfigError, CrashcastError
from crashcast.runtime.executors import ExecutorKind
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import read_text_bounded

if TYPE_CHECKING:
    import pandas as pd

    from crashcast.config import CrashcastConfig, VlmConfig
    from crashcast.doctor import DoctorReport
    from crashcast.extract import ExtractSummary
    from crashcast.prediction import Prediction, VideoOutcome
    from crashcast.prompts.builder import Prompt
    from crashcast.prompts.exports import SplitExport
    from crashcast.readiness import WeightStatus
    from crashcast.risk.alerts import AlertPolicy
    from crashcast.risk.base import RiskModel
    from crashcast.risk.finetune import TrainResult
    from crashcast.types import Clip, Window

log = logging.getLogger("crashcast")

MissingEvent = Literal["skip", "end", "error"]
"""A positive clip without an event time: skip it (recorded), anchor its windows at the video's end, or fail."""
AnnotationFormat = Literal["auto", "nexar", "nexar-metadata", "ccd", "dad", "consensus"]
Calibration = Literal["none", "platt", "isotonic"]


class UsageError(ConfigError):
    """An argument the caller gave is unusable; `option` names the CLI option it comes from."""

    def __init__(self, message: str, option: str) -> None:
        super().__init__(message)
        self.option = option


# ----------------------------------------------------------------------------- helpers


def writable_dir(path: str | Path, option: str = "--out") -> Path:
    """Create `path` if needed and check a file can be written in it (before any work is done)."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise CrashcastError(f"{path}: cannot write there ({e.strerror or e}); choose another {option} folder") from None
    return path


def load(config: str | Path | CrashcastConfig | None, overrides: Sequence[str] = (),
         default: str | Path | None = "classic") -> CrashcastConfig:
    """A config from a preset name, a YAML path or a `CrashcastConfig` (None: `default`; a None
    default: the built-in defaults), with `section.field=value` overrides applied."""
    from crashcast.config import CrashcastConfig, load_config

    if isinstance(config, CrashcastConfig):
        if not overrides:
            return config
        with tempfile.TemporaryDirectory(prefix="crashcast-config-") as d:  # overrides apply to YAML, as a preset's
            path = Path(d) / f"{config.name}.yaml"
            path.write_text(config.to_yaml(), encoding="utf-8")
            return load_config(path, list(overrides))
    return load_config(config if config is not None else default, list(overrides))


def config_for(backend: str = "auto", config: str | Path | CrashcastConfig | None = None, overrides: Sequence[str] = (),
               weights_dir: str | Path | None = None, run: str | Path | None = None,
               offline: bool | None = None) -> CrashcastConfig:
    """The config of `config` (a preset, YAML or config), else of the `backend` preset. `auto` keeps
    the config of `run` when that is a crashcast run folder (resuming it, or predicting with a model
    trained on its features, must use the same perception); otherwise it picks the best preset that
    can run here, first downloading the fast preset's weights (about 105 MB, once, with a progress
    bar) when that is all it lacks and the network is there (`readiness.auto_backend`; `offline`
    True, or None with CRASHCAST_OFFLINE=1 / HF_HUB_OFFLINE=1 set, never downloads), and says in one
    short log line which it took and how to get a better one (the full reason at debug level)."""
    from crashcast.extract import is_run

    overrides = list(overrides)
    if weights_dir is not None:
        overrides = [*overrides, f"runtime.weights_dir={json.dumps(str(weights_dir))}"]
    if config is not None:
        return load(config, overrides)
    if backend == "auto" and run is not None and is_run(Path(run)):
        log.info("--backend auto: using the config of the run %s (%s)", run, RunLayout(Path(run)).config)
        return load(RunLayout(Path(run)).config, overrides)
    from crashcast.readiness import auto_backend, is_vlm_preset

    if backend != "auto" and is_vlm_preset(backend):
        raise ConfigError(f"--backend {backend}: a VLM preset (it sets the vlm risk model, not perception); name a "
                          f"perception preset (paper, fast, classic, tiny), and use {backend} with `crashcast train vlm "
                          f"--config {backend}` or `crashcast evaluate --models vlm-...`")
    if backend == "auto":
        choice = auto_backend(weights_dir, overrides, offline=offline)
        log.info("%s", choice.line)
        log.debug("--backend auto chose %s%s", choice.reason, f"; {choice.hint}" if choice.hint else "")
        backend = choice.preset
    return load(backend, overrides)


def check_model_features(model: str | Path | None, cfg: CrashcastConfig, videos: Sequence[str | Path] = ()) -> bool:
    """Whether a saved model folder fits what it is applied to: trained on features of `cfg`'s
    perception (its card's extraction hash), and not on synthetic clips only when one of `videos` is
    real (`crashcast.data.domain`: a video is real unless it is one of a synthetic folder's clips).
    Each misfit is one warning line; True when nothing misfits or it cannot be told (no model card,
    or a card without those fields: models saved before they were recorded)."""
    card_path = Path(model) / "model.json" if model is not None and Path(model).is_dir() else None
    try:
        card = json.loads(read_text_bounded(card_path, what="model card")) if card_path else None
    except (OSError, ValueError):
        return True  # resolve_model has read it already; an unreadable card was reported there
    if not isinstance(card, dict):
        return True
    ok = True
    trained, preset = card.get("extraction_hash"), card.get("perception_preset")
    if trained and trained != cfg.extraction_hash():
        log.warning("%s was trained on features of another perception config (%s, extraction hash %s; here %s, %s): "
                    "its scores may not mean what they say; predict with --config <its run>/config.yaml",
                    model, preset or "?", trained, cfg.name, cfg.extraction_hash())
        ok = False
    domain = card.get("training_domain")
    if videos and isinstance(domain, dict) and domain.get("trained_on") == "synthetic":
        from crashcast.data.domain import video_domain

        real = [Path(v) for v in videos if video_domain(v) == "real"]
        if real:
            which = f"{real[0].name} is a real video" if len(videos) == 1 else \
                f"{len(real)} of the {len(videos)} videos are real"
            log.warning("%s was trained on synthetic clips only (%s clips); %s: its scores may not transfer",
                        model, domain.get("synthetic_clips", "?"), which)
            ok = False
    return ok


def model_run(model: str | Path | None) -> Path | None:
    """The run folder a saved model (run/models/<name>) was trained in, if it is one."""
    if model is None or not Path(model).is_dir():
        return None
    run = Path(model).resolve().parent.parent
    return run if Path(model).resolve().parent.name == "models" else None


def load_clips(annotations: str | Path, videos: str | Path | None = None, missing_event: MissingEvent = "skip",
               fmt: AnnotationFormat = "auto") -> tuple[list[Clip], list[CrashcastError]]:
    """Clips from an annotation file or DAD folder, and the bad rows: each is logged and returned,
    then skipped (missing_event 'skip' or 'end'), or the first one is raised ('error')."""
    from crashcast.data.annotations import load_annotations

    if missing_event not in ("skip", "end", "error"):
        raise ConfigError(f"missing_event {missing_event!r}: skip, end or error")
    errors: list = []
    mode = "end" if missing_event == "end" else "error"
    clips = load_annotations(Path(annotations), Path(videos) if videos is not None else None, str(fmt),
                             missing_event=mode, errors=errors)
    if errors and missing_event == "error":
        raise errors[0]
    return clips, errors


def build_windows(clips: Sequence[Clip], cfg: CrashcastConfig, errors: list | None = None) -> list[Window]:
    """Windows for every clip; a clip whose video cannot be probed is logged, added to `errors` and skipped."""
    from crashcast.data.video import probe
    from crashcast.data.windows import make_windows

    windows: list[Window] = []
    for clip in clips:
        try:
            duration = probe(clip.video_path).duration_s
            windows += make_windows(clip, duration, cfg.windows)
        except CrashcastError as e:
            log.warning("skipping clip %s: %s", clip.id, e)
            if errors is not None:
                errors.append(e)
    return windows


def horizons_override(horizons_s: Sequence[float]) -> str:
    """The config override that sets the windows' horizons (seconds before the event they end)."""
    return f"windows.horizons_s=[{', '.join(repr(float(h)) for h in horizons_s)}]"


# ----------------------------------------------------------------------------- commands


def synth(n: int = 20, out: str | Path = "synthetic", seed: int = 0, workers: int = 1, progress: bool = False,
          mix: str = "default") -> Path:
    """Render `n` synthetic dashcam clips (half positives) with exact ground truth into `out`
    (MP4 + annotations.csv + truth/<id>.json); returns the annotations.csv path. `mix`: "default"
    (the ego vehicle's own near crashes) or "third-party" (other road users collide ahead). An
    annotations.csv in `out` that crashcast's synth did not write is refused (`CrashcastError`,
    nothing written); synthetic clips of another seed, count or mix that synth wrote there are
    replaced, never mixed."""
    from crashcast.data.synthetic import generate

    if mix not in ("default", "third-party"):
        raise UsageError(f"mix {mix!r}: default or third-party", "--mix")
    return generate(n, writable_dir(out), seed=seed, workers=workers, progress=progress, mix=mix)


def synthetic_clips(n: int, out: str | Path, seed: int = 0, workers: int = 1, progress: bool = False) -> tuple[Path, bool]:
    """The annotations.csv of `n` synthetic clips of `seed` in `out`, and whether they were there already
    (exactly those clips, with their videos: reused) rather than rendered now by `synth` (the demo)."""
    from crashcast.data.synthetic import expected_ids, synthetic_ids

    out = Path(out)
    want = expected_ids(n, seed)
    if out.is_dir() and synthetic_ids(out) == want and all((out / f"{cid}.mp4").is_file() for cid in want):
        return out / "annotations.csv", True
    return synth(n, out, seed=seed, workers=workers, progress=progress), False


@dataclass
class WindowList:
    """The windows of a set of clips, and the clips (annotation rows, videos) skipped on the way."""

    windows: list[Window]
    errors: list[CrashcastError] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """One row per window (`crashcast windows --out`'s CSV)."""
        from crashcast.data.windows import windows_table

        return windows_table(self.windows)


def windows(annotations: str | Path, videos: str | Path | None = None, config: str | Path | CrashcastConfig | None = None,
            horizons_s: Sequence[float] = (0.0,), missing_event: MissingEvent = "skip",
            annotation_format: AnnotationFormat = "auto") -> WindowList:
    """The max/mid/mini windows, keyframe times and labels of every clip (`horizons_s` replaces the config's)."""
    cfg = load(config, [horizons_override(horizons_s)], default=None)
    clips, errors = load_clips(annotations, videos, missing_event, annotation_format)
    return WindowList(build_windows(clips, cfg, errors), errors)


def extract(annotations: str | Path, out: str | Path, videos: str | Path | None = None, *, backend: str = "auto",
            config: str | Path | CrashcastConfig | None = None, overrides: Sequence[str] = (),
            weights_dir: str | Path | None = None, workers: int = 1, missing_event: MissingEvent = "skip",
            annotation_format: AnnotationFormat = "auto", new_run: bool = False, executor: ExecutorKind = "local",
            address: str | None = None, progress: bool = True,
            trust_checkpoints: Sequence[str | Path] = (), offline: bool | None = None) -> ExtractSummary:
    """Perceive each clip once and write window_meta.json, keyframe overlays and features.parquet into
    the run folder `out` (a rerun resumes). Failed clips and bad annotation rows are recorded in
    `out/errors.jsonl`; the summary counts them (`failed`, `annotation_errors`). `trust_checkpoints`:
    checkpoint files you trust to be unpickled in full (`crashcast.runtime.checkpoints`). `offline`:
    `--backend auto` downloads nothing (None: CRASHCAST_OFFLINE / HF_HUB_OFFLINE decide; `config_for`)."""
    from crashcast.data.domain import record_domains
    from crashcast.extract import extract_run
    from crashcast.runtime.checkpoints import trusting
    from crashcast.runtime.layout import record_error

    out = Path(out)
    cfg = config_for(backend, config, overrides, weights_dir, run=out, offline=offline)
    clips, errors = load_clips(annotations, videos, missing_event, annotation_format)
    with trusting(trust_checkpoints):
        summary = extract_run(clips, writable_dir(out), cfg, workers=workers, progress=progress, new=new_run,
                              executor=executor, address=address)
    record_domains(out, clips)  # synthetic or real, for the cards of the models trained on the run
    for e in errors:
        record_error(out, None, "annotations", str(e), type(e).__name__, file=getattr(e, "path", None), row=getattr(e, "row", None))
    summary.annotation_errors = list(errors)
    return summary


def _run_config(run: Path, config: str | Path | CrashcastConfig | None, overrides: Sequence[str]) -> CrashcastConfig:
    """`config`, else the run's config.yaml (else classic), with `overrides`."""
    if not run.is_dir():
        raise CrashcastError(f"{run}: no such run folder; make one with `crashcast extract --out {run}`")
    layout = RunLayout(run)
    return load(config, overrides, default=layout.config if layout.config.exists() else "classic")


def evaluate(run: str | Path, models: str | Sequence[str] = ("ttc", "lightgbm", "xgboost", "mlp"), calibration: Calibration = "platt",
             folds: int | None = None, config: str | Path | CrashcastConfig | None = None, overrides: Sequence[str] = (),
             retrain_vlm: bool = False, protocol: str | None = None) -> dict[str, Any]:
    """Train, calibrate and score `models` by video (the config's split, or `folds`-fold cross-validation)
    on the run's windows; write metrics.json / metrics.md / predictions/ / models/ into the run and
    return the results per model (`models`: names, or one comma-separated string). `overrides` `vlm.field=value` change the vlm-* models' settings.
    `protocol` ('crashcast' | 'paper'; None: the config's evaluation.protocol) is the headline table of metrics.md."""
    from crashcast.evaluation.experiments import run_experiments

    run = Path(run)
    names = [m.strip() for m in models.split(",") if m.strip()] if isinstance(models, str) else list(models)
    cfg = _run_config(run, config, [*overrides, *([f"evaluation.protocol={protocol}"] if protocol else [])])
    writable_dir(run, "run")
    return run_experiments(run, names, cfg, calibration, folds=folds,
                           vlm_overrides=[o for o in overrides if o.strip().startswith("vlm.")], retrain_vlm=retrain_vlm)


@dataclass
class PromptFiles:
    """What `prompts` wrote: the files of each split, its prompts, and the windows left out (named, with the problem)."""

    folder: Path
    files: dict[str, SplitExport]
    prompts: dict[str, list[Prompt]]
    skipped: list[str]


def prompts(run: str | Path, splits: Sequence[str] = ("train", "val", "test"), rationale: bool | None = None,
            config: str | Path | CrashcastConfig | None = None, overrides: Sequence[str] = ()) -> PromptFiles:
    """Write each window of `splits` as a VLM prompt into run/prompts/ (ShareGPT + dataset_info.json,
    ms-swift, chat messages). `rationale` None: the config's vlm.rationale."""
    from crashcast.prompts.dataset import SPLITS, write_prompts

    unknown = [s for s in splits if s not in SPLITS]
    if unknown or not splits:
        raise UsageError(f"unknown split(s) {', '.join(unknown) or '(none given)'}; choose from {', '.join(SPLITS)}", "--split")
    run = Path(run)
    cfg = _run_config(run, config, overrides)
    files, written, skipped = write_prompts(writable_dir(run, "run"), cfg, tuple(splits), rationale)
    return PromptFiles(RunLayout(run).prompts, files, written, skipped)


@dataclass
class TrainingData:
    """What `train_vlm` fine-tunes on: the run's config with the `vlm` section to train, the prompts
    of evaluate's train and validation splits, the windows left out, and the adapter's folder."""

    run: Path
    cfg: CrashcastConfig
    train: list[Prompt]
    val: list[Prompt]
    skipped: list[str]

    @property
    def vlm(self) -> VlmConfig:
        return self.cfg.vlm

    @property
    def out_dir(self) -> Path:
        return RunLayout(self.run).model_dir(f"vlm-{self.cfg.vlm.mode}")


def vlm_training_data(run: str | Path, config: str | Path = "paper-baseline", base_model: str | None = None,
                      overrides: Sequence[str] = ()) -> TrainingData:
    """The run's train/validation prompts and the VLM settings of `config` (its vlm section, with the
    `vlm.*` overrides; `base_model` a hub id, a local folder, random:tiny or random:tiny-qwen3-vl). A zero-shot config
    has nothing to train (`UsageError`)."""
    from crashcast.config import load_config
    from crashcast.prompts.dataset import split_prompts

    run = Path(run)
    layout = RunLayout(run)
    if not layout.config.exists():
        raise CrashcastError(f"{run}: not a run folder (no config.yaml); make one with `crashcast extract --out {run}`")
    overrides = list(overrides)
    cfg = load_config(layout.config, overrides)  # the run's split and features
    vlm = load_config(config, [o for o in overrides if o.startswith("vlm.")]).vlm
    if base_model is not None:
        vlm = vlm.model_copy(update={"base_model": base_model})
    if vlm.mode == "zero-shot":
        raise UsageError(f"{config} is zero-shot: nothing to train (evaluate scores it as it is)", "--config")
    cfg = cfg.model_copy(update={"vlm": vlm})
    splits, skipped = split_prompts(run, cfg, ("train", "val"))
    return TrainingData(run, cfg, splits["train"], splits["val"], skipped)


def train_vlm(data: TrainingData, device: str = "auto") -> TrainResult:
    """Fine-tune the VLM of `data` with 4-bit NF4 QLoRA (validation each epoch) and write the adapter
    and its model card (model.json: `crashcast predict --model` and `evaluate` load the folder) to
    `data.out_dir` (run/models/vlm-<mode>/)."""
    from crashcast.data.domain import training_domain
    from crashcast.risk.finetune import train_vlm as fit
    from crashcast.risk.models import create_model
    from crashcast.runtime.context import RuntimeContext

    cfg, vlm = data.cfg, data.cfg.vlm
    out = writable_dir(data.out_dir, "--run")
    runtime = RuntimeContext.of(cfg.runtime)  # the weights folder rule every model follows
    result = fit(data.train, data.val, vlm, out, device=device, weights_dir=runtime.weights_dir)
    create_model(f"vlm-{vlm.mode}", vlm.model_dump(mode="json"), adapter=out, top_k=cfg.features.top_k).save(
        out, {"config_hash": cfg.hash(), "extraction_hash": cfg.extraction_hash(), "perception_preset": cfg.name,
              "trained_on_clips": len({p.clip_id for p in data.train}),
              "training_domain": training_domain(data.run, {p.clip_id for p in data.train})})
    return result


def train(run: str | Path, config: str | Path = "paper-baseline", base_model: str | None = None, device: str = "auto",
          overrides: Sequence[str] = ()) -> TrainResult:
    """`crashcast train vlm`: fine-tune Qwen2.5-VL on the run's training windows (evaluate's video split)
    and write the adapter and model.json to run/models/vlm-<mode>/ (`vlm_training_data` + `train_vlm`)."""
    data = vlm_training_data(run, config, base_model, overrides)
    if data.skipped:
        log.warning("%d window(s) left out (unreadable window_meta or keyframes)", len(data.skipped))
    return train_vlm(data, device)


def report(run: str | Path) -> Path:
    """Write a self-contained HTML report of an evaluated run (run/report/index.html); returns its path."""
    from crashcast.evaluation.report import write_report

    run = Path(run)
    if not run.is_dir():
        raise CrashcastError(f"{run}: no such run folder")
    writable_dir(run / "report", "run")
    return write_report(run)


def dense(run: str | Path, annotations: str | Path, videos: str | Path | None = None, model: str = "physics", *,
          stride_s: float = 0.5, alert_policy: str | None = None, max_share: float = 0.1, max_per_hour: float = 1.0,
          annotation_format: AnnotationFormat = "auto", workers: int = 1, config: str | Path | CrashcastConfig | None = None,
          overrides: Sequence[str] = (), progress: bool = True) -> dict[str, Any]:
    """`crashcast dense`: the dense per-video figures of a model `evaluate` saved in run/models/<model>,
    on the run's test videos (metrics.json's test clips; `annotations`/`videos` say where they are):
    each whole video predicted causally one stride at a time as `predict` does (the run's config),
    then the field's per-frame AP, mTTA and TTA@R80 and the false-alarm-capped recall and time to
    alert (`crashcast.evaluation.dense`; the alert policy: `alert_policy`, else the config's, at
    `evaluation.threshold`). Writes run/dense/<model>/ (timelines.csv, each video's predict files),
    run/dense_metrics.json and run/dense.md; returns dense_metrics.json's content. Under
    cross-validation a model that learns was refit on every clip: refused (`UsageError`)."""
    from crashcast.evaluation import dense as D
    from crashcast.prediction import alert_policy_for, check_settings, resolve_model, runs_in_process
    from crashcast.prediction import predict_many as run_many
    from crashcast.runs import read_metrics

    run = Path(run)
    cfg = _run_config(run, config, overrides)
    threshold = cfg.evaluation.threshold
    check_settings(stride_s, threshold)
    if not (0 <= max_share <= 1) or not max_per_hour >= 0:
        raise UsageError(f"false-alarm caps: a share from 0 to 1 (got {max_share!r}) and a rate >= 0 per hour "
                         f"(got {max_per_hour!r})", "--max-false-alarm-share")
    policy = alert_policy_for(cfg, threshold, alert_policy)
    evaluated = read_metrics(run)
    folder = RunLayout(run).model_dir(model)
    if not (folder / "model.json").is_file():
        saved = sorted(p.name for p in RunLayout(run).models.glob("*") if (p / "model.json").is_file())
        raise UsageError(f"{folder}: no saved model {model!r} (saved: {', '.join(saved) or 'none'}); "
                         f"`crashcast evaluate {run} --models {model}` saves it", "--model")
    risk_model = resolve_model(folder, cfg)
    protocol = (evaluated.get("protocol") or {}).get("kind", "split")
    if protocol == "cv" and risk_model.trainable:
        raise UsageError(f"{run} was evaluated by cross-validation: the saved {model} was refit on every clip, so no "
                         "clip is held out from it; evaluate it on the split (without --folds) for dense figures",
                         "--model")
    test_ids = [str(c) for c in (evaluated.get("split") or {}).get("test_clip_ids") or []]
    if not test_ids:
        raise CrashcastError(f"{RunLayout(run).metrics_json}: no test_clip_ids; rerun `crashcast evaluate {run}`")
    clips = _dense_clips(annotations, videos, annotation_format)
    by_id = {c.id: c for c in clips if not (c.is_positive and c.time_of_event_s is None)}  # no event: no TTA
    chosen = [by_id[c] for c in test_ids if c in by_id]
    missing = [c for c in test_ids if c not in by_id]
    if missing:
        log.warning("%d test clip(s) not in %s (or positives without an event time): left out: %s%s", len(missing),
                    annotations, ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")
    if not chosen:
        raise CrashcastError(f"{annotations}: none of the run's {len(test_ids)} test clips is there; give the "
                             "annotations the run was extracted from")
    if len({c.is_positive for c in chosen}) < 2:  # AP with no negative would be the recall, not a precision
        which = "positive" if chosen[0].is_positive else "negative"
        raise CrashcastError(f"{annotations}: of the run's {len(test_ids)} test clips, the {len(chosen)} found are all "
                             f"{which} ({len(missing)} not found); dense figures need both classes: give the "
                             "annotations, or the dataset's root folder, the run was extracted from")
    paths = [c.video_path for c in chosen]
    check_model_features(folder, cfg, paths)
    out = writable_dir(RunLayout(run).dense_dir(model) / "videos", "run")
    use = risk_model if runs_in_process("local", workers, len(paths)) else folder
    timelines, failed = [], []
    for clip, o in zip(chosen, run_many(paths, use, cfg, out, stride_s, threshold, workers=workers, progress=progress),
                       strict=True):
        if o.prediction is None:
            log.warning("%s: prediction failed, left out: %s", clip.id, o.error)
            failed.append({"clip_id": clip.id, "error": o.error})
            continue
        tl = o.prediction.timeline
        timelines.append(D.DenseTimeline(clip.id, tl.time_s.to_numpy(float), tl.risk_raw.to_numpy(float),
                                         clip.time_of_event_s if clip.is_positive else None))
    info = {"protocol": protocol, "alert_policy": policy.settings(), "threshold": threshold,
            "config_hash": cfg.hash(), "extraction_hash": cfg.extraction_hash(), "perception_preset": cfg.name,
            "test_clips": len(test_ids), "videos": len(timelines), "missing": missing, "failed": failed,
            "note": ("training-free model; under cross-validation its calibration was fitted on these clips' "
                     "out-of-fold scores" if protocol == "cv" else "test split: clips the model never saw")}
    return D.write_results(run, model, timelines, info, policy, stride_s, max_share, max_per_hour)


def _dense_clips(annotations: str | Path, videos: str | Path | None, annotation_format: AnnotationFormat) -> list:
    """The clips `dense` looks the test clips up in: a dataset's root folder as downloaded
    (`data.layouts`: the ids `reproduce` gave them), else an annotation file or DAD folder."""
    from crashcast.data.layouts import detect_layout, import_dataset
    from crashcast.errors import AnnotationError

    path = Path(annotations)
    if path.is_dir() and annotation_format == "auto":
        try:
            detect_layout(path)
        except AnnotationError:
            pass  # not a dataset root: a DAD folder with positive/ and negative/, read below
        else:
            return list(import_dataset(path, errors=[], check_videos=False).clips)
    return load_clips(annotations, videos, "skip", annotation_format)[0]


def predict(video: str | Path, model: str | Path | RiskModel | None = None,
            config: str | Path | CrashcastConfig | None = None, stride_s: float = 0.5, threshold: float = 0.5,
            annotate: str | Path | None = None, smooth: int | None = None, backends: Any = None, *,
            out: str | Path | None = None, trust_checkpoints: Sequence[str | Path] = (),
            alert_policy: str | AlertPolicy | None = None) -> Prediction:
    """Risk timeline of one video (`crashcast.prediction.predict`; `config` None: the classic preset),
    and with `out` its timeline.csv, timeline.json and risk.png written there. `alert_policy`: a
    policy name (`crashcast.risk.alerts.POLICIES`, with the config's `alert` settings) or a policy;
    None: the config's `alert.policy`; `smooth` (given, no policy): the median of that many strides.
    `trust_checkpoints`: checkpoint files you trust to be unpickled in full (`crashcast.runtime.checkpoints`)."""
    from crashcast.prediction import predict as predict_video
    from crashcast.prediction import write_outputs
    from crashcast.runtime.checkpoints import trusting

    with trusting(trust_checkpoints):
        pred = predict_video(video, model, config, stride_s, threshold, annotate=annotate, smooth=smooth,
                             backends=backends, alert_policy=alert_policy)
    if out is not None:
        write_outputs(pred, out)
    return pred


def videos_in(inputs: Sequence[str | Path]) -> list[Path]:
    """Video files, with folders expanded into the videos inside them (sorted)."""
    from crashcast.prediction import videos_in as expand

    return expand([Path(p) for p in inputs])


def watch(source: str | Path, model: str | Path | RiskModel | None = None,
          config: str | Path | CrashcastConfig | None = None, *, stride_s: float = 0.5, threshold: float = 0.5,
          alert_policy: str | AlertPolicy | None = None, record: str | Path | None = None, pre_s: float = 5.0,
          post_s: float = 5.0, max_record_bytes: int = 2 * 2**30, queue_size: int = 8, realtime: bool | None = None,
          reconnect: bool | None = None, timeout_s: float = 10.0, probe: bool = True,
          serve: str | None = None) -> Iterator[dict]:
    """Collision warnings from a live source, one dict per stride (`crashcast.live.watch`): a camera
    device, a stream URL or a file played at its real rate; `record` a folder for the event
    recordings; `probe` times the preset on a synthetic scene first and says whether it keeps up;
    `serve` "HOST:PORT" (or ":PORT": 127.0.0.1) of a web page showing the annotated view and the risk
    while it runs (`crashcast.live.web`). Close the iterator (or leave the loop) to stop; the
    recording in progress is finished."""
    from crashcast.live.watch import watch as run

    cfg = load(config)  # a config as it is, or a preset / YAML
    return run(source, model, cfg, stride_s, threshold, alert_policy, record, pre_s, post_s, max_record_bytes,
               queue_size, realtime, reconnect, timeout_s, probe, serve)


def predict_many(videos: Sequence[str | Path], model: str | Path | None = None,
                 config: str | Path | CrashcastConfig | None = None, out: str | Path = "crashcast-predictions", *,
                 backend: str = "auto", overrides: Sequence[str] = (), weights_dir: str | Path | None = None,
                 stride_s: float = 0.5, threshold: float = 0.5, annotate: bool = False, workers: int = 1,
                 executor: ExecutorKind = "local", address: str | None = None, progress: bool = True,
                 trust_checkpoints: Sequence[str | Path] = (), offline: bool | None = None,
                 alert_policy: str | None = None) -> Iterator[VideoOutcome]:
    """`crashcast predict`: the risk timeline of each video (files or folders of videos) written to
    out/<name>/ (timeline.csv, timeline.json, risk.png, with `annotate` annotated.mp4), one
    outcome per video in order. `name` (the outcome's) is the video's stem when no other video of the
    call has it, else made unique, always one folder inside `out` (`crashcast.prediction.output_names`).
    A failed video is in its outcome and recorded in out/errors.jsonl under its name
    (this run's failures only); the others go on. With `workers` 1 the videos run here one after
    another and each outcome comes as its video finishes; otherwise in local processes or on Ray
    (`executor`, `address`). `config` (a preset, YAML or config) else `backend` chooses the
    perception (`config_for`; auto keeps a saved model's run config). A bad model, config or
    executor raises here, before any video is read. The result is an iterator: with one worker the
    videos are predicted as it is consumed (`list(api.predict_many(...))` runs them all).
    `trust_checkpoints`: checkpoint files you trust to be unpickled in full, while the iterator runs
    (`crashcast.runtime.checkpoints`). `offline`: `--backend auto` downloads nothing (None:
    CRASHCAST_OFFLINE / HF_HUB_OFFLINE decide; `config_for`). `alert_policy`: a policy name replacing
    the config's `alert.policy` (its other `alert` settings kept)."""
    from crashcast.prediction import check_settings

    check_settings(stride_s, threshold, 3)  # before anything is read or written
    from crashcast.config import CrashcastConfig
    from crashcast.prediction import alert_policy_for, resolve_model, runs_in_process
    from crashcast.prediction import predict_many as run_many
    from crashcast.runtime.checkpoints import checked_trust
    from crashcast.runtime.executors import get_executor

    cfg = config if isinstance(config, CrashcastConfig) and not overrides and weights_dir is None else \
        config_for(backend, config, overrides, weights_dir, run=model_run(model), offline=offline)
    if alert_policy is not None:
        from crashcast.prediction import with_alert_policy

        cfg = with_alert_policy(cfg, alert_policy)
    alert_policy_for(cfg, threshold)  # a bad alert setting fails here, before any video is read
    paths = videos_in(videos)
    if not paths:
        raise UsageError("no video files given or found in the folders", "VIDEOS")
    get_executor(executor, workers, address)  # a bad choice fails before any model is loaded
    risk_model = resolve_model(model, cfg)  # a bad model fails here, before any video is read
    check_model_features(model, cfg, paths)
    out = writable_dir(out)
    (out / "errors.jsonl").unlink(missing_ok=True)  # this run's failures only
    # in this process the model resolved above is used; workers each load it from `model`
    use = risk_model if runs_in_process(executor, workers, len(paths)) else model
    checked_trust(trust_checkpoints)  # a file named that is not there fails here, before any video is read
    outcomes = run_many(paths, use, cfg, out, stride_s, threshold, annotate, workers, executor, address, progress)
    return _recorded(outcomes, out, trust_checkpoints)


def _recorded(outcomes: Iterator[VideoOutcome], out: Path, trust: Sequence[str | Path] = ()) -> Iterator[VideoOutcome]:
    """The outcomes, each failure recorded in out/errors.jsonl as it comes (with `trust` trusted meanwhile)."""
    from crashcast.runtime.checkpoints import trusting
    from crashcast.runtime.layout import record_error

    with trusting(trust):
        for o in outcomes:
            if o.prediction is None or o.files is None:
                record_error(out, o.name or o.path.stem, "predict", o.error or "failed", o.error_type or "Error", file=str(o.path))
            yield o


def doctor(weights_dir: str | Path | None = None) -> DoctorReport:
    """What is installed here, which presets can run (packages, weights on disk) and the known install
    traps; offline, torch imported only when installed. `crashcast.doctor.render` prints it."""
    from crashcast.doctor import collect

    return collect(weights_dir)


def download_weights(preset: str | Path, weights_dir: str | Path | None = None) -> list[WeightStatus]:
    """Download the weights `preset` needs into `weights_dir` (default: runtime.weights_dir,
    $CRASHCAST_WEIGHTS_DIR, else the libraries' caches); offline, `WeightsUnavailable` says what
    to fetch and where to put it. Returns each file's status afterwards."""
    from crashcast.doctor import download_weights as fetch
    from crashcast.doctor import weights_plan

    return fetch(weights_plan(preset, Path(weights_dir) if weights_dir is not None else None))


__all__ = [
    "AnnotationFormat", "Calibration", "ExecutorKind", "MissingEvent", "PromptFiles", "TrainingData", "UsageError",
    "WindowList", "build_windows", "check_model_features", "config_for", "doctor", "download_weights", "evaluate",
    "extract", "horizons_override", "load", "load_clips", "model_run", "predict", "predict_many", "prompts", "report",
    "synth", "synthetic_clips", "train", "train_vlm", "videos_in", "vlm_training_data", "watch", "windows", "writable_dir",
]
