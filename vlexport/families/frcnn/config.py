"""The region detector's configuration (torch-free).

The public checkpoint (`unc-nlp/frcnn-vg-finetuned`) ships a detectron-style `config.yaml`, not a
`config.json`: `from_yaml_dict` reads its nested keys (MODEL.RESNETS.DEPTH, INPUT.MIN_SIZE_TEST,
...) into the flat fields below, which are what artifacts record (config.json, model_type "frcnn").
Only what the demo's inference path reads is kept; training-only keys are ignored.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from vlexport.errors import ConfigError
from vlexport.hf_config import HFConfig

# blocks in res2, res3, res4 (res5, in the box head, has 3); 20 is vlexport's tiny test layout
DEPTHS = {20: (1, 1, 1), 50: (3, 4, 6), 101: (3, 4, 23), 152: (3, 8, 36)}


@dataclass
class FrcnnConfig(HFConfig):
    # ResNet C4 backbone (stem + res2..res4); res5 runs per region in the box head
    depth: int = 101
    stem_out_channels: int = 64
    res2_out_channels: int = 256
    num_groups: int = 1
    width_per_group: int = 64
    stride_in_1x1: bool = True
    caffe_maxpool: bool = True  # the stem's max pool: pad 0, ceil mode (Caffe) vs pad 1 (torchvision)
    # region proposal network on res4 (stride 16)
    rpn_hidden_channels: int = 512  # -1: as many as res4 has
    anchor_sizes: list = field(default_factory=lambda: [64, 128, 256, 512])
    anchor_aspect_ratios: list = field(default_factory=lambda: [0.5, 1.0, 2.0])
    anchor_offset: float = 0.0
    rpn_bbox_reg_weights: list = field(default_factory=lambda: [1.0, 1.0, 1.0, 1.0])
    rpn_nms_thresh: float = 0.7
    pre_nms_topk: int = 6000
    post_nms_topk: int = 300
    min_box_side: float = 0.0
    # box head: RoI max pooling -> res5 -> mean -> classes, attributes, class-specific box deltas
    pooler_resolution: int = 14
    res5_halve: bool = False  # False: res5 keeps the 14x14 grid (stride 1, dilation 2), as the VG model
    num_classes: int = 1600
    use_attributes: bool = True
    num_attributes: int = 400
    roi_bbox_reg_weights: list = field(default_factory=lambda: [10.0, 10.0, 5.0, 5.0])
    cls_agnostic_bbox_reg: bool = False
    nms_thresh_test: list = field(default_factory=lambda: [0.6])  # tried in turn until min..max boxes survive
    min_detections: int = 10
    max_detections: int = 36
    # image preprocessing (the demo's Preprocess)
    pixel_mean: list = field(default_factory=lambda: [102.9801, 115.9465, 122.7717])
    pixel_std: list = field(default_factory=lambda: [1.0, 1.0, 1.0])
    input_format: str = "RGB"  # see FrcnnConfig.channel_order
    min_size_test: int = 600
    max_size_test: int = 1000
    pad_value: float = 0.0
    architectures: list | None = None
    id2label: dict | None = None
    num_labels: int = 0
    extra: dict = field(default_factory=dict)

    MODEL_TYPE = "frcnn"
    POSITIVE_INTS = ("stem_out_channels", "res2_out_channels", "num_groups", "width_per_group", "pre_nms_topk",
                     "post_nms_topk", "pooler_resolution", "num_classes", "num_attributes", "max_detections",
                     "min_size_test", "max_size_test")

    @classmethod
    def _normalize(cls, kw: dict) -> dict:
        if isinstance(kw.get("nms_thresh_test"), (int, float)):
            kw["nms_thresh_test"] = [kw["nms_thresh_test"]]
        return kw

    def validate(self):
        for name in self.POSITIVE_INTS:  # (check_common also checks transformer fields this model lacks)
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ConfigError(f"config '{name}' must be a positive integer, got {v!r}")
        if self.depth not in DEPTHS:
            raise ConfigError(f"ResNet depth {self.depth} is not supported; known: {sorted(DEPTHS)}")
        for name in ("anchor_sizes", "anchor_aspect_ratios", "nms_thresh_test"):
            v = getattr(self, name)
            if not isinstance(v, list) or not v or not all(_number(x) and x > 0 for x in v):
                raise ConfigError(f"config '{name}' must be a non-empty list of positive numbers, got {v!r}")
        for name in ("rpn_bbox_reg_weights", "roi_bbox_reg_weights", "pixel_mean", "pixel_std"):
            v = getattr(self, name)
            want = 4 if "weights" in name else 3
            if not isinstance(v, list) or len(v) != want or not all(_number(x) and math.isfinite(x) for x in v):
                raise ConfigError(f"config '{name}' must be a list of {want} numbers, got {v!r}")
        if any(s <= 0 for s in self.pixel_std) or any(w <= 0 for w in self.roi_bbox_reg_weights + self.rpn_bbox_reg_weights):
            raise ConfigError("config pixel_std and box regression weights must be positive")
        if self.input_format not in ("RGB", "BGR"):
            raise ConfigError(f"config input_format must be 'RGB' or 'BGR', got {self.input_format!r}")
        if not 0 < self.min_detections <= self.max_detections:
            raise ConfigError(f"config needs 0 < min_detections <= max_detections, got {self.min_detections} and "
                              f"{self.max_detections}")
        if self.min_size_test > self.max_size_test:
            raise ConfigError(f"config min_size_test {self.min_size_test} exceeds max_size_test {self.max_size_test}")
        if self.max_detections > self.post_nms_topk:
            raise ConfigError(f"config max_detections {self.max_detections} exceeds the {self.post_nms_topk} proposals")

    # ---- derived sizes
    @property
    def num_anchors(self) -> int:
        return len(self.anchor_sizes) * len(self.anchor_aspect_ratios)

    @property
    def res4_channels(self) -> int:
        return self.res2_out_channels * 4

    @property
    def res5_channels(self) -> int:
        return self.res2_out_channels * 8

    @property
    def channel_order(self) -> str:
        """The channel order the network takes. The demo's image reader (utils.img_tensorize) turns the
        decoded RGB image into BGR when INPUT.FORMAT is "RGB" and leaves it RGB when it is "BGR"; its
        PIXEL_MEAN is in BGR order (the Caffe model's). We do what the demo does."""
        return "BGR" if self.input_format == "RGB" else "RGB"

    # ---- the checkpoint's config.yaml
    @classmethod
    def from_yaml_dict(cls, y: dict) -> dict:
        """The flat config dict from a detectron-style config.yaml (the demo's layout: sections such as
        RESNETS and RPN at the top beside MODEL and INPUT; detectron's nests them under MODEL)."""
        if not isinstance(y, dict) or not isinstance(y.get("MODEL"), dict):
            raise ConfigError("config.yaml has no MODEL section: not a detectron-style detector config")
        m = _Section(y.get("MODEL"), "MODEL")

        def section(name):  # the demo's config.yaml keeps RESNETS, RPN, ... at the top; detectron's under MODEL
            return _Section(y[name], name) if isinstance(y.get(name), dict) else m.sub(name)

        res, rpn, pg = section("RESNETS"), section("RPN"), section("PROPOSAL_GENERATOR")
        anc, box, heads = section("ANCHOR_GENERATOR"), section("ROI_BOX_HEAD"), section("ROI_HEADS")
        inp = _Section(y.get("INPUT") or {}, "INPUT")
        norm = res.get("NORM", "BN")
        if norm not in ("BN", "FrozenBN"):
            raise ConfigError(f"RESNETS.NORM '{norm}' is not supported (BN / FrozenBN only)")
        if list(res.get("OUT_FEATURES", ["res4"])) != ["res4"] or list(heads.get("IN_FEATURES", ["res4"])) != ["res4"]:
            raise ConfigError("only the C4 layout (one res4 feature map for the RPN and the box head) is supported")
        if box.get("POOLER_TYPE", "ROIPool") != "ROIPool":
            raise ConfigError(f"ROI_BOX_HEAD.POOLER_TYPE '{box.get('POOLER_TYPE')}' is not supported (ROIPool)")
        if y.get("SIZE_DIVISIBILITY", 0):
            raise ConfigError("SIZE_DIVISIBILITY > 0 is not supported (the demo raises NotImplementedError too)")
        sizes, ratios = anc.get("SIZES", [[64, 128, 256, 512]]), anc.get("ASPECT_RATIOS", [[0.5, 1.0, 2.0]])
        if len(sizes) != 1 or len(ratios) != 1:
            raise ConfigError("ANCHOR_GENERATOR SIZES and ASPECT_RATIOS must each hold one list (one feature map)")
        d = {"model_type": "frcnn", "architectures": ["GeneralizedRCNN"],
             "depth": res.get("DEPTH", 101), "stem_out_channels": res.get("STEM_OUT_CHANNELS", 64),
             "res2_out_channels": res.get("RES2_OUT_CHANNELS", 256), "num_groups": res.get("NUM_GROUPS", 1),
             "width_per_group": res.get("WIDTH_PER_GROUP", 64), "stride_in_1x1": res.get("STRIDE_IN_1X1", True),
             "caffe_maxpool": m.get("MAX_POOL", True),
             "rpn_hidden_channels": pg.get("HIDDEN_CHANNELS", 512), "min_box_side": pg.get("MIN_SIZE", 0.0),
             "anchor_sizes": list(sizes[0]), "anchor_aspect_ratios": list(ratios[0]),
             "anchor_offset": anc.get("OFFSET", 0.0),
             "rpn_bbox_reg_weights": list(rpn.get("BBOX_REG_WEIGHTS", [1.0, 1.0, 1.0, 1.0])),
             "rpn_nms_thresh": rpn.get("NMS_THRESH", 0.7), "pre_nms_topk": rpn.get("PRE_NMS_TOPK_TEST", 6000),
             "post_nms_topk": rpn.get("POST_NMS_TOPK_TEST", 300),
             "pooler_resolution": box.get("POOLER_RESOLUTION", 14), "res5_halve": box.get("RES5HALVE", False),
             "use_attributes": box.get("ATTR", True), "num_attributes": box.get("NUM_ATTRS", 400),
             "roi_bbox_reg_weights": list(box.get("BBOX_REG_WEIGHTS", [10.0, 10.0, 5.0, 5.0])),
             "cls_agnostic_bbox_reg": box.get("CLS_AGNOSTIC_BBOX_REG", False),
             "num_classes": heads.get("NUM_CLASSES", 1600), "nms_thresh_test": heads.get("NMS_THRESH_TEST", 0.6),
             "min_detections": y.get("MIN_DETECTIONS", 10), "max_detections": y.get("MAX_DETECTIONS", 36),
             "pixel_mean": list(m.get("PIXEL_MEAN", [102.9801, 115.9465, 122.7717])),
             "pixel_std": list(m.get("PIXEL_STD", [1.0, 1.0, 1.0])),
             "input_format": inp.get("FORMAT", "RGB"), "min_size_test": inp.get("MIN_SIZE_TEST", 600),
             "max_size_test": inp.get("MAX_SIZE_TEST", 1000), "pad_value": y.get("PAD_VALUE", 0.0)}
        cls.from_dict(d)  # raises ConfigError on bad values
        return d


class _Section:
    """One nested mapping of config.yaml; a non-mapping where a section belongs is a ConfigError."""

    def __init__(self, d, name):
        if not isinstance(d, dict):
            raise ConfigError(f"config.yaml section {name} is a {type(d).__name__}, expected a mapping")
        self.d, self.name = d, name

    def sub(self, key):
        return _Section(self.d.get(key) or {}, f"{self.name}.{key}")

    def get(self, key, default=None):
        return self.d.get(key, default)


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)
