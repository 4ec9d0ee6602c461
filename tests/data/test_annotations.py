from __future__ import annotations

from pathlib import Path

import pytest

from crashcast.data.annotations import (
    FORMATS,
    MISSING_EVENT_CHOICES,
    load_annotations,
    read_ccd,
    read_consensus,
    read_csv,
    read_dad,
    read_nexar_metadata,
)
from crashcast.errors import AnnotationError


def _csv(tmp_path: Path, text: str, name: str = "train.csv") -> Path:
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_nexar_layout_pads_numeric_ids_and_reads_times(tmp_path):
    p = _csv(tmp_path, "id,time_of_event,time_of_alert,target\n822,19.5,18.633,1\n1924,,,0\nabc_1,4.0,,1\n")
    clips = read_csv(p)
    assert [c.id for c in clips] == ["00822", "01924", "abc_1"]
    assert clips[0].time_of_event_s == 19.5 and clips[0].time_of_alert_s == 18.633 and clips[0].target == 1
    assert clips[1].time_of_event_s is None and clips[1].target == 0
    assert clips[0].video_path == tmp_path / "00822.mp4"


def test_bom_and_extra_columns_are_accepted(tmp_path):
    p = tmp_path / "t.csv"
    p.write_bytes("\ufeffid,time_of_event,time_of_alert,target,weather\n1,3.0,2.0,1,rain\n".encode())
    (clip,) = read_csv(p)
    assert clip.id == "00001" and clip.extra == {"weather": "rain"}


def test_generic_csv_with_column_map(tmp_path):
    p = _csv(tmp_path, "video,crash_t,warn_t,is_crash\nclipA,5.5,4.0,1\n")
    (clip,) = read_csv(p, columns={"id": "video", "time_of_event": "crash_t", "time_of_alert": "warn_t", "target": "is_crash"})
    assert (clip.id, clip.time_of_event_s, clip.time_of_alert_s, clip.target) == ("clipA", 5.5, 4.0, 1)


def test_nexar_metadata_takes_label_from_folder(tmp_path):
    d = tmp_path / "positive"
    d.mkdir()
    p = _csv(d, "file_name,time_of_event,time_of_alert,light_conditions,weather,scene,time_to_accident\n"
                "00007.mp4,12.0,10.5,Normal,Clear,Urban,1.5\n", "metadata.csv")
    (clip,) = read_nexar_metadata(p)
    assert clip.target == 1 and clip.id == "00007" and clip.extra["weather"] == "Clear"
    assert load_annotations(p)[0].time_of_alert_s == 10.5


def test_ccd_event_is_first_positive_frame(tmp_path):
    labels = [0] * 31 + [1] * 19
    neg = [0] * 50
    p = tmp_path / "Crash-1500.txt"
    p.write_text(f"000007,{labels},001,yt1,Day,Snowy,No\n000008,{neg},001,yt2,Day,Normal,No\n".replace(" ", ""))
    clips = read_ccd(p)
    assert clips[0].time_of_event_s == pytest.approx(3.1) and clips[0].target == 1
    assert clips[1].target == 0 and clips[1].time_of_event_s is None
    assert clips[0].extra["weather"] == "Snowy"


def _dad_video(path: Path, fps: int, n: int = 100) -> Path:
    import numpy as np
    from tests.conftest import write_video_as

    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.full((32, 48, 3), (7 * i) % 255, np.uint8) for i in range(n)]
    return write_video_as(path, frames, [i / fps for i in range(n)], rate=fps)


def test_dad_positives_have_the_accident_at_frame_90_of_the_files_own_rate(tmp_path):
    """DAD's files run at 25 fps (100 frames, 4.0 s): frame 90 is 3.6 s, inside the video (the 20 fps
    of DAD's papers put it at 4.5 s, past the end, so every positive was skipped); a file at another
    rate gets its own; `fps=` overrides; a positive whose header cannot be read is a bad entry
    naming it, and the others are kept."""
    from crashcast.data.video import probe

    pos = _dad_video(tmp_path / "positive" / "000001.mp4", 25)
    _dad_video(tmp_path / "positive" / "000003.mp4", 20)
    _dad_video(tmp_path / "negative" / "000002.mp4", 25)
    clips = {c.id: c for c in read_dad(tmp_path)}
    assert clips["pos_000001"].time_of_event_s == pytest.approx(3.6)
    assert clips["pos_000001"].time_of_event_s < probe(pos).duration_s
    assert clips["pos_000003"].time_of_event_s == pytest.approx(4.5)
    assert clips["neg_000002"].target == 0 and clips["neg_000002"].time_of_event_s is None
    assert {c.id: c.time_of_event_s for c in read_dad(tmp_path, fps=30.0) if c.target} == {
        "pos_000001": pytest.approx(3.0), "pos_000003": pytest.approx(3.0)}
    (tmp_path / "positive" / "000004.mp4").write_bytes(b"not a video")
    errors: list[AnnotationError] = []
    kept = read_dad(tmp_path, errors=errors)
    assert len(kept) == 3 and len(errors) == 1
    assert "000004.mp4" in str(errors[0]) and "frame rate cannot be read" in str(errors[0])
    with pytest.raises(AnnotationError, match=r"000004\.mp4"):
        read_dad(tmp_path)


