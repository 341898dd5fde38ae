"""Our VisionEncoderDecoder against transformers (perturbed random weights, saved and loaded by keys):
teacher-forced logits at every position, and step-by-step decoding through the fixed-capacity KV
cache equal to the full forward (the cache path the exported decoder graph takes)."""

from __future__ import annotations

import pytest
import torch

from encoder_decoder_kit import START, images, make_hf_model
from oracle import save_hf_model

transformers = pytest.importorskip("transformers")


# trocr-small's decoder: fixed sinusoidal positions numbered from the pad id, a scaled embedding
TROCR_SMALL = {"use_learned_position_embeddings": False, "scale_embedding": True}


@pytest.fixture(scope="module", params=[("vit", 32, "gpt2", {}), ("deit", 32, "gpt2", {}), ("vit", 48, "gpt2", {}),
                                        ("vit", 32, "trocr", {}), ("deit", 48, "trocr", {}),
                                        ("deit", 48, "trocr", TROCR_SMALL), ("vit", 32, "bert", {}),
                                        ("deit", 48, "bert", {}), ("swin", 32, "bert", {}),
                                        ("swin-pad", 32, "gpt2", {"n_embd": 48}), ("beit", 32, "trocr", {}),
                                        ("beit-shared", 48, "gpt2", {})],
                ids=["vit-gpt2", "deit-gpt2", "vit-gpt2-proj", "vit-trocr", "deit-trocr-cross48",
                     "deit-trocr-sinusoidal", "vit-bert", "deit-bert-proj", "swin-bert", "swin-padded-gpt2-proj",
                     "beit-trocr", "beit-shared-gpt2-proj"])
def pair(request, tmp_path_factory):
    from vlexport.families.vision_encoder_decoder.model import VisionEncoderDecoderModel

    encoder, width, decoder, kw = request.param
    hf = make_hf_model(encoder, enc_hidden=width, decoder=decoder, **kw)
    folder = save_hf_model(hf, tmp_path_factory.mktemp(f"ved-{encoder}-{width}-{decoder}"))
    return hf, VisionEncoderDecoderModel.from_pretrained(str(folder))


@pytest.mark.parametrize("batch,length", [(1, 1), (3, 7), (2, 15)])
def test_teacher_forced_logits_match_transformers(pair, batch, length):
    hf, ours = pair
    px = torch.from_numpy(images(batch, seed=length, size=hf.config.encoder.image_size))
    ids = torch.randint(3, 50, (batch, length), generator=torch.Generator().manual_seed(length))
    ids[:, 0] = START
    with torch.no_grad():
        theirs = hf(pixel_values=px, decoder_input_ids=ids).logits
        mine = ours(pixel_values=px, decoder_input_ids=ids).logits
    assert mine.shape == theirs.shape
    assert (mine - theirs).abs().max() <= 1e-4 * max(1.0, theirs.abs().max())  # 1e-4 relative to logits of order 5


def test_cached_steps_equal_the_full_forward(pair):
    """Token by token through a preallocated cache of capacity 12 (slots filled as we go)."""
    hf, ours = pair
    B, T, cap = 2, 9, 12
    px = torch.from_numpy(images(B, seed=3, size=hf.config.encoder.image_size))
    ids = torch.randint(3, 50, (B, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = ours(pixel_values=px, decoder_input_ids=ids).logits
        _, ck, cv = ours.encode(px)
        d = ours.config.decoder
        pk = [torch.zeros(B, d.n_head, cap, d.head_size) for _ in range(d.n_layer)]  # one buffer per layer
        pv = [torch.zeros_like(k) for k in pk]
        mask = torch.zeros(B, cap, dtype=torch.int64)
        for t in range(T):
            logits, k, v = ours.decoder(ids[:, t:t + 1], torch.full((B, 1), t), mask, pk, pv, ck, cv)
            # logits of order 5 (the kit's large random weights): 1e-4 relative to their scale
            assert (logits[:, 0] - full[:, t]).abs().max() <= 1e-4 * max(1.0, full.abs().max()), t
            for i in range(d.n_layer):
                pk[i][:, :, t], pv[i][:, :, t] = k[i][:, :, 0], v[i][:, :, 0]
            mask[:, t] = 1


@pytest.mark.parametrize("model_id", ["nlpconnect/vit-gpt2-image-captioning", "microsoft/trocr-base-handwritten",
                                      "microsoft/swin-base-patch4-window7-224-in22k+google-bert/bert-base-uncased"])
def test_embedded_full_size_configs_have_transformers_parameters(model_id):
    """Our model of each embedded public config has as many parameters (encoder, decoder, all) as
    transformers' VisionEncoderDecoderModel built from the same config (on the meta device: no memory)."""
    from vlexport import families

    fam, cfg, _ = families.embedded(model_id)
    config = fam.config_from_dict(cfg)
    with torch.device("meta"):
        ours = fam.model_class("VisionEncoderDecoderModel")(config)
        enc = getattr(transformers, {"vit": "ViTConfig", "deit": "DeiTConfig", "swin": "SwinConfig"}[
            cfg["encoder"]["model_type"]])(
            **{k: v for k, v in cfg["encoder"].items() if k != "model_type"})
        dec = transformers.AutoConfig.for_model(**cfg["decoder"])
        hf_cfg = transformers.VisionEncoderDecoderConfig.from_encoder_decoder_configs(enc, dec)
        hf = transformers.VisionEncoderDecoderModel(hf_cfg)
    # parameters() counts a tied tensor once; transformers 5 names ViT's tensors differently in memory
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert count(ours) == count(hf) > 100_000_000
    for part in ("encoder", "decoder"):
        assert count(getattr(ours, part)) == count(getattr(hf, part)), part


def test_sinusoidal_trocr_needs_an_integer_pad_id():
    """trocr-small numbers its positions from pad_token_id: a config whose pad id is no token id is refused
    by name (a missing one takes TrOCRConfig's default, 1, as in transformers)."""
    from vlexport.errors import ConfigError
    from vlexport.towers.config import decoder_config

    base = {"model_type": "trocr", "d_model": 32, "decoder_layers": 1, "decoder_attention_heads": 4,
            "decoder_ffn_dim": 37, "vocab_size": 50, "use_learned_position_embeddings": False}
    assert not decoder_config({**base, "pad_token_id": 1}).use_learned_position_embeddings
    assert decoder_config({**base, "pad_token_id": None}).pad_token_id == 1
    for bad in ("1", 1.0, -1, 50, True):
        with pytest.raises(ConfigError, match="pad_token_id"):
            decoder_config({**base, "pad_token_id": bad})
