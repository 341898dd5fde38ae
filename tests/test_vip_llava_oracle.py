"""Our VipLlava against transformers' VipLlavaForConditionalGeneration (perturbed random weights):
logits at every real position of left-padded batches, image features, both checkpoint key layouts,
grouped-query and plain attention, rope variants, and the cache contract (prefill then steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oracle import save_hf_model
from vip_llava_kit import IMAGE_TOKEN, images, make_hf_model, old_layout, prompts

pytest.importorskip("transformers")

VARIANTS = {
    "gqa": {},
    "tied": dict(tie=True),  # lm_head is the embedding table: the checkpoint stores it once
    "mha-bias": dict(kv_heads=4, attention_bias=True, mlp_bias=True),
    "one-feature-layer": dict(feature_layers=(-1,)),
    "linear-rope": dict(rope={"rope_type": "linear", "rope_theta": 500.0, "factor": 2.0}),
    "llama3-rope": dict(rope={"rope_type": "llama3", "rope_theta": 50000.0, "factor": 8.0, "low_freq_factor": 1.0,
                              "high_freq_factor": 4.0, "original_max_position_embeddings": 16}),
}


def _ours_from(folder):
    from vlexport.families.vip_llava.model import VipLlavaForConditionalGeneration

    return VipLlavaForConditionalGeneration.from_pretrained(str(folder)).eval()


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def pair(request, tmp_path_factory):
    hf = make_hf_model(seed=3, **VARIANTS[request.param])
    folder = save_hf_model(hf, tmp_path_factory.mktemp(request.param))
    if hf.config.tie_word_embeddings:
        assert hf.lm_head.weight is hf.model.language_model.embed_tokens.weight
    return hf, _ours_from(folder)


@pytest.mark.parametrize("batch,n_images", [(1, 1), (3, 3)])
def test_logits_match_transformers(pair, batch, n_images):
    hf, ours = pair
    rng = np.random.default_rng(batch)
    ids, mask = prompts(batch, rng)
    px = torch.from_numpy(images(n_images, rng))
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        want = hf(input_ids=ids_t, pixel_values=px, attention_mask=mask_t).logits
        got = ours(input_ids=ids_t, pixel_values=px, attention_mask=mask_t).logits
    real = mask_t.bool()
    assert (want[real] - got[real]).abs().max() < 1e-4


def test_image_features_match(pair):
    hf, ours = pair
    px = torch.from_numpy(images(2, np.random.default_rng(0)))
    with torch.no_grad():
        want = hf.get_image_features(pixel_values=px).pooler_output
        got = ours.image_features(px)
    assert got.shape == want.shape
    assert (want - got).abs().max() < 1e-5


def test_text_only_prompt(pair):
    hf, ours = pair
    ids = torch.tensor([[1, 5, 9, 33, 7, 12]])
    with torch.no_grad():
        assert (hf(input_ids=ids).logits - ours(input_ids=ids).logits).abs().max() < 1e-4


def test_public_checkpoint_layout_loads(tmp_path):
    """The public checkpoints were saved by transformers 4 (vision_tower.vision_model.*, language_model.model.*,
    language_model.lm_head): they load into the same numbers."""
    from safetensors.torch import save_file

    hf = make_hf_model(seed=5)
    save_hf_model(hf, tmp_path)
    for f in tmp_path.glob("*.safetensors"):
        f.unlink()
    save_file({k: v.contiguous() for k, v in old_layout(hf.state_dict()).items()}, str(tmp_path / "model.safetensors"))
    ours = _ours_from(tmp_path)
    ids, mask = prompts(2, np.random.default_rng(1))
    px = torch.from_numpy(images(2, np.random.default_rng(2)))
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(ids), pixel_values=px, attention_mask=torch.from_numpy(mask)).logits
        got = ours(input_ids=torch.from_numpy(ids), pixel_values=px, attention_mask=torch.from_numpy(mask)).logits
    real = torch.from_numpy(mask).bool()
    assert (want[real] - got[real]).abs().max() < 1e-4


def test_vision_feature_layer_new_name():
    """transformers 5's `vision_feature_layer` (int or list) is read as the public configs' `vision_feature_layers`."""
    from vlexport.families.vip_llava.config import VipLlavaConfig

    hf = make_hf_model(seed=0)
    d = hf.config.to_dict()
    d.pop("vision_feature_layers", None)
    d["vision_feature_layer"] = -2
    assert VipLlavaConfig.from_dict(d).vision_feature_layers == [-2]
    d["vision_feature_layer"] = [-2, 1]
    assert VipLlavaConfig.from_dict(d).hidden_state_indices == [2, 1]


def test_cache_steps_match_full_forward(pair):
    """The cache contract: a prefill of a left-padded batch, then single-token steps over the preallocated
    cache, gives transformers' logits for the whole sequence (teacher forcing)."""
    hf, ours = pair
    rng = np.random.default_rng(7)
    ids, mask = prompts(2, rng)
    extra = rng.integers(3, 100, size=(2, 3))
    full_ids = np.concatenate([ids, extra], axis=1)
    full_mask = np.concatenate([mask, np.ones_like(extra)], axis=1)
    px = torch.from_numpy(images(2, rng))
    with torch.no_grad():
        want = hf(input_ids=torch.from_numpy(full_ids), pixel_values=px,
                  attention_mask=torch.from_numpy(full_mask)).logits
        lm = ours.model.language_model
        c = ours.config.text_config
        B, P = ids.shape
        cap = full_ids.shape[1] + 2  # spare slots stay masked
        keys = [torch.zeros(B, c.kv_heads, cap, c.head_size) for _ in range(c.num_hidden_layers)]
        values = [torch.zeros_like(k) for k in keys]
        cache_mask = torch.zeros(B, cap, dtype=torch.int64)
        emb = ours.merge(torch.from_numpy(ids), lm.embed_tokens(torch.from_numpy(ids)), ours.image_features(px))
        m = torch.from_numpy(mask)
        pos = (m.cumsum(-1) - 1).clamp(min=0)
        logits, nk, nv = ours.decode(emb, m, pos, cache_mask, keys, values)
        got = [logits[:, -1]]
        for i in range(c.num_hidden_layers):
            keys[i][:, :, :P], values[i][:, :, :P] = nk[i], nv[i]
        cache_mask[:, :P] = m
        nxt = m.sum(-1, keepdim=True)
        for j in range(extra.shape[1]):
            tok = torch.from_numpy(extra[:, j:j + 1])
            logits, nk, nv = ours.decode(lm.embed_tokens(tok), torch.ones_like(tok), nxt + j, cache_mask, keys, values)
            for i in range(c.num_hidden_layers):
                keys[i][:, :, P + j], values[i][:, :, P + j] = nk[i][:, :, 0], nv[i][:, :, 0]
            cache_mask[:, P + j] = 1
            got.append(logits[:, -1])
    got = torch.stack(got, dim=1)
    assert (want[:, P - 1:] - got).abs().max() < 1e-4


def test_bad_prompt_image_count(pair):
    from vlexport.errors import InputError

    _, ours = pair
    ids = torch.tensor([[1, IMAGE_TOKEN, IMAGE_TOKEN, 5]])
    with pytest.raises(InputError, match="2 image tokens"):
        ours(input_ids=ids, pixel_values=torch.from_numpy(images(1, np.random.default_rng(0))))
