"""Video Depth Anything inference: the official procedure around the network (`network.py`).

Written from the official `video_depth.py` (offline) and `video_depth_stream.py` (streaming);
the numbers are theirs ("infer settings, do not change").

Input (both forms): each (H, W, 3) uint8 RGB frame is scaled to [0, 1], resized with cv2's bicubic
filter so that the short side is `input_size` (518) and both sides are multiples of 14 (keeping the
aspect ratio, rounding each side to the nearest multiple but never below `input_size`), and
normalised with the ImageNet mean and std. Frames wider than 1.78:1 get a smaller `input_size`,
int(518 * 1.777 / ratio) rounded to a multiple of 14, so a wide frame costs about what a 16:9 one
does (`limit_aspect=False` keeps 518). Depth is resized back to the frame (bilinear, align_corners).

Offline (`VideoDepthInference.infer`): chunks of 32 frames start every 22 (overlap 10); the frames
past the end are copies of the last one. In chunk k > 0 the first 10 input slots are chunk k-1's
inputs at `KEYFRAMES` (slots 0, 12, 24..31): slot 0 is always the first frame of the video, slot 1
a frame from the middle of the previous chunk, slots 2..9 the previous chunk's last 8 frames.
Stitching (`ChunkStitcher`): relative depth of chunk k is mapped onto the first chunk's scale by a
least-squares scale and shift fitted on its slots 0 and 1 against the aligned depth those frames got
before, then clipped at 0; its slots 2..9 are blended with the previous chunk's last 8 frames
(weights 0, 1/7, ..., 1 towards the new chunk); its slots 10..31 are new frames. Metric depth keeps
scale 1, shift 0 (the official code for the metric checkpoints). Chunk inputs depend only on the
frames, never on outputs, so chunks run `chunk_batch` at a time (the official loop runs one).

Streaming (`VideoDepthStream`): the official streaming form. Each frame runs the encoder alone;
the head's temporal attention layers take, as keys and values, the inputs they saw for 31 earlier
frames (the first frame of the clip, one about 41 frames back and the last 29: `CacheWindow`), with
the new frame last; the cache holds at most 42 frames. Its first frame runs alone and stands in for
the 31 missing ones. No alignment: the output of each frame is the network's own.

Precision: float16 autocast on CUDA (the official default), float32 elsewhere; the head's last
convolutions run in float32 in the streaming form, as in the official head.
"""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:  # torch is imported where it is used: the layout and stitching need only numpy
    from torch import Tensor

    from .dpt_temporal import DPTTemporalHead, MotionModule, TemporalAttention
    from .network import VideoDepthAnything

PATCH = 14  # the ViT patch (dinov2.PATCH)
INPUT_SIZE = 518
INFER_LEN = 32
OVERLAP = 10
KEYFRAMES = (0, 12, 24, 25, 26, 27, 28, 29, 30, 31)
INTERP_LEN = 8
#: frames wider than this get a smaller input size (official: "memory limitation")
MAX_RATIO = 1.78
WIDE_RATIO = 1.777
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

log = logging.getLogger(__name__)


# ----------------------------------------------------------------------------- chunk layout


