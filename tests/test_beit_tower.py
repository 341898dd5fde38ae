"""The BEiT vision tower (vlexport.towers.beit) beyond the oracle pairs of the dual-encoder and
encoder-decoder kits: its relative position index is transformers', the embedded public BEiT configs
have transformers' parameter counts, a BeitForImageClassification checkpoint composes into a dual
encoder as from_vision_text_pretrained does (older checkpoints' stored index buffers ignored), and
bad BEiT configs are refused by name."""

from __future__ import annotations

import json

import pytest
import torch

from dual_encoder_kit import RANDOMIZED, TEXT, VISION, image_inputs, make_hf_model, text_inputs
from oracle import perturb_, save_hf_model, to_torch

transformers = pytest.importorskip("transformers")

from vlexport.errors import ConfigError  # noqa: E402


@pytest.mark.parametrize("side", [1, 2, 5, 14])
def test_relative_position_index_is_transformers(side):
    from transformers.models.beit.modeling_beit import BeitRelativePositionBias

    from vlexport.towers.beit import relative_position_index

    theirs = BeitRelativePositionBias.generate_relative_position_index((side, side))
    assert torch.equal(relative_position_index(side), theirs)


@pytest.mark.parametrize("model_id", ["microsoft/beit-base-patch16-224", "microsoft/beit-base-patch16-224-pt22k"])
def test_embedded_beit_configs_have_transformers_parameters(model_id):
    """Our tower of each embedded BEiT config holds exactly BeitModel's tensors (names and shapes, on the meta
    device), so the public checkpoints load key for key (86M parameters)."""
    from vlexport.families.vision_text_dual_encoder.checkpoints import tower_config
    from vlexport.towers.vision import vision_tower, vision_tower_config

    cfg = tower_config(model_id)
    with torch.device("meta"):
        ours = vision_tower(vision_tower_config(cfg)).state_dict()
        hf = transformers.BeitModel(transformers.BeitConfig(**cfg))
    with torch.no_grad():  # transformers 5 renames BEiT's modules in memory; save_pretrained writes ours
        saved = {k: tuple(v.shape) for k, v in _saved_keys(hf).items()}
    assert {k: tuple(v.shape) for k, v in ours.items()} == saved
    assert sum(v.numel() for v in ours.values()) > 85_000_000


def _saved_keys(model) -> dict:
    """The state dict transformers' save_pretrained writes (its checkpoint names), without writing it."""
    from transformers.core_model_loading import revert_weight_conversion

    return revert_weight_conversion(model, model.state_dict())


def test_classifier_checkpoint_composes_like_from_vision_text_pretrained(tmp_path):
    """A BeitForImageClassification folder (`beit.` prefix, a classifier head, and the relative_position_index
    buffers older transformers saved) + a BertModel: the towers' weights load, only the projections are new."""
    from safetensors.torch import load_file, save_file

    from vlexport.families.vision_text_dual_encoder.compose import compose

    torch.manual_seed(0)
    beit = perturb_(transformers.BeitForImageClassification(VISION["beit"](transformers)), 1).eval()
    bert = perturb_(transformers.BertModel(TEXT["bert"](transformers)), 2).eval()
    with torch.no_grad():
        for name, p in beit.named_parameters():
            if name.endswith(RANDOMIZED):
                p.normal_()
    vdir, tdir = save_hf_model(beit, tmp_path / "beit"), save_hf_model(bert, tmp_path / "bert")
    state = load_file(vdir / "model.safetensors")
    assert any(k.startswith("beit.encoder.layer.") for k in state)
    from transformers.models.beit.modeling_beit import BeitRelativePositionBias

    index = BeitRelativePositionBias.generate_relative_position_index((4, 4))
    for i in range(2):
        key = f"beit.encoder.layer.{i}.attention.attention.relative_position_bias.relative_position_index"
        state[key] = index.clone()
    save_file(state, vdir / "model.safetensors", metadata={"format": "pt"})

    cfg, name, load = compose({"vision_model": str(vdir), "text_model": str(tdir), "projection_dim": 12})
    loaded = load()
    assert loaded.random_parts == ("visual_projection", "text_projection")  # BEiT's pooler is in the checkpoint
    ours = loaded.model
    hf_beit = transformers.BeitModel.from_pretrained(vdir).eval()
    hf = transformers.VisionTextDualEncoderModel(
        vision_model=hf_beit, text_model=transformers.BertModel.from_pretrained(tdir),
        config=transformers.VisionTextDualEncoderConfig.from_vision_text_configs(hf_beit.config, bert.config,
                                                                                 projection_dim=12)).eval()
    with torch.no_grad():
        for key in ("visual_projection.weight", "text_projection.weight"):
            hf.get_parameter(key).copy_(ours.get_parameter(key))
        hf.logit_scale.copy_(ours.logit_scale)
        feeds = to_torch({**text_inputs(3, 7, 0, seed=1), **image_inputs(2, seed=4)})
        mine, theirs = ours(**feeds), hf(**feeds, return_dict=True)
    for k in ("image_embeds", "text_embeds", "logits_per_image"):
        assert (mine[k] - theirs[k]).abs().max() < 1e-5, k


