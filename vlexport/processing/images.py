"""Image loading and pixel preprocessing without torch: the pieces HF image processors are built from.

Any family's image processor can reuse these. They reproduce what transformers' PIL backend
(`transformers.image_processing_backends.PilBackend`, `image_transforms`, `image_utils.load_image`)
does, operation for operation, so outputs match HF's bit for bit where HF defines them:

- **Inputs** (`load_image`, `prepare_rgb`): PIL images of any mode, numpy arrays (HW grayscale, HWC
  or CHW with 1, 3 or 4 channels, any integer or float dtype), file paths (str or `pathlib.Path`),
  encoded image bytes and `data:image/...;base64,` strings.
- **Files** are opened the way HF's `load_image` opens a path: `Image.open`, EXIF orientation applied
  (`ImageOps.exif_transpose`), `convert("RGB")` (which drops an alpha channel). HF applies EXIF
  orientation to paths only, never to a PIL image you pass in; so do we.
- **RGB conversion** of PIL images is HF's `convert_to_rgb`: an image with an alpha band or a
  `transparency` entry is composited onto white, anything else goes through `Image.convert("RGB")`
  (so 16-bit and 32-bit modes are clipped to 0..255 by Pillow, not scaled: HF does the same). Arrays:
  1 channel is repeated, 4 channels are composited onto white with HF's arithmetic.
- **Channel layout** of 3-D arrays is inferred with HF's rule: channels first when the first axis
  has 1, 3 or 4 entries (even if the last one has too), else channels last when the last one has.
  Pass `input_data_format="channels_last"` to settle an ambiguous shape such as (3, 3, 3).
- **Arrays to PIL** (`array_to_pil`) follow HF's `to_pil_image`: uint8 as is; integer-valued values in
  0..255 are cast; floats in [0, 1] are multiplied by 255 and *truncated* to uint8, and HF divides the
  resized result by 255 again (so with `do_rescale` on, such an input is rescaled twice, as in HF:
  `array_to_pil` reports it so that a processor can reproduce it).
- **Rescale and normalize** (`pixel_lut`, `rescale_normalize`) use HF's dtypes: rescale in float64
  then cast to float32, normalize `(x - mean) / std` in float32. For uint8 pixels the whole chain is a
  function of the byte, so `pixel_lut` tabulates it once (256 entries per channel) and `apply_lut`
  gathers straight into the padded batch: same bits as HF, none of its intermediate copies.

**Memory bound.** An image is refused with an `InputError` before its pixels are decoded when its
width x height exceeds `max_pixels` (default: the module's `MAX_PIXELS`, 100 million pixels; change
the module attribute or pass `max_pixels=`). Files are opened lazily (`Image.open` reads the header
only) and checked on `.size`; so are PIL images passed in (a lazily opened one is not decoded) and
arrays. Peak memory while decoding an accepted image is about 4-5 bytes per pixel (Pillow stores
RGB as 4 bytes; a palette or gray file is converted once), up to ~16 for images with transparency
(HF's composite onto white makes three RGBA copies): ~0.5 GB and ~1.6 GB at the default limit;
lower it on small machines. Pillow's own decompression-bomb guard (`PIL.Image.MAX_IMAGE_PIXELS`,
89.5M pixels: a warning, and an error above twice that) is silenced for our open and its error
becomes the same kind of `InputError`; to accept images beyond 2 x `PIL.Image.MAX_IMAGE_PIXELS`
raise that too. Nothing global is changed: the warning filter is scoped to the `Image.open` call
(under a lock, as `warnings.catch_warnings` is process-wide).

Every failure is an `InputError` naming the input (e.g. `images[2] ('/data/cat.jpg')`): a missing
path, a directory, a file that is not an image, a truncated or corrupt file (Pillow raises when
decoding; we re-raise), an image above `max_pixels` or below `min_size`, an array of the wrong
ndim, dtype or channel count, NaN or infinity in a float array, values outside what HF accepts.
"""

