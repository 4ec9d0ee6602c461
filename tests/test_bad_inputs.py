"""Bad input and faults against every command, as a hostile new user would try them.

Each case runs the real `crashcast` entry point (`crashcast.cli.main`, in process) and asserts the exit
code, that stderr names the file or option and the problem in one clear message (no traceback), and
that finished outputs are intact (every file of a finished run, and every input, byte for byte).

Cases that already passed before the hardening issue (kept passing here): a missing, empty or
random-bytes annotation file; a bad annotation row (recorded and skipped); an id with path parts;
a YAML config with a Python tag; a missing, empty or random-bytes video (recorded, the other clips go
on); a truncated window_meta.json (the rerun redoes that clip); a changed config without --new-run
(refused). kill -9 of an extract (one and two workers) is tests/test_kill.py.

Cases the hardening issue found failing (its numbers): (1) a truncated MP4 whose event lies past the
damage; (2) a rotated phone clip (tests/data/test_video*.py test the decoder; here the extract's
keyframes come out upright); (3) predict on a clip shorter than one stride, in a batch; (5) --new-run;
(6) a report asked to embed /etc/passwd or ../../etc/hostname; (7) unwritable output folders for
extract, predict, evaluate, synth; (8) --format json / csv print only the document on stdout;
(9) invalid choices (--missing-event, --format, --calibration, --annotation-format); (10) a one-frame
clip, malformed --set values, a corrupt window_meta.json in report, a corrupt features.parquet in evaluate.
Plus what a code review found: metadata.csv file names with path parts, a DAD folder from the CLI,
unknown backends and models, features.write_overlays false resuming.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from crashcast.cli import main
from crashcast.config import load_config
from crashcast.data.annotations import read_csv
from crashcast.data.video import VideoWriter, decode
from crashcast.extract import extract_run

HEADER = "id,time_of_event,time_of_alert,target\n"


@dataclass
class Result:
    code: int
    out: str  # stdout as printed
    err: str  # stderr with whitespace and box-drawing folded (typer frames usage errors in a box)


def _fold(text: str) -> str:
    return " ".join(re.sub(r"[│╭╮╰╯─]", " ", text).split())


@pytest.fixture
def cli(capsys) -> Callable[..., Result]:
    def run(*args: object) -> Result:
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main([str(a) for a in args])
        out, err = capsys.readouterr()
        code = e.value.code if isinstance(e.value.code, int) else (0 if e.value.code is None else 1)
        assert "Traceback" not in err, err
        return Result(code, out, _fold(err))

    return run


def snapshot(*roots: Path) -> dict[str, str]:
    """sha256 of every file under the roots (the 'finished outputs' a case must leave intact)."""
    out = {}
    for root in roots:
        for p in sorted(root.rglob("*")) if root.is_dir() else [root]:
            if p.is_file():
                out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


# ----------------------------------------------------------------------------- shared inputs


@pytest.fixture(scope="module")
def clips(synth_small):
    return read_csv(synth_small / "annotations.csv")


@pytest.fixture(scope="module")
def short_videos(clips, tmp_path_factory):
    """A 2 s clip and a 0.3 s clip cut from a synthetic positive (fast to predict on)."""
    folder = tmp_path_factory.mktemp("short")
    src = next(c for c in clips if c.target)
    frames = decode(src.video_path, 0.0, src.time_of_event_s, long_side=None)
    out = {}
    for name, seconds in (("two_s", 2.0), ("short", 0.3)):
        path = folder / f"{name}.mp4"
        with VideoWriter(path, 30, frames.size) as w:
            for img in frames.frames[-round(seconds * 30):]:
                w.write(img)
        out[name] = path
    return out


@pytest.fixture(scope="module")
def finished_run(clips, tmp_path_factory):
    """A finished, evaluated run of 8 synthetic clips: extract + evaluate (cross-validated) + report inputs."""
    from crashcast.evaluation.experiments import run_experiments

    run = tmp_path_factory.mktemp("finished") / "run"
    cfg = load_config("classic")
    summary = extract_run(clips, run, cfg, workers=2, progress=False)
    assert summary.failed == 0
    run_experiments(run, ["ttc", "physics"], cfg, "platt", folds=4)
    return run


@dataclass
class Ctx:
    tmp: Path
    clips: list
    synth: Path
    short: dict
    _finished: Path
    _real: Path | None

    @property
    def run(self) -> Path:
        """A private copy of the finished run (made on first use)."""
        dst = self.tmp / "run"
        if not dst.exists():
            shutil.copytree(self._finished, dst)
        return dst

    @property
    def real(self) -> Path:
        if self._real is None:
            pytest.skip("../shared/data/real is absent")
        return self._real

    def csv(self, rows: str, name: str = "a.csv") -> Path:
        path = self.tmp / name
        path.write_text(HEADER + rows)
        return path

    def good_row(self) -> str:
        c = self.clips[0]
        shutil.copy(c.video_path, self.tmp / c.video_path.name)
        return f"{c.id},{c.time_of_event_s or ''},{c.time_of_alert_s or ''},{c.target}\n"

    def with_good(self, bad_rows: str) -> list[str]:
        """extract args for a CSV with one good clip and the bad rows, run folder tmp/out."""
        return ["extract", "--annotations", self.csv(self.good_row() + bad_rows), "--out", self.tmp / "out"]

    def good_extracted(self) -> None:
        metas = list((self.tmp / "out" / "clips" / self.clips[0].id).glob("*/window_meta.json"))
        assert len(metas) == 3, "the good clip was not extracted beside the bad input"

    def errors(self) -> list[dict]:
        return [json.loads(x) for x in (self.tmp / "out" / "errors.jsonl").read_text().splitlines()]


@pytest.fixture
def ctx(tmp_path, clips, synth_small, short_videos, finished_run, request) -> Ctx:
    real = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "real"
    return Ctx(tmp_path, clips, synth_small, short_videos, finished_run, real if (real / "annotations.csv").exists() else None)


# ----------------------------------------------------------------------------- cases


@dataclass
class Case:
    name: str
    make: Callable[[Ctx], list]  # prepares inputs under ctx.tmp, returns the CLI arguments
    code: int
    says: tuple[str, ...]  # fragments stderr must hold ({tmp} is the case's folder)
    check: Callable[[Ctx, Result], None] | None = None
    intact: Callable[[Ctx], list[Path]] = lambda c: [c.synth]


def _truncated(c: Ctx) -> list:
    data = (c.real / "udacity_solid_white_right.mp4").read_bytes()
    (c.tmp / "cut.mp4").write_bytes(data[: len(data) // 2])  # the header still says 8.8 s
    return c.with_good("cut,8.0,,1\n")


def _truncated_check(c: Ctx, r: Result) -> None:
    c.good_extracted()
    assert not (c.tmp / "out" / "clips" / "cut").exists() or not list((c.tmp / "out" / "clips" / "cut").rglob("window_meta.json"))
    (e,) = [e for e in c.errors() if e["clip_id"] == "cut"]
    assert "truncated or damaged" in e["error"] and "cut.mp4" in e["error"]


def _one_frame(c: Ctx) -> list:
    from tests.conftest import write_video

    write_video(c.tmp / "one.mp4", [np.random.default_rng(0).integers(0, 255, (360, 640, 3), np.uint8)], [0.0])
    return c.with_good("one,,,0\n")


def _rotated(c: Ctx) -> list:
    """A phone clip stored sideways (portrait) whose display matrix turns it upright (landscape)."""
    from tests.conftest import write_video_as

    src = next(x for x in c.clips if x.target)
    frames = decode(src.video_path, 0.0, src.time_of_event_s, long_side=None)
    stored = [np.ascontiguousarray(np.rot90(f)) for f in frames.frames]  # turned 90 degrees counter-clockwise
    write_video_as(c.tmp / "phone.mp4", stored, list(frames.times_s), display_rotation_ccw=-90)
    return ["extract", "--annotations", c.csv(f"phone,{src.time_of_event_s},,1\n"), "--out", c.tmp / "out"]


def _upright(c: Ctx, r: Result) -> None:
    import cv2

    kf = cv2.imread(str(c.tmp / "out" / "clips" / "phone" / "max" / "kf2.png"))
    assert kf.shape[1] > kf.shape[0], f"keyframe {kf.shape[1]}x{kf.shape[0]} is sideways"
    meta = json.loads((c.tmp / "out" / "clips" / "phone" / "max" / "window_meta.json").read_text())
    assert meta["instances"], "nothing detected in the upright frames"


def _error_for(clip_id: str, *fragments: str) -> Callable[[Ctx, Result], None]:
    def check(c: Ctx, r: Result) -> None:
        c.good_extracted()
        (e,) = [e for e in c.errors() if e["clip_id"] == clip_id]
        for f in fragments:
            assert f in e["error"], (f, e)

    return check


def _bad_row_check(c: Ctx, r: Result) -> None:
    c.good_extracted()
    (e,) = c.errors()
    assert e["clip_id"] is None and e["row"] == 3 and e["file"].endswith("a.csv") and e["stage"] == "annotations"


def _report_with(frame_path: str) -> Callable[[Ctx], list]:
    def make(c: Ctx) -> list:
        for meta_path in c.run.glob("clips/*/*/window_meta.json"):
            meta = json.loads(meta_path.read_text())
            meta["frame_paths"][0] = frame_path
            meta_path.write_text(json.dumps(meta))
        return ["report", c.run]

    return make


def _no_foreign_file(target: str) -> Callable[[Ctx, Result], None]:
    def check(c: Ctx, r: Result) -> None:
        html = (c.run / "report" / "index.html").read_text()
        secret = Path(target if target.startswith("/") else "/etc/hostname").read_bytes()
        assert base64.b64encode(secret).decode() not in html
        assert "left out" in r.err and "lies outside the window folder" in r.err

    return check


def _corrupt_meta(c: Ctx) -> list:
    for meta_path in c.run.glob("clips/*/*/window_meta.json"):
        meta_path.write_text(meta_path.read_text()[:200])
    return ["report", c.run]


def _changed_config(c: Ctx) -> list:
    shutil.copy(c.synth / "annotations.csv", c.tmp / "all.csv")
    return ["extract", "--annotations", c.tmp / "all.csv", "--videos", c.synth, "--out", c.run,
            "--set", "perception.geometry.hfov_deg=60"]


def _new_run(c: Ctx) -> list:
    (c.tmp / "one.csv").write_text(HEADER + c.good_row())
    return ["extract", "--annotations", c.tmp / "one.csv", "--out", c.run, "--new-run", "--set", "perception.geometry.hfov_deg=60"]


def _new_run_check(c: Ctx, r: Result) -> None:
    cfg = load_config(c.run / "config.yaml")
    assert cfg.perception.geometry.hfov_deg == 60
    assert [p.name for p in (c.run / "clips").iterdir()] == [c.clips[0].id]  # nothing stale left
    assert not (c.run / "metrics.json").exists() and len(pd.read_parquet(c.run / "features.parquet")) == 3
    assert "removed" in r.err and "metrics.json" in r.err


def _not_a_run(c: Ctx) -> list:
    """A user's project folder with its own config.yaml and models/: --new-run must delete nothing."""
    project = c.tmp / "project"
    (project / "models").mkdir(parents=True)
    (project / "models" / "my_weights.bin").write_bytes(b"weights")
    (project / "config.yaml").write_text("lr: 0.1\n")
    (c.tmp / "one.csv").write_text(HEADER + c.good_row())
    return ["extract", "--annotations", c.tmp / "one.csv", "--out", project, "--new-run"]


