"""Every output a command writes is unique, inside the folder the user named, and never replaces data
crashcast did not write (issue 23, item 2): predict's per-video folders, synth's --out, the demo's clips."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest
from tests.conftest import cli_exit_code

from crashcast import api
from crashcast.data.annotations import read_csv
from crashcast.errors import CrashcastError
from crashcast.prediction import output_names

# ----------------------------------------------------------------------------- predict: folder names


def test_output_names_are_unique_safe_and_keep_a_unique_stem():
    assert output_names([Path("x/drive.mp4")]) == ["drive"]  # one video: its stem, as before
    assert output_names([Path("a.mp4"), Path("b.avi")]) == ["a", "b"]
    assert output_names([Path("clip.mp4"), Path("clip.avi"), Path("other.mp4")]) == ["clip.mp4", "clip.avi", "other"]
    a, b = output_names([Path("a/clip.mp4"), Path("b/clip.mp4")])
    assert a != b and a.startswith("clip.mp4-") and b.startswith("clip.mp4-")
    assert output_names([Path("a/clip.mp4"), Path("b/clip.mp4")]) == [a, b]  # the same inputs, the same names
    assert output_names([Path("b/clip.mp4"), Path("a/clip.mp4")]) == [b, a]  # a name follows its video, not its rank
    same = output_names([Path("clip.mp4"), Path("clip.mp4")])  # one video given twice
    assert same[0].startswith("clip.mp4-") and same[1] == same[0] + "-2"
    upper, lower = output_names([Path("Clip.mp4"), Path("clip.mp4")])
    assert upper.casefold() != lower.casefold()  # distinct on case-insensitive file systems too
    for unsafe in ("...mp4", "..mp4", ".mp4.mp4", "a\\..\\b.mp4", "errors.jsonl.mp4"):
        (name,) = output_names([Path(unsafe)])
        assert name not in ("", ".", "..", "errors.jsonl") and "/" not in name and "\\" not in name, (unsafe, name)
    assert output_names([Path("...mp4")]) == ["video"]
    long = "é" * 125  # 250 bytes (254 with .mp4): a file name at the limit, and two of them in two folders
    assert output_names([Path(f"{long}.mp4")]) == [long]
    for name in output_names([Path(f"a/{long}.mp4"), Path(f"b/{long}.mp4"), Path(f"b/{long}.mp4")]):
        assert len(name.encode()) <= 255 and name.startswith("é" * 100)
    names = output_names([Path("...mp4"), Path("video.mp4"), Path("video.mkv")])
    assert len({n.casefold() for n in names}) == 3


def _videos(tmp: Path, synth: Path) -> tuple[list[Path], list[Path]]:
    """Four different synthetic videos under colliding or unsafe names: a/clip.mp4, b/clip.mp4, clip.avi
    (an MP4 under another extension) and `...mp4` (stem `..`); and the source of each."""
    sources = [c.video_path for c in read_csv(synth / "annotations.csv")[:4]]
    names = [tmp / "a" / "clip.mp4", tmp / "b" / "clip.mp4", tmp / "a" / "clip.avi", tmp / "a" / "...mp4"]
    for src, dst in zip(sources, names, strict=True):
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dst)
    return names, sources


def _check_outputs(out: Path, videos: list[Path], names: list[str]) -> None:
    """Each video's outputs are in its own folder inside `out`, naming that video (none overwritten)."""
    assert len(set(names)) == len(videos)
    for video, name in zip(videos, names, strict=True):
        folder = out / name
        assert folder.resolve().parent == out.resolve(), name
        doc = json.loads((folder / "timeline.json").read_text())
        assert Path(doc["video"]).resolve() == video.resolve(), (name, doc["video"])
        assert len(pd.read_csv(folder / "timeline.csv")) == len(doc["timeline"]) > 0
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    timelines = [(out / n / "timeline.csv").read_bytes() for n in names]
    assert len(set(timelines)) == len(timelines)  # four different videos, four different timelines


