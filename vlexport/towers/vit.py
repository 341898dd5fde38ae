"""The ViT-style vision tower in plain PyTorch: ViT, DeiT and CLIP-vision, one encoder.

Reads top to bottom: patch embeddings (+ [CLS], DeiT's distillation token, learned positions) ->
pre-LN encoder -> pooled output. The variants differ only at the ends:

    ViT, DeiT     final `layernorm` over every token, then `pooler` = act(dense(h[:, 0]))
    CLIP-vision   `pre_layrnorm` before the encoder (HF's spelling), `post_layernorm` of h[:, 0] as
                  the pooled output, quick_gelu, a bias-free patch convolution

Module names are HF's ViT names (`encoder.layer.N.attention.attention.query`, ...), which family
encoders built on ViT share. CLIP checkpoints name the same tensors differently (`encoder.layers.N.self_attn.q_proj`)
under an extra `vision_model.`; `checkpoint_aliases()` maps them, so one encoder serves all three.
The image size is fixed by the config (no position interpolation), as in HF without
`interpolate_pos_encoding`.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from vlexport.layers import ACTIVATIONS, Pooler, SelfAttention
from vlexport.towers.config import VisionTowerConfig


class _Dense(nn.Module):
    """A module holding one `dense` Linear (HF's ViTSelfOutput / ViTIntermediate / ViTOutput)."""

    def __init__(self, n_in: int, n_out: int):
        super().__init__()
        self.dense = nn.Linear(n_in, n_out)

    def forward(self, h):
        return self.dense(h)


class VitAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = SelfAttention(c.hidden_size, c.num_attention_heads, bias=c.qkv_bias)
        self.output = _Dense(c.hidden_size, c.hidden_size)

    def forward(self, x, additive_mask):
        return self.output(self.attention(x, additive_mask))


class VitLayer(nn.Module):
    """Pre-LN block: x + attn(LN(x)), then h + MLP(LN(h))."""

    def __init__(self, c):
        super().__init__()
        self.attention = VitAttention(c)
        self.intermediate = _Dense(c.hidden_size, c.intermediate_size)
        self.output = _Dense(c.intermediate_size, c.hidden_size)
        self.layernorm_before = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, x, additive_mask=None):
        x = self.attention(self.layernorm_before(x), additive_mask) + x
        return self.output(self.act(self.intermediate(self.layernorm_after(x)))) + x


class VitEncoder(nn.Module):
    """The stack of pre-LN blocks (ViT, DeiT, CLIP-vision and families built on ViT share it). The config needs
    hidden_size, num_attention_heads, qkv_bias, intermediate_size, hidden_act, layer_norm_eps."""

    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(VitLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, additive_mask=None):
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


# ----------------------------------------------------------------------------- embeddings

class VitPatchEmbeddings(nn.Module):
    def __init__(self, c: VisionTowerConfig):
        super().__init__()
        self.projection = nn.Conv2d(c.num_channels, c.hidden_size, kernel_size=c.patch_size, stride=c.patch_size)

    def forward(self, pixel_values):
        return self.projection(pixel_values).flatten(2).transpose(1, 2)  # (B, 3, S, S) -> (B, N, H)


class VitEmbeddings(nn.Module):
    """ViT / DeiT: [CLS] (+ distillation token) + patches, plus learned absolute positions."""

    def __init__(self, c: VisionTowerConfig):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        if c.model_type == "deit":
            self.distillation_token = nn.Parameter(torch.zeros(1, 1, c.hidden_size))
        self.patch_embeddings = VitPatchEmbeddings(c)
        self.position_embeddings = nn.Parameter(torch.zeros(1, c.num_patches + c.extra_tokens, c.hidden_size))

    def forward(self, pixel_values):
        x = self.patch_embeddings(pixel_values)  # (B, N, H)
        B = x.shape[0]
        tokens = [self.cls_token.expand(B, -1, -1)]
        if hasattr(self, "distillation_token"):
            tokens.append(self.distillation_token.expand(B, -1, -1))
        return torch.cat([*tokens, x], dim=1) + self.position_embeddings  # (B, extra + N, H)


class ClipVisionEmbeddings(nn.Module):
    """CLIP-vision, with CLIP's parameter names and shapes: class_embedding (H,), a bias-free
    patch_embedding convolution, position_embedding an nn.Embedding."""

    def __init__(self, c: VisionTowerConfig):
        super().__init__()
        self.class_embedding = nn.Parameter(torch.zeros(c.hidden_size))
        self.patch_embedding = nn.Conv2d(c.num_channels, c.hidden_size, kernel_size=c.patch_size,
                                         stride=c.patch_size, bias=False)
        self.position_embedding = nn.Embedding(c.num_patches + 1, c.hidden_size)

    def forward(self, pixel_values):
        x = self.patch_embedding(pixel_values).flatten(2).transpose(1, 2)  # (B, N, H)
        cls = self.class_embedding.expand(x.shape[0], 1, -1)  # (B, 1, H)
        return torch.cat([cls, x], dim=1) + self.position_embedding.weight  # (B, 1 + N, H)


# ----------------------------------------------------------------------------- the tower

class VisionTower(nn.Module):
    """pixel_values (B, C, S, S) -> (last_hidden_state (B, tokens, H), pooled (B, output_size))."""

    def __init__(self, c: VisionTowerConfig):
        super().__init__()
        self.config = c
        if c.is_clip:
            self.embeddings = ClipVisionEmbeddings(c)
            self.pre_layrnorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
            self.encoder = VitEncoder(c)
            self.post_layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        else:
            self.embeddings = VitEmbeddings(c)
            self.encoder = VitEncoder(c)
            self.layernorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
            self.pooler = Pooler(c.hidden_size, c.pooler_output_size, c.pooler_act)

    def forward(self, pixel_values):
        h = self.embeddings(pixel_values)
        if self.config.is_clip:
            h = self.encoder(self.pre_layrnorm(h))
            return h, self.post_layernorm(h[:, 0])  # CLIP's last_hidden_state has no final LN
        h = self.layernorm(self.encoder(h))
        return h, self.pooler(h)

    def checkpoint_aliases(self, prefix: str = "") -> dict:
        """{checkpoint key: our key} for CLIP checkpoints (empty for ViT/DeiT, which use our names).
        CLIPModel checkpoints (and CLIPVisionModel ones saved by transformers 4) put the tower under
        `vision_model.`; transformers 5 saves a CLIPVisionModel without it: both are accepted."""
        if not self.config.is_clip:
            return {}
        out = {}
        for k in self.state_dict():
            out[prefix + clip_key(k)] = out[prefix + "vision_model." + clip_key(k)] = prefix + k
        return out


# our key (inside the tower) -> CLIP's: the same tensors under CLIPVisionModel's names
_CLIP_NAMES = [
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.query\.", r"encoder.layers.\1.self_attn.q_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.key\.", r"encoder.layers.\1.self_attn.k_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.attention\.value\.", r"encoder.layers.\1.self_attn.v_proj."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"encoder.layers.\1.self_attn.out_proj."),
    (r"^encoder\.layer\.(\d+)\.layernorm_before\.", r"encoder.layers.\1.layer_norm1."),
    (r"^encoder\.layer\.(\d+)\.layernorm_after\.", r"encoder.layers.\1.layer_norm2."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"encoder.layers.\1.mlp.fc1."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"encoder.layers.\1.mlp.fc2."),
]


def clip_key(key: str) -> str:
    for pattern, repl in _CLIP_NAMES:
        key = re.sub(pattern, repl, key)
    return key
