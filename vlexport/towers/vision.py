"""Which vision tower a config names: its torch-free config class, and (with torch) its module.

    vit, deit, clip_vision_model, clip   VisionTowerConfig  -> vit.VisionTower
    beit                                 BeitTowerConfig    -> beit.BeitTower
    swin                                 SwinTowerConfig    -> swin.SwinTower

Every module takes pixel_values (B, C, S, S) and returns (last_hidden_state, pooled or None); a
family names the model types it takes (a dual encoder needs a pooled output, Swin gives none here).
"""

from __future__ import annotations

from vlexport.errors import ConfigError
from vlexport.towers.config import BeitTowerConfig, VisionTowerConfig
from vlexport.towers.swin_config import SwinTowerConfig

VISION_CONFIGS = {"vit": VisionTowerConfig, "deit": VisionTowerConfig, "clip_vision_model": VisionTowerConfig,
                  "clip": VisionTowerConfig, "beit": BeitTowerConfig, "swin": SwinTowerConfig}
VISION_CONFIG_CLASSES = (VisionTowerConfig, SwinTowerConfig)  # BeitTowerConfig is a VisionTowerConfig


def vision_tower_config(d, kinds=tuple(VISION_CONFIGS), what: str = "vision tower"):
    """The config of the tower a dict names (`model_type`), among `kinds`; a config object passes through."""
    if isinstance(d, VISION_CONFIG_CLASSES) and d.model_type in kinds:
        return d
    if isinstance(d, VISION_CONFIG_CLASSES):
        d = {"model_type": d.model_type}
    if not isinstance(d, dict):
        raise ConfigError(f"the {what} config must be a JSON object, got {type(d).__name__}")
    model_type = d.get("model_type")
    if model_type not in kinds:
        raise ConfigError(f"{what} model_type {model_type!r} is not supported; vlexport's are {sorted(kinds)}")
    return VISION_CONFIGS[model_type].from_dict(d)


def vision_tower(config):
    """The PyTorch module of a vision tower config (imports torch)."""
    if isinstance(config, SwinTowerConfig):
        from vlexport.towers.swin import SwinTower

        return SwinTower(config)
    if isinstance(config, BeitTowerConfig):
        from vlexport.towers.beit import BeitTower

        return BeitTower(config)
    from vlexport.towers.vit import VisionTower

    return VisionTower(config)
