"""Splits grouped by video: no clip's windows in two splits; stratified by label; fixed by a seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    val: np.ndarray
    test: np.ndarray


def _clip_table(df: pd.DataFrame) -> pd.DataFrame:
    return df.groupby("clip_id", sort=True)["label"].max().reset_index()


def _stratified_pick(clips: pd.DataFrame, fraction: float, rng: np.random.Generator) -> set[str]:
    picked: set[str] = set()
    for _, grp in clips.groupby("label"):
        ids = grp.clip_id.to_numpy().copy()
        rng.shuffle(ids)
        k = int(round(fraction * len(ids)))
        if fraction > 0 and len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)
        picked.update(ids[:k])
    return picked


def train_val_test(df: pd.DataFrame, test_fraction: float = 0.3, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Clips split into train/val/test (fractions of clips, per label), windows follow their clip."""
    rng = np.random.default_rng(seed)
    clips = _clip_table(df)
    test = _stratified_pick(clips, test_fraction, rng)
    rest = clips[~clips.clip_id.isin(test)]
    val = _stratified_pick(rest, val_fraction / max(1e-9, 1 - test_fraction), rng) if val_fraction > 0 else set()
    cid = df.clip_id.to_numpy()
    in_test = np.isin(cid, list(test))
    in_val = np.isin(cid, list(val))
    return Split(np.flatnonzero(~in_test & ~in_val), np.flatnonzero(in_val), np.flatnonzero(in_test))


def kfold(df: pd.DataFrame, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train rows, test rows) folds over clips, stratified by label."""
    from sklearn.model_selection import StratifiedGroupKFold

    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    return [(tr, te) for tr, te in cv.split(np.zeros(len(df)), df.label.to_numpy(), df.clip_id.to_numpy())]
