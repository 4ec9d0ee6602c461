"""Annotation readers: Nexar train.csv, Nexar metadata.csv, generic CSV, CCD, DAD, expert consensus.

Every reader returns a list of `Clip` and raises `AnnotationError` naming the file and row for
missing columns, duplicate ids, impossible times and unsafe ids. A problem with the whole file
(missing, unreadable, missing columns) always raises; a problem with one row (or one DAD video)
raises too, unless the caller passes a list as `errors`: then the row is recorded there and
skipped, so one bad row does not cost a whole dataset.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path, PureWindowsPath
from typing import Literal, TypeVar

from crashcast.errors import AnnotationError, InputLimitError
from crashcast.runtime.store import ANNOTATION_FILE_LIMIT, read_bounded
from crashcast.types import Clip

log = logging.getLogger(__name__)

NEXAR_COLUMNS = ("id", "time_of_event", "time_of_alert", "target")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")

MissingEvent = Literal["error", "end"]
#: Values of `missing_event`: what to do with a positive that has no event time.
MISSING_EVENT_CHOICES: tuple[str, ...] = ("error", "end")
#: Values of `load_annotations(fmt=...)`.
FORMATS: tuple[str, ...] = ("auto", "nexar", "nexar-metadata", "ccd", "consensus", "dad")
#: The sub-folders a DAD folder holds (at least one of them), with their label.
DAD_FOLDERS: tuple[tuple[str, int], ...] = (("positive", 1), ("negative", 0))

_Item = TypeVar("_Item")


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


def check_plain_file_name(name: str, path: object, row: int | None) -> None:
    """A file name from an annotation must name a file directly inside the videos folder.

    `../x.mp4`, `sub/x.mp4`, `/etc/passwd.mp4` or `C:x.mp4` would resolve elsewhere, so they are refused.
    """
    if not name:
        raise AnnotationError(path, "empty file_name", row)
    if "/" in name or "\\" in name or name in {".", ".."} or PureWindowsPath(name).drive:
        raise AnnotationError(
            path,
            f"file_name {name!r} is not a plain file name inside the videos folder "
            "(no folders, no '..', not an absolute path)",
            row,
        )


def _check_choice(value: str, choices: Iterable[str], what: str, path: object) -> None:
    """Refuse an option value outside its choices, naming them (an AnnotationError is a ValueError)."""
    allowed = list(choices)
    if value not in allowed:
        raise AnnotationError(path, f"unknown {what} {value!r}; choose one of {allowed}")


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


def _collect(
    items: Iterable[_Item], parse: Callable[[_Item], Clip], errors: list[AnnotationError] | None
) -> list[Clip]:
    """The row loop every reader shares: parse each item into a Clip; a bad one raises its
    `AnnotationError`, or, when `errors` is a list, is recorded there and skipped."""
    report = _RowErrors(errors)
    clips: list[Clip] = []
    for item in items:
        try:
            clips.append(parse(item))
        except AnnotationError as err:
            report(err)
    return clips


def _read_text(path: Path) -> str:
    """The whole text of an annotation file, or an AnnotationError saying why it cannot be read."""
    if not path.exists():
        raise AnnotationError(path, "file not found")
    if path.is_dir():
        raise AnnotationError(path, "is a folder, not an annotation file")
    if not path.is_file():
        raise AnnotationError(path, "is not a regular file (a named pipe, a device or a socket), not an annotation file")
    try:
        return read_bounded(path, ANNOTATION_FILE_LIMIT, "annotation file").decode("utf-8-sig")  # utf-8-sig strips a BOM
    except InputLimitError as e:
        raise AnnotationError(path, str(e).removeprefix(f"{path}: ")) from None
    except UnicodeDecodeError as e:
        raise AnnotationError(path, f"not a UTF-8 text file ({e.reason})") from None
    except OSError as e:
        raise AnnotationError(path, f"cannot be read ({e.strerror or e})") from None


def _read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    path = Path(path)
    text = _read_text(path)
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""))
        header = [h.strip() for h in (reader.fieldnames or [])]
        rows = [{(k or "").strip(): (v if v is not None else "") for k, v in r.items()} for r in reader]
    except csv.Error as e:
        raise AnnotationError(path, f"malformed CSV: {e}") from None
    if not header:
        raise AnnotationError(path, "empty file: expected a header row")
    return header, rows


def _require(header: Iterable[str], columns: Iterable[str], path: Path) -> None:
    missing = [c for c in columns if c not in header]
    if missing:
        raise AnnotationError(path, f"missing column(s) {missing}; found {list(header)}")


def _videos_folder(path: Path, videos_dir: str | Path | None) -> Path:
    return Path(videos_dir) if videos_dir is not None else path.parent


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
    _check_choice(missing_event, MISSING_EVENT_CHOICES, "missing_event", path)
    header, rows = _read_rows(path)
    colmap = {c: c for c in NEXAR_COLUMNS}
    colmap.update(columns or {})
    _require(header, [colmap[c] for c in NEXAR_COLUMNS], path)
    videos = _videos_folder(path, videos_dir)
    seen: dict[str, int] = {}

    def parse(item: tuple[int, dict[str, str]]) -> Clip:
        i, r = item
        clip_id = normalise_id(r.get(colmap["id"], ""))
        _register(clip_id, seen, path, i)
        target = _parse_target(r.get(colmap["target"]), path, i)
        event = _parse_time(r.get(colmap["time_of_event"]), "time_of_event", path, i)
        alert = _parse_time(r.get(colmap["time_of_alert"]), "time_of_alert", path, i)
        extra = {k: v for k, v in r.items() if k not in colmap.values()}
        clip = Clip(clip_id, _video_path(videos, clip_id), target, event if target else None, alert if target else None, extra)
        return _validate_clip(clip, path, i, missing_event)

    return _collect(enumerate(rows, start=2), parse, errors)  # rows numbered as in a spreadsheet


def _video_path(videos: Path, clip_id: str) -> Path:
    for suffix in VIDEO_SUFFIXES:
        p = videos / f"{clip_id}{suffix}"
        if p.exists():
            return p
    return videos / f"{clip_id}.mp4"


def _label_from_folder(path: Path) -> int:
    """0/1 from the nearest enclosing `negative`/`positive` folder (`.../positive/metadata.csv` -> 1)."""
    for part in reversed(path.resolve().parent.parts):
        label = dict(DAD_FOLDERS).get(part.lower())
        if label is not None:
            return label
    raise AnnotationError(path, "cannot tell the label: pass target=0/1 or keep the file in a positive/ or negative/ folder")


def read_nexar_metadata(
    path: str | Path,
    videos_dir: str | Path | None = None,
    target: int | None = None,
    missing_event: MissingEvent = "error",
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """Read the Nexar release's `metadata.csv`
    (`file_name,time_of_event,time_of_alert,light_conditions,weather,scene,time_to_accident`).

    The label comes from the nearest `positive`/`negative` folder in the path unless `target` is
    given. `file_name` must be a plain file name inside the videos folder (default: the CSV's
    folder). A positive with an empty time_of_event is an error, or with `missing_event='end'` is
    anchored at the video's end. Bad rows raise, or are recorded in `errors` and skipped.
    """
    path = Path(path)
    _check_choice(missing_event, MISSING_EVENT_CHOICES, "missing_event", path)
    if target not in (None, 0, 1):
        raise AnnotationError(path, f"target must be 0, 1 or None (label from the folder), not {target!r}")
    header, rows = _read_rows(path)
    _require(header, ["file_name", "time_of_event", "time_of_alert"], path)
    label = _label_from_folder(path) if target is None else target
    videos = _videos_folder(path, videos_dir)
    seen: dict[str, int] = {}

    def parse(item: tuple[int, dict[str, str]]) -> Clip:
        i, r = item
        name = r["file_name"].strip()
        check_plain_file_name(name, path, i)
        clip_id = normalise_id(Path(name).stem)
        _register(clip_id, seen, path, i)
        event = _parse_time(r.get("time_of_event"), "time_of_event", path, i)
        alert = _parse_time(r.get("time_of_alert"), "time_of_alert", path, i)
        extra = {k: r[k] for k in ("light_conditions", "weather", "scene", "time_to_accident") if k in r}
        video = videos / name if name.lower().endswith(VIDEO_SUFFIXES) else _video_path(videos, clip_id)
        clip = Clip(clip_id, video, label, event if label else None, alert if label else None, extra)
        return _validate_clip(clip, path, i, missing_event)

    return _collect(enumerate(rows, start=2), parse, errors)


_CCD_LINE = re.compile(r"^\s*([^,]+),\s*\[([^\]]*)\]\s*,?(.*)$")


def _ccd_labels(text: str, path: Path, row: int) -> list[int]:
    """CCD's per-frame labels: each exactly 0 or 1 (`1.0` accepted), at least one."""
    labels: list[int] = []
    for x in (x.strip() for x in text.split(",")):
        if not x:
            continue
        try:
            v = float(x)
        except ValueError:
            v = math.nan
        if v not in (0.0, 1.0):
            raise AnnotationError(path, f"frame label {x!r} must be 0 or 1", row)
        labels.append(int(v))
    if not labels:
        raise AnnotationError(path, "no frame labels", row)
    return labels


