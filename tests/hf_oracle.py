"""Random `transformers` models saved to disk: the numerical truth our models are tested against."""

from __future__ import annotations

import torch

HF_CLASSES = ["VisualBertModel", "VisualBertForPreTraining", "VisualBertForQuestionAnswering",
              "VisualBertForMultipleChoice", "VisualBertForVisualReasoning", "VisualBertForRegionToPhraseAlignment"]

SMALL = dict(vocab_size=99, hidden_size=32, visual_embedding_dim=12, num_hidden_layers=2, num_attention_heads=4,
             intermediate_size=37, max_position_embeddings=40, num_labels=5)


def perturb_(model, seed=0):
    """Fresh HF models have zero biases and unit LayerNorm weights; make every parameter count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def make_hf_model(architecture: str, seed: int = 0, **overrides):
    import transformers

    cfg = transformers.VisualBertConfig(**{**SMALL, **overrides})
    torch.manual_seed(seed)
    model = getattr(transformers, architecture)(cfg)
    return perturb_(model, seed).eval()


def save_hf_model(model, folder, safe: bool = True):
    model.save_pretrained(folder, safe_serialization=safe) if _accepts_safe(model) else model.save_pretrained(folder)
    if not safe:
        # transformers 5 always writes safetensors; write the classic .bin ourselves from its state dict
        import os

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        for f in os.listdir(folder):
            if f.endswith(".safetensors") or f.endswith(".safetensors.index.json"):
                os.remove(os.path.join(folder, f))
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    return folder


def _accepts_safe(model):
    import inspect

    return "safe_serialization" in inspect.signature(model.save_pretrained).parameters
