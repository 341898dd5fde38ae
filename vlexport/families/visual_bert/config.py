"""VisualBERT's configuration: the fields of HF's `config.json` our model reads. No torch, so the
export description, the runtime and `vlexport validate` can use it on machines without torch."""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import HFConfig

ACTIVATIONS = ("gelu", "gelu_new", "gelu_pytorch_tanh", "relu")
_POSITIVE_INTS = ("vocab_size", "hidden_size", "visual_embedding_dim", "num_hidden_layers", "num_attention_heads",
                  "intermediate_size", "max_position_embeddings", "type_vocab_size", "num_labels")


@dataclass
class VisualBertConfig(HFConfig):
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

    MODEL_TYPE = "visual_bert"
    POSITIVE_INTS = _POSITIVE_INTS

    def validate(self):
        self.check_common()
        if self.bypass_transformer:
            # HF's bypass path indexes the extended mask with a size-1 axis and raises; no public
            # checkpoint uses it, so there is nothing to match. Refuse rather than guess.
            raise ConfigError("bypass_transformer=True is not supported: transformers' implementation of it "
                              "fails at run time and no public VisualBERT checkpoint uses it")
        if self.hidden_act not in ACTIVATIONS:
            raise ConfigError(f"hidden_act '{self.hidden_act}' is not supported; known: {list(ACTIVATIONS)}")