def test_consensus_file(tmp_path):
    p = _csv(tmp_path, "id,annotators,Time-of-alert,Time-of-collision,notes\n12,3,7.2,8.0,x\n13,3,,,y\n")
    clips = read_consensus(p)
    assert clips[0].id == "00012" and clips[0].target == 1 and clips[0].time_of_alert_s == 7.2
    assert clips[1].target == 0


BAD = [
    ("id,time_of_event,target\n1,2.0,1\n", "missing column"),
    ("id,time_of_event,time_of_alert,target\n1,5.0,,1\n1,6.0,,1\n", "duplicate id '00001'"),
    ("id,time_of_event,time_of_alert,target\n1,,,1\n", "positive but has no time_of_event"),
    ("id,time_of_event,time_of_alert,target\n1,5.0,6.0,1\n", "time_of_alert (6.0 s) is after time_of_event (5.0 s)"),
    ("id,time_of_event,time_of_alert,target\n1,-3,,1\n", "time_of_event is negative"),
    ("id,time_of_event,time_of_alert,target\n1,nan,,1\n", "time_of_event is NaN"),
    ("id,time_of_event,time_of_alert,target\n1,soon,,1\n", "'soon' is not a number of seconds"),
    ("id,time_of_event,time_of_alert,target\n../x,5,,1\n", "is not a safe file name"),
    ("id,time_of_event,time_of_alert,target\n/etc/passwd,5,,1\n", "is not a safe file name"),
    ("id,time_of_event,time_of_alert,target\n1,5,,2\n", "target '2' must be 0 or 1"),
    ("", "empty file"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_bad_annotations_name_file_row_and_problem(tmp_path, text, message):
    p = _csv(tmp_path, text)
    with pytest.raises(AnnotationError) as err:
        read_csv(p)
    assert message in str(err.value)
    assert str(p) in str(err.value)
    if "column" not in message and "empty" not in message:
        assert "row " in str(err.value)


def test_bad_rows_can_be_recorded_and_skipped(tmp_path):
    p = _csv(tmp_path, "id,time_of_event,time_of_alert,target\n1,5.0,,1\n../x,5,,1\n3,,,0\n")
    errors: list = []
    clips = read_csv(p, errors=errors)
    assert [c.id for c in clips] == ["00001", "00003"]
    assert len(errors) == 1 and errors[0].row == 3


def test_positive_without_event_can_anchor_at_video_end(tmp_path):
    p = _csv(tmp_path, "id,time_of_event,time_of_alert,target\nbus,,,1\n")
    (clip,) = read_csv(p, missing_event="end")
    assert clip.extra["anchor"] == "video_end"


def test_missing_file():
    with pytest.raises(AnnotationError, match="file not found"):
        read_csv(Path("no/such/file.csv"))


# ----------------------------------------------------------------------------- review fixes

METADATA_HEADER = "file_name,time_of_event,time_of_alert,light_conditions,weather,scene,time_to_accident\n"


def _metadata(tmp_path: Path, rows: str, label: str = "positive") -> Path:
    d = tmp_path / label
    d.mkdir(parents=True, exist_ok=True)
    return _csv(d, METADATA_HEADER + rows, "metadata.csv")


def _dad(root: Path, files: dict[str, list[str]]) -> Path:
    """A DAD folder: positives are real 100-frame 25 fps videos (the reader reads their frame rate),
    negatives and other files empty placeholders (the reader only lists them)."""
    for sub, names in files.items():
        (root / sub).mkdir(parents=True, exist_ok=True)
        for name in names:
            if sub == "positive" and name.endswith((".mp4", ".avi")) and "/" not in name:
                _dad_video(root / sub / name, 25)
            else:
                (root / sub / name).write_bytes(b"")
    return root


@pytest.mark.parametrize("name", ["../x.mp4", "/etc/passwd.mp4", "sub/x.mp4", "..\\x.mp4", "C:x.mp4", ".."])
def test_metadata_file_name_must_stay_inside_the_videos_folder(tmp_path, name):
    p = _metadata(tmp_path, f"00001.mp4,5.0,4.0,Normal,Clear,Urban,1\n{name},5.0,4.0,Normal,Clear,Urban,1\n")
    with pytest.raises(AnnotationError) as err:
        load_annotations(p)
    msg = str(err.value)
    assert str(p) in msg and "row 3" in msg and repr(name) in msg
    assert "not a plain file name inside the videos folder" in msg
    errors: list = []
    (clip,) = load_annotations(p, errors=errors)
    assert clip.video_path == p.parent / "00001.mp4"
    assert [(e.row, e.path) for e in errors] == [(3, p)]


@pytest.mark.parametrize("missing_event", MISSING_EVENT_CHOICES)
def test_metadata_positive_without_event_time(tmp_path, missing_event):
    p = _metadata(tmp_path, "00007.mp4,12.0,10.5,Normal,Clear,Urban,1.5\n00008.mp4,,,Normal,Clear,Urban,\n")
    if missing_event == "error":
        with pytest.raises(AnnotationError) as err:
            load_annotations(p, missing_event=missing_event)
        msg = str(err.value)
        assert str(p) in msg and "row 3" in msg and "'00008' is positive but has no time_of_event" in msg
    else:
        clips = load_annotations(p, missing_event=missing_event)
        assert [(c.id, c.time_of_event_s, c.extra.get("anchor")) for c in clips] == [
            ("00007", 12.0, None),
            ("00008", None, "video_end"),
        ]


def test_metadata_negative_without_event_time_is_fine(tmp_path):
    p = _metadata(tmp_path, "00009.mp4,,,Normal,Clear,Urban,\n", label="negative")
    (clip,) = load_annotations(p)
    assert (clip.target, clip.time_of_event_s, "anchor" in clip.extra) == (0, None, False)


def test_metadata_label_comes_from_the_nearest_folder(tmp_path):
    p = _metadata(tmp_path / "positive", "00009.mp4,,,Normal,Clear,Urban,\n", label="negative")
    assert p.parent.parent.name == "positive"
    (clip,) = read_nexar_metadata(p)
    assert clip.target == 0


def _nexar_case(tmp_path: Path) -> Path:
    return _csv(tmp_path, "id,time_of_event,time_of_alert,target\n1,5.0,,1\n2,5.0,6.0,1\n3,,,0\n")


def _metadata_case(tmp_path: Path) -> Path:
    return _metadata(tmp_path, "1.mp4,5.0,,,,,\n../2.mp4,5.0,,,,,\n3.mp4,6.0,,,,,\n")


def _ccd_case(tmp_path: Path) -> Path:
    p = tmp_path / "Crash-1500.txt"
    p.write_text("00001,[0,0,1],001,yt1,Day,Snowy,No\nthis line is not ccd\n00003,[0,0,0],001,yt3,Day,Normal,No\n")
    return p


def _consensus_case(tmp_path: Path) -> Path:
    return _csv(tmp_path, "id,annotators,Time-of-alert,Time-of-collision\n1,3,4.0,5.0\n2,3,later,5.0\n3,3,,\n")


# (make the file, the reader's name, the problem of the one bad row, its row)
SKIP_CASES = [
    (_nexar_case, "nexar", "time_of_alert (6.0 s) is after time_of_event (5.0 s)", 3),
    (_metadata_case, "nexar-metadata", "file_name '../2.mp4' is not a plain file name", 3),
    (_ccd_case, "ccd", "expected `vidname,[0,0,...,1],...`", 2),
    (_consensus_case, "consensus", "Time-of-alert 'later' is not a number of seconds", 3),
]


@pytest.mark.parametrize(("make", "fmt", "problem", "row"), SKIP_CASES, ids=[c[1] for c in SKIP_CASES])
@pytest.mark.parametrize("given_fmt", ["auto", "explicit"])
def test_every_reader_records_and_skips_bad_rows(tmp_path, make, fmt, problem, row, given_fmt):
    p = make(tmp_path)
    use = "auto" if given_fmt == "auto" else fmt
    errors: list = []
    clips = load_annotations(p, fmt=use, errors=errors)
    assert [c.id for c in clips] == ["00001", "00003"]
    assert len(errors) == 1 and errors[0].row == row and errors[0].path == p
    assert problem in str(errors[0])
    with pytest.raises(AnnotationError) as err:
        load_annotations(p, fmt=use)
    msg = str(err.value)
    assert str(p) in msg and f"row {row}" in msg and problem in msg


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("00002,[0,2,1]", "frame label '2' must be 0 or 1"),
        ("00002,[0,x,1]", "frame label 'x' must be 0 or 1"),
        ("00002,[]", "no frame labels"),
        ("00001,[0,0,1]", "duplicate id '00001' (first at row 1)"),
        ("../00002,[0,0,1]", "is not a safe file name"),
    ],
)
def test_ccd_bad_lines_name_file_line_and_problem(tmp_path, line, problem):
    p = tmp_path / "Crash-1500.txt"
    p.write_text(f"00001,[0,0,1]\n\n{line}\n")
    with pytest.raises(AnnotationError) as err:
        read_ccd(p)
    msg = str(err.value)
    assert str(p) in msg and "row 3" in msg and problem in msg
    errors: list = []
    assert [c.id for c in read_ccd(p, errors=errors)] == ["00001"]
    assert [e.row for e in errors] == [3]


