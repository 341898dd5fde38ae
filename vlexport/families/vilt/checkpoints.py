"""What vlexport knows about ViLT without a network: the public `dandelin/vilt-b32-*` checkpoints'
architectures and the values that differ from ViltConfig's defaults (for --random-weights), and the
tiny built-in model. Plain data, no torch.

The VQA checkpoint's real answer names (3129 VQAv2 answers) are not embedded yet: no copy that
vlexport may redistribute is on hand here, so `--random-weights` builds name them LABEL_<n>, as
VisualBERT's public VQA config does; a checkpoint folder's own config.json keeps its names.
"""

from __future__ import annotations

PUBLIC_CHECKPOINTS = {
    "dandelin/vilt-b32-mlm": {"architectures": ["ViltForMaskedLM"]},
    "dandelin/vilt-b32-finetuned-vqa": {"architectures": ["ViltForQuestionAnswering"], "num_labels": 3129},
    "dandelin/vilt-b32-finetuned-nlvr2": {"architectures": ["ViltForImagesAndTextClassification"],
                                          "num_images": 2, "modality_type_vocab_size": 3,
                                          "id2label": {"0": "False", "1": "True"}},
    "dandelin/vilt-b32-finetuned-coco": {"architectures": ["ViltForImageAndTextRetrieval"]},
    "dandelin/vilt-b32-finetuned-flickr30k": {"architectures": ["ViltForImageAndTextRetrieval"]},
}

TINY_ID = "tiny-vilt-vqa"
TINY_LABELS = ["yes", "no", "0", "1", "2", "3", "4", "5", "red", "blue", "green", "white", "black", "cat",
               "dog", "person"]


def tiny_config(architecture: str = "ViltForQuestionAnswering", vocab_size: int | None = None) -> dict:
    """A small ViLT (2 layers, hidden 32, a 4x4 position grid of 32-pixel patches) on the tiny vocabulary."""
    if vocab_size is None:
        from vlexport.processing.vocab import tiny_vocab

        vocab_size = len(tiny_vocab())
    cfg = {"model_type": "vilt", "architectures": [architecture], "vocab_size": vocab_size, "hidden_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 40,
           "image_size": 128, "patch_size": 32, "hidden_act": "gelu", "layer_norm_eps": 1e-12}
    if architecture == "ViltForQuestionAnswering":
        cfg["id2label"] = {str(i): name for i, name in enumerate(TINY_LABELS)}
    return cfg


def public_config(model_id: str) -> dict:
    cfg = {"model_type": "vilt", **PUBLIC_CHECKPOINTS[model_id]}
    n = cfg.pop("num_labels", None)
    if n:
        cfg["id2label"] = {str(i): f"LABEL_{i}" for i in range(n)}
    return cfg


CHECKPOINTS = {model_id: public_config(model_id) for model_id in PUBLIC_CHECKPOINTS}
TINY = {TINY_ID: tiny_config}
