"""VisionTextDualEncoder's configuration: two tower configs and the shared projection. Torch-free."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import HFConfig
from vlexport.towers.config import TextTowerConfig, VisionTowerConfig
from vlexport.towers.vision import vision_tower_config

# towers with a pooled output (what the projection reads)
VISION_TYPES = ("vit", "deit", "clip_vision_model", "clip", "beit")


@dataclass
class DualEncoderConfig(HFConfig):
    vision_config: VisionTowerConfig = field(default_factory=VisionTowerConfig)
    text_config: TextTowerConfig = field(default_factory=TextTowerConfig)
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592  # log(1 / 0.07), CLIP's initial temperature
    architectures: list | None = None
    extra: dict = field(default_factory=dict)  # every other config.json key, kept for round trips

    MODEL_TYPE = "vision-text-dual-encoder"

    @classmethod
    def _normalize(cls, kw: dict) -> dict:
        # HF's defaults when a tower config is absent: ViT and BERT
        vision, text = kw.get("vision_config"), kw.get("text_config")
        kw["vision_config"] = vision_tower_config(vision if vision is not None else {"model_type": "vit"},
                                                  VISION_TYPES)
        if not isinstance(text, TextTowerConfig):
            kw["text_config"] = TextTowerConfig.from_dict(text if text is not None else {"model_type": "bert"})
        return kw

    def to_dict(self) -> dict:
        return {**self.extra, "model_type": self.MODEL_TYPE, "architectures": self.architectures or
                ["VisionTextDualEncoderModel"], "vision_config": self.vision_config.to_dict(),
                "text_config": self.text_config.to_dict(), "projection_dim": self.projection_dim,
                "logit_scale_init_value": self.logit_scale_init_value}

    def validate(self):
        p = self.projection_dim
        if isinstance(p, bool) or not isinstance(p, int) or p < 1:
            raise ConfigError(f"config 'projection_dim' must be a positive integer, got {p!r}")
        s = self.logit_scale_init_value
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or abs(s) > 100:
            raise ConfigError(f"config 'logit_scale_init_value' must be a finite number (log of the logit scale), got {s!r}")