def test_ccd_empty_file(tmp_path):
    p = tmp_path / "Crash-1500.txt"
    p.write_text("\n\n")
    with pytest.raises(AnnotationError, match="empty file") as err:
        read_ccd(p)
    assert str(p) in str(err.value)


@pytest.mark.parametrize("fmt", ["auto", "dad"])
def test_dad_folder_through_load_annotations(tmp_path, fmt):
    root = _dad(tmp_path / "DAD", {"positive": ["000001.mp4", "000002.mp4"], "negative": ["000003.mp4", "notes.txt", ".hidden.mp4"]})
    clips = load_annotations(root, videos_dir=tmp_path / "ignored", fmt=fmt)
    assert [(c.id, c.target, c.time_of_event_s, c.video_path) for c in clips] == [
        ("pos_000001", 1, pytest.approx(3.6), root / "positive" / "000001.mp4"),
        ("pos_000002", 1, pytest.approx(3.6), root / "positive" / "000002.mp4"),
        ("neg_000003", 0, None, root / "negative" / "000003.mp4"),
    ]


def test_dad_folder_with_only_negatives(tmp_path):
    root = _dad(tmp_path, {"negative": ["a.mp4"]})
    assert [(c.id, c.target) for c in load_annotations(root)] == [("neg_a", 0)]


