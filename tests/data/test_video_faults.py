"""Truncated and damaged videos: decoding says how much of a span really decodes, never makes up the rest.

The ground truth of how far a damaged file decodes comes from PyAV directly (`_decoded_until`); the
frames of intact files are grey levels that encode their index (conftest.level_frames), so which
source frame is shown at each time is checked exactly.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import frame_index_from_level, level_frames, write_video, write_video_as

from crashcast.data.video import END_TOLERANCE_S, GAP_LIMIT_S, decode, iter_resampled, probe
from crashcast.errors import VideoError

LOGGER = "crashcast.data.video"
FPS = 25  # source and grid rate: frame times are whole milliseconds, grid and source line up exactly
STEP = 4  # grey level step of level_frames: 60 frames fit in 8 bits (10 + 4 * 59 = 246)


def _levels(path: Path, n: int = 60, **kwargs) -> Path:
    """n grey-level frames at 25 fps (n / 25 s), a keyframe every 10 frames."""
    return write_video_as(path, level_frames(n, step=STEP), [i / FPS for i in range(n)], rate=FPS, keyframe_interval=10,
                          **kwargs)


def _decoded_until(path: Path) -> float:
    """Where the frames that decode end (last timestamp + its duration), decoding with PyAV directly
    the way crashcast does (threaded; a decoder error ends it)."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        tb, t0 = stream.time_base, stream.start_time or 0
        end = None
        try:
            for frame in container.decode(stream):
                end = float((frame.pts - t0 + frame.duration) * tb)
        except av.error.FFmpegError:
            pass
    assert end is not None
    return end


def _packets(path: Path) -> list[tuple[float, int, int, bool]]:
    """(time s, byte offset, size, keyframe) of the video packets, in presentation order."""
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        return sorted((float(p.pts * stream.time_base), p.pos, p.size, p.is_keyframe) for p in container.demux(stream) if p.size)


def _same(a, b) -> None:
    np.testing.assert_array_equal(a.times_s, b.times_s)
    np.testing.assert_array_equal(a.frames, b.frames)


def _warned(caplog, path: Path, text: str) -> bool:
    return any(r.name == LOGGER and str(path) in r.getMessage() and text in r.getMessage() for r in caplog.records)


def test_truncated_file_raises_for_a_span_past_the_damage(tmp_path, caplog):
    intact = _levels(tmp_path / "intact.mp4", container_options={"movflags": "faststart"})  # index first: a cut file opens
    cut = tmp_path / "cut.mp4"
    data = intact.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    assert probe(cut).duration_s == pytest.approx(2.4, abs=1e-3)  # the header still states the whole video
    reach = _decoded_until(cut)
    assert 0.3 < reach < 1.8  # frames decode to part of it

    with pytest.raises(VideoError) as err:
        decode(cut, 0.0, 2.3, fps=FPS, long_side=None)
    msg = str(err.value)
    assert msg.startswith(str(cut))
    assert f"frames decode only to {reach:.2f} s of the 2.40 s the header states (truncated or damaged file)" in msg
    assert "[0.00, 2.30] s was requested" in msg
    with pytest.raises(VideoError, match="truncated or damaged"):  # also a span that starts after the damage
        decode(cut, 1.9, 2.3, fps=FPS, long_side=None)

    # before the damage: exactly what the intact file gives, the right source frames
    before = decode(cut, 0.0, reach - 0.2, fps=FPS, long_side=None)
    _same(before, decode(intact, 0.0, reach - 0.2, fps=FPS, long_side=None))
    assert [frame_index_from_level(f, STEP) for f in before.frames] == [round(t * FPS) for t in before.times_s]

    # the end tolerance: a span may end up to END_TOLERANCE_S after the last frame, no further
    near = decode(cut, 0.0, reach + END_TOLERANCE_S - 0.01, fps=FPS, long_side=None)
    assert near.times_s[-1] < reach  # and the grid still stops at the last frame's end
    with pytest.raises(VideoError, match="truncated or damaged"):
        decode(cut, 0.0, reach + END_TOLERANCE_S + 0.01, fps=FPS, long_side=None)

    # to the end, and streaming: what decodes, nothing after it, and a warning naming the file
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        whole = decode(cut, fps=FPS, long_side=None)
    assert whole.times_s[-1] < reach <= whole.times_s[-1] + 1 / FPS + 1e-6
    assert _warned(caplog, cut, f"frames decode only to {reach:.2f} s of the 2.40 s the header states")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        streamed = list(iter_resampled(cut, fps=FPS, long_side=None))
    assert [round(t, 6) for t, _ in streamed] == [round(t, 6) for t in whole.times_s]
    assert _warned(caplog, cut, "truncated or damaged file")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=LOGGER):  # an intact file: no warning
        list(iter_resampled(intact, fps=FPS, long_side=None))
    assert not caplog.records


