"""Torch-free image processors of ViT-style vision towers: the same pixels as transformers' PIL backend.

`ViTImageProcessor`, `DeiTImageProcessor`, `CLIPImageProcessor` and `BeitImageProcessor` reproduce
transformers 5.23's `ViTImageProcessorPil`, `DeiTImageProcessorPil`, `CLIPImageProcessorPil` and
`BeitImageProcessorPil` (what `AutoImageProcessor.from_pretrained` gives without torchvision; the
torchvision classes resize with another algorithm and are not bit-identical): `proc(images)` ->
`ModelOutput(pixel_values=(B, 3, H, W) float32)`. They differ only in their defaults:

- ViT: resize to 224x224 (bilinear), rescale 1/255, normalize with mean = std = 0.5, no crop.
- DeiT: resize to 256x256 (bicubic), center crop 224x224, rescale, normalize. HF's *class* default
  mean/std is IMAGENET_STANDARD (0.5), not IMAGENET_DEFAULT: the public facebook/deit-* configs set
  (0.485, 0.456, 0.406) / (0.229, 0.224, 0.225) explicitly, and a config's values win, as in HF.
- CLIP: resize the shortest edge to 224 (bicubic, aspect kept, long side `int(224 * long / short)`,
  truncated), center crop 224x224, rescale, normalize with OPENAI_CLIP mean/std, RGB conversion on.
- BEiT: ViT's with bicubic resizing (the public microsoft/beit-* configs ask for bilinear, 224, no crop).

Every class honours every key HF's `PilBackend` reads from a preprocessor_config.json (do_resize,
size in any of its forms, resample, do_center_crop, crop_size, do_rescale, rescale_factor,
do_normalize, image_mean, image_std, do_convert_rgb, default_to_square, CLIP's use_square_size), so
a ViT config asking for a center crop gets one. HF's order, operation for operation (input rules in
`vlexport.processing.images`):

1. RGB: files via HF's `load_image` (EXIF orientation, `convert("RGB")`), PIL images and arrays via
   HF's `convert_to_rgb` (alpha composited onto white, gray repeated).
2. Resize with Pillow's `Image.resize` (HF's call) to `resize_output_size`: HF's four size rules with
   their float expressions, so the truncations agree.
3. Center crop at HF's numpy offsets, `(h - crop) // 2`. An image smaller than the crop is zero-padded
   with the larger half of the padding top/left (`ceil`; HF's torchvision backend puts it
   bottom/right, so HF's two backends disagree by a pixel there). The padding is byte 0, so after
   normalization it is `-mean / std`, not 0.
4. Rescale (float64, then float32) and normalize in float32: for bytes one 256-entry table per channel
   (`pixel_lut`, bit-identical to HF's arithmetic) gathered into the batch over the cropped window
   only; other dtypes go through `rescale_normalize` (HF's arithmetic for any dtype).

Where we differ, on purpose (as the other image processors do):
- RGB conversion is on unless a config says `do_convert_rgb: false`. HF's ViT and DeiT leave it unset
  and then raise on gray, palette, RGBA, LA, CMYK or 16-bit inputs; we return what HF returns with
  `do_convert_rgb=True`, and `save_pretrained` writes it so HF reading our file agrees.
- 2-D arrays are grayscale (HF refuses them); `pathlib.Path` and encoded bytes are accepted; URLs are
  refused. pixel_values is always float32 (HF keeps uint8 with rescale and normalize off).
- Bad inputs raise `InputError` naming the input (`images[3] ('/x.jpg')`): an image over `max_pixels`
  before it is decoded, and a resize target over that limit or under one pixel (CLIP's rule makes a
  1x5000 image 224x1,120,000: HF allocates it). Configs are checked when a processor is built
  (`ConfigError`); HF fails at the first call.
- HF's quirk kept, with a warning: float arrays in [0, 1] are scaled to bytes for Pillow, divided by
  255 after the resize, then rescaled again by `rescale_factor`.
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
IMAGENET_STANDARD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
IMAGENET_DEFAULT = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
OPENAI_CLIP = ((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))

# the config keys these processors read; anything else in a file is kept in `extra` and written back
_KEYS = ("do_resize", "size", "resample", "do_center_crop", "crop_size", "do_rescale", "rescale_factor",
         "do_normalize", "image_mean", "image_std", "do_convert_rgb")
_CONSUMED = set(_KEYS) | {"image_processor_type", "feature_extractor_type", "default_to_square", "use_square_size"}
_SIZE_FORMS = ({"height", "width"}, {"shortest_edge"}, {"shortest_edge", "longest_edge"}, {"max_height", "max_width"})


# ------------------------------------------------------------------------------------ size rules

def get_size_with_aspect_ratio(height: int, width: int, size: int, max_size: int | None = None) -> tuple[int, int]:
    """HF's `image_transforms.get_size_with_aspect_ratio` (shortest_edge + longest_edge), same floats."""
    raw_size = None
    if max_size is not None:
        mn, mx = float(min(height, width)), float(max(height, width))
        if mx / mn * size > max_size:
            raw_size = max_size * mn / mx
            size = int(round(raw_size))
    if (height <= width and height == size) or (width <= height and width == size):
        return height, width
    r = raw_size if raw_size is not None else size  # HF scales the long side from the unrounded size
    return (int(r * height / width), size) if width < height else (size, int(r * width / height))


