"""What every text decoder here shares for step-wise generation with a fixed-capacity KV cache
(GPT-2, TrOCR's decoder, BERT as a decoder): head splitting, attention, the cache-aware causal mask,
and the two loops over layers (cross keys/values once per image; one decoding step).

The cache: each layer's self-attention keys/values live in their own (B, heads, capacity, head) pair
of buffers owned by the runtime (one graph input per layer, so a backend reads them in place: a
stacked (B, L, ...) input made ONNX Runtime split, i.e. copy, the whole cache every step);
`cache_mask` (B, capacity) marks the filled slots. A step takes the new token(s), attends to the
filled slots plus themselves (causal among themselves) and returns only each layer's new
keys/values (B, heads, T, head) for the runtime to write in place. A layer is called as
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


def cross_kv_per_layer(keys_values, encoder_hidden):
    """Every layer's cross-attention keys/values of the encoder states (`keys_values`: one function
    per layer) -> ([keys], [values]), each (B, nh, S, hs): computed once per image, reused by every step."""
    kv = [f(encoder_hidden) for f in keys_values]
    return [k for k, _ in kv], [v for _, v in kv]


def decode_step(layers, x, cache_mask, past_keys, past_values, cross_keys, cross_values):
    """Run embedded new tokens x (B, T, H) through the layers; past_*/cross_*: one (B, nh, P or S, hs)
    tensor per layer -> (x, [new keys], [new values] (B, nh, T, hs) per layer)."""
    additive = causal_cache_mask(cache_mask, x.shape[1], x.dtype)
    new_k, new_v = [], []
    for layer, pk, pv, ck, cv in zip(layers, past_keys, past_values, cross_keys, cross_values, strict=True):
        x, k, v = layer(x, pk, pv, additive, ck, cv)
        new_k.append(k)
        new_v.append(v)
    return x, new_k, new_v
