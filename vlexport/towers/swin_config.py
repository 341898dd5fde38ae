"""Torch-free config of the Swin vision tower (HF's SwinConfig fields our module reads, its defaults).

Swin works on a fixed image size: every stage's grid, window padding and shifted-window mask follow
from image_size, patch_size, depths and window_size, so they are computed here once (`stages`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import square_sizes
from vlexport.towers.config import TOWER_ACTIVATIONS, _positive_int, _TowerConfig


@dataclass
class SwinTowerConfig(_TowerConfig):
    model_type: str = "swin"
    image_size: int = 224
    patch_size: int = 4
    num_channels: int = 3
    embed_dim: int = 96
    depths: list = field(default_factory=lambda: [2, 2, 6, 2])
    num_heads: list = field(default_factory=lambda: [3, 6, 12, 24])
    window_size: int = 7
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    hidden_act: str = "gelu"
    use_absolute_embeddings: bool = False
    layer_norm_eps: float = 1e-5
    extra: dict = field(default_factory=dict)

    DEFAULTS = {"swin": {}}
    KIND = "vision"
    POSITIVE_INTS = ("image_size", "patch_size", "num_channels", "embed_dim", "window_size")

    @classmethod
    def _unwrap(cls, d: dict) -> dict:
        return square_sizes(d)

    @property
    def hidden_size(self) -> int:
        """The last stage's width (each patch merging doubles it): what a decoder attends to."""
        return self.embed_dim * 2 ** (len(self.depths) - 1)

    @property
    def stages(self) -> list[dict]:
        """Per stage: its grid (height = width), width, heads, and whether a patch merging follows."""
        side, out = -(-self.image_size // self.patch_size), []  # the patch embedding pads to whole patches
        for i, (depth, heads) in enumerate(zip(self.depths, self.num_heads)):
            out.append({"side": side, "dim": self.embed_dim * 2 ** i, "depth": depth, "heads": heads,
                        "merge": i < len(self.depths) - 1})
            side = (side + 1) // 2
        return out

    @property
    def num_patches(self) -> int:
        """Tokens of the last stage (Swin has no [CLS])."""
        return self.stages[-1]["side"] ** 2

    extra_tokens = 0

    def validate(self):
        for name in self.POSITIVE_INTS:
            if not _positive_int(getattr(self, name)):
                raise ConfigError(f"swin config '{name}' must be a positive integer, got {getattr(self, name)!r}")
        for name in ("depths", "num_heads"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)) or not v or not all(_positive_int(x) for x in v):
                raise ConfigError(f"swin config '{name}' must be a non-empty list of positive integers, got {v!r}")
        if len(self.depths) != len(self.num_heads):
            raise ConfigError(f"swin config has {len(self.depths)} depths but {len(self.num_heads)} num_heads")
        eps, ratio = self.layer_norm_eps, self.mlp_ratio
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not 0 < eps < 1:
            raise ConfigError(f"swin config 'layer_norm_eps' must be a small positive number, got {eps!r}")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not ratio > 0:
            raise ConfigError(f"swin config 'mlp_ratio' must be a positive number, got {ratio!r}")
        if self.hidden_act not in TOWER_ACTIVATIONS:
            raise ConfigError(f"swin hidden_act {self.hidden_act!r} is not supported; known: {list(TOWER_ACTIVATIONS)}")
        for i, s in enumerate(self.stages):
            if s["dim"] % s["heads"]:
                raise ConfigError(f"swin stage {i}: width {s['dim']} is not a multiple of its {s['heads']} heads")
            if s["side"] < self.window_size:  # transformers shrinks the window there, then fails on the bias
                raise ConfigError(f"swin stage {i} is {s['side']}x{s['side']} patches, smaller than window_size "
                                  f"{self.window_size} (image_size {self.image_size}): not supported")
