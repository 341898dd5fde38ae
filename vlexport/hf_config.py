"""What every family's config dataclass shares: reading HF's config.json (unknown keys kept in
`extra` for round trips, id2label keys made ints), writing it back, and value checks. Torch-free.

A family's config is `@dataclass class FooConfig(HFConfig)` with its fields, an `extra` field,
MODEL_TYPE, POSITIVE_INTS, and a `validate()` that calls `check_common()` first.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

from vlexport.errors import ConfigError


def square_sizes(d: dict, names=("image_size", "patch_size")) -> dict:
    """HF allows [h, w] for image and patch sizes; the vision models here use squares: [s, s] -> s."""
    for name in names:
        v = d.get(name)
        if isinstance(v, (list, tuple)) and len(v) == 2 and v[0] == v[1]:
            d[name] = v[0]
    return d


class HFConfig:
    MODEL_TYPE = ""
    POSITIVE_INTS: tuple = ()
    KEEP_NONE: tuple = ()  # fields written even when None (their default differs from None)

    @classmethod
    def _normalize(cls, kw: dict) -> dict:
        """A family's hook to rewrite values before construction (e.g. [s, s] -> s)."""
        return kw

    @classmethod
    def from_dict(cls, d: dict):
        names = {f.name for f in fields(cls)} - {"extra"}
        kw = {k: v for k, v in d.items() if k in names}
        if kw.get("id2label"):
            try:
                kw["id2label"] = {int(k): str(v) for k, v in dict(kw["id2label"]).items()}
            except (TypeError, ValueError, AttributeError):
                raise ConfigError("config 'id2label' must map label ids to names") from None
            kw["num_labels"] = len(kw["id2label"])
        cfg = cls(**cls._normalize(kw), extra={k: v for k, v in d.items() if k not in names})
        cfg.validate()
        return cfg

    @classmethod
    def from_json_file(cls, path):
        return cls.from_dict(json.loads(Path(path).read_text()))

    def to_dict(self) -> dict:
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        d = {**self.extra, **{k: v for k, v in d.items() if v is not None or k in self.KEEP_NONE},
             "model_type": self.MODEL_TYPE}
        if self.id2label:
            d["id2label"] = {str(k): v for k, v in self.id2label.items()}
            d["label2id"] = {v: k for k, v in self.id2label.items()}
        return d

    def check_common(self):
        for name in self.POSITIVE_INTS:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"config '{name}' must be a positive integer, got {v!r}")
        eps = self.layer_norm_eps
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"config 'layer_norm_eps' must be a small positive number, got {eps!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(f"hidden_size {self.hidden_size} is not a multiple of "
                              f"num_attention_heads {self.num_attention_heads}")