from __future__ import annotations

import base64
import binascii
import io
import math
import os
import threading
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from vlexport.errors import ConfigError, InputError

MAX_PIXELS = 100_000_000  # width x height; refuse larger images before decoding them

# Pillow's resampling filters by name (HF configs store the integer)
RESAMPLE = {"nearest": 0, "lanczos": 1, "bilinear": 2, "bicubic": 3, "box": 4, "hamming": 5}

_OPEN_LOCK = threading.Lock()
_ORIENTATION = 0x0112


# --------------------------------------------------------------------------------------- describing

def describe(x) -> str:
    """A short description of an image input for error messages."""
    if isinstance(x, Image.Image):
        return f"a PIL {x.mode} image of {x.width}x{x.height}"
    if isinstance(x, np.ndarray):
        return f"an array of shape {x.shape} and dtype {x.dtype}"
    if isinstance(x, (str, Path)):
        s = str(x)
        return repr(s if len(s) <= 120 else s[:117] + "...")
    if isinstance(x, (bytes, bytearray, memoryview)):
        return f"{len(x)} bytes"
    return f"a {type(x).__name__}"


def _limit(max_pixels):
    return MAX_PIXELS if max_pixels is None else max_pixels


def check_size(width: int, height: int, name: str, *, max_pixels: int | None = None, min_size: int = 1,
               what: str = "") -> None:
    """InputError when width x height exceeds max_pixels or a side is under min_size."""
    limit = _limit(max_pixels)
    what = what or f"{width}x{height}"
    if limit is not None and width * height > limit:
        raise InputError(
            f"{name}: the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{limit:,} (vlexport.processing.images.MAX_PIXELS, or max_pixels=); refused before decoding it")
    if width < min_size or height < min_size:
        raise InputError(f"{name}: the image is {what} pixels (width x height); both sides must be at least "
                         f"{min_size}")


# ------------------------------------------------------------------------------------------- files

def _source(x, name):
    """(what to hand Image.open, is it a path) for str/Path/bytes inputs."""
    if isinstance(x, (bytes, bytearray, memoryview)):
        return io.BytesIO(bytes(x)), False
    s = os.fspath(x)
    if isinstance(s, bytes):
        s = os.fsdecode(s)
    if s.startswith(("http://", "https://")):
        raise InputError(f"{name}: {describe(x)} is a URL; vlexport does not download images, fetch it first "
                         "and pass the file, its bytes or a PIL image")
    if s.startswith("data:image/"):
        try:
            return io.BytesIO(base64.b64decode(s.split(",", 1)[1], validate=True)), False
        except (IndexError, binascii.Error, ValueError):
            raise InputError(f"{name}: a data:image/ string that is not valid base64") from None
    p = Path(s)
    if not p.exists():
        raise InputError(f"{name}: no such file {describe(s)}")
    if p.is_dir():
        raise InputError(f"{name}: {describe(s)} is a directory, not an image file")
    return s, True


def open_image(x, name: str = "image", *, max_pixels: int | None = None, min_size: int = 1) -> Image.Image:
    """Open an image file (path, bytes or data URI) lazily and check its size from the header.

    Nothing is decoded yet: the pixel count is checked against `max_pixels` first. Pillow's
    decompression-bomb warning is silenced for this call and its error becomes an InputError.
    """
    src, _ = _source(x, name)
    try:
        with _OPEN_LOCK, warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(src)
    except Image.DecompressionBombError as e:
        raise InputError(
            f"{name}: {describe(x)} is refused before decoding: {e} (Pillow's guard, 2 x "
            f"PIL.Image.MAX_IMAGE_PIXELS; vlexport's own limit is {_limit(max_pixels):,} pixels)") from None
    except UnidentifiedImageError:
        raise InputError(f"{name}: {describe(x)} is not an image file Pillow can read") from None
    except PermissionError:
        raise InputError(f"{name}: {describe(x)} cannot be read (permission denied)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        raise InputError(f"{name}: {describe(x)} is not a readable image: {e}") from None
    try:
        check_size(im.width, im.height, f"{name} ({describe(x)})", max_pixels=max_pixels, min_size=min_size)
    except InputError:
        im.close()
        raise
    return im


def _decode(im: Image.Image, name: str) -> None:
    """Decode a lazily opened image; corrupt or truncated data becomes an InputError."""
    try:
        im.load()
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, Image.DecompressionBombError) as e:
        raise InputError(f"{name}: the image data cannot be decoded (truncated or corrupt file?): {e}") from None


