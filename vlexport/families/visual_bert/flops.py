"""Multiply-accumulates of a VisualBERT forward pass, for the benchmark's GFLOP/s figures."""

from __future__ import annotations


def macs(config, architecture: str, sizes: dict) -> int:
    """Multiply-accumulates of one VisualBERT forward pass: every Linear and attention matmul.

    `config` is a VisualBertConfig or its dict; `sizes` has batch, text, visual (and choices or
    phrases where the head has them). Elementwise ops, softmax and LayerNorm are not counted
    (the usual convention; they are < 1% of the work at these sizes). FLOPs = 2 * MACs.
    """
    get = (lambda k, d=None: config.get(k, d)) if isinstance(config, dict) else (lambda k, d=None: getattr(config, k, d))
    H, I, L = get("hidden_size", 768), get("intermediate_size", 3072), get("num_hidden_layers", 12)
    Dv = get("visual_embedding_dim", 512)
    labels = get("num_labels", None)
    id2label = get("id2label", None)
    if id2label:
        labels = len(id2label)
    labels = labels or 2
    B, T, V = int(sizes["batch"]), int(sizes["text"]), int(sizes["visual"])
    if architecture.endswith("MultipleChoice"):
        B *= int(sizes.get("choices", 1))
    S = T + V
    per_sample = V * Dv * H  # visual projection
    per_layer = 4 * S * H * H + 2 * S * H * I + 2 * S * S * H  # q,k,v,out + FFN + QK^T and AV
    per_sample += L * per_layer
    pooler = H * H
    if architecture.endswith("QuestionAnswering"):
        per_sample += pooler + H * labels  # the base model computes the pooler even though QA ignores it
    elif architecture.endswith("VisualReasoning"):
        per_sample += pooler + H * labels
    elif architecture.endswith("MultipleChoice"):
        per_sample += pooler + H
    elif architecture.endswith("PreTraining"):
        per_sample += S * (H * H + H * get("vocab_size", 30522)) + pooler + 2 * H
    elif architecture.endswith("RegionToPhraseAlignment"):
        P = int(sizes.get("phrases", 1))
        per_sample += pooler + P * H * 64 + V * H * 64 + P * V * 64
    else:  # VisualBertModel
        per_sample += pooler
    return int(B * per_sample)


def flops(config, architecture: str, sizes: dict) -> int:
    return 2 * macs(config, architecture, sizes)


