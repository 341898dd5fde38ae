"""Export description of the region detector (plain data; no torch): two graphs, "backbone" and "roi_heads".

    backbone:  pixel_values (batch, 3, height, width) -> features (batch, feat_h, feat_w, C4) (channels last),
               objectness (batch, anchors), anchor_deltas (batch, anchors, 4)
    roi_heads: pooled (rois, C4, P, P) -> roi_features (rois, C5), cls_logits (rois, classes + 1),
               attr_logits (rois, attributes + 1), box_deltas (rois, 4 * classes)

C4/C5 are res4/res5 widths (1024/2048 for the VG model), P the RoI pooling grid (14). Between and
after the graphs the "regions" pipeline runs the numpy steps (vlexport.families.frcnn.boxes).
Height and width: the processor's resized images (shorter side min_size_test, longer side at most
max_size_test), padded to the batch's largest; the graphs take any size from 32 up to max_size_test.
rois: pooled regions per call (the runtime sends a batch's proposals in chunks of at most its max).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import UnknownModelError
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec, merge_axes

FAMILY = "frcnn"
TASKS = {"GeneralizedRCNN": "region-features"}
MIN_SIDE = 32  # below this the stride-16 feature map has 1-2 cells: nothing to detect
# int8: the detector's outputs feed discrete choices (each region's best class picks its attribute
# embedding, NMS picks boxes); int8's errors flip them. Measured on the tiny detector: attr_logits
# per-row cosine 0.52 even with every MatMul kept fp32 (the res5 convolutions alone flip classes).
# Validation cost: the box head runs res5 on every region (~6 GFLOP per region at full size, 300 regions
# an image: seconds a call on a CPU), so reduced precisions are gated on 12 random examples plus the
# shape grid rather than the default 100.
PRECISION_SAMPLES = 12
NO_INT8 = ("region selection is discrete (best class -> attribute embedding, NMS): int8 errors change which "
           "regions and attributes come out (attr_logits cosine 0.52 measured); fp32 and fp16 only")


def default_axes(cfg) -> dict[str, AxisRange]:
    longest, short = cfg.max_size_test, min(cfg.min_size_test, cfg.max_size_test)
    return {"batch": AxisRange(1, 1, 4), "height": AxisRange(MIN_SIDE, short, longest),
            "width": AxisRange(MIN_SIDE, min(longest, short * 4 // 3), longest),
            "rois": AxisRange(1, cfg.post_nms_topk, cfg.post_nms_topk)}


def describe(architecture: str, config, axes: dict | None = None) -> ModelSpec:
    if architecture not in TASKS:
        raise UnknownModelError(f"unknown detector architecture '{architecture}'; known: {sorted(TASKS)}")
    c = config
    C4, C5, P = c.res4_channels, c.res5_channels, c.pooler_resolution
    mean, std = np.asarray(c.pixel_mean, np.float32), np.asarray(c.pixel_std, np.float32)

    def random_pixels(sizes, rng, pad=True):  # 0..255 noise, normalized as the processor does
        shape = (sizes["batch"], 3, sizes["height"], sizes["width"])
        x = rng.uniform(0, 255, size=shape).astype(np.float32)
        return {"pixel_values": (x - mean[:, None, None]) / std[:, None, None]}

    def real_pixels(sizes, rng, pad, processor):  # photographs at the case's size, normalized
        from vlexport import calibration

        imgs = [processor.to_network_pixels(calibration.photo_at(rng, sizes["height"], sizes["width"]))
                for _ in range(sizes["batch"])]
        return {"pixel_values": np.stack([(a - mean) / std for a in imgs]).transpose(0, 3, 1, 2).copy()}

    def pooled(sizes, rng, pad=True):  # RoI-pooled res4 cells are post-ReLU: non-negative, sparse
        x = rng.standard_normal((sizes["rois"], C4, P, P)).astype(np.float32)
        return {"pooled": np.maximum(x, 0) * rng.lognormal(0, 0.5, size=(1, C4, 1, 1)).astype(np.float32)}

    backbone = GraphSpec(
        "backbone",
        [InputSpec("pixel_values", ("batch", 3, "height", "width"), dtype="float32",
                   doc="normalized images in the network's channel order, padded (the processor's output)")],
        [OutputSpec("features", ("batch", "feat_h", "feat_w", C4)), OutputSpec("objectness", ("batch", "anchors")),
         OutputSpec("anchor_deltas", ("batch", "anchors", 4))],
        make_inputs=random_pixels, make_real_inputs=real_pixels, tolerance=1e-3, int8_refused=NO_INT8,
        precision_samples=PRECISION_SAMPLES)
    head_outputs = [OutputSpec("roi_features", ("rois", C5)), OutputSpec("cls_logits", ("rois", c.num_classes + 1),
                                                                          classes=True)]
    if c.use_attributes:
        head_outputs.append(OutputSpec("attr_logits", ("rois", c.num_attributes + 1), classes=True))
    head_outputs.append(OutputSpec("box_deltas", ("rois", 4 * (1 if c.cls_agnostic_bbox_reg else c.num_classes))))
    roi_heads = GraphSpec(
        "roi_heads",
        [InputSpec("pooled", ("rois", C4, P, P), dtype="float32", doc="RoI max-pooled res4 cells of the proposals")],
        head_outputs, make_inputs=pooled, tolerance=1e-3, int8_refused=NO_INT8,
        precision_samples=PRECISION_SAMPLES)
    ranges = merge_axes(default_axes(c), axes, architecture)
    return ModelSpec(family=FAMILY, architecture=architecture, task=TASKS[architecture], graphs=[backbone, roi_heads],
                     axes=ranges, pipeline="regions",
                     notes="NMS, anchors, RoI pooling and region selection run in numpy between the graphs")
