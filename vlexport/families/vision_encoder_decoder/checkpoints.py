"""What vlexport knows about vision encoder-decoders without a network. Plain data, no torch.

- CHECKPOINTS for `--random-weights`: nlpconnect/vit-gpt2-image-captioning (ViT-B/16 at 224 + GPT-2
  small with cross-attention; generation ids 50256) and microsoft/trocr-base-handwritten in TrOCR-base's
  shape (a ViT-B/16 encoder at 384 px without q/k/v biases + TrOCRConfig's defaults, which transformers
  documents as that checkpoint's architecture: 1024 wide, 12 layers, 16 heads, cross-attention over the
  768-wide encoder; start/eos 2, pad 1), and the seed example's composition of
  microsoft/swin-base-patch4-window7-224-in22k with google-bert/bert-base-uncased as a decoder (below).
  A checkpoint folder's own config.json always wins.
- TINY: the tiny built-in captioner (ViT 32x32 px in 8-px patches + a 2-layer GPT-2 on the tiny
  WordPiece vocabulary, [CLS] starts and [SEP] ends a caption).
"""

from __future__ import annotations

_VIT_BASE = {"model_type": "vit", "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
             "intermediate_size": 3072, "image_size": 224, "patch_size": 16}
_GPT2_SMALL = {"model_type": "gpt2", "vocab_size": 50257, "n_positions": 1024, "n_embd": 768, "n_layer": 12,
               "n_head": 12, "add_cross_attention": True, "bos_token_id": 50256, "eos_token_id": 50256}

CHECKPOINTS = {
    "nlpconnect/vit-gpt2-image-captioning": {
        "model_type": "vision-encoder-decoder", "architectures": ["VisionEncoderDecoderModel"],
        "encoder": _VIT_BASE, "decoder": _GPT2_SMALL,
        "decoder_start_token_id": 50256, "eos_token_id": 50256, "pad_token_id": 50256},
}

CHECKPOINTS["microsoft/trocr-base-handwritten"] = {
    "model_type": "vision-encoder-decoder", "architectures": ["VisionEncoderDecoderModel"],
    "encoder": {**_VIT_BASE, "image_size": 384, "qkv_bias": False},
    "decoder": {"model_type": "trocr", "vocab_size": 50265, "d_model": 1024, "decoder_layers": 12,
                "decoder_attention_heads": 16, "decoder_ffn_dim": 4096, "max_position_embeddings": 512,
                "cross_attention_hidden_size": 768, "layernorm_embedding": True, "scale_embedding": False,
                "use_learned_position_embeddings": True, "bos_token_id": 0, "eos_token_id": 2, "pad_token_id": 1,
                "decoder_start_token_id": 2},
    "decoder_start_token_id": 2, "eos_token_id": 2, "pad_token_id": 1}

# The seed's composition: Swin-B at 224 (window 7) + BERT-base as a decoder, composed the way
# VisionEncoderDecoderModel.from_encoder_decoder_pretrained composes them (the decoder gets cross-attention;
# the 1024-wide encoder meets the 768-wide decoder through enc_to_dec_proj). Its generation ids are BERT's own
# [CLS] (start), [SEP] (end) and [PAD], which a user sets on such a pair before training it.
_SWIN_BASE = {"model_type": "swin", "image_size": 224, "patch_size": 4, "embed_dim": 128, "depths": [2, 2, 18, 2],
              "num_heads": [4, 8, 16, 32], "window_size": 7, "mlp_ratio": 4.0, "qkv_bias": True,
              "hidden_act": "gelu", "use_absolute_embeddings": False, "layer_norm_eps": 1e-5}
_BERT_BASE_DECODER = {"model_type": "bert", "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12,
                      "num_attention_heads": 12, "intermediate_size": 3072, "max_position_embeddings": 512,
                      "is_decoder": True, "add_cross_attention": True, "pad_token_id": 0,
                      "bos_token_id": 101, "eos_token_id": 102}
CHECKPOINTS["microsoft/swin-base-patch4-window7-224-in22k+google-bert/bert-base-uncased"] = {
    "model_type": "vision-encoder-decoder", "architectures": ["VisionEncoderDecoderModel"],
    "encoder": _SWIN_BASE, "decoder": _BERT_BASE_DECODER,
    "decoder_start_token_id": 101, "eos_token_id": 102, "pad_token_id": 0}

TINY_ID = "tiny-captioner"


def tiny_config(vocab_size: int | None = None) -> dict:
    from vlexport.processing.vocab import tiny_vocab

    vocab = tiny_vocab()
    small = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    cls, sep, pad = vocab.index("[CLS]"), vocab.index("[SEP]"), vocab.index("[PAD]")
    decoder = {"model_type": "gpt2", "vocab_size": vocab_size or len(vocab), "n_positions": 64, "n_embd": 32,
               "n_layer": 2, "n_head": 2, "add_cross_attention": True, "bos_token_id": cls, "eos_token_id": sep}
    return {"model_type": "vision-encoder-decoder", "architectures": ["VisionEncoderDecoderModel"],
            "encoder": {"model_type": "vit", **small, "image_size": 32, "patch_size": 8}, "decoder": decoder,
            "decoder_start_token_id": cls, "eos_token_id": sep, "pad_token_id": pad}


TINY = {TINY_ID: tiny_config}
