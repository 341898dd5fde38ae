"""What every text decoder here shares for step-wise generation with a fixed-capacity KV cache
(GPT-2, TrOCR's decoder, BERT as a decoder): head splitting, attention, the cache-aware causal mask,
and the two loops over layers (cross keys/values once per image; one decoding step).

The cache: self-attention keys/values of every layer live in one (B, L, heads, capacity, head) pair
of buffers owned by the runtime; `cache_mask` (B, capacity) marks the filled slots. A step takes the
new token(s), attends to the filled slots plus themselves (causal among themselves) and returns only
the new keys/values (B, L, heads, T, head) for the runtime to write in place. A layer is called as
layer(x, past_k, past_v, additive_mask, cross_k, cross_v) -> (x, new_k, new_v).
"""

from __future__ import annotations

import torch

from vlexport.layers import MASK_VALUE


def split_heads(t, nh):  # (B, T, H) -> (B, nh, T, hs)
    B, T, H = t.shape
    return t.view(B, T, nh, H // nh).transpose(1, 2)


def merge_heads(t):  # (B, nh, T, hs) -> (B, T, H)
    B, nh, T, hs = t.shape
    return t.transpose(1, 2).reshape(B, T, nh * hs)


def attend(q, k, v, additive_mask, scaling):
    scores = torch.matmul(q, k.transpose(-1, -2)) * scaling + additive_mask  # (B, nh, T, S)
    return torch.matmul(scores.softmax(dim=-1), v)


def causal_cache_mask(cache_mask, T: int, dtype):
    """(B, P) filled-slot mask + T new tokens -> (B, 1, T, P + T) additive mask: every new token sees
    the filled slots and the new tokens up to itself."""
    causal = torch.ones(T, T, dtype=torch.bool, device=cache_mask.device).tril()
    seen = torch.cat([cache_mask.to(torch.bool)[:, None, :].expand(-1, T, -1),
                      causal[None].expand(cache_mask.shape[0], -1, -1)], dim=2)
    return (~seen).to(dtype)[:, None] * MASK_VALUE


def stack_cross_kv(keys_values, encoder_hidden):
    """Every layer's cross-attention keys/values of the encoder states (`keys_values`: one function
    per layer) -> keys, values (B, L, nh, S, hs): computed once per image, reused by every step."""
    kv = [f(encoder_hidden) for f in keys_values]
    return torch.stack([k for k, _ in kv], dim=1), torch.stack([v for _, v in kv], dim=1)


def decode_step(layers, x, cache_mask, past_keys, past_values, cross_keys, cross_values):
    """Run embedded new tokens x (B, T, H) through the layers -> (x, new keys, new values (B, L, nh, T, hs))."""
    additive = causal_cache_mask(cache_mask, x.shape[1], x.dtype)
    new_k, new_v = [], []
    for i, layer in enumerate(layers):
        x, k, v = layer(x, past_keys[:, i], past_values[:, i], additive, cross_keys[:, i], cross_values[:, i])
        new_k.append(k)
        new_v.append(v)
    return x, torch.stack(new_k, dim=1), torch.stack(new_v, dim=1)
