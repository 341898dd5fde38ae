"""Torch-free configs of the towers: the fields of HF's tower config dicts our modules read.

A tower config arrives as a composite model's `vision_config` / `text_config` dict, or as a tower
checkpoint's own config.json. Its `model_type` picks the variant, and HF's per-type defaults fill
what the dict leaves out (transformers writes only non-default values in some sub-configs):

    vision: "vit", "deit" (+ distillation token), "clip_vision_model" (CLIP's names, pre/post LN,
            quick_gelu, no pooler dense; a full "clip" config contributes its vision_config),
            "beit" (BeitTowerConfig: layer scale, relative position bias, mean pooling)
    text:   "bert", "roberta" / "xlm-roberta" (positions counted from pad_token_id + 1)
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from vlexport.errors import ConfigError
from vlexport.hf_config import square_sizes

TOWER_ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu", "quick_gelu")
_COMMON_INTS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size")

VISION_DEFAULTS = {
    "vit": {"patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-12},
    "deit": {"patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-12},
    "clip_vision_model": {"patch_size": 32, "hidden_act": "quick_gelu", "layer_norm_eps": 1e-5},
}
TEXT_DEFAULTS = {
    "bert": {"vocab_size": 30522, "pad_token_id": 0, "type_vocab_size": 2, "layer_norm_eps": 1e-12},
    "roberta": {"vocab_size": 50265, "pad_token_id": 1, "type_vocab_size": 2, "layer_norm_eps": 1e-12},
    "xlm-roberta": {"vocab_size": 30522, "pad_token_id": 1, "type_vocab_size": 2, "layer_norm_eps": 1e-12},
}


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


class _TowerConfig:
    DEFAULTS: dict = {}
    KIND = ""
    POSITIVE_INTS: tuple = ()

    @classmethod
    def from_dict(cls, d: dict):
        if not isinstance(d, dict):
            raise ConfigError(f"the {cls.KIND} tower config must be a JSON object, got {type(d).__name__}")
        d = cls._unwrap(dict(d))
        model_type = d.get("model_type")
        if model_type not in cls.DEFAULTS:
            raise ConfigError(f"{cls.KIND} tower model_type {model_type!r} is not supported; vlexport's {cls.KIND} "
                              f"towers are {sorted(cls.DEFAULTS)}")
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {**cls.DEFAULTS[model_type], **{k: v for k, v in d.items() if k in names and v is not None}}
        cfg = cls(**kw, extra={k: v for k, v in d.items() if k not in names})
        cfg.validate()
        return cfg

    @classmethod
    def _unwrap(cls, d: dict) -> dict:
        return d

    def to_dict(self) -> dict:
        return {**self.extra, **{f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}}

    def _check(self):
        for name in self.POSITIVE_INTS:
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"{self.KIND} tower config '{name}' must be a positive integer, got "
                                  f"{getattr(self, name)!r}")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"{self.KIND} tower config 'layer_norm_eps' must be a small positive number, got {eps!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"{self.KIND} tower hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in TOWER_ACTIVATIONS:
            raise ConfigError(f"{self.KIND} tower hidden_act {self.hidden_act!r} is not supported; known: "
                              f"{list(TOWER_ACTIVATIONS)}")


@dataclass
class VisionTowerConfig(_TowerConfig):
    model_type: str = "vit"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    image_size: int = 224
    patch_size: int = 16
    num_channels: int = 3
    qkv_bias: bool = True
    pooler_output_size: int | None = None  # ViT/DeiT pooler width (None: hidden_size)
    pooler_act: str = "tanh"
    extra: dict = field(default_factory=dict)

    DEFAULTS = VISION_DEFAULTS
    KIND = "vision"
    POSITIVE_INTS = (*_COMMON_INTS, "image_size", "patch_size", "num_channels")

    @classmethod
    def _unwrap(cls, d: dict) -> dict:
        # a full CLIP config (a CLIPModel checkpoint's config.json) gives its vision part
        if d.get("model_type") == "clip":
            d = {"model_type": "clip_vision_model", **dict(d.get("vision_config") or {})}
            d["model_type"] = "clip_vision_model"
        return square_sizes(d)

    @property
    def is_clip(self) -> bool:
        return self.model_type == "clip_vision_model"

    @property
    def extra_tokens(self) -> int:
        """Tokens before the patches: [CLS], plus DeiT's distillation token."""
        return 2 if self.model_type == "deit" else 1

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    @property
    def output_size(self) -> int:
        """Width of the pooled output (what a projection reads)."""
        return self.hidden_size if self.is_clip else (self.pooler_output_size or self.hidden_size)

    def validate(self):
        self._check()
        if self.patch_size > self.image_size:
            raise ConfigError(f"vision tower patch_size {self.patch_size} is larger than image_size {self.image_size}")
        if self.pooler_output_size is not None and not _positive_int(self.pooler_output_size):
            raise ConfigError(f"vision tower 'pooler_output_size' must be a positive integer, got "
                              f"{self.pooler_output_size!r}")
        if self.pooler_act not in ("tanh", *TOWER_ACTIVATIONS):
            raise ConfigError(f"vision tower pooler_act {self.pooler_act!r} is not supported")


