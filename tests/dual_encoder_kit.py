"""Dual-encoder test kit: small random `transformers` VisionTextDualEncoderModels for every tower pair
vlexport supports (ViT, DeiT, CLIP-vision, BEiT x BERT, RoBERTa), perturbed so every weight counts, and
an input maker written here: random images and right-padded texts (padding holds the pad token)."""

from __future__ import annotations

import numpy as np
import torch

from oracle import perturb_

SMALL = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37)
VISION = {
    "vit": lambda t: t.ViTConfig(image_size=32, patch_size=8, **SMALL),
    "deit": lambda t: t.DeiTConfig(image_size=32, patch_size=8, **SMALL),
    "clip": lambda t: t.CLIPVisionConfig(image_size=32, patch_size=8, **SMALL),
    # BEiT as fine-tuned (a bias table per layer, layer scale, mean pooling) and as pre-trained (one shared
    # table, absolute positions too, [CLS] pooling after a final LayerNorm, a mask token)
    "beit": lambda t: t.BeitConfig(image_size=32, patch_size=8, use_relative_position_bias=True, **SMALL),
    "beit-shared": lambda t: t.BeitConfig(image_size=32, patch_size=8, use_shared_relative_position_bias=True,
                                          use_absolute_position_embeddings=True, use_mean_pooling=False,
                                          use_mask_token=True, **SMALL),
}
TEXT = {
    "bert": lambda t: t.BertConfig(vocab_size=99, max_position_embeddings=40, **SMALL),
    "roberta": lambda t: t.RobertaConfig(vocab_size=300, max_position_embeddings=42, pad_token_id=1,
                                         type_vocab_size=1, **SMALL),
}
PAIRS = [("vit", "bert"), ("deit", "bert"), ("clip", "bert"), ("vit", "roberta"), ("clip", "roberta"),
         ("beit", "bert"), ("beit-shared", "roberta")]
# parameters HF initialises to constants (zeros, BEiT's layer scale 0.1): made random so each one counts
RANDOMIZED = ("cls_token", "distillation_token", "position_embeddings", "class_embedding", "mask_token",
              "relative_position_bias_table", "lambda_1", "lambda_2")


def make_hf_model(vision: str, text: str, seed: int = 0, projection_dim: int = 24):
    """A perturbed random transformers dual encoder. Tokens HF initialises to zeros ([CLS], DeiT's
    distillation token, positions) get random values; logit_scale moves off its init value."""
    import transformers as t

    cfg = t.VisionTextDualEncoderConfig.from_vision_text_configs(VISION[vision](t), TEXT[text](t),
                                                                 projection_dim=projection_dim)
    torch.manual_seed(seed)
    model = t.VisionTextDualEncoderModel(cfg)
    perturb_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(RANDOMIZED):
                p.copy_(torch.randn(p.shape, generator=g))
            elif "layernorm" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        model.logit_scale.fill_(1.7)
    return model.eval()


def text_inputs(batch: int, length: int, pad_id: int, vocab: int = 99, seed: int = 0, token_types: bool = True):
    rng = np.random.default_rng(seed)
    real = rng.integers(2, length + 1, size=batch)
    real[0] = length
    mask = (np.arange(length) < real[:, None]).astype(np.int64)
    ids = rng.integers(3, vocab, size=(batch, length), dtype=np.int64)
    ids = np.where(mask == 1, ids, pad_id)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if token_types:
        feeds["token_type_ids"] = np.zeros_like(ids)
    return feeds


def image_inputs(batch: int, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed + 100)
    return {"pixel_values": rng.uniform(-1, 1, size=(batch, 3, size, size)).astype(np.float32)}
