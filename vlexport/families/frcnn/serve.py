"""The detector's processor endpoint for `vlexport serve` / `triton-repo`: "regions".

An encoded image file in; the demo's preprocessing, both graphs and the numpy steps on the server;
per image, the demo's outputs padded to max_detections out (roi_features, boxes in the image's
pixels, normalized_boxes, class and attribute ids with their probabilities) and preds_per_image
(how many rows are real regions). The raw "backbone" and "roi_heads" endpoints (tensors in) are
made generically beside it.
"""

from __future__ import annotations

from vlexport.serving.endpoints import Endpoint, Tensor, decode_images, naming

OUTPUTS = ("roi_features", "boxes", "normalized_boxes", "obj_ids", "obj_probs", "attr_ids", "attr_probs",
           "preds_per_image")


def endpoints(artifact) -> list[Endpoint]:
    from vlexport.families.frcnn.config import FrcnnConfig

    cfg = FrcnnConfig.from_dict(artifact.config)
    D, C = cfg.max_detections, cfg.res5_channels
    cache = {}

    def run(pipeline, batch):
        from vlexport.families.frcnn.pipeline import RegionPipeline

        if "det" not in cache:  # the server's runner loads the graphs; the regions pipeline wraps them
            cache["det"] = RegionPipeline(pipeline.artifact, pipeline.backends, pipeline.family)
        det = cache["det"]
        images = [row[0] for row in decode_images("image", batch["image"])]
        # one image per call: a merged batch would pad images to one size, and their regions would then
        # depend on which requests the dynamic batcher put together (see RegionPipeline.extract)
        with naming("image"):
            out = det.extract(images, batch_size=1)
        return {k: (out[k][:, None] if k == "preds_per_image" else out[k]) for k in OUTPUTS}

    dims = {"roi_features": ("float32", (D, C)), "boxes": ("float32", (D, 4)), "normalized_boxes": ("float32", (D, 4)),
            "obj_ids": ("int64", (D,)), "obj_probs": ("float32", (D,)), "attr_ids": ("int64", (D,)),
            "attr_probs": ("float32", (D,)), "preds_per_image": ("int64", (1,))}
    return [Endpoint("regions", (Tensor("image", "bytes", (1,), doc="an encoded image file (JPEG, PNG, ...)"),),
                     tuple(Tensor(k, *dims[k]) for k in OUTPUTS), run, artifact.axes["batch"].max,
                     graphs=("backbone", "roi_heads"),
                     doc=f"image -> up to {D} regions: {C}-d features, boxes, classes, attributes")]