@dataclass
class BeitTowerConfig(VisionTowerConfig):
    """BEiT (HF's BeitConfig): the ViT layout with a bias-free key, layer scale (`lambda_1`, `lambda_2`),
    a learned relative position bias (per layer, or one shared by all layers) instead of or beside
    absolute positions, and a pooled output that is the LayerNorm of the mean patch token (or [CLS]
    after a final LayerNorm when use_mean_pooling is false)."""

    use_mask_token: bool = False
    use_absolute_position_embeddings: bool = False
    use_relative_position_bias: bool = False
    use_shared_relative_position_bias: bool = False
    layer_scale_init_value: float = 0.1
    use_mean_pooling: bool = True

    DEFAULTS = {"beit": {"patch_size": 16, "hidden_act": "gelu", "layer_norm_eps": 1e-12}}
    _FLAGS = ("use_mask_token", "use_absolute_position_embeddings", "use_relative_position_bias",
              "use_shared_relative_position_bias", "use_mean_pooling")

    @property
    def output_size(self) -> int:
        return self.hidden_size  # the pooler is a LayerNorm (or [CLS]): no dense

    @property
    def grid(self) -> int:
        """Patches per side: the relative position bias tables are sized for this grid."""
        return self.image_size // self.patch_size

    def validate(self):
        super().validate()
        for name in self._FLAGS:
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"beit config '{name}' must be true or false, got {getattr(self, name)!r}")
        s = self.layer_scale_init_value
        if isinstance(s, bool) or not isinstance(s, (int, float)) or not 0 <= s < 1e3:
            raise ConfigError(f"beit config 'layer_scale_init_value' must be a number >= 0 (0: no layer scale), "
                              f"got {s!r}")


@dataclass
class TextTowerConfig(_TowerConfig):
    model_type: str = "bert"
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    pad_token_id: int = 0
    position_embedding_type: str = "absolute"
    extra: dict = field(default_factory=dict)

    DEFAULTS = TEXT_DEFAULTS
    KIND = "text"
    POSITIVE_INTS = (*_COMMON_INTS, "vocab_size", "max_position_embeddings", "type_vocab_size")

    @property
    def roberta_positions(self) -> bool:
        return self.model_type in ("roberta", "xlm-roberta")

    @property
    def max_text_length(self) -> int:
        """The most tokens a text may have (RoBERTa's positions start after pad_token_id)."""
        if self.roberta_positions:
            return self.max_position_embeddings - self.pad_token_id - 1
        return self.max_position_embeddings

    @property
    def has_token_type_ids(self) -> bool:
        """Whether the tokenizer gives token_type_ids (HF's RoBERTa tokenizers do not; the model then uses 0)."""
        return not self.roberta_positions

    def validate(self):
        self._check()
        if self.position_embedding_type != "absolute":
            raise ConfigError(f"text tower position_embedding_type {self.position_embedding_type!r} is not "
                              f"supported; vlexport's text towers use absolute positions")
        if isinstance(self.pad_token_id, bool) or not isinstance(self.pad_token_id, int) or \
                not 0 <= self.pad_token_id < self.vocab_size:
            raise ConfigError(f"text tower pad_token_id must be a token id below vocab_size {self.vocab_size}, got "
                              f"{self.pad_token_id!r}")
        if self.max_text_length < 2:
            raise ConfigError(f"text tower max_position_embeddings {self.max_position_embeddings} leaves room for "
                              f"{self.max_text_length} tokens")