def resize_output_size(height: int, width: int, size: dict) -> tuple[int, int]:
    """(height, width) HF's `PilBackend.resize` gives an image of that size, for a canonical size dict."""
    if "shortest_edge" in size and "longest_edge" in size:
        return get_size_with_aspect_ratio(height, width, size["shortest_edge"], size["longest_edge"])
    if "shortest_edge" in size:  # HF's get_resize_output_image_size(default_to_square=False): truncates
        s = size["shortest_edge"]
        short, long = (width, height) if width <= height else (height, width)
        new_long = int(s * long / short)
        return (new_long, s) if width <= height else (s, new_long)
    if "max_height" in size:  # HF's get_image_size_for_max_height_width: fit inside, aspect kept
        scale = min(size["max_height"] / height, size["max_width"] / width)
        return int(height * scale), int(width * scale)
    return size["height"], size["width"]


def crop_window(height: int, width: int, crop_h: int, crop_w: int):
    """HF's numpy `center_crop` as slices: (src_rows, src_cols, dst_rows, dst_cols, padded)."""
    def axis(n, c):
        if n >= c:
            top = (n - c) // 2
            return slice(top, top + c), slice(0, c)
        pad = (c - n + 1) // 2  # HF: ceil((c - n) / 2) zeros before the image
        return slice(0, n), slice(pad, pad + n)
    (sr, dr), (sc, dc) = axis(height, crop_h), axis(width, crop_w)
    return sr, sc, dr, dc, height < crop_h or width < crop_w


# --------------------------------------------------------------------------------- config checks

def _positive_int(v, name):
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
        raise ConfigError(f"{name} must be a positive int, got {v!r}")
    return int(v)


def parse_size(size, name="size", default_to_square=True, crop=False) -> dict:
    """HF's `get_size_dict` restricted to the forms its resize (or, crop=True, center crop) can use."""
    if isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        d = {"height": size, "width": size} if default_to_square or crop else {"shortest_edge": size}
    elif isinstance(size, (list, tuple)) and len(size) == 2:
        d = {"height": size[0], "width": size[1]}  # HF: (height, width) order
    elif isinstance(size, dict):
        d = dict(size)
    else:
        raise ConfigError(f"{name} must be an int, [height, width] or a dict such as {{'height': 224, 'width': "
                          f"224}} or {{'shortest_edge': 224}}, got {size!r}")
    forms = _SIZE_FORMS[:1] if crop else _SIZE_FORMS
    if set(d) not in forms:  # HF accepts {'longest_edge'} and {'min_pixels', 'max_pixels'} here, then raises
        raise ConfigError(f"{name} must have the keys {' or '.join(str(sorted(f)) for f in forms)}, got {size!r}")
    return {k: _positive_int(v, f"{name}[{k!r}]") for k, v in d.items()}


# ---------------------------------------------------------------------------------- processors

