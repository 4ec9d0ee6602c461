"""Video Depth Anything inference and the `video-depth-anything` depth backend: the chunk layout, the
stitching against a synthetic sequence with known per-chunk scale and shift, the official offline
procedure (transcribed here line for line) against the batched implementation, and the streaming form."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
cv2 = pytest.importorskip("cv2")

import torch.nn.functional as F  # noqa: E402
from scenes import scene  # noqa: E402

from crashcast.config import PerceptionConfig, RuntimeConfig  # noqa: E402
from crashcast.perception import registry  # noqa: E402
from crashcast.perception.base import DepthEstimator, SpanDepthEstimator  # noqa: E402
from crashcast.perception.models import vda  # noqa: E402  (registers the backend)
from crashcast.perception.models.video_depth_anything.dpt_temporal import TemporalAttention  # noqa: E402
from crashcast.perception.models.video_depth_anything.inference import (  # noqa: E402
    KEYFRAMES,
    CacheWindow,
    ChunkLayout,
    attention_step,
    blend_weights,
    fit_scale_shift,
    head_step,
    network_size,
    preprocess,
    stitch_chunks,
)
from crashcast.perception.spec import BuildContext  # noqa: E402

SIZE = (48, 64)  # test frames (H, W)
INPUT = 28  # network input short side for the tests: a 2 x 3 patch grid (the vits encoder is the cost)


pytestmark = pytest.mark.usefixtures("two_torch_threads")


# ----------------------------------------------------------------------------- layout


def test_official_chunk_layout():
    lay = ChunkLayout()
    assert (lay.length, lay.overlap, lay.interp, lay.step, lay.align) == (32, 10, 8, 22, 2)
    assert lay.keyframes == KEYFRAMES == (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
    assert ChunkLayout.make(32, 10) == lay
    # the official append_frame_len: padded to a whole number of 22-frame steps, plus the overlap
    assert [lay.padded_length(n) for n in (1, 21, 22, 23, 40, 44, 80)] == [32, 32, 32, 54, 54, 54, 98]
    assert list(lay.chunk_starts(80)) == [0, 22, 44, 66]

    chunks = lay.chunk_frames(40)  # frames past the end are copies of frame 39
    assert chunks[0] == list(range(32))
    assert chunks[1] == [0, 12, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 37, 38, 39] + [39] * 14
    assert len(chunks) == 2

    chunks = lay.chunk_frames(60)
    assert chunks[1] == [0, 12, 24, 25, 26, 27, 28, 29, 30, 31, *range(32, 54)]
    # chunk 2: slot 0 is still frame 0, slot 1 chunk 1's slot 12 (frame 34), then chunk 1's last 8
    assert chunks[2] == [0, 34, 46, 47, 48, 49, 50, 51, 52, 53, *range(54, 60)] + [59] * 16
    assert lay.chunk_frames(5) == [[0, 1, 2, 3, 4] + [4] * 27]


def test_other_layouts_and_their_limits():
    lay = ChunkLayout.make(16, 6)
    assert lay.keyframes == (0, 11, 12, 13, 14, 15) and lay.interp == 4 and lay.step == 10
    with pytest.raises(ValueError, match="chunk layout"):
        ChunkLayout.make(8, 7)  # blends 5 frames but adds only 1
    with pytest.raises(ValueError, match="chunk layout"):
        ChunkLayout.make(32, 3)  # one blended frame
    with pytest.raises(ValueError, match="keyframes"):
        ChunkLayout(keyframes=(0, 12, 23, 25, 26, 27, 28, 29, 30, 31))


def test_network_size_follows_the_official_resize():
    assert network_size(1080, 1920) == (518, 924)  # 16:9 (1.7778 < 1.78): short side 518
    assert network_size(480, 640) == (518, 686)
    assert network_size(640, 480) == (686, 518)
    # wider than 1.78: input size int(518 * 1.777 / 3.23) = 284, rounded to 280
    assert network_size(198, 640) == (280, 910)
    assert network_size(198, 640, limit_aspect=False) == (518, 1680)
    assert network_size(*SIZE, 56) == (56, 70)
    assert network_size(*SIZE, INPUT) == (28, 42)
    assert network_size(50, 50, 60) == (70, 70)  # a side below input_size after rounding goes up


# ----------------------------------------------------------------------------- stitching


def synthetic_chunks(n: int, scales, shifts, seed: int = 0, shape=(6, 8)):
    """A positive 'true' inverse depth sequence (n, *shape) and each chunk's output
    true / s_k - t_k over the frames in its slots."""
    rng = np.random.default_rng(seed)
    true = (rng.uniform(0.5, 2.0, (n, *shape)) + np.linspace(0, 1, n)[:, None, None]).astype(np.float32)
    chunks = [true[idx] / s - t for idx, s, t in zip(ChunkLayout().chunk_frames(n), scales, shifts, strict=True)]
    return true, chunks


def test_stitching_recovers_the_true_sequence_and_each_chunks_scale():
    n = 80  # four chunks
    scales, shifts = [2.0, 0.5, 3.0, 1.25], [-0.2, 0.3, -1.0, 0.7]
    true, chunks = synthetic_chunks(n, scales, shifts)
    depth, got_scales, got_shifts = stitch_chunks(chunks, n, metric=False)
    assert depth.shape == (n, 6, 8) and depth.dtype == np.float32
    # everything lands on the first chunk's affine map of the truth
    np.testing.assert_allclose(depth, true / scales[0] - shifts[0], rtol=1e-5, atol=1e-5)
    expected_scales = [s / scales[0] for s in scales]
    expected_shifts = [s * t / scales[0] - shifts[0] for s, t in zip(scales, shifts, strict=True)]
    np.testing.assert_allclose(got_scales, expected_scales, rtol=1e-6)
    np.testing.assert_allclose(got_shifts, expected_shifts, rtol=1e-6, atol=1e-6)


def test_stitching_blends_the_overlap_linearly():
    n = 40
    true, chunks = synthetic_chunks(n, [1.0, 1.0], [0.0, 0.0], seed=1)
    delta = 0.5
    chunks[1][2:10] += delta  # chunk 1 sees frames 24..31 differently; slots 0 and 1 still agree
    depth, scales, shifts = stitch_chunks(chunks, n, metric=False)
    np.testing.assert_allclose([scales[1], shifts[1]], [1.0, 0.0], atol=1e-6)
    np.testing.assert_allclose(depth[:24], true[:24], rtol=1e-6)
    w = np.arange(8) / 7  # 0, 1/7, ..., 1 towards the newer chunk
    np.testing.assert_allclose(depth[24:32], true[24:32] + delta * w[:, None, None], rtol=1e-5)
    np.testing.assert_allclose(depth[32:], true[32:], rtol=1e-6)
    np.testing.assert_allclose(blend_weights(8), w)


def test_metric_stitching_neither_scales_nor_shifts():
    n = 80
    scales, shifts = [1.0, 0.5, 2.0, 1.5], [0.0, -0.1, -0.2, -0.3]
    _, chunks = synthetic_chunks(n, scales, shifts)
    depth, got_scales, got_shifts = stitch_chunks(chunks, n, metric=True)
    assert got_scales == [1.0] * 4 and got_shifts == [0.0] * 4
    np.testing.assert_allclose(depth[:24], chunks[0][:24])
    np.testing.assert_allclose(depth[32:46], chunks[1][10:24])  # chunk 1's new frames, as the network gave them
    np.testing.assert_allclose(depth[76:80], chunks[3][10:14])
    w = np.arange(8)[:, None, None] / 7
    np.testing.assert_allclose(depth[24:32], chunks[0][24:32] * (1 - w) + chunks[1][2:10] * w, rtol=1e-6)
    relative, _, _ = stitch_chunks(chunks, n, metric=False)
    assert not np.allclose(relative[40:], depth[40:])  # the relative mode would have rescaled them


def test_fit_scale_shift():
    rng = np.random.default_rng(3)
    p = rng.normal(size=(2, 10, 10))
    assert np.allclose(fit_scale_shift(p, 2.5 * p - 0.75), (2.5, -0.75))
    assert fit_scale_shift(np.full((2, 4, 4), 3.0), p[:, :4, :4]) == (1.0, 0.0)  # no fit for a constant


def test_stitching_rejects_wrong_chunk_lengths():
    with pytest.raises(ValueError, match="32 frames"):
        stitch_chunks([np.zeros((31, 2, 2))], 10, metric=False)


# ----------------------------------------------------------------------------- streaming pieces


def test_cache_window_follows_the_official_bookkeeping():
    window = CacheWindow()
    assert window.gap == 41
    seen = {}
    for frame in range(60):
        if window.entries:
            seen[frame] = window.window()
        window.push(frame)
        assert len(window.entries) <= 42
    assert all(len(w) == 31 for w in seen.values())
    assert seen[1] == [0] * 31  # the first frame stands in for the missing ones
    assert seen[3] == [0] * 29 + [1, 2]
    assert seen[11] == [0] * 21 + list(range(1, 11))
    assert seen[50] == [0, 9, *range(21, 50)]  # first frame, one 41 back, the last 29
    assert window.entries == [0, *range(19, 60)]


def test_cached_attention_equals_full_attention_on_the_last_frame():
    torch.manual_seed(0)
    attention = TemporalAttention(64, max_len=32).eval()
    x = torch.randn(2 * 32, 5, 64)  # (B*T, L, C), B = 2 clips of 32 frames
    with torch.no_grad():
        full = attention(x, 32)
        _, inputs = attention_step(attention, x[:, :, :], 32, None)  # (B*L, T, C)
        last = x.view(2, 32, 5, 64)[:, -1]  # (B, L, C)
        out, state = attention_step(attention, last, 1, inputs[:, :31])
    np.testing.assert_allclose(out.numpy(), full.view(2, 32, 5, 64)[:, -1].numpy(), rtol=1e-4, atol=1e-5)
    assert state.shape == (10, 1, 64)


# ----------------------------------------------------------------------------- the backend


def fill(model, seed: int = 0):
    """A deterministic random fill of every float entry (as in the reference of the network test), so
    the random network's depth varies over the image and over time."""
    state = model.state_dict()
    for i, key in enumerate(sorted(state)):
        if state[key].is_floating_point():
            state[key] = torch.randn(state[key].shape, generator=torch.Generator().manual_seed(seed + i)) * 0.05
    model.load_state_dict(state)
    return model


