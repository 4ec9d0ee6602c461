"""Temporal DPT head of Video Depth Anything: DPT reassembly and fusion with four motion modules.

State-dict names follow the official checkpoints (`projects`, `resize_layers`, `scratch.*`,
`motion_modules.<i>.temporal_transformer.*`); the code is written from the paper and the official
code's behaviour:

- the four tapped token maps are projected (1x1 conv) and resized to strides 4, 8, 16 and 32 of the
  14-px patch grid (4x and 2x transposed convs, identity, a stride-2 3x3 conv);
- motion modules (temporal self-attention over the T frames of each spatial position) run on the two
  coarsest reassembled maps (before the 3x3 `layer*_rn` convs) and after the two coarsest fusion
  blocks (`refinenet4`, `refinenet3`);
- each motion module: per-frame GroupNorm(32, eps 1e-6) -> linear in -> one transformer block
  [2 x (LayerNorm -> sinusoidal absolute position table added to the tokens -> 8-head attention
  over time (q, k, v without bias) -> residual), LayerNorm -> GEGLU feed-forward (x4) -> residual]
  -> linear out -> residual around the whole module. The position table `pos_encoder.pe` is a
  buffer stored in the checkpoints, and it is the stored table that is used;
- output: conv3x3 (features -> features/2), bilinear (align_corners) to the 14-px grid's pixel size,
  conv3x3 -> 32, ReLU, conv1x1 -> 1, ReLU.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

MOTION_HEADS = 8
MOTION_GROUPS = 32
OUTPUT_HIDDEN = 32


def sinusoid_table(length: int, dim: int) -> Tensor:
    """(1, length, dim) table: sin at even channels, cos at odd ones, frequencies 10000^(-2i/dim)."""
    position = torch.arange(length).unsqueeze(1)
    inv_freq = torch.exp(torch.arange(0, dim, 2) * (-math.log(10000.0) / dim))
    table = torch.zeros(1, length, dim)
    table[0, :, 0::2] = torch.sin(position * inv_freq)
    table[0, :, 1::2] = torch.cos(position * inv_freq)
    return table


class SinusoidPosition(nn.Module):
    def __init__(self, dim: int, max_len: int) -> None:
        super().__init__()
        self.register_buffer("pe", sinusoid_table(max_len, dim))

    def forward(self, x: Tensor) -> Tensor:  # x: (N, T, C)
        if x.shape[1] > self.pe.shape[1]:
            raise ValueError(f"{x.shape[1]} frames exceed the position table's {self.pe.shape[1]}")
        return x + self.pe[:, : x.shape[1]].to(x.dtype)


class TemporalAttention(nn.Module):
    """Self-attention along time; tokens arrive as (B*T, L, C) and leave in the same layout."""

    def __init__(self, dim: int, max_len: int, heads: int = MOTION_HEADS) -> None:
        super().__init__()
        self.heads = heads
        self.to_q = nn.Linear(dim, dim, bias=False)
        self.to_k = nn.Linear(dim, dim, bias=False)
        self.to_v = nn.Linear(dim, dim, bias=False)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.pos_encoder = SinusoidPosition(dim, max_len)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        bt, length, dim = x.shape
        batch = bt // frames
        seq = x.view(batch, frames, length, dim).transpose(1, 2).reshape(batch * length, frames, dim)
        seq = self.pos_encoder(seq)

        def split(t: Tensor) -> Tensor:  # (N, T, C) -> (N, heads, T, C/heads)
            return t.view(t.shape[0], frames, self.heads, dim // self.heads).transpose(1, 2)

        q, k, v = split(self.to_q(seq)), split(self.to_k(seq)), split(self.to_v(seq))
        weights = ((q @ k.transpose(-2, -1)) * (dim // self.heads) ** -0.5).softmax(dim=-1)
        out = self.to_out[0]((weights @ v).transpose(1, 2).reshape(batch * length, frames, dim))
        return out.view(batch, length, frames, dim).transpose(1, 2).reshape(bt, length, dim)


class GEGLU(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, 2 * hidden)

    def forward(self, x: Tensor) -> Tensor:
        value, gate = self.proj(x).chunk(2, dim=-1)
        return value * F.gelu(gate)


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(GEGLU(dim, mult * dim), nn.Identity(), nn.Linear(mult * dim, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TemporalBlock(nn.Module):
    def __init__(self, dim: int, max_len: int, attentions: int = 2) -> None:
        super().__init__()
        self.attention_blocks = nn.ModuleList(TemporalAttention(dim, max_len) for _ in range(attentions))
        self.norms = nn.ModuleList(nn.LayerNorm(dim) for _ in range(attentions))
        self.ff = FeedForward(dim)
        self.ff_norm = nn.LayerNorm(dim)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        for attention, norm in zip(self.attention_blocks, self.norms, strict=True):
            x = x + attention(norm(x), frames)
        return x + self.ff(self.ff_norm(x))


class TemporalTransformer(nn.Module):
    def __init__(self, channels: int, max_len: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(MOTION_GROUPS, channels, eps=1e-6)
        self.proj_in = nn.Linear(channels, channels)
        self.transformer_blocks = nn.ModuleList([TemporalBlock(channels, max_len)])
        self.proj_out = nn.Linear(channels, channels)

    def forward(self, x: Tensor, frames: int) -> Tensor:  # x: (B*T, C, h, w), frame-major per clip
        bt, channels, height, width = x.shape
        tokens = self.proj_in(self.norm(x).permute(0, 2, 3, 1).reshape(bt, height * width, channels))
        for block in self.transformer_blocks:
            tokens = block(tokens, frames)
        out = self.proj_out(tokens).view(bt, height, width, channels).permute(0, 3, 1, 2)
        return out + x


class MotionModule(nn.Module):
    def __init__(self, channels: int, max_len: int) -> None:
        super().__init__()
        self.temporal_transformer = TemporalTransformer(channels, max_len)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        return self.temporal_transformer(x, frames)


class ResidualConvUnit(nn.Module):
    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, 3, padding=1)
        self.conv2 = nn.Conv2d(features, features, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv2(F.relu(self.conv1(F.relu(x))))


class FusionBlock(nn.Module):
    """Adds the (refined) skip map, refines, upsamples bilinearly (align_corners) and mixes 1x1."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, 1)

    def forward(self, x: Tensor, skip: Tensor | None = None, size: tuple[int, int] | None = None) -> Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class DPTTemporalHead(nn.Module):
    def __init__(self, in_dim: int, features: int, out_channels: list[int], num_frames: int) -> None:
        super().__init__()
        c1, c2, c3, c4 = out_channels
        self.projects = nn.ModuleList(nn.Conv2d(in_dim, c, 1) for c in out_channels)
        self.resize_layers = nn.ModuleList([
            nn.ConvTranspose2d(c1, c1, kernel_size=4, stride=4),
            nn.ConvTranspose2d(c2, c2, kernel_size=2, stride=2),
            nn.Identity(),
            nn.Conv2d(c4, c4, kernel_size=3, stride=2, padding=1),
        ])
        scratch = nn.Module()
        for i, c in enumerate(out_channels, start=1):
            scratch.add_module(f"layer{i}_rn", nn.Conv2d(c, features, 3, padding=1, bias=False))
        for i in range(1, 5):
            scratch.add_module(f"refinenet{i}", FusionBlock(features))
        scratch.output_conv1 = nn.Conv2d(features, features // 2, 3, padding=1)
        scratch.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, OUTPUT_HIDDEN, 3, padding=1), nn.ReLU(),
            nn.Conv2d(OUTPUT_HIDDEN, 1, 1), nn.ReLU(),
        )
        self.scratch = scratch
        self.motion_modules = nn.ModuleList(
            MotionModule(c, num_frames) for c in (c3, c4, features, features))

    def forward(self, tokens: list[Tensor], grid: tuple[int, int], frames: int) -> Tensor:
        """tokens: four (B*T, h*w, dim) maps; returns (B*T, 1, 14h, 14w) depth."""
        h, w = grid
        maps = []
        for t, project, resize in zip(tokens, self.projects, self.resize_layers, strict=True):
            x = t.transpose(1, 2).reshape(t.shape[0], t.shape[-1], h, w)
            maps.append(resize(project(x)))
        maps[2] = self.motion_modules[0](maps[2], frames)
        maps[3] = self.motion_modules[1](maps[3], frames)
        s = self.scratch
        r1, r2, r3, r4 = (getattr(s, f"layer{i}_rn")(m) for i, m in enumerate(maps, start=1))
        path = self.motion_modules[2](s.refinenet4(r4, size=r3.shape[2:]), frames)
        path = self.motion_modules[3](s.refinenet3(path, r3, size=r2.shape[2:]), frames)
        path = s.refinenet2(path, r2, size=r1.shape[2:])
        path = s.refinenet1(path, r1)
        out = F.interpolate(s.output_conv1(path), size=(14 * h, 14 * w), mode="bilinear", align_corners=True)
        with torch.autocast(device_type=out.device.type, enabled=False):  # the last convolutions in float32, as the official head
            return s.output_conv2(out.float())
