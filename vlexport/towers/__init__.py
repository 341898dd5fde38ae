"""Encoders that several families use as parts (torch-free configs in config.py, PyTorch in the rest):

    config.py  VisionTowerConfig (ViT, DeiT, CLIP-vision), BeitTowerConfig and TextTowerConfig (BERT, RoBERTa)
    vision.py  which vision tower a config names (config class, module)
    vit.py     the ViT-style vision tower: patch embeddings -> pre-LN encoder -> pooled output
    beit.py    BEiT: ViT's blocks with layer scale and a relative position bias
    swin.py    Swin: shifted-window stages with patch merging (swin_config.py: its config)
    bert.py    the BERT-style text tower and its post-LN blocks (family encoders reuse them)

A tower reads HF's sub-config dict (`vision_config` / `text_config` of a composite model, or a tower
checkpoint's own config.json) and loads HF's state-dict keys.
"""
