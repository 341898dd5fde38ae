"""The Swin vision tower (HF's SwinModel) in plain PyTorch, for a fixed image size.

Reads top to bottom: 4x4 patches (a strided conv) + LayerNorm -> stages of blocks, each block
attention inside 7x7 windows (every second block on windows shifted by half a window, masked so
tokens that the cyclic shift brought together do not attend to each other) with a learned bias per
relative position, then an MLP; a patch merging (2x2 neighbours concatenated, LayerNorm, Linear)
halves the grid and doubles the width between stages -> final LayerNorm. Output: the last stage's
tokens (B, side^2, hidden), HF's last_hidden_state.

Every grid size, window padding and shift mask is known at construction (the image size is fixed), so
they are Python ints and constant buffers: the exported graph has no data-dependent shapes. Names are
the ones checkpoints store (`attention.self.query`, `intermediate.dense`, ...: transformers 5 renames them
in memory and writes these back).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from vlexport.layers import ACTIVATIONS
from vlexport.towers.swin_config import SwinTowerConfig


def window_partition(x, ws: int):
    """(B, H, W, C) -> (B * H/ws * W/ws, ws * ws, C), windows in row-major order."""
    B, H, W, C = x.shape
    x = x.view(B, H // ws, ws, W // ws, ws, C).transpose(2, 3)
    return x.reshape(-1, ws * ws, C)


def window_reverse(windows, ws: int, H: int, W: int):
    """The inverse of window_partition: (B * windows, ws * ws, C) -> (B, H, W, C)."""
    C = windows.shape[-1]
    x = windows.view(-1, H // ws, W // ws, ws, ws, C).transpose(2, 3)
    return x.reshape(-1, H, W, C)


def relative_position_index(ws: int) -> torch.Tensor:
    """(ws^2, ws^2): the row of the bias table for each (query, key) pair of a window."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)  # (2, ws^2)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)  # (ws^2, ws^2, 2), from 0
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def shift_mask(side: int, ws: int, shift: int) -> torch.Tensor:
    """(windows, ws^2, ws^2) additive mask of the shifted windows (HF's: -100 between tokens of different
    regions of the rolled grid, 0 within one)."""
    idx = torch.arange(side)
    region = (idx >= side - ws).long() + (idx >= side - shift).long()  # 3 regions per axis
    grid = (region[:, None] * 3 + region[None, :]).float()[None, :, :, None]  # (1, side, side, 1)
    w = window_partition(grid, ws).squeeze(-1)  # (windows, ws^2)
    diff = w[:, None, :] - w[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class SwinSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int, bias: bool):
        super().__init__()
        self.heads, self.hd = heads, dim // heads
        self.query, self.key, self.value = (nn.Linear(dim, dim, bias=bias) for _ in range(3))
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * ws - 1) ** 2, heads))
        self.register_buffer("relative_position_index", relative_position_index(ws).flatten(), persistent=False)

    def forward(self, x, mask):  # x (B*nW, N, C); mask (nW, N, N) or None
        BW, N, C = x.shape
        q, k, v = (p(x).view(BW, N, self.heads, self.hd).transpose(1, 2) for p in (self.query, self.key, self.value))
        bias = self.relative_position_bias_table[self.relative_position_index].view(N, N, -1).permute(2, 0, 1)[None]
        if mask is not None:  # (B*nW, 1, N, N) + (1, heads, N, N), as HF combines them
            bias = bias + mask[None, :, None].expand(BW // mask.shape[0], -1, -1, -1, -1).reshape(BW, 1, N, N)
        scores = (q @ k.transpose(-1, -2)) * self.hd ** -0.5 + bias  # (B*nW, heads, N, N)
        return (scores.softmax(-1) @ v).transpose(1, 2).reshape(BW, N, C)


class _Dense(nn.Module):
    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)


class SwinAttention(nn.Module):
    def __init__(self, dim: int, heads: int, ws: int, bias: bool):
        super().__init__()
        self.self = SwinSelfAttention(dim, heads, ws, bias)
        self.output = _Dense(dim, dim)


