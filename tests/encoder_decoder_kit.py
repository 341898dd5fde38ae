"""VisionEncoderDecoder test kit: small random transformers captioners (ViT or DeiT encoder + GPT-2
decoder with cross-attention), perturbed so every weight counts, and random images."""

from __future__ import annotations

import numpy as np
import torch

from oracle import perturb_

SMALL_VISION = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=37)
# initializer_range 0.4 (20x HF's): random captioners whose tokens depend on the image and the prefix
# (at 0.02 every image gets the same repeated token, which tests nothing)
INIT = 0.4
# Swin at 32 px in 4-px patches: an 8x8 grid in windows of 4 (shifted blocks, masked), then 4x4 (one window:
# never shifted), 32 wide at the end; swin-pad: 40 px, grids of 10 and 5 padded to whole windows
SMALL_SWIN = dict(image_size=32, patch_size=4, embed_dim=16, depths=[2, 2], num_heads=[2, 4], window_size=4)


def _swin(t, hidden_size=None, **kw):  # Swin's width is embed_dim x 2^(stages - 1), not a setting
    return t.SwinConfig(**{**SMALL_SWIN, "initializer_range": INIT, **kw})


def _beit(t, **kw):
    return t.BeitConfig(**{**SMALL_VISION, "initializer_range": INIT, **kw})


ENCODERS = {"vit": lambda t, **kw: t.ViTConfig(**{**SMALL_VISION, "initializer_range": INIT, **kw}),
            "deit": lambda t, **kw: t.DeiTConfig(**{**SMALL_VISION, "initializer_range": INIT, **kw}),
            "swin": _swin, "swin-pad": lambda t, hidden_size=None, **kw: _swin(t, image_size=40, **kw),
            # BEiT fine-tuned style (a bias table per layer, mean pooling: no final LayerNorm on the tokens) and
            # pre-trained style (one shared table, absolute positions, a final LayerNorm)
            "beit": lambda t, **kw: _beit(t, use_relative_position_bias=True, **kw),
            "beit-shared": lambda t, **kw: _beit(t, use_shared_relative_position_bias=True,
                                                 use_absolute_position_embeddings=True, use_mean_pooling=False, **kw)}
START, EOS, PAD = 1, 2, 0


def gpt2_config(t, vocab=50, n_embd=32, **kw):
    return t.GPT2Config(vocab_size=vocab, n_positions=64, n_embd=n_embd, n_layer=2, n_head=4, add_cross_attention=True,
                        bos_token_id=START, eos_token_id=EOS, initializer_range=INIT, **kw)


def trocr_config(t, vocab=50, d_model=32, **kw):
    return t.TrOCRConfig(vocab_size=vocab, d_model=d_model, decoder_layers=2, decoder_attention_heads=4,
                         decoder_ffn_dim=37, max_position_embeddings=64, bos_token_id=START, eos_token_id=EOS,
                         pad_token_id=PAD, decoder_start_token_id=START, init_std=INIT, **kw)


def bert_config(t, vocab=50, hidden_size=32, **kw):
    return t.BertConfig(vocab_size=vocab, hidden_size=hidden_size, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=37, max_position_embeddings=64, is_decoder=True, add_cross_attention=True,
                        bos_token_id=START, eos_token_id=EOS, pad_token_id=PAD, initializer_range=INIT, **kw)


DECODERS = {"gpt2": gpt2_config, "trocr": trocr_config, "bert": bert_config}


def make_hf_model(encoder="vit", seed=0, enc_hidden=32, decoder="gpt2", **decoder_kw):
    import transformers as t

    if decoder == "trocr" and enc_hidden != 32:
        decoder_kw.setdefault("cross_attention_hidden_size", enc_hidden)  # as the public TrOCR configs
    cfg = t.VisionEncoderDecoderConfig.from_encoder_decoder_configs(ENCODERS[encoder](t, hidden_size=enc_hidden),
                                                                     DECODERS[decoder](t, **decoder_kw))
    cfg.decoder_start_token_id, cfg.eos_token_id, cfg.pad_token_id = START, EOS, PAD
    torch.manual_seed(seed)
    model = t.VisionEncoderDecoderModel(cfg)
    perturb_(model, seed)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in model.named_parameters():
            beit = encoder.startswith("beit")  # its extra parameters (other encoders kept as their tests chose)
            if name.endswith(("cls_token", "distillation_token")) or beit and name.endswith("position_bias_table"):
                p.copy_(torch.randn(p.shape, generator=g))
            elif beit and name.endswith(("lambda_1", "lambda_2")):  # layer scale, HF's init 0.1 everywhere
                p.copy_(0.1 + 0.5 * torch.rand(p.shape, generator=g))
            elif name.endswith("position_embeddings"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif any(n in name for n in ("ln_", "layer_norm", "layernorm_embedding")) and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))  # GPT-2's / TrOCR's LayerNorms (perturb_ knows BERT's)
            elif beit and "layernorm" in name and name.endswith("weight"):
                p.add_(0.1 * torch.randn(p.shape, generator=g))
        embed = model.decoder.get_input_embeddings().weight
        embed[EOS].mul_(2.0)  # some captions end early, others run to the limit
    model.generation_config.decoder_start_token_id = START
    model.generation_config.eos_token_id = EOS
    model.generation_config.pad_token_id = PAD
    return model.eval()


def images(batch, seed=0, size=32):
    rng = np.random.default_rng(seed + 50)
    return rng.uniform(-1, 1, size=(batch, 3, size, size)).astype(np.float32)
