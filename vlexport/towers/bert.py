"""The BERT-style text tower in plain PyTorch: BERT and RoBERTa, and the post-LN blocks that
BERT-based family encoders are made of.

Reads top to bottom: embeddings (word + position + token type, LayerNorm) -> post-LN encoder ->
pooler = tanh(dense(h[:, 0])). Module names are HF's (`encoder.layer.N.attention.self.query`, ...),
so BERT, RoBERTa and MiniLM checkpoints load by their keys.

RoBERTa differs only in its positions: padding_idx + 1 + (index among the non-pad tokens), padding
tokens at padding_idx (HF's create_position_ids_from_input_ids), written as a cumulative sum so it
exports with dynamic shapes; its tokenizer gives no token_type_ids (zeros, as HF's buffer).
The additive attention mask is -10000 (finite in fp16; equal to HF's finfo.min in fp32 results).
"""

from __future__ import annotations

import torch
from torch import nn

from vlexport.layers import ACTIVATIONS, MASK_VALUE, Pooler, SelfAttention
from vlexport.towers.config import TextTowerConfig


class BertSelfOutput(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h, residual):
        return self.LayerNorm(self.dense(h) + residual)


class BertAttention(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.self = SelfAttention(c.hidden_size, c.num_attention_heads)
        self.output = BertSelfOutput(c)

    def forward(self, x, additive_mask):
        return self.output(self.self(x, additive_mask), x)


class BertIntermediate(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.intermediate_size)
        self.act = ACTIVATIONS[c.hidden_act]

    def forward(self, h):
        return self.act(self.dense(h))


class BertOutput(BertSelfOutput):
    def __init__(self, c):
        nn.Module.__init__(self)
        self.dense = nn.Linear(c.intermediate_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)


class BertLayer(nn.Module):
    """Post-LN block: a = LN(x + attn(x)), then LN(a + MLP(a))."""

    def __init__(self, c):
        super().__init__()
        self.attention = BertAttention(c)
        self.intermediate = BertIntermediate(c)
        self.output = BertOutput(c)

    def forward(self, x, additive_mask):
        a = self.attention(x, additive_mask)
        return self.output(self.intermediate(a), a)


class BertEncoder(nn.Module):
    """The config needs hidden_size, num_attention_heads, intermediate_size, hidden_act,
    layer_norm_eps and num_hidden_layers."""

    def __init__(self, c):
        super().__init__()
        self.layer = nn.ModuleList(BertLayer(c) for _ in range(c.num_hidden_layers))

    def forward(self, x, additive_mask):
        for layer in self.layer:
            x = layer(x, additive_mask)
        return x


def additive_mask(attention_mask, dtype):
    """(B, T) 0/1 -> (B, 1, 1, T): 0 for real tokens, MASK_VALUE for padding."""
    return (1.0 - attention_mask[:, None, None, :].to(dtype)) * MASK_VALUE


class PredictionHeadTransform(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.dense = nn.Linear(c.hidden_size, c.hidden_size)
        self.act = ACTIVATIONS[c.hidden_act]
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def forward(self, h):
        return self.LayerNorm(self.act(self.dense(h)))


class LMPredictionHead(nn.Module):
    """BERT's masked-LM / causal-LM head (`cls.predictions`): transform, then the decoder tied to the
    word embeddings, plus an output-only bias (HF ties `decoder.bias` to `bias`)."""

    def __init__(self, c):
        super().__init__()
        self.transform = PredictionHeadTransform(c)
        self.decoder = nn.Linear(c.hidden_size, c.vocab_size, bias=False)  # tied to word embeddings
        self.bias = nn.Parameter(torch.zeros(c.vocab_size))

    def forward(self, h):
        return self.decoder(self.transform(h)) + self.bias


class TextEmbeddings(nn.Module):
    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.config = c
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)

    def positions(self, input_ids):
        # RoBERTa-style towers only; a family config without the flag (e.g. a multimodal BERT) is BERT
        if getattr(self.config, "roberta_positions", False):
            pad = self.config.pad_token_id
            real = (input_ids != pad).to(torch.int64)
            return torch.cumsum(real, dim=1) * real + pad  # (B, T)
        return torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)

    def forward(self, input_ids, token_type_ids=None):
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        h = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(self.positions(input_ids)))
        return self.LayerNorm(h)  # (B, T, H)


class TextTower(nn.Module):
    """input_ids (B, T), attention_mask (B, T) -> (last_hidden_state (B, T, H), pooled (B, H))."""

    def __init__(self, c: TextTowerConfig):
        super().__init__()
        self.config = c
        self.embeddings = TextEmbeddings(c)
        self.encoder = BertEncoder(c)
        self.pooler = Pooler(c.hidden_size)

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        h = self.embeddings(input_ids, token_type_ids)
        h = self.encoder(h, additive_mask(attention_mask, h.dtype))
        return h, self.pooler(h)