def _resume_truncated_meta(c: Ctx) -> list:
    run = c.run
    victim = sorted(run.glob("clips/*/mid/window_meta.json"))[0]
    (c.tmp / "victim").write_text(str(victim))
    (c.tmp / "before").write_text(json.dumps(snapshot(run / "clips", run / "features.parquet")))
    victim.write_text(victim.read_text()[:100])  # as a killed run leaves it
    return ["extract", "--annotations", c.synth / "annotations.csv", "--out", run]


def _resume_check(c: Ctx, r: Result) -> None:
    assert json.loads((c.tmp / "before").read_text()) == snapshot(c.run / "clips", c.run / "features.parquet")
    assert "(7 already done)" in r.out


def _overlays_off(c: Ctx) -> list:
    args = ["extract", "--annotations", c.csv(c.good_row()), "--out", c.tmp / "out", "--set", "features.write_overlays=false"]
    first = main_result(args)
    assert first == 0
    return args


def main_result(args: list) -> int:
    with pytest.raises(SystemExit) as e:
        main([str(a) for a in args])
    return e.value.code or 0


def _json_stdout(c: Ctx, r: Result) -> None:
    docs = json.loads(r.out)  # the whole of stdout is one JSON document
    assert [Path(d["video"]).name for d in docs] == ["short.mp4", "two_s.mp4"]
    assert docs[0]["peak"] is None and docs[0]["timeline"] == [] and len(docs[1]["timeline"]) >= 3
    assert "no risk estimate" in r.err and "two_s.mp4" in r.err


