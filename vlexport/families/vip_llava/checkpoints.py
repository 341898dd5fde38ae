"""What vlexport knows about VipLlava without a network. Plain data, no torch.

- CHECKPOINTS for `--random-weights`: llava-hf/vip-llava-7b-hf. Its values: transformers'
  VipLlavaConfig defaults (CLIP ViT-L/14 at 336 px, feature layers [-2, -5, -8, -11, 6], projector
  gelu / LayerNorm eps 1e-5, image token 32000, 576 image tokens) and the conversion script that made
  the checkpoint (transformers' convert_vipllava_weights_to_hf.py: `<image>` = 32000 and `<pad>` =
  32001 added to Llama's 32000 tokens, the embeddings then padded to a multiple of 64, so vocab_size
  is 32064 and pad_token_id 32001). The text side is a Vicuna-7B v1.5 (Llama-2 7B: 4096 wide, 32
  layers, 32 heads, 11008 MLP, RMSNorm eps 1e-5, rope theta 10000, 4096 positions, untied). These
  could not be read from the hub here; a checkpoint folder's own config.json always wins.
- TINY: the tiny built-in VipLlava (CLIP 28 px in 14-px patches -> 4 image tokens, 2 vision layers;
  a 2-layer Llama 64 wide with grouped-query attention on the tiny Llama-style tokenizer).
"""

from __future__ import annotations

CHECKPOINTS = {
    "llava-hf/vip-llava-7b-hf": {
        "model_type": "vipllava", "architectures": ["VipLlavaForConditionalGeneration"],
        "vision_config": {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                          "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14,
                          "projection_dim": 768, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
        "text_config": {"model_type": "llama", "vocab_size": 32064, "hidden_size": 4096, "intermediate_size": 11008,
                        "num_hidden_layers": 32, "num_attention_heads": 32, "num_key_value_heads": 32,
                        "max_position_embeddings": 4096, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
                        "bos_token_id": 1, "eos_token_id": 2, "pad_token_id": 0, "tie_word_embeddings": False},
        "image_token_index": 32000, "image_seq_length": 576, "pad_token_id": 32001, "vocab_size": 32064,
        "projector_hidden_act": "gelu", "projector_layernorm_eps": 1e-5,
        "vision_feature_layers": [-2, -5, -8, -11, 6], "tie_word_embeddings": False},
}

TINY_ID = "tiny-vipllava"


def tiny_config() -> dict:
    from vlexport.families.vip_llava.processor import tiny_token_ids

    ids = tiny_token_ids()
    vision = {"model_type": "clip_vision_model", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
              "num_attention_heads": 2, "image_size": 28, "patch_size": 14}
    text = {"model_type": "llama", "vocab_size": ids["vocab_size"], "hidden_size": 64, "intermediate_size": 96,
            "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128,
            "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "bos_token_id": ids["bos_token_id"],
            "eos_token_id": ids["eos_token_id"], "pad_token_id": ids["pad_token_id"], "tie_word_embeddings": False}
    return {"model_type": "vipllava", "architectures": ["VipLlavaForConditionalGeneration"], "vision_config": vision,
            "text_config": text, "image_token_index": ids["image_token_index"], "image_seq_length": 4,
            "pad_token_id": ids["pad_token_id"], "projector_hidden_act": "gelu", "projector_layernorm_eps": 1e-5,
            "vision_feature_layers": [-2, 1], "tie_word_embeddings": False}


TINY = {TINY_ID: tiny_config}
