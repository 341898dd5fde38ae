"""VisionEncoderDecoder's configuration: the encoder and decoder tower configs (HF's `encoder` and
`decoder` dicts) and the generation ids kept at the top level of config.json. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import HFConfig
from vlexport.towers.config import (BertDecoderConfig, DecoderTowerConfig, TrOCRDecoderConfig, VisionTowerConfig,
                                    decoder_config)
from vlexport.towers.swin_config import SwinTowerConfig
from vlexport.towers.vision import vision_tower_config

ENCODER_TYPES = ("vit", "deit", "clip_vision_model", "beit", "swin")


def _token_id(v, name, vocab):
    if v is None:
        return None
    if isinstance(v, list) and len(v) == 1:  # HF allows a list of eos ids; one is supported
        v = v[0]
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab:
        raise ConfigError(f"config '{name}' must be a token id below the decoder's vocab_size {vocab}, got {v!r}")
    return v


@dataclass
class EncoderDecoderConfig(HFConfig):
    encoder: VisionTowerConfig | SwinTowerConfig = field(default_factory=VisionTowerConfig)
    decoder: DecoderTowerConfig | TrOCRDecoderConfig = field(default_factory=DecoderTowerConfig)
    decoder_start_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    architectures: list | None = None
    extra: dict = field(default_factory=dict)

    MODEL_TYPE = "vision-encoder-decoder"

    @classmethod
    def _normalize(cls, kw: dict) -> dict:
        for name in ("encoder", "decoder"):
            if kw.get(name) is None:
                raise ConfigError(f"a {cls.MODEL_TYPE} config needs '{name}' (the {name}'s config)")
        kw["encoder"] = vision_tower_config(kw["encoder"], ENCODER_TYPES, what="encoder")
        if not isinstance(kw["decoder"], (DecoderTowerConfig, TrOCRDecoderConfig, BertDecoderConfig)):
            kw["decoder"] = decoder_config(kw["decoder"])
        return kw

    # generation ids: the top level's, else the decoder's (HF's fallbacks)
    @property
    def start_id(self) -> int:
        s = self.decoder_start_token_id
        if s is None:
            s = getattr(self.decoder, "decoder_start_token_id", None)
        return s if s is not None else self.decoder.bos_token_id

    @property
    def eos_id(self):
        return self.eos_token_id if self.eos_token_id is not None else self.decoder.eos_token_id

    @property
    def pad_id(self):
        return self.pad_token_id if self.pad_token_id is not None else self.decoder.pad_token_id

    def to_dict(self) -> dict:
        d = {**self.extra, "model_type": self.MODEL_TYPE, "architectures": self.architectures or
             ["VisionEncoderDecoderModel"], "encoder": self.encoder.to_dict(), "decoder": self.decoder.to_dict()}
        for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            if getattr(self, k) is not None:
                d[k] = getattr(self, k)
        return d

    def validate(self):
        V = self.decoder.vocab_size
        for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
            setattr(self, k, _token_id(getattr(self, k), k, V))
        if self.start_id is None:
            raise ConfigError("the config names no decoder_start_token_id (nor a decoder bos_token_id): generation "
                              "cannot start")
