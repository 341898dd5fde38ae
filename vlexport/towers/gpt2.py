"""GPT-2 as a text decoder with cross-attention (HF's GPT2LMHeadModel, add_cross_attention=True), in
plain PyTorch, written for step-wise generation with a fixed-capacity KV cache.

Reads top to bottom: Conv1D (HF's transposed Linear) -> self-attention over cache + new tokens ->
cross-attention over precomputed encoder keys/values -> MLP -> the decoder (wte + wpe, blocks, ln_f,
lm_head tied to wte). Module names are HF's (`transformer.h.N.attn.c_attn`, `crossattention.q_attn`).

The cache: self-attention keys/values of every layer live in one (B, L, heads, capacity, head) pair
of buffers owned by the runtime; `cache_mask` (B, capacity) marks the filled slots. One decoder call
takes the new token(s), attends to the cached slots plus themselves (causal among themselves), and
returns only the new keys/values (B, L, heads, T, head) for the runtime to write into the buffers:
no per-step copy of the cache inside the graph, and the attention cost per token is that of the
capacity, flat as the sequence grows. Cross-attention keys/values are computed once per image by
`cross_kv` (in the encoder graph) and never per token.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlexport.layers import ACTIVATIONS, MASK_VALUE


class Conv1D(nn.Module):
    """HF's Conv1D: y = x @ weight + bias with weight (n_in, n_out)."""

    def __init__(self, n_out: int, n_in: int):
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = nn.Parameter(torch.zeros(n_out))

    def forward(self, x):
        return torch.matmul(x, self.weight) + self.bias


def _heads(t, nh):  # (B, T, H) -> (B, nh, T, hs)
    B, T, H = t.shape
    return t.view(B, T, nh, H // nh).transpose(1, 2)


def _merge(t):  # (B, nh, T, hs) -> (B, T, H)
    B, nh, T, hs = t.shape
    return t.transpose(1, 2).reshape(B, T, nh * hs)


def _attend(q, k, v, additive_mask, scaling):
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling + additive_mask  # (B, nh, T, S)
    return torch.matmul(scores.softmax(dim=-1), v)


def causal_cache_mask(cache_mask, T: int, dtype):
    """(B, P) filled-slot mask + T new tokens -> (B, 1, T, P + T) additive mask: every new token sees
    the filled slots and the new tokens up to itself."""
    causal = torch.ones(T, T, dtype=torch.bool, device=cache_mask.device).tril()
    seen = torch.cat([cache_mask.to(torch.bool)[:, None, :].expand(-1, T, -1),
                      causal[None].expand(cache_mask.shape[0], -1, -1)], dim=2)
    return (~seen).to(dtype)[:, None] * MASK_VALUE


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
        q, k, v = _heads(q, self.nh), _heads(k, self.nh), _heads(v, self.nh)
        out = _attend(q, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), additive_mask, self.scaling)
        return self.c_proj(_merge(out)), k, v  # the new keys/values only: (B, nh, T, hs)


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
        return _heads(k, self.nh), _heads(v, self.nh)  # (B, nh, S, hs) each

    def forward(self, x, cross_k, cross_v):
        q = _heads(self.q_attn(x), self.nh)
        return self.c_proj(_merge(_attend(q, cross_k, cross_v, 0.0, self.scaling)))


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
        """(B, S, He) -> cross keys, values (B, L, nh, S, hs): once per image, reused by every step."""
        kv = [blk.crossattention.keys_values(encoder_hidden) for blk in self.transformer.h]
        return torch.stack([k for k, _ in kv], dim=1), torch.stack([v for _, v in kv], dim=1)

    def forward(self, input_ids, position_ids, cache_mask, past_keys, past_values, cross_keys, cross_values):
        """input_ids, position_ids (B, T); cache_mask (B, P) 1 = a filled slot; past_* (B, L, nh, P, hs);
        cross_* (B, L, nh, S, hs) -> logits (B, T, V), new keys/values (B, L, nh, T, hs)."""
        x = self.transformer.wte(input_ids) + self.transformer.wpe(position_ids)  # (B, T, H)
        additive = causal_cache_mask(cache_mask, input_ids.shape[1], x.dtype)
        new_k, new_v = [], []
        for i, blk in enumerate(self.transformer.h):
            x, k, v = blk(x, past_keys[:, i], past_values[:, i], additive, cross_keys[:, i], cross_values[:, i])
            new_k.append(k)
            new_v.append(v)
        logits = self.lm_head(self.transformer.ln_f(x))
        return logits, torch.stack(new_k, dim=1), torch.stack(new_v, dim=1)
