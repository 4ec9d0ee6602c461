"""The run folder's names, in one place: what `extract`, `evaluate`, `report`, `predict` and
`prompts` read and write there.

    run/
      config.yaml                 resolved config; first line "# config hash: <hash>"
      clips/<id>/<window>/        window_meta.json, kf0.png, kf1.png, kf2.png
      features.parquet            one row per window (derived from the window_meta files)
      errors.jsonl                one line per failure (clip, stage, error; or a bad annotation row)
      metrics.json, metrics.md    `crashcast evaluate`
      models/<name>/              saved risk models
      predictions/<model>.csv     scores per window
      prompts/                    prompt exports (JSONL)
      report/index.html           `crashcast report`
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path


def window_folder(phase: str, horizon_s: float) -> str:
    """clips/<id>/<this>/ holds a window's outputs: the phase, plus `_h<horizon>` when not 0."""
    return phase if float(horizon_s) == 0 else f"{phase}_h{float(horizon_s):g}"


@dataclass(frozen=True)
class RunLayout:
    """Paths inside one run folder (`root`). Relative forms (`rel_*`) are for `store.inside`, which
    resolves a name a run file gives and refuses anything outside the run."""

    root: Path

    #: what crashcast writes in a run folder; `--new-run` removes these (and nothing else)
    OUTPUTS = ("clips", "features.parquet", "errors.jsonl", "metrics.json", "metrics.md", "predictions", "models",
               "prompts", "report")

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    @property
    def clips(self) -> Path:
        return self.root / "clips"

    def clip_dir(self, clip_id: str) -> Path:
        return self.clips / clip_id

    @staticmethod
    def rel_window_dir(clip_id: str, phase: str, horizon_s: float) -> Path:
        return Path("clips") / str(clip_id) / window_folder(phase, horizon_s)

    def window_dir(self, clip_id: str, phase: str, horizon_s: float) -> Path:
        return self.root / self.rel_window_dir(clip_id, phase, horizon_s)

    @property
    def features(self) -> Path:
        return self.root / "features.parquet"

    @property
    def errors(self) -> Path:
        return self.root / "errors.jsonl"

    @property
    def metrics_json(self) -> Path:
        return self.root / "metrics.json"

    @property
    def metrics_md(self) -> Path:
        return self.root / "metrics.md"

    @property
    def models(self) -> Path:
        return self.root / "models"

    def model_dir(self, name: str) -> Path:
        return self.models / name

    @property
    def predictions(self) -> Path:
        return self.root / "predictions"

    @staticmethod
    def rel_prediction(model: str) -> Path:
        return Path("predictions") / f"{model}.csv"

    def prediction(self, model: str) -> Path:
        return self.root / self.rel_prediction(model)

    @property
    def prompts(self) -> Path:
        return self.root / "prompts"

    @property
    def report(self) -> Path:
        return self.root / "report"


def record_error(run_dir: Path, clip_id: str | None, stage: str, error: str, error_type: str | None = None,
                 **where: object) -> None:
    """Append one failure to run_dir/errors.jsonl; `where` adds fields such as the file and row of a
    bad annotation (whose clip id may be unknown: null)."""
    entry = {"clip_id": clip_id, "stage": stage, "error_type": error_type, "error": error, **where,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with RunLayout(run_dir).errors.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")
