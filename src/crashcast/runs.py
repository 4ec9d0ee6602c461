"""Reading a run folder (what `crashcast extract` and `crashcast evaluate` wrote), in one place.

The window table (features.parquet), each window's folder, its window_meta.json, keyframe overlays
and prompt, the metrics and the predictions. Every name comes from `RunLayout`; every folder or file
that a run file names is resolved inside the run (`store.inside`), so a crafted run cannot make
crashcast read elsewhere.

One error handling: a file that is missing or cannot be read raises `RunFileError`, whose message
names the file, the problem and what to rerun. Readers that need every window (`WindowSet`, so
`evaluate`) let it propagate; readers that go on without a window (`crashcast prompts`, the
report's gallery) catch it and report it with `left_out`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from crashcast.errors import ConfigError, CrashcastError, InputLimitError, SchemaError
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import TABLE_FILE_LIMIT, check_bounded, inside, read_text_bounded

if TYPE_CHECKING:
    from crashcast.config import CrashcastConfig
    from crashcast.data.splits import Split
    from crashcast.features.window_meta import WindowMeta
    from crashcast.prompts.builder import Prompt

log = logging.getLogger(__name__)

#: Columns every evaluation reads (identifiers, labels, the timeline of each clip).
META_COLUMNS = ("window_id", "clip_id", "phase", "horizon_s", "end_s", "label", "soft_target")
#: Columns the report reads from a predictions file.
PREDICTION_COLUMNS = ("window_id", "clip_id", "phase", "horizon_s", "end_s", "label", "score")

EXTRACT_AGAIN = "rerun `crashcast extract` on the run"


class RunFileError(CrashcastError):
    """A file of a run folder is missing or cannot be read: `path`, `problem` and, in the message,
    what to rerun."""

    def __init__(self, path: object, problem: str, fix: str | None = None) -> None:
        super().__init__(f"{path}: {problem}" + (f"; {fix}" if fix else ""))
        self.path = path
        self.problem = problem


def left_out(stage: str, window_id: str, error: RunFileError) -> str:
    """Report a window a reader goes on without (a warning naming the window and the file) and
    return the line callers list: '<window id>: <error>'."""
    log.warning("%s: window %s left out: %s", stage, window_id, error)
    return f"{window_id}: {error}"


# --- the window table


def load_features(run_dir: Path, columns: Sequence[str] = META_COLUMNS) -> pd.DataFrame:
    """The run's feature table (one row per window), checked: a readable Parquet file, the given
    columns present, at least one row, 0/1 labels."""
    path = RunLayout(run_dir).features
    if not path.exists():
        raise RunFileError(path, "not found", "run `crashcast extract` first")
    import pyarrow as pa

    try:
        check_bounded(path, TABLE_FILE_LIMIT, "feature table")  # a FIFO or a link to /dev/zero is never opened
        df = pd.read_parquet(path)
    except InputLimitError as e:
        raise RunFileError(path, str(e).removeprefix(f"{path}: "), "rerun `crashcast extract` to rebuild it") from None
    except (OSError, ValueError, pa.ArrowException) as e:  # ArrowInvalid for random bytes or a cut file
        raise RunFileError(path, f"not a readable Parquet file ({type(e).__name__}: {e})",
                           "rerun `crashcast extract` to rebuild it") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise RunFileError(path, f"missing column(s) {', '.join(missing)}",
                           "it was not written by this version of `crashcast extract` (rerun it)")
    if df.empty:
        raise RunFileError(path, f"no windows (did every clip fail? see {RunLayout.ERRORS})")
    labels = pd.to_numeric(df["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise RunFileError(path, "column label must be 0 or 1 in every row")
    if "window_id" in df.columns and df["window_id"].duplicated().any():
        twice = df["window_id"][df["window_id"].duplicated()].unique().tolist()
        raise RunFileError(path, f"{len(twice)} window id(s) appear more than once ({', '.join(map(str, twice[:3]))}"
                                 f"{' ...' if len(twice) > 3 else ''})", "rerun `crashcast extract` to rebuild it")
    return df.reset_index(drop=True)


# --- one window: its folder, window_meta.json, keyframes, prompt


def window_dir(run_dir: Path, clip_id: str, phase: str, horizon_s: float) -> Path:
    """The window's folder (window_meta.json and keyframe overlays), resolved inside the run; a clip
    id that would lead outside it (`../..`) raises RunFileError."""
    try:
        return inside(run_dir, RunLayout.rel_window_dir(clip_id, phase, horizon_s))
    except ValueError as e:
        raise RunFileError(Path(run_dir), f"clip id {clip_id!r} names a window folder outside the run ({e})",
                           "the table or predictions naming it are not this run's") from None


def read_meta(folder: Path) -> WindowMeta:
    """The window_meta.json in this window folder, validated."""
    from crashcast.features.window_meta import read_window_meta

    path = Path(folder) / RunLayout.WINDOW_META
    try:
        return read_window_meta(path)
    except (SchemaError, ValueError, OSError) as e:
        raise RunFileError(path, f"cannot read this window's metadata ({e})", EXTRACT_AGAIN) from None


def keyframes(meta: WindowMeta, folder: Path | None) -> tuple[Path, ...]:
    """The window's keyframe overlays, as its prompt shows them (`prompts.builder.keyframe_paths`:
    all three inside the folder, or none)."""
    from crashcast.prompts.builder import keyframe_paths

    try:
        return keyframe_paths(meta, folder)
    except SchemaError as e:
        raise RunFileError(_where(meta, folder), f"cannot read this window's keyframes ({e})", EXTRACT_AGAIN) from None


def window_prompt(meta: WindowMeta, folder: Path | None, top_k: int = 3, rationale: bool = False,
                  template: str | Path | None = None) -> Prompt:
    """The window as a prompt (`prompts.builder.build_prompt`); `folder` None: text only."""
    from crashcast.prompts.builder import DEFAULT_TEMPLATE, build_prompt

    try:
        return build_prompt(meta, folder, top_k, template or DEFAULT_TEMPLATE, rationale=rationale)
    except ConfigError:
        raise  # the template, not the run
    except (ValueError, OSError) as e:
        raise RunFileError(_where(meta, folder), f"cannot build this window's prompt ({e})", EXTRACT_AGAIN) from None


def _where(meta: WindowMeta, folder: Path | None) -> object:
    return Path(folder) / RunLayout.WINDOW_META if folder is not None else f"window {meta.window_id}"


# --- what `crashcast evaluate` wrote


def read_split(run_dir: Path) -> dict[str, str] | None:
    """run/split.json's assignment (clip id -> 'train' | 'test'), None when the run has none."""
    path = RunLayout(run_dir).split
    if not path.exists():
        return None
    again = "rerun `crashcast reproduce`, or write it as {\"clips\": {\"<clip id>\": \"train\" | \"test\"}}"
    try:
        data = json.loads(read_text_bounded(path, what="split file"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFileError(path, f"not JSON ({type(e).__name__}: {e})", again) from None
    clips = data.get("clips") if isinstance(data, dict) else None
    if not isinstance(clips, dict) or not clips or any(v not in ("train", "test") for v in clips.values()):
        raise RunFileError(path, "malformed: `clips` must map clip ids to 'train' or 'test'", again)
    return {str(k): v for k, v in clips.items()}


def run_split(run_dir: Path, df: pd.DataFrame, cfg: CrashcastConfig) -> Split:
    """The train/val/test rows of the run's window table `evaluate`, `prompts` and `train vlm` all
    use: by video at random (`evaluation.split: random`, seeded), or the dataset's official split
    (`official`: run/split.json, a share of its training clips validating)."""
    from crashcast.data.splits import official_split, train_val_test

    ev = cfg.evaluation
    if ev.split == "random":
        return train_val_test(df, ev.test_fraction, ev.val_fraction, ev.seed)
    assignment = read_split(run_dir)
    if assignment is None:
        raise ConfigError(f"evaluation.split official: {RunLayout(run_dir).split} not found (`crashcast reproduce` "
                          "writes it for datasets with an official split); or use evaluation.split=random")
    missing = sorted(set(df.clip_id) - set(assignment))
    if missing:
        log.warning("%s: %d clip(s) of the run are in no part of the official split, left out: %s%s",
                    RunLayout(run_dir).split, len(missing), ", ".join(missing[:5]), " ..." if len(missing) > 5 else "")
    return official_split(df, assignment, ev.val_fraction / max(1e-9, 1 - ev.test_fraction), ev.seed)


def read_metrics(run_dir: Path) -> dict:
    """metrics.json, with its `models` section."""
    path = RunLayout(run_dir).metrics_json
    again = f"rerun `crashcast evaluate {run_dir}`"
    if not path.exists():
        raise RunFileError(path, "not found", f"run `crashcast evaluate {run_dir}` first")
    try:
        res = json.loads(read_text_bounded(path, what="metrics file"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RunFileError(path, f"not a metrics file written by `crashcast evaluate` ({type(e).__name__}: {e})",
                           again) from None
    if not isinstance(res, dict) or "models" not in res:
        raise RunFileError(path, "malformed: no `models` field at the top level (not a metrics file written by "
                                 "`crashcast evaluate`)", again)
    models = res["models"]
    if not isinstance(models, dict) or not models:
        got = f"a {type(models).__name__}" if models or not isinstance(models, dict) else "empty"
        raise RunFileError(path, f"malformed: its `models` field is {got}, not a mapping of model name -> results", again)
    bad = [str(name) for name, r in models.items() if not isinstance(r, dict)]
    if bad:
        raise RunFileError(path, f"malformed: `models` entries {', '.join(bad[:3])} are not mappings of results", again)
    return res


def read_predictions(run_dir: Path, models: Iterable[str],
                     columns: Sequence[str] = PREDICTION_COLUMNS) -> dict[str, pd.DataFrame]:
    """predictions/<model>.csv of each model that has one (in the given order), each checked for
    `columns`; at least one must exist."""
    layout = RunLayout(run_dir)
    out = {}
    for name in models:
        try:
            path = inside(run_dir, RunLayout.rel_prediction(name))  # model names come from metrics.json
        except ValueError as e:
            raise RunFileError(layout.metrics_json, f"model name {name!r} is not a file name ({e})") from None
        if not path.exists():
            continue
        try:
            check_bounded(path, TABLE_FILE_LIMIT, "predictions file")
            df = pd.read_csv(path, dtype={"clip_id": str, "window_id": str})
            missing = sorted(set(columns) - set(df.columns))
            if missing:
                raise ValueError(f"missing column(s) {missing}")
        except InputLimitError as e:
            raise RunFileError(path, str(e).removeprefix(f"{path}: ")) from None
        except (OSError, ValueError, KeyError, UnicodeDecodeError, pd.errors.ParserError) as e:
            raise RunFileError(path, f"not a predictions file written by `crashcast evaluate` ({e})",
                               f"rerun `crashcast evaluate {run_dir}`") from None
        out[name] = df
    if not out:
        raise RunFileError(layout.predictions, "no prediction files")
    return out
