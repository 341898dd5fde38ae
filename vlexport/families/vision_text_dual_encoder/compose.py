"""A dual encoder from two tower checkpoints, as transformers' `from_vision_text_pretrained` makes one:

    vlexport build --vision-model google/vit-base-patch16-224 --text-model google-bert/bert-base-uncased \
                   --projection-dim 512

The towers' weights come from their checkpoints (a classification or MLM head in them is ignored; a
ViT/DeiT pooler the checkpoint lacks is initialized, as HF does); the two projections are new
(deterministic random, seed 0) and logit_scale is its initial value. The artifact's manifest lists
those parts under source.random_parts: such a model needs contrastive training before its
similarities mean anything. With --random-weights every weight is random and the tower ids may be
the public ones vlexport knows offline (checkpoints.TOWERS).
"""

from __future__ import annotations

import json
from pathlib import Path

from vlexport.errors import CheckpointError, ConfigError, UnknownModelError
from vlexport.families.vision_text_dual_encoder import checkpoints

# prefixes of the base model inside task checkpoints (ViTForImageClassification: "vit.", ...)
_BASE_PREFIXES = ("vit.", "deit.", "beit.", "bert.", "roberta.")


def _tower_source(model_id: str, kind: str, random_weights: bool, revision):
    """(config dict, folder or None) of one tower."""
    from vlexport.sources import resolve_model_dir

    if random_weights and not Path(model_id).expanduser().exists():
        cfg = checkpoints.tower_config(model_id)
        if cfg is None:
            raise UnknownModelError(f"--{kind}-model {model_id!r} is not a tower vlexport knows offline (known: "
                                    f"{', '.join(sorted(checkpoints.TOWERS))}); pass a folder with its config.json")
        return cfg, None
    folder = resolve_model_dir(model_id, revision)
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except ValueError as exc:
        raise UnknownModelError(f"{folder / 'config.json'} is not valid JSON: {exc}") from None
    return cfg, (None if random_weights else folder)


def compose(values: dict, random_weights: bool = False, revision: str | None = None):
    """(config dict, display name, load() -> Loaded); see vlexport.families.Compose."""
    from vlexport.families.vision_text_dual_encoder.config import VISION_TYPES
    from vlexport.towers.config import TextTowerConfig
    from vlexport.towers.vision import vision_tower_config

    vision_id, text_id = values.get("vision_model"), values.get("text_model")
    if not vision_id or not text_id:
        missing = "--vision-model" if not vision_id else "--text-model"
        raise ConfigError(f"composing a dual encoder needs both --vision-model and --text-model; {missing} is missing")
    dim = values.get("projection_dim") or 512
    if isinstance(dim, bool) or not isinstance(dim, int) or dim < 1:
        raise ConfigError(f"--projection-dim must be a positive integer, got {dim!r}")
    vcfg, vdir = _tower_source(vision_id, "vision", random_weights, revision)
    tcfg, tdir = _tower_source(text_id, "text", random_weights, revision)
    vision = vision_tower_config(vcfg, VISION_TYPES, what="--vision-model")
    text = TextTowerConfig.from_dict(tcfg)
    cfg = checkpoints.composed_config(vision.to_dict(), text.to_dict(), projection_dim=dim)
    name = f"{Path(vision_id.rstrip('/')).name}+{Path(text_id.rstrip('/')).name}"
    return cfg, name, lambda: _load(cfg, vdir, tdir, random_weights, name)


def _load(cfg: dict, vision_dir, text_dir, random_weights: bool, name: str):
    from vlexport import families
    from vlexport.families.vision_text_dual_encoder.processor import DualEncoderProcessor
    from vlexport.reference import Loaded, build_random
    from vlexport.weights import read_state_dict

    family = families.get("vision_text_dual_encoder")
    model, config, arch = build_random(cfg, "VisionTextDualEncoderModel")
    processor = DualEncoderProcessor.from_parts(vision_dir, text_dir, config)
    if random_weights:
        return Loaded(model, config, arch, family, name, None, "random", processor=processor)
    fresh = []
    for tower, folder in (("vision_model", vision_dir), ("text_model", text_dir)):
        module = getattr(model, tower)
        fresh += [f"{tower}.{k}" for k in _load_tower(module, read_state_dict(folder), folder)]
    import torch

    with torch.no_grad():
        model.logit_scale.fill_(float(config.logit_scale_init_value))
    random_parts = ("visual_projection", "text_projection", *sorted({k.rsplit(".", 1)[0] for k in fresh}))
    return Loaded(model.eval(), config, arch, family, name, None, "checkpoint", processor=processor,
                  random_parts=random_parts)


def _load_tower(module, state: dict, folder) -> list[str]:
    """Load a tower checkpoint into `module` strictly; returns the pooler keys it lacked (kept as
    initialized). Head weights (classifier, MLM, CLIP's other tower) are ignored, as HF's AutoModel does."""
    aliases = module.checkpoint_aliases() if hasattr(module, "checkpoint_aliases") else {}
    expected = module.state_dict()
    mapped = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        key = aliases.get(key, key)
        if key not in expected:
            for prefix in _BASE_PREFIXES:
                inner = key[len(prefix):]
                if key.startswith(prefix) and aliases.get(inner, inner) in expected:
                    key = aliases.get(inner, inner)
                    break
        if key in expected:
            mapped[key] = value
    missing = sorted(set(expected) - set(mapped))
    pooler = [k for k in missing if k.startswith("pooler.")]
    other = [k for k in missing if k not in pooler]
    if other:
        raise CheckpointError(f"{folder} does not hold a {module.config.model_type} tower of this config: missing "
                              f"keys {', '.join(other[:8])}" + (f" ... ({len(other)} in all)" if len(other) > 8 else ""))
    for key, value in mapped.items():
        if tuple(value.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{folder}: '{key}' has shape {tuple(value.shape)}, the config implies "
                                  f"{tuple(expected[key].shape)}")
    module.load_state_dict(mapped, strict=False)
    return pooler
