"""What a risk model sees: a set of windows, each a row of the feature table plus (read when first
asked for) its window_meta.json and keyframe overlays, which make its prompt.

Tabular models read `table`; the vision-language models read `prompts()`; everyone reads `labels`,
`soft_targets` and `ids`. A `WindowSet` comes from a run folder (`from_run`: the feature table, with
each window read through `crashcast.runs`), from in-memory window metadata (`from_metas`:
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

from crashcast import runs
from crashcast.errors import CrashcastError
from crashcast.runs import META_COLUMNS, load_features
from crashcast.runtime.layout import RunLayout

if TYPE_CHECKING:
    from crashcast.features.window_meta import WindowMeta
    from crashcast.prompts.builder import Prompt

log = logging.getLogger(__name__)

__all__ = ["META_COLUMNS", "WindowSet", "as_windows", "load_features"]


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
        return runs.window_dir(self.root, r["clip_id"], r["phase"], r["horizon_s"])

    def meta(self, i: int) -> WindowMeta:
        """Window i's metadata, read from its window_meta.json the first time (a missing or damaged
        file raises `runs.RunFileError` naming it)."""
        if self.metas is not None:
            return self.metas[i]
        if i not in self._cache:
            folder = self.window_dir(i)
            if folder is None:
                raise CrashcastError(f"window {self.table['window_id'].iloc[i]}: only its feature-table row is here (no "
                                     f"{RunLayout.WINDOW_META}); models that read prompts need the run folder")
            self._cache[i] = runs.read_meta(folder)
        return self._cache[i]

    def prompt(self, i: int, top_k: int = 3, rationale: bool = False, template: str | Path | None = None) -> Prompt:
        """Window i as a prompt (`crashcast.prompts.builder.build_prompt`): three keyframe overlays when the
        window has them, the table of its `top_k` closest objects, Task and Note."""
        return runs.window_prompt(self.meta(i), self.window_dir(i), top_k, rationale, template)

    def prompts(self, top_k: int = 3, rationale: bool = False, template: str | Path | None = None) -> list[Prompt]:
        return [self.prompt(i, top_k, rationale, template) for i in range(len(self))]


def as_windows(windows: WindowSet | pd.DataFrame) -> WindowSet:
    """A WindowSet as it is; a bare feature table as a WindowSet without folders."""
    return windows if isinstance(windows, WindowSet) else WindowSet.from_frame(windows)
