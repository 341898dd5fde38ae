"""ViLT's image processor without torch: the same pixels as transformers' `ViltImageProcessorPil`.

`ViltImageProcessor()(images)` -> {"pixel_values": (B, 3, H, W) float32, "pixel_mask": (B, H, W) int64}.

What HF does, and so do we (transformers 5.23 `models/vilt/image_processing_pil_vilt.py` on
`PilBackend`; input rules in `vlexport.processing.images`):

1. Each image becomes RGB: files via HF's `load_image` (EXIF orientation applied, `convert("RGB")`),
   PIL images and arrays via HF's `convert_to_rgb` (alpha composited onto white).
2. Resize with Pillow (`Image.resize`, bicubic by default) so the short side is
   `size["shortest_edge"]` (384) and the long side at most `int(1333 / 800 * shortest_edge)` (639),
   both rounded (`int(x + 0.5)`) then floored to a multiple of `size_divisor` (32):
   `get_resize_output_image_size` below is HF's function.
3. Rescale by `rescale_factor` (1/255; float64 then cast to float32), normalize `(x - mean) / std`
   in float32. HF's class default mean/std is IMAGENET_STANDARD (0.5); the public
   `dandelin/vilt-b32-*` checkpoints use 0.5 as well. Ours: mean = std = 0.5.
4. Pad bottom/right with zeros to the batch's largest height and width; `pixel_mask` int64 is 1 over
   each image's valid top-left rectangle, 0 over the padding. With `do_pad=False` there is no mask and
   the images must share one size (HF cannot stack them either).

Where we differ, on purpose:
- RGB conversion is on by default (HF's `do_convert_rgb=True`). HF's ViLT leaves `do_convert_rgb`
  unset, and then every grayscale, palette, RGBA, LA, CMYK or 16-bit input raises (its mean has 3
  entries, the image 1, 2 or 4 channels); we return what HF returns with `do_convert_rgb=True`. The
  two HF settings disagree only on inputs HF accepts either way: an RGB PIL image with a
  `transparency` entry (composited here) and 3-band non-RGB PIL modes such as YCbCr (converted here;
  HF unset reads the raw bands as RGB). `do_convert_rgb=False` gives HF's unset behaviour exactly.
- HW (2-D) arrays are taken as grayscale (HF refuses them); encoded bytes are accepted; URLs and
  strings that are not paths are refused (HF downloads URLs and tries base64 on the rest).
- pixel_values is always float32 (HF returns uint8 when both rescale and normalize are off, and keeps
  float16/float64 inputs when neither resize nor rescale is on): the values are the same.
- An image that resizes to less than one `min_size` patch (32 px: ViLT's patch) on a side is an
  InputError naming it; HF would fail inside Pillow or give the model no patch. So is an image over
  `max_pixels` (default `vlexport.processing.images.MAX_PIXELS`), refused before it is decoded.

HF's own quirk we keep for parity: a float array with values in [0, 1] is scaled to bytes (x 255,
truncated) for Pillow and divided by 255 after resizing, then `do_rescale` divides by 255 once more;
pass uint8 images (or set do_rescale=False) to avoid it. We warn when it happens.

Speed: Pillow's resize is the same call as HF's; everything after it is one table lookup per byte
(`pixel_lut`, bit-identical to HF's arithmetic) written straight into the padded batch, instead of
HF's five or so full-image copies and dtype round trips.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.outputs import ModelOutput
from vlexport.processing import images as imgs

CONFIG_NAME = "preprocessor_config.json"
MAX_LONGER_EDGE = 1333  # HF: "the typical aspect ratio of the COCO dataset"
MAX_SHORTER_EDGE = 800
PATCH_SIZE = 32

# The public dandelin/vilt-b32-* checkpoints' preprocessor settings (HF's class defaults but for mean/std)
VILT_DEFAULTS = {
    "do_resize": True,
    "size": {"shortest_edge": 384},
    "size_divisor": 32,
    "resample": 3,  # PIL.Image.Resampling.BICUBIC
    "do_rescale": True,
    "rescale_factor": 1 / 255,
    "do_normalize": True,
    "image_mean": [0.5, 0.5, 0.5],
    "image_std": [0.5, 0.5, 0.5],
    "do_pad": True,
    "do_convert_rgb": True,
}
# preprocessor_config.json keys HF's ViLT ignores and we pass through untouched on save
_WRITTEN = set(VILT_DEFAULTS) | {"image_processor_type"}


def get_resize_output_image_size(height: int, width: int, shorter: int = 800, longer: int = 1333,
                                 size_divisor: int = 32) -> tuple[int, int]:
    """HF's ViLT rule: short side to `shorter`, long side at most `longer`, round, floor to the divisor."""
    min_size, max_size = shorter, longer
    scale = min_size / min(height, width)
    if height < width:
        new_height = min_size
        new_width = scale * width
    else:
        new_height = scale * height
        new_width = min_size
    if max(new_height, new_width) > max_size:
        scale = max_size / max(new_height, new_width)
        new_height = scale * new_height
        new_width = scale * new_width
    new_height, new_width = int(new_height + 0.5), int(new_width + 0.5)
    return new_height // size_divisor * size_divisor, new_width // size_divisor * size_divisor


