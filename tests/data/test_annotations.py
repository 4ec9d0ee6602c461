from __future__ import annotations

from pathlib import Path

import pytest

from crashcast.data.annotations import (
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


def test_dad_positives_have_the_accident_at_frame_90(tmp_path):
    for sub, name in (("positive", "000001.mp4"), ("negative", "000002.mp4")):
        (tmp_path / sub).mkdir()
        (tmp_path / sub / name).write_bytes(b"x")
    clips = read_dad(tmp_path)
    pos = next(c for c in clips if c.target == 1)
    assert pos.time_of_event_s == pytest.approx(4.5)


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
