"""VisualBERT from a photo: region features from a detector artifact (the frcnn family's "regions"
pipeline), packed as visual_embeds. Used by the processor (`processor(text=..., images=...)` when the
artifact holds a detector in regions/) and by `vlexport predict --image`. numpy only.

One detector call gives each image up to max_detections regions (36 for the VG detector) and
`preds_per_image` says how many are real; the rest is zero padding, masked out with
visual_attention_mask = 0 (the demo passes all 36 rows: with at least min_detections real regions
per image it has no padding in practice, and neither do we).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlexport.errors import ConfigError, InputError


def check_detector(config, detector) -> None:
    """At build time: the detector's region features must be as wide as the model's visual inputs."""
    dim = (detector.manifest.get("graphs", {}).get("roi_heads") or {}).get("outputs")
    width = None
    for o in dim or []:
        if o.get("name") == "roi_features":
            width = o["dims"][-1]
    if width is None:
        raise ConfigError(f"the --regions model at {detector.path} is not a region detector (no roi_features output)")
    if width != config.visual_embedding_dim:
        raise ConfigError(f"the --regions detector gives {width}-d region features, but this VisualBERT takes "
                          f"{config.visual_embedding_dim}-d visual_embeds: pick a detector of that width")


def load_detector(path):
    import vlexport

    path = Path(path)
    if not (path / "manifest.json").is_file():
        raise InputError(f"no region detector artifact at '{path}': build one with `vlexport build --model "
                         f"unc-nlp/frcnn-vg-finetuned`, or build VisualBERT with --regions unc-nlp/frcnn-vg-finetuned")
    det = vlexport.load(path)
    if det.artifact.manifest.get("pipeline") != "regions":
        raise InputError(f"'{path}' is a {det.artifact.manifest.get('pipeline')} artifact, not a region detector")
    return det


def regions_from_images(detector, images, dim: int | None = None):
    """Images -> (visual_embeds (B, V, D) float32, visual_attention_mask (B, V) int64, detector outputs)."""
    out = detector.extract(images)
    feats = out["roi_features"]
    if dim is not None and feats.shape[-1] != dim:
        raise InputError(f"the region detector gives {feats.shape[-1]}-d features; this VisualBERT takes {dim}-d "
                         f"visual_embeds")
    mask = (np.arange(feats.shape[1])[None, :] < out["preds_per_image"][:, None]).astype(np.int64)
    return feats.astype(np.float32), mask, out
