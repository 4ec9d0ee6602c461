"""The reason a tabular or physics model gives for a window's score, in words, from its feature-table
row: the object (or scene cue) that drives the score most, e.g. 'vehicle B, 14 m ahead, closing at
6.0 m/s, TTC 2.3 s'. The vision-language models write their own (the config's `vlm.rationale`
option teaches a fine-tuned one to)."""

from __future__ import annotations

import math

import pandas as pd

from crashcast.features.table import TTC_CAP_S

LETTERS = "ABCDEFGHIJ"


def describe_object(row: pd.Series, k: int) -> str | None:
    """'vehicle B, 14 m ahead, closing at 6.0 m/s, TTC 2.3 s' for the k-th closest object (1-based)."""
    pre = f"obj{k}_"
    if not row.get(pre + "present", 0):
        return None
    cls = "person" if row.get(pre + "is_person", 0) else ("vehicle" if row.get(pre + "is_vehicle", 0) else "object")
    parts = [f"{cls} {LETTERS[k - 1]}"]
    depth = row.get(pre + "depth_end_m", row.get(pre + "depth_m"))  # where it is now, at the window's end
    if depth is None or not math.isfinite(depth):
        depth = row.get(pre + "depth_m")
    if depth is not None and math.isfinite(depth):
        parts.append(f"{depth:.0f} m ahead" if row.get(pre + "in_path", 0) else f"{depth:.0f} m away, beside the path")
    closing = row.get(pre + "closing_mps")
    if closing is not None and math.isfinite(closing) and closing > 0.3:
        parts.append(f"closing at {closing:.1f} m/s")
    ttc = row.get(pre + "ttc_s")
    if ttc is not None and math.isfinite(ttc) and ttc < TTC_CAP_S:
        parts.append(f"TTC {ttc:.1f} s")
    return ", ".join(parts)


def rationale(row: pd.Series, contrib: pd.Series | None = None, top_k: int = 3) -> str:
    """A short reason: the object (or scene cue) that drives the score most. With `contrib` (a
    booster's per-feature contributions to this row's score) the largest positive one decides;
    otherwise the object with the smallest TTC, the looming road ahead, or the closest object."""
    if contrib is not None:
        ranked = contrib.sort_values(ascending=False)
        for feat, value in ranked.items():
            if value <= 0:
                break
            if feat.startswith("obj") and "_" in feat:
                d = describe_object(row, int(feat[3 : feat.index("_")]))
                if d:
                    return d
            if feat in ("looming_per_s", "scene_ttc_s") and row.get("scene_ttc_s", TTC_CAP_S) < TTC_CAP_S:
                return f"the road ahead looms: contact in {row['scene_ttc_s']:.1f} s at this rate"
            if feat.startswith("path_") or feat == "min_ttc_s":
                break
    # most threatening object by TTC, else the closest
    best, best_ttc = None, math.inf
    for k in range(1, top_k + 1):
        ttc = row.get(f"obj{k}_ttc_s", math.nan)
        if row.get(f"obj{k}_present", 0) and math.isfinite(ttc) and ttc < best_ttc:
            best, best_ttc = k, ttc
    if best is not None and best_ttc < TTC_CAP_S:
        return describe_object(row, best) or "an object closes in"
    if row.get("scene_ttc_s", TTC_CAP_S) < TTC_CAP_S:
        return f"the road ahead looms: contact in {row['scene_ttc_s']:.1f} s at this rate"
    d = describe_object(row, 1) if row.get("obj1_present", 0) else None
    return f"nothing closing in ({d})" if d else "nothing closing in"


def rationales(table: pd.DataFrame, contributions: pd.DataFrame | None = None) -> list[str]:
    """`rationale` of every row of a feature table (with the matching row of `contributions`)."""
    return [rationale(row, None if contributions is None else contributions.iloc[i])
            for i, (_, row) in enumerate(table.iterrows())]
