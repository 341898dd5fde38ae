"""BERT as a text decoder (HF's BertLMHeadModel with cross-attention) in plain PyTorch, with the step
interface and fixed-capacity KV cache of vlexport.towers.cached_attention: post-LN BERT layers whose
self-attention is causal over the cache + new tokens, then cross-attention to the image
(`crossattention`), then the FFN; `cls.predictions` (tied to the word embeddings) gives the logits.
Names are HF's (`bert.encoder.layer.N.attention.self.query`, `crossattention.self.key`, `cls.predictions`).
BERT's cross-attention keys/values read hidden_size-wide states: a wider or narrower encoder goes
through the family's enc_to_dec_proj first, as in HF.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from vlexport.towers.bert import BertIntermediate, BertOutput, BertSelfOutput, LMPredictionHead, TextEmbeddings
from vlexport.towers.cached_attention import attend, decode_step, merge_heads, split_heads, cross_kv_per_layer


class _QKV(nn.Module):
    """HF's BertSelfAttention parameters (query/key/value)."""

    def __init__(self, c):
        super().__init__()
        self.nh, H = c.num_attention_heads, c.hidden_size
        self.scaling = 1 / math.sqrt(H // self.nh)
        self.query = nn.Linear(H, H)
        self.key = nn.Linear(H, H)
        self.value = nn.Linear(H, H)

    def keys_values(self, x):
        return split_heads(self.key(x), self.nh), split_heads(self.value(x), self.nh)


class _Attention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = _QKV(c)
        self.output = BertSelfOutput(c)

    def forward(self, x, keys, values, additive_mask):
        ctx = attend(split_heads(self.self.query(x), self.self.nh), keys, values, additive_mask, self.self.scaling)
        return self.output(merge_heads(ctx), x)  # LN(dense(ctx) + x)


class BertDecoderLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.attention = _Attention(c)
        self.crossattention = _Attention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x, past_k, past_v, additive_mask, cross_k, cross_v):
        k, v = self.attention.self.keys_values(x)
        a = self.attention(x, torch.cat([past_k, k], dim=2), torch.cat([past_v, v], dim=2), additive_mask)
        a = self.crossattention(a, cross_k, cross_v, 0.0)
        return self.output(self.intermediate(a), a), k, v


class _Encoder(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(BertDecoderLayer(c) for _ in range(c.num_hidden_layers))


class _Bert(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.embeddings = TextEmbeddings(c)
        self.encoder = _Encoder(c)


class _Cls(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.predictions = LMPredictionHead(c)


class BertDecoder(nn.Module):
    def __init__(self, c, encoder_size: int):
        super().__init__()
        self.config = c
        self.bert = _Bert(c)
        self.cls = _Cls(c)
        if c.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight

    @property
    def layers(self):
        return self.bert.encoder.layer

    def cross_kv(self, encoder_hidden):
        return cross_kv_per_layer([layer.crossattention.self.keys_values for layer in self.layers], encoder_hidden)

    def forward(self, input_ids, position_ids, cache_mask, past_keys, past_values, cross_keys, cross_values):
        e = self.bert.embeddings
        x = e.LayerNorm(e.word_embeddings(input_ids) + e.token_type_embeddings(torch.zeros_like(input_ids))
                        + e.position_embeddings(position_ids))  # (B, T, H)
        x, k, v = decode_step(self.layers, x, cache_mask, past_keys, past_values, cross_keys, cross_values)
        return self.cls.predictions(x), k, v
