"""What vlexport knows about VisualBERT without a network: the public checkpoints' architectures and
configs (for --random-weights), and the tiny built-in model. Plain data, no torch."""

from __future__ import annotations

# The VisualBERT checkpoints the transformers documentation names, with the values that differ
# from VisualBertConfig's defaults (from the conversion script and HF's tests; see REFERENCE.md).
PUBLIC_CHECKPOINTS = {
    "uclanlp/visualbert-vqa": {"architectures": ["VisualBertForQuestionAnswering"],
                               "visual_embedding_dim": 2048, "num_labels": 3129},
    "uclanlp/visualbert-vqa-coco-pre": {"architectures": ["VisualBertForPreTraining"],
                                        "visual_embedding_dim": 2048},
    "uclanlp/visualbert-nlvr2": {"architectures": ["VisualBertForVisualReasoning"],
                                 "visual_embedding_dim": 1024, "num_labels": 2},
    "uclanlp/visualbert-vcr": {"architectures": ["VisualBertForMultipleChoice"], "visual_embedding_dim": 512},
    "uclanlp/visualbert-vcr-coco-pre": {"architectures": ["VisualBertForPreTraining"],
                                        "visual_embedding_dim": 512},
}

TINY_ID = "tiny-visualbert-vqa"
TINY_LABELS = ["yes", "no", "0", "1", "2", "3", "4", "5", "red", "blue", "green", "white", "black", "cat",
               "dog", "person"]


def tiny_config(architecture: str = "VisualBertForQuestionAnswering", vocab_size: int | None = None) -> dict:
    """A small VisualBERT config (2 layers, hidden 32) on the tiny vocabulary; runs in milliseconds."""
    if vocab_size is None:
        from vlexport.processing.vocab import tiny_vocab

        vocab_size = len(tiny_vocab())
    cfg = {"model_type": "visual_bert", "architectures": [architecture], "vocab_size": vocab_size,
           "hidden_size": 32, "visual_embedding_dim": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
           "intermediate_size": 64, "max_position_embeddings": 64, "type_vocab_size": 2,
           "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    if architecture in ("VisualBertForQuestionAnswering", "VisualBertForVisualReasoning"):
        labels = TINY_LABELS if architecture.endswith("Answering") else ["False", "True"]
        cfg["id2label"] = {str(i): name for i, name in enumerate(labels)}
    return cfg


def public_config(model_id: str) -> dict:
    """The full config.json of a public checkpoint, from the values above."""
    cfg = {"model_type": "visual_bert", **PUBLIC_CHECKPOINTS[model_id]}
    n = cfg.pop("num_labels", None)
    if n:  # the public VQA config ships no answer strings; name them by index
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
    return cfg


CHECKPOINTS = {model_id: public_config(model_id) for model_id in PUBLIC_CHECKPOINTS}
TINY = {TINY_ID: tiny_config}