@dataclass(frozen=True)
class ChunkLayout:
    """How a video is cut into chunks: `length` frames each, the first `overlap` input slots of a
    chunk taken from the previous chunk's `keyframes`; the first `overlap - interp` of those align
    the chunk's scale, the last `interp` (the previous chunk's last frames) are blended.

    `ChunkLayout()` is the official one (32, 10, 8, KEYFRAMES); `make(length, overlap)` builds
    others by the same rule (an extrapolation: the checkpoints were trained on 32-frame clips)."""

    length: int = INFER_LEN
    overlap: int = OVERLAP
    interp: int = INTERP_LEN
    keyframes: tuple[int, ...] = KEYFRAMES

    def __post_init__(self) -> None:
        tail = tuple(range(self.length - self.interp, self.length))
        problems = []
        if len(self.keyframes) != self.overlap:
            problems.append(f"{len(self.keyframes)} keyframes for an overlap of {self.overlap}")
        if self.interp < 2 or self.align < 1:
            problems.append(f"overlap {self.overlap} must leave >= 1 alignment frame and >= 2 blended ones "
                            f"(interp {self.interp})")
        if self.step < self.interp:
            problems.append(f"a chunk of {self.length} with overlap {self.overlap} adds fewer new frames "
                            f"than it blends ({self.interp})")
        if tuple(self.keyframes[self.align:]) != tail or self.keyframes[:1] != (0,):
            problems.append(f"keyframes {self.keyframes} must start at 0 and end with {tail}")
        if problems:
            raise ValueError("invalid chunk layout: " + "; ".join(problems))

    @classmethod
    def make(cls, length: int = INFER_LEN, overlap: int = OVERLAP) -> ChunkLayout:
        """The official layout for (32, 10); otherwise 2 alignment keyframes (0 and min(12, ...)) and
        the chunk's last `overlap - 2` frames, as the official list is built."""
        if (length, overlap) == (INFER_LEN, OVERLAP):
            return cls()
        interp = overlap - (OVERLAP - INTERP_LEN)
        second = min(KEYFRAMES[1], length - interp - 1)
        if second < 1:
            raise ValueError(f"invalid chunk layout: chunk {length} is too short for overlap {overlap}")
        return cls(length, overlap, interp, (0, second, *range(length - interp, length)))

    @property
    def step(self) -> int:
        """Frames between chunk starts (22)."""
        return self.length - self.overlap

    @property
    def align(self) -> int:
        """Leading slots whose depth fits the chunk's scale and shift (2)."""
        return self.overlap - self.interp

    def chunk_starts(self, n_frames: int) -> range:
        return range(0, n_frames, self.step)

    def padded_length(self, n_frames: int) -> int:
        """Frames after padding with copies of the last frame (the official `append_frame_len`)."""
        return n_frames + (self.step - n_frames % self.step) % self.step + self.overlap

    def chunk_frames(self, n_frames: int) -> list[list[int]]:
        """For each chunk, the video frame index in each of its `length` input slots."""
        chunks: list[list[int]] = []
        for start in self.chunk_starts(n_frames):
            fresh = [min(start + i, n_frames - 1) for i in range(self.length)]
            if chunks:
                fresh[: self.overlap] = [chunks[-1][k] for k in self.keyframes]
            chunks.append(fresh)
        return chunks


# ----------------------------------------------------------------------------- stitching