def read_image_file(x, name: str = "image", *, max_pixels: int | None = None, min_size: int = 1) -> Image.Image:
    """HF's `load_image` for a path: open, EXIF orientation applied, `convert("RGB")`; decoded, file closed."""
    im = open_image(x, name, max_pixels=max_pixels, min_size=min_size)
    label = f"{name} ({describe(x)})"
    try:
        _decode(im, label)
        try:
            orientation = im.getexif().get(_ORIENTATION, 1)
        except Exception:  # a malformed EXIF block: HF's exif_transpose would raise on it too
            raise InputError(f"{label}: the file's EXIF data cannot be read") from None
        if orientation in (2, 3, 4, 5, 6, 7, 8):
            ImageOps.exif_transpose(im, in_place=True)
        # HF: image.convert("RGB") (drops alpha without compositing); RGB to RGB would only copy.
        out = im.convert("RGB") if im.mode != "RGB" else im.copy() if im.fp is not None else im
    except BaseException:
        im.close()
        raise
    if out is not im:
        im.close()  # a multi-frame file keeps its handle open after load(); single-frame ones are closed
    return out


# ----------------------------------------------------------------------------------- RGB conversion

def pil_to_rgb(im: Image.Image) -> Image.Image:
    """HF's `convert_to_rgb` for PIL images: alpha or `transparency` is composited onto white."""
    has_alpha = "A" in im.getbands() or im.info.get("transparency") is not None
    if has_alpha:
        rgba = im if im.mode == "RGBA" else im.convert("RGBA")  # HF converts (a copy when already RGBA)
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if im.mode == "RGB":
        return im  # HF's convert("RGB") would return an identical copy
    return im.convert("RGB")


def infer_channels_last(shape: tuple, name: str, input_data_format: str | None = None) -> bool:
    """HF's `infer_channel_dimension_format(num_channels=(1, 3, 4))` for a 3-D array: True = HWC."""
    if input_data_format is not None:
        fmt = str(getattr(input_data_format, "value", input_data_format)).lower()
        if fmt in ("channels_last", "last", "hwc"):
            c = shape[-1]
            last = True
        elif fmt in ("channels_first", "first", "chw"):
            c = shape[0]
            last = False
        else:
            raise InputError(f"{name}: input_data_format must be 'channels_first' or 'channels_last', got "
                             f"{input_data_format!r}")
        if c not in (1, 3, 4):
            raise InputError(f"{name}: an array of shape {tuple(shape)} has {c} channels along the "
                             f"{'last' if last else 'first'} axis; expected 1, 3 or 4")
        return last
    if shape[0] in (1, 3, 4):
        return False  # HF prefers channels-first when both axes could be channels
    if shape[-1] in (1, 3, 4):
        return True
    raise InputError(f"{name}: an array of shape {tuple(shape)} has no channel axis of 1, 3 or 4 entries "
                     f"(first axis {shape[0]}, last axis {shape[-1]}); pass HW, HWC or CHW with 1 (gray), 3 (RGB) "
                     f"or 4 (RGBA) channels")


