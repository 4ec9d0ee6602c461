from __future__ import annotations

import numpy as np
import pytest
from tests.conftest import frame_index_from_level, level_frames, write_video, write_video_as

from crashcast.data.video import decode, iter_resampled, probe, target_size
from crashcast.errors import VideoError


@pytest.mark.parametrize("src_fps", [25.0, 10.0])
def test_resample_to_30_fps_by_timestamp(tmp_path, src_fps):
    n = 20
    times = [i / src_fps for i in range(n)]
    path = write_video(tmp_path / f"v{int(src_fps)}.mp4", level_frames(n), times)
    clip = decode(path, fps=30.0, long_side=None)
    duration = n / src_fps
    assert clip.source_fps == pytest.approx(src_fps, rel=1e-3)
    assert len(clip.frames) == round(duration * 30)
    np.testing.assert_allclose(np.diff(clip.times_s), 1 / 30, atol=1e-9)
    for t, img in zip(clip.times_s, clip.frames, strict=True):
        expected = int(np.floor(t * src_fps + 1e-6))  # the source frame on screen at time t
        assert frame_index_from_level(img) == expected, f"t={t:.3f}"


def test_variable_frame_rate_follows_timestamps(tmp_path):
    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0]
    path = write_video(tmp_path / "vfr.mp4", level_frames(len(times)), times)
    clip = decode(path, fps=30.0, long_side=None)
    src = np.array(times)
    for t, img in zip(clip.times_s, clip.frames, strict=True):
        expected = int(np.searchsorted(src, t + 1e-6, side="right") - 1)
        assert frame_index_from_level(img) == expected, f"t={t:.3f}"


def test_span_and_resize_keep_aspect(tmp_path):
    n = 60
    frames = level_frames(n, size=(320, 180), step=3)
    path = write_video(tmp_path / "span.mp4", frames, [i / 30 for i in range(n)])
    clip = decode(path, start_s=0.5, end_s=1.0, fps=30.0, long_side=160)
    assert clip.frames.shape[1:3] == (90, 160)
    assert clip.times_s[0] == pytest.approx(0.5) and clip.times_s[-1] == pytest.approx(1.0)
    assert frame_index_from_level(clip.frames[0], step=3) == 15
    assert target_size(1280, 720, 640) == (640, 360)
    assert target_size(720, 1280, 640) == (360, 640)


def test_probe_reports_size_fps_duration(tmp_path):
    path = write_video(tmp_path / "p.mp4", level_frames(25), [i / 25 for i in range(25)])
    info = probe(path)
    assert (info.width, info.height) == (64, 48)
    assert info.fps == pytest.approx(25.0, rel=0.02)  # from ms timestamps the container rate is approximate
    assert info.duration_s == pytest.approx(1.0, abs=0.05)