def test_cli_predict_gives_colliding_and_unsafe_names_their_own_folder_inside_out(synth_small, tmp_path, capsys):
    videos, _ = _videos(tmp_path / "in", synth_small)
    out = tmp_path / "work" / "out"
    before = sorted(p.name for p in (tmp_path / "in").iterdir())
    code = cli_exit_code(["predict", *videos, "--out", out, "--stride", "1.0", "--backend", "classic"])
    assert code == 0
    names = output_names(videos)
    _check_outputs(out, videos, names)
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == ["out"]  # nothing beside --out
    assert sorted(p.name for p in (tmp_path / "in").iterdir()) == before
    printed = capsys.readouterr().out
    for name in names:
        assert f"-> {out / name}" in printed, name


def test_cli_predict_records_a_failed_videos_unique_name(synth_small, tmp_path):
    good = tmp_path / "a" / "clip.mp4"
    good.parent.mkdir()
    shutil.copy(read_csv(synth_small / "annotations.csv")[0].video_path, good)
    broken = tmp_path / "b" / "clip.mp4"
    broken.parent.mkdir()
    broken.write_text("not a video")
    out = tmp_path / "out"
    assert cli_exit_code(["predict", good, broken, "--out", out, "--stride", "1.0", "--backend", "classic"]) == 1
    good_name, broken_name = output_names([good, broken])
    assert (out / good_name / "timeline.csv").exists() and not (out / broken_name).exists()
    (error,) = [json.loads(line) for line in (out / "errors.jsonl").read_text().splitlines()]
    assert broken_name in json.dumps(error) and good_name not in json.dumps(error)


def test_api_predict_many_names_are_the_same_in_process_and_in_workers(synth_small, tmp_path):
    videos, _ = _videos(tmp_path / "in", synth_small)
    one, two = tmp_path / "one", tmp_path / "two"
    first = list(api.predict_many(videos, "physics", "classic", one, stride_s=1.0))
    second = list(api.predict_many(videos, "physics", "classic", two, stride_s=1.0, workers=2))
    names = [o.name for o in first]
    assert names == [o.name for o in second] == output_names(videos)
    assert all(o.error is None and o.files["csv"].parent.name == o.name for o in first + second)
    _check_outputs(one, videos, names)
    _check_outputs(two, videos, names)
    for name in names:
        assert (one / name / "timeline.csv").read_bytes() == (two / name / "timeline.csv").read_bytes()


def test_api_predict_many_keeps_a_single_videos_stem(synth_small, tmp_path):
    video = read_csv(synth_small / "annotations.csv")[0].video_path
    (o,) = api.predict_many([video], "physics", "classic", tmp_path / "out", stride_s=1.0)
    assert o.name == video.stem and (tmp_path / "out" / video.stem / "timeline.csv").exists()


# ----------------------------------------------------------------------------- synth


@pytest.fixture
def users_folder(tmp_path) -> tuple[Path, bytes]:
    folder = tmp_path / "mine"
    folder.mkdir()
    data = b"id,time_of_event,time_of_alert,target\nmy_drive,4.2,3.1,1\n"
    (folder / "annotations.csv").write_bytes(data)
    (folder / "my_drive.mp4").write_bytes(b"the user's video")
    return folder, data


def test_cli_synth_refuses_a_users_annotations_csv(users_folder, capsys):
    folder, data = users_folder
    assert cli_exit_code(["synth", "--n", "2", "--out", folder]) == 2
    err = capsys.readouterr().err
    assert str(folder / "annotations.csv") in err.replace("\n", "") and "did not write" in err
    assert (folder / "annotations.csv").read_bytes() == data
    assert sorted(p.name for p in folder.iterdir()) == ["annotations.csv", "my_drive.mp4"]