def _check_array(a: np.ndarray, name: str) -> None:
    if a.dtype.kind not in "uif":
        raise InputError(f"{name}: {describe(a)} is not an image array; use uint8 (0..255), another integer "
                         "type or a float type")
    if a.ndim not in (2, 3):
        raise InputError(f"{name}: {describe(a)} has {a.ndim} dimensions; an image is HW, HWC or CHW")
    if a.dtype.kind == "f" and not np.isfinite(a).all():
        bad = "NaN" if np.isnan(a).any() else "infinity"
        raise InputError(f"{name}: {describe(a)} contains {bad}")


def array_to_rgb(a: np.ndarray, name: str = "image", *, input_data_format: str | None = None,
                 convert: bool = True) -> np.ndarray:
    """An image array as HWC RGB with its dtype kept: HF's numpy `convert_to_rgb` (repeat gray,
    composite RGBA onto white). With convert=False only 3-channel arrays are accepted (HF's
    behaviour without `do_convert_rgb`)."""
    _check_array(a, name)
    if a.ndim == 2:
        a = a[:, :, None]
    elif not infer_channels_last(a.shape, name, input_data_format):
        a = np.moveaxis(a, 0, -1)
    c = a.shape[-1]
    if c == 3:
        return a
    if not convert:
        raise InputError(f"{name}: {describe(a)} has {c} channel(s); without RGB conversion (do_convert_rgb="
                         "False) the image must have 3")
    if c == 1:
        return np.repeat(a, 3, axis=-1)
    # c == 4: HF's arithmetic, float64 for integer arrays
    if a.dtype.kind == "f" and (a.min() < 0.0 or a.max() > 1.0):
        raise InputError(f"{name}: a float RGBA image must have values in [0, 1] to composite its alpha "
                         f"(as HF requires), got [{a.min()}, {a.max()}]")
    white = 255 if a.dtype.kind in "ui" else 1.0
    alpha = a[..., 3:4] / white
    composite = alpha * a[..., :3] + (1 - alpha) * white
    return np.round(composite).astype(a.dtype) if white == 255 else composite.astype(a.dtype)


def array_to_pil(a: np.ndarray, name: str = "image") -> tuple[Image.Image, bool]:
    """HF's `to_pil_image` for an HWC RGB array: (PIL RGB image, unit_float).

    uint8 is used as is; integer-valued arrays in 0..255 are cast; float arrays in [0, 1] are scaled
    by 255 (float64, then float32) and truncated to uint8, and `unit_float` is True: HF divides the
    resized pixels by 255 afterwards (float64 then float32). Anything else is an InputError (HF raises).
    """
    if a.dtype != np.uint8:
        if np.allclose(a, a.astype(int)):
            if not (np.all(a >= 0) and np.all(a <= 255)):
                raise InputError(f"{name}: integer pixel values must lie in 0..255 to make an 8-bit image (as HF "
                                 f"requires), got [{a.min()}, {a.max()}]")
            unit = False
        elif np.all(a >= 0) and np.all(a <= 1):
            unit = True
            a = (a.astype(np.float64) * 255).astype(np.float32)
        else:
            raise InputError(f"{name}: float pixel values must be integers in 0..255 or lie in [0, 1] (as HF "
                             f"requires), got [{a.min()}, {a.max()}]")
        a = a.astype(np.uint8)
    else:
        unit = False
    return Image.fromarray(np.ascontiguousarray(a)), unit


# ------------------------------------------------------------------------------------------ loading

class Prepared(NamedTuple):
    """One input image in RGB: a PIL image (files and PIL inputs) or an HWC array (array inputs)."""
    image: object  # PIL.Image.Image in mode "RGB", or np.ndarray HWC with 3 channels (any dtype)
    width: int
    height: int