def _csv_stdout(c: Ctx, r: Result) -> None:
    from io import StringIO

    df = pd.read_csv(StringIO(r.out))
    assert list(df.columns[:3]) == ["video", "time_s", "risk"] and set(df.video.map(lambda v: Path(v).name)) == {"two_s.mp4"}


def _batch_goes_on(c: Ctx, r: Result) -> None:
    assert (c.tmp / "p" / "two_s" / "timeline.csv").exists() and (c.tmp / "p" / "short" / "timeline.json").exists()
    json.loads((c.tmp / "p" / "short" / "timeline.json").read_text())


def _videos(c: Ctx, *names: str) -> Path:
    folder = c.tmp / "videos"
    folder.mkdir(exist_ok=True)
    for n in names:
        shutil.copy(c.short[n], folder / f"{n}.mp4")
    return folder


def _broken_first(c: Ctx) -> list:
    folder = _videos(c, "two_s")
    (folder / "a_broken.mp4").write_bytes(b"\x00" * 1000)
    return ["predict", folder, "--out", c.tmp / "p"]


def _broken_first_check(c: Ctx, r: Result) -> None:
    assert (c.tmp / "p" / "two_s" / "timeline.csv").exists()
    (e,) = [json.loads(x) for x in (c.tmp / "p" / "errors.jsonl").read_text().splitlines()]
    assert e["clip_id"] == "a_broken" and "not a readable video" in e["error"]