class SwinBlock(nn.Module):
    def __init__(self, c: SwinTowerConfig, dim: int, heads: int, side: int, shifted: bool):
        super().__init__()
        ws = c.window_size
        # a stage no larger than one window is never shifted (HF clamps the shift to 0 there)
        self.side, self.ws, self.shift = side, ws, (ws // 2 if shifted and side > ws else 0)
        self.padded = -(-side // ws) * ws  # the grid padded to whole windows
        self.layernorm_before = nn.LayerNorm(dim, eps=c.layer_norm_eps)
        self.attention = SwinAttention(dim, heads, ws, c.qkv_bias)
        self.layernorm_after = nn.LayerNorm(dim, eps=c.layer_norm_eps)
        hidden = int(c.mlp_ratio * dim)
        self.intermediate, self.output = _Dense(dim, hidden), _Dense(hidden, dim)
        self.act = ACTIVATIONS[c.hidden_act]
        self.register_buffer("attn_mask", shift_mask(self.padded, ws, self.shift) if self.shift else None,
                             persistent=False)

    def forward(self, x):  # (B, side^2, C)
        B, L, C = x.shape
        s, p, ws, sh = self.side, self.padded, self.ws, self.shift
        h = self.layernorm_before(x).view(B, s, s, C)
        if p != s:  # zeros to whole windows, after the LayerNorm (they take part in attention, as in HF)
            h = F.pad(h, (0, 0, 0, p - s, 0, p - s))
        if sh:
            h = torch.roll(h, shifts=(-sh, -sh), dims=(1, 2))
        a = self.attention.self(window_partition(h, ws), self.attn_mask)
        h = window_reverse(self.attention.output.dense(a), ws, p, p)  # (B, p, p, C)
        if sh:
            h = torch.roll(h, shifts=(sh, sh), dims=(1, 2))
        x = x + h[:, :s, :s].reshape(B, L, C)
        return x + self.output.dense(self.act(self.intermediate.dense(self.layernorm_after(x))))


class SwinPatchMerging(nn.Module):
    def __init__(self, dim: int, side: int):
        super().__init__()
        self.side = side
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)

    def forward(self, x):  # (B, side^2, C) -> (B, ceil(side/2)^2, 2C)
        B, _, C = x.shape
        s = self.side
        x = x.view(B, s, s, C)
        if s % 2:
            x = F.pad(x, (0, 0, 0, 1, 0, 1))
        # HF's order: (0, 0), (1, 0), (0, 1), (1, 1) as (row, col) offsets
        x = torch.cat([x[:, r::2, c::2] for c in range(2) for r in range(2)], dim=-1)
        return self.reduction(self.norm(x.reshape(B, -1, 4 * C)))


class SwinStage(nn.Module):
    def __init__(self, c: SwinTowerConfig, stage: dict):
        super().__init__()
        self.blocks = nn.ModuleList(SwinBlock(c, stage["dim"], stage["heads"], stage["side"], shifted=j % 2 == 1)
                                    for j in range(stage["depth"]))
        if stage["merge"]:
            self.downsample = SwinPatchMerging(stage["dim"], stage["side"])

    def forward(self, x):
        for block in self.blocks:
            x = block(x)
        return self.downsample(x) if hasattr(self, "downsample") else x


class SwinPatchEmbeddings(nn.Module):
    def __init__(self, c: SwinTowerConfig):
        super().__init__()
        self.patch = c.patch_size
        self.projection = nn.Conv2d(c.num_channels, c.embed_dim, kernel_size=c.patch_size, stride=c.patch_size)


class SwinEmbeddings(nn.Module):
    def __init__(self, c: SwinTowerConfig):
        super().__init__()
        self.patch_embeddings = SwinPatchEmbeddings(c)
        self.norm = nn.LayerNorm(c.embed_dim)
        if c.use_absolute_embeddings:
            self.position_embeddings = nn.Parameter(torch.zeros(1, c.stages[0]["side"] ** 2, c.embed_dim))

    def forward(self, pixel_values):  # (B, C, S, S) -> (B, side^2, embed_dim)
        S, p = pixel_values.shape[-1], self.patch_embeddings.patch
        if S % p:  # HF pads right and bottom to whole patches
            pixel_values = F.pad(pixel_values, (0, p - S % p, 0, p - S % p))
        x = self.norm(self.patch_embeddings.projection(pixel_values).flatten(2).transpose(1, 2))
        return x + self.position_embeddings if hasattr(self, "position_embeddings") else x


class SwinEncoder(nn.Module):
    def __init__(self, c: SwinTowerConfig):
        super().__init__()
        self.layers = nn.ModuleList(SwinStage(c, s) for s in c.stages)


class SwinTower(nn.Module):
    """pixel_values (B, C, S, S) -> (last_hidden_state (B, side^2, hidden), None): VisionTower's interface
    (Swin's pooled output is a parameter-free mean, which no family here reads)."""

    def __init__(self, c: SwinTowerConfig):
        super().__init__()
        self.config = c
        self.embeddings = SwinEmbeddings(c)
        self.encoder = SwinEncoder(c)
        self.layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixel_values):
        x = self.embeddings(pixel_values)
        for stage in self.encoder.layers:
            x = stage(x)
        return self.layernorm(x), None
