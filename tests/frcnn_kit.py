"""Shared pieces of the detector tests: the configurations the parity fixtures were made with, the
photographs they ran on, and our model built with the fixtures' random weights.

The fixtures (tests/fixtures/frcnn/*.npz) hold what the demo's own code (transformers'
research_projects/lxmert: modeling_frcnn.py, processing_image.py) returned for these weights and
images; tests/fixtures/frcnn/README.md says how they were made.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

FIXTURES = Path(__file__).parent / "fixtures" / "frcnn"
SEED = 0

# A small detector for fast tests: ResNet-50 layout at 1/8 width, 30 classes, 10 attributes.
TINY = {"model_type": "frcnn", "architectures": ["GeneralizedRCNN"], "depth": 50, "stem_out_channels": 8,
        "res2_out_channels": 16, "width_per_group": 4, "rpn_hidden_channels": 16, "num_classes": 30,
        "num_attributes": 10, "anchor_sizes": [32, 64, 128], "pre_nms_topk": 1000, "post_nms_topk": 100,
        "min_size_test": 160, "max_size_test": 240}
# The full-size VG detector (ResNet-101, 1600 classes, 400 attributes) on small images, 40 proposals.
FULL = {"model_type": "frcnn", "architectures": ["GeneralizedRCNN"], "min_size_test": 224, "max_size_test": 320,
        "post_nms_topk": 40}
CASES = {"tiny": TINY, "full": FULL}


def photos() -> dict:
    """RGB uint8 photographs of different sizes and aspect ratios (scikit-image's public-domain data)."""
    from skimage import data

    return {"astronaut": data.astronaut(), "coffee": data.coffee(), "chelsea": data.chelsea()}


# what each fixture file runs: (config case, images in one batch)
RUNS = {"tiny_batch": ("tiny", ["astronaut", "coffee"]), "tiny_single": ("tiny", ["chelsea"]),
        "full_single": ("full", ["coffee"])}


def our_model(case: str):
    from vlexport.families.frcnn.config import FrcnnConfig
    from vlexport.families.frcnn.model import GeneralizedRCNN
    from vlexport.reference import init_random

    return init_random(GeneralizedRCNN(FrcnnConfig.from_dict(CASES[case])), SEED)


def to_demo_yaml(cfg) -> dict:
    """Our flat config in the demo's config.yaml layout (what its Config class reads)."""
    return {
        "MODEL": {"DEVICE": "cpu", "MAX_POOL": cfg.caffe_maxpool, "PIXEL_MEAN": cfg.pixel_mean,
                  "PIXEL_STD": cfg.pixel_std},
        "RESNETS": {"DEPTH": cfg.depth, "NORM": "BN", "NUM_GROUPS": cfg.num_groups, "OUT_FEATURES": ["res4"],
                    "RES2_OUT_CHANNELS": cfg.res2_out_channels, "RES5_DILATION": 1,
                    "STEM_OUT_CHANNELS": cfg.stem_out_channels, "STRIDE_IN_1X1": cfg.stride_in_1x1,
                    "WIDTH_PER_GROUP": cfg.width_per_group},
        "BACKBONE": {"FREEZE_AT": 2},
        "PROPOSAL_GENERATOR": {"HIDDEN_CHANNELS": cfg.rpn_hidden_channels, "MIN_SIZE": cfg.min_box_side},
        "ANCHOR_GENERATOR": {"SIZES": [cfg.anchor_sizes], "ASPECT_RATIOS": [cfg.anchor_aspect_ratios],
                             "OFFSET": cfg.anchor_offset},
        "RPN": {"IN_FEATURES": ["res4"], "NMS_THRESH": cfg.rpn_nms_thresh, "BATCH_SIZE_PER_IMAGE": 256,
                "POSITIVE_FRACTION": 0.5, "SMOOTH_L1_BETA": 0.0, "LOSS_WEIGHT": 1.0,
                "PRE_NMS_TOPK_TRAIN": 12000, "PRE_NMS_TOPK_TEST": cfg.pre_nms_topk, "POST_NMS_TOPK_TRAIN": 2000,
                "POST_NMS_TOPK_TEST": cfg.post_nms_topk, "BOUNDARY_THRESH": -1, "IOU_THRESHOLDS": [0.3, 0.7],
                "IOU_LABELS": [0, -1, 1], "BBOX_REG_WEIGHTS": cfg.rpn_bbox_reg_weights},
        "ROI_HEADS": {"IN_FEATURES": ["res4"], "NUM_CLASSES": cfg.num_classes, "NMS_THRESH_TEST": cfg.nms_thresh_test,
                      "SCORE_THRESH_TEST": 0.2, "BATCH_SIZE_PER_IMAGE": 512, "POSITIVE_FRACTION": 0.25,
                      "PROPOSAL_APPEND_GT": True, "IOU_THRESHOLDS": [0.5], "IOU_LABELS": [0, 1]},
        "ROI_BOX_HEAD": {"POOLER_RESOLUTION": cfg.pooler_resolution, "POOLER_SAMPLING_RATIO": 0,
                         "POOLER_TYPE": "ROIPool", "RES5HALVE": cfg.res5_halve, "ATTR": cfg.use_attributes,
                         "NUM_ATTRS": cfg.num_attributes, "BBOX_REG_WEIGHTS": cfg.roi_bbox_reg_weights,
                         "CLS_AGNOSTIC_BBOX_REG": cfg.cls_agnostic_bbox_reg, "SMOOTH_L1_BETA": 0.0},
        "INPUT": {"FORMAT": cfg.input_format, "MIN_SIZE_TEST": cfg.min_size_test, "MAX_SIZE_TEST": cfg.max_size_test},
        "MIN_DETECTIONS": cfg.min_detections, "MAX_DETECTIONS": cfg.max_detections, "PAD_VALUE": cfg.pad_value,
        "SIZE_DIVISIBILITY": 0,
    }


def pixel_sample(pixels: np.ndarray, n: int = 2000) -> tuple[np.ndarray, np.ndarray]:
    """Fixed positions in a preprocessed batch and the values there (the fixtures keep these, not every pixel)."""
    rng = np.random.default_rng(1)
    flat = rng.choice(pixels.size, size=min(n, pixels.size), replace=False)
    return flat, pixels.reshape(-1)[flat]