@dataclass
class DecoderTowerConfig(_TowerConfig):
    """A text decoder with cross-attention: GPT-2 (HF's GPT2Config names: n_embd, n_layer, ...)."""

    model_type: str = "gpt2"
    vocab_size: int = 50257
    n_positions: int = 1024
    n_embd: int = 768
    n_layer: int = 12
    n_head: int = 12
    n_inner: int | None = None
    activation_function: str = "gelu_new"
    layer_norm_epsilon: float = 1e-5
    scale_attn_weights: bool = True
    scale_attn_by_inverse_layer_idx: bool = False
    add_cross_attention: bool = True
    tie_word_embeddings: bool = True
    cross_attention_hidden_size: int | None = None
    bos_token_id: int | None = 50256
    eos_token_id: int | None = 50256
    pad_token_id: int | None = None
    extra: dict = field(default_factory=dict)

    DEFAULTS = {"gpt2": {}}
    KIND = "decoder"
    POSITIVE_INTS = ("vocab_size", "n_positions", "n_embd", "n_layer", "n_head")

    # the names the shared checks read
    hidden_size = property(lambda self: self.n_embd)
    num_attention_heads = property(lambda self: self.n_head)
    layer_norm_eps = property(lambda self: self.layer_norm_epsilon)
    hidden_act = property(lambda self: self.activation_function)

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    def validate(self):
        self._check()
        if not self.add_cross_attention:
            raise ConfigError("the decoder config has add_cross_attention=false: a vision encoder-decoder's decoder "
                              "attends to the image, so it needs cross-attention layers")
        if self.n_inner is not None and not _positive_int(self.n_inner):
            raise ConfigError(f"decoder config 'n_inner' must be a positive integer or null, got {self.n_inner!r}")


@dataclass
class TrOCRDecoderConfig(_TowerConfig):
    """TrOCR's decoder (HF's TrOCRConfig names), with the attributes the GPT-2 config offers the family
    code (n_layer, n_head, head_size, n_positions, hidden_size)."""

    model_type: str = "trocr"
    vocab_size: int = 50265
    d_model: int = 1024
    decoder_layers: int = 12
    decoder_attention_heads: int = 16
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    max_position_embeddings: int = 512
    scale_embedding: bool = False
    use_learned_position_embeddings: bool = True
    layernorm_embedding: bool = True
    cross_attention_hidden_size: int | None = None
    tie_word_embeddings: bool = True
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    pad_token_id: int | None = 1
    decoder_start_token_id: int | None = 2
    extra: dict = field(default_factory=dict)

    DEFAULTS = {"trocr": {}}
    KIND = "decoder"
    POSITIVE_INTS = ("vocab_size", "d_model", "decoder_layers", "decoder_attention_heads", "decoder_ffn_dim",
                     "max_position_embeddings")

    hidden_size = property(lambda self: self.d_model)
    num_attention_heads = property(lambda self: self.decoder_attention_heads)
    layer_norm_eps = property(lambda self: 1e-5)  # nn.LayerNorm's default, which TrOCR uses
    hidden_act = property(lambda self: self.activation_function)
    n_layer = property(lambda self: self.decoder_layers)
    n_head = property(lambda self: self.decoder_attention_heads)
    n_positions = property(lambda self: self.max_position_embeddings)
    head_size = property(lambda self: self.d_model // self.decoder_attention_heads)

    def validate(self):
        self._check()
        pad = self.pad_token_id
        if not self.use_learned_position_embeddings and not (
                isinstance(pad, int) and not isinstance(pad, bool) and 0 <= pad < self.vocab_size):
            raise ConfigError(f"a TrOCR decoder with sinusoidal positions (use_learned_position_embeddings=false) "
                              f"numbers its positions from pad_token_id, which must be a token id in "
                              f"[0, {self.vocab_size}); got {pad!r}")


DECODERS = {"gpt2": DecoderTowerConfig, "trocr": TrOCRDecoderConfig}


def decoder_config(d: dict):
    """The decoder config class for a decoder dict's model_type."""
    if not isinstance(d, dict) or d.get("model_type") not in DECODERS:
        got = d.get("model_type") if isinstance(d, dict) else type(d).__name__
        raise ConfigError(f"decoder model_type {got!r} is not supported; vlexport's decoders are {sorted(DECODERS)}")
    return DECODERS[d["model_type"]].from_dict(d)


@dataclass
class BertDecoderConfig(TextTowerConfig):
    """BERT as a decoder (HF's BertLMHeadModel with is_decoder and add_cross_attention)."""

    add_cross_attention: bool = True
    is_decoder: bool = True
    tie_word_embeddings: bool = True
    cross_attention_hidden_size: int | None = None
    bos_token_id: int | None = None
    eos_token_id: int | None = None

    DEFAULTS = {"bert": TEXT_DEFAULTS["bert"]}
    KIND = "decoder"

    n_layer = property(lambda self: self.num_hidden_layers)
    n_head = property(lambda self: self.num_attention_heads)
    n_positions = property(lambda self: self.max_position_embeddings)
    head_size = property(lambda self: self.hidden_size // self.num_attention_heads)

    def validate(self):
        super().validate()
        if not self.add_cross_attention:
            raise ConfigError("the BERT decoder config has add_cross_attention=false: a vision encoder-decoder's "
                              "decoder attends to the image, so it needs cross-attention layers")


DECODERS["bert"] = BertDecoderConfig