def fit_scale_shift(prediction: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Least-squares (scale, shift) with scale * prediction + shift ~ target over all elements
    (the official `compute_scale_and_shift`, summed in float64); (1, 0) for a constant prediction."""
    p = np.asarray(prediction, np.float64).ravel()
    t = np.asarray(target, np.float64).ravel()
    a00, a01, a11 = float(p @ p), float(p.sum()), float(p.size)
    b0, b1 = float(p @ t), float(t.sum())
    det = a00 * a11 - a01 * a01
    if det <= 1e-12 * a00 * a11:  # det >= 0 (Cauchy-Schwarz); 0 iff the prediction is constant
        return 1.0, 0.0
    return (a11 * b0 - a01 * b1) / det, (a00 * b1 - a01 * b0) / det


def blend_weights(n: int) -> np.ndarray:
    """Weight of the newer chunk over `n` blended frames: 0, 1/(n-1), ..., 1."""
    return np.arange(n) / (n - 1)


class ChunkStitcher:
    """Joins chunk outputs into one sequence as the official offline inference does.

    `add(chunk)` takes each chunk's depth, (length, H, W), in order; `result(n)` gives the first
    `n` aligned frames (n, H, W) float32. `scales`/`shifts`: each chunk's map onto the first's."""

    def __init__(self, metric: bool, layout: ChunkLayout | None = None) -> None:
        self.metric = metric
        self.layout = layout or ChunkLayout()
        self.frames: list[np.ndarray] = []
        self.scales: list[float] = []
        self.shifts: list[float] = []
        self._reference: list[np.ndarray] = []  # aligned depth of the frames in the next chunk's slots 0..align-1

    def add(self, chunk: np.ndarray) -> None:
        lay = self.layout
        if len(chunk) != lay.length:
            raise ValueError(f"a chunk has {lay.length} frames, got {len(chunk)}")
        if not self.frames:
            self.frames = [np.asarray(d, np.float32) for d in chunk]
            self._reference = [self.frames[k] for k in lay.keyframes[: lay.align]]
            self.scales.append(1.0)
            self.shifts.append(0.0)
            return
        if self.metric:
            scale, shift = 1.0, 0.0
        else:
            scale, shift = fit_scale_shift(np.stack(chunk[: lay.align]), np.stack(self._reference))
        self.scales.append(scale)
        self.shifts.append(shift)

        def aligned(i: int) -> np.ndarray:
            return np.maximum(chunk[i] * np.float32(scale) + np.float32(shift), 0, dtype=np.float32)

        for w, j in zip(blend_weights(lay.interp), range(lay.align, lay.overlap), strict=True):
            k = len(self.frames) - lay.overlap + j  # the previous chunk's frame in slot j
            self.frames[k] = (self.frames[k] * np.float32(1 - w) + aligned(j) * np.float32(w)).astype(np.float32)
        self.frames += [aligned(i) for i in range(lay.overlap, lay.length)]
        self._reference = self._reference[:1] + [aligned(k) for k in lay.keyframes[1 : lay.align]]

    def result(self, n_frames: int) -> np.ndarray:
        if n_frames > len(self.frames):
            raise ValueError(f"{n_frames} frames asked, {len(self.frames)} stitched")
        return np.stack(self.frames[:n_frames]) if n_frames else np.zeros((0, 0, 0), np.float32)


def stitch_chunks(chunks: Sequence[np.ndarray], n_frames: int, metric: bool,
                  layout: ChunkLayout | None = None) -> tuple[np.ndarray, list[float], list[float]]:
    """(n_frames, H, W) depth from per-chunk outputs (each (length, H, W), in the slot order of
    `ChunkLayout.chunk_frames`), with each chunk's scale and shift."""
    stitcher = ChunkStitcher(metric, layout)
    for chunk in chunks:
        stitcher.add(chunk)
    return stitcher.result(n_frames), stitcher.scales, stitcher.shifts


# ----------------------------------------------------------------------------- input


def network_size(height: int, width: int, input_size: int = INPUT_SIZE, limit_aspect: bool = True) -> tuple[int, int]:
    """(h, w) the network sees for a (height, width) frame: the official Resize(keep_aspect_ratio,
    ensure_multiple_of=14, 'lower_bound'), after the wide-frame reduction of `input_size`."""
    ratio = max(height, width) / min(height, width)
    if limit_aspect and ratio > MAX_RATIO:
        input_size = max(PATCH, round(int(input_size * WIDE_RATIO / ratio) / PATCH) * PATCH)
    scale = max(input_size / height, input_size / width)

    def side(x: float) -> int:
        y = int(np.round(x / PATCH) * PATCH)  # numpy rounding (half to even), as the official code
        return y if y >= input_size else int(math.ceil(x / PATCH) * PATCH)

    return side(scale * height), side(scale * width)


def check_frames(frames: Sequence[np.ndarray], shape: tuple[int, ...] | None = None) -> tuple[int, int]:
    """(H, W) of same-sized (H, W, 3) uint8 frames."""
    shape = shape or frames[0].shape
    for i, f in enumerate(frames):
        if f.dtype != np.uint8 or f.ndim != 3 or f.shape[-1] != 3 or f.shape != shape:
            raise ValueError(f"frame {i}: expected (H, W, 3) uint8 frames of shape {tuple(shape)}, got "
                             f"{f.shape} {f.dtype}")
    return int(shape[0]), int(shape[1])


def preprocess(frames: Sequence[np.ndarray], size: tuple[int, int]) -> Tensor:
    """(N, 3, h, w) float32 network input from (H, W, 3) uint8 RGB frames (the official transform)."""
    import cv2
    import torch

    h, w = size
    mean, std = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    out = np.empty((len(frames), h, w, 3), np.float32)
    for i, frame in enumerate(frames):
        resized = cv2.resize(frame.astype(np.float32) / 255.0, (w, h), interpolation=cv2.INTER_CUBIC)
        out[i] = (resized - mean) / std
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def to_frame_size(depth: Tensor, size: tuple[int, int]) -> np.ndarray:
    """(N, h, w) network depth -> (N, H, W) float32 numpy (bilinear, align_corners)."""
    import torch.nn.functional as F

    depth = F.interpolate(depth.float().unsqueeze(1), size=size, mode="bilinear", align_corners=True)
    return depth[:, 0].cpu().numpy()


# ----------------------------------------------------------------------------- offline


class VideoDepthInference:
    """The network with the official pre/post-processing: `infer(frames)` for a whole video,
    `stream()` for the causal per-frame form. The model keeps float32 weights; on CUDA it runs
    under autocast in `dtype` (float16 by default), elsewhere in float32."""

    def __init__(self, model: VideoDepthAnything, device: str = "cpu", dtype: Any = None,
                 input_size: int = INPUT_SIZE, layout: ChunkLayout | None = None, chunk_batch: int = 1,
                 limit_aspect: bool = True) -> None:
        import torch

        self.layout = layout or ChunkLayout()
        if self.layout.length > model.config.num_frames:
            raise ValueError(f"chunks of {self.layout.length} frames exceed the network's "
                             f"{model.config.num_frames}-frame position table")
        self.model = model.to(device=device, dtype=torch.float32).eval()
        self.device = device
        self.dtype = dtype if dtype is not None else torch.float32
        self.input_size = input_size
        self.chunk_batch = chunk_batch
        self.limit_aspect = limit_aspect
        self._warned: set[tuple[int, int]] = set()

    @property
    def metric(self) -> bool:
        return bool(self.model.metric)

    def autocast(self) -> contextlib.AbstractContextManager:
        import torch

        if torch.device(self.device).type == "cuda" and self.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.dtype)
        return contextlib.nullcontext()

    def size_for(self, height: int, width: int) -> tuple[int, int]:
        size = network_size(height, width, self.input_size, self.limit_aspect)
        if min(size) < self.input_size and (height, width) not in self._warned:
            self._warned.add((height, width))  # once per frame size: a sky crop makes frames this wide
            log.warning("Video Depth Anything: %dx%d frames are wider than 1.78:1, so the official rule runs them at "
                        "%dx%d instead of %d px on the short side (set limit_aspect: false to keep %d, at more memory)",
                        width, height, size[1], size[0], self.input_size, self.input_size)
        return size

    def infer(self, frames: Sequence[np.ndarray]) -> np.ndarray:
        """(T, H, W) float32 depth of T same-sized frames in time order (official offline inference)."""
        import torch

        n = len(frames)
        if n == 0:
            return np.zeros((0, 0, 0), np.float32)
        frame_size = check_frames(frames)
        size = self.size_for(*frame_size)
        lay = self.layout
        stitcher = ChunkStitcher(self.metric, lay)
        previous: Tensor | None = None
        pending: list[Tensor] = []
        for start in lay.chunk_starts(n):
            first = 0 if previous is None else lay.overlap
            index = [min(start + i, n - 1) for i in range(first, lay.length)]
            unique = sorted(set(index))
            fresh = preprocess([frames[i] for i in unique], size)[[unique.index(i) for i in index]]
            chunk = fresh if previous is None else torch.cat([previous[list(lay.keyframes)], fresh])
            pending.append(chunk)
            previous = chunk
            if len(pending) == self.chunk_batch:
                self._run(pending, stitcher, frame_size)
                pending = []
        if pending:
            self._run(pending, stitcher, frame_size)
        return stitcher.result(n)

    def _run(self, chunks: list[Tensor], stitcher: ChunkStitcher, frame_size: tuple[int, int]) -> None:
        import torch

        x = torch.stack(chunks).to(self.device)
        with torch.inference_mode(), self.autocast():
            depth = self.model(x)  # (B, length, h, w)
        for clip in depth:
            stitcher.add(to_frame_size(clip, frame_size))

    def stream(self) -> VideoDepthStream:
        return VideoDepthStream(self)


