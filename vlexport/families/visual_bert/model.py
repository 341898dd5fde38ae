"""VisualBERT (Li et al., 2019) in plain PyTorch, written for export.

Reads top to bottom: embeddings -> encoder -> pooler -> the six heads (the config dataclass is
in config.py, torch-free, so descriptions and the runtime can read it without torch). Module and
parameter names mirror HF `transformers` so public checkpoints load by their state-dict keys.

Export-friendly choices (all numerically equal to HF in fp32):
- no Python control flow on tensor values; every op works for dynamic batch/text/visual sizes;
- the additive attention mask uses -10000 (finite in fp16) instead of finfo(float32).min, which
  becomes -inf in fp16 and gives NaN on fully masked rows;
- input checks run in eager mode only (they are skipped while tracing/exporting).
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch
from torch import nn

from vlexport.errors import InputError
from vlexport.families.visual_bert.config import VisualBertConfig
from vlexport.layers import MASK_VALUE
from vlexport.layers import Pooler, Pretrained
from vlexport.layers import exporting as _exporting
from vlexport.outputs import ModelOutput
from vlexport.specs import check_inputs
from vlexport.towers.bert import BertEncoder, LMPredictionHead



# ----------------------------------------------------------------------------- embeddings

class VisualBertEmbeddings(nn.Module):
    def __init__(self, c: VisualBertConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(c.vocab_size, c.hidden_size)
        self.position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.LayerNorm = nn.LayerNorm(c.hidden_size, eps=c.layer_norm_eps)
        self.visual_token_type_embeddings = nn.Embedding(c.type_vocab_size, c.hidden_size)
        self.visual_position_embeddings = nn.Embedding(c.max_position_embeddings, c.hidden_size)
        self.visual_projection = nn.Linear(c.visual_embedding_dim, c.hidden_size)

    def forward(self, input_ids, token_type_ids, visual_embeds, visual_token_type_ids, image_text_alignment=None):
        # input_ids (B, T), visual_embeds (B, V, Dv) -> (B, T+V, H)
        T = input_ids.shape[1]
        positions = torch.arange(T, device=input_ids.device)
        text = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
                + self.position_embeddings(positions))

        # Without alignment every region sits at visual position 0, so the region count is unbounded.
        visual_position = self.visual_position_embeddings.weight[0]  # (H,)
        if image_text_alignment is not None:
            # (B, V, A) text positions per region, -1 = none: mean of those text position embeddings.
            valid = (image_text_alignment != -1)
            aligned = self.position_embeddings(image_text_alignment.clamp(min=0))  # (B, V, A, H)
            aligned = (aligned * valid.unsqueeze(-1).to(aligned.dtype)).sum(2)  # (B, V, H)
            count = valid.sum(2).clamp(min=1).unsqueeze(-1).to(aligned.dtype)  # (B, V, 1)
            visual_position = aligned / count + visual_position
        visual = (self.visual_projection(visual_embeds) + visual_position
                  + self.visual_token_type_embeddings(visual_token_type_ids))
        return self.LayerNorm(torch.cat([text, visual], dim=1))


# ----------------------------------------------------------------------------- encoder
# The post-LN BERT encoder (vlexport.towers.bert.BertEncoder): HF's VisualBertLayer is BERT's, same names.


# ----------------------------------------------------------------------------- base model

class _Pretrained(Pretrained):
    def checkpoint_aliases(self) -> dict:
        """{checkpoint key: our key} for keys stored under another name (HF ties the decoder bias)."""
        return {"cls.predictions.decoder.bias": "cls.predictions.bias"}

    def tied_weights(self) -> dict:
        """{our key: the key it is tied to}: keys a checkpoint may omit (HF drops tied weights on save)."""
        cls = getattr(self, "cls", None)
        if self.config.tie_word_embeddings and hasattr(cls, "predictions"):
            return {"cls.predictions.decoder.weight": "visual_bert.embeddings.word_embeddings.weight"}
        return {}


def _input_specs(model, with_alignment: bool) -> list:
    """The head's input specs, built once per model (not on every forward). Like HF, the masks and
    segment ids may be omitted; QA needs attention_mask (checked in its forward)."""
    cache = model.__dict__.setdefault("_input_specs", {})
    if with_alignment not in cache:
        from vlexport.families.visual_bert.describe import describe

        spec = describe(type(model).__name__, model.config, with_alignment=with_alignment)
        # eager calls may omit every input that has an HF default (QA's attention_mask is checked in its forward)
        cache[with_alignment] = [replace(s, required=False) if s.name in _OPTIONAL else s
                                 for s in spec.graphs[0].inputs]
    return cache[with_alignment]


_OPTIONAL = {"attention_mask", "token_type_ids", "visual_attention_mask", "visual_token_type_ids"}


def _check(model, feeds: dict):
    """Eager-mode input checks against the task description (skipped while exporting)."""
    if _exporting():
        return
    sizes = check_inputs(_input_specs(model, "image_text_alignment" in feeds), feeds)
    if sizes.get("text", 0) > model.config.max_position_embeddings:
        raise InputError(f"input 'input_ids' has {sizes['text']} tokens; this model's "
                         f"max_position_embeddings is {model.config.max_position_embeddings}")


class VisualBertModel(_Pretrained, nn.Module):
    def __init__(self, config: VisualBertConfig, add_pooling_layer: bool = True):
        super().__init__()
        config.validate()
        self.config = config
        self.embeddings = VisualBertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = Pooler(config.hidden_size) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None, **_):
        _no_extra(_)
        if type(self) is VisualBertModel:
            _check(self, _feeds(locals()))
        if visual_embeds is None:
            raise InputError("missing input 'visual_embeds' (B, regions, visual_embedding_dim)")
        text_shape, visual_shape = input_ids.shape, visual_embeds.shape[:-1]
        dev = input_ids.device
        if attention_mask is None:
            attention_mask = torch.ones(text_shape, dtype=torch.long, device=dev)
        if token_type_ids is None:
            token_type_ids = torch.zeros(text_shape, dtype=torch.long, device=dev)
        if visual_attention_mask is None:
            visual_attention_mask = torch.ones(visual_shape, dtype=torch.long, device=dev)
        if visual_token_type_ids is None:
            visual_token_type_ids = torch.ones(visual_shape, dtype=torch.long, device=dev)  # HF default: 1

        h = self.embeddings(input_ids, token_type_ids, visual_embeds, visual_token_type_ids, image_text_alignment)
        keep = torch.cat([attention_mask, visual_attention_mask], dim=1).to(h.dtype)  # (B, T+V)
        additive_mask = ((1.0 - keep) * MASK_VALUE)[:, None, None, :]  # (B, 1, 1, T+V)
        h = self.encoder(h, additive_mask)  # (B, T+V, H)
        pooled = self.pooler(h) if self.pooler is not None else None
        return ModelOutput(last_hidden_state=h, pooler_output=pooled)


def _no_extra(extra: dict):
    """HF-only keyword arguments are accepted when they change nothing (return_dict, output_* False,
    None); anything else (a typo, position_ids, labels...) would be silently ignored: refuse it."""
    used = sorted(k for k, v in extra.items() if k != "return_dict" and v is not None and v is not False)
    if used:
        raise InputError(f"unexpected input(s) {used}: vlexport's VisualBERT takes input_ids, attention_mask, "
                         f"token_type_ids, visual_embeds, visual_attention_mask, visual_token_type_ids, "
                         f"image_text_alignment (and region_to_phrase_position for region-to-phrase alignment)")


def _feeds(local_vars: dict) -> dict:
    names = ("input_ids", "attention_mask", "token_type_ids", "visual_embeds", "visual_attention_mask",
             "visual_token_type_ids", "image_text_alignment", "region_to_phrase_position")
    return {k: local_vars[k] for k in names if local_vars.get(k) is not None}


class _WithBase(_Pretrained, nn.Module):
    """A head on top of `self.visual_bert` (the HF base-model prefix)."""

    def __init__(self, config: VisualBertConfig):
        super().__init__()
        config.validate()
        self.config = config
        self.visual_bert = VisualBertModel(config)


# ----------------------------------------------------------------------------- heads

class VisualBertPreTrainingHeads(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.predictions = LMPredictionHead(c)
        self.seq_relationship = nn.Linear(c.hidden_size, 2)


class VisualBertForPreTraining(_WithBase):
    """Masked-LM logits over all T+V positions, and image-text match logits from the pooler."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = VisualBertPreTrainingHeads(config)
        if config.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.visual_bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None, **_):
        _no_extra(_)
        _check(self, _feeds(locals()))
        out = self.visual_bert(input_ids, attention_mask, token_type_ids, visual_embeds, visual_attention_mask,
                               visual_token_type_ids, image_text_alignment)
        return ModelOutput(prediction_logits=self.cls.predictions(out.last_hidden_state),  # (B, T+V, vocab)
                           seq_relationship_logits=self.cls.seq_relationship(out.pooler_output))  # (B, 2)


