"""TrOCR's text decoder (HF's TrOCRForCausalLM) in plain PyTorch, with the same step interface and
fixed-capacity KV cache of vlexport.towers.cached_attention: BART-style post-LN layers with
self-attention, cross-attention to the image, and an FFN; learned positions offset by 2 (trocr-base and
-large) or fixed sinusoidal ones (trocr-small: `use_learned_position_embeddings=false`), optional
embedding scale and embedding LayerNorm, `output_projection` tied to the token embeddings.
Names are HF's (`model.decoder.layers.N.self_attn.q_proj`, `encoder_attn`, `fc1`, `output_projection`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlexport.layers import ACTIVATIONS
from vlexport.towers.cached_attention import attend, decode_step, merge_heads, split_heads, cross_kv_per_layer


class TrOCRAttention(nn.Module):
    def __init__(self, d_model: int, heads: int, kv_size: int | None = None):
        super().__init__()
        self.nh = heads
        self.scaling = (d_model // heads) ** -0.5
        self.k_proj = nn.Linear(kv_size or d_model, d_model)
        self.v_proj = nn.Linear(kv_size or d_model, d_model)
        self.q_proj = nn.Linear(d_model, d_model)
        self.out_proj = nn.Linear(d_model, d_model)

    def keys_values(self, x):
        return split_heads(self.k_proj(x), self.nh), split_heads(self.v_proj(x), self.nh)  # (B, nh, S, hs)

    def forward(self, x, keys, values, additive_mask):
        q = split_heads(self.q_proj(x), self.nh)  # HF scales q after the projection; same as scaling the scores
        return self.out_proj(merge_heads(attend(q, keys, values, additive_mask, self.scaling)))


class TrOCRDecoderLayer(nn.Module):
    """Post-LN: LN(x + self_attn(x)), LN(h + encoder_attn(h)), LN(h + fc2(act(fc1(h))))."""

    def __init__(self, c, encoder_size: int):
        super().__init__()
        D = c.d_model
        self.self_attn = TrOCRAttention(D, c.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.encoder_attn = TrOCRAttention(D, c.decoder_attention_heads, kv_size=encoder_size)
        self.encoder_attn_layer_norm = nn.LayerNorm(D)
        self.fc1 = nn.Linear(D, c.decoder_ffn_dim)
        self.fc2 = nn.Linear(c.decoder_ffn_dim, D)
        self.final_layer_norm = nn.LayerNorm(D)
        self.act = ACTIVATIONS[c.activation_function]

    def forward(self, x, past_k, past_v, additive_mask, cross_k, cross_v):
        k, v = self.self_attn.keys_values(x)  # the new tokens' (B, nh, T, hs)
        a = self.self_attn(x, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), additive_mask)
        x = self.self_attn_layer_norm(x + a)
        x = self.encoder_attn_layer_norm(x + self.encoder_attn(x, cross_k, cross_v, 0.0))
        return self.final_layer_norm(x + self.fc2(self.act(self.fc1(x)))), k, v


def sinusoidal_positions(rows: int, dim: int, pad: int) -> torch.Tensor:
    """HF's TrOCRSinusoidalPositionalEmbedding table (tensor2tensor's: sin then cos halves, frequencies
    10000^(-i / (half - 1))), with row `pad` zero, computed as HF computes it (float32 torch ops)."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.int64).float() * -(math.log(10000) / (half - 1)))
    angles = torch.arange(rows, dtype=torch.int64).float().unsqueeze(1) * freq.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(rows, 1)], dim=1)
    table[pad] = 0
    return table


class _Stack(nn.Module):
    def __init__(self, c, encoder_size: int):
        super().__init__()
        self.embed_tokens = nn.Embedding(c.vocab_size, c.d_model)
        if c.use_learned_position_embeddings:
            self.embed_positions = nn.Embedding(c.max_position_embeddings + 2, c.d_model)  # HF's offset of 2
        else:  # a constant of the config, not a checkpoint tensor (HF does not save it either)
            rows = c.max_position_embeddings + c.pad_token_id + 1
            self.register_buffer("sinusoid", sinusoidal_positions(rows, c.d_model, c.pad_token_id), persistent=False)
        if c.layernorm_embedding:
            self.layernorm_embedding = nn.LayerNorm(c.d_model)
        self.layers = nn.ModuleList(TrOCRDecoderLayer(c, encoder_size) for _ in range(c.decoder_layers))


class _Model(nn.Module):
    def __init__(self, c, encoder_size: int):
        super().__init__()
        self.decoder = _Stack(c, encoder_size)


class TrOCRDecoder(nn.Module):
    def __init__(self, c, encoder_size: int):
        super().__init__()
        self.config = c
        self.embed_scale = math.sqrt(c.d_model) if c.scale_embedding else 1.0
        self.model = _Model(c, encoder_size)
        self.output_projection = nn.Linear(c.d_model, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.output_projection.weight = self.model.decoder.embed_tokens.weight

    @property
    def layers(self):
        return self.model.decoder.layers

    def cross_kv(self, encoder_hidden):
        return cross_kv_per_layer([layer.encoder_attn.keys_values for layer in self.layers], encoder_hidden)

    def forward(self, input_ids, position_ids, cache_mask, past_keys, past_values, cross_keys, cross_values):
        d, c = self.model.decoder, self.config
        if c.use_learned_position_embeddings:
            pos = d.embed_positions(position_ids + 2)
        else:  # HF numbers a token pad + 1 + its position, and gives a pad token the zero row `pad`
            pad = c.pad_token_id
            pos = d.sinusoid[torch.where(input_ids == pad, pad, position_ids + pad + 1)]
        x = d.embed_tokens(input_ids) * self.embed_scale + pos  # (B, T, D)
        if hasattr(d, "layernorm_embedding"):
            x = d.layernorm_embedding(x)
        x, k, v = decode_step(self.layers, x, cache_mask, past_keys, past_values, cross_keys, cross_values)
        return self.output_projection(x), k, v