# ----------------------------------------------------------------------------- streaming


class CacheWindow:
    """The official streaming cache: one entry per frame seen, at most `gap + 1` (42) kept.

    `window()`: the `length - 1` (31) entries the next frame attends to: the first two kept (the
    clip's first frame, then the oldest other one) and the last `length - 3` (29). The first frame's
    entry fills the whole window when pushed (`length` copies)."""

    def __init__(self, layout: ChunkLayout | None = None) -> None:
        lay = layout or ChunkLayout()
        if lay.length < 4:
            raise ValueError("streaming needs chunks of at least 4 frames")
        self.length = lay.length
        self.gap = lay.step * 2 - 1 - lay.align  # 41
        self.entries: list[Any] = []
        self.count = 0  # frames pushed

    def window(self) -> list[Any]:
        return self.entries[:2] + self.entries[-(self.length - 3):]

    def push(self, entry: Any) -> None:
        if self.entries:
            self.entries.append(entry)
        else:
            self.entries = [entry] * self.length
        if self.count + self.length > self.gap + 1:
            del self.entries[1]
        self.count += 1


def attention_step(attention: TemporalAttention, x: Tensor, frames: int, cache: Tensor | None) -> tuple[Tensor, Tensor]:
    """Temporal attention with earlier frames' inputs as extra keys/values.

    x: (B*T, L, C) this call's T frames; cache: (B*L, Tc, C) inputs of Tc earlier frames, placed
    before them (positions 0..Tc-1 of the position table). Returns the output for the T frames,
    (B*T, L, C), and their inputs (B*L, T, C), which a later call takes as cache."""
    import torch

    bt, length, dim = x.shape
    batch = bt // frames
    seq = x.view(batch, frames, length, dim).transpose(1, 2).reshape(batch * length, frames, dim)
    full = seq if cache is None else torch.cat([cache.to(seq.dtype), seq], dim=1)
    full = attention.pos_encoder(full)
    heads, head_dim = attention.heads, dim // attention.heads

    def split(t: Tensor) -> Tensor:  # (N, S, C) -> (N, heads, S, C/heads)
        return t.view(t.shape[0], t.shape[1], heads, head_dim).transpose(1, 2)

    q = split(attention.to_q(full[:, full.shape[1] - frames:]))
    k, v = split(attention.to_k(full)), split(attention.to_v(full))
    weights = ((q @ k.transpose(-2, -1)) * head_dim**-0.5).softmax(dim=-1)
    out = attention.to_out[0]((weights @ v).transpose(1, 2).reshape(batch * length, frames, dim))
    return out.view(batch, length, frames, dim).transpose(1, 2).reshape(bt, length, dim), seq


