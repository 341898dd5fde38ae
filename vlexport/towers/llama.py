"""A Llama decoder in plain PyTorch, for step-wise generation over a preallocated KV cache.

Reads top to bottom: RMSNorm -> rotary embeddings (HF's rotate_half convention) -> attention with
grouped-query heads over [cache slots | new tokens] -> SwiGLU MLP -> the decoder layer -> the model
(`embed_tokens`, `layers`, `norm`). Parameter names are transformers' LlamaModel names
(`layers.N.self_attn.q_proj`, `layers.N.mlp.gate_proj`, `norm`, ...), so checkpoints load by key.

The cache contract (the same one vlexport.towers.llama_onnx writes as an ONNX graph):
    inputs_embeds (B, T, H), attention_mask (B, T) for the new tokens (0 = left padding),
    position_ids (B, T), cache_mask (B, P) for the filled cache slots,
    past keys / values: one (B, kv_heads, P, head) pair per layer (keys after RoPE)
    -> hidden (B, T, H), the new tokens' keys / values (B, kv_heads, T, head) per layer
A new token t sees the filled cache slots and the real new tokens s <= t. Masked scores are
replaced by the finite MASK_VALUE (not added to it: the visible scores stay exact, and a row that
sees nothing, a pad token, is exactly uniform, never NaN, in every implementation).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vlexport.layers import MASK_VALUE
from vlexport.towers.llama_config import LlamaTowerConfig


class LlamaRMSNorm(nn.Module):
    def __init__(self, size: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(size))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)  # in fp32, as HF
        return self.weight * x.to(dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def rotary_cos_sin(inv_freq, position_ids, dtype):
    """(B, T) positions -> cos, sin (B, 1, T, head): frequencies repeated over both halves, as HF."""
    freqs = position_ids.float()[:, :, None] * inv_freq.float()[None, None, :]  # (B, T, head/2)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype)[:, None], emb.sin().to(dtype)[:, None]


def cache_attention_mask(cache_mask, attention_mask):
    """(B, P) filled slots + (B, T) real new tokens -> (B, 1, T, P + T) bool "seen" (causal among the new)."""
    T = attention_mask.shape[1]
    causal = torch.ones(T, T, dtype=torch.bool, device=attention_mask.device).tril()
    new = causal[None] & attention_mask.to(torch.bool)[:, None, :]  # (B, T, T)
    seen = torch.cat([cache_mask.to(torch.bool)[:, None, :].expand(-1, T, -1), new], dim=2)
    return seen[:, None]


class LlamaAttention(nn.Module):
    def __init__(self, c: LlamaTowerConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head = c.num_attention_heads, c.kv_heads, c.head_size
        self.q_proj = nn.Linear(c.hidden_size, self.heads * self.head, bias=c.attention_bias)
        self.k_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head, bias=c.attention_bias)
        self.v_proj = nn.Linear(c.hidden_size, self.kv_heads * self.head, bias=c.attention_bias)
        self.o_proj = nn.Linear(self.heads * self.head, c.hidden_size, bias=c.attention_bias)

    def forward(self, x, cos, sin, seen, past_k, past_v):
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head).transpose(1, 2)  # (B, nh, T, hd)
        k = self.k_proj(x).view(B, T, self.kv_heads, self.head).transpose(1, 2)  # (B, kvh, T, hd)
        v = self.v_proj(x).view(B, T, self.kv_heads, self.head).transpose(1, 2)
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        keys, values = torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2)  # (B, kvh, P + T, hd)
        rep = self.heads // self.kv_heads  # grouped-query attention: each kv head serves `rep` query heads
        if rep > 1:
            keys = keys[:, :, None].expand(-1, -1, rep, -1, -1).reshape(B, self.heads, -1, self.head)
            values = values[:, :, None].expand(-1, -1, rep, -1, -1).reshape(B, self.heads, -1, self.head)
        scores = torch.matmul(q, keys.transpose(-1, -2)) / math.sqrt(self.head)  # (B, nh, T, P + T)
        scores = torch.where(seen, scores, torch.tensor(MASK_VALUE, dtype=scores.dtype))
        context = torch.matmul(scores.float().softmax(dim=-1).to(q.dtype), values)  # (B, nh, T, hd)
        return self.o_proj(context.transpose(1, 2).reshape(B, T, self.heads * self.head)), k, v


class LlamaMLP(nn.Module):
    def __init__(self, c: LlamaTowerConfig):
        super().__init__()
        self.gate_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.up_proj = nn.Linear(c.hidden_size, c.intermediate_size, bias=c.mlp_bias)
        self.down_proj = nn.Linear(c.intermediate_size, c.hidden_size, bias=c.mlp_bias)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class LlamaDecoderLayer(nn.Module):
    def __init__(self, c: LlamaTowerConfig):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
        self.self_attn = LlamaAttention(c)
        self.post_attention_layernorm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
        self.mlp = LlamaMLP(c)

    def forward(self, h, cos, sin, seen, past_k, past_v):
        a, k, v = self.self_attn(self.input_layernorm(h), cos, sin, seen, past_k, past_v)
        h = h + a
        return h + self.mlp(self.post_attention_layernorm(h)), k, v


class LlamaModel(nn.Module):
    """`embed_tokens` + the layers + the final norm (HF's LlamaModel names). With `layers=False` only
    the token embeddings exist (a decoder too large for PyTorch is written layer by layer instead)."""

    def __init__(self, c: LlamaTowerConfig, layers: bool = True):
        super().__init__()
        self.config = c
        self.embed_tokens = nn.Embedding(c.vocab_size, c.hidden_size)
        if layers:
            self.layers = nn.ModuleList(LlamaDecoderLayer(c) for _ in range(c.num_hidden_layers))
            self.norm = LlamaRMSNorm(c.hidden_size, c.rms_norm_eps)
        # constants, not weights: computed from the config (not in checkpoints; HF does not save them)
        self.register_buffer("inv_freq", torch.from_numpy(c.inv_freq()), persistent=False)

    def decode(self, inputs_embeds, attention_mask, position_ids, cache_mask, past_keys, past_values):
        """One call over the cache (see the module docstring) -> (hidden, [new keys], [new values])."""
        cos, sin = rotary_cos_sin(self.inv_freq, position_ids, inputs_embeds.dtype)
        seen = cache_attention_mask(cache_mask, attention_mask)
        h, new_k, new_v = inputs_embeds, [], []
        for layer, pk, pv in zip(self.layers, past_keys, past_values):
            h, k, v = layer(h, cos, sin, seen, pk, pv)
            new_k.append(k)
            new_v.append(v)
        return self.norm(h), new_k, new_v

    def empty_cache(self, batch: int, dtype=torch.float32):
        """cache_mask and per-layer keys / values with no slots (a forward without a cache)."""
        c = self.config
        shape = (batch, c.kv_heads, 0, c.head_size)
        layers = range(c.num_hidden_layers)
        return (torch.zeros(batch, 0, dtype=torch.int64), [torch.zeros(shape, dtype=dtype) for _ in layers],
                [torch.zeros(shape, dtype=dtype) for _ in layers])
