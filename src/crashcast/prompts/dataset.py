"""A run's windows as prompts, split by video exactly as `crashcast evaluate` splits them (so a VLM
fine-tuned on `train` is tested on the clips the other models are tested on), and exported for
LLaMA-Factory, ms-swift and TRL (`prompts.exports`) into the run's `prompts/` folder."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crashcast import runs
from crashcast.config import CrashcastConfig
from crashcast.prompts.builder import Prompt
from crashcast.prompts.exports import SplitExport, export_prompts
from crashcast.runtime.layout import RunLayout

if TYPE_CHECKING:
    from crashcast.features.window_meta import WindowMeta

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def split_prompts(run_dir: Path, cfg: CrashcastConfig, splits: tuple[str, ...] = SPLITS,
                  rationale: bool | None = None) -> tuple[dict[str, list[Prompt]], list[str]]:
    """Each requested split's prompts (windows in the feature table's order), and the windows left
    out because their window_meta or images could not be read (each named, with the problem)."""
    unknown = [s for s in splits if s not in SPLITS]
    if unknown:
        raise ValueError(f"unknown split(s) {', '.join(unknown)}; choose from {', '.join(SPLITS)}")
    run_dir = Path(run_dir)
    df = runs.load_features(run_dir)
    part = runs.run_split(run_dir, df, cfg)  # the split `evaluate` uses
    rows = {"train": part.train, "val": part.val, "test": part.test}
    use_rationale = cfg.vlm.rationale if rationale is None else rationale
    out: dict[str, list[Prompt]] = {}
    skipped: list[str] = []
    for split in splits:
        prompts = []
        for r in df.iloc[rows[split]].itertuples(index=False):
            try:
                folder = runs.window_dir(run_dir, r.clip_id, r.phase, r.horizon_s)
                meta = runs.read_meta(folder)
                _check_row(meta, r, folder)
                prompts.append(runs.window_prompt(meta, folder, cfg.features.top_k, use_rationale,
                                                  cfg.vlm.prompt_template))
            except runs.RunFileError as e:
                skipped.append(runs.left_out("prompts", r.window_id, e))
        out[split] = prompts
    return out, skipped


def _check_row(meta: WindowMeta, row: Any, folder: Path) -> None:
    """RunFileError unless the window_meta.json in `folder` is the one of the table's `row` (a window
    folder copied over another would give two prompts one id)."""
    if (meta.window_id, meta.clip_id, meta.phase) != (row.window_id, row.clip_id, row.phase):
        raise runs.RunFileError(folder / RunLayout.WINDOW_META,
                                f"holds window {meta.window_id} (clip {meta.clip_id}), but features.parquet's row "
                                f"for this folder is window {row.window_id} (a window folder copied or moved?)",
                                runs.EXTRACT_AGAIN)


def write_prompts(run_dir: Path, cfg: CrashcastConfig, splits: tuple[str, ...] = SPLITS,
                  rationale: bool | None = None) -> tuple[dict[str, SplitExport], dict[str, list[Prompt]], list[str]]:
    """Build and export the prompts into `run/prompts/`; (files per split, prompts per split, skipped)."""
    prompts, skipped = split_prompts(run_dir, cfg, splits, rationale)
    return export_prompts(prompts, RunLayout(run_dir).prompts), prompts, skipped
