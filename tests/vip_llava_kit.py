"""VipLlava test kit: small random transformers VipLlava models (CLIP vision tower + Llama decoder),
perturbed so every weight counts, prompts with <image> tokens, and the transformers-4 key layout
of the public checkpoints."""

from __future__ import annotations

import numpy as np
import torch

from oracle import perturb_

# the ids of the tiny built-in tokenizer (vlexport/data/tiny-llama-tokenizer.json), so the processor works too
VOCAB, IMAGE_TOKEN, PAD, BOS, EOS = 1002, 1000, 1001, 1, 2
# initializer_range 0.2 (10x HF's): random decoders whose tokens depend on the image and the prefix
INIT = 0.2


def hf_config(vision_layers=3, text_layers=2, hidden=64, heads=4, kv_heads=2, feature_layers=(-2, 1), image_size=28,
              patch=14, vocab=VOCAB, image_token=IMAGE_TOKEN, rope=None, tie=False, **text_kw):
    import transformers as t

    vision = t.CLIPVisionConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=vision_layers,
                                num_attention_heads=2, image_size=image_size, patch_size=patch, initializer_range=INIT)
    text = t.LlamaConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=96, num_hidden_layers=text_layers,
                         num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=128,
                         rms_norm_eps=1e-5, bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                         initializer_range=INIT, rope_parameters=rope or {"rope_type": "default", "rope_theta": 10000.0},
                         tie_word_embeddings=tie, **text_kw)
    return t.VipLlavaConfig(vision_config=vision, text_config=text, image_token_index=image_token,
                            image_seq_length=(image_size // patch) ** 2, vision_feature_layers=list(feature_layers),
                            pad_token_id=PAD, tie_word_embeddings=tie)


def make_hf_model(seed=0, **kw):
    import transformers as t

    torch.manual_seed(seed)
    model = t.VipLlavaForConditionalGeneration(hf_config(**kw)).eval()
    perturb_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layer_norm" in name or "layrnorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))  # RMSNorm / CLIP LayerNorm scales
            elif name.endswith("class_embedding"):
                p.copy_(torch.randn(p.shape, generator=g))
    return model


def save_with_processor(model, folder):
    """A transformers save plus the tiny tokenizer and CLIP image config (what a checkpoint folder holds)."""
    from oracle import save_hf_model

    from vlexport.families.vip_llava.processor import VipLlavaProcessor

    save_hf_model(model, folder)
    v = model.config.vision_config
    VipLlavaProcessor.tiny(image_size=v.image_size, patch_size=v.patch_size).save_pretrained(folder)
    return folder


def old_layout(state: dict) -> dict:
    """transformers 5 keys -> the public checkpoints' transformers-4 keys."""
    out = {}
    for k, v in state.items():
        if k.startswith("model.vision_tower."):
            k = "vision_tower.vision_model." + k[len("model.vision_tower."):]
        elif k.startswith("model.language_model."):
            k = "language_model.model." + k[len("model.language_model."):]
        elif k.startswith("model.multi_modal_projector."):
            k = k[len("model."):]
        elif k == "lm_head.weight":
            k = "language_model.lm_head.weight"
        out[k] = v
    return out


def prompts(batch, rng, n_image=4, lengths=None, image_token=IMAGE_TOKEN, vocab=VOCAB, pad_left=True):
    """Token ids [BOS, text..., <image> x n_image, text...] of varied lengths, left-padded (with PAD)."""
    lengths = lengths or [int(rng.integers(3, 9)) for _ in range(batch)]
    rows = []
    for n in lengths:
        text = rng.integers(3, min(vocab, image_token) - 1, size=n).tolist()
        cut = int(rng.integers(0, n + 1))
        rows.append([BOS] + text[:cut] + [image_token] * n_image + text[cut:])
    T = max(len(r) for r in rows)
    ids = np.full((batch, T), PAD, np.int64)
    mask = np.zeros((batch, T), np.int64)
    for i, r in enumerate(rows):
        if pad_left:
            ids[i, T - len(r):], mask[i, T - len(r):] = r, 1
        else:
            ids[i, :len(r)], mask[i, :len(r)] = r, 1
    return ids, mask


def images(n, rng, size=28):
    return rng.normal(0, 1, size=(n, 3, size, size)).astype(np.float32)
