"""What vlexport knows about the region detector without a network: the public checkpoint's config
(for --random-weights) and the tiny built-in detector. Plain data, no torch.

`unc-nlp/frcnn-vg-finetuned` (the VisualBERT and LXMERT demos' detector, converted from the Caffe
bottom-up-attention model): ResNet-101 C4, 12 anchors (sizes 64-512, ratios 0.5/1/2) on res4, RoI max
pooling 14x14, res5 at stride 1 with dilation 2, 1600 Visual Genome classes and 400 attributes, 36
regions (at least 10), images resized to 600 (shorter side) / 1000 (longer side), Caffe's BGR means.
These are FrcnnConfig's defaults; a downloaded folder's own config.yaml always takes precedence.
"""

from __future__ import annotations

PUBLIC_ID = "unc-nlp/frcnn-vg-finetuned"
TINY_ID = "tiny-frcnn"


def public_config() -> dict:
    return {"model_type": "frcnn", "architectures": ["GeneralizedRCNN"]}


def tiny_config() -> dict:
    """A small detector (one block per trunk stage, 16-d region features like tiny-visualbert-vqa's
    visual inputs, 30 classes, 10 attributes, 100 proposals) on 160-240 px images; milliseconds a call."""
    return {"model_type": "frcnn", "architectures": ["GeneralizedRCNN"], "depth": 20, "stem_out_channels": 8,
            "res2_out_channels": 2, "width_per_group": 4, "rpn_hidden_channels": 16, "num_classes": 30,
            "num_attributes": 10, "anchor_sizes": [32, 64, 128], "pre_nms_topk": 1000, "post_nms_topk": 100,
            "min_size_test": 160, "max_size_test": 240}


CHECKPOINTS = {PUBLIC_ID: public_config()}
TINY = {TINY_ID: tiny_config}