def _shortest_edge(size) -> int:
    """HF's `get_size_dict(size, default_to_square=False)` restricted to what ViLT's resize accepts."""
    if isinstance(size, bool):
        raise ConfigError(f"size must be an int or {{'shortest_edge': int}}, got {size!r}")
    if isinstance(size, int):
        edge = size
    elif isinstance(size, dict):
        if size.get("shortest_edge") is None:
            raise ConfigError(f"ViLT resizes by the shortest edge: size must contain 'shortest_edge' (HF's ViLT "
                              f"raises without it), got {size!r}")
        edge = size["shortest_edge"]  # HF's ViLT ignores longest_edge: the long side is 1333/800 of it
    else:
        raise ConfigError(f"size must be an int or {{'shortest_edge': int}}, got {size!r}")
    if isinstance(edge, bool) or not isinstance(edge, int) or edge < 1:
        raise ConfigError(f"size['shortest_edge'] must be a positive int, got {edge!r}")
    return edge


class ViltImageProcessor:
    """ViLT image preprocessing, torch-free; the same outputs as HF's `ViltImageProcessorPil`.

    Arguments are HF's preprocessor_config.json fields (see `VILT_DEFAULTS`), plus `min_size` (the
    smallest side allowed after resizing, 32 = one patch), `max_pixels` (the largest width x height
    accepted before decoding; None = `vlexport.processing.images.MAX_PIXELS`) and `num_threads`
    (decode and resize a batch's images on that many threads: Pillow releases the GIL; the result is
    the same). Thread-safe: a call reads the settings and keeps no state.
    """

    model_input_names = ["pixel_values", "pixel_mask"]

    def __init__(self, do_resize=True, size=None, size_divisor=32, resample=3, do_rescale=True,
                 rescale_factor=1 / 255, do_normalize=True, image_mean=(0.5, 0.5, 0.5),
                 image_std=(0.5, 0.5, 0.5), do_pad=True, do_convert_rgb=True, *, min_size=PATCH_SIZE,
                 max_pixels=None, num_threads=1, extra=None):
        self.do_resize = imgs.config_flag(do_resize, "do_resize")
        self.size = {"shortest_edge": _shortest_edge(384 if size is None else size)}
        if isinstance(size_divisor, bool) or not isinstance(size_divisor, int) or size_divisor < 1:
            raise ConfigError(f"size_divisor must be a positive int, got {size_divisor!r}")
        self.size_divisor = size_divisor
        self.resample = imgs.resample_filter(resample)
        self.do_rescale = imgs.config_flag(do_rescale, "do_rescale")
        self.rescale_factor = imgs.config_number(rescale_factor, "rescale_factor")
        self.do_normalize = imgs.config_flag(do_normalize, "do_normalize")
        self.image_mean = imgs.config_mean_std(image_mean, "image_mean")
        self.image_std = imgs.config_mean_std(image_std, "image_std")
        self.do_pad = imgs.config_flag(do_pad, "do_pad")
        # unset (None) in a config = HF's default: we convert (see the module docstring)
        self.do_convert_rgb = True if do_convert_rgb is None else imgs.config_flag(do_convert_rgb, "do_convert_rgb")
        if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
            raise ConfigError(f"min_size must be a positive int, got {min_size!r}")
        self.min_size = min_size
        if max_pixels is not None and (isinstance(max_pixels, bool) or not isinstance(max_pixels, int)
                                       or max_pixels < 1):
            raise ConfigError(f"max_pixels must be a positive int or None, got {max_pixels!r}")
        self.max_pixels = max_pixels
        if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
            raise ConfigError(f"num_threads must be a positive int, got {num_threads!r}")
        self.num_threads = num_threads
        self.extra = dict(extra or {})

    # ------------------------------------------------------------------------------- config files

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "ViltImageProcessor":
        """From a preprocessor_config.json dict; keys HF's ViLT does not read are kept in `extra`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a preprocessor config must be a JSON object, got {type(d).__name__}")
        for key in ("image_processor_type", "feature_extractor_type"):
            kind = d.get(key)
            if kind is not None and not str(kind).startswith("Vilt"):
                raise ConfigError(f"{key} is {kind!r}: this is not a ViLT preprocessor config")
        kw = {k: d[k] for k in VILT_DEFAULTS if d.get(k) is not None}  # HF: None = the class default
        kw.update(overrides)
        extra = {k: v for k, v in d.items() if k not in _WRITTEN}
        return cls(**{**VILT_DEFAULTS, **kw}, extra=extra)

    @classmethod
    def from_pretrained(cls, path, **overrides) -> "ViltImageProcessor":
        """Read `preprocessor_config.json` from a model/artifact folder (or that file itself).

        A folder without one, and the public `dandelin/vilt-b32-*` ids (offline: no download), give the
        public checkpoints' settings (`VILT_DEFAULTS`). Keyword arguments override the file.
        """
        p = Path(path)
        if p.is_file():
            file = p
        elif p.is_dir():
            file = p / CONFIG_NAME
            if not file.is_file():
                return cls.from_dict(dict(VILT_DEFAULTS), **overrides)
        else:
            known = set()
            try:
                from vlexport.families.vilt.checkpoints import PUBLIC_CHECKPOINTS, TINY_ID

                known = set(PUBLIC_CHECKPOINTS) | {TINY_ID}
            except ImportError:
                pass
            if str(path) in known:
                return cls.from_dict(dict(VILT_DEFAULTS), **overrides)
            raise ArtifactError(f"no folder or file {str(path)!r} to read a ViLT {CONFIG_NAME} from")
        try:
            d = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{file}: not a readable JSON preprocessor config: {e}") from None
        try:
            return cls.from_dict(d, **overrides)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None

    def to_dict(self) -> dict:
        """A preprocessor_config.json dict that HF's ViLT image processors read to the same settings."""
        return {
            **self.extra,
            "image_processor_type": "ViltImageProcessor",
            "do_resize": self.do_resize,
            "size": dict(self.size),
            "size_divisor": self.size_divisor,
            "resample": self.resample,
            "do_rescale": self.do_rescale,
            "rescale_factor": self.rescale_factor,
            "do_normalize": self.do_normalize,
            "image_mean": list(self.image_mean),
            "image_std": list(self.image_std),
            "do_pad": self.do_pad,
            "do_convert_rgb": self.do_convert_rgb,
        }

    def save_pretrained(self, folder) -> Path:
        """Write `preprocessor_config.json` into folder (created if needed); returns the file's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / CONFIG_NAME
        file.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return file

    def __repr__(self):
        return f"ViltImageProcessor({json.dumps(self.to_dict(), sort_keys=True)})"

    # ------------------------------------------------------------------------------------ images

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) an image of that size is resized to."""
        shorter = self.size["shortest_edge"]
        longer = int(MAX_LONGER_EDGE / MAX_SHORTER_EDGE * shorter)
        return get_resize_output_image_size(height, width, shorter, longer, self.size_divisor)

    def _lut(self, unit_float: bool, cache: dict | None = None) -> np.ndarray:
        if cache is not None and unit_float in cache:
            return cache[unit_float]
        lut = imgs.pixel_lut(do_rescale=self.do_rescale, rescale_factor=self.rescale_factor,
                             do_normalize=self.do_normalize, mean=self.image_mean, std=self.image_std,
                             unit_float=unit_float)
        if cache is not None:
            cache[unit_float] = lut
        return lut

    def _prepare_one(self, x, name, input_data_format, cache=None):
        """-> (height, width, writer): writer(out_chw_view) fills the image's pixel values."""
        p = imgs.prepare_rgb(x, name, max_pixels=self.max_pixels, min_size=1, convert=self.do_convert_rgb,
                             input_data_format=input_data_format)
        label = f"{name} ({imgs.describe(x)})"
        im = p.image
        if self.do_resize:
            unit = False
            if not isinstance(im, Image.Image):
                im, unit = imgs.array_to_pil(im, label)
                if unit and self.do_rescale:
                    warnings.warn(f"{label}: float pixel values in [0, 1] are rescaled twice (x 1/255 after "
                                  "the resize, then rescale_factor), exactly as HF's ViLT processor does; pass "
                                  "uint8 images or set do_rescale=False", UserWarning, stacklevel=4)
            h, w = self.output_size(p.height, p.width)
            if h < self.min_size or w < self.min_size:
                raise InputError(f"{label}: a {p.width}x{p.height} image resizes to {w}x{h} (width x height), "
                                 f"smaller than one {self.min_size}-pixel patch on a side; ViLT needs at least "
                                 f"{self.min_size}x{self.min_size} (its aspect ratio is too extreme)")
            pixels = np.asarray(im.resize((w, h), resample=self.resample))
            lut = self._lut(unit, cache)
            return h, w, lambda out: imgs.apply_lut(pixels, lut, out)
        h, w = p.height, p.width
        if h < self.min_size or w < self.min_size:
            raise InputError(f"{label}: the image is {w}x{h} (width x height), smaller than one "
                             f"{self.min_size}-pixel patch on a side (do_resize is off)")
        a = np.asarray(im) if isinstance(im, Image.Image) else im
        if a.dtype == np.uint8:
            lut = self._lut(False, cache)
            return h, w, lambda out: imgs.apply_lut(a, lut, out)

        def write(out):
            out[...] = imgs.rescale_normalize(a, do_rescale=self.do_rescale, rescale_factor=self.rescale_factor,
                                              do_normalize=self.do_normalize, mean=self.image_mean,
                                              std=self.image_std)
        return h, w, write

    @staticmethod
    def _flatten(images):
        """HF's `make_flat_list_of_images`: one image, a list, a list of lists, or a 4-D array batch."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return list(images)
        if isinstance(images, (list, tuple)):
            if images and all(isinstance(i, (list, tuple)) for i in images):
                return [im for group in images for im in group]
            out = []
            for im in images:
                if isinstance(im, np.ndarray) and im.ndim == 4:
                    out.extend(im)
                else:
                    out.append(im)
            return out
        return [images]

    def __call__(self, images, return_tensors="np", *, input_data_format=None) -> ModelOutput:
        """Preprocess one image or a batch; returns pixel_values (B, 3, H, W) float32 and, when padding,
        pixel_mask (B, H, W) int64. return_tensors: "np" (arrays) or None (lists of per-image arrays)."""
        if return_tensors not in ("np", None):
            raise InputError(f"return_tensors must be 'np' or None (vlexport's runtime is numpy-only), got "
                             f"{return_tensors!r}")
        batch = self._flatten(images)
        if not batch:
            raise InputError("images: no images given (an empty list)")
        multi = len(batch) > 1 or isinstance(images, (list, tuple)) or (
            isinstance(images, np.ndarray) and images.ndim == 4)
        cache: dict = {}
        names = [f"images[{i}]" if multi else "images" for i in range(len(batch))]
        if self.num_threads > 1 and len(batch) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.num_threads, len(batch))) as pool:
                items = list(pool.map(lambda a: self._prepare_one(a[0], a[1], input_data_format, cache),
                                      zip(batch, names)))
        else:
            items = [self._prepare_one(x, n, input_data_format, cache) for x, n in zip(batch, names)]
        hmax = max(h for h, _, _ in items)
        wmax = max(w for _, w, _ in items)
        if not self.do_pad and any((h, w) != (hmax, wmax) for h, w, _ in items) and return_tensors == "np":
            sizes = sorted({(w, h) for h, w, _ in items})
            raise InputError(f"images: with do_pad=False the images must share one size to be stacked; they "
                             f"resize to {', '.join(f'{w}x{h}' for w, h in sizes)} (width x height). Turn "
                             "do_pad on or pass return_tensors=None")
        if self.do_pad or return_tensors == "np":
            pixel_values = np.zeros((len(items), 3, hmax, wmax), dtype=np.float32)
            pixel_mask = np.zeros((len(items), hmax, wmax), dtype=np.int64) if self.do_pad else None
            for b, (h, w, write) in enumerate(items):
                write(pixel_values[b, :, :h, :w])
                if pixel_mask is not None:
                    pixel_mask[b, :h, :w] = 1
        else:  # unpadded list
            pixel_values = []
            for h, w, write in items:
                out = np.empty((3, h, w), dtype=np.float32)
                write(out)
                pixel_values.append(out)
            pixel_mask = None
        if return_tensors is None and self.do_pad:
            pixel_values, pixel_mask = list(pixel_values), list(pixel_mask)
        elif return_tensors is None:
            pixel_values = list(pixel_values)
        out = {"pixel_values": pixel_values}
        if pixel_mask is not None:
            out["pixel_mask"] = pixel_mask
        return ModelOutput(out)

    preprocess = __call__