class VisualBertForQuestionAnswering(_WithBase):
    """VQA: a linear layer on the hidden state of the token before [SEP] (the pooler is unused)."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None, **_):
        _no_extra(_)
        if attention_mask is None:
            raise InputError("input 'attention_mask' is required for question answering: the answer is read "
                             "at the token before [SEP], found from the mask (right padding assumed)")
        _check(self, _feeds(locals()))
        out = self.visual_bert(input_ids, attention_mask, token_type_ids, visual_embeds, visual_attention_mask,
                               visual_token_type_ids, image_text_alignment)
        h = out.last_hidden_state  # (B, T+V, H)
        index = (attention_mask.long().sum(1) - 2).clamp(min=0)  # (B,), as in the original code
        picked = torch.gather(h, 1, index[:, None, None].expand(-1, 1, h.shape[-1]))  # (B, 1, H)
        return ModelOutput(logits=self.cls(picked[:, 0]))  # (B, labels); log-softmax only with labels in HF


class VisualBertForVisualReasoning(_WithBase):
    """NLVR2: a linear layer on the pooler output."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = nn.Linear(config.hidden_size, config.num_labels)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None, **_):
        _no_extra(_)
        _check(self, _feeds(locals()))
        out = self.visual_bert(input_ids, attention_mask, token_type_ids, visual_embeds, visual_attention_mask,
                               visual_token_type_ids, image_text_alignment)
        return ModelOutput(logits=self.cls(out.pooler_output))


