"""The detector's image preprocessing, torch-free: the demo's `Preprocess` (research_projects/lxmert/
processing_image.py) step for step.

    decode -> RGB (EXIF orientation applied to files) -> the network's channel order (BGR for the VG
    model, see FrcnnConfig.channel_order) -> float32 -> resize the shorter side to min_size_test (the
    longer at most max_size_test; sizes rounded half up) with bilinear interpolation exactly as
    torch's `interpolate(mode="bilinear", align_corners=False)` (no antialiasing: the demo resizes
    float tensors, so Pillow's filter is never used) -> (x - pixel_mean) / pixel_std -> pad to the
    batch's largest height and width with pad_value.

Returns pixel_values (B, 3, H, W) float32, image_sizes (B, 2) int64 [h, w] of each resized image,
and scales_yx (B, 2) float32 original / resized, which the detector uses to map boxes back.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from vlexport.errors import ConfigError, InputError
from vlexport.families.frcnn.config import FrcnnConfig
from vlexport.outputs import ModelOutput
from vlexport.processing.images import prepare_rgb

F32 = np.float32


def resized_size(h: int, w: int, short: int, longest: int) -> tuple[int, int]:
    """The demo's ResizeShortestEdge: shorter side to `short`, longer side capped at `longest`."""
    scale = short * 1.0 / min(h, w)
    newh, neww = (short, scale * w) if h < w else (scale * h, short)
    if max(newh, neww) > longest:
        s = longest * 1.0 / max(newh, neww)
        newh, neww = newh * s, neww * s
    return int(newh + 0.5), int(neww + 0.5)


def _taps(n_in: int, n_out: int):
    """torch's bilinear source indices and weights along one axis (align_corners=False, float32).

    torch's CPU kernels are compiled with FMA contraction, so `scale * (i + 0.5) - 0.5` is rounded
    once: emulated here by computing it exactly in float64 and rounding to float32 after."""
    if n_in == n_out:  # torch copies the axis (lambda 1, 0)
        i = np.arange(n_out)
        return i, i, np.ones(n_out, F32), np.zeros(n_out, F32)
    scale = np.float64(F32(n_in) / F32(n_out))
    src = (scale * (np.arange(n_out, dtype=np.float64) + 0.5) - 0.5).astype(F32)
    src = np.maximum(src, F32(0))
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    l1 = np.clip(src - i0.astype(F32), F32(0), F32(1))
    i1 = np.where(i0 < n_in - 1, i0 + 1, i0)
    return i0, i1, F32(1) - l1, l1


def _fma(a, b, c):
    """float32 a * b + c rounded once (the products of two float32 values are exact in float64)."""
    return (a.astype(np.float64) * b + c).astype(F32)


def resize_bilinear(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """(H, W, C) float32 -> (h, w, C), as torch.nn.functional.interpolate(bilinear, align_corners=False)."""
    r0, r1, a0, a1 = _taps(img.shape[0], h)
    c0, c1, b0, b1 = _taps(img.shape[1], w)
    # torch's kernel for this layout (the demo permutes an HWC tensor: channels-last memory) sums the
    # four corners with product weights: x00*w00 + x01*w01 + x10*w10 + x11*w11, contracted into FMAs
    a0, a1, b0, b1 = a0[:, None, None], a1[:, None, None], b0[None, :, None], b1[None, :, None]
    top, bottom = img[r0], img[r1]  # (h, W, C)
    out = (top[:, c0] * (a0 * b0)).astype(F32)
    out = _fma(top[:, c1], a0 * b1, out)
    out = _fma(bottom[:, c0], a1 * b0, out)
    return _fma(bottom[:, c1], a1 * b1, out)


class FrcnnImageProcessor:
    def __init__(self, config: FrcnnConfig, max_pixels: int | None = None):
        self.config = config
        self.max_pixels = max_pixels

    @classmethod
    def from_pretrained(cls, folder) -> "FrcnnImageProcessor":
        """A checkpoint folder (config.yaml) or an artifact / converted folder (config.json)."""
        return cls(read_folder_config(Path(folder)))

    def save_pretrained(self, folder):
        """Nothing to write: the artifact's config.json holds every preprocessing value."""

    # ---- one image
    def to_network_pixels(self, image, name: str = "image") -> np.ndarray:
        """An image (PIL, path, bytes, HWC/CHW array of 0..255 RGB values) -> HWC float32 in the
        network's channel order, not resized."""
        p = prepare_rgb(image, name, max_pixels=self.max_pixels, min_size=1)
        a = np.asarray(p.image)
        if a.ndim != 3 or a.shape[2] != 3:
            raise InputError(f"{name}: expected an RGB image, got an array of shape {a.shape}")
        if self.config.channel_order == "BGR":
            a = a[:, :, ::-1]
        return np.ascontiguousarray(a, dtype=F32)

    def __call__(self, images=None, return_tensors="np", **kwargs) -> ModelOutput:
        if kwargs:
            raise InputError(f"unexpected argument(s) {sorted(kwargs)}: the detector's processor takes images")
        if images is None:
            raise InputError("the detector's processor needs images")
        if not isinstance(images, (list, tuple)):
            images = [images]
        if not images:
            raise InputError("images is an empty list")
        if return_tensors not in ("np", None):
            raise InputError(f"return_tensors={return_tensors!r}: vlexport's processors return numpy arrays ('np')")
        c = self.config
        mean = np.asarray(c.pixel_mean, F32)
        std = np.asarray(c.pixel_std, F32)
        prepared, sizes, raw = [], [], []
        for i, im in enumerate(images):
            a = self.to_network_pixels(im, f"images[{i}]")
            raw.append(a.shape[:2])
            h, w = resized_size(a.shape[0], a.shape[1], c.min_size_test, c.max_size_test)
            if h < 1 or w < 1:
                raise InputError(f"images[{i}] of {a.shape[1]}x{a.shape[0]} pixels resizes to {w}x{h}: too narrow")
            a = resize_bilinear(a, h, w)
            prepared.append(((a - mean) / std).transpose(2, 0, 1))  # (3, h, w)
            sizes.append((h, w))
        H, W = max(s[0] for s in sizes), max(s[1] for s in sizes)
        pixels = np.full((len(images), 3, H, W), F32(c.pad_value), F32)
        for i, a in enumerate(prepared):
            pixels[i, :, :a.shape[1], :a.shape[2]] = a
        sizes = np.asarray(sizes, np.int64)
        scales = np.asarray(raw, F32) / sizes.astype(F32)
        return ModelOutput(pixel_values=pixels, image_sizes=sizes, scales_yx=scales)


def read_folder_config(folder: Path) -> FrcnnConfig:
    """FrcnnConfig from config.json (vlexport's flat keys) or the checkpoint's config.yaml."""
    if (folder / "config.json").is_file():
        try:
            d = json.loads((folder / "config.json").read_text())
        except ValueError as exc:
            raise ConfigError(f"{folder / 'config.json'} is not valid JSON: {exc}") from None
        return FrcnnConfig.from_dict(d)
    if (folder / "config.yaml").is_file():
        return FrcnnConfig.from_dict(read_yaml_config(folder / "config.yaml"))
    raise ConfigError(f"'{folder}' has neither config.json nor config.yaml")


def read_yaml_config(path: Path) -> dict:
    try:
        import yaml
    except ImportError:  # pragma: no cover - a core dependency
        raise ConfigError("reading config.yaml needs PyYAML: pip install pyyaml") from None
    try:
        y = yaml.safe_load(path.read_text())  # safe_load: plain data only, no tags that build objects
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    return FrcnnConfig.from_yaml_dict(y)
