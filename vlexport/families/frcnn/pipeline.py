"""The region detector at run time: the demo's GeneralizedRCNN call on the "backbone" and "roi_heads"
graphs, with the numpy steps between them (vlexport.families.frcnn.boxes).

    det = vlexport.load("engines/frcnn-vg-finetuned")
    inputs = det.processor(images=["photo.jpg"])     # pixel_values, image_sizes, scales_yx
    out = det(**inputs)                              # the demo's output_dict, padded to 36 regions
    out.roi_features                                 # (B, 36, 2048): VisualBERT's visual_embeds
    det.extract(["a.jpg", "b.jpg"])                  # the same from images, in batches

Output fields (the demo's names): obj_ids, obj_probs, attr_ids, attr_probs, boxes (x1, y1, x2, y2 in
pixels of the original image), normalized_boxes (boxes / image size), roi_features, preds_per_image
(regions found per image; rows after it are zero padding), sizes (the resized images' h, w), and
original_sizes (h, w before resizing; not in the demo's dict).
"""

from __future__ import annotations


import numpy as np

from vlexport.errors import ArtifactError, InputError
from vlexport.families.frcnn import boxes as B
from vlexport.families.frcnn.config import FrcnnConfig
from vlexport.outputs import ModelOutput
from vlexport.runtime.pipelines import Pipeline, to_array


class RegionPipeline(Pipeline):
    def __init__(self, artifact, backends, family, chosen_because=""):
        super().__init__(artifact, backends, family, chosen_because)
        self.require_graphs("regions", "backbone", "roi_heads")
        self.cfg = FrcnnConfig.from_dict(artifact.config)
        facts = artifact.manifest.get("model_facts") or {}
        cells, stride = facts.get("cell_anchors"), facts.get("stride")
        where = f"{artifact.path}/manifest.json: model_facts"
        try:
            cells = np.asarray(cells, np.float64)
        except (TypeError, ValueError):
            raise ArtifactError(f"{where}.cell_anchors must be a list of [x1, y1, x2, y2] anchors") from None
        if cells.shape != (self.cfg.num_anchors, 4) or not np.isfinite(cells).all() or np.abs(cells).max() > 1e5:
            raise ArtifactError(f"{where}.cell_anchors must hold {self.cfg.num_anchors} finite [x1, y1, x2, y2] "
                                f"anchors (the config's sizes x ratios), got shape {cells.shape}")
        if stride != 16:
            raise ArtifactError(f"{where}.stride must be 16 (res4's), got {stride!r}")
        self.cell_anchors = cells.astype(np.float32)
        self.stride = 16
        self.max_rois = self._axes["rois"].max

    def __call__(self, pixel_values=None, image_sizes=None, scales_yx=None, **extra) -> ModelOutput:
        """The demo's `frcnn(images, sizes, scales_yx=...)` with padding to max_detections."""
        if extra:
            raise InputError(f"unexpected input(s) {sorted(extra)}: the detector takes pixel_values, image_sizes, "
                             f"scales_yx (the processor's outputs)")
        feeds = self.prepare({"pixel_values": pixel_values}, "backbone")
        Bn, _, H, W = feeds["pixel_values"].shape
        sizes = _image_sizes(image_sizes, Bn, H, W)
        scales = _scales(scales_yx, Bn)
        out = self.run_graph("backbone", feeds)
        props, _, pooled = B.region_inputs(self.cfg, self.cell_anchors, out["features"], out["objectness"],
                                           out["anchor_deltas"], sizes, self.stride)
        heads = B.run_heads(lambda p: self.run_graph("roi_heads", self.prepare({"pooled": p}, "roi_heads")),
                            pooled, self.max_rois)
        result = B.select_regions(heads, props, sizes, scales, self.cfg)
        result["sizes"] = sizes
        result["original_sizes"] = np.rint(sizes * scales).astype(np.int64)  # (B, 2) h, w before resizing
        return ModelOutput(**result)

    forward = __call__

    def extract(self, images, batch_size: int = 1, progress=None) -> ModelOutput:
        """Images (paths, PIL images, RGB arrays) -> the detector's outputs; `progress(n)` is called after
        each batch with its image count.

        One image per call by default, as the demo runs one photo: images batched together are padded to
        the largest, and the padding changes the features of regions near a smaller image's borders (the
        convolutions see the padded canvas), so an image's regions would depend on its batch-mates. A
        batch_size > 1 (at most the artifact's batch range) trades that for throughput on accelerators."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise InputError(f"batch_size must be a positive integer, got {batch_size!r}")
        size = min(batch_size, self._axes["batch"].max)
        parts = []
        for s in range(0, len(images), size):
            batch = images[s:s + size]
            parts.append(self(**self.processor(images=list(batch))))
            if progress is not None:
                progress(len(batch))
        return ModelOutput(**{k: np.concatenate([p[k] for p in parts]) for k in parts[0].keys()})


def _image_sizes(value, n, H, W) -> np.ndarray:
    if value is None:
        return np.tile(np.asarray([[H, W]], np.int64), (n, 1))
    a = to_array("image_sizes", value)
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "iu" or a.shape != (n, 2):
        raise InputError(f"input 'image_sizes' must be an integer array of shape ({n}, 2) [height, width] per "
                         f"image, got {getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    if (a < 1).any() or (a[:, 0] > H).any() or (a[:, 1] > W).any():
        raise InputError(f"input 'image_sizes' must lie within the padded {H}x{W} pixel_values (1..{H}, 1..{W}); "
                         f"got {a.tolist()}")
    return a.astype(np.int64)


def _scales(value, n) -> np.ndarray:
    if value is None:
        return np.ones((n, 2), np.float32)
    a = to_array("scales_yx", value)
    if not isinstance(a, np.ndarray) or a.dtype.kind != "f" or a.shape != (n, 2):
        raise InputError(f"input 'scales_yx' must be a float array of shape ({n}, 2), got "
                         f"{getattr(a, 'dtype', type(a))} {getattr(a, 'shape', '')}")
    if not np.isfinite(a).all() or (a <= 0).any() or (a > 1e4).any():
        raise InputError("input 'scales_yx' must hold positive finite original/resized size ratios")
    return a.astype(np.float32)



