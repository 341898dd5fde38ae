"""PyTorch pieces every family's reference model shares (torch is imported here: models only).

- ACTIVATIONS: HF's activation names -> functions ("gelu" is the exact erf GELU, as in HF);
- MASK_VALUE: the additive attention mask for padded keys. exp(-1e4) is 0 in fp32 and fp16 alike;
  HF's finfo(float32).min becomes -inf in fp16 and gives NaN on fully masked rows;
- exporting(): True while torch.export / tracing runs (eager-only input checks are skipped then).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_VALUE = -10000.0

ACTIVATIONS = {
    "gelu": lambda x: F.gelu(x),
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
}


def exporting() -> bool:
    return torch.jit.is_tracing() or torch.compiler.is_compiling() or torch.compiler.is_exporting()
