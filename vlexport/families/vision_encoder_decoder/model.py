"""VisionEncoderDecoder (image captioning, OCR) in plain PyTorch, written for export.

Reads top to bottom: a vision encoder (vlexport.towers.vit: ViT, DeiT; .beit: BEiT; .swin: Swin) ->
an optional enc_to_dec_proj (when the widths differ) -> a text decoder with cross-attention
(vlexport.towers.gpt2: GPT-2; vlexport.towers.trocr: TrOCR's decoder; vlexport.towers.bert_decoder:
BERT as a decoder). Names mirror HF's VisionEncoderDecoderModel (`encoder.`, `decoder.`,
`enc_to_dec_proj`), so checkpoints such as nlpconnect/vit-gpt2-image-captioning load by their keys.

Two graphs, driven by the "generate" pipeline (vlexport.runtime.generation):
    encoder: pixel_values -> encoder_hidden_states and each layer's cross-attention keys/values
             (cross_key.{i}, cross_value.{i}: computed once per image, never per token)
    decoder: the new token(s), their positions, the cache's fill mask, each layer's cache buffers
             (past_key.{i}, past_value.{i}) and cross keys/values -> logits and each layer's new
             self-attention keys/values (new_key.{i}, new_value.{i}: the runtime writes them into its
             preallocated cache; the prefix is never re-run)
`forward(pixel_values, decoder_input_ids)` is HF's teacher-forced forward (logits for every position).
"""

from __future__ import annotations

import torch
from torch import nn

from vlexport.families.vision_encoder_decoder.config import EncoderDecoderConfig
from vlexport.layers import Pretrained
from vlexport.outputs import ModelOutput
from vlexport.towers.bert_decoder import BertDecoder
from vlexport.towers.gpt2 import GPT2Decoder
from vlexport.towers.trocr import TrOCRDecoder
from vlexport.towers.vision import vision_tower


class VisionEncoderDecoderModel(Pretrained, nn.Module):
    def __init__(self, config: EncoderDecoderConfig):
        super().__init__()
        self.config = config
        e, d = config.encoder, config.decoder
        self.encoder = vision_tower(e)
        cross = d.cross_attention_hidden_size
        if e.hidden_size != d.hidden_size and cross is None:
            self.enc_to_dec_proj = nn.Linear(e.hidden_size, d.hidden_size)
        decoder = {"gpt2": GPT2Decoder, "trocr": TrOCRDecoder, "bert": BertDecoder}[d.model_type]
        self.decoder = decoder(d, encoder_size=cross or d.hidden_size)

    def tied_weights(self) -> dict:
        if not self.config.decoder.tie_word_embeddings:
            return {}
        if self.config.decoder.model_type == "trocr":
            return {"decoder.output_projection.weight": "decoder.model.decoder.embed_tokens.weight"}
        if self.config.decoder.model_type == "bert":
            return {"decoder.cls.predictions.decoder.weight": "decoder.bert.embeddings.word_embeddings.weight"}
        return {"decoder.lm_head.weight": "decoder.transformer.wte.weight"}

    def checkpoint_aliases(self) -> dict:
        """{checkpoint key: our key}: HF ties BERT's decoder bias to cls.predictions.bias (either may be stored)."""
        return {"decoder.cls.predictions.decoder.bias": "decoder.cls.predictions.bias"}

    def checkpoint_ignored(self, key: str) -> bool:
        """GPT-2 checkpoints saved by older transformers hold the causal-mask buffers `attn.bias` /
        `attn.masked_bias`, and Swin and BEiT ones the `relative_position_index`: constants, not weights."""
        return key.endswith((".attn.bias", ".attn.masked_bias", ".crossattention.bias", ".crossattention.masked_bias",
                             ".relative_position_index"))

    def graph_modules(self) -> dict:
        return {"encoder": _EncoderGraph(self), "decoder": _DecoderGraph(self)}

    # ---- the pieces
    def encode(self, pixel_values):
        hidden, _ = self.encoder(pixel_values)  # (B, N, He)
        if hasattr(self, "enc_to_dec_proj"):
            hidden = self.enc_to_dec_proj(hidden)
        keys, values = self.decoder.cross_kv(hidden)  # one (B, nh, N, hs) per layer
        return hidden, keys, values

    def empty_cache(self, batch: int, dtype=torch.float32):
        """(cache_mask (B, 0), [past keys], [past values]): one empty (B, nh, 0, hs) per layer."""
        d = self.config.decoder
        shape = (batch, d.n_head, 0, d.head_size)
        empty = [torch.zeros(shape, dtype=dtype) for _ in range(d.n_layer)]
        return torch.zeros(batch, 0, dtype=torch.int64), empty, list(empty)

    def forward(self, pixel_values, decoder_input_ids, **extra):
        """HF's teacher-forced forward: logits (B, T, V) for every decoder position."""
        used = sorted(k for k, v in extra.items() if k != "return_dict" and v is not None and v is not False)
        if used:
            from vlexport.errors import InputError

            raise InputError(f"unexpected input(s) {used}: vlexport's VisionEncoderDecoderModel takes pixel_values "
                             f"and decoder_input_ids")
        hidden, ck, cv = self.encode(pixel_values)
        B, T = decoder_input_ids.shape
        mask, pk, pv = self.empty_cache(B, hidden.dtype)
        positions = torch.arange(T)[None].expand(B, -1)
        logits, _, _ = self.decoder(decoder_input_ids, positions, mask, pk, pv, ck, cv)
        return ModelOutput(logits=logits, encoder_last_hidden_state=hidden)


class _EncoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        hidden, keys, values = self.model.encode(pixel_values)
        out = {"encoder_hidden_states": hidden}
        for i, (k, v) in enumerate(zip(keys, values)):
            out[f"cross_key.{i}"], out[f"cross_value.{i}"] = k, v
        return out


class _DecoderGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layers = model.config.decoder.n_layer

    def forward(self, input_ids, position_ids, cache_mask, **cache):
        past_k, past_v, cross_k, cross_v = ([cache[f"{kind}.{i}"] for i in range(self.layers)]
                                            for kind in ("past_key", "past_value", "cross_key", "cross_value"))
        logits, k, v = self.model.decoder(input_ids, position_ids, cache_mask, past_k, past_v, cross_k, cross_v)
        out = {"logits": logits}
        for i in range(self.layers):
            out[f"new_key.{i}"], out[f"new_value.{i}"] = k[i], v[i]
        return out
