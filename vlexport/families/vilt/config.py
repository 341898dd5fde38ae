"""ViLT's configuration: the fields of HF's `config.json` our model reads. No torch, so the export
description, the runtime and `vlexport validate` can use it on machines without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import HFConfig, square_sizes

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_POSITIVE_INTS = ("vocab_size", "type_vocab_size", "modality_type_vocab_size", "max_position_embeddings",
                  "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "image_size",
                  "patch_size", "num_channels", "num_labels")


@dataclass
class ViltConfig(HFConfig):
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

    MODEL_TYPE = "vilt"
    POSITIVE_INTS = _POSITIVE_INTS
    KEEP_NONE = ("pad_token_id",)  # transformers 5's default is None: it must not come back as 0

    @classmethod
    def _normalize(cls, kw: dict) -> dict:
        return square_sizes(kw)  # HF's ViLT only works with squares

    @property
    def grid_size(self) -> int:
        """Side of the square position-embedding grid (12 for 384 / 32)."""
        return self.image_size // self.patch_size

    def validate(self):
        self.check_common()
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