class _ViTStyleImageProcessor:
    """Resize, optional center crop, rescale, normalize (see the module docstring).

    Arguments are HF's preprocessor_config.json fields (the class attributes are the defaults), plus
    `max_pixels` (the largest width x height accepted, input or resized; None = `images.MAX_PIXELS`)
    and `num_threads` (decode and resize a batch's images on threads: Pillow releases the GIL; same
    result). Thread-safe: a call reads the settings and keeps no state.
    """

    hf_name = ""
    defaults: dict = {}
    default_to_square = True  # how HF reads an int `size`
    model_input_names = ["pixel_values"]

    def __init__(self, do_resize=None, size=None, resample=None, do_center_crop=None, crop_size=None,
                 do_rescale=None, rescale_factor=None, do_normalize=None, image_mean=None, image_std=None,
                 do_convert_rgb=None, *, default_to_square=None, max_pixels=None, num_threads=1, extra=None):
        d = self.defaults  # HF: an argument left at None takes the class default
        pick = lambda v, k: d[k] if v is None else v  # noqa: E731
        square = self.default_to_square if default_to_square is None else imgs.config_flag(default_to_square, "default_to_square")
        self.do_resize = imgs.config_flag(pick(do_resize, "do_resize"), "do_resize")
        self.size = parse_size(pick(size, "size"), "size", square)
        self.resample = imgs.resample_filter(pick(resample, "resample"))
        self.do_center_crop = imgs.config_flag(pick(do_center_crop, "do_center_crop"), "do_center_crop")
        crop_size = pick(crop_size, "crop_size")
        if crop_size is None and self.do_center_crop:
            raise ConfigError("do_center_crop is true but crop_size is not set (HF raises at the first call)")
        self.crop_size = None if crop_size is None else parse_size(crop_size, "crop_size", crop=True)
        self.do_rescale = imgs.config_flag(pick(do_rescale, "do_rescale"), "do_rescale")
        self.rescale_factor = imgs.config_number(pick(rescale_factor, "rescale_factor"), "rescale_factor")
        self.do_normalize = imgs.config_flag(pick(do_normalize, "do_normalize"), "do_normalize")
        self.image_mean = imgs.config_mean_std(pick(image_mean, "image_mean"), "image_mean")
        self.image_std = imgs.config_mean_std(pick(image_std, "image_std"), "image_std")
        # unset = convert (HF's ViT/DeiT would raise on non-RGB inputs instead: see the module docstring)
        self.do_convert_rgb = True if do_convert_rgb is None else imgs.config_flag(do_convert_rgb, "do_convert_rgb")
        self.max_pixels = None if max_pixels is None else _positive_int(max_pixels, "max_pixels")
        self.num_threads = _positive_int(num_threads, "num_threads")
        self.extra = dict(extra or {})
        if self.extra.get("do_pad"):  # HF's PilBackend would pad to pad_size (or raise without one)
            raise ConfigError("do_pad is not supported by these processors (no ViT-style checkpoint uses it)")
        self._luts: dict = {}  # unit_float -> (3, 256) table; filled once, same content from any thread

    # ----------------------------------------------------------------------------- config files

    @classmethod
    def from_dict(cls, d: dict, **overrides):
        """From a preprocessor_config.json dict; keys these processors do not read are kept in `extra`."""
        if not isinstance(d, dict):
            raise ConfigError(f"a preprocessor config must be a JSON object, got {type(d).__name__}")
        kind = hf_class_name(d)
        if kind is not None and kind != cls.hf_name:
            raise ConfigError(f"this preprocessor config is for {kind!r}, not {cls.hf_name!r}; "
                              "use vlexport.processing.vit_images.image_processor_from_pretrained to dispatch on it")
        kw = {k: d[k] for k in _KEYS + ("default_to_square",) if d.get(k) is not None}  # HF: None = default
        if issubclass(cls, CLIPImageProcessor) and d.get("use_square_size"):
            # HF's CLIP (for Kosmos-2): a square of the *class* default shortest edge, whatever size says
            edge = cls.defaults["size"]["shortest_edge"]
            kw["size"] = {"height": edge, "width": edge}
        kw.update(overrides)
        return cls(**kw, extra={k: v for k, v in d.items() if k not in _CONSUMED})

    @classmethod
    def from_pretrained(cls, path, **overrides):
        """Read `preprocessor_config.json` from a folder (or that file); a folder without one gives the
        class defaults. Keyword arguments override the file."""
        file, d = _read_config(path)
        if file is None:
            return cls(**overrides)
        try:
            return cls.from_dict(d, **overrides)
        except ConfigError as e:
            raise ConfigError(f"{file}: {e}") from None

    def to_dict(self) -> dict:
        """A preprocessor_config.json dict that HF's AutoImageProcessor reads back to the same settings."""
        out = {**self.extra, "image_processor_type": self.hf_name, "do_resize": self.do_resize,
               "size": dict(self.size), "resample": self.resample, "do_center_crop": self.do_center_crop,
               "do_rescale": self.do_rescale, "rescale_factor": self.rescale_factor,
               "do_normalize": self.do_normalize, "image_mean": list(self.image_mean),
               "image_std": list(self.image_std), "do_convert_rgb": self.do_convert_rgb}
        if self.crop_size is not None:
            out["crop_size"] = dict(self.crop_size)
        return out

    def save_pretrained(self, folder) -> Path:
        """Write `preprocessor_config.json` into folder (created if needed); returns the file's path."""
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        file = folder / CONFIG_NAME
        file.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return file

    def __repr__(self):
        return f"{type(self).__name__}({json.dumps(self.to_dict(), sort_keys=True)})"

    # ---------------------------------------------------------------------------------- images

    def output_size(self, height: int, width: int) -> tuple[int, int]:
        """(height, width) of pixel_values for an input image of that size."""
        h, w = resize_output_size(height, width, self.size) if self.do_resize else (height, width)
        return (self.crop_size["height"], self.crop_size["width"]) if self.do_center_crop else (h, w)

    def _lut(self, unit_float: bool) -> np.ndarray:
        lut = self._luts.get(unit_float)
        if lut is None:
            lut = self._luts[unit_float] = imgs.pixel_lut(
                do_rescale=self.do_rescale, rescale_factor=self.rescale_factor, do_normalize=self.do_normalize,
                mean=self.image_mean, std=self.image_std, unit_float=unit_float)
        return lut

    def _check_pixels(self, h, w, label, what):
        limit = imgs.MAX_PIXELS if self.max_pixels is None else self.max_pixels
        if h < 1 or w < 1:
            raise InputError(f"{label}: {what} {w}x{h} (width x height): its aspect ratio is too extreme")
        if limit is not None and h * w > limit:
            raise InputError(f"{label}: {what} {w}x{h} = {h * w:,} pixels, more than the limit of {limit:,} "
                             "(vlexport.processing.images.MAX_PIXELS, or max_pixels=); HF would allocate it")

    def _prepare_one(self, x, name, input_data_format):
        """-> (height, width, writer): writer(out) fills a (3, height, width) float32 view."""
        p = imgs.prepare_rgb(x, name, max_pixels=self.max_pixels, convert=self.do_convert_rgb,
                             input_data_format=input_data_format)
        label = f"{name} ({imgs.describe(x)})"
        im, unit = p.image, False
        if self.do_resize:
            h, w = resize_output_size(p.height, p.width, self.size)
            self._check_pixels(h, w, label, f"a {p.width}x{p.height} image resizes to")
            if not isinstance(im, Image.Image):
                im, unit = imgs.array_to_pil(im, label)
                if unit and self.do_rescale:
                    warnings.warn(f"{label}: float pixel values in [0, 1] are rescaled twice (x 1/255 after the "
                                  f"resize, then rescale_factor), exactly as HF's {self.hf_name} does; pass uint8 "
                                  "images or set do_rescale=False", UserWarning, stacklevel=4)
            a = np.asarray(im.resize((w, h), resample=self.resample))
        else:
            a = np.asarray(im) if isinstance(im, Image.Image) else im
        h, w = a.shape[:2]
        if self.do_center_crop:
            ch, cw = self.crop_size["height"], self.crop_size["width"]
            self._check_pixels(ch, cw, label, "the crop is")
            sr, sc, dr, dc, padded = crop_window(h, w, ch, cw)
            a, h, w = np.ascontiguousarray(a[sr, sc]), ch, cw  # a copy: the full resize is freed now
        else:
            dr = dc = slice(None)
            padded = False
        if a.dtype == np.uint8:
            lut = self._lut(unit)

            def write(out):
                if padded:  # HF pads with byte 0 before rescaling: the table's first entry
                    out[...] = lut[:, :1, None]
                imgs.apply_lut(a, lut, out[:, dr, dc])
            return h, w, write

        def write(out):  # other dtypes (do_resize off): HF's arithmetic on the zero-padded crop
            src = a
            if padded:
                src = np.zeros((h, w, 3), dtype=a.dtype)
                src[dr, dc] = a
            out[...] = imgs.rescale_normalize(src, do_rescale=self.do_rescale, rescale_factor=self.rescale_factor,
                                              do_normalize=self.do_normalize, mean=self.image_mean,
                                              std=self.image_std)
        return h, w, write

    @staticmethod
    def _flatten(images):
        """HF's `make_flat_list_of_images`: one image, a list, a list of lists, or a 4-D array batch."""
        if isinstance(images, np.ndarray) and images.ndim == 4:
            return list(images)
        if not isinstance(images, (list, tuple)):
            return [images]
        if images and all(isinstance(i, (list, tuple)) for i in images):
            return [im for group in images for im in group]
        out = []
        for im in images:
            out.extend(im) if isinstance(im, np.ndarray) and im.ndim == 4 else out.append(im)
        return out

    def __call__(self, images, return_tensors="np", *, input_data_format=None) -> ModelOutput:
        """Preprocess one image or a batch -> pixel_values (B, 3, H, W) float32. return_tensors: "np",
        "pt" (a torch tensor; needs torch) or None (a list of (3, H, W) arrays, sizes may differ)."""
        if return_tensors not in ("np", "pt", None):
            raise InputError(f"return_tensors must be 'np', 'pt' or None, got {return_tensors!r}")
        batch = self._flatten(images)
        if not batch:
            raise InputError("images: no images given (an empty list)")
        multi = isinstance(images, (list, tuple)) or (isinstance(images, np.ndarray) and images.ndim == 4)
        names = [f"images[{i}]" if multi else "images" for i in range(len(batch))]
        if self.num_threads > 1 and len(batch) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.num_threads, len(batch))) as pool:
                items = list(pool.map(lambda a: self._prepare_one(a[0], a[1], input_data_format), zip(batch, names)))
        else:
            items = [self._prepare_one(x, n, input_data_format) for x, n in zip(batch, names)]
        if return_tensors is None:
            pixel_values = []
            for h, w, write in items:
                pixel_values.append(np.empty((3, h, w), dtype=np.float32))
                write(pixel_values[-1])
            return ModelOutput(pixel_values=pixel_values)
        sizes = {(h, w) for h, w, _ in items}
        if len(sizes) > 1:
            listed = ", ".join(f"{w}x{h}" for h, w in sorted(sizes))
            raise InputError(f"images: without a center crop or a fixed size they come out as {listed} (width x "
                             "height) and cannot be stacked (HF cannot either); pass return_tensors=None")
        (h, w), = sizes
        pixel_values = np.empty((len(items), 3, h, w), dtype=np.float32)
        for b, (_, _, write) in enumerate(items):
            write(pixel_values[b])
        if return_tensors == "pt":
            from vlexport._deps import require

            pixel_values = require("torch", "return_tensors='pt'").from_numpy(pixel_values)
        return ModelOutput(pixel_values=pixel_values)

    preprocess = __call__


