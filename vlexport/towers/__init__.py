"""Encoders that several families use as parts (torch-free configs in config.py, PyTorch in the rest):

    config.py  VisionTowerConfig (ViT, DeiT, CLIP-vision) and TextTowerConfig (BERT, RoBERTa)
    vit.py     the ViT-style vision tower: patch embeddings -> pre-LN encoder -> pooled output
    bert.py    the BERT-style text tower and its post-LN blocks (family encoders reuse them)

A tower reads HF's sub-config dict (`vision_config` / `text_config` of a composite model, or a tower
checkpoint's own config.json) and loads HF's state-dict keys.
"""