class VisualBertForMultipleChoice(_WithBase):
    """VCR: inputs (B, C, ...) are folded to (B*C, ...), one score per choice, unfolded to (B, C)."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = nn.Linear(config.hidden_size, 1)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None, **_):
        _no_extra(_)
        _check(self, _feeds(locals()))
        C = input_ids.shape[1]

        def fold(t, keep):  # (B, C, *rest) -> (B*C, *rest)
            return None if t is None else t.reshape(-1, *t.shape[2:2 + keep])

        out = self.visual_bert(fold(input_ids, 1), fold(attention_mask, 1), fold(token_type_ids, 1),
                               fold(visual_embeds, 2), fold(visual_attention_mask, 1),
                               fold(visual_token_type_ids, 1), fold(image_text_alignment, 2))
        return ModelOutput(logits=self.cls(out.pooler_output).reshape(-1, C))  # (B, C)


class VisualBertRegionToPhraseAttention(nn.Module):
    """Single-head attention logits from phrases (queries) to regions (keys); `value` is unused."""

    def __init__(self, c):
        super().__init__()
        self.head_size = c.hidden_size // c.num_attention_heads
        self.query = nn.Linear(c.hidden_size, self.head_size)
        self.key = nn.Linear(c.hidden_size, self.head_size)
        self.value = nn.Linear(c.hidden_size, self.head_size)

    def forward(self, query, key, visual_attention_mask):
        # query (B, P, H), key (B, V, H) -> logits (B, P, V)
        scores = torch.matmul(self.query(query), self.key(key).transpose(-1, -2)) / math.sqrt(self.head_size)
        # HF adds finfo(float32).min to masked regions: these are output logits (no softmax follows),
        # so we keep HF's values exactly; fp16 graphs keep this last Add in fp32.
        return scores + (1.0 - visual_attention_mask.to(scores.dtype))[:, None, :] * torch.finfo(torch.float32).min


class VisualBertForRegionToPhraseAlignment(_WithBase):
    """Flickr30k entities: for each phrase position, logits over the regions."""

    def __init__(self, config):
        super().__init__(config)
        self.cls = VisualBertPreTrainingHeads(config)  # kept for checkpoint compatibility; unused
        self.attention = VisualBertRegionToPhraseAttention(config)
        if config.tie_word_embeddings:
            self.cls.predictions.decoder.weight = self.visual_bert.embeddings.word_embeddings.weight

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, visual_embeds=None,
                visual_attention_mask=None, visual_token_type_ids=None, image_text_alignment=None,
                region_to_phrase_position=None, **_):
        _no_extra(_)
        if region_to_phrase_position is None:
            raise InputError("input 'region_to_phrase_position' (B, phrases) is required for region-to-phrase "
                             "alignment")
        _check(self, _feeds(locals()))
        if visual_attention_mask is None:
            visual_attention_mask = torch.ones(visual_embeds.shape[:2], dtype=torch.long, device=visual_embeds.device)
        out = self.visual_bert(input_ids, attention_mask, token_type_ids, visual_embeds, visual_attention_mask,
                               visual_token_type_ids, image_text_alignment)
        h = out.last_hidden_state  # (B, T+V, H)
        pos = region_to_phrase_position.clamp(min=0)  # -1 -> 0, as HF
        phrases = torch.gather(h, 1, pos[:, :, None].expand(-1, -1, h.shape[-1]))  # (B, P, H)
        regions = h[:, input_ids.shape[1]:]  # (B, V, H)
        return ModelOutput(logits=self.attention(phrases, regions, visual_attention_mask))  # (B, P, V)


ARCHITECTURES = {
    cls.__name__: cls
    for cls in (VisualBertModel, VisualBertForPreTraining, VisualBertForQuestionAnswering,
                VisualBertForMultipleChoice, VisualBertForVisualReasoning, VisualBertForRegionToPhraseAlignment)
}