def motion_step(module: MotionModule, x: Tensor, frames: int, cache: Sequence[Tensor] | None
                ) -> tuple[Tensor, list[Tensor]]:
    """A motion module (see `dpt_temporal.TemporalTransformer`) with a cache per attention layer."""
    tt = module.temporal_transformer
    bt, channels, height, width = x.shape
    tokens = tt.proj_in(tt.norm(x).permute(0, 2, 3, 1).reshape(bt, height * width, channels))
    states: list[Tensor] = []
    for block in tt.transformer_blocks:
        for attention, norm in zip(block.attention_blocks, block.norms, strict=True):
            out, state = attention_step(attention, norm(tokens), frames,
                                        None if cache is None else cache[len(states)])
            tokens = tokens + out
            states.append(state)
        tokens = tokens + block.ff(block.ff_norm(tokens))
    out = tt.proj_out(tokens).view(bt, height, width, channels).permute(0, 3, 1, 2)
    return out + x, states


def head_step(head: DPTTemporalHead, tokens: list[Tensor], grid: tuple[int, int], frames: int,
              cache: Sequence[Tensor] | None = None) -> tuple[Tensor, list[Tensor]]:
    """`DPTTemporalHead.forward` with cached attention inputs (8: two per motion module, in module
    order); returns the depth (B*T, 1, 14h, 14w) and the new frames' attention inputs."""
    import torch
    import torch.nn.functional as F

    h, w = grid
    maps = []
    for t, project, resize in zip(tokens, head.projects, head.resize_layers, strict=True):
        maps.append(resize(project(t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], h, w))))
    per = 0 if cache is None else len(cache) // len(head.motion_modules)
    states: list[Tensor] = []

    def motion(i: int, x: Tensor) -> Tensor:
        out, new = motion_step(head.motion_modules[i], x, frames,
                               None if cache is None else cache[i * per : (i + 1) * per])
        states.extend(new)
        return out

    maps[2] = motion(0, maps[2])
    maps[3] = motion(1, maps[3])
    s = head.scratch
    r1, r2, r3, r4 = (getattr(s, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
    path = motion(2, s.refinenet4(r4, size=r3.shape[2:]))
    path = motion(3, s.refinenet3(path, r3, size=r2.shape[2:]))
    path = s.refinenet2(path, r2, size=r1.shape[2:])
    path = s.refinenet1(path, r1)
    out = F.interpolate(s.output_conv1(path), size=(PATCH * h, PATCH * w), mode="bilinear", align_corners=True)
    with torch.autocast(device_type=out.device.type, enabled=False):  # float32, as the official head
        out = s.output_conv2(out.float())
    return out, states


class VideoDepthStream:
    """Causal depth, one frame at a time (the official streaming form; see the module docstring).
    `step(frames)` takes the next frames of one clip (all the size of the first) and returns their
    depth, (H, W) float32 each; the encoder runs on them together, the head frame by frame."""

    def __init__(self, inference: VideoDepthInference) -> None:
        self.inference = inference
        self.window = CacheWindow(inference.layout)
        self.frame_shape: tuple[int, ...] | None = None

    def step(self, frames: Sequence[np.ndarray]) -> list[np.ndarray]:
        import torch

        if not len(frames):
            return []
        if self.frame_shape is None:
            self.frame_shape = frames[0].shape
        try:
            frame_size = check_frames(frames, self.frame_shape)
        except ValueError as e:
            raise ValueError(f"{e} (a stream keeps the size of its first frame; reset for a new clip)") from None
        inf = self.inference
        size = inf.size_for(*frame_size)
        grid = (size[0] // PATCH, size[1] // PATCH)
        x = preprocess(frames, size).to(inf.device)
        out = []
        with torch.inference_mode(), inf.autocast():
            features = inf.model.pretrained.features(x)
            for i in range(len(frames)):
                cache = None
                if self.window.entries:
                    window = self.window.window()
                    cache = [torch.cat([entry[j] for entry in window], dim=1) for j in range(len(window[0]))]
                depth, states = head_step(inf.model.head, [f[i : i + 1] for f in features], grid, 1, cache)
                self.window.push(states)
                out.append(to_frame_size(depth[:, 0], frame_size)[0])
        return out