class ViTImageProcessor(_ViTStyleImageProcessor):
    """HF's `ViTImageProcessorPil`: 224x224 bilinear, rescale, normalize 0.5 / 0.5, no crop."""

    hf_name = "ViTImageProcessor"
    defaults = {"do_resize": True, "size": {"height": 224, "width": 224}, "resample": 2, "do_center_crop": False,
                "crop_size": None, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
                "image_mean": IMAGENET_STANDARD[0], "image_std": IMAGENET_STANDARD[1]}


class DeiTImageProcessor(_ViTStyleImageProcessor):
    """HF's `DeiTImageProcessorPil`: 256x256 bicubic, crop 224x224, rescale, normalize (class default 0.5)."""

    hf_name = "DeiTImageProcessor"
    defaults = {**ViTImageProcessor.defaults, "size": {"height": 256, "width": 256}, "resample": 3,
                "do_center_crop": True, "crop_size": {"height": 224, "width": 224}}


class CLIPImageProcessor(_ViTStyleImageProcessor):
    """HF's `CLIPImageProcessorPil`: shortest edge 224 bicubic, crop 224x224, OPENAI_CLIP mean/std."""

    hf_name = "CLIPImageProcessor"
    default_to_square = False
    defaults = {**DeiTImageProcessor.defaults, "size": {"shortest_edge": 224},
                "image_mean": OPENAI_CLIP[0], "image_std": OPENAI_CLIP[1]}


