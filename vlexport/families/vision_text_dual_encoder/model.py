"""VisionTextDualEncoder (CLIP-style) in plain PyTorch, written for export.

Reads top to bottom: a vision tower (ViT, DeiT or CLIP-vision: vlexport.towers.vit; BEiT:
vlexport.towers.beit) and a text tower
(BERT or RoBERTa: vlexport.towers.bert), each pooled and projected without bias into one
`projection_dim` space; `logit_scale` is the log temperature. Names mirror HF's
`VisionTextDualEncoderModel` (`vision_model.`, `text_model.`, `visual_projection`, `text_projection`,
`logit_scale`), so its checkpoints load by their keys (CLIP-vision towers through aliases).

The artifact holds two graphs, "vision" (pixel_values -> image_embeds) and "text" (input_ids,
attention_mask[, token_type_ids] -> text_embeds): users embed an image index offline and queries
live. Both graph outputs are the projected, *unnormalized* features (HF's get_image_features /
get_text_features); the runtime normalizes them and applies exp(logit_scale) for HF's forward
outputs, with logit_scale recorded in the manifest (`artifact_facts`).
"""

from __future__ import annotations

import torch
from torch import nn

from vlexport.errors import InputError
from vlexport.families.vision_text_dual_encoder.config import DualEncoderConfig
from vlexport.layers import Pretrained, exporting
from vlexport.outputs import ModelOutput
from vlexport.specs import check_inputs
from vlexport.towers.bert import TextTower
from vlexport.towers.vision import vision_tower


class VisionTextDualEncoderModel(Pretrained, nn.Module):
    def __init__(self, config: DualEncoderConfig):
        super().__init__()
        self.config = config
        v, t = config.vision_config, config.text_config
        self.vision_model = vision_tower(v)
        self.text_model = TextTower(t)
        self.visual_projection = nn.Linear(v.output_size, config.projection_dim, bias=False)
        self.text_projection = nn.Linear(t.hidden_size, config.projection_dim, bias=False)
        self.logit_scale = nn.Parameter(torch.tensor(float(config.logit_scale_init_value)))

    # ---- loading (from_pretrained: vlexport.layers.Pretrained)
    def checkpoint_aliases(self) -> dict:
        """{checkpoint key: our key}: CLIP-vision towers store their tensors under CLIP's names."""
        return self.vision_model.checkpoint_aliases(prefix="vision_model.")

    def checkpoint_ignored(self, key: str) -> bool:
        """BEiT checkpoints saved by older transformers hold `relative_position_index`: a constant, not a weight."""
        return key.endswith(".relative_position_index")

    def artifact_facts(self) -> dict:
        """Values the runtime needs that no graph computes (recorded in the manifest)."""
        return {"logit_scale": float(self.logit_scale.detach())}

    def graph_modules(self) -> dict:
        return {"vision": _VisionGraph(self), "text": _TextGraph(self)}

    # ---- HF's API
    def get_image_features(self, pixel_values, **extra) -> ModelOutput:
        """HF 5's output: `pooler_output` = the projected (not normalized) image features."""
        _no_extra(extra)
        _check(self, "vision", {"pixel_values": pixel_values})
        hidden, pooled = self.vision_model(pixel_values)
        return ModelOutput(last_hidden_state=hidden, pooler_output=self.visual_projection(pooled))

    def get_text_features(self, input_ids, attention_mask=None, token_type_ids=None, **extra) -> ModelOutput:
        """HF 5's output: `pooler_output` = the projected (not normalized) text features."""
        _no_extra(extra)
        feeds = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        _check(self, "text", feeds)
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden, pooled = self.text_model(input_ids, attention_mask, token_type_ids)
        return ModelOutput(last_hidden_state=hidden, pooler_output=self.text_projection(pooled))

    def forward(self, input_ids=None, pixel_values=None, attention_mask=None, token_type_ids=None, **extra):
        """HF's four outputs: logits_per_image (B_img, B_txt), logits_per_text, and the normalized embeds."""
        if input_ids is None or pixel_values is None:
            raise InputError("VisionTextDualEncoderModel needs both input_ids and pixel_values (use "
                             "get_text_features / get_image_features for one tower)")
        image = self.get_image_features(pixel_values, **extra).pooler_output
        text = self.get_text_features(input_ids, attention_mask, token_type_ids).pooler_output
        return similarity(image, text, self.logit_scale)


def similarity(image, text, logit_scale) -> ModelOutput:
    """HF's forward from the projected features: cosine similarities times exp(logit_scale)."""
    image = image / image.norm(dim=-1, keepdim=True)
    text = text / text.norm(dim=-1, keepdim=True)
    logits_per_text = torch.matmul(text, image.t()) * logit_scale.exp()  # (B_txt, B_img)
    return ModelOutput(logits_per_image=logits_per_text.t(), logits_per_text=logits_per_text,
                       text_embeds=text, image_embeds=image)


# ----------------------------------------------------------------------------- the two graphs

class _VisionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return {"image_embeds": self.model.get_image_features(pixel_values).pooler_output}  # (B, P)


class _TextGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return {"text_embeds": self.model.get_text_features(input_ids, attention_mask, token_type_ids).pooler_output}


# ----------------------------------------------------------------------------- input checks

def _check(model, graph: str, feeds: dict):
    """Eager-mode checks against the export description (skipped while exporting)."""
    if exporting():
        return
    cache = model.__dict__.setdefault("_input_specs", {})
    if graph not in cache:
        from vlexport.families.vision_text_dual_encoder.describe import describe

        spec = describe("VisionTextDualEncoderModel", model.config)
        cache.update({g.name: g.inputs for g in spec.graphs})
    known = {s.name for s in cache[graph]}
    given = {k: v for k, v in feeds.items() if v is not None}
    if set(given) - known:
        raise InputError(f"input(s) {sorted(set(given) - known)} do not apply: this text tower takes {sorted(known)}")
    sizes = check_inputs(cache[graph], given)
    longest = model.config.text_config.max_text_length
    if sizes.get("text", 0) > longest:
        raise InputError(f"input 'input_ids' has {sizes['text']} tokens; this text tower takes at most {longest}")


def _no_extra(extra: dict):
    """HF-only keyword arguments are accepted when they change nothing; anything else is refused."""
    used = sorted(k for k, v in extra.items() if k != "return_dict" and v is not None and v is not False)
    if used:
        raise InputError(f"unexpected input(s) {used}: vlexport's dual encoder takes input_ids, attention_mask, "
                         f"token_type_ids, pixel_values")
