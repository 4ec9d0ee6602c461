"""The perception seams: backends registered with their config classes, built once per worker and
reset per clip, batched per-frame stages, runtime settings outside the extraction hash, relative
depth aligned to the road (never used as metres), worker setup failures stopping the run."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest

from crashcast.config import BackendConfig, load_config
from crashcast.data.annotations import read_csv
from crashcast.data.video import decode
from crashcast.errors import ConfigError
from crashcast.extract import extract_run
from crashcast.features.window_meta import read_window_meta
from crashcast.perception import registry
from crashcast.perception.bundle import Backends
from crashcast.perception.classic.depth import GroundPlaneDepth
from crashcast.perception.classic.detect import MotionDetector, MotionDetectorConfig
from crashcast.perception.depth_align import align_to_ground, fit_disparity
from crashcast.perception.pipeline import Perception, perceive
from crashcast.perception.spec import BuildContext
from crashcast.runtime.executor import WorkerSetupError
from crashcast.types import CameraModel, DepthMap, ObjectMeasurement, ObjectTrack


class CountingConfig(MotionDetectorConfig):
    name: str = "test-counting-motion"
    log_file: str


@registry.register("detector", "test-counting-motion", CountingConfig)
def _counting(cfg: CountingConfig, ctx: BuildContext) -> MotionDetector:
    """The classic detector, writing one line (its process id) per construction."""
    with open(cfg.log_file, "a") as f:
        f.write(f"{os.getpid()}\n")
    return MotionDetector(cfg, ctx.perception.context.residual_threshold_px)


class RelativeGround(GroundPlaneDepth):
    """Ground-plane depth handed on as a relative disparity (3 / Z + 0.2): what a relative depth
    model gives, with a known true scale and shift."""

    name = "test-relative-ground"

    def depth(self, frames, detections, contexts):
        out = []
        for d in super().depth(frames, detections, contexts):
            with np.errstate(divide="ignore"):
                out.append(DepthMap((3.0 / d.depth_m + 0.2).astype(np.float32), is_metric=False))
        return out


@registry.register("depth", "test-relative-ground", BackendConfig)
def _relative(cfg: BackendConfig, ctx: BuildContext) -> RelativeGround:
    return RelativeGround()


class Broken:
    name = "test-no-methods"


@registry.register("segmenter", "test-no-methods", BackendConfig)
def _broken(cfg: BackendConfig, ctx: BuildContext) -> Broken:
    return Broken()


@registry.register("flow", "test-fails-to-build", BackendConfig)
def _fails(cfg: BackendConfig, ctx: BuildContext):
    raise ConfigError("test-fails-to-build: weights missing from the weights folder")


# --------------------------------------------------------------------------- registry and config


def test_registry_refuses_a_second_backend_under_one_name():
    with pytest.raises(ValueError, match="already registered"):
        registry.register("detector", "classic-motion")(lambda cfg, ctx: None)
    with pytest.raises(TypeError, match="BackendConfig subclass"):
        registry.register("detector", "test-bad-config", dict)
    built = registry.create("detector", load_config("classic").perception.detector, BuildContext())
    assert built.name == "classic-motion"


def test_created_backends_are_checked_against_their_protocol():
    with pytest.raises(TypeError, match="Segmenter"):
        registry.create("segmenter", BackendConfig(name="test-no-methods"), BuildContext())


def test_each_backend_validates_its_own_settings():
    cfg = load_config("classic", ["perception.detector.min_box_px=12"])
    assert isinstance(cfg.perception.detector, MotionDetectorConfig) and cfg.perception.detector.min_box_px == 12
    with pytest.raises(ConfigError, match=r"no detector backend named .nope.*classic-motion"):
        load_config("classic", ["perception.detector=nope"])
    with pytest.raises(ConfigError, match="min_box_px"):
        load_config("classic", ["perception.detector.min_box_px=1"])
    with pytest.raises(ConfigError, match=r"perception\.tracker.*unknown_field"):
        load_config("classic", ["perception.tracker.unknown_field=3"])
    # a stage's full settings are saved with the run, and read back as the same class
    again = load_config("classic").model_validate(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again.perception.detector == cfg.perception.detector and again.hash() == cfg.hash()


def test_configs_before_the_seams_load_with_their_fields_moved():
    from crashcast.config import CrashcastConfig

    old = {"perception": {"detector": "classic-motion", "flow": "classic-flow", "backend": "classic",
                          "classic": {"hfov_deg": 60, "flow_preset": "medium", "track_buffer_frames": 9,
                                      "frame_step": 2, "min_box_px": 10, "residual_threshold_px": 0.3}}}
    p = CrashcastConfig.model_validate(old).perception
    assert (p.geometry.hfov_deg, p.flow.preset, p.tracker.track_buffer_frames, p.frame_step) == (60, "medium", 9, 2)
    assert (p.detector.min_box_px, p.context.residual_threshold_px) == (10, 0.3)


def test_runtime_settings_stay_out_of_the_extraction_hash():
    base = load_config("classic")
    moved = load_config("classic", ["runtime.device=cpu", "runtime.batch_size=2", "runtime.dtype=float32",
                                    "runtime.weights_dir=/somewhere"])
    assert moved.extraction_hash() == base.extraction_hash()
    assert load_config("classic", ["perception.detector.min_box_px=9"]).extraction_hash() != base.extraction_hash()


# --------------------------------------------------------------------------- built once, reset per clip


def test_backends_are_built_once_per_worker(synth_small, tmp_path):
    clips = read_csv(synth_small / "annotations.csv")[:4]
    log = tmp_path / "constructions.txt"
    cfg = load_config("classic", ["perception.detector.name=test-counting-motion", f"perception.detector.log_file={log}"])
    summary = extract_run(clips, tmp_path / "run2", cfg, workers=2, progress=False)
    assert summary.ok == 4
    pids = log.read_text().split()
    assert 1 <= len(pids) <= 2 and len(set(pids)) == len(pids)  # one construction per worker process
    assert str(os.getpid()) not in pids  # the parent never loads the models
    log.unlink()
    assert extract_run(clips, tmp_path / "run1", cfg, workers=1, progress=False).ok == 4
    assert log.read_text().split() == [str(os.getpid())]  # in-process: once for the four clips
    log.unlink()
    again = extract_run(clips, tmp_path / "run1", cfg, workers=1, progress=False)
    assert again.skipped == 4 and not log.exists()  # a resumed run with nothing to do loads nothing


def test_a_backend_that_cannot_be_built_stops_the_run(synth_small, tmp_path):
    clips = read_csv(synth_small / "annotations.csv")[:3]
    cfg = load_config("classic", ["perception.flow=test-fails-to-build"])
    for workers in (1, 2):
        with pytest.raises(WorkerSetupError, match="weights missing"):
            extract_run(clips, tmp_path / f"run{workers}", cfg, workers=workers, progress=False)
        assert not (tmp_path / f"run{workers}" / "errors.jsonl").exists()  # not the clips' fault


def _frames(synth_small, n=2):
    clips = read_csv(synth_small / "annotations.csv")[:n]
    return [decode(c.video_path, 1.0, 4.0, long_side=320, step=3, clip_id=c.id) for c in clips]


def _summary(perc):
    return json.dumps([[(t.track_id, t.class_name, t.frame_index.tolist(), np.round(t.box_xyxy, 3).tolist(),
                        np.round(t.depth_m, 4).tolist(), np.round(t.flow_mag_px, 4).tolist()) for t in perc.tracks],
                       np.round(perc.looming, 5).tolist()])


def test_reused_backends_leak_nothing_between_clips(synth_small):
    a, b = _frames(synth_small)
    cfg = load_config("classic").perception
    shared = Backends.build(cfg)
    perceive(a, cfg, shared)
    after_a = perceive(b, cfg, shared)
    fresh = perceive(b, cfg, Backends.build(cfg))
    assert after_a.tracks and _summary(after_a) == _summary(fresh)


def test_batches_and_streaming_give_the_same_perception(synth_small):
    clip = _frames(synth_small)[1]
    cfg = load_config("classic").perception
    one = perceive(clip, cfg, Backends.build(cfg), batch_size=1)
    eight = perceive(clip, cfg, Backends.build(cfg), batch_size=8)
    w, h = clip.size
    streamed = Perception(Backends.build(cfg), cfg, w, h, clip.fps, clip.clip_id)
    for f, t in zip(clip.frames, clip.times_s, strict=True):
        streamed.step(f, float(t))
    assert one.tracks and _summary(one) == _summary(eight) == _summary(streamed.result())


def test_tracks_are_the_columns_of_the_streamed_measurements(synth_small):
    """What `step` returns per object, regrouped by track id, is what `result().tracks` holds; with
    a history, only the measurements of the kept frames (counted from the first kept one)."""
    clip = _frames(synth_small)[1]
    cfg = load_config("classic").perception
    w, h = clip.size
    p = Perception(Backends.build(cfg), cfg, w, h, clip.fps, clip.clip_id, history_s=1.5)
    frames = []
    for f, t in zip(clip.frames, clip.times_s, strict=True):
        r = p.step(f, float(t))
        # one measurement per tracked detection, in its order and full-frame coordinates
        assert [m.track_id for m in r.objects] == ([] if r.detections.tracker_id is None else r.detections.tracker_id.tolist())
        assert [m.frame_index for m in r.objects] == [r.index] * len(r.detections)
        assert np.array([m.box_xyxy for m in r.objects]).reshape(-1, 4).tolist() == r.detections.xyxy.astype(float).tolist()
        frames.append(r)
    perc = p.result()
    assert p.first_index > 0 and len(perc.times_s) == len(frames) - p.first_index  # the history forgot frames
    kept = [m for r in frames[p.first_index:] for m in r.objects]
    assert perc.tracks and sorted(t.track_id for t in perc.tracks) == sorted({m.track_id for m in kept})
    for track in perc.tracks:
        ms = [m for m in kept if m.track_id == track.track_id]
        np.testing.assert_array_equal(track.frame_index, [m.frame_index - p.first_index for m in ms])
        np.testing.assert_array_equal(perc.times_s[track.frame_index], [frames[m.frame_index].time_s for m in ms])
        for name in ("box_xyxy", "depth_m", "mask_area_px", "occlusion", "flow_mag_px", "flow_ang_deg",
                     "expansion_per_frame", "confidence", "centroid_px"):
            np.testing.assert_array_equal(getattr(track, name), [getattr(m, name) for m in ms], err_msg=name)
        # the track's class: the most confident over its whole life, forgotten frames included
        votes: dict[str, float] = {}
        for m in (m for r in frames for m in r.objects if m.track_id == track.track_id):
            votes[m.class_name] = votes.get(m.class_name, 0.0) + m.confidence
        assert track.class_name == max(votes, key=votes.get)


def test_a_track_is_made_of_one_objects_measurements():
    m = ObjectMeasurement(frame_index=3, track_id=1, class_name="vehicle", box_xyxy=(1.0, 2.0, 3.0, 4.0), depth_m=9.0,
                          mask_area_px=4.0, occlusion=0.0, flow_mag_px=0.5, flow_ang_deg=90.0, expansion_per_frame=np.nan,
                          confidence=0.8, centroid_px=(2.0, 3.0))
    track = ObjectTrack.from_measurements([m], "vehicle", first_index=2)
    assert track.frame_index.tolist() == [1] and track.box_xyxy.shape == (1, 4) and track.centroid_px.shape == (1, 2)
    with pytest.raises(ValueError, match="several tracks"):
        ObjectTrack.from_measurements([m, dataclasses.replace(m, track_id=2, frame_index=4)], "vehicle")
    with pytest.raises(ValueError, match="at least one"):
        ObjectTrack.from_measurements([], "vehicle")


# --------------------------------------------------------------------------- relative depth


def test_disparity_fit_recovers_scale_and_shift_despite_outliers():
    rng = np.random.default_rng(0)
    z = rng.uniform(4, 50, 2000)
    rel = 7.0 / z - 0.3
    rel[:100] += rng.uniform(0.5, 2.0, 100)  # a car on the road: 5 % gross outliers
    s, t = fit_disparity(rel, z)
    assert s == pytest.approx(7.0, rel=1e-6) and t == pytest.approx(-0.3, abs=1e-6)


def test_relative_depth_is_aligned_to_the_road_or_refused():
    cam = CameraModel.from_fov(320, 180, 70, 1.4, 0.5)
    rows = np.arange(180) + 0.5
    with np.errstate(divide="ignore"):
        z = np.where(rows > cam.horizon_y + 0.5, cam.focal_px * 1.4 / (rows - cam.horizon_y), np.inf)
    truth = np.repeat(z[:, None], 320, axis=1)
    rel = 2.5 / truth + 0.1
    road = np.zeros_like(truth, bool)
    road[120:, 100:220] = True
    aligned = align_to_ground(rel, cam, road, "clip")
    below = np.isfinite(truth) & (truth < 80)
    np.testing.assert_allclose(aligned[below], truth[below], rtol=1e-4)
    with pytest.raises(Exception, match="only 0 road pixels"):
        align_to_ground(rel, cam, np.zeros_like(road), "clip")


def test_relative_depth_backend_goes_through_the_road_alignment(synth_small, tmp_path):
    clips = read_csv(synth_small / "annotations.csv")[:1]
    metric = extract_run(clips, tmp_path / "metric", load_config("classic"), progress=False)
    rel_cfg = load_config("classic", ["perception.depth=test-relative-ground"])
    relative = extract_run(clips, tmp_path / "relative", rel_cfg, progress=False)
    assert metric.ok == relative.ok == 1
    for path in sorted((tmp_path / "metric").glob("clips/*/*/window_meta.json")):
        m = read_window_meta(path)
        r = read_window_meta(tmp_path / "relative" / path.relative_to(tmp_path / "metric"))
        assert (m.depth_kind, r.depth_kind) == ("metric", "ground-aligned")
        assert r.backends["depth"] == "test-relative-ground"
        pairs = [(a, b) for da, db in zip(m.box_depths, r.box_depths, strict=True) for k, a in da.items()
                 if a is not None and (b := db.get(k)) is not None]
        assert pairs and all(abs(a - b) <= 0.01 * a + 0.002 for a, b in pairs)  # the true metres, recovered
    refuse = load_config("classic", ["perception.depth=test-relative-ground", "perception.depth_alignment=refuse"])
    out = extract_run(clips, tmp_path / "refused", refuse, progress=False)
    assert out.failed == 1
    assert "relative depth" in Path(tmp_path / "refused" / "errors.jsonl").read_text()


def test_stage_fields_can_be_set_where_a_config_names_no_backend():
    cfg = load_config("nexar", ["perception.tracker.track_buffer_frames=20", "perception.flow.preset=medium"])
    assert (cfg.perception.tracker.name, cfg.perception.tracker.track_buffer_frames) == ("bytetrack", 20)
    assert (cfg.perception.flow.name, cfg.perception.flow.preset) == ("classic-flow", "medium")


def test_auto_keeps_the_perception_of_an_existing_run_and_of_a_models_run(tmp_path, monkeypatch):
    """Resuming a run, or predicting with a model trained on a run's features, must not switch to
    another preset because weights appeared since: `--backend auto` reads the run's config."""
    from crashcast import api
    from crashcast.extract import prepare_run

    run = tmp_path / "run"
    trained = load_config("classic", ["perception.flow.preset=medium"])
    prepare_run(run, trained)
    model = run / "models" / "lightgbm"
    model.mkdir(parents=True)
    (model / "model.json").write_text(json.dumps({"extraction_hash": trained.extraction_hash()}))
    for where in (run, api.model_run(str(model))):
        cfg = api.config_for("auto", run=where)
        assert cfg.extraction_hash() == trained.extraction_hash()
    warnings = []
    monkeypatch.setattr(api.log, "warning", lambda *a: warnings.append(a[0] % a[1:]))
    assert api.check_model_features(str(model), trained)
    assert warnings == []
    assert not api.check_model_features(str(model), load_config("classic"))
    assert len(warnings) == 1 and "trained on features of another perception config" in warnings[0]