def read_ccd(
    path: str | Path,
    videos_dir: str | Path | None = None,
    fps: float = 10.0,
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """Read CCD's `Crash-1500.txt`: `vidname,[50 0/1 frame labels],startframe,youtubeID,timing,weather,egoinvolve`.

    The event is the first frame labelled 1, at `fps` (CCD clips: 50 frames at 10 fps); a clip
    is positive exactly when it has such a frame, so a positive always has an event time and
    `missing_event` does not arise. Rows are the file's line numbers (no header). A malformed
    line raises, or is recorded in `errors` and skipped.
    """
    path = Path(path)
    lines = _read_text(path).splitlines()
    if not any(line.strip() for line in lines):
        raise AnnotationError(path, "empty file: expected lines `vidname,[0,0,...,1],...`")
    videos = _videos_folder(path, videos_dir)
    seen: dict[str, int] = {}

    def parse(item: tuple[int, str]) -> Clip:
        i, line = item
        m = _CCD_LINE.match(line)
        if not m:
            raise AnnotationError(path, "expected `vidname,[0,0,...,1],...`", i)
        clip_id = m.group(1).strip()
        _register(clip_id, seen, path, i)
        labels = _ccd_labels(m.group(2), path, i)
        first = next((k for k, v in enumerate(labels) if v == 1), None)
        rest = [x.strip() for x in m.group(3).split(",")] if m.group(3).strip() else []
        extra: dict[str, object] = {"n_frames": len(labels)}
        if len(rest) >= 5:
            extra.update(startframe=rest[0], youtube_id=rest[1], timing=rest[2], weather=rest[3], ego_involve=rest[4])
        target = 1 if first is not None else 0
        event = first / fps if first is not None else None
        return Clip(clip_id, _video_path(videos, clip_id), target, event, None, extra)

    numbered = ((i, line) for i, line in enumerate(lines, start=1) if line.strip())
    return _collect(numbered, parse, errors)


def _dad_videos(root: Path) -> list[tuple[int, Path]]:
    """(label, video) for every video file in a DAD folder's positive/ and negative/, sorted by name.

    Hidden files (`.DS_Store`, macOS `._x.mp4` copies) and non-video files are not clips.
    """
    if not root.exists():
        raise AnnotationError(root, "DAD folder not found (expected positive/ and/or negative/ inside)")
    folders = [(root / name, label) for name, label in DAD_FOLDERS if (root / name).is_dir()]
    if not root.is_dir() or not folders:
        raise AnnotationError(
            root, "not a DAD folder: expected a folder with positive/ and/or negative/ inside (or pass an annotation file)"
        )
    found: list[tuple[int, Path]] = []
    for folder, label in folders:
        try:
            entries = sorted(folder.iterdir())
        except OSError as e:
            raise AnnotationError(folder, f"cannot be listed ({e.strerror or e})") from None
        for video in entries:
            if video.is_file() and not video.name.startswith(".") and video.suffix.lower() in VIDEO_SUFFIXES:
                found.append((label, video))
    if not found:
        raise AnnotationError(root, f"no videos ({', '.join(VIDEO_SUFFIXES)}) in positive/ or negative/")
    return found


def read_dad(
    videos_dir: str | Path,
    fps: float | None = None,
    accident_frame: int = 90,
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """DAD: `positive/*.mp4` (100 frames, the accident at frame 90) and `negative/*.mp4`.

    The event is frame `accident_frame` **at the file's own frame rate** (read from its header;
    `fps` overrides it): DAD's papers say 20 fps, but its mp4 files run at 25 fps (4.0 s; the
    dashcams' burned-in clocks agree), so frame 90 is 3.6 s, not 4.5 s (beyond the file's end).
    `videos_dir` is the DAD folder itself (it needs positive/ and/or negative/). Ids are
    `pos_<stem>`/`neg_<stem>`; an unsafe or duplicate id (`a.mp4` next to `a.avi`), or a positive
    whose header cannot be read, is a bad entry naming the video: it raises, or is recorded in
    `errors` and skipped. Every positive has its event, so `missing_event` does not arise.
    """
    from crashcast.data.video import probe
    from crashcast.errors import VideoError

    root = Path(videos_dir)
    seen: dict[str, Path] = {}

    def parse(item: tuple[int, Path]) -> Clip:
        target, video = item
        clip_id = f"{'pos' if target else 'neg'}_{video.stem}"
        check_safe_id(clip_id, video, None)
        if clip_id in seen:
            raise AnnotationError(video, f"duplicate id {clip_id!r} (also {seen[clip_id].name})")
        seen[clip_id] = video
        if not target:
            return Clip(clip_id, video, 0, None, None, {"dataset": "dad"})
        rate = fps
        if rate is None:
            try:
                rate = probe(video).fps
            except VideoError as e:
                raise AnnotationError(video, f"its frame rate cannot be read, so its event (frame {accident_frame}) "
                                             f"has no time: {e.problem}") from None
        return Clip(clip_id, video, 1, round(accident_frame / rate, 4), None,
                    {"dataset": "dad", "fps": rate, "accident_frame": accident_frame})

    return _collect(_dad_videos(root), parse, errors)


def read_consensus(
    path: str | Path,
    videos_dir: str | Path | None = None,
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """Expert consensus files: `id,...,Time-of-alert,Time-of-collision,...` (a collision time makes a positive).

    Bad rows raise, or are recorded in `errors` and skipped.
    """
    path = Path(path)
    header, rows = _read_rows(path)
    _require(header, ["id", "Time-of-alert", "Time-of-collision"], path)
    videos = _videos_folder(path, videos_dir)
    seen: dict[str, int] = {}

    def parse(item: tuple[int, dict[str, str]]) -> Clip:
        i, r = item
        clip_id = normalise_id(r["id"])
        _register(clip_id, seen, path, i)
        event = _parse_time(r.get("Time-of-collision"), "Time-of-collision", path, i)
        alert = _parse_time(r.get("Time-of-alert"), "Time-of-alert", path, i)
        # A row is positive exactly when it has a collision time, so no positive lacks an event
        # time here and `missing_event` never applies (an alert without a collision is a negative).
        target = 1 if event is not None else 0
        extra = {k: v for k, v in r.items() if k not in {"id", "Time-of-alert", "Time-of-collision"}}
        clip = Clip(clip_id, _video_path(videos, clip_id), target, event, alert, extra)
        return _validate_clip(clip, path, i)

    return _collect(enumerate(rows, start=2), parse, errors)


def detect_format(path: str | Path) -> str:
    """The format of an annotation file or folder: a folder is DAD, `.txt` is CCD, else the CSV header decides."""
    path = Path(path)
    if path.is_dir():
        return "dad"
    if path.suffix.lower() == ".txt":
        return "ccd"
    header, _ = _read_rows(path)
    if "file_name" in header:
        return "nexar-metadata"
    if "Time-of-collision" in header:
        return "consensus"
    return "nexar"


def load_annotations(
    path: str | Path,
    videos_dir: str | Path | None = None,
    fmt: str = "auto",
    missing_event: MissingEvent = "error",
    errors: list[AnnotationError] | None = None,
) -> list[Clip]:
    """Read any supported annotation file or DAD folder.

    `fmt` is one of `FORMATS`: 'auto' tells it from the path (a folder is DAD, `.txt` is CCD,
    else the CSV header: `file_name` -> nexar-metadata, `Time-of-collision` -> consensus, else
    nexar). `videos_dir` is where `<id>.<ext>` videos live (default: the file's folder); it is
    ignored for DAD, whose videos are the folder's own positive/ and negative/ files.
    `missing_event` ('error' | 'end') says what to do with a positive that has no event time
    (only Nexar CSVs and metadata.csv can have one). Bad rows raise `AnnotationError`, or, when
    `errors` is a list, are recorded there and skipped; problems with the whole file always raise.
    """
    path = Path(path)
    _check_choice(fmt, FORMATS, "annotation format", path)
    _check_choice(missing_event, MISSING_EVENT_CHOICES, "missing_event", path)
    if fmt == "auto":
        fmt = detect_format(path)
        log.debug("%s: read as %s", path, fmt)
    if fmt == "dad":
        if videos_dir is not None:
            log.warning("%s: DAD folder: videos_dir %s is ignored (videos are in positive/ and negative/)", path, videos_dir)
        return read_dad(path, errors=errors)
    if fmt == "ccd":
        return read_ccd(path, videos_dir, errors=errors)
    if fmt == "consensus":
        return read_consensus(path, videos_dir, errors=errors)
    if fmt == "nexar-metadata":
        return read_nexar_metadata(path, videos_dir, missing_event=missing_event, errors=errors)
    return read_csv(path, videos_dir, missing_event=missing_event, errors=errors)
