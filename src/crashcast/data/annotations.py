"""Annotation readers: Nexar train.csv, Nexar metadata.csv, generic CSV, CCD, DAD, expert consensus.

Every reader returns a list of `Clip` and raises `AnnotationError` naming the file and row for
missing columns, duplicate ids, impossible times and unsafe ids.
"""

from __future__ import annotations

import csv
import logging
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Literal

from crashcast.errors import AnnotationError
from crashcast.types import Clip

log = logging.getLogger(__name__)

NEXAR_COLUMNS = ("id", "time_of_event", "time_of_alert", "target")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")


def normalise_id(raw: str) -> str:
    """Nexar ids are zero-padded to 5 digits when numeric (`822` -> `00822`)."""
    raw = raw.strip()
    return raw.zfill(5) if raw.isdigit() else raw


def check_safe_id(clip_id: str, path: object, row: int | None) -> None:
    """Ids become file names: refuse path separators, `..`, absolute paths and empty ids."""
    if not clip_id:
        raise AnnotationError(path, "empty id", row)
    if "/" in clip_id or "\\" in clip_id or ".." in clip_id or not _SAFE_ID.match(clip_id):
        raise AnnotationError(
            path, f"id {clip_id!r} is not a safe file name (letters, digits, '_', '-', '.'; no path parts)", row
        )


def _register(clip_id: str, seen: dict[str, int], path: object, row: int) -> None:
    """Check a row's id is a safe file name and not seen before; remember where it was."""
    check_safe_id(clip_id, path, row)
    if clip_id in seen:
        raise AnnotationError(path, f"duplicate id {clip_id!r} (first at row {seen[clip_id]})", row)
    seen[clip_id] = row


def _parse_time(value: str | None, column: str, path: object, row: int) -> float | None:
    if value is None:
        return None
    value = str(value).strip()
    if value == "" or value.lower() in {"nan", "none", "null", "na"}:
        if value.lower() == "nan":
            raise AnnotationError(path, f"{column} is NaN; leave the cell empty when there is no time", row)
        return None
    try:
        t = float(value)
    except ValueError:
        raise AnnotationError(path, f"{column} {value!r} is not a number of seconds", row) from None
    if math.isnan(t) or math.isinf(t):
        raise AnnotationError(path, f"{column} is {value}; it must be a finite number of seconds", row)
    if t < 0:
        raise AnnotationError(path, f"{column} is negative ({t} s)", row)
    return t


def _parse_target(value: str | None, path: object, row: int) -> int:
    v = (value or "").strip()
    if v in {"1", "1.0", "true", "True", "positive"}:
        return 1
    if v in {"0", "0.0", "false", "False", "negative"}:
        return 0
    raise AnnotationError(path, f"target {v!r} must be 0 or 1", row)


MissingEvent = Literal["error", "end"]


def _validate_clip(clip: Clip, path: object, row: int, missing_event: MissingEvent = "error") -> Clip:
    """Check times; a positive without an event time is an error, or with `missing_event='end'`
    is kept with its windows anchored at the end of the video (recorded as `anchor='video_end'`)."""
    if clip.target == 1 and clip.time_of_event_s is None:
        if missing_event == "error":
            raise AnnotationError(
                path,
                f"clip {clip.id!r} is positive but has no time_of_event "
                "(give the time, or use --missing-event end to anchor its windows at the video's end)",
                row,
            )
        clip = replace(clip, extra={**clip.extra, "anchor": "video_end"})
    if clip.time_of_alert_s is not None and clip.time_of_event_s is not None:
        if clip.time_of_alert_s > clip.time_of_event_s:
            raise AnnotationError(
                path,
                f"clip {clip.id!r}: time_of_alert ({clip.time_of_alert_s} s) is after time_of_event ({clip.time_of_event_s} s)",
                row,
            )
    return clip


class _RowErrors:
    """Collects per-row errors when the caller passes a list (skip bad rows), else raises."""

    def __init__(self, sink: list[AnnotationError] | None) -> None:
        self.sink = sink

    def __call__(self, err: AnnotationError) -> None:
        if self.sink is None:
            raise err
        log.info("skipping: %s", err)
        self.sink.append(err)


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(path)
    if not path.exists():
        raise AnnotationError(path, "file not found")
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:  # utf-8-sig strips a BOM
            reader = csv.DictReader(f)
            header = [h.strip() for h in (reader.fieldnames or [])]
            rows = [{(k or "").strip(): (v if v is not None else "") for k, v in r.items()} for r in reader]
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not a UTF-8 text CSV ({e.reason})") from None
    except csv.Error as e:
        raise AnnotationError(path, f"malformed CSV: {e}") from None
    if not header:
        raise AnnotationError(path, "empty file: expected a header row")
    return header, rows


