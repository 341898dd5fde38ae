"""VisualBERT's configuration: the fields of HF's `config.json` our model reads. No torch, so the
export description, the runtime and `vlexport validate` can use it on machines without torch."""

from __future__ import annotations

import json
from dataclasses import dataclass, field, fields
from pathlib import Path

from vlexport.errors import ConfigError

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_POSITIVE_INTS = ("vocab_size", "hidden_size", "visual_embedding_dim", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels")


@dataclass
class VisualBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    visual_embedding_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    bypass_transformer: bool = False
    tie_word_embeddings: bool = True
    id2label: dict | None = None
    architectures: list | None = None
    num_labels: int = 2
    extra: dict = field(default_factory=dict)  # every other config.json key, kept for round trips

    @classmethod
    def from_dict(cls, d: dict) -> "VisualBertConfig":
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("id2label"):
            try:
                kw["id2label"] = {int(k): str(v) for k, v in dict(kw["id2label"]).items()}
            except (TypeError, ValueError, AttributeError):
                raise ConfigError("config 'id2label' must map label ids to names") from None
            kw["num_labels"] = len(kw["id2label"])
        cfg = cls(**kw, extra={k: v for k, v in d.items() if k not in names})
        cfg.validate()
        return cfg

    @classmethod
    def from_json_file(cls, path) -> "VisualBertConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d = {**self.extra, **{k: v for k, v in d.items() if v is not None}, "model_type": "visual_bert"}
        if self.id2label:
            d["id2label"] = {str(k): v for k, v in self.id2label.items()}
            d["label2id"] = {v: k for k, v in self.id2label.items()}
        return d

    def validate(self):
        for name in _POSITIVE_INTS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"config '{name}' must be a positive integer, got {v!r}")
        if not isinstance(self.layer_norm_eps, (int, float)) or not 0 < self.layer_norm_eps < 1:
            raise ConfigError(f"config 'layer_norm_eps' must be a small positive number, got {self.layer_norm_eps!r}")
        if self.bypass_transformer:
            # HF's bypass path indexes the extended mask with a size-1 axis and raises; no public
            # checkpoint uses it, so there is nothing to match. Refuse rather than guess.
            raise ConfigError("bypass_transformer=True is not supported: transformers' implementation of it "
                              "fails at run time and no public VisualBERT checkpoint uses it")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act '{self.hidden_act}' is not supported; known: {list(ACTIVATIONS)}")