def _metadata_traversal(c: Ctx) -> list:
    folder = c.tmp / "positive"
    folder.mkdir()
    c0 = c.clips[0]
    shutil.copy(c0.video_path, folder / "good.mp4")
    (folder / "metadata.csv").write_text("file_name,time_of_event,time_of_alert\ngood.mp4,9.0,8.0\n../evil.mp4,5.0,4.0\n")
    return ["windows", "--annotations", folder / "metadata.csv"]


def _dad_folder(c: Ctx) -> list:
    for sub, video in (("positive", c.clips[0].video_path), ("negative", c.short["two_s"])):  # DAD's event: frame 90 at the file's rate (3.0 s at 30 fps)
        (c.tmp / "dad" / sub).mkdir(parents=True)
        shutil.copy(video, c.tmp / "dad" / sub / "000001.mp4")
    return ["windows", "--annotations", c.tmp / "dad", "--missing-event", "error"]


def _evaluate_corrupt_parquet(c: Ctx) -> list:
    (c.run / "features.parquet").write_bytes(b"PAR1" + bytes(range(256)) * 4)
    return ["evaluate", c.run, "--models", "ttc"]


def _file(c: Ctx, name: str, data: bytes) -> Path:
    path = c.tmp / name
    path.write_bytes(data)
    return path


def _noise(n: int, high: bool = False) -> bytes:
    """n random bytes (all >= 128 with `high`: no valid UTF-8 text)."""
    return np.random.default_rng(n).integers(128 if high else 0, 256, n, np.uint8).tobytes()


def _predictions_is_a_file(c: Ctx) -> list:
    shutil.rmtree(c.run / "predictions")
    (c.run / "predictions").write_text("")
    return ["evaluate", c.run, "--models", "ttc"]


def _unchanged_run(c: Ctx) -> list[Path]:
    return [c.synth, c.run / "clips"]