def test_api_synth_refuses_a_users_annotations_csv(users_folder):
    folder, data = users_folder
    # the user's file under crashcast's header and ids, without crashcast's truth files, is the user's still
    (folder / "annotations.csv").write_bytes(b"id,time_of_event,time_of_alert,target\nsynth0000_0000,4.2,3.1,1\n")
    data = (folder / "annotations.csv").read_bytes()
    with pytest.raises(CrashcastError, match=r"annotations\.csv"):
        api.synth(2, folder, seed=0)
    assert (folder / "annotations.csv").read_bytes() == data
    assert not (folder / "synth0000_0000.mp4").exists() and not (folder / "truth").exists()


def test_synth_is_idempotent_and_replaces_only_its_own_clips_of_another_seed(tmp_path, capsys):
    out = tmp_path / "clips"
    api.synth(2, out, seed=3)
    first = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}
    (out / "notes.txt").write_text("the user's note")
    assert cli_exit_code(["synth", "--n", "2", "--out", out, "--seed", "3"]) == 0  # the same arguments: the same files
    again = {p.relative_to(out): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file() and p.name != "notes.txt"}
    assert again.keys() == first.keys()
    for name in ("annotations.csv", "truth/synth0003_0000.json", "truth/synth0003_0001.json"):
        assert again[Path(name)] == first[Path(name)], name
    # another seed through the CLI, another count through the API: only the asked-for clips remain
    assert cli_exit_code(["synth", "--n", "2", "--out", out, "--seed", "4"]) == 0
    assert [c.id for c in read_csv(out / "annotations.csv")] == ["synth0004_0000", "synth0004_0001"]
    api.synth(3, out, seed=5)
    assert [c.id for c in read_csv(out / "annotations.csv")] == ["synth0005_0000", "synth0005_0001", "synth0005_0002"]
    assert sorted(p.name for p in out.glob("*.mp4")) == ["synth0005_0000.mp4", "synth0005_0001.mp4", "synth0005_0002.mp4"]
    assert sorted(p.name for p in (out / "truth").iterdir()) == [f"synth0005_000{i}.json" for i in range(3)]
    assert (out / "notes.txt").read_text() == "the user's note"
    for c in read_csv(out / "annotations.csv"):
        assert json.loads((out / "truth" / f"{c.id}.json").read_text())["clip_id"] == c.id


# ----------------------------------------------------------------------------- demo


def test_api_synthetic_clips_reuses_only_the_same_seed_and_count(tmp_path):
    data = tmp_path / "data"
    csv_path, reused = api.synthetic_clips(2, data, seed=0)
    assert not reused and [c.id for c in read_csv(csv_path)] == ["synth0000_0000", "synth0000_0001"]
    stamp = (data / "synth0000_0000.mp4").stat().st_mtime_ns
    assert api.synthetic_clips(2, data, seed=0) == (csv_path, True)
    assert (data / "synth0000_0000.mp4").stat().st_mtime_ns == stamp  # reused, not rendered again
    csv_path, reused = api.synthetic_clips(2, data, seed=1)
    assert not reused and [c.id for c in read_csv(csv_path)] == ["synth0001_0000", "synth0001_0001"]
    assert not list(data.glob("synth0000_*"))
    csv_path, reused = api.synthetic_clips(3, data, seed=1)  # the same seed, another count: rendered
    assert not reused and len(read_csv(csv_path)) == 3


def test_cli_demo_uses_the_clips_of_the_seed_it_is_given(tmp_path, capsys):
    out = tmp_path / "demo"
    api.synth(4, out / "data", seed=0)  # an earlier demo's clips, seed 0, with the same count
    assert cli_exit_code(["demo", "--n", "4", "--seed", "1", "--out", out, "--workers", "2"]) == 0
    assert "already in" not in capsys.readouterr().out
    want = [f"synth0001_000{i}" for i in range(4)]
    assert [c.id for c in read_csv(out / "data" / "annotations.csv")] == want
    assert sorted(p.stem for p in (out / "data").glob("*.mp4")) == want
    features = pd.read_parquet(out / "run" / "features.parquet")
    assert sorted(features.clip_id.unique()) == want  # the numbers are seed 1's
    assert sorted(p.name for p in (out / "run" / "clips").iterdir()) == want
