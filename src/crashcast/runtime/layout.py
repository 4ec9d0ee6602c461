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
      dense/<model>/              `crashcast dense`: timelines.csv, videos/<name>/ (predict's files per test video)
      dense_metrics.json, dense.md   `crashcast dense`: the dense per-video figures of each model
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

    CONFIG = "config.yaml"
    CLIPS = "clips"
    WINDOW_META = "window_meta.json"  # in each window folder, beside its keyframe overlays
    FEATURES = "features.parquet"
    ERRORS = "errors.jsonl"
    METRICS_JSON = "metrics.json"
    METRICS_MD = "metrics.md"
    MODELS = "models"
    PREDICTIONS = "predictions"
    PROMPTS = "prompts"
    REPORT = "report"
    REPORT_PAGE = "index.html"
    DENSE = "dense"
    DENSE_JSON = "dense_metrics.json"
    DENSE_MD = "dense.md"
    SPLIT = "split.json"  # a dataset's official split of the run's clips (`evaluation.split: official`)
    REPRODUCE = "reproduce"  # `crashcast reproduce`: table_iii.md, commands.txt, import.json

    #: what crashcast writes in a run folder; `--new-run` removes these (and nothing else)
    OUTPUTS = (CLIPS, FEATURES, ERRORS, METRICS_JSON, METRICS_MD, PREDICTIONS, MODELS, PROMPTS, REPORT, DENSE, DENSE_JSON,
               DENSE_MD, SPLIT, REPRODUCE)

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root))

    @property
    def config(self) -> Path:
        return self.root / self.CONFIG

    @property
    def clips(self) -> Path:
        return self.root / self.CLIPS

    def clip_dir(self, clip_id: str) -> Path:
        return self.clips / clip_id

    @classmethod
    def rel_window_dir(cls, clip_id: str, phase: str, horizon_s: float) -> Path:
        return Path(cls.CLIPS) / str(clip_id) / window_folder(phase, horizon_s)

    def window_dir(self, clip_id: str, phase: str, horizon_s: float) -> Path:
        return self.root / self.rel_window_dir(clip_id, phase, horizon_s)

    @property
    def features(self) -> Path:
        return self.root / self.FEATURES

    @property
    def errors(self) -> Path:
        return self.root / self.ERRORS

    @property
    def metrics_json(self) -> Path:
        return self.root / self.METRICS_JSON

    @property
    def metrics_md(self) -> Path:
        return self.root / self.METRICS_MD

    @property
    def models(self) -> Path:
        return self.root / self.MODELS

    def model_dir(self, name: str) -> Path:
        return self.models / name

    @property
    def predictions(self) -> Path:
        return self.root / self.PREDICTIONS

    @classmethod
    def rel_prediction(cls, model: str) -> Path:
        return Path(cls.PREDICTIONS) / f"{model}.csv"

    def prediction(self, model: str) -> Path:
        return self.root / self.rel_prediction(model)

    @property
    def prompts(self) -> Path:
        return self.root / self.PROMPTS

    @property
    def report(self) -> Path:
        return self.root / self.REPORT

    @property
    def report_page(self) -> Path:
        return self.report / self.REPORT_PAGE

    def dense_dir(self, model: str) -> Path:
        return self.root / self.DENSE / model

    @property
    def split(self) -> Path:
        return self.root / self.SPLIT

    @property
    def reproduce(self) -> Path:
        return self.root / self.REPRODUCE

    @property
    def dense_json(self) -> Path:
        return self.root / self.DENSE_JSON

    @property
    def dense_md(self) -> Path:
        return self.root / self.DENSE_MD


def record_error(run_dir: Path, clip_id: str | None, stage: str, error: str, error_type: str | None = None,
                 **where: object) -> None:
    """Append one failure to run_dir/errors.jsonl; `where` adds fields such as the file and row of a
    bad annotation (whose clip id may be unknown: null)."""
    entry = {"clip_id": clip_id, "stage": stage, "error_type": error_type, "error": error, **where,
             "time": time.strftime("%Y-%m-%dT%H:%M:%S")}
    with RunLayout(run_dir).errors.open("a", encoding="utf-8") as f:
        f.write(json.dumps(entry, default=str) + "\n")
