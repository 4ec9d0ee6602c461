"""Splits grouped by video: no clip's windows in two parts; stratified by label; fixed by a seed.

Two protocols: one train/val/test split (`train_val_test`), or K folds over clips (`cv_folds`) in
which every clip is in exactly one test fold and each fold's training clips are split again into
a fitting part and a validation part (for calibration), so nothing about a test clip is ever seen
before it is scored.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import pandas as pd

from crashcast.errors import CrashcastError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Split:
    train: np.ndarray  # row indices
    val: np.ndarray
    test: np.ndarray


def _clip_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per clip: its id and its label (positive if any of its windows is)."""
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


def _rows(df: pd.DataFrame, test: set[str], val: set[str]) -> Split:
    cid = df.clip_id.to_numpy()
    in_test = np.isin(cid, list(test))
    in_val = np.isin(cid, list(val))
    return Split(np.flatnonzero(~in_test & ~in_val), np.flatnonzero(in_val), np.flatnonzero(in_test))


def train_val_test(df: pd.DataFrame, test_fraction: float = 0.3, val_fraction: float = 0.2, seed: int = 0) -> Split:
    """Clips split into train/val/test (fractions of clips, per label), windows follow their clip."""
    rng = np.random.default_rng(seed)
    clips = _clip_table(df)
    test = _stratified_pick(clips, test_fraction, rng)
    rest = clips[~clips.clip_id.isin(test)]
    val = _stratified_pick(rest, val_fraction / max(1e-9, 1 - test_fraction), rng) if val_fraction > 0 else set()
    return _rows(df, test, val)


def official_split(df: pd.DataFrame, assignment: dict[str, str], val_share: float = 0.2 / 0.7, seed: int = 0) -> Split:
    """A dataset's own split (`assignment`: clip id -> 'train' | 'test', e.g. DAD's training and
    testing folders): its test clips are the test split; a stratified `val_share` of its training
    clips (seeded) validates; a clip the assignment does not name is in no part."""
    unknown = sorted({v for v in assignment.values()} - {"train", "test"})
    if unknown:
        raise CrashcastError(f"official split: parts {unknown} (expected train and test)")
    clips = _clip_table(df)
    named = clips[clips.clip_id.isin(list(assignment))]
    test = {c for c in named.clip_id if assignment[c] == "test"}
    train = named[~named.clip_id.isin(test)]
    val = _stratified_pick(train, val_share, np.random.default_rng(seed)) if val_share > 0 else set()
    cid = df.clip_id.to_numpy()
    in_test, in_val = np.isin(cid, list(test)), np.isin(cid, list(val))
    in_train = np.isin(cid, list(train.clip_id)) & ~in_val
    return Split(np.flatnonzero(in_train), np.flatnonzero(in_val), np.flatnonzero(in_test))


def clip_folds(df: pd.DataFrame, k: int = 5, seed: int = 0) -> list[set[str]]:
    """The clip ids of each of k test folds: every clip in exactly one fold, fold sizes within one
    clip of each other, each label's clips dealt round-robin (shuffled by `seed`) so every fold gets
    both classes when each class has at least k clips."""
    clips = _clip_table(df)
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 2:
        raise CrashcastError(f"cross-validation needs at least 2 folds (got {k!r})")
    if k > len(clips):
        raise CrashcastError(f"cross-validation with {k} folds needs at least {k} clips; the table has {len(clips)}")
    rng = np.random.default_rng(seed)
    folds: list[set[str]] = [set() for _ in range(k)]
    start = 0
    for label, grp in clips.groupby("label"):
        ids = grp.clip_id.to_numpy().copy()
        rng.shuffle(ids)
        if len(ids) < k:
            log.warning("only %d clips with label %s for %d folds: %d fold(s) have none of them", len(ids), label, k, k - len(ids))
        for i, cid in enumerate(ids):
            folds[(start + i) % k].add(cid)
        start = (start + len(ids)) % k  # the next class starts where this one stopped: sizes stay balanced
    return folds


def cv_folds(df: pd.DataFrame, k: int = 5, val_fraction: float = 0.2, seed: int = 0) -> list[Split]:
    """k grouped, stratified folds as row-index Splits: `test` is the fold's clips, `val` a
    stratified `val_fraction` of the remaining clips (for calibration), `train` the rest."""
    rng = np.random.default_rng(seed + 1)  # a different stream than the fold assignment
    clips = _clip_table(df)
    splits = []
    for test in clip_folds(df, k, seed):
        rest = clips[~clips.clip_id.isin(test)]
        val = _stratified_pick(rest, val_fraction, rng) if val_fraction > 0 else set()
        splits.append(_rows(df, test, val))
    return splits


def kfold(df: pd.DataFrame, k: int = 5, seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """k (train rows, test rows) folds over clips, stratified by label (`clip_folds`)."""
    return [(np.r_[s.train, s.val].astype(int), s.test) for s in cv_folds(df, k, 0.0, seed)]