def build(weights="random:tiny", seed: int = 0, **settings):
    cfg = vda.VideoDepthAnythingConfig(weights=weights, input_size=INPUT, **settings)
    backend = registry.create("depth", cfg, BuildContext(runtime=RuntimeConfig(device="cpu")))
    fill(backend.inference.model, seed)
    return backend


@pytest.fixture(scope="module")
def video():
    """40 frames (more than one chunk): a scene moving right, noise changing every frame."""
    base = scene(0, (SIZE[0], SIZE[1] + 40))
    rng = np.random.default_rng(1)
    return [np.clip(base[:, t : t + SIZE[1]].astype(int) + rng.integers(-20, 20, (*SIZE, 3)), 0, 255).astype(np.uint8)
            for t in range(40)]


@pytest.fixture(scope="module")
def relative():
    return build()


@pytest.fixture(scope="module")
def span(relative, video):
    """The relative backend's depth_span of the 40 frames (two chunks)."""
    return relative.depth_span(video)


def official_offline(model, frames, input_size, metric=None):
    """The official `infer_video_depth` (video_depth.py) and its utilities, transcribed step for step,
    in float32 on the CPU: chunk by chunk, the keyframes copied from the previous chunk's input."""
    fh, fw = frames[0].shape[:2]
    ratio = max(fh, fw) / min(fh, fw)
    if ratio > 1.78:
        input_size = round(int(input_size * 1.777 / ratio) / 14) * 14

    def constrain(x, min_val):  # Resize.constrain_to_multiple_of
        y = (np.round(x / 14) * 14).astype(int)
        return (np.ceil(x / 14) * 14).astype(int) if y < min_val else y

    scale_h, scale_w = input_size / fh, input_size / fw
    scale_h = scale_w = max(scale_h, scale_w)  # keep_aspect_ratio, lower_bound
    h, w = constrain(scale_h * fh, input_size), constrain(scale_w * fw, input_size)

    def transform(image):
        image = cv2.resize(image, (int(w), int(h)), interpolation=cv2.INTER_CUBIC)
        image = (image - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
        return np.ascontiguousarray(np.transpose(image, (2, 0, 1))).astype(np.float32)

    INFER_LEN, OVERLAP, INTERP_LEN = 32, 10, 8
    frame_list = list(frames)
    frame_step = INFER_LEN - OVERLAP
    org_video_len = len(frame_list)
    append_frame_len = (frame_step - (org_video_len % frame_step)) % frame_step + (INFER_LEN - frame_step)
    frame_list = frame_list + [frame_list[-1].copy()] * append_frame_len
    depth_list, pre_input = [], None
    for frame_id in range(0, org_video_len, frame_step):
        cur_list = [torch.from_numpy(transform(frame_list[frame_id + i].astype(np.float32) / 255.0))[None, None]
                    for i in range(INFER_LEN)]
        cur_input = torch.cat(cur_list, dim=1)
        if pre_input is not None:
            cur_input[:, :OVERLAP, ...] = pre_input[:, list(KEYFRAMES), ...]
        with torch.no_grad():
            depth = model(cur_input)
        depth = F.interpolate(depth.flatten(0, 1).unsqueeze(1), size=(fh, fw), mode="bilinear", align_corners=True)
        depth_list += [depth[i][0].numpy() for i in range(depth.shape[0])]
        pre_input = cur_input

    def compute_scale_and_shift(prediction, target):  # utils/util.py, mask all ones
        prediction, target = prediction.astype(np.float32), target.astype(np.float32)
        a_00, a_01, a_11 = np.sum(prediction * prediction), np.sum(prediction), np.float32(prediction.size)
        b_0, b_1 = np.sum(prediction * target), np.sum(target)
        det = a_00 * a_11 - a_01 * a_01
        return ((a_11 * b_0 - a_01 * b_1) / det, (-a_01 * b_0 + a_00 * b_1) / det) if det != 0 else (1, 0)

    def get_interpolate_frames(pre, post):
        step = 1.0 / (len(pre) - 1)
        weights = [0.0] + [i * step for i in range(1, len(pre) - 1)] + [1.0]
        return [pre[i] * (1 - weights[i]) + post[i] * weights[i] for i in range(len(pre))]

    aligned, ref_align = [], []
    align_len = OVERLAP - INTERP_LEN
    kf_align_list = KEYFRAMES[:align_len]
    for frame_id in range(0, len(depth_list), INFER_LEN):
        if not aligned:
            aligned += depth_list[:INFER_LEN]
            ref_align += [depth_list[frame_id + k] for k in kf_align_list]
            continue
        curr_align = [depth_list[frame_id + i] for i in range(len(kf_align_list))]
        if model.metric if metric is None else metric:
            scale, shift = 1.0, 0.0
        else:
            scale, shift = compute_scale_and_shift(np.concatenate(curr_align), np.concatenate(ref_align))
        post = [np.maximum(d * scale + shift, 0) for d in depth_list[frame_id + align_len : frame_id + OVERLAP]]
        aligned[-INTERP_LEN:] = get_interpolate_frames(aligned[-INTERP_LEN:], post)
        aligned += [np.maximum(depth_list[frame_id + i] * scale + shift, 0) for i in range(OVERLAP, INFER_LEN)]
        ref_align = ref_align[:1] + [np.maximum(depth_list[frame_id + k] * scale + shift, 0)
                                     for k in kf_align_list[1:]]
    return np.stack(aligned[:org_video_len])


def assert_close(a, b, rel=2e-4):
    assert np.abs(a - b).max() <= rel * np.abs(b).max(), np.abs(a - b).max() / np.abs(b).max()


def test_backend_satisfies_the_depth_protocols(relative):
    assert isinstance(relative, SpanDepthEstimator) and isinstance(relative, DepthEstimator)
    assert relative.name == "video-depth-anything" and not relative.is_metric


def test_depth_span_equals_the_official_procedure(relative, video, span):
    maps = span
    assert len(maps) == len(video)
    for m in maps:
        assert m.depth_m.shape == SIZE and m.depth_m.dtype == np.float32 and m.is_metric is False
    depth = np.stack([m.depth_m for m in maps])
    assert depth.std(axis=(1, 2)).min() > 0 and np.ptp(depth.mean(axis=(1, 2))) > 0  # varies in space and time
    expected = official_offline(relative.inference.model, video, INPUT)
    assert_close(depth, expected)


def test_relative_alignment_undoes_each_chunks_scale_and_shift(relative, video, span, monkeypatch):
    """The network's output for chunk k multiplied by 2**k and shifted by k/100: depth_span is unchanged
    (each chunk is fitted onto the first), which scale 1 / shift 0 (the metric mode) would not be."""
    model = relative.inference.model
    forward, calls = model.forward, []

    def skewed(x):
        calls.append(len(x))
        k = len(calls) - 1
        return forward(x) * 2.0**k + k / 100

    monkeypatch.setattr(model, "forward", skewed)
    depth = np.stack([m.depth_m for m in relative.depth_span(video)])
    assert calls == [1, 1]
    assert_close(depth, np.stack([m.depth_m for m in span]), rel=1e-4)
    monkeypatch.setattr(relative.inference.model, "metric", True)
    calls.clear()
    unaligned = relative.inference.infer(video)
    assert_close(unaligned[:24], depth[:24], rel=1e-5)
    assert unaligned[32:].mean() > 1.8 * depth[32:].mean()


def test_chunk_batches_give_the_same_depth(video, span):
    two = build(chunk_batch=2).depth_span(video)  # both chunks in one call
    assert_close(np.stack([m.depth_m for m in two]), np.stack([m.depth_m for m in span]), rel=1e-5)


def test_metric_checkpoint_kind_is_kept_and_not_rescaled(video):
    metric = build("random:metric-tiny", seed=5)
    assert metric.is_metric and metric.inference.model.metric
    maps = metric.depth_span(video)
    assert len(maps) == 40 and all(m.is_metric for m in maps)
    assert_close(np.stack([m.depth_m for m in maps]), official_offline(metric.inference.model, video, INPUT))


def test_streaming_depth_runs_frame_by_frame(relative, video):
    relative.reset()
    by_three = []
    for i in range(0, 45, 3):  # 45 frames: past the point where the cache stops growing (frame 11)
        batch = (video + video[:5])[i : i + 3]
        out = relative.depth(batch, [], [])
        assert len(out) == len(batch)
        by_three += out
    assert len(by_three) == 45
    assert all(m.depth_m.shape == SIZE and m.depth_m.dtype == np.float32 and not m.is_metric for m in by_three)
    assert len(relative._stream.window.entries) == 42

    relative.reset()  # a new clip: same frames one at a time give the same depth
    one_by_one = [relative.depth([f], [], [])[0] for f in (video + video[:5])[:12]]
    for a, b in zip(one_by_one, by_three[:12], strict=True):
        assert_close(a.depth_m, b.depth_m, rel=1e-5)

    # the first frame runs alone: the network's forward on a one-frame clip
    x = preprocess(video[:1], network_size(*SIZE, INPUT))
    with torch.no_grad():
        alone = relative.inference.model(x[None])[0]
    alone = F.interpolate(alone[:, None], size=SIZE, mode="bilinear", align_corners=True)[0, 0].numpy()
    assert_close(one_by_one[0].depth_m, alone, rel=1e-5)
    # later frames see the earlier ones: not what they give alone
    with torch.no_grad():
        later = relative.inference.model(preprocess(video[11:12], network_size(*SIZE, INPUT))[None])[0, 0]
    later = F.interpolate(later[None, None], size=SIZE, mode="bilinear", align_corners=True)[0, 0].numpy()
    assert not np.allclose(one_by_one[11].depth_m, later, rtol=1e-3)

    with pytest.raises(ValueError, match="reset"):
        relative.depth([np.zeros((32, 32, 3), np.uint8)], [], [])
    relative.reset()


def test_head_step_without_cache_is_the_network_head(relative, video):
    model = relative.inference.model
    x = preprocess(video[:6], network_size(*SIZE, INPUT))
    with torch.no_grad():
        tokens = model.pretrained.features(x)
        expected = model.head(tokens, (2, 3), 6)
        got, states = head_step(model.head, tokens, (2, 3), 6)
    np.testing.assert_allclose(got.numpy(), expected.numpy(), rtol=1e-5, atol=1e-6)
    assert len(states) == 8 and states[0].shape[1] == 6


# ----------------------------------------------------------------------------- config and weights


def test_config_validation_and_stage_check():
    cfg = PerceptionConfig(depth={"name": "video-depth-anything", "weights": "random:tiny", "chunk_batch": 2})
    assert isinstance(cfg.depth, vda.VideoDepthAnythingConfig) and cfg.depth.chunk_batch == 2
    default = vda.VideoDepthAnythingConfig()
    assert default.weights == "depth-anything/Metric-Video-Depth-Anything-Small"
    assert (default.input_size, default.chunk, default.overlap) == (518, 32, 10)
    for bad in ({"weights": "random:vitx"}, {"weights": "someone/else"}, {"chunk": 8, "overlap": 7},
                {"chunk": 33}, {"variant": "video_depth_anything_vitx"}):
        with pytest.raises(ValueError):
            vda.VideoDepthAnythingConfig(**bad)


def test_weight_files_and_licences():
    def files(weights):
        return vda.vda_weights(vda.VideoDepthAnythingConfig(weights=weights))

    (small,) = files("depth-anything/Metric-Video-Depth-Anything-Small")
    assert (small.source, small.licence, small.files) == ("huggingface", "Apache-2.0",
                                                         ("metric_video_depth_anything_vits.pth",))
    assert small.url.endswith("/resolve/main/metric_video_depth_anything_vits.pth") and small.size_mb > 100
    assert files("depth-anything/Video-Depth-Anything-Small")[0].licence == "Apache-2.0"
    for name in ("Video-Depth-Anything-Base", "Video-Depth-Anything-Large", "Metric-Video-Depth-Anything-Large"):
        (wf,) = files(f"depth-anything/{name}")
        assert wf.licence == "CC-BY-NC-4.0" and wf.files[0].endswith(("vitb.pth", "vitl.pth"))
    assert files("random:tiny") == []
    (local,) = files("/nowhere/video_depth_anything_vitb.pth")
    assert (local.source, local.licence) == ("local", "CC-BY-NC-4.0")


def test_local_checkpoints_load_strictly(tmp_path):
    from crashcast.perception.models.video_depth_anything import VARIANTS, VideoDepthAnything

    assert {k: vda.ARCHITECTURES[v[0]] | {"metric": v[1]} for k, v in vda.VARIANT_NAMES.items() if k in VARIANTS} == {
        k: {"encoder": c.encoder, "features": c.features, "out_channels": c.out_channels, "metric": c.metric}
        for k, c in VARIANTS.items()}
    state = {k: torch.zeros(()).expand(v.shape) for k, v in VideoDepthAnything(**vda.ARCHITECTURES["vits"]).state_dict().items()}
    # a hub id found in the weights folder (<dir>/<org>/<name>/<file>): relative kind
    folder = tmp_path / "depth-anything" / "Video-Depth-Anything-Small"
    folder.mkdir(parents=True)
    torch.save(state, folder / "video_depth_anything_vits.pth")
    ctx = BuildContext(runtime=RuntimeConfig(device="cpu", weights_dir=str(tmp_path)))
    cfg = vda.VideoDepthAnythingConfig(weights="depth-anything/Video-Depth-Anything-Small", input_size=INPUT)
    backend = registry.create("depth", cfg, ctx)
    assert not backend.is_metric and all(not p.any() for p in backend.inference.model.parameters())
    # a file of one's own: the kind from `variant`
    own = tmp_path / "mine.pth"
    torch.save(state, own)
    cpu = BuildContext(runtime=RuntimeConfig(device="cpu"))
    with pytest.raises(Exception, match="variant"):
        registry.create("depth", vda.VideoDepthAnythingConfig(weights=str(own)), cpu)
    backend = registry.create("depth", vda.VideoDepthAnythingConfig(
        weights=str(own), variant="metric_video_depth_anything_vits", input_size=INPUT), cpu)
    assert backend.is_metric
    (m,) = backend.depth_span([np.zeros((*SIZE, 3), np.uint8)])
    assert m.is_metric and m.depth_m.shape == SIZE and not m.depth_m.any()


def test_backend_module_import_leaves_torch_alone():
    code = ("import sys, crashcast.perception.models.vda as v; v.VideoDepthAnythingConfig(chunk=16, overlap=6); "
            "assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_a_hub_checkpoint_missing_offline_says_what_to_fetch(offline_caches):
    from crashcast.config import RuntimeConfig
    from crashcast.perception.models import vda
    from crashcast.perception.spec import BuildContext
    from crashcast.runtime.weights import WeightsUnavailable

    cfg = vda.VideoDepthAnythingConfig(weights="depth-anything/Metric-Video-Depth-Anything-Small")
    with pytest.raises(WeightsUnavailable, match="Metric-Video-Depth-Anything-Small") as e:
        vda.checkpoint_path(cfg, BuildContext(runtime=RuntimeConfig(device="cpu")))
    assert "metric_video_depth_anything_vits.pth" in str(e.value)


def test_frames_wider_than_the_official_ratio_are_named_once(caplog):
    from crashcast.perception.models import vda
    from crashcast.perception.models.video_depth_anything.inference import VideoDepthInference
    from crashcast.perception.models.video_depth_anything.network import VideoDepthAnything

    inference = VideoDepthInference(VideoDepthAnything(**vda.ARCHITECTURES["tiny"]), input_size=518)
    with caplog.at_level("WARNING", logger="crashcast.perception.models.video_depth_anything.inference"):
        assert inference.size_for(198, 640) == (280, 910)  # the official rule's smaller input
        assert inference.size_for(198, 640) == (280, 910)
        assert inference.size_for(360, 640) == (518, 924)  # 16:9 keeps 518
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and "640x198" in warnings[0] and "limit_aspect" in warnings[0]
