"""Dataset layouts imported in one step: each layout built in tmp_path with tiny real videos, and
the clips, labels, event times and official split read back; missing videos, unreadable files and
missing folders give messages that name the file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_video_as

from crashcast.data.layouts import (
    LAYOUTS,
    convert_dota_frames,
    detect_layout,
    frames_to_video,
    import_dataset,
)
from crashcast.errors import AnnotationError


def _video(path: Path, fps: int = 10, n: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frames = [np.full((32, 48, 3), (9 * i) % 255, np.uint8) for i in range(n)]
    return write_video_as(path, frames, [i / fps for i in range(n)], rate=fps)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def _messages(items) -> str:
    return "\n".join(str(x) for x in items)


# ---------------------------------------------------------------------------------------------- Nexar (Kaggle)


def _kaggle(root: Path, test_header: str = "id") -> Path:
    _write(root / "train.csv", "id,time_of_event,time_of_alert,target\n1,1.5,1.0,1\n2,,,0\n5,1.2,,1\n")
    _video(root / "train" / "00001.mp4")
    _video(root / "train" / "00002.mp4")
    _video(root / "train" / "00009.mp4")  # no row in train.csv
    if test_header == "id":
        _write(root / "test.csv", "id\n3\n")
    else:
        _write(root / "test.csv", f"{test_header}\n3,1.1,0.5,1\n")
    _video(root / "test" / "00003.mp4")
    return root


def test_nexar_kaggle_layout(tmp_path):
    root = _kaggle(tmp_path / "nexar")
    assert detect_layout(root) == "nexar-kaggle"
    errors: list[AnnotationError] = []
    ds = import_dataset(root, errors=errors)
    clips = {c.id: c for c in ds.clips}
    assert ds.layout == "nexar-kaggle" and ds.root == root
    assert set(clips) == {"00001", "00002"}
    assert clips["00001"].target == 1 and clips["00001"].time_of_event_s == 1.5 and clips["00001"].time_of_alert_s == 1.0
    assert clips["00001"].video_path == root / "train" / "00001.mp4"
    assert clips["00002"].target == 0 and clips["00002"].time_of_event_s is None
    assert ds.split == {"00001": "train", "00002": "train"}
    # row 4 (id 5) has no video: recorded, named, skipped; never made up
    assert len(ds.problems) == 1 and errors == list(ds.problems)
    assert "00005.mp4" in str(ds.problems[0]) and "video not found" in str(ds.problems[0])
    notes = _messages(ds.notes)
    assert "test.csv" in notes and "no labels" in notes and "1 test video" in notes
    assert "00009.mp4" in notes
    with pytest.raises(AnnotationError, match=r"00005\.mp4.*video not found"):
        import_dataset(root)


def test_nexar_kaggle_labelled_test_csv_is_the_test_split(tmp_path):
    root = _kaggle(tmp_path, test_header="id,time_of_event,time_of_alert,target")
    ds = import_dataset(root, errors=[])
    assert ds.split == {"00001": "train", "00002": "train", "00003": "test"}
    assert [c.id for c in ds.clips_in("test")] == ["00003"]
    assert next(c for c in ds.clips if c.id == "00003").time_of_event_s == 1.1


def test_nexar_kaggle_without_its_videos_folder(tmp_path):
    _write(tmp_path / "train.csv", "id,time_of_event,time_of_alert,target\n1,1.5,1.0,1\n")
    with pytest.raises(AnnotationError, match=r"train: folder not found.*train/<id>\.mp4"):
        import_dataset(tmp_path, errors=[])


def test_nexar_kaggle_csv_that_is_not_nexar(tmp_path):
    _write(tmp_path / "train.csv", "name,label\na,1\n")
    (tmp_path / "train").mkdir()
    with pytest.raises(AnnotationError, match=r"train\.csv: missing column"):
        import_dataset(tmp_path, errors=[])


# ---------------------------------------------------------------------------------------------- Nexar (Hugging Face)

META = "file_name,time_of_event,time_of_alert,light_conditions,weather,scene,time_to_accident\n"


def test_nexar_hugging_face_layout(tmp_path):
    root = tmp_path / "nexar_collision_prediction"
    _write(root / "train" / "positive" / "metadata.csv", META + "00000.mp4,1.6,1.1,Normal,Clear,Urban,0.5\n"
                                                              "00004.mp4,1.2,0.9,Normal,Clear,Urban,0.5\n")
    _video(root / "train" / "positive" / "00000.mp4")  # 00004.mp4 is missing
    _write(root / "train" / "negative" / "metadata.csv", META + "00001.mp4,,,Normal,Rain,Highway,\n")
    _video(root / "train" / "negative" / "00001.mp4")
    _write(root / "test-public" / "positive" / "metadata.csv", META + "00007.mp4,1.0,0.4,Dark,Clear,Rural,1.0\n")
    _video(root / "test-public" / "positive" / "00007.mp4")
    _video(root / "test-private" / "negative" / "00008.mp4")  # no metadata.csv next to it
    assert detect_layout(root) == "nexar-hf"
    ds = import_dataset(root, errors=[])
    clips = {c.id: c for c in ds.clips}
    assert set(clips) == {"00000", "00001", "00007"}
    assert (clips["00000"].target, clips["00000"].time_of_event_s, clips["00000"].time_of_alert_s) == (1, 1.6, 1.1)
    assert clips["00001"].target == 0 and clips["00001"].time_of_event_s is None
    assert clips["00000"].extra["weather"] == "Clear"
    assert ds.split == {"00000": "train", "00001": "train", "00007": "test"}
    problems = _messages(ds.problems)
    assert "00004.mp4" in problems and "video not found" in problems
    assert "test-private/negative/metadata.csv: file not found" in problems and "1 video(s) are not imported" in problems
    assert len(ds.problems) == 2


# ---------------------------------------------------------------------------------------------- DAD


def test_dad_layout_has_its_official_split_and_the_event_at_frame_90(tmp_path):
    root = tmp_path / "DAD"
    _video(root / "videos" / "training" / "positive" / "000001.mp4", fps=25, n=100)
    _video(root / "videos" / "training" / "negative" / "000001.mp4", fps=25, n=10)
    _video(root / "videos" / "testing" / "positive" / "000456.mp4", fps=25, n=100)
    _video(root / "videos" / "testing" / "negative" / "000830.mp4", fps=25, n=10)
    (root / "videos" / "testing" / "negative" / "000831.mp4").write_bytes(b"not a video")
    (root / "annotation").mkdir()
    assert detect_layout(root) == "dad"
    ds = import_dataset(root, errors=[])
    clips = {c.id: c for c in ds.clips}
    assert set(clips) == {"pos_000001", "neg_000001", "pos_000456", "neg_000830"}
    assert clips["pos_000001"].time_of_event_s == pytest.approx(3.6)  # frame 90 at the file's 25 fps
    assert clips["pos_000456"].target == 1 and clips["neg_000830"].target == 0
    assert ds.split == {"pos_000001": "train", "neg_000001": "train", "pos_000456": "test", "neg_000830": "test"}
    assert len(ds.problems) == 1
    assert "000831.mp4" in str(ds.problems[0]) and "unreadable video" in str(ds.problems[0])
    with pytest.raises(AnnotationError, match=r"000831\.mp4: unreadable video"):
        import_dataset(root)
    # without the check the unreadable negative is imported as listed (decoding will name it later)
    assert "neg_000831" in {c.id for c in import_dataset(root, check_videos=False).clips}


def test_dad_without_its_testing_folder_says_so(tmp_path):
    _video(tmp_path / "videos" / "training" / "positive" / "000001.mp4", fps=25, n=100)
    ds = import_dataset(tmp_path, errors=[])
    assert ds.split == {"pos_000001": "train"}
    assert "testing: not found" in _messages(ds.notes)


def test_dad_split_folder_without_positive_or_negative(tmp_path):
    _video(tmp_path / "videos" / "training" / "positive" / "000001.mp4", fps=25, n=100)
    (tmp_path / "videos" / "testing").mkdir()
    with pytest.raises(AnnotationError, match=r"testing: not a DAD folder"):
        import_dataset(tmp_path, errors=[])


# ---------------------------------------------------------------------------------------------- CCD


def _ccd(root: Path, split_lists: bool = True) -> Path:
    accident = ",".join(["0"] * 31 + ["1"] * 19)
    _write(root / "videos" / "Crash-1500.txt", f"000001,[{accident}],001,yt1,Day,Snowy,No\n"
                                                f"000002,[{accident}],002,yt2,Night,Normal,Yes\n")
    _video(root / "videos" / "Crash-1500" / "000001.mp4", fps=10, n=50)  # 000002.mp4 is missing
    _video(root / "videos" / "Normal" / "000001.mp4", fps=10, n=10)
    _video(root / "videos" / "Normal" / "000002.mp4", fps=10, n=10)
    if split_lists:
        _write(root / "vgg16_features" / "train.txt", "positive/000001.npz 1\nnegative/000001.npz 0\n")
        _write(root / "vgg16_features" / "test.txt", "negative/000002.npz 0\npositive/000002.npz 1\n")
    return root


def test_ccd_layout_with_its_split_lists(tmp_path):
    root = _ccd(tmp_path / "CarCrash")
    assert detect_layout(root) == "ccd"
    ds = import_dataset(root, errors=[])
    clips = {c.id: c for c in ds.clips}
    assert set(clips) == {"000001", "normal_000001", "normal_000002"}
    assert clips["000001"].target == 1 and clips["000001"].time_of_event_s == pytest.approx(3.1)
    assert clips["000001"].extra["weather"] == "Snowy"
    assert clips["normal_000001"].target == 0 and clips["normal_000001"].time_of_event_s is None
    assert ds.split == {"000001": "train", "normal_000001": "train", "normal_000002": "test"}
    assert len(ds.problems) == 1 and "000002.mp4" in str(ds.problems[0]) and "video not found" in str(ds.problems[0])


def test_ccd_without_split_lists_has_no_split(tmp_path):
    ds = import_dataset(_ccd(tmp_path, split_lists=False), errors=[])
    assert ds.split is None
    assert "official split is not known" in _messages(ds.notes)
    with pytest.raises(AnnotationError, match="has no official split"):
        ds.clips_in("train")


def test_ccd_found_inside_the_folder_it_unpacked_into(tmp_path):
    _ccd(tmp_path / "CarCrash")
    assert detect_layout(tmp_path) == "ccd"
    assert import_dataset(tmp_path, errors=[]).root == tmp_path / "CarCrash"


def test_ccd_without_its_crash_videos(tmp_path):
    _write(tmp_path / "videos" / "Crash-1500.txt", "000001,[0,1],001,yt1,Day,Snowy,No\n")
    with pytest.raises(AnnotationError, match=r"Crash-1500: folder not found"):
        import_dataset(tmp_path, errors=[])


def test_ccd_line_without_an_accident_frame_is_a_problem_not_a_negative(tmp_path):
    root = _ccd(tmp_path)
    text = (root / "videos" / "Crash-1500.txt").read_text()
    _write(root / "videos" / "Crash-1500.txt", text + "000003,[0,0,0],003,yt3,Day,Normal,No\n")
    _video(root / "videos" / "Crash-1500" / "000003.mp4", fps=10, n=10)
    ds = import_dataset(root, errors=[])
    assert "000003" not in {c.id for c in ds.clips}
    assert "clip '000003': no frame labelled 1" in _messages(ds.problems)


# ---------------------------------------------------------------------------------------------- DoTA


def _dota(root: Path) -> Path:
    import cv2

    meta = {
        "clipA_000100": {"video_start": 100, "video_end": 129, "anomaly_start": 12, "anomaly_end": 20,
                         "anomaly_class": "ego: turning", "num_frames": 30, "subset": "train"},
        "clipB_000200": {"video_start": 200, "video_end": 229, "anomaly_start": 25, "anomaly_end": 20,
                         "anomaly_class": "other: lateral", "num_frames": 30, "subset": "train"},
    }
    _write(root / "dataset" / "metadata_train.json", json.dumps(meta))
    _write(root / "dataset" / "metadata_val.json", json.dumps({
        "clipC_000300": {"anomaly_start": 5, "anomaly_end": 9, "anomaly_class": "ego: oncoming", "num_frames": 12}}))
    for vid, n in (("clipA_000100", 30), ("clipB_000200", 30), ("clipC_000300", 12)):
        images = root / "frames" / vid / "images"
        images.mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(images / f"{i:06d}.jpg"), np.full((32, 48, 3), (8 * i) % 255, np.uint8))
    return root


def test_dota_frames_only_says_what_to_convert_then_imports(tmp_path):
    from crashcast.data.video import probe

    root = _dota(tmp_path / "DoTA")
    assert detect_layout(root) == "dota"
    with pytest.raises(AnnotationError, match=r"frames/<clip>/images.*convert_dota_frames.*ffmpeg -framerate 10"):
        import_dataset(root, errors=[])
    written = convert_dota_frames(root)
    assert sorted(p.name for p in written) == ["clipA_000100.mp4", "clipB_000200.mp4", "clipC_000300.mp4"]
    info = probe(root / "videos" / "clipA_000100.mp4")
    assert info.fps == pytest.approx(10.0) and info.n_frames == 30 and info.duration_s == pytest.approx(3.0, abs=0.11)
    assert convert_dota_frames(root) == []  # done once
    ds = import_dataset(root, errors=[])
    clips = {c.id: c for c in ds.clips}
    assert set(clips) == {"clipA_000100", "clipC_000300"}
    assert clips["clipA_000100"].target == 1 and clips["clipA_000100"].time_of_event_s == pytest.approx(1.2)
    assert clips["clipA_000100"].extra["anomaly_class"] == "ego: turning"
    assert clips["clipC_000300"].time_of_event_s == pytest.approx(0.5)
    assert ds.split == {"clipA_000100": "train", "clipC_000300": "test"}
    assert len(ds.problems) == 1
    assert "metadata_train.json" in str(ds.problems[0]) and "anomaly_end (20) is before anomaly_start (25)" in str(
        ds.problems[0])


def test_frames_to_video_names_an_unreadable_frame(tmp_path):
    import cv2

    images = tmp_path / "images"
    images.mkdir()
    cv2.imwrite(str(images / "000000.jpg"), np.zeros((32, 48, 3), np.uint8))
    (images / "000001.jpg").write_bytes(b"not an image")
    with pytest.raises(AnnotationError, match=r"000001\.jpg: not a readable image"):
        frames_to_video(images, tmp_path / "out.mp4")
    assert not (tmp_path / "out.mp4").exists()


def test_dota_metadata_that_is_not_json(tmp_path):
    _write(tmp_path / "dataset" / "metadata_train.json", "{not json")
    with pytest.raises(AnnotationError, match=r"metadata_train\.json: not valid JSON"):
        import_dataset(tmp_path, errors=[])


# ---------------------------------------------------------------------------------------------- no layout


def test_a_folder_of_no_known_layout_lists_what_each_expects(tmp_path):
    (tmp_path / "stuff").mkdir()
    with pytest.raises(AnnotationError, match="no known dataset layout found") as caught:
        import_dataset(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message
    for name in LAYOUTS:
        assert f"{name}:" in message
    assert "train.csv" in message and "videos/training" in message and "Crash-1500.txt" in message
    assert "metadata_train.json" in message


def test_missing_root_a_file_and_several_datasets(tmp_path):
    with pytest.raises(AnnotationError, match="dataset folder not found"):
        detect_layout(tmp_path / "absent")
    _write(tmp_path / "file.txt", "x")
    with pytest.raises(AnnotationError, match="is a file"):
        detect_layout(tmp_path / "file.txt")
    _ccd(tmp_path / "CarCrash", split_lists=False)
    _write(tmp_path / "DoTA" / "dataset" / "metadata_val.json", "{}")
    with pytest.raises(AnnotationError, match=r"several datasets: CarCrash/ \(ccd\), DoTA/ \(dota\)"):
        detect_layout(tmp_path)


def test_ccd_clip_in_both_split_lists_is_a_problem(tmp_path):
    root = _ccd(tmp_path)
    _write(root / "vgg16_features" / "test.txt", "negative/000002.npz 0\npositive/000001.npz 1\n")
    ds = import_dataset(root, errors=[])
    assert "test.txt, row 2: clip '000001' is in both train.txt and test.txt" in _messages(ds.problems)
    assert ds.split["000001"] == "train"


# ---------------------------------------------------------------------------------------------- real clips


def test_real_dad_and_ccd_clips_in_their_official_layouts(tmp_path, real_dir):
    """The real DAD and CCD clips of ../shared/data/real, linked (not copied) into each dataset's own
    layout: DAD's 25 fps files put frame 90 at 3.6 s, inside their 4.0 s; CCD's frame 31 is 3.1 s."""
    from crashcast.data.video import probe

    dad = tmp_path / "DAD" / "videos"
    links = {dad / "training" / "positive" / "000002.mp4": "dad_tr_000002.mp4",
             dad / "training" / "negative" / "000001.mp4": "dad_tr_neg_000001.mp4",
             dad / "testing" / "positive" / "000456.mp4": "dad_te_000456.mp4",
             tmp_path / "CCD" / "videos" / "Crash-1500" / "000007.mp4": "ccd_000007.mp4"}
    for link, name in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(real_dir / name)
    ds = import_dataset(tmp_path / "DAD")
    clips = {c.id: c for c in ds.clips}
    assert ds.split == {"pos_000002": "train", "neg_000001": "train", "pos_000456": "test"}
    assert clips["pos_000456"].time_of_event_s == pytest.approx(3.6)
    assert clips["pos_000456"].time_of_event_s < probe(clips["pos_000456"].video_path).duration_s
    accident = ",".join(["0"] * 31 + ["1"] * 19)
    _write(tmp_path / "CCD" / "videos" / "Crash-1500.txt", f"000007,[{accident}],001,yt,Day,Snowy,No\n")
    ccd = import_dataset(tmp_path / "CCD")
    assert [(c.id, c.target, c.time_of_event_s) for c in ccd.clips] == [("000007", 1, pytest.approx(3.1))]
    assert ccd.split is None and "Normal: not found" in _messages(ccd.notes)