def test_dual_encoder_checkpoint_with_stored_index_buffers_loads(tmp_path):
    """A VisionTextDualEncoderModel folder whose BEiT tower carries older transformers' index buffers."""
    from safetensors.torch import load_file, save_file

    from vlexport.families.vision_text_dual_encoder.model import VisionTextDualEncoderModel

    hf = make_hf_model("beit-shared", "bert")
    folder = save_hf_model(hf, tmp_path / "de")
    state = load_file(folder / "model.safetensors")
    key = "vision_model.encoder.relative_position_bias.relative_position_index"
    state[key] = torch.zeros(17, 17, dtype=torch.int64)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})
    ours = VisionTextDualEncoderModel.from_pretrained(str(folder))
    px = to_torch(image_inputs(2))
    with torch.no_grad():
        err = (ours.get_image_features(**px).pooler_output - hf.get_image_features(**px).pooler_output).abs().max()
    assert err < 1e-5  # the stored buffer is ignored: the index is computed, never read from the file


def test_bad_beit_configs_are_refused_by_name():
    from vlexport.families.vision_text_dual_encoder.config import DualEncoderConfig
    from vlexport.towers.vision import vision_tower_config

    base = {"model_type": "beit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 4,
            "intermediate_size": 37, "image_size": 32, "patch_size": 8}
    assert vision_tower_config(base).grid == 4
    for key, bad in (("use_relative_position_bias", "yes"), ("use_mean_pooling", 1), ("layer_scale_init_value", -1),
                     ("layer_scale_init_value", True)):
        with pytest.raises(ConfigError, match=key):
            vision_tower_config({**base, key: bad})
    swin = {"model_type": "swin", "image_size": 32, "patch_size": 4, "embed_dim": 16, "depths": [2],
            "num_heads": [2], "window_size": 4}
    with pytest.raises(ConfigError, match=r"vision tower model_type 'swin' is not supported.*beit"):
        DualEncoderConfig.from_dict({"model_type": "vision-text-dual-encoder", "vision_config": swin,
                                     "text_config": {"model_type": "bert"}})
    with pytest.raises(ConfigError, match="model_type 'convnext'"):
        vision_tower_config({"model_type": "convnext"})


def test_beit_folder_without_preprocessor_config_gets_beits_processor(tmp_path):
    """A BEiT tower folder with no preprocessor_config.json is processed as HF's BeitImageProcessor would."""
    from vlexport.processing.vit_images import BeitImageProcessor, for_vision_tower
    from vlexport.towers.vision import vision_tower_config

    cfg = vision_tower_config({"model_type": "beit", "image_size": 64, "patch_size": 16})
    proc = for_vision_tower(tmp_path, cfg)
    assert type(proc) is BeitImageProcessor and proc.size == {"height": 64, "width": 64}
    json.dumps(proc.to_dict())