def prepare_rgb(x, name: str = "image", *, max_pixels: int | None = None, min_size: int = 1,
                convert: bool = True, input_data_format: str | None = None) -> Prepared:
    """Any supported input as RGB, the way HF's PIL backend sees it (with `do_convert_rgb=True`).

    convert=False reproduces HF without `do_convert_rgb`: a PIL image's raw bands are taken as they
    are (a YCbCr image is read as if it were RGB) and anything without 3 channels is refused.
    """
    if isinstance(x, Image.Image):
        label = f"{name} ({describe(x)})"
        check_size(x.width, x.height, label, max_pixels=max_pixels, min_size=min_size)
        _decode(x, label)
        if convert:
            im = pil_to_rgb(x)
        else:
            if len(x.getbands()) != 3:
                raise InputError(f"{label} has {len(x.getbands())} band(s); without RGB conversion "
                                 "(do_convert_rgb=False) the image must have 3")
            im = x if x.mode == "RGB" else Image.fromarray(np.asarray(x))
        return Prepared(im, im.width, im.height)
    if isinstance(x, np.ndarray):
        if x.ndim in (2, 3) and x.dtype.kind in "uif":
            last = x.ndim == 2 or infer_channels_last(x.shape, name, input_data_format)
            h, w = (x.shape[0], x.shape[1]) if last else (x.shape[1], x.shape[2])
            check_size(w, h, f"{name} ({describe(x)})", max_pixels=max_pixels, min_size=min_size)
        a = array_to_rgb(x, name, input_data_format=input_data_format, convert=convert)
        return Prepared(a, a.shape[1], a.shape[0])
    if isinstance(x, (str, Path, bytes, bytearray, memoryview)) or hasattr(x, "__fspath__"):
        im = read_image_file(x, name, max_pixels=max_pixels, min_size=min_size)
        if convert:
            im = pil_to_rgb(im)
        return Prepared(im, im.width, im.height)
    raise InputError(f"{name}: {describe(x)} is not an image; pass a PIL image, a numpy array (HW, HWC or CHW), "
                     "a file path or encoded image bytes")


def load_image(x, name: str = "image", *, max_pixels: int | None = None, min_size: int = 1,
               input_data_format: str | None = None) -> Image.Image:
    """Any supported input as a decoded PIL image in mode "RGB" (HF's conversion rules, see the module
    docstring). Float arrays in [0, 1] are scaled to 0..255 (truncated) as HF's `to_pil_image` does."""
    p = prepare_rgb(x, name, max_pixels=max_pixels, min_size=min_size, input_data_format=input_data_format)
    return p.image if isinstance(p.image, Image.Image) else array_to_pil(p.image, name)[0]


# ------------------------------------------------------------------------------------- pixel math

def resample_filter(resample, name: str = "resample") -> int:
    """Pillow's filter number from an int, a `PIL.Image.Resampling` or a name such as "bicubic"."""
    if isinstance(resample, str):
        key = resample.lower().rsplit(".", 1)[-1]
        if key not in RESAMPLE:
            raise ConfigError(f"{name} must be one of {sorted(RESAMPLE)} or 0..5, got {resample!r}")
        return RESAMPLE[key]
    try:
        value = int(resample)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a Pillow resampling filter (0..5 or a name), got {resample!r}") from None
    if isinstance(resample, bool) or value not in RESAMPLE.values() or value != resample:
        raise ConfigError(f"{name} must be a Pillow resampling filter (0..5 or a name), got {resample!r}")
    return value


def resize(im: Image.Image, height: int, width: int, resample=3) -> Image.Image:
    """`Image.resize((width, height), resample)` as HF's `image_transforms.resize` calls it."""
    return im.resize((width, height), resample=resample_filter(resample))


def _per_channel(v, channels: int, what: str) -> np.ndarray:
    if np.ndim(v) == 0:
        return np.full(channels, float(v), dtype=np.float64)
    vals = [float(u) for u in v]
    if len(vals) != channels:
        raise ConfigError(f"{what} must be one number or {channels} (one per channel), got {list(v)}")
    return np.array(vals, dtype=np.float64)