def test_bad_videos_raise_one_clear_error(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "notes.mp4"
    text.write_text("this is not a video\n" * 50)
    good = write_video(tmp_path / "good.mp4", level_frames(30), [i / 30 for i in range(30)])
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(good.read_bytes()[:200])
    cases = {
        tmp_path / "missing.mp4": "file not found",
        empty: "empty file",
        text: "not a readable video",
        truncated: "",
    }
    for path, message in cases.items():
        with pytest.raises(VideoError) as err:
            decode(path)
        assert str(path) in str(err.value) and message in str(err.value)


def test_streaming_resampler_matches_decode(tmp_path):
    from crashcast.data.video import iter_resampled

    times = [0.0, 0.1, 0.15, 0.5, 0.55, 0.6, 1.0]  # variable frame rate
    path = write_video(tmp_path / "vfr.mp4", level_frames(len(times)), times)
    whole = decode(path, fps=30.0, long_side=None)
    streamed = list(iter_resampled(path, fps=30.0, long_side=None))
    assert [round(t, 6) for t, _ in streamed] == [round(t, 6) for t in whole.times_s]
    for (_, a), b in zip(streamed, whole.frames, strict=True):
        assert frame_index_from_level(a) == frame_index_from_level(b)


def test_decode_with_step_keeps_every_nth_frame_counted_back_from_the_end(tmp_path):
    from crashcast.perception.pipeline import processed_indices

    n = 50
    path = write_video(tmp_path / "step.mp4", level_frames(n, step=3), [i / 25 for i in range(n)])
    whole = decode(path, start_s=0.3, end_s=1.7, fps=30.0, long_side=None)
    sub = decode(path, start_s=0.3, end_s=1.7, fps=30.0, long_side=None, step=3)
    idx = processed_indices(len(whole.frames), 3)
    assert idx[-1] == len(whole.frames) - 1  # the span's last frame (the event) is kept
    np.testing.assert_allclose(sub.times_s, whole.times_s[idx])
    np.testing.assert_array_equal(sub.frames, whole.frames[idx])
    assert sub.step == 3 and sub.span_frames == whole.span_frames == len(whole.frames)


def test_streaming_resampler_every_nth(tmp_path):
    from crashcast.data.video import iter_resampled

    times = [i / 25 for i in range(30)]
    path = write_video(tmp_path / "every.mp4", level_frames(len(times)), times)
    whole = list(iter_resampled(path, fps=30.0, long_side=None))
    third = list(iter_resampled(path, fps=30.0, long_side=None, every=3))
    assert [round(t, 6) for t, _ in third] == [round(t, 6) for t, _ in whole[::3]]
    for (_, a), (_, b) in zip(third, whole[::3], strict=True):
        assert frame_index_from_level(a) == frame_index_from_level(b)


# Rotation. The picture the camera saw ("upright") is dark with a bright square in its top-left
# corner; the file stores it turned, with a display matrix (or an old `rotate` tag) saying how to
# turn it back. Decoding must give the upright picture: the square top-left, the size as shown.


def _upright_picture(w: int, h: int) -> np.ndarray:
    img = np.full((h, w, 3), 30, np.uint8)
    img[: h // 4, : w // 4] = 230
    return img


def _bright_corner(img: np.ndarray) -> str:
    h, w = img.shape[0] // 4, img.shape[1] // 4
    corners = {"top-left": img[:h, :w], "top-right": img[:h, -w:], "bottom-left": img[-h:, :w], "bottom-right": img[-h:, -w:]}
    means = {name: float(c.mean()) for name, c in corners.items()}
    bright = [name for name, m in means.items() if m > 200]
    assert len(bright) == 1 and all(m < 60 for name, m in means.items() if name not in bright), means
    return bright[0]


def _assert_upright(frames: np.ndarray, upright: np.ndarray) -> None:
    for img in frames:
        assert img.shape == upright.shape
        assert _bright_corner(img) == "top-left"
        assert np.abs(img.astype(int) - upright).mean() < 3  # near-lossless coding


def _assert_written(path, stored: np.ndarray, ccw: float, upright: np.ndarray) -> None:
    """The test file is what a phone writes: coded as `stored`, with a display matrix PyAV reads back
    as `ccw` degrees counter-clockwise, which OpenCV (its own FFmpeg build, autorotation on) shows
    as `upright`: an independent check of the direction."""
    import av
    import cv2

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frame = next(container.decode(stream))
        assert frame.rotation % 360 == ccw % 360
        assert np.abs(frame.to_ndarray(format="rgb24").astype(int) - stored).mean() < 3
    cap = cv2.VideoCapture(str(path))
    ok, bgr = cap.read()
    cap.release()
    assert ok and bgr.shape == upright.shape and _bright_corner(bgr) == "top-left"


@pytest.mark.parametrize("ccw", [90, -90, 180])
def test_display_matrix_turns_frames_upright(tmp_path, ccw):
    upright = _upright_picture(48, 64) if ccw % 180 else _upright_picture(64, 48)
    stored = np.ascontiguousarray(np.rot90(upright, k=-(ccw // 90)))  # the matrix turns it back by ccw
    n = 8
    path = write_video_as(tmp_path / f"rot{ccw}.mp4", [stored] * n, [i / 25 for i in range(n)], rate=25,
                          display_rotation_ccw=ccw)
    _assert_written(path, stored, ccw, upright)
    h, w = upright.shape[:2]

    info = probe(path)
    assert (info.width, info.height) == (w, h)
    assert info.rotation_deg == (-ccw) % 360  # clockwise, like the old rotate tag: 90 ccw is 270

    clip = decode(path, fps=25.0, long_side=None)
    assert len(clip.frames) == n and clip.source_size == (w, h)
    _assert_upright(clip.frames, upright)
    small = decode(path, 0.0, 0.2, fps=25.0, long_side=32)
    assert small.frames.shape[1:3] == ((32, 24) if h > w else (24, 32))
    assert _bright_corner(small.frames[0]) == "top-left"

    streamed = list(iter_resampled(path, fps=25.0, long_side=None))
    np.testing.assert_allclose([t for t, _ in streamed], clip.times_s)
    np.testing.assert_array_equal(np.stack([img for _, img in streamed]), clip.frames)


def test_rotate_tag_is_clockwise(tmp_path):
    """No display matrix, only the old `rotate` tag (clockwise degrees; Matroska keeps it as ROTATE)."""
    upright = _upright_picture(48, 64)
    stored = np.ascontiguousarray(np.rot90(upright, k=1))  # a quarter turn clockwise shows it upright
    path = write_video_as(tmp_path / "tag.mkv", [stored] * 5, [i / 25 for i in range(5)], rate=25,
                          metadata={"rotate": "90"}, container_format="matroska")
    import av

    with av.open(str(path)) as container:  # the file has the tag and no display matrix
        stream = container.streams.video[0]
        assert {k.lower(): v for k, v in stream.metadata.items()}["rotate"] == "90"
        assert next(container.decode(stream)).rotation == 0
    info = probe(path)
    assert (info.width, info.height, info.rotation_deg) == (48, 64, 90)
    _assert_upright(decode(path, fps=25.0, long_side=None).frames, upright)
    _assert_upright(np.stack([img for _, img in iter_resampled(path, fps=25.0, long_side=None)]), upright)


def _antitranspose(img: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.rot90(img, 2).transpose(1, 0, 2))


@pytest.mark.parametrize(("ccw", "mirror", "expected"), [
    (0, np.fliplr, (0, True)),  # a mirror only: ffmpeg's autorotation applies hflip
    (90, _antitranspose, (270, True)),  # 90 ccw then mirrored: ffmpeg's transpose=clock_flip
])
def test_mirroring_display_matrix(tmp_path, ccw, mirror, expected):
    """A display matrix that also mirrors (front cameras): shown as the ffmpeg CLI shows it. Both
    display transforms are their own inverse, so the stored picture is the transform of the upright one."""
    upright = _upright_picture(48, 64) if ccw else _upright_picture(64, 48)
    stored = np.ascontiguousarray(mirror(upright))
    path = write_video_as(tmp_path / f"mirror{ccw}.mp4", [stored] * 3, [i / 25 for i in range(3)], rate=25,
                          display_rotation_ccw=ccw, display_hflip=True)
    info = probe(path)
    assert (info.rotation_deg, info.mirrored) == expected
    assert (info.width, info.height) == (upright.shape[1], upright.shape[0])
    _assert_upright(decode(path, fps=25.0, long_side=None).frames, upright)