CASES = [
    # annotation files
    Case("annotations-missing", lambda c: ["extract", "--annotations", c.tmp / "nope.csv", "--out", c.tmp / "out"], 2,
         ("nope.csv", "file not found")),
    Case("annotations-empty", lambda c: ["extract", "--annotations", _file(c, "e.csv", b""), "--out", c.tmp / "out"], 2,
         ("e.csv", "empty file")),
    Case("annotations-random-bytes", lambda c: ["windows", "--annotations", _file(c, "r.csv", _noise(3000, high=True))], 2,
         ("r.csv", "UTF-8")),
    Case("annotations-bad-row", lambda c: c.with_good("x1,1.0,,2\n"), 1, ("a.csv, row 3", "target '2' must be 0 or 1"),
         _bad_row_check),
    Case("annotations-id-with-path-parts", lambda c: c.with_good("../evil,1.0,,1\n"), 1, ("a.csv, row 3", "not a safe file name"),
         lambda c, r: c.good_extracted()),
    Case("annotations-positive-without-event", lambda c: ["windows", "--annotations", c.csv("p,,,1\n"), "--missing-event", "error"],
         2, ("a.csv, row 2", "no time_of_event", "--missing-event end")),
    Case("annotations-metadata-file-name-outside", _metadata_traversal, 0, ("metadata.csv, row 3", "../evil.mp4"),
         lambda c, r: "good" in r.out),
    Case("annotations-dad-folder", _dad_folder, 0, (), lambda c, r: "pos_000001_max" in r.out and "neg_000001_max" in r.out),
    Case("annotations-folder-not-dad", lambda c: ["windows", "--annotations", c.tmp], 2, ("not a DAD folder",)),
    Case("annotation-format-invalid", lambda c: ["windows", "--annotations", c.csv(""), "--annotation-format", "kitti"], 2,
         ("--annotation-format", "kitti")),
    Case("missing-event-invalid", lambda c: ["extract", "--annotations", c.csv(""), "--out", c.tmp / "o", "--missing-event", "bogus"],
         2, ("--missing-event", "bogus")),
    # videos (one bad clip is recorded; the good one beside it is extracted)
    Case("video-missing", lambda c: c.with_good("gone,1.0,,1\n"), 1, ("gone",), _error_for("gone", "gone.mp4", "file not found")),
    Case("video-empty", lambda c: _file(c, "zero.mp4", b"") and c.with_good("zero,1.0,,1\n"), 1, ("zero",),
         _error_for("zero", "empty file")),
    Case("video-random-bytes", lambda c: _file(c, "noise.mp4", _noise(50_000)) and c.with_good("noise,1.0,,1\n"), 1, ("noise",),
         _error_for("noise", "not a readable video")),
    Case("video-truncated-event-past-the-damage", _truncated, 1, ("cut",), _truncated_check),
    Case("video-rotated-phone-clip", _rotated, 0, (), _upright),
    Case("video-one-frame", _one_frame, 1, ("one",), _error_for("one", "one.mp4", "too short for any window")),
    # configs and overrides
    Case("set-unclosed-list", lambda c: [*c.with_good(""), "--set", "windows.horizons_s=[0.5"], 2, ("--set", "[0.5", "not valid YAML")),
    Case("set-value-for-a-section", lambda c: [*c.with_good(""), "--set", "video=3"], 2, ("video", "valid dictionary")),
    Case("set-into-a-value", lambda c: [*c.with_good(""), "--set", "video=3", "--set", "video.fps=5"], 2,
         ("video.fps", "video is a value, not a section")),
    Case("set-unknown-field", lambda c: [*c.with_good(""), "--set", "windows.bogus=1"], 2, ("windows.bogus", "Extra inputs")),
    Case("set-not-key-value", lambda c: [*c.with_good(""), "--set", "horizon"], 2, ("--set 'horizon'", "section.field=value")),
    Case("set-negative-horizon", lambda c: [*c.with_good(""), "--set", "windows.horizons_s=[-1]"], 2, ("windows.horizons_s", ">= 0")),
    Case("horizons-not-numbers", lambda c: [*c.with_good(""), "--horizons", "abc"], 2, ("--horizons", "abc")),
    Case("config-python-tag", lambda c: [*c.with_good(""), "--config", _file(c, "evil.yaml", b"name: !!python/object/apply:os.system ['true']\n")],
         2, ("evil.yaml", "not valid YAML")),
    Case("config-missing", lambda c: [*c.with_good(""), "--config", c.tmp / "nope.yaml"], 2, ("nope.yaml", "no such config")),
    Case("backend-unknown", lambda c: [*c.with_good(""), "--set", "perception.detector=yolo9"], 2, ("perception.detector", "yolo9")),
    Case("workers-zero", lambda c: [*c.with_good(""), "--workers", "0"], 2, ("--workers",)),
    # output folders that cannot be written
    Case("extract-out-is-a-file", lambda c: [*c.with_good("")[:-1], c.csv("", "f.csv")], 2, ("f.csv", "cannot write there")),
    Case("extract-out-under-a-file", lambda c: [*c.with_good("")[:-1], c.csv("", "f.csv") / "run"], 2, ("f.csv", "cannot write there")),
    Case("predict-out-is-a-file", lambda c: ["predict", c.short["two_s"], "--out", c.csv("", "f.csv")], 2, ("f.csv", "cannot write")),
    Case("synth-out-is-a-file", lambda c: ["synth", "--n", "2", "--out", c.csv("", "f.csv")], 2, ("f.csv", "cannot write")),
    Case("evaluate-predictions-is-a-file", _predictions_is_a_file, 2, ("predictions",), None, _unchanged_run),
    # run folders: resume, config changes, reports, evaluation
    Case("resume-truncated-window-meta", _resume_truncated_meta, 0, (), _resume_check),
    Case("changed-config-without-new-run", _changed_config, 2, ("different extraction config", "--new-run"), None, _unchanged_run),
    Case("new-run-starts-over", _new_run, 0, (), _new_run_check),
    Case("overlays-off-resumes", _overlays_off, 0, (), lambda c, r: "(1 already done)" in r.out),
    Case("report-frame-path-absolute", _report_with("/etc/passwd"), 0, (), _no_foreign_file("/etc/passwd"), _unchanged_run),
    Case("report-frame-path-traversal", _report_with("../../../../../../../../etc/hostname"), 0, (),
         _no_foreign_file("../../../../../../../../etc/hostname"), _unchanged_run),
    Case("report-corrupt-window-meta", _corrupt_meta, 0, ("window_meta.json", "not valid JSON", "crashcast extract"),
         lambda c, r: (c.run / "report" / "index.html").exists(), _unchanged_run),
    Case("new-run-leaves-a-folder-that-is-no-run-alone", _not_a_run, 2, ("project/config.yaml", "not a config.yaml crashcast wrote"),
         None, lambda c: [c.synth, c.tmp / "project"]),
    Case("report-without-metrics", lambda c: (c.run / "metrics.json").unlink() or ["report", c.run], 2,
         ("metrics.json", "crashcast evaluate"), None, _unchanged_run),
    Case("report-corrupt-metrics", lambda c: c.run.exists() and _file(c, "run/metrics.json", b"{") and ["report", c.run], 2,
         ("metrics.json", "crashcast evaluate"), None, _unchanged_run),
    Case("evaluate-corrupt-features", _evaluate_corrupt_parquet, 2, ("features.parquet", "crashcast extract"), None, _unchanged_run),
    Case("evaluate-unknown-model", lambda c: ["evaluate", c.run, "--models", "ttc,lightgbn"], 2, ("lightgbn",), None, _unchanged_run),
    Case("evaluate-calibration-invalid", lambda c: ["evaluate", c.run, "--calibration", "sigmoid"], 2, ("--calibration", "sigmoid")),
    Case("evaluate-no-run-folder", lambda c: ["evaluate", c.tmp / "nothing"], 2, ("nothing", "no such run folder")),
    # predict
    Case("predict-short-clip-in-a-batch", lambda c: ["predict", _videos(c, "short", "two_s"), "--out", c.tmp / "p"], 0,
         (), _batch_goes_on),
    Case("predict-broken-video-first", _broken_first, 1, ("a_broken.mp4", "not a readable video"), _broken_first_check),
    Case("predict-json-only-the-document", lambda c: ["predict", _videos(c, "short", "two_s"), "--out", c.tmp / "p", "--format", "json"],
         0, (), _json_stdout),
    Case("predict-csv-only-the-document", lambda c: ["predict", _videos(c, "short", "two_s"), "--out", c.tmp / "p", "--format", "csv"],
         0, (), _csv_stdout),
    Case("predict-json-when-every-video-fails", lambda c: ["predict", _file(c, "bad.mp4", b"\0" * 100), "--out", c.tmp / "p",
                                                           "--format", "json"], 1, ("bad.mp4", "not a readable video"),
         lambda c, r: json.loads(r.out) is None),
    Case("predict-format-invalid", lambda c: ["predict", c.short["two_s"], "--format", "xml"], 2, ("--format", "xml")),
    Case("predict-model-not-a-model-folder", lambda c: ["predict", c.short["two_s"], "--model", c.tmp], 2,
         ("not a crashcast model folder",)),
    Case("predict-no-videos", lambda c: (c.tmp / "empty").mkdir() or ["predict", c.tmp / "empty"], 2, ("no video files",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_bad_input(case: Case, ctx: Ctx, cli) -> None:
    args = case.make(ctx)
    guarded = case.intact(ctx)
    before = snapshot(*guarded)
    r = cli(*args)
    assert r.code == case.code, f"exit {r.code}\nstdout: {r.out}\nstderr: {r.err}"
    for fragment in case.says:
        assert fragment.format(tmp=ctx.tmp) in r.err, f"{fragment!r} not in stderr: {r.err}"
    if case.check:
        assert case.check(ctx, r) is not False
    after = snapshot(*guarded)
    assert {k: v for k, v in after.items() if k in before} == before, "finished outputs changed"


def test_there_are_at_least_thirty_cases():
    assert len(CASES) >= 30 and len({c.name for c in CASES}) == len(CASES)