class BeitImageProcessor(_ViTStyleImageProcessor):
    """HF's `BeitImageProcessorPil`: 224x224 bicubic, no crop by default, rescale, normalize 0.5 / 0.5.
    Its `do_reduce_labels` concerns segmentation maps only, which these processors do not take (kept in extra)."""

    hf_name = "BeitImageProcessor"
    defaults = {**ViTImageProcessor.defaults, "resample": 3, "crop_size": {"height": 224, "width": 224}}


IMAGE_PROCESSORS = {c.hf_name: c for c in (ViTImageProcessor, DeiTImageProcessor, CLIPImageProcessor,
                                           BeitImageProcessor)}


# ------------------------------------------------------------------------------------- dispatch

def hf_class_name(d: dict) -> str | None:
    """The image processor class a config names, without HF's "Pil"/"Fast" backend suffix;
    "XFeatureExtractor" (older configs) reads as "XImageProcessor". None when it names none."""
    kind = d.get("image_processor_type") or d.get("feature_extractor_type")
    if kind is None:
        return None
    kind = str(kind)
    for suffix in ("Pil", "Fast"):
        if kind.endswith("ImageProcessor" + suffix):
            kind = kind[: -len(suffix)]
    if kind.endswith("FeatureExtractor"):
        kind = kind[: -len("FeatureExtractor")] + "ImageProcessor"
    return kind