def _require(header: Iterable[str], columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise AnnotationError(path, f"missing column(s) {missing}; found {list(header)}")


def read_csv(
    path: str | Path,
    videos_dir: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    missing_event: MissingEvent = "error",
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """Read a Nexar-layout CSV (`id,time_of_event,time_of_alert,target`) or any CSV with a column map.

    `columns` maps crashcast names (id, time_of_event, time_of_alert, target) to the file's column
    names. Videos are `<videos_dir>/<id>.<ext>` (default: the CSV's folder). A bad row raises
    `AnnotationError`; pass a list as `errors` to record bad rows there and skip them instead.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    colmap = {c: c for c in NEXAR_COLUMNS}
    colmap.update(columns or {})
    _require(header, [colmap[c] for c in NEXAR_COLUMNS], path)
    videos = Path(videos_dir) if videos_dir is not None else path.parent
    clips: list[Clip] = []
    seen: dict[str, int] = {}
    report = _RowErrors(errors)
    for i, r in enumerate(rows, start=2):  # row numbers as in a spreadsheet (header is row 1)
        try:
            clip_id = normalise_id(r.get(colmap["id"], ""))
            _register(clip_id, seen, path, i)
            target = _parse_target(r.get(colmap["target"]), path, i)
            event = _parse_time(r.get(colmap["time_of_event"]), "time_of_event", path, i)
            alert = _parse_time(r.get(colmap["time_of_alert"]), "time_of_alert", path, i)
            extra = {k: v for k, v in r.items() if k not in colmap.values()}
            clip = Clip(clip_id, _video_path(videos, clip_id), target, event if target else None, alert if target else None, extra)
            clips.append(_validate_clip(clip, path, i, missing_event))
        except AnnotationError as err:
            report(err)
    return clips


def _video_path(videos: Path, clip_id: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        p = videos / f"{clip_id}{suffix}"
        if p.exists():
            return p
    return videos / f"{clip_id}.mp4"


def read_nexar_metadata(path: str | Path, videos_dir: str | Path | None = None, target: int | None = None) -> list[Clip]:
    """Read the Nexar release's `metadata.csv`
    (`file_name,time_of_event,time_of_alert,light_conditions,weather,scene,time_to_accident`).

    The label comes from the folder (`positive`/`negative` in the path) unless `target` is given.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    _require(header, ["file_name", "time_of_event", "time_of_alert"], path)
    if target is None:
        parts = {p.lower() for p in path.resolve().parts}
        if "positive" in parts:
            target = 1
        elif "negative" in parts:
            target = 0
        else:
            raise AnnotationError(path, "cannot tell the label: pass target=0/1 or keep the file in a positive/ or negative/ folder")
    videos = Path(videos_dir) if videos_dir is not None else path.parent
    clips, seen = [], {}
    for i, r in enumerate(rows, start=2):
        name = r["file_name"].strip()
        clip_id = normalise_id(Path(name).stem) if name else ""
        _register(clip_id, seen, path, i)
        event = _parse_time(r.get("time_of_event"), "time_of_event", path, i)
        alert = _parse_time(r.get("time_of_alert"), "time_of_alert", path, i)
        extra = {k: r[k] for k in ("light_conditions", "weather", "scene", "time_to_accident") if k in r}
        video = videos / name if name.lower().endswith(VIDEO_SUFFIXES) else _video_path(videos, clip_id)
        clip = Clip(clip_id, video, target, event if target else None, alert if target else None, extra)
        clips.append(_validate_clip(clip, path, i))
    return clips


def read_ccd(path: str | Path, videos_dir: str | Path | None = None, fps: float = 10.0) -> list[Clip]:
    """Read CCD's `Crash-1500.txt`: `vidname,[50 0/1 frame labels],startframe,youtubeID,timing,weather,egoinvolve`.

    The event is the first frame labelled 1, at `fps` (CCD clips: 50 frames at 10 fps).
    """
    path = Path(path)
    if not path.exists():
        raise AnnotationError(path, "file not found")
    videos = Path(videos_dir) if videos_dir is not None else path.parent
    clips, seen = [], {}
    for i, line in enumerate(path.read_text(encoding="utf-8-sig").splitlines(), start=1):
        if not line.strip():
            continue
        m = re.match(r"^\s*([^,]+),\s*\[([^\]]*)\]\s*,?(.*)$", line)
        if not m:
            raise AnnotationError(path, "expected `vidname,[0,0,...,1],...`", i)
        clip_id = m.group(1).strip()
        _register(clip_id, seen, path, i)
        try:
            labels = [int(float(x)) for x in m.group(2).split(",") if x.strip()]
        except ValueError:
            raise AnnotationError(path, "frame labels must be 0/1", i) from None
        if not labels:
            raise AnnotationError(path, "no frame labels", i)
        first = next((k for k, v in enumerate(labels) if v == 1), None)
        rest = [x.strip() for x in m.group(3).split(",")] if m.group(3).strip() else []
        extra = {"n_frames": len(labels)}
        if len(rest) >= 5:
            extra.update(startframe=rest[0], youtube_id=rest[1], timing=rest[2], weather=rest[3], ego_involve=rest[4])
        target = 1 if first is not None else 0
        event = first / fps if first is not None else None
        clips.append(Clip(clip_id, _video_path(videos, clip_id), target, event, None, extra))
    return clips


def read_dad(videos_dir: str | Path, fps: float = 20.0, accident_frame: int = 90) -> list[Clip]:
    """DAD: `positive/*.mp4` (100 frames at 20 fps, the accident at frame 90) and `negative/*.mp4`."""
    root = Path(videos_dir)
    if not root.is_dir():
        raise AnnotationError(root, "DAD folder not found (expected positive/ and negative/ inside)")
    clips: list[Clip] = []
    for folder, target in (("positive", 1), ("negative", 0)):
        for video in sorted((root / folder).glob("*.mp4")):
            clip_id = f"{folder[:3]}_{video.stem}"
            check_safe_id(clip_id, video, None)
            event = accident_frame / fps if target else None
            clips.append(Clip(clip_id, video, target, event, None, {"dataset": "dad"}))
    if not clips:
        raise AnnotationError(root, "no videos in positive/ or negative/")
    return clips


def read_consensus(path: str | Path, videos_dir: str | Path | None = None) -> list[Clip]:
    """Expert consensus files: `id,...,Time-of-alert,Time-of-collision,...` (a collision time makes a positive)."""
    path = Path(path)
    header, rows = _read_rows(path)
    _require(header, ["id", "Time-of-alert", "Time-of-collision"], path)
    videos = Path(videos_dir) if videos_dir is not None else path.parent
    clips, seen = [], {}
    for i, r in enumerate(rows, start=2):
        clip_id = normalise_id(r["id"])
        _register(clip_id, seen, path, i)
        event = _parse_time(r.get("Time-of-collision"), "Time-of-collision", path, i)
        alert = _parse_time(r.get("Time-of-alert"), "Time-of-alert", path, i)
        target = 1 if event is not None else 0
        extra = {k: v for k, v in r.items() if k not in {"id", "Time-of-alert", "Time-of-collision"}}
        clip = Clip(clip_id, _video_path(videos, clip_id), target, event, alert, extra)
        clips.append(_validate_clip(clip, path, i))
    return clips


def load_annotations(
    path: str | Path,
    videos_dir: str | Path | None = None,
    fmt: str = "auto",
    missing_event: MissingEvent = "error",
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """Read any supported annotation file, telling the format from its name/header when `fmt='auto'`."""
    path = Path(path)
    if fmt == "auto":
        if path.suffix == ".txt":
            fmt = "ccd"
        else:
            header, _ = _read_rows(path)
            if "file_name" in header:
                fmt = "nexar-metadata"
            elif "Time-of-collision" in header:
                fmt = "consensus"
            else:
                fmt = "nexar"
    readers = {
        "nexar": read_csv,
        "nexar-metadata": read_nexar_metadata,
        "ccd": read_ccd,
        "consensus": read_consensus,
    }
    if fmt not in readers:
        raise AnnotationError(path, f"unknown annotation format {fmt!r}; choose one of {sorted(readers)}")
    if fmt == "nexar":
        return read_csv(path, videos_dir, missing_event=missing_event, errors=errors)
    return readers[fmt](path, videos_dir)
