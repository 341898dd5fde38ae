"""ViLT's configuration: the fields of HF's `config.json` our model reads. No torch, so the export
description, the runtime and `vlexport validate` can use it on machines without torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from vlexport.errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_POSITIVE_INTS = ("vocab_size", "type_vocab_size", "modality_type_vocab_size", "max_position_embeddings",
                  "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                  "patch_size", "num_channels", "num_labels")


@dataclass
class ViltConfig:
    vocab_size: int = 30522
    type_vocab_size: int = 2
    modality_type_vocab_size: int = 2  # 0 = text, i+1 = image i (3 for NLVR2's two images)
    max_position_embeddings: int = 40  # text tokens
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 384  # the position grid is image_size // patch_size squared (12x12)
    patch_size: int = 32
    num_channels: int = 3
    qkv_bias: bool = True
    max_image_length: int | None = -1  # -1: keep every patch (the only mode we support)
    num_images: int = -1  # images per example for ViltForImagesAndTextClassification (NLVR2: 2)
    pad_token_id: int | None = 0
    tie_word_embeddings: bool = True
    id2label: dict | None = None
    architectures: list | None = None
    num_labels: int = 2
    extra: dict = field(default_factory=dict)  # every other config.json key, kept for round trips

    @classmethod
    def from_dict(cls, d: dict) -> "ViltConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("id2label"):
            try:
                kw["id2label"] = {int(k): str(v) for k, v in dict(kw["id2label"]).items()}
            except (TypeError, ValueError, AttributeError):
                raise ConfigError("config 'id2label' must map label ids to names") from None
            kw["num_labels"] = len(kw["id2label"])
        for name in ("image_size", "patch_size"):  # HF allows [h, w]; its ViLT only works with squares
            v = kw.get(name)
            if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
                kw[name] = v[0]
        cfg = cls(**kw, extra={k: v for k, v in d.items() if k not in names})
        cfg.validate()
        return cfg

    @classmethod
    def from_json_file(cls, path) -> "ViltConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        # pad_token_id stays even when None (transformers 5's default), else it would come back as 0
        d = {**self.extra, **{k: v for k, v in d.items() if v is not None or k == "pad_token_id"},
             "model_type": "vilt"}
        if self.id2label:
            d["id2label"] = {str(k): v for k, v in self.id2label.items()}
            d["label2id"] = {v: k for k, v in self.id2label.items()}
        return d

    @property
    def grid_size(self) -> int:
        """Side of the square position-embedding grid (12 for 384 / 32)."""
        return self.image_size // self.patch_size

    def validate(self):
        for name in _POSITIVE_INTS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"config '{name}' must be a positive integer, got {v!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"config 'layer_norm_eps' must be a small positive number, got {self.layer_norm_eps!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act '{self.hidden_act}' is not supported; known: {list(ACTIVATIONS)}")
        if self.patch_size > self.image_size:
            raise ConfigError(f"patch_size {self.patch_size} is larger than image_size {self.image_size}")
        m = self.max_image_length
        if isinstance(m, int) and not isinstance(m, bool) and m >= 0:
            # HF then draws at most max_image_length patches per image at random (torch.multinomial) on
            # every call: the outputs change from call to call and no graph can reproduce them.
            raise ConfigError(f"max_image_length={m} is not supported: transformers then keeps a random subset of "
                              f"at most {m} patches per image on every call (outputs are not deterministic). "
                              f"vlexport keeps every patch, as max_image_length=-1 (all public ViLT configs) does")
        if isinstance(self.num_images, bool) or not isinstance(self.num_images, int):
            raise ConfigError(f"config 'num_images' must be an integer, got {self.num_images!r}")
