"""VipLlava's configuration: a CLIP vision tower, a Llama text decoder, the projector and the image
token. Torch-free.

`vision_feature_layers` (the public checkpoints' key) and `vision_feature_layer` (transformers 5's
name, deprecated alias until 5.25) are both read; an int or a list of hidden-state indices, where
0 is the stream entering the first vision layer and k > 0 the output of layer k - 1 (negative
indices count from the end, as Python's).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import HFConfig
from vlexport.towers.config import VisionTowerConfig
from vlexport.towers.llama_config import LlamaTowerConfig

# HF's VipLlavaConfig defaults: CLIP ViT-L/14 at 336 px and Llama-2 7B
DEFAULT_VISION = {"model_type": "clip_vision_model", "hidden_size": 1024, "intermediate_size": 4096,
                  "num_hidden_layers": 24, "num_attention_heads": 16, "image_size": 336, "patch_size": 14}
PROJECTOR_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "quick_gelu")


def _id(v, name, vocab):
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab:
        raise ConfigError(f"config '{name}' must be a token id below the text vocab_size {vocab}, got {v!r}")
    return v


@dataclass
class VipLlavaConfig(HFConfig):
    vision_config: VisionTowerConfig = field(default_factory=lambda: VisionTowerConfig.from_dict(DEFAULT_VISION))
    text_config: LlamaTowerConfig = field(default_factory=LlamaTowerConfig)
    image_token_index: int = 32000
    image_seq_length: int = 576
    projector_hidden_act: str = "gelu"
    projector_layernorm_eps: float = 1e-5
    vision_feature_layers: list = field(default_factory=lambda: [-2, -5, -8, -11, 6])
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    architectures: list | None = None
    extra: dict = field(default_factory=dict)

    MODEL_TYPE = "vipllava"

    @classmethod
    def _normalize(cls, kw: dict) -> dict:
        vision = kw.get("vision_config") or DEFAULT_VISION
        if not isinstance(vision, VisionTowerConfig):
            kw["vision_config"] = VisionTowerConfig.from_dict({**DEFAULT_VISION, **vision})
        text = kw.get("text_config") or {}
        if not isinstance(text, LlamaTowerConfig):
            kw["text_config"] = LlamaTowerConfig.from_dict({"model_type": "llama", **text})
        return kw

    @classmethod
    def from_dict(cls, d: dict):
        d = dict(d)
        if "vision_feature_layer" in d:  # transformers 5's name wins when both are present, as there
            d["vision_feature_layers"] = d.pop("vision_feature_layer")
        layers = d.get("vision_feature_layers")
        if isinstance(layers, int) and not isinstance(layers, bool):
            d["vision_feature_layers"] = [layers]
        elif isinstance(layers, tuple):
            d["vision_feature_layers"] = list(layers)
        return super().from_dict(d)

    def to_dict(self) -> dict:
        d = {**self.extra, "model_type": self.MODEL_TYPE, "architectures": self.architectures or
             ["VipLlavaForConditionalGeneration"], "vision_config": self.vision_config.to_dict(),
             "text_config": self.text_config.to_dict(), "image_token_index": self.image_token_index,
             "image_seq_length": self.image_seq_length, "projector_hidden_act": self.projector_hidden_act,
             "projector_layernorm_eps": self.projector_layernorm_eps,
             "vision_feature_layers": list(self.vision_feature_layers), "tie_word_embeddings": self.tie_word_embeddings}
        if self.pad_token_id is not None:
            d["pad_token_id"] = self.pad_token_id
        return d

    # ---- derived values
    @property
    def vocab_size(self) -> int:
        return self.text_config.vocab_size

    @property
    def hidden_state_indices(self) -> list[int]:
        """The feature layers as non-negative indices into the vision tower's hidden states (0..layers)."""
        n = self.vision_config.num_hidden_layers + 1
        return [i % n for i in self.vision_feature_layers]

    @property
    def vision_layers_needed(self) -> int:
        """Vision layers the features read: later ones are never run (HF runs them and drops them)."""
        return max(self.hidden_state_indices)

    @property
    def eos_id(self):
        e = self.text_config.eos_token_id
        return e[0] if isinstance(e, list) and e else e

    @property
    def pad_id(self):
        return self.pad_token_id if self.pad_token_id is not None else self.text_config.pad_token_id

    def validate(self):
        v, t = self.vision_config, self.text_config
        if not v.is_clip:
            raise ConfigError(f"VipLlava's vision tower is CLIP-vision (model_type 'clip_vision_model'), got "
                              f"{v.model_type!r}")
        layers = self.vision_feature_layers
        n = v.num_hidden_layers
        if not layers or not isinstance(layers, list) or any(
                isinstance(i, bool) or not isinstance(i, int) or not -(n + 1) <= i <= n for i in layers):
            raise ConfigError(f"vision_feature_layers must be hidden-state indices in -{n + 1}..{n} (the tower has "
                              f"{n} layers), got {layers!r}")
        for name in ("image_seq_length",):
            val = getattr(self, name)
            if isinstance(val, bool) or not isinstance(val, int) or val < 1:
                raise ConfigError(f"config '{name}' must be a positive integer, got {val!r}")
        if self.image_seq_length != v.num_patches:
            raise ConfigError(f"image_seq_length {self.image_seq_length} must equal the vision tower's patch count "
                              f"{v.num_patches} ((image_size / patch_size)^2; the CLS token is dropped)")
        self.image_token_index = _id(self.image_token_index, "image_token_index", t.vocab_size)
        if self.image_token_index is None:
            raise ConfigError("config 'image_token_index' is required (the token <image> expands to)")
        self.pad_token_id = _id(self.pad_token_id, "pad_token_id", t.vocab_size)
        if self.projector_hidden_act not in PROJECTOR_ACTIVATIONS:
            raise ConfigError(f"projector_hidden_act {self.projector_hidden_act!r} is not supported; known: "
                              f"{list(PROJECTOR_ACTIVATIONS)}")
        eps = self.projector_layernorm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"config 'projector_layernorm_eps' must be a small positive number, got {eps!r}")
