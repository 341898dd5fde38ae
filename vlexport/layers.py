"""PyTorch pieces every family's reference model shares (torch is imported here: models only).

- ACTIVATIONS: HF's activation names -> functions ("gelu" is the exact erf GELU, as in HF);
- MASK_VALUE: the additive attention mask for padded keys. exp(-1e4) is 0 in fp32 and fp16 alike;
  HF's finfo(float32).min becomes -inf in fp16 and gives NaN on fully masked rows;
- exporting(): True while torch.export / tracing runs (eager-only input checks are skipped then);
- SelfAttention: multi-head self-attention with HF's `query`/`key`/`value` parameter names;
- Pooler: tanh(dense(h[:, 0])), the BERT-style pooler (BERT, ViT, DeiT and the families built on them);
- Pretrained: the loading side every family's model classes share (`Model.from_pretrained(folder)` and
  the key-mapping hooks the loader asks for).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

MASK_VALUE = -10000.0

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),  # CLIP's
}


def exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()


class SelfAttention(nn.Module):
    """Multi-head self-attention with an additive mask; no dropout (inference only)."""

    def __init__(self, hidden_size: int, num_heads: int, bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.head_size = hidden_size // num_heads
        self.query = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.key = nn.Linear(hidden_size, hidden_size, bias=bias)
        self.value = nn.Linear(hidden_size, hidden_size, bias=bias)

    def forward(self, x, additive_mask):
        B, S, H = x.shape

        def heads(t):  # (B, S, H) -> (B, nh, S, hs)
            return t.view(B, S, self.num_heads, self.head_size).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_size)  # (B, nh, S, S)
        if additive_mask is not None:  # None: every key is real (vision towers)
            scores = scores + additive_mask
        context = torch.matmul(scores.softmax(dim=-1), v)  # (B, nh, S, hs)
        return context.transpose(1, 2).reshape(B, S, H)


class Pooler(nn.Module):
    def __init__(self, hidden_size: int, out_size: int | None = None, act: str = "tanh"):
        super().__init__()
        self.dense = nn.Linear(hidden_size, out_size or hidden_size)
        self.act = torch.tanh if act == "tanh" else ACTIVATIONS[act]

    def forward(self, h):
        return self.act(self.dense(h[:, 0]))  # the first ([CLS]) token


class Pretrained:
    """Mixed into every family's model classes: `from_pretrained` by HF state-dict keys, and the hooks
    vlexport.weights.load_into reads (a family overrides those its checkpoints need)."""

    @classmethod
    def from_pretrained(cls, path_or_id: str, random_weights: bool = False, revision: str | None = None):
        """Load from a local folder or hub id (weights by HF state-dict keys), as this class."""
        from vlexport.reference import from_pretrained

        return from_pretrained(path_or_id, architecture=cls.__name__, random_weights=random_weights,
                               revision=revision).model

    def checkpoint_aliases(self) -> dict:
        """{checkpoint key: our key} for tensors a checkpoint stores under another name."""
        return {}

    def tied_weights(self) -> dict:
        """{our key: the key it is tied to}: keys a checkpoint may omit (HF drops tied weights on save)."""
        return {}
