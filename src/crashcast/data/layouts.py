"""Dataset layouts: the root folder of a downloaded dataset imported in one step.

`import_dataset(root)` tells the layout from the folder (`detect_layout`), reads its annotations
with the readers of `crashcast.data.annotations`, and returns an `ImportedDataset`: the clips, the
dataset's official train/test split where it has one, and every problem found, each a message
naming the file. A bad entry (a row whose video is missing, a video that cannot be read, a
malformed row) is recorded and skipped when `errors` is a list, else raised; nothing is made up
for it. A file the layout cannot do without (train.csv's videos folder, CCD's Crash-1500/, a
metadata file that is not JSON) raises an `AnnotationError` naming what was expected where.

The layouts, as their publishers describe them:

* ``nexar-kaggle``: the Kaggle competition "nexar-collision-prediction": ``train.csv``
  (``id,time_of_event,time_of_alert,target``; 1,500 rows) with ``train/<id>.mp4``, ids zero-padded
  to five digits (``00822.mp4``), and ``test.csv`` + ``test/`` (1,344 videos; ``test.csv`` lists
  ids only, so the test videos have no labels to import). Checked: the competition's data layout as
  written up for its 3rd-place solution (deepwiki.com/maxzw/nexar-collision-prediction, "Raw Data
  Format": ``train/00001.mp4 ... train.csv, test.csv``).
* ``nexar-hf``: the Hugging Face dataset ``nexar-ai/nexar_collision_prediction``: folders
  ``train/``, ``test-public/``, ``test-private/``; in each, ``positive/`` and ``negative/`` hold the
  videos and a ``metadata.csv`` (``file_name,time_of_event,time_of_alert,light_conditions,weather,
  scene,time_to_accident``); the label is the folder. Checked: the dataset's file tree
  (huggingface.co/datasets/nexar-ai/nexar_collision_prediction/tree/main) and public download
  scripts that fetch ``train/positive/metadata.csv`` and ``train/positive/00000.mp4``.
* ``dad``: the Dashcam Accident Dataset (Chan et al., ACCV 2016): ``videos/training/{positive,
  negative}/*.mp4`` and ``videos/testing/{positive,negative}/*.mp4``, 100 frames each, the accident
  at frame 90; training and testing are the official split. Checked: the layout in
  smallcorgi/Anticipating-Accidents and the folder trees of projects that use it
  (MakersCircle/major-project-works ``datasets/README.md``). The event is frame 90 at the file's
  own frame rate (see `read_dad`: DAD's mp4s run at 25 fps).
* ``ccd``: the Car Crash Dataset (Bao et al., ACM MM 2020): ``videos/Crash-1500/<vidname>.mp4``
  (1,500 accident clips, 50 frames at 10 fps), ``videos/Normal/*.mp4`` (3,000 normal clips) and
  ``videos/Crash-1500.txt`` (per-frame 0/1 labels); the official split is
  ``vgg16_features/{train,test}.txt`` (or ``res101_features/``), lines ``positive/000001.npz 1``.
  Checked: Cogito2012/CarCrashDataset ``README.md`` ("File structure of the dataset") and the split
  reader of its authors' UString code (``<feature>_features/<phase>.txt``, ``filename label``).
* ``dota``: Detection of Traffic Anomaly (Yao et al., 2020): ``dataset/metadata_train.json`` and
  ``dataset/metadata_val.json``, one entry per clip with ``anomaly_start``/``anomaly_end`` frame
  indices into the clip's frames, extracted at 10 fps (``video2frames.py -f 10``); the released
  frames are ``frames/<clip>/images/<index:06d>.jpg``, no video files. Every clip holds an anomaly
  (DoTA has no negatives); train and val are the official split. Checked:
  MoonBlvd/Detection-of-Traffic-Anomaly (``README.md``, ``dataset/metadata_val.json``,
  ``dataset/video2frames.py``) and loaders reading ``frames/<clip>/images/%06d.jpg``.
  crashcast decodes video files, not image folders, so DoTA clips are read from
  ``videos/<clip>.mp4``; `convert_dota_frames` writes those from the frames (10 fps), and the
  import says so when it finds frames and no videos.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path

from crashcast.data.annotations import (
    VIDEO_SUFFIXES,
    MissingEvent,
    _read_text,
    check_safe_id,
    normalise_id,
    read_ccd,
    read_csv,
    read_dad,
    read_nexar_metadata,
)
from crashcast.errors import AnnotationError, VideoError
from crashcast.types import Clip

log = logging.getLogger(__name__)

#: The layouts `detect_layout` knows, with what each expects under the dataset's root folder.
LAYOUTS: dict[str, str] = {
    "nexar-kaggle": "train.csv (id,time_of_event,time_of_alert,target) and train/<id>.mp4; "
                    "optionally test.csv and test/ (Kaggle 'nexar-collision-prediction')",
    "nexar-hf": "train/positive/metadata.csv and train/negative/metadata.csv (file_name,time_of_event,"
                "time_of_alert,...) next to their videos; optionally test-*/ the same way "
                "(Hugging Face 'nexar-ai/nexar_collision_prediction')",
    "dad": "videos/training/{positive,negative}/*.mp4 and videos/testing/{positive,negative}/*.mp4 "
           "(Dashcam Accident Dataset)",
    "ccd": "videos/Crash-1500.txt, videos/Crash-1500/*.mp4 and videos/Normal/*.mp4; "
           "optionally vgg16_features/{train,test}.txt (Car Crash Dataset)",
    "dota": "dataset/metadata_train.json and/or dataset/metadata_val.json, videos/<clip>.mp4 "
            "(or frames/<clip>/images/*.jpg to convert) (Detection of Traffic Anomaly)",
}
SPLITS: tuple[str, ...] = ("train", "test")
#: DoTA's frames were extracted at 10 fps; its anomaly_start/anomaly_end count those frames.
DOTA_FPS = 10.0
_CCD_SPLIT_FOLDERS = ("vgg16_features", "res101_features", ".")
_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


@dataclass(frozen=True)
class ImportedDataset:
    """A dataset read from its root folder.

    `clips` are the clips imported (bad entries left out); `split` maps a clip id to its official
    split, 'train' or 'test', or is None when the layout has none (a clip the official lists do not
    name has no entry: see `notes`); `problems` are the bad entries recorded and skipped, each naming
    its file; `notes` say what was found and not imported (unlabelled test videos, videos no
    annotation names, a missing optional part)."""

    layout: str
    root: Path
    clips: tuple[Clip, ...]
    split: dict[str, str] | None
    problems: tuple[AnnotationError, ...] = ()
    notes: tuple[str, ...] = ()

    def clips_in(self, split: str) -> list[Clip]:
        """The clips of the official split `split` ('train' or 'test'); an error when there is none."""
        if split not in SPLITS:
            raise AnnotationError(self.root, f"unknown split {split!r}; choose one of {list(SPLITS)}")
        if self.split is None:
            raise AnnotationError(self.root, f"the {self.layout} layout has no official split")
        return [c for c in self.clips if self.split.get(c.id) == split]


class _Sink:
    """Bad entries: raised when the caller gave no list, else recorded (here and in the caller's list)."""

    def __init__(self, errors: list[AnnotationError] | None) -> None:
        self.errors = errors
        self.found: list[AnnotationError] = []

    def __call__(self, err: AnnotationError) -> None:
        if self.errors is None:
            raise err
        log.info("skipping: %s", err)
        self.found.append(err)
        self.errors.append(err)

    def feed(self) -> list[AnnotationError] | None:
        """What a reader's `errors` argument gets: a list that feeds this sink, or None (raise)."""
        return None if self.errors is None else _Feed(self)


class _Feed(list):
    """A list handed to a reader as `errors`; what it appends goes through the sink."""

    def __init__(self, sink: _Sink) -> None:
        super().__init__()
        self._sink = sink

    def append(self, err: AnnotationError) -> None:  # type: ignore[override]
        super().append(err)
        self._sink(err)


@dataclass
class _Part:
    """Clips of one annotation source, with the split they belong to."""

    split: str | None
    clips: list[Clip]
    source: Path
    checked: set[str] = field(default_factory=set)  # ids whose video was already opened by the reader


# ----------------------------------------------------------------------------------------------
# detection


def _has_file(*paths: Path) -> bool:
    return any(p.is_file() for p in paths)


def _subdirs(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    except OSError:
        return []


def _hf_split(name: str) -> str | None:
    low = name.lower()
    if low == "train":
        return "train"
    if low.startswith("test"):
        return "test"
    return None


def _dad_base(root: Path) -> Path | None:
    for base in (root / "videos", root):
        for sub in ("training", "testing"):
            if any((base / sub / label).is_dir() for label in ("positive", "negative")):
                return base
    return None


def _match(root: Path) -> str | None:
    """The layout whose marker files `root` holds, or None."""
    if _has_file(*(d / f"metadata_{s}.json" for d in (root / "dataset", root) for s in ("train", "val"))):
        return "dota"
    if _has_file(root / "videos" / "Crash-1500.txt", root / "Crash-1500.txt"):
        return "ccd"
    if _dad_base(root) is not None:
        return "dad"
    for d in _subdirs(root):
        if _hf_split(d.name) and _has_file(d / "positive" / "metadata.csv", d / "negative" / "metadata.csv"):
            return "nexar-hf"
    if _has_file(root / "train.csv"):
        return "nexar-kaggle"
    return None


def _expected_text() -> str:
    return "; ".join(f"{name}: {what}" for name, what in LAYOUTS.items())


def _locate(root: str | Path) -> tuple[str, Path]:
    """(layout, the dataset's own folder): `root` itself, or its one sub-folder that holds a layout
    (a download often unpacks into a folder of its own, e.g. CarCrash/)."""
    root = Path(root)
    if not root.exists():
        raise AnnotationError(root, "dataset folder not found")
    if not root.is_dir():
        raise AnnotationError(root, "is a file; pass the dataset's root folder")
    layout = _match(root)
    if layout is not None:
        return layout, root
    inside = [(m, d) for d in _subdirs(root) if (m := _match(d)) is not None]
    if len(inside) == 1:
        log.info("%s: found the %s layout in %s", root, inside[0][0], inside[0][1].name)
        return inside[0]
    if len(inside) > 1:
        found = ", ".join(f"{d.name}/ ({m})" for m, d in inside)
        raise AnnotationError(root, f"holds several datasets: {found}; pass one of these folders")
    raise AnnotationError(root, f"no known dataset layout found. Expected one of: {_expected_text()}")


def detect_layout(root: str | Path) -> str:
    """The layout of a dataset folder: one of `LAYOUTS` ('nexar-kaggle', 'nexar-hf', 'dad', 'ccd',
    'dota'). The folder may also hold the dataset in its only sub-folder that has one. A folder
    matching none raises an `AnnotationError` naming it and listing what each layout expects."""
    return _locate(root)[0]


# ----------------------------------------------------------------------------------------------
# the layouts


def _csv_header(path: Path) -> list[str]:
    text = _read_text(path)
    first = next(csv.reader(io.StringIO(text.split("\n", 1)[0])), [])
    return [h.strip() for h in first]


def _unlisted(folder: Path, ids: set[str], to_id=normalise_id) -> list[str]:
    """Video files in `folder` that no clip id names (hidden files are not videos)."""
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p.name for p in entries if p.is_file() and not p.name.startswith(".")
            and p.suffix.lower() in VIDEO_SUFFIXES and to_id(p.stem) not in ids]


def _note_unlisted(notes: list[str], folder: Path, names: list[str], source: str) -> None:
    if names:
        shown = ", ".join(names[:5]) + (", ..." if len(names) > 5 else "")
        notes.append(f"{folder}: {len(names)} video(s) that {source} does not list, not imported ({shown})")


def _nexar_kaggle(root: Path, sink: _Sink, missing_event: MissingEvent, notes: list[str]) -> list[_Part]:
    train_csv, train_dir = root / "train.csv", root / "train"
    if not train_dir.is_dir():
        raise AnnotationError(train_dir, "folder not found: the Kaggle layout keeps train.csv's videos in "
                                         "train/<id>.mp4 (ids zero-padded to 5 digits, e.g. train/00822.mp4)")
    parts = [_Part("train", read_csv(train_csv, train_dir, missing_event=missing_event, errors=sink.feed()), train_csv)]
    _note_unlisted(notes, train_dir, _unlisted(train_dir, {c.id for c in parts[0].clips}), "train.csv")
    test_csv, test_dir = root / "test.csv", root / "test"
    if not test_csv.is_file():
        notes.append(f"{test_csv}: not found; no test split imported")
        return parts
    header = _csv_header(test_csv)
    missing = [c for c in ("id", "time_of_event", "time_of_alert", "target") if c not in header]
    if missing:
        n = len(_unlisted(test_dir, set())) if test_dir.is_dir() else 0
        notes.append(f"{test_csv}: no labels (no column(s) {missing}; Kaggle's test.csv lists ids only): "
                     f"its {n} test video(s) are not imported")
        return parts
    if not test_dir.is_dir():
        notes.append(f"{test_dir}: folder not found, so the labelled clips of test.csv are not imported "
                     "(their videos belong in test/<id>.mp4)")
        return parts
    parts.append(_Part("test", read_csv(test_csv, test_dir, missing_event=missing_event, errors=sink.feed()), test_csv))
    return parts


def _nexar_hf(root: Path, sink: _Sink, missing_event: MissingEvent, notes: list[str]) -> list[_Part]:
    parts: list[_Part] = []
    for split_dir in _subdirs(root):
        split = _hf_split(split_dir.name)
        if split is None:
            continue
        labels = [(split_dir / name) for name in ("positive", "negative") if (split_dir / name).is_dir()]
        if not labels:
            notes.append(f"{split_dir}: no positive/ or negative/ folder with a metadata.csv; not imported")
            continue
        for folder in labels:
            meta = folder / "metadata.csv"
            if not meta.is_file():
                n = len(_unlisted(folder, set()))
                sink(AnnotationError(meta, f"file not found: the Hugging Face layout keeps a metadata.csv (file_name,"
                                           f"time_of_event,time_of_alert,...) next to the videos of {folder.name}/; "
                                           f"its {n} video(s) are not imported"))
                continue
            clips = read_nexar_metadata(meta, missing_event=missing_event, errors=sink.feed())
            parts.append(_Part(split, clips, meta))
            _note_unlisted(notes, folder, _unlisted(folder, {c.id for c in clips}), "metadata.csv")
    if not any(p.split == "train" for p in parts):
        notes.append(f"{root / 'train'}: no train/positive/metadata.csv or train/negative/metadata.csv; "
                     "no training clips imported")
    return parts


def _dad(root: Path, sink: _Sink, notes: list[str]) -> list[_Part]:
    base = _dad_base(root) or root / "videos"
    parts: list[_Part] = []
    for folder, split in (("training", "train"), ("testing", "test")):
        d = base / folder
        if not d.is_dir():
            notes.append(f"{d}: not found; DAD's official {split} split is absent")
            continue
        clips = read_dad(d, errors=sink.feed())
        parts.append(_Part(split, clips, d, checked={c.id for c in clips if c.target}))  # positives were probed
    return parts


def _ccd_split_lists(root: Path, notes: list[str]) -> tuple[Path, Path] | None:
    for sub in _CCD_SPLIT_FOLDERS:
        train, test = root / sub / "train.txt", root / sub / "test.txt"
        if train.is_file() and test.is_file():
            return train, test
        if train.is_file() or test.is_file():
            notes.append(f"{root / sub}: only one of train.txt and test.txt; its split is not used")
    return None


def _ccd_split(lists: tuple[Path, Path], ids: set[str], sink: _Sink, notes: list[str]) -> dict[str, str]:
    """clip id -> split from CCD's list files (`positive/000001.npz 1`, `negative/000002.npz 0`)."""
    split: dict[str, str] = {}
    for path, name in zip(lists, SPLITS, strict=True):
        unknown = 0
        for row, line in enumerate(_read_text(path).splitlines(), start=1):
            if not line.strip():
                continue
            tokens = line.split()
            entry = tokens[0].replace("\\", "/")
            folder, _, file = entry.rpartition("/")
            label = tokens[1] if len(tokens) > 1 else None
            positive = {"positive": True, "negative": False}.get(folder.rsplit("/", 1)[-1].lower())
            if positive is None:
                positive = {"1": True, "0": False}.get(label or "")
            if positive is None or not file:
                sink(AnnotationError(path, f"expected `positive/<name>.npz 1` or `negative/<name>.npz 0`, got {line.strip()!r}",
                                     row))
                continue
            stem = Path(file).stem
            clip_id = stem if positive else f"normal_{stem}"
            if clip_id not in ids:
                unknown += 1
                continue
            if split.get(clip_id, name) != name:
                sink(AnnotationError(path, f"clip {clip_id!r} is in both train.txt and test.txt", row))
                continue
            split[clip_id] = name
        if unknown:
            notes.append(f"{path}: {unknown} entr(ies) name no imported clip")
    missing = len(ids - set(split))
    if missing:
        notes.append(f"{lists[0].parent}: {missing} imported clip(s) are in neither train.txt nor test.txt "
                     "(no split entry)")
    return split


def _ccd(root: Path, sink: _Sink, notes: list[str]) -> tuple[list[_Part], dict[str, str] | None]:
    ann = root / "videos" / "Crash-1500.txt"
    if not ann.is_file():
        ann = root / "Crash-1500.txt"
    videos = ann.parent
    crash, normal = videos / "Crash-1500", videos / "Normal"
    if not crash.is_dir():
        raise AnnotationError(crash, f"folder not found: CCD keeps its accident videos in Crash-1500/<vidname>.mp4 "
                                     f"next to {ann.name}")
    clips: list[Clip] = []
    for clip in read_ccd(ann, crash, errors=sink.feed()):
        if clip.target == 1:
            clips.append(replace(clip, extra={**clip.extra, "dataset": "ccd"}))
        else:  # every Crash-1500 clip holds an accident: an all-zero line is an error, not a negative
            sink(AnnotationError(ann, f"clip {clip.id!r}: no frame labelled 1 (every CCD Crash-1500 clip holds an "
                                      "accident)"))
    parts = [_Part(None, clips, ann)]
    _note_unlisted(notes, crash, _unlisted(crash, {c.id for c in clips}, to_id=str), ann.name)
    if normal.is_dir():
        negatives: list[Clip] = []
        for video in sorted(normal.iterdir()):
            if not video.is_file() or video.name.startswith(".") or video.suffix.lower() not in VIDEO_SUFFIXES:
                continue
            clip_id = f"normal_{video.stem}"
            try:
                check_safe_id(clip_id, video, None)
            except AnnotationError as err:
                sink(err)
                continue
            negatives.append(Clip(clip_id, video, 0, None, None, {"dataset": "ccd"}))
        parts.append(_Part(None, negatives, normal))
    else:
        notes.append(f"{normal}: not found; CCD's normal (negative) clips are not imported")
        log.warning("%s: not found; CCD's normal (negative) clips are not imported", normal)
    lists = _ccd_split_lists(root, notes)
    if lists is None:
        notes.append(f"{root}: no vgg16_features/train.txt and test.txt; CCD's official split is not known")
        return parts, None
    ids = {c.id for p in parts for c in p.clips}
    return parts, _ccd_split(lists, ids, sink, notes)


def _dota_entry(vid: str, entry: object, path: Path, videos: Path) -> Clip:
    check_safe_id(vid, path, None)
    if not isinstance(entry, dict):
        raise AnnotationError(path, f"clip {vid!r}: expected an object with anomaly_start and anomaly_end")
    values: dict[str, int] = {}
    for key in ("anomaly_start", "anomaly_end"):
        v = entry.get(key)
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0 or v != int(v):
            raise AnnotationError(path, f"clip {vid!r}: {key} {v!r} is not a frame index (a whole number >= 0)")
        values[key] = int(v)
    start, end = values["anomaly_start"], values["anomaly_end"]
    if end < start:
        raise AnnotationError(path, f"clip {vid!r}: anomaly_end ({end}) is before anomaly_start ({start})")
    n = entry.get("num_frames")
    if isinstance(n, int) and not isinstance(n, bool) and start >= n:
        raise AnnotationError(path, f"clip {vid!r}: anomaly_start ({start}) is not inside its {n} frames")
    video = next((videos / f"{vid}{s}" for s in VIDEO_SUFFIXES if (videos / f"{vid}{s}").exists()), videos / f"{vid}.mp4")
    extra = {"dataset": "dota", "fps": DOTA_FPS, "anomaly_start": start, "anomaly_end": end,
             "anomaly_end_s": round(end / DOTA_FPS, 4)}
    extra.update({k: entry[k] for k in ("anomaly_class", "num_frames", "video_start", "video_end") if k in entry})
    return Clip(vid, video, 1, round(start / DOTA_FPS, 4), None, extra)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(_read_text(path))
    except json.JSONDecodeError as e:
        raise AnnotationError(path, f"not valid JSON ({e.msg} at line {e.lineno})") from None
    if not isinstance(data, dict):
        raise AnnotationError(path, "expected a JSON object mapping each clip name to its annotation")
    return data


def _dota(root: Path, sink: _Sink, notes: list[str]) -> list[_Part]:
    ann_dir = root / "dataset" if _has_file(*(root / "dataset" / f"metadata_{s}.json" for s in ("train", "val"))) else root
    videos, frames = root / "videos", root / "frames"
    parts: list[_Part] = []
    for name, split in (("train", "train"), ("val", "test")):
        path = ann_dir / f"metadata_{name}.json"
        if not path.is_file():
            notes.append(f"{path}: not found; DoTA's official {name} split is absent")
            continue
        clips: list[Clip] = []
        for vid, entry in _read_json(path).items():
            try:
                clips.append(_dota_entry(str(vid), entry, path, videos))
            except AnnotationError as err:
                sink(err)
        parts.append(_Part(split, clips, path))
    all_clips = [c for p in parts for c in p.clips]
    if all_clips and not any(c.video_path.exists() for c in all_clips) and frames.is_dir():
        raise AnnotationError(
            videos, f"no DoTA videos: {frames} holds image frames (frames/<clip>/images/*.jpg) and crashcast reads "
                    "video files. Convert them once with crashcast.data.layouts.convert_dota_frames(root) (writes "
                    f"videos/<clip>.mp4 at {DOTA_FPS:g} fps), or with ffmpeg: ffmpeg -framerate {DOTA_FPS:g} -i "
                    "frames/<clip>/images/%06d.jpg -pix_fmt yuv420p videos/<clip>.mp4")
    notes.append("DoTA: every clip holds an anomaly (no negatives); its event is anomaly_start at 10 fps")
    return parts


# ----------------------------------------------------------------------------------------------
# the import


def _check_video(clip: Clip, source: Path, probe_it: bool) -> None:
    where = f"clip {clip.id!r} of {source.name}"
    if not clip.video_path.exists():
        raise AnnotationError(clip.video_path, f"video not found ({where})")
    if not clip.video_path.is_file():
        raise AnnotationError(clip.video_path, f"is not a video file ({where})")
    if probe_it:
        from crashcast.data.video import probe

        try:
            probe(clip.video_path)
        except VideoError as e:
            raise AnnotationError(clip.video_path, f"unreadable video ({where}): {e.problem}") from None


def _assemble(parts: Iterable[_Part], sink: _Sink, check_videos: bool) -> tuple[list[Clip], dict[str, str]]:
    """Every part's clips whose video is there (and opens, with `check_videos`), each id once."""
    clips: list[Clip] = []
    split: dict[str, str] = {}
    seen: dict[str, Path] = {}
    for part in parts:
        for clip in part.clips:
            try:
                if clip.id in seen:
                    raise AnnotationError(clip.video_path, f"duplicate clip id {clip.id!r} (also {seen[clip.id]})")
                _check_video(clip, part.source, check_videos and clip.id not in part.checked)
            except AnnotationError as err:
                sink(err)
                continue
            seen[clip.id] = clip.video_path
            clips.append(clip)
            if part.split is not None:
                split[clip.id] = part.split
    return clips, split


def import_dataset(
    root: str | Path,
    errors: list[AnnotationError] | None = None,
    check_videos: bool = True,
    missing_event: MissingEvent = "error",
) -> ImportedDataset:
    """Import a downloaded dataset from its root folder, whichever of `LAYOUTS` it has.

    Returns the clips, the official split (Nexar Kaggle train.csv/test.csv, the Hugging Face
    train/ and test-*/ folders, DAD training/testing, CCD's train.txt/test.txt when present,
    DoTA train/val as train/test; None where the layout has none), the layout name, the bad
    entries skipped and notes. A bad entry (a malformed row, a row whose video is missing, a video
    that cannot be opened when `check_videos`, a duplicate id) raises an `AnnotationError` naming
    its file, or, when `errors` is a list, is recorded there (and in `problems`) and skipped. A
    missing folder or file the layout needs always raises, naming what was expected where.
    `missing_event` ('error' | 'end') applies to Nexar positives without an event time.
    """
    layout, base = _locate(root)
    sink = _Sink(errors)
    notes: list[str] = []
    official: dict[str, str] | None = None
    if layout == "nexar-kaggle":
        parts = _nexar_kaggle(base, sink, missing_event, notes)
    elif layout == "nexar-hf":
        parts = _nexar_hf(base, sink, missing_event, notes)
    elif layout == "dad":
        parts = _dad(base, sink, notes)
    elif layout == "ccd":
        parts, official = _ccd(base, sink, notes)
    else:
        parts = _dota(base, sink, notes)
    clips, split = _assemble(parts, sink, check_videos)
    if layout == "ccd":
        split_map = None if official is None else {k: v for k, v in official.items() if k in {c.id for c in clips}}
    else:
        split_map = split
    for note in notes:
        log.info("%s", note)
    log.info("%s: %s layout, %d clip(s) imported, %d problem(s)", base, layout, len(clips), len(sink.found))
    return ImportedDataset(layout, base, tuple(clips), split_map, tuple(sink.found), tuple(notes))


# ----------------------------------------------------------------------------------------------
# DoTA frames -> videos


def frames_to_video(images_dir: str | Path, out_path: str | Path, fps: float = DOTA_FPS) -> Path:
    """Write the images of a frame folder (sorted by name: `000000.jpg`, `000001.jpg`, ...) as an MP4
    at `fps`, frame k at k / fps s. An image that cannot be read, or of another size than the first,
    is an `AnnotationError` naming it (nothing is written then)."""
    import cv2

    from crashcast.data.video import VideoWriter

    images_dir = Path(images_dir)
    try:
        images = sorted(p for p in images_dir.iterdir() if p.is_file() and p.suffix.lower() in _IMAGE_SUFFIXES
                        and not p.name.startswith("."))
    except OSError as e:
        raise AnnotationError(images_dir, f"frame folder cannot be listed ({e.strerror or e})") from None
    if not images:
        raise AnnotationError(images_dir, f"no frames ({', '.join(_IMAGE_SUFFIXES)}) in the folder")
    size: tuple[int, int] | None = None
    writer: VideoWriter | None = None
    try:
        for image in images:
            bgr = cv2.imread(str(image), cv2.IMREAD_COLOR)
            if bgr is None:
                raise AnnotationError(image, "not a readable image")
            h, w = bgr.shape[:2]
            if size is None:
                size = (w, h)
                writer = VideoWriter(out_path, fps, size)
            elif (w, h) != size:
                raise AnnotationError(image, f"is {w}x{h} pixels, the first frame {size[0]}x{size[1]}")
            assert writer is not None
            writer.write(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    except BaseException:
        if writer is not None:
            writer.close(keep=False)
        raise
    assert writer is not None
    writer.close()
    return Path(out_path)


def convert_dota_frames(
    root: str | Path, fps: float = DOTA_FPS, errors: list[AnnotationError] | None = None
) -> list[Path]:
    """Write `videos/<clip>.mp4` for every `frames/<clip>/images/` folder of a DoTA root that has no
    video yet, at DoTA's 10 fps, so `import_dataset` can read them. Returns the videos written. A
    folder whose frames cannot be read raises, or, when `errors` is a list, is recorded and skipped."""
    root = Path(root)
    frames = root / "frames"
    if not frames.is_dir():
        raise AnnotationError(frames, "folder not found: DoTA's frames are frames/<clip>/images/*.jpg")
    sink = _Sink(errors)
    written: list[Path] = []
    for clip_dir in _subdirs(frames):
        images = clip_dir / "images" if (clip_dir / "images").is_dir() else clip_dir
        out = root / "videos" / f"{clip_dir.name}.mp4"
        if out.exists():
            continue
        try:
            check_safe_id(clip_dir.name, clip_dir, None)
            written.append(frames_to_video(images, out, fps))
        except AnnotationError as err:
            sink(err)
        except VideoError as err:
            sink(AnnotationError(out, f"cannot be written: {err.problem}"))
    log.info("%s: %d DoTA clip(s) converted to videos/", root, len(written))
    return written
