"""What a risk model sees: a set of windows, each a row of the feature table plus (read when first
asked for) its window_meta.json and keyframe overlays, which make its prompt.

Tabular models read `table`; the vision-language models read `prompts()`; everyone reads `labels`,
`soft_targets` and `ids`. A `WindowSet` comes from a run folder (`from_run`: the feature table, with
each window's folder found through the run layout), from in-memory window metadata (`from_metas`:
`crashcast predict`, which writes its keyframe overlays to a scratch folder), or from a bare table
(`from_frame`: tabular models only; asking it for prompts is an error that says so).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from crashcast.errors import CrashcastError, SchemaError
from crashcast.runtime.layout import RunLayout
from crashcast.runtime.store import inside

if TYPE_CHECKING:
    from crashcast.features.window_meta import WindowMeta
    from crashcast.prompts.builder import Prompt

log = logging.getLogger(__name__)

#: Columns every evaluation reads (identifiers, labels, the timeline of each clip).
META_COLUMNS = ("window_id", "clip_id", "phase", "horizon_s", "end_s", "label", "soft_target")


def load_features(run_dir: Path, columns: Sequence[str] = META_COLUMNS) -> pd.DataFrame:
    """The run's feature table, checked: a readable Parquet file, the given columns present, 0/1 labels."""
    path = RunLayout(run_dir).features
    if not path.exists():
        raise CrashcastError(f"{path}: not found; run `crashcast extract` first")
    import pyarrow as pa

    try:
        df = pd.read_parquet(path)
    except (OSError, ValueError, pa.ArrowException) as e:  # ArrowInvalid for random bytes or a cut file
        raise CrashcastError(f"{path}: not a readable Parquet file ({type(e).__name__}: {e}); "
                             "rerun `crashcast extract` to rebuild it") from None
    missing = [c for c in columns if c not in df.columns]
    if missing:
        raise CrashcastError(f"{path}: missing column(s) {', '.join(missing)}; it was not written by this version of "
                             "`crashcast extract` (rerun it)")
    if df.empty:
        raise CrashcastError(f"{path}: no windows (did every clip fail? see errors.jsonl)")
    labels = pd.to_numeric(df["label"], errors="coerce")
    if not labels.isin([0, 1]).all():
        raise CrashcastError(f"{path}: column label must be 0 or 1 in every row")
    return df.reset_index(drop=True)


@dataclass
class WindowSet:
    """Windows in table order. `root`: the run folder their window folders are in (None: no folders);
    `metas` / `dirs`: metadata and window folders given in memory instead (one per row)."""

    table: pd.DataFrame
    root: Path | None = None
    metas: list[WindowMeta] | None = None
    dirs: list[Path | None] | None = None
    _cache: dict[int, WindowMeta] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.table = self.table.reset_index(drop=True)
        for name, items in (("metas", self.metas), ("dirs", self.dirs)):
            if items is not None and len(items) != len(self.table):
                raise ValueError(f"WindowSet: {len(items)} {name} for {len(self.table)} rows")

    # --- construction

    @classmethod
    def from_run(cls, run_dir: Path, columns: Sequence[str] = META_COLUMNS) -> WindowSet:
        return cls(load_features(run_dir, columns), root=Path(run_dir))

    @classmethod
    def from_frame(cls, table: pd.DataFrame) -> WindowSet:
        return cls(table)

    @classmethod
    def from_metas(cls, metas: Sequence[WindowMeta], dirs: Sequence[Path | None] | None = None, top_k: int = 3) -> WindowSet:
        """Windows held in memory: the table is built from the metadata (`features.table.feature_row`);
        `dirs` are the folders their keyframe overlays (meta.frame_paths) are in."""
        from crashcast.features.table import feature_row

        table = pd.DataFrame([feature_row(m, top_k) for m in metas])
        return cls(table, metas=list(metas), dirs=list(dirs) if dirs is not None else [None] * len(metas))

    def subset(self, rows: Sequence[int] | np.ndarray) -> WindowSet:
        """The windows at these row positions, in that order."""
        rows = [int(r) for r in rows]
        return WindowSet(
            self.table.iloc[rows],
            root=self.root,
            metas=[self.metas[r] for r in rows] if self.metas is not None else None,
            dirs=[self.dirs[r] for r in rows] if self.dirs is not None else None,
            _cache={i: self._cache[r] for i, r in enumerate(rows) if r in self._cache},
        )

    # --- what every model reads

    def __len__(self) -> int:
        return len(self.table)

    @property
    def ids(self) -> list[str]:
        return self.table["window_id"].astype(str).tolist()

    @property
    def labels(self) -> np.ndarray:
        return self.table["label"].to_numpy(int)

    @property
    def soft_targets(self) -> np.ndarray:
        return self.table["soft_target"].to_numpy(float)

    # --- what the vision-language models read

    def window_dir(self, i: int) -> Path | None:
        """The folder of window i's window_meta.json and keyframe overlays (None: there is none)."""
        if self.dirs is not None:
            return self.dirs[i]
        if self.root is None:
            return None
        r = self.table.iloc[i]
        return inside(self.root, RunLayout.rel_window_dir(r["clip_id"], r["phase"], r["horizon_s"]))

    def meta(self, i: int) -> WindowMeta:
        """Window i's metadata, read from its window_meta.json the first time (a missing or damaged
        file raises CrashcastError naming it)."""
        if self.metas is not None:
            return self.metas[i]
        if i not in self._cache:
            folder = self.window_dir(i)
            if folder is None:
                raise CrashcastError(f"window {self.table['window_id'].iloc[i]}: only its feature-table row is here (no "
                                     "window_meta.json); models that read prompts need the run folder")
            from crashcast.features.window_meta import read_window_meta

            path = folder / "window_meta.json"
            try:
                self._cache[i] = read_window_meta(path)
            except (SchemaError, ValueError, OSError) as e:
                raise CrashcastError(f"{path}: cannot read this window's metadata ({e}); rerun `crashcast extract` "
                                     "on the run") from None
        return self._cache[i]

    def prompt(self, i: int, top_k: int = 3, rationale: bool = False, template: str | Path | None = None) -> Prompt:
        """Window i as a prompt (`crashcast.prompts.builder.build_prompt`): three keyframe overlays when the
        window has them, the table of its `top_k` closest objects, Task and Note."""
        from crashcast.prompts.builder import DEFAULT_TEMPLATE, build_prompt

        meta = self.meta(i)
        try:
            return build_prompt(meta, self.window_dir(i), top_k, template or DEFAULT_TEMPLATE, rationale=rationale)
        except (ValueError, OSError) as e:
            where = self.window_dir(i) or meta.window_id
            raise CrashcastError(f"{where}: cannot build this window's prompt ({e}); rerun `crashcast extract`") from None

    def prompts(self, top_k: int = 3, rationale: bool = False, template: str | Path | None = None) -> list[Prompt]:
        return [self.prompt(i, top_k, rationale, template) for i in range(len(self))]


def as_windows(windows: WindowSet | pd.DataFrame) -> WindowSet:
    """A WindowSet as it is; a bare feature table as a WindowSet without folders."""
    return windows if isinstance(windows, WindowSet) else WindowSet.from_frame(windows)