def _read_config(path) -> tuple[Path | None, object]:
    """(the config file, its JSON) for a folder or a file; (None, None) for a folder without one."""
    p = Path(path)
    file = p if p.is_file() else p / CONFIG_NAME if p.is_dir() else None
    if file is None:
        raise ArtifactError(f"no folder or file {str(path)!r} to read a {CONFIG_NAME} from")
    if not file.is_file():
        return None, None
    try:
        return file, json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{file}: not a readable JSON preprocessor config: {e}") from None


def image_processor_from_pretrained(folder, default: str = "ViTImageProcessor", **overrides):
    """The processor a model folder's preprocessor_config.json names (`image_processor_type`, with or
    without "Pil"/"Fast", or the older `feature_extractor_type`). No file, or a file naming no type:
    `default` (a name in IMAGE_PROCESSORS) with the file's settings or the class defaults."""
    fallback = hf_class_name({"image_processor_type": default})
    if fallback not in IMAGE_PROCESSORS:
        raise ConfigError(f"default must be one of {sorted(IMAGE_PROCESSORS)}, got {default!r}")
    file, d = _read_config(folder)
    if file is None:
        return IMAGE_PROCESSORS[fallback](**overrides)
    if not isinstance(d, dict):
        raise ConfigError(f"{file}: a preprocessor config must be a JSON object, got {type(d).__name__}")
    kind = hf_class_name(d) or fallback
    if kind not in IMAGE_PROCESSORS:
        raise ConfigError(f"{file}: image processor type {kind!r} is not supported here; vlexport has "
                          f"{', '.join(sorted(IMAGE_PROCESSORS))}")
    untyped = {k: v for k, v in d.items() if k not in ("image_processor_type", "feature_extractor_type")}
    try:
        return IMAGE_PROCESSORS[kind].from_dict(untyped, **overrides)
    except ConfigError as e:
        raise ConfigError(f"{file}: {e}") from None


# the image processor HF's checkpoints of each vision tower model_type use, for folders without one
TOWER_IMAGE_PROCESSORS = {"vit": "ViTImageProcessor", "deit": "DeiTImageProcessor",
                          "clip_vision_model": "CLIPImageProcessor", "swin": "ViTImageProcessor",
                          "beit": "BeitImageProcessor"}


def at_size(proc, size: int):
    """The same processor producing size x size images (its crop, or its resize when it has no crop)."""
    d = proc.to_dict()
    if "crop_size" in d and d.get("do_center_crop"):
        d["crop_size"] = {"height": size, "width": size}
        if "shortest_edge" in (d.get("size") or {}):
            d["size"] = {"shortest_edge": size}
    else:
        d["size"] = {"height": size, "width": size}
    return type(proc).from_dict(d)


def for_vision_tower(folder, tower_config=None):
    """A vision tower's image processor: the folder's preprocessor_config.json when it has one, else the
    class HF's checkpoints of that tower type use, at the tower's image size."""
    default = TOWER_IMAGE_PROCESSORS.get(getattr(tower_config, "model_type", "vit"), "ViTImageProcessor")
    if folder is not None and (Path(folder) / "preprocessor_config.json").is_file():
        return image_processor_from_pretrained(folder, default=default)
    proc = IMAGE_PROCESSORS[default]()
    return at_size(proc, tower_config.image_size) if tower_config is not None else proc