def test_damaged_middle_stops_decoding_there(tmp_path):
    """Zeroed packets in the middle: the H.264 decoder rejects them ("Error splitting the input into NAL
    units"), so frames decode up to the damage only, and spans past it raise; the video is not decoded
    around the damage."""
    intact = _levels(tmp_path / "intact.mp4")
    data = bytearray(intact.read_bytes())
    for _, pos, size, _ in _packets(intact)[30:33]:  # frames 30-32 (1.20-1.32 s)
        data[pos : pos + size] = bytes(size)
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    assert _decoded_until(damaged) == pytest.approx(1.2, abs=1e-3)
    with pytest.raises(VideoError, match=r"frames decode only to 1\.20 s of the 2\.40 s the header states \(truncated or damaged"):
        decode(damaged, 0.5, 1.5, fps=FPS, long_side=None)
    _same(decode(damaged, 0.0, 1.1, fps=FPS, long_side=None), decode(intact, 0.0, 1.1, fps=FPS, long_side=None))


def _ts_cut(intact: Path, out: Path, first: int, stop: int) -> Path:
    """`intact` (MPEG-TS) without the PES packets of frames first..stop-1: data lost in transmission.
    The demuxer resynchronises at the next frame, so the decoder never sees the loss: a gap."""
    data = intact.read_bytes()
    assert len(data) % 188 == 0
    starts = []  # byte offsets of the TS packets that begin a video PES (stream id 0xE0)
    for off in range(0, len(data), 188):
        pkt = data[off : off + 188]
        if not pkt[1] & 0x40:  # payload_unit_start_indicator
            continue
        payload = 4 + (1 + pkt[4] if pkt[3] & 0x20 else 0)
        if pkt[payload : payload + 4] == b"\x00\x00\x01\xe0":
            starts.append(off)
    assert len(starts) == 60
    out.write_bytes(data[: starts[first]] + data[starts[stop] :])
    return out


def test_gap_from_lost_data_raises_inside_a_span(tmp_path, caplog):
    intact = _levels(tmp_path / "intact.ts", container_format="mpegts")
    lost = _ts_cut(intact, tmp_path / "lost.ts", 15, 30)  # frames 15-29 gone: nothing shown from 0.60 to 1.20 s
    with pytest.raises(VideoError) as err:
        decode(lost, 0.0, 1.5, fps=FPS, long_side=None)
    assert str(lost) in str(err.value) and "no frame decodes between 0.60 s and 1.20 s" in str(err.value)
    with pytest.raises(VideoError, match=r"between 0\.60 s and 1\.20 s"):
        decode(lost, 0.7, 1.1, fps=FPS, long_side=None)  # a span inside the gap
    # spans on either side of it are intact
    _same(decode(lost, 0.0, 0.55, fps=FPS, long_side=None), decode(intact, 0.0, 0.55, fps=FPS, long_side=None))
    _same(decode(lost, 1.2, 2.3, fps=FPS, long_side=None), decode(intact, 1.2, 2.3, fps=FPS, long_side=None))
    with caplog.at_level(logging.WARNING, logger=LOGGER):  # streaming goes on, and says so
        streamed = list(iter_resampled(lost, fps=FPS, long_side=None))
    assert _warned(caplog, lost, "no frame decodes between 0.60 s and 1.20 s")
    times = [round(t * FPS) for t, _ in streamed]
    assert times == [*range(15), *range(30, 60)]  # nothing inside the gap: no frame is held over it
    assert [frame_index_from_level(f, STEP) for _, f in streamed] == times


def test_gap_within_the_limit_holds_the_previous_frame(tmp_path):
    intact = _levels(tmp_path / "intact.ts", container_format="mpegts")
    lost = _ts_cut(intact, tmp_path / "lost.ts", 15, 20)  # 0.60 to 0.80 s: 0.20 s, under GAP_LIMIT_S
    assert 0.2 < GAP_LIMIT_S
    clip = decode(lost, 0.0, 1.2, fps=FPS, long_side=None)
    shown = [frame_index_from_level(f, STEP) for f in clip.frames]
    expected = [14 if 15 <= round(t * FPS) < 20 else round(t * FPS) for t in clip.times_s]
    assert shown == expected


