"""Realistic inputs for validating and calibrating reduced precisions: real texts, detector-like region
features, real photographs. Random token ids and Gaussian features are kept as a stress case only: a trained
model's activations on them (outlier channels, peaked attention) are not what users feed it, and int8's
error on a trained model is measured where it matters. numpy only; photographs need scikit-image.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

CORPUS = Path(__file__).parent / "data" / "corpus.txt"


@lru_cache(maxsize=1)
def _corpus() -> dict:
    section, texts = None, {"questions": [], "captions": []}
    for line in CORPUS.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith("# ") and line[2:] in texts:
            section = line[2:]
        elif line and not line.startswith("#") and section:
            texts[section].append(line)
    return {k: tuple(v) for k, v in texts.items()}


def texts(kind: str = "all") -> list[str]:
    """The embedded corpus (vlexport/data/corpus.txt, written by us): "questions", "captions" or "all"."""
    c = _corpus()
    if kind == "all":
        return list(c["questions"] + c["captions"])
    if kind not in c:
        raise ValueError(f"corpus kind must be 'questions', 'captions' or 'all'; got {kind!r}")
    return list(c[kind])


def sample_texts(rng, n: int, kind: str = "all") -> list[str]:
    pool = texts(kind)
    return [pool[i] for i in rng.integers(0, len(pool), size=n)]


def detector_features(rng, shape, dim: int) -> np.ndarray:
    """Region features shaped like a Faster R-CNN's pooled ResNet output: non-negative (after ReLU),
    sparse (about half the entries exactly 0), heavy-tailed per channel (a few channels with values
    10-100x the median), mean ~0.4. shape: leading dims, e.g. (batch, regions)."""
    channel_scale = rng.lognormal(mean=-0.3, sigma=1.0, size=dim).astype(np.float32)  # per-channel spread
    region_scale = rng.lognormal(mean=0.0, sigma=0.3, size=(*shape, 1)).astype(np.float32)
    x = rng.standard_normal((*shape, dim)).astype(np.float32) - 0.1
    return np.maximum(x, 0.0) * channel_scale * region_scale


@lru_cache(maxsize=1)
def photographs() -> tuple:
    """Real photographs as HWC uint8 arrays (scikit-image's bundled ones); () when it is not installed."""
    try:
        from skimage import data
    except ImportError:
        return ()
    out = []
    for name in ("astronaut", "coffee", "chelsea", "rocket", "hubble_deep_field", "immunohistochemistry"):
        try:
            img = getattr(data, name)()
        except Exception:  # a dataset that needs a download
            continue
        if img.ndim == 3 and img.shape[2] == 3:
            out.append(np.ascontiguousarray(img))
    return tuple(out)


WHOLE_SHARE = 0.25  # of photo_crops' images that are whole photographs, uncropped


def photo_crops(rng, n: int, min_side: int = 32, whole: float = WHOLE_SHARE) -> list[np.ndarray]:
    """n random crops (random position, scale and aspect ratio) of the bundled photographs, HWC uint8, a
    `whole` share of them the whole photograph (a crop rarely looks like one: trained DINOv2's int8 passed
    its gate on crops and gave 0.984 on the whole Hubble deep field, a dark star field); smooth synthetic
    images when scikit-image is missing (so the caller never gets an empty batch)."""
    photos = photographs()
    out = []
    for _ in range(n):
        if not photos:
            h, w = (int(v) for v in rng.integers(min_side, 4 * min_side, size=2))
            yy, xx = np.mgrid[0:h, 0:w]
            phase = rng.uniform(0, 6.3, size=3)
            img = 127.5 * (1 + np.sin(xx[..., None] / 9.0 + yy[..., None] / 13.0 + phase))
            out.append(img.astype(np.uint8))
            continue
        img = photos[int(rng.integers(0, len(photos)))]
        if rng.random() < whole:
            out.append(img)
            continue
        H, W = img.shape[:2]
        h = int(rng.integers(min(min_side, H), H + 1))
        w = int(np.clip(h * np.exp(rng.uniform(-0.7, 0.7)), min(min_side, W), W))
        y, x = int(rng.integers(0, H - h + 1)), int(rng.integers(0, W - w + 1))
        out.append(np.ascontiguousarray(img[y:y + h, x:x + w]))
    return out


def photo_at(rng, height: int, width: int) -> np.ndarray:
    """A random photo crop resized to exactly (height, width), HWC uint8 (Pillow, bilinear)."""
    from PIL import Image

    crop = photo_crops(rng, 1)[0]
    return np.asarray(Image.fromarray(crop).resize((width, height), Image.BILINEAR))
