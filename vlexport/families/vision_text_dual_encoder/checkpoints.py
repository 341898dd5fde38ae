"""What vlexport knows about dual encoders without a network. Plain data, no torch.

- TOWERS: public tower checkpoints' configs (the values that differ from HF's defaults for their
  model_type), so `vlexport build --vision-model ID --text-model ID --random-weights` composes
  offline; with real weights the ids are folders or hub ids and their own config.json is read.
- CHECKPOINTS: composed dual encoders by name "<vision id>+<text id>" (projection 512): the seed
  example's ViT + BERT, CLIP-vision + BERT and BEiT + BERT, for `--model NAME --random-weights`.
- TINY: the tiny built-in dual encoder (ViT 32x32 px in 8-px patches + a 2-layer BERT on the tiny
  vocabulary, projection 16) for demos and fast tests.
"""

from __future__ import annotations

_BASE = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "intermediate_size": 3072}

TOWERS = {
    # vision
    "google/vit-base-patch16-224": {"model_type": "vit", **_BASE, "image_size": 224, "patch_size": 16},
    "google/vit-base-patch16-224-in21k": {"model_type": "vit", **_BASE, "image_size": 224, "patch_size": 16},
    "facebook/deit-base-distilled-patch16-224": {"model_type": "deit", **_BASE, "image_size": 224, "patch_size": 16},
    "facebook/deit-small-distilled-patch16-224": {"model_type": "deit", "hidden_size": 384, "num_hidden_layers": 12,
                                                  "num_attention_heads": 6, "intermediate_size": 1536,
                                                  "image_size": 224, "patch_size": 16},
    "openai/clip-vit-base-patch32": {"model_type": "clip_vision_model", **_BASE, "image_size": 224, "patch_size": 32,
                                     "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    "openai/clip-vit-base-patch16": {"model_type": "clip_vision_model", **_BASE, "image_size": 224, "patch_size": 16,
                                     "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
    # BEiT-base, as transformers' conversion script (convert_beit_unilm_to_pytorch.py) configures it: the
    # ImageNet fine-tuned checkpoint has a bias table per layer and mean pooling; the pre-trained one (masked
    # image modeling) one shared table and a mask token; both layer scale 0.1, no absolute positions
    "microsoft/beit-base-patch16-224": {"model_type": "beit", **_BASE, "image_size": 224, "patch_size": 16,
                                        "use_relative_position_bias": True},
    "microsoft/beit-base-patch16-224-pt22k": {"model_type": "beit", **_BASE, "image_size": 224, "patch_size": 16,
                                              "use_shared_relative_position_bias": True, "use_mask_token": True},
    # text
    "google-bert/bert-base-uncased": {"model_type": "bert", **_BASE, "vocab_size": 30522},
    "FacebookAI/roberta-base": {"model_type": "roberta", **_BASE, "vocab_size": 50265, "max_position_embeddings": 514,
                                "type_vocab_size": 1, "pad_token_id": 1, "layer_norm_eps": 1e-5},
    "sentence-transformers/all-MiniLM-L6-v2": {"model_type": "bert", "hidden_size": 384, "num_hidden_layers": 6,
                                               "num_attention_heads": 12, "intermediate_size": 1536,
                                               "vocab_size": 30522},
}
TOWER_ALIASES = {"bert-base-uncased": "google-bert/bert-base-uncased", "roberta-base": "FacebookAI/roberta-base"}


def tower_config(model_id: str) -> dict | None:
    cfg = TOWERS.get(TOWER_ALIASES.get(model_id, model_id))
    return dict(cfg) if cfg is not None else None


def composed_config(vision: dict, text: dict, projection_dim: int = 512) -> dict:
    """HF's VisionTextDualEncoderConfig.from_vision_text_configs, as a config.json dict."""
    return {"model_type": "vision-text-dual-encoder", "architectures": ["VisionTextDualEncoderModel"],
            "vision_config": dict(vision), "text_config": dict(text), "projection_dim": projection_dim,
            "logit_scale_init_value": 2.6592}


COMPOSED = [("google/vit-base-patch16-224", "google-bert/bert-base-uncased"),
            ("openai/clip-vit-base-patch32", "google-bert/bert-base-uncased"),
            ("microsoft/beit-base-patch16-224", "google-bert/bert-base-uncased")]
CHECKPOINTS = {f"{v}+{t}": composed_config(TOWERS[v], TOWERS[t]) for v, t in COMPOSED}

TINY_ID = "tiny-dual-encoder"


def tiny_config(vocab_size: int | None = None) -> dict:
    if vocab_size is None:
        from vlexport.processing.vocab import tiny_vocab

        vocab_size = len(tiny_vocab())
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    vision = {"model_type": "vit", **small, "image_size": 32, "patch_size": 8}
    text = {"model_type": "bert", **small, "vocab_size": vocab_size, "max_position_embeddings": 64}
    return composed_config(vision, text, projection_dim=16)


TINY = {TINY_ID: tiny_config}