def test_variable_frame_rate_pause_is_not_a_gap(tmp_path):
    """A 1 s pause between two frames is a long frame the container states, not missing data."""
    times = [0.0, 0.04, 0.08, 1.08, 1.12, 1.16]
    path = write_video(tmp_path / "pause.mp4", level_frames(len(times)), times)
    clip = decode(path, 0.0, 1.15, fps=FPS, long_side=None)
    src = np.array(times)
    expected = [int(np.searchsorted(src, t + 1e-6, side="right") - 1) for t in clip.times_s]
    assert [frame_index_from_level(f) for f in clip.frames] == expected
    assert expected.count(2) == 25  # frame 2 shown over the pause (0.08 to 1.08 s)


def test_truncated_real_clip(real_dir, tmp_path):
    intact = real_dir / "udacity_solid_white_right.mp4"
    cut = tmp_path / "udacity_cut.mp4"
    data = intact.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    reach = _decoded_until(cut)
    assert 3.0 < reach < 6.0
    with pytest.raises(VideoError) as err:
        decode(cut, 0.0, 8.0, long_side=320)
    assert str(cut) in str(err.value)
    assert f"frames decode only to {reach:.2f} s of the 8.84 s the header states (truncated or damaged file)" in str(err.value)
    _same(decode(cut, 0.0, 4.0, long_side=320), decode(intact, 0.0, 4.0, long_side=320))


def test_damaged_middle_of_real_clip(real_dir, tmp_path):
    """64 KiB of zeros in the middle destroy whole packets: the decoder rejects them and stops there, so
    a span past the damage raises. 4 KiB of garbage inside one packet: the decoder conceals the damaged
    slices and every frame decodes, so the whole clip decodes; the pictures differ from the original
    from the damaged frame up to the next keyframe (the decoder marks only the damaged frame itself
    as corrupt, not the ones predicted from it, so they are kept)."""
    intact = real_dir / "udacity_solid_white_right.mp4"
    data = intact.read_bytes()
    mid = len(data) // 2
    zeroed = tmp_path / "zeroed.mp4"
    zeroed.write_bytes(data[:mid] + bytes(65536) + data[mid + 65536 :])
    reach = _decoded_until(zeroed)
    assert reach < 5.0
    with pytest.raises(VideoError, match=re.escape(f"frames decode only to {reach:.2f} s of the 8.84 s")):
        decode(zeroed, 0.0, 8.0, long_side=160)
    _same(decode(zeroed, 0.0, reach - 0.5, long_side=160), decode(intact, 0.0, reach - 0.5, long_side=160))

    garbage = tmp_path / "garbage.mp4"
    noise = np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes()
    garbage.write_bytes(data[:mid] + noise + data[mid + 4096 :])
    packets = _packets(intact)
    hit = min(t for t, pos, size, _ in packets if pos < mid + 4096 and mid < pos + size)
    next_key = min(t for t, _, _, key in packets if key and t > hit)
    full, ref = decode(garbage, 0.0, 8.8, fps=25.0, long_side=None), decode(intact, 0.0, 8.8, fps=25.0, long_side=None)
    np.testing.assert_array_equal(full.times_s, ref.times_s)
    differ = [round(t, 2) for t, a, b in zip(full.times_s, full.frames, ref.frames, strict=True) if not np.array_equal(a, b)]
    assert differ and all(hit - 1e-6 <= t < next_key for t in differ), (hit, next_key, differ)


def test_real_clips_decode_over_their_full_length(real_dir):
    for path in sorted(real_dir.glob("*.mp4")):
        duration = probe(path).duration_s
        clip = decode(path, 0.0, duration, fps=FPS, long_side=160)
        assert clip.times_s[-1] > duration - 1 / FPS - 1e-6, path.name
        assert clip.duration_s == pytest.approx(duration, abs=1e-3), path.name
        end = decode(path, duration - 1.0, duration + 0.05, fps=FPS, long_side=160)  # an event annotated at the end
        np.testing.assert_array_equal(end.times_s, clip.times_s[clip.times_s >= duration - 1.0 - 1e-9])
        with pytest.raises(VideoError, match="the span reaches past the end of the video"):
            decode(path, duration - 1.0, duration + 0.5, fps=FPS, long_side=160)
