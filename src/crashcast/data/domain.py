"""Which domain a clip comes from, so a model can say what it was trained on.

A clip is `synthetic` when `crashcast synth` rendered it (its folder's annotations.csv is synth's own
and names it, with its `truth/<id>.json` beside it: `synthetic.synthetic_ids`), else `real`; a video
`predict` gets is real unless it is one of a synthetic folder's clips. Extraction records the
domain of each clip of a run in `run/clip_domains.json` (the run keeps no video paths), and a model
saved from the run counts the domains of the clips it was trained on (`training_domain`: its
model card's `training_domain`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Literal

from crashcast.data.synthetic import synthetic_ids
from crashcast.runtime.store import atomic_write_text, read_text_bounded
from crashcast.types import Clip

log = logging.getLogger(__name__)

Domain = Literal["synthetic", "real"]

#: the run's record of each clip's domain: {clip id: "synthetic" | "real"}
DOMAINS_FILE = "clip_domains.json"


class _SynthFolders:
    """`synthetic_ids` of each folder, read once."""

    def __init__(self) -> None:
        self.ids: dict[Path, set[str]] = {}

    def __call__(self, folder: Path) -> set[str]:
        if folder not in self.ids:
            self.ids[folder] = set(synthetic_ids(folder) or [])
        return self.ids[folder]


def video_domain(video: str | Path, clip_id: str | None = None, _folders: _SynthFolders | None = None) -> Domain:
    """`synthetic` when `video` is one of a synthetic folder's clips (`clip_id`, else its file name
    without the extension, among the ids synth wrote there, and the file named `<id>.mp4`), else `real`."""
    video = Path(video)
    cid = clip_id or video.stem
    folders = _folders or _SynthFolders()
    return "synthetic" if video.name == f"{cid}.mp4" and cid in folders(video.parent) else "real"


def clip_domains(clips: Iterable[Clip]) -> dict[str, Domain]:
    """Each clip's domain, by clip id."""
    folders = _SynthFolders()
    return {c.id: video_domain(c.video_path, c.id, folders) for c in clips}


def read_domains(run_dir: str | Path) -> dict[str, str]:
    """The run's recorded clip domains ({} when it has none, or the file is unreadable: logged)."""
    path = Path(run_dir) / DOMAINS_FILE
    if not path.exists():
        return {}
    try:
        data = json.loads(read_text_bounded(path, what="clip domains"))
    except (OSError, ValueError) as e:
        log.warning("%s: unreadable (%s); the clips' domains are taken as unknown", path, e)
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def record_domains(run_dir: str | Path, clips: Iterable[Clip]) -> dict[str, str]:
    """Add the clips' domains to the run's record (a clip extracted again is recorded anew); returns it."""
    domains = {**read_domains(run_dir), **clip_domains(clips)}
    atomic_write_text(Path(run_dir) / DOMAINS_FILE, json.dumps(domains, indent=1, sort_keys=True))
    return domains


def training_domain(run_dir: str | Path, clip_ids: Iterable[str]) -> dict:
    """What a model trained on `clip_ids` of the run was trained on, for its model card: the number
    of synthetic, real and unknown (not recorded: a run extracted before domains were recorded)
    clips, and `trained_on` (synthetic, real, synthetic+real or unknown)."""
    domains = read_domains(run_dir)
    counts = {"synthetic": 0, "real": 0, "unknown": 0}
    for cid in set(map(str, clip_ids)):
        d = domains.get(cid)
        counts[d if d in ("synthetic", "real") else "unknown"] += 1
    known = [d for d in ("synthetic", "real") if counts[d]]
    trained_on = "unknown" if counts["unknown"] or not known else "+".join(known)
    return {"trained_on": trained_on, "synthetic_clips": counts["synthetic"], "real_clips": counts["real"],
            "unknown_clips": counts["unknown"]}