def pixel_lut(*, do_rescale: bool, rescale_factor: float, do_normalize: bool, mean, std,
              unit_float: bool = False, channels: int = 3) -> np.ndarray:
    """(channels, 256) float32: what HF's rescale then normalize make of each byte value.

    unit_float: the bytes came from a float [0, 1] array (HF divides the resized bytes by 255 first).
    The arithmetic and dtypes are HF's: rescale = float32(float64(x) * factor); normalize in the
    image's float dtype (float32) with float32 mean and std: (x - mean) / std.
    """
    x = np.arange(256, dtype=np.uint8)
    x = np.broadcast_to(x, (channels, 256))
    if unit_float:
        x = (x.astype(np.float64) * (1 / 255)).astype(np.float32)
    if do_rescale:
        x = (x.astype(np.float64) * rescale_factor).astype(np.float32)
    if do_normalize:
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        m = _per_channel(mean, channels, "image_mean").astype(x.dtype)[:, None]
        s = _per_channel(std, channels, "image_std").astype(x.dtype)[:, None]
        x = (x - m) / s
    return np.ascontiguousarray(x, dtype=np.float32)


def apply_lut(pixels: np.ndarray, lut: np.ndarray, out: np.ndarray) -> np.ndarray:
    """out[c] = lut[c][pixels[..., c]] for HWC uint8 pixels into a CHW float32 view (e.g. a padded slot)."""
    for c in range(lut.shape[0]):
        np.take(lut[c], pixels[..., c], out=out[c], mode="clip")
    return out


def rescale_normalize(a: np.ndarray, *, do_rescale: bool, rescale_factor: float, do_normalize: bool,
                      mean, std) -> np.ndarray:
    """HF's rescale then normalize on an HWC array of any dtype; returns CHW float32."""
    x = a
    if do_rescale:
        x = (x.astype(np.float64) * rescale_factor).astype(np.float32)
    if do_normalize:
        if x.dtype.kind != "f":
            x = x.astype(np.float32)
        c = x.shape[-1]
        m = _per_channel(mean, c, "image_mean").astype(x.dtype)
        x = (x - m) / _per_channel(std, c, "image_std").astype(x.dtype)
    return np.ascontiguousarray(np.moveaxis(x, -1, 0), dtype=np.float32)


def pad_batch(images: list[np.ndarray], *, fill: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """CHW arrays padded bottom/right to the batch's largest height and width: (B, C, H, W) float32
    and a (B, H, W) int64 mask with ones over each image's valid top-left rectangle."""
    if not images:
        raise InputError("no images to pad")
    c = images[0].shape[0]
    hmax = max(i.shape[1] for i in images)
    wmax = max(i.shape[2] for i in images)
    out = np.full((len(images), c, hmax, wmax), fill, dtype=np.float32)
    mask = np.zeros((len(images), hmax, wmax), dtype=np.int64)
    for b, im in enumerate(images):
        out[b, :, :im.shape[1], :im.shape[2]] = im
        mask[b, :im.shape[1], :im.shape[2]] = 1
    return out, mask


# ----------------------------------------------------------------------------- preprocessor_config.json checks
# (every image processor validates its settings with these: one wording for the same mistake)

def config_flag(v, name):
    if not isinstance(v, (bool, np.bool_)):
        raise ConfigError(f"{name} must be true or false, got {v!r}")
    return bool(v)


def config_number(v, name, positive=False):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or (positive and v <= 0):
        raise ConfigError(f"{name} must be a finite{' positive' if positive else ''} number, got {v!r}")
    return float(v)


def config_mean_std(v, name):
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        vals = [v] * 3  # HF repeats a scalar over the channels
    elif isinstance(v, (list, tuple, np.ndarray)) and np.ndim(v) == 1 and len(v) == 3:
        vals = [u.item() if isinstance(u, np.generic) else u for u in v]
    else:
        raise ConfigError(f"{name} must be one number or 3 (R, G, B), got {v!r}")
    return [config_number(u, name, positive=(name == "image_std")) for u in vals]
