"""DINOv2 ViT encoder as Video Depth Anything uses it (patch 14, 518-px pretraining grid, LayerScale).

Written from the DINOv2 / Video Depth Anything papers and the official code's behaviour; only the
state-dict names (`cls_token`, `pos_embed`, `mask_token`, `patch_embed.proj`, `blocks.<i>.{norm1,
attn.qkv, attn.proj, ls1.gamma, norm2, mlp.fc1, mlp.fc2, ls2.gamma}`, `norm`) follow the checkpoints.

Behaviour reproduced from the official code, because the checkpoints were trained with it:
- the positional-embedding grid (37x37 for 518 px) is resized with bicubic interpolation driven by a
  *scale factor* `(n + 0.1) / 37` per axis (not by the target size), without antialiasing and with
  align_corners=False; the +0.1 offset makes floor(37 * scale) land on n, while the sampling positions
  follow 1/scale, which differs slightly from a size-driven resize. The grid is used as-is only when
  the input is the square 37x37 grid. The interpolation runs in float32.
- intermediate layers are taken after the given blocks, passed through the final LayerNorm, with the
  class token dropped (the DPT head is built with use_clstoken=False).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PATCH = 14
PRETRAIN_GRID = 37  # 518 / 14
POS_OFFSET = 0.1  # DINOv2's interpolate_offset (registers-free models)


@dataclass(frozen=True)
class VitSpec:
    dim: int
    depth: int
    heads: int
    taps: tuple[int, ...]  # blocks whose outputs feed the DPT head


VIT_SPECS: dict[str, VitSpec] = {
    "vits": VitSpec(384, 12, 6, (2, 5, 8, 11)),
    "vitb": VitSpec(768, 12, 12, (2, 5, 8, 11)),
    "vitl": VitSpec(1024, 24, 16, (4, 11, 17, 23)),  # same layout; no checkpoint of it is checked here
}


class PatchEmbed(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=PATCH, stride=PATCH)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)  # (N, h*w, dim)


class SelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> Tensor:
        n, length, dim = x.shape
        q, k, v = self.qkv(x).view(n, length, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)
        weights = ((q * (dim // self.heads) ** -0.5) @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((weights @ v).transpose(1, 2).reshape(n, length, dim))


class LayerScale(nn.Module):
    def __init__(self, dim: int) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = SelfAttention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim)

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2Encoder(nn.Module):
    """ViT backbone; `features(x, taps)` returns the normalised patch tokens after each tapped block."""

    def __init__(self, encoder: str) -> None:
        super().__init__()
        if encoder not in VIT_SPECS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(VIT_SPECS)}")
        spec = VIT_SPECS[encoder]
        self.spec = spec
        self.embed_dim = spec.dim
        self.patch_embed = PatchEmbed(spec.dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, spec.dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + PRETRAIN_GRID**2, spec.dim))
        self.mask_token = nn.Parameter(torch.zeros(1, spec.dim))  # unused at inference, kept for the keys
        self.blocks = nn.ModuleList(ViTBlock(spec.dim, spec.heads) for _ in range(spec.depth))
        self.norm = nn.LayerNorm(spec.dim, eps=1e-6)

    def position_embedding(self, grid_h: int, grid_w: int, dtype: torch.dtype) -> Tensor:
        """(1, 1 + grid_h*grid_w, dim): class position plus the pretraining grid resized to the input's."""
        if grid_h == grid_w == PRETRAIN_GRID:
            return self.pos_embed
        table = self.pos_embed.float()
        side = math.sqrt(table.shape[1] - 1)
        grid = table[:, 1:].reshape(1, int(side), int(side), -1).permute(0, 3, 1, 2)
        scale = ((grid_h + POS_OFFSET) / side, (grid_w + POS_OFFSET) / side)
        grid = F.interpolate(grid, scale_factor=scale, mode="bicubic", antialias=False)
        if grid.shape[-2:] != (grid_h, grid_w):  # cannot happen with the 0.1 offset; guard anyway
            raise RuntimeError(f"position grid resized to {tuple(grid.shape[-2:])}, not {(grid_h, grid_w)}")
        patches = grid.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, -1)
        return torch.cat((table[:, :1], patches), dim=1).to(dtype)

    def features(self, x: Tensor, taps: Sequence[int] | None = None) -> list[Tensor]:
        """x: (N, 3, H, W) with H, W multiples of 14. Returns LayerNorm-ed patch tokens (N, h*w, dim)
        after each block in `taps` (default: the encoder's DPT taps)."""
        taps = tuple(self.spec.taps if taps is None else taps)
        _, _, height, width = x.shape
        if height % PATCH or width % PATCH:
            raise ValueError(f"input {height}x{width} is not a multiple of the patch size {PATCH}")
        tokens = self.patch_embed(x)
        tokens = torch.cat((self.cls_token.expand(tokens.shape[0], -1, -1), tokens), dim=1)
        tokens = tokens + self.position_embedding(height // PATCH, width // PATCH, tokens.dtype)
        out: list[Tensor] = []
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index in taps:
                out.append(self.norm(tokens)[:, 1:])
        if len(out) != len(taps):
            raise ValueError(f"taps {taps} outside the encoder's {len(self.blocks)} blocks")
        return out
