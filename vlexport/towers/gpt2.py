"""GPT-2 as a text decoder with cross-attention (HF's GPT2LMHeadModel, add_cross_attention=True), in
plain PyTorch, written for step-wise generation with a fixed-capacity KV cache.

Reads top to bottom: Conv1D (HF's transposed Linear) -> self-attention over cache + new tokens ->
cross-attention over precomputed encoder keys/values -> MLP -> the decoder (wte + wpe, blocks, ln_f,
lm_head tied to wte). Module names are HF's (`transformer.h.N.attn.c_attn`, `crossattention.q_attn`).

The KV cache and the step interface are vlexport.towers.cached_attention's: one decoder call takes
the new token(s) and the cache buffers and returns only the new keys/values (no per-step copy of the
cache inside the graph; the attention cost per token is that of the capacity, flat as the sequence
grows). Cross-attention keys/values are computed once per image by `cross_kv` (in the encoder graph).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlexport.layers import ACTIVATIONS
from vlexport.towers.cached_attention import attend, decode_step, merge_heads, split_heads, cross_kv_per_layer


class Conv1D(nn.Module):
    """HF's Conv1D: y = x @ weight + bias with weight (n_in, n_out)."""

    def __init__(self, n_out: int, n_in: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


class GPT2SelfAttention(nn.Module):
    def __init__(self, c, layer_idx: int):
        super().__init__()
        self.nh, H = c.n_head, c.n_embd
        self.c_attn = Conv1D(3 * H, H)
        self.c_proj = Conv1D(H, H)
        self.scaling = (1 / math.sqrt(H // self.nh) if c.scale_attn_weights else 1.0) / (
            layer_idx + 1 if c.scale_attn_by_inverse_layer_idx else 1)

    def forward(self, x, past_k, past_v, additive_mask):
        # x (B, T, H); past_k/v (B, nh, P, hs); additive_mask (B, 1, T, P + T)
        q, k, v = self.c_attn(x).split(x.shape[-1], dim=2)
        q, k, v = split_heads(q, self.nh), split_heads(k, self.nh), split_heads(v, self.nh)
        out = attend(q, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), additive_mask, self.scaling)
        return self.c_proj(merge_heads(out)), k, v  # the new keys/values only: (B, nh, T, hs)


class GPT2CrossAttention(nn.Module):
    def __init__(self, c, layer_idx: int, encoder_size: int):
        super().__init__()
        self.nh, H = c.n_head, c.n_embd
        self.q_attn = Conv1D(H, H)
        self.c_attn = Conv1D(2 * H, encoder_size)
        self.c_proj = Conv1D(H, H)
        self.scaling = (1 / math.sqrt(H // self.nh) if c.scale_attn_weights else 1.0) / (
            layer_idx + 1 if c.scale_attn_by_inverse_layer_idx else 1)

    def keys_values(self, encoder_hidden):
        k, v = self.c_attn(encoder_hidden).split(self.q_attn.weight.shape[1], dim=2)
        return split_heads(k, self.nh), split_heads(v, self.nh)  # (B, nh, S, hs) each

    def forward(self, x, cross_k, cross_v):
        q = split_heads(self.q_attn(x), self.nh)
        return self.c_proj(merge_heads(attend(q, cross_k, cross_v, 0.0, self.scaling)))


class GPT2MLP(nn.Module):
    def __init__(self, c):
        super().__init__()
        inner = c.n_inner or 4 * c.n_embd
        self.c_fc = Conv1D(inner, c.n_embd)
        self.c_proj = Conv1D(c.n_embd, inner)
        self.act = ACTIVATIONS[c.activation_function]

    def forward(self, x):
        return self.c_proj(self.act(self.c_fc(x)))


class GPT2Block(nn.Module):
    """Pre-LN: x + attn(ln_1 x), + crossattention(ln_cross_attn x), + mlp(ln_2 x)."""

    def __init__(self, c, layer_idx: int, encoder_size: int):
        super().__init__()
        eps, H = c.layer_norm_epsilon, c.n_embd
        self.ln_1 = nn.LayerNorm(H, eps=eps)
        self.attn = GPT2SelfAttention(c, layer_idx)
        self.ln_cross_attn = nn.LayerNorm(H, eps=eps)
        self.crossattention = GPT2CrossAttention(c, layer_idx, encoder_size)
        self.ln_2 = nn.LayerNorm(H, eps=eps)
        self.mlp = GPT2MLP(c)

    def forward(self, x, past_k, past_v, additive_mask, cross_k, cross_v):
        a, k, v = self.attn(self.ln_1(x), past_k, past_v, additive_mask)
        x = x + a
        x = x + self.crossattention(self.ln_cross_attn(x), cross_k, cross_v)
        return x + self.mlp(self.ln_2(x)), k, v


class GPT2Transformer(nn.Module):
    def __init__(self, c, encoder_size: int):
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.n_positions, c.n_embd)
        self.h = nn.ModuleList(GPT2Block(c, i, encoder_size) for i in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.n_embd, eps=c.layer_norm_epsilon)


class GPT2Decoder(nn.Module):
    """HF's GPT2LMHeadModel with cross-attention (`transformer.`, `lm_head` tied to wte unless untied)."""

    def __init__(self, c, encoder_size: int):
        super().__init__()
        self.config = c
        self.transformer = GPT2Transformer(c, encoder_size)
        self.lm_head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        if c.tie_word_embeddings:
            self.lm_head.weight = self.transformer.wte.weight

    def cross_kv(self, encoder_hidden):
        """(B, S, He) -> cross keys, values: one (B, nh, S, hs) per layer, once per image, reused by every step."""
        return cross_kv_per_layer([blk.crossattention.keys_values for blk in self.transformer.h], encoder_hidden)

    def forward(self, input_ids, position_ids, cache_mask, past_keys, past_values, cross_keys, cross_values):
        """input_ids, position_ids (B, T); cache_mask (B, P) 1 = a filled slot; past_* one (B, nh, P, hs) per
        layer; cross_* one (B, nh, S, hs) per layer -> logits (B, T, V), new keys/values (B, nh, T, hs) per layer."""
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)  # (B, T, H)
        x, k, v = decode_step(self.transformer.h, x, cache_mask, past_keys, past_values, cross_keys, cross_values)
        return self.lm_head(self.transformer.ln_f(x)), k, v
