"""The Llama decoder's config, torch-free: the fields of HF's LlamaConfig our decoder reads, and the
rotary inverse frequencies (numpy) for the rope types whose frequencies are fixed at load time.

Rope parameters come in two spellings: transformers 4's `rope_theta` + `rope_scaling` and
transformers 5's `rope_parameters` ({"rope_type": ..., "rope_theta": ...}); both are read.
Supported rope types: "default", "linear" (positions divided by `factor`) and "llama3" (Llama 3.1's
smoothed per-frequency scaling). "dynamic" and the YaRN family change with the sequence length and
are refused with a clear error.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields

import numpy as np

from vlexport.errors import ConfigError

ROPE_TYPES = ("default", "linear", "llama3")


def _positive_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 1


@dataclass
class LlamaTowerConfig:
    model_type: str = "llama"
    vocab_size: int = 32000
    hidden_size: int = 4096
    intermediate_size: int = 11008
    num_hidden_layers: int = 32
    num_attention_heads: int = 32
    num_key_value_heads: int | None = None  # None: as many as the query heads (no grouping)
    head_dim: int | None = None  # None: hidden_size // num_attention_heads
    hidden_act: str = "silu"
    max_position_embeddings: int = 2048
    rms_norm_eps: float = 1e-6
    attention_bias: bool = False
    mlp_bias: bool = False
    tie_word_embeddings: bool = False
    bos_token_id: int | None = 1
    eos_token_id: int | list | None = 2
    pad_token_id: int | None = None
    rope_theta: float | None = None  # transformers 4 spelling
    rope_scaling: dict | None = None  # transformers 4 spelling
    rope_parameters: dict | None = None  # transformers 5 spelling
    extra: dict = field(default_factory=dict)

    POSITIVE_INTS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                     "max_position_embeddings")

    @classmethod
    def from_dict(cls, d: dict) -> "LlamaTowerConfig":
        if not isinstance(d, dict):
            raise ConfigError(f"the Llama text config must be a JSON object, got {type(d).__name__}")
        if d.get("model_type", "llama") != "llama":
            raise ConfigError(f"text model_type {d.get('model_type')!r} is not supported; vlexport's decoder is "
                              f"'llama'")
        names = {f.name for f in fields(cls)} - {"extra"}
        cfg = cls(**{k: v for k, v in d.items() if k in names and v is not None},
                  extra={k: v for k, v in d.items() if k not in names})
        cfg.validate()
        return cfg

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        return {**self.extra, **{k: v for k, v in d.items() if v is not None or k == "pad_token_id"}}

    # ---- derived values
    @property
    def kv_heads(self) -> int:
        return self.num_key_value_heads or self.num_attention_heads

    @property
    def head_size(self) -> int:
        return self.head_dim or self.hidden_size // self.num_attention_heads

    @property
    def rope(self) -> dict:
        """The rope parameters in transformers 5's form: {"rope_type", "rope_theta", ...}."""
        if self.rope_parameters:
            p = dict(self.rope_parameters)
        else:
            p = dict(self.rope_scaling or {})
            if "type" in p and "rope_type" not in p:
                p["rope_type"] = p.pop("type")
        p.setdefault("rope_type", "default")
        p.setdefault("rope_theta", self.rope_theta if self.rope_theta is not None else 10000.0)
        return p

    def inv_freq(self) -> np.ndarray:
        """(head_size // 2,) float32 rotary inverse frequencies, as transformers computes them."""
        p, dim = self.rope, self.head_size
        base = float(p["rope_theta"])
        inv = (1.0 / (base ** (np.arange(0, dim, 2, dtype=np.int64).astype(np.float32) / dim))).astype(np.float32)
        kind = p["rope_type"]
        if kind == "linear":
            return (inv / np.float32(p["factor"])).astype(np.float32)
        if kind == "llama3":
            factor, low, high = p["factor"], p["low_freq_factor"], p["high_freq_factor"]
            old = p["original_max_position_embeddings"]
            low_wavelen, high_wavelen = old / low, old / high
            wavelen = 2 * math.pi / inv
            scaled = np.where(wavelen > low_wavelen, inv / factor, inv)
            smooth = (old / wavelen - low) / (high - low)
            smoothed = (1 - smooth) * scaled / factor + smooth * scaled
            medium = ~(wavelen < high_wavelen) & ~(wavelen > low_wavelen)
            return np.where(medium, smoothed, scaled).astype(np.float32)
        return inv

    def num_parameters(self) -> int:
        H, I, L, V = self.hidden_size, self.intermediate_size, self.num_hidden_layers, self.vocab_size
        attn = H * self.num_attention_heads * self.head_size * 2 + H * self.kv_heads * self.head_size * 2
        per_layer = attn + 3 * H * I + 2 * H
        return L * per_layer + H + V * H * (1 if self.tie_word_embeddings else 2)

    def validate(self):
        for name in self.POSITIVE_INTS:
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"Llama config '{name}' must be a positive integer, got {getattr(self, name)!r}")
        for name in ("num_key_value_heads", "head_dim"):
            v = getattr(self, name)
            if v is not None and not _positive_int(v):
                raise ConfigError(f"Llama config '{name}' must be a positive integer, got {v!r}")
        if self.head_dim is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"Llama hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                              f"{self.num_attention_heads} (and no head_dim is given)")
        if self.num_attention_heads % self.kv_heads:
            raise ConfigError(f"Llama num_attention_heads {self.num_attention_heads} is not a multiple of "
                              f"num_key_value_heads {self.kv_heads}")
        if self.head_size % 2:
            raise ConfigError(f"Llama head size {self.head_size} must be even (rotary embeddings rotate pairs)")
        eps = self.rms_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"Llama config 'rms_norm_eps' must be a small positive number, got {eps!r}")
        if self.hidden_act != "silu":
            raise ConfigError(f"Llama hidden_act {self.hidden_act!r} is not supported (vlexport's MLP is SwiGLU: "
                              f"'silu')")
        p = self.rope
        if p["rope_type"] not in ROPE_TYPES:
            raise ConfigError(f"rope type {p['rope_type']!r} is not supported; vlexport computes {list(ROPE_TYPES)} "
                              f"(their frequencies do not depend on the sequence length)")
        need = {"linear": ("factor",), "llama3": ("factor", "low_freq_factor", "high_freq_factor",
                                                  "original_max_position_embeddings")}.get(p["rope_type"], ())
        missing = [k for k in need if k not in p]
        if missing:
            raise ConfigError(f"rope type {p['rope_type']!r} needs {missing} in the config's rope parameters")
        theta = p["rope_theta"]
        if isinstance(theta, bool) or not isinstance(theta, (int, float)) or not theta > 1:
            raise ConfigError(f"rope_theta must be a number > 1, got {theta!r}")