@pytest.mark.parametrize(
    ("files", "bad", "problem"),
    [
        ({"positive": ["000001.avi", "000001.mp4"]}, "positive/000001.mp4", "duplicate id 'pos_000001' (also 000001.avi)"),
        ({"positive": ["000001.mp4", "bad name.mp4"]}, "positive/bad name.mp4", "id 'pos_bad name' is not a safe file name"),
    ],
)
def test_dad_bad_entries_name_the_video(tmp_path, files, bad, problem):
    root = _dad(tmp_path, files)
    with pytest.raises(AnnotationError) as err:
        load_annotations(root)
    msg = str(err.value)
    assert str(root / bad) in msg and problem in msg
    errors: list = []
    assert [c.id for c in load_annotations(root, errors=errors)] == ["pos_000001"]
    assert [e.path for e in errors] == [root / bad]


@pytest.mark.parametrize(
    ("layout", "fmt", "problem"),
    [
        ({"videos": ["000001.mp4"]}, "auto", "not a DAD folder: expected a folder with positive/ and/or negative/"),
        ({"videos": ["000001.mp4"]}, "dad", "not a DAD folder: expected a folder with positive/ and/or negative/"),
        ({"positive": ["readme.txt"]}, "auto", "no videos"),
        ({"positive": ["a.mp4"]}, "nexar", "is a folder, not an annotation file"),
        ({"positive": ["a.mp4"]}, "ccd", "is a folder, not an annotation file"),
    ],
)
def test_folder_that_is_not_a_dad_layout(tmp_path, layout, fmt, problem):
    root = _dad(tmp_path / "data", layout)
    with pytest.raises(AnnotationError) as err:
        load_annotations(root, fmt=fmt)
    assert str(root) in str(err.value) and problem in str(err.value)


def test_dad_format_for_a_file_or_a_missing_folder(tmp_path):
    p = _nexar_case(tmp_path)
    with pytest.raises(AnnotationError, match="not a DAD folder") as err:
        load_annotations(p, fmt="dad")
    assert str(p) in str(err.value)
    with pytest.raises(AnnotationError, match="DAD folder not found"):
        load_annotations(tmp_path / "nowhere", fmt="dad")


@pytest.mark.parametrize(
    ("kwargs", "problem"),
    [
        ({"fmt": "kitti"}, f"unknown annotation format 'kitti'; choose one of {list(FORMATS)}"),
        ({"fmt": "NEXAR"}, "unknown annotation format 'NEXAR'"),
        ({"missing_event": "skip"}, "unknown missing_event 'skip'; choose one of ['error', 'end']"),
    ],
)
def test_bad_options_name_the_file_and_the_choices(tmp_path, kwargs, problem):
    p = _nexar_case(tmp_path)
    with pytest.raises(AnnotationError) as err:
        load_annotations(p, **kwargs)
    assert isinstance(err.value, ValueError)
    assert str(p) in str(err.value) and problem in str(err.value)


@pytest.mark.parametrize("reader", [read_csv, read_nexar_metadata])
def test_readers_refuse_an_unknown_missing_event(tmp_path, reader):
    p = _metadata(tmp_path, "1.mp4,5.0,,,,,\n")
    with pytest.raises(AnnotationError, match=r"unknown missing_event 'later'; choose one of \['error', 'end'\]"):
        reader(p, missing_event="later")
