"""The BEiT vision tower (HF's BeitModel) in plain PyTorch, for a fixed image size.

Reads top to bottom: patch embeddings + [CLS] (+ learned absolute positions when the config has
them) -> pre-LN blocks like ViT's, with three differences -> pooled output:

    - the attention's key projection has no bias (query and value do);
    - a learned bias per relative position (one table per layer, or one shared by every layer) is
      added to the attention scores; [CLS] has three rows of its own (to a patch, from a patch, to itself);
    - layer scale: each residual branch is multiplied by a learned per-channel vector (lambda_1, lambda_2).

The pooled output is the LayerNorm of the mean patch token (use_mean_pooling, the fine-tuned
checkpoints), or [CLS] after a final LayerNorm. Names are the ones checkpoints store
(`encoder.layer.N.attention.attention.query`, `...relative_position_bias.relative_position_bias_table`,
`lambda_1`); transformers 5 renames them in memory and writes these back. The relative position index
is a constant of the grid (the image size is fixed), so the exported graph gathers from a constant.
"""

from __future__ import annotations

import torch
from torch import nn

from vlexport.towers.config import BeitTowerConfig
from vlexport.towers.vit import VitLayer, VitPatchEmbeddings


def relative_position_index(side: int) -> torch.Tensor:
    """(side^2 + 1, side^2 + 1): the bias-table row of each (query, key) pair, [CLS] first."""
    coords = torch.stack(torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")).flatten(1)  # (2, N)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (side - 1)  # (N, N, 2), from 0
    distances = (2 * side - 1) ** 2
    index = torch.empty(side * side + 1, side * side + 1, dtype=torch.int64)
    index[1:, 1:] = rel[..., 0] * (2 * side - 1) + rel[..., 1]
    index[0, :] = distances  # [CLS] attending to a patch
    index[:, 0] = distances + 1  # a patch attending to [CLS]
    index[0, 0] = distances + 2  # [CLS] to itself
    return index


class RelativePositionBias(nn.Module):
    """A learned bias per (relative position, head): () -> (1, heads, N + 1, N + 1), added to the scores."""

    def __init__(self, side: int, heads: int):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * side - 1) ** 2 + 3, heads))
        self.register_buffer("index", relative_position_index(side), persistent=False)

    def forward(self):
        bias = self.relative_position_bias_table[self.index]  # (N + 1, N + 1, heads)
        return bias.permute(2, 0, 1).unsqueeze(0)


class BeitLayer(VitLayer):
    """ViT's pre-LN block with a bias-free key, an optional relative position bias and layer scale."""

    def __init__(self, c: BeitTowerConfig):
        super().__init__(c)
        attn = self.attention.attention
        attn.key = nn.Linear(c.hidden_size, c.hidden_size, bias=False)
        if c.use_relative_position_bias:
            attn.relative_position_bias = RelativePositionBias(c.grid, c.num_attention_heads)
        if c.layer_scale_init_value > 0:
            self.lambda_1 = nn.Parameter(torch.full((c.hidden_size,), float(c.layer_scale_init_value)))
            self.lambda_2 = nn.Parameter(torch.full((c.hidden_size,), float(c.layer_scale_init_value)))

    def forward(self, x, shared_bias=None):
        bias = shared_bias
        own = getattr(self.attention.attention, "relative_position_bias", None)
        if own is not None:
            bias = own() if bias is None else bias + own()
        scale_1, scale_2 = (self.lambda_1, self.lambda_2) if hasattr(self, "lambda_1") else (1.0, 1.0)
        x = scale_1 * self.attention(self.layernorm_before(x), bias) + x
        return scale_2 * self.output(self.act(self.intermediate(self.layernorm_after(x)))) + x


class BeitEncoder(nn.Module):
    def __init__(self, c: BeitTowerConfig):
        super().__init__()
        self.layer = nn.ModuleList(BeitLayer(c) for _ in range(c.num_hidden_layers))
        if c.use_shared_relative_position_bias:
            self.relative_position_bias = RelativePositionBias(c.grid, c.num_attention_heads)

    def forward(self, x):
        shared = self.relative_position_bias() if hasattr(self, "relative_position_bias") else None
        for layer in self.layer:
            x = layer(x, shared)
        return x


class BeitEmbeddings(nn.Module):
    def __init__(self, c: BeitTowerConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        if c.use_mask_token:  # masked image modeling only; loaded so those checkpoints match key for key
            self.mask_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.patch_embeddings = VitPatchEmbeddings(c)
        if c.use_absolute_position_embeddings:
            self.position_embeddings = nn.Parameter(torch.zeros(1, c.num_patches + 1, c.hidden_size))

    def forward(self, pixel_values):
        x = self.patch_embeddings(pixel_values)  # (B, N, H)
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)  # (B, 1 + N, H)
        return x + self.position_embeddings if hasattr(self, "position_embeddings") else x


class _MeanPooler(nn.Module):
    def __init__(self, c: BeitTowerConfig):
        super().__init__()
        self.layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h):
        return self.layernorm(h[:, 1:].mean(dim=1))  # the patch tokens' mean, [CLS] left out


class BeitTower(nn.Module):
    """pixel_values (B, C, S, S) -> (last_hidden_state (B, 1 + N, H), pooled (B, H))."""

    def __init__(self, c: BeitTowerConfig):
        super().__init__()
        self.config = c
        self.embeddings = BeitEmbeddings(c)
        self.encoder = BeitEncoder(c)
        if c.use_mean_pooling:
            self.pooler = _MeanPooler(c)
        else:
            self.layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, pixel_values):
        h = self.encoder(self.embeddings(pixel_values))
        if self.config.use_mean_pooling:
            return h, self.pooler(h)  # last_hidden_state without a final LayerNorm, as HF
        h = self.layernorm(h)
        return h, h[:, 0]

    def checkpoint_aliases(self, prefix: str = "") -> dict:
        return {}
