"""ViLT's torch-free image processor against transformers' `ViltImageProcessorPil` (the oracle).

Shapes and `pixel_mask` must be identical and `pixel_values` within 1e-5 (in practice they are bit
for bit equal) on real photographs (scikit-image's `skimage.data`, matplotlib's grace_hopper.jpg:
skipped with the reason when those packages are missing), synthetic images of many sizes, every
PIL mode, numpy inputs, files and EXIF-rotated JPEGs, mixed-size batches. Bad inputs must give an
`InputError` naming the input, and a huge image must be refused without allocating it.

HF is configured like the public ViLT checkpoints (`image_mean = image_std = [0.5] * 3`) and also
left at its class defaults; `do_convert_rgb=True` where the input is not RGB (HF's ViLT default
leaves it unset and then raises on every non-RGB input; ours converts, see the module docstring).
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import threading
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.families.vilt.image_processor import ViltImageProcessor, get_resize_output_image_size
from vlexport.processing import images as imgs

pytest.importorskip("transformers")
from transformers.models.vilt.image_processing_pil_vilt import (  # noqa: E402
    ViltImageProcessorPil,
    get_resize_output_image_size as hf_get_resize_output_image_size,
)

TOL = 1e-5
DIFFS: list[float] = []  # every comparison's max |diff|, reported by the last test
REPO = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------------------------------ helpers

@pytest.fixture(scope="module")
def hf():
    """HF configured like dandelin/vilt-b32-* (mean = std = 0.5)."""
    return ViltImageProcessorPil(image_mean=[0.5] * 3, image_std=[0.5] * 3)


@pytest.fixture(scope="module")
def hf_default():
    return ViltImageProcessorPil()


@pytest.fixture(scope="module")
def ours():
    return ViltImageProcessor()


def hf_run(proc, images, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return proc(images, return_tensors="np", **kw)


def assert_same(a, b):
    """a: ours, b: HF."""
    pa, pb = a["pixel_values"], b["pixel_values"]
    assert pa.dtype == np.float32 and pa.shape == pb.shape, (pa.shape, pb.shape)
    diff = float(np.abs(pa - pb.astype(np.float32)).max()) if pa.size else 0.0
    DIFFS.append(diff)
    assert diff <= TOL, diff
    assert ("pixel_mask" in a) == ("pixel_mask" in b)
    if "pixel_mask" in b:
        assert a["pixel_mask"].dtype == np.int64
        np.testing.assert_array_equal(a["pixel_mask"], b["pixel_mask"])
    return diff


def check(ours, hf, images, convert=True, **kw):
    return assert_same(ours(images), hf_run(hf, images, do_convert_rgb=True if convert else None, **kw))


def noise(h, w, c=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def smooth(h, w, seed=0):
    """A photo-like smooth image (gradients plus a blob) rather than noise."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.random.RandomState(seed).rand(3)
    img = np.stack([255 * (x / max(w - 1, 1)) * r[0], 255 * (y / max(h - 1, 1)),
                    255 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (0.1 * (h * w + 1)))], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def photos():
    out = []
    try:
        import skimage.data as data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera", "immunohistochemistry", "hubble_deep_field",
                     "motorcycle_left"):
            fn = getattr(data, name, None)
            if fn is not None:
                try:
                    out.append((name, fn()))
                except Exception:  # a data file that would need downloading
                    pass
    except ImportError:
        pass
    try:
        import matplotlib

        p = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
        if p.is_file():
            out.append(("grace_hopper", p))
    except ImportError:
        pass
    return out


PHOTOS = photos()
if not PHOTOS:
    PHOTOS = [pytest.param(None, None, marks=pytest.mark.skip(
        reason="no photographs: install scikit-image (skimage.data) or matplotlib (grace_hopper.jpg)"))]


def png_bytes(width, height, full=True):
    """A valid 1-bit grayscale PNG of zeros, streamed through zlib: tiny on disk for any size
    (full=False: the header only, no pixel data)."""
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)

    data = b""
    if full:
        comp = zlib.compressobj(9)
        row = b"\x00" * (1 + (width + 7) // 8)
        data = b"".join([comp.compress(row) for _ in range(height)] + [comp.flush()])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", data) + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------ the oracle

def test_resize_rule_matches_hf():
    rng = np.random.RandomState(0)
    sizes = [(1, 1), (40, 40), (384, 384), (3000, 200), (200, 3000), (479, 640), (1, 5000)]
    sizes += [tuple(int(v) for v in rng.randint(1, 4000, 2)) for _ in range(300)]
    for h, w in sizes:
        for shorter, div in ((384, 32), (800, 32), (224, 16), (384, 1)):
            longer = int(1333 / 800 * shorter)
            ref = hf_get_resize_output_image_size(np.zeros((1, h, w)), shorter, longer, div,
                                                  input_data_format="channels_first")
            assert get_resize_output_image_size(h, w, shorter, longer, div) == ref, (h, w, shorter, div)


@pytest.mark.parametrize("name,photo", PHOTOS)
def test_photographs_match_hf(ours, hf, hf_default, name, photo):
    im = Image.open(photo) if isinstance(photo, Path) else Image.fromarray(photo)
    check(ours, hf, im)
    check(ours, hf_default, im)
    if im.mode == "RGB":  # HF's own default (no RGB conversion) gives the same on RGB images
        assert_same(ours(im), hf_run(hf, im))
    if isinstance(photo, Path):
        assert_same(ours(photo), hf_run(hf, str(photo)))  # read from the file, as HF does
        assert_same(ours(str(photo)), hf_run(hf, str(photo)))
    else:  # the numpy array itself (HF refuses 2-D arrays: give it the (H, W, 1) one)
        assert_same(ours(photo), hf_run(hf, photo if photo.ndim == 3 else photo[..., None], do_convert_rgb=True))


SIZES = [(40, 40), (3000, 200), (200, 3000), (1, 1), (7, 13), (333, 517), (384, 384), (383, 385),
         (1000, 999), (480, 640), (639, 384), (1200, 1600), (100, 1000), (31, 31), (2000, 2001)]


@pytest.mark.parametrize("h,w", SIZES)
def test_synthetic_sizes_match_hf(ours, hf, h, w):
    for seed, img in enumerate((noise(h, w, seed=h * w), smooth(h, w, seed=h))):
        check(ours, hf, Image.fromarray(img))


def _modes(base):
    rgb = Image.fromarray(base)
    alpha = np.linspace(0, 255, base.shape[0] * base.shape[1]).reshape(base.shape[:2]).astype(np.uint8)
    rgba = np.dstack([base, alpha])
    p_trans = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p_trans.info["transparency"] = 5
    rgb_trans = rgb.copy()
    rgb_trans.info["transparency"] = tuple(int(v) for v in base[0, 0])
    la = Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]]))
    i16 = Image.fromarray(base[..., 0].astype(np.uint16) * 257)
    i16_low = Image.fromarray(base[..., 1].astype(np.uint16))
    return {
        "L": rgb.convert("L"), "1": rgb.convert("1"), "RGBA": Image.fromarray(rgba), "P": rgb.convert("P"),
        "P+transparency": p_trans, "RGB+transparency": rgb_trans, "LA": la, "PA": p_trans.convert("PA"),
        "I;16": i16, "I;16 (0..255)": i16_low, "I": rgb.convert("I"), "F": rgb.convert("F"),
        "CMYK": rgb.convert("CMYK"), "YCbCr": rgb.convert("YCbCr"), "LAB": rgb.convert("LAB"),
        "HSV": rgb.convert("HSV"), "RGBX": rgb.convert("RGBX"),
    }


MODES = list(_modes(smooth(8, 8)))


@pytest.mark.parametrize("mode", MODES)
def test_pil_modes_match_hf(ours, hf, mode):
    im = _modes(smooth(300, 451, seed=3))[mode]
    check(ours, hf, im)


def test_without_rgb_conversion_matches_hfs_default(hf):
    """do_convert_rgb=False is HF's unset default: raw bands of 3-band modes, refusal of the rest."""
    plain = ViltImageProcessor(do_convert_rgb=False)
    base = smooth(200, 300)
    for im in (Image.fromarray(base), Image.fromarray(base).convert("YCbCr"), base):
        assert_same(plain(im), hf_run(hf, im))
    for im in (Image.fromarray(base).convert("L"), Image.fromarray(base).convert("RGBA"), base[..., :1]):
        with pytest.raises(InputError, match="do_convert_rgb=False"):
            plain(im)
        with pytest.raises(ValueError):
            hf_run(hf, im)


def test_numpy_inputs_match_hf(ours, hf):
    base = smooth(211, 317)
    rgba = np.dstack([base, noise(211, 317, 0, seed=1)])
    cases = [base, np.ascontiguousarray(base.transpose(2, 0, 1)), base[..., :1], rgba, base[::2, ::3],
             base.astype(np.float32), base.astype(np.float64), base.astype(np.uint16), base.astype(np.int32),
             rgba.astype(np.float64) / 255, base.astype(np.float32) / 255, base.astype(np.float16) / 255,
             np.ascontiguousarray(rgba.transpose(2, 0, 1))]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the double-rescale warning for [0, 1] floats
        for a in cases:
            assert_same(ours(a), hf_run(hf, a, do_convert_rgb=True))
        # a 4-D array is a batch, as in HF
        stack = np.stack([base, base[::-1]])
        assert_same(ours(stack), hf_run(hf, stack, do_convert_rgb=True))
    # HW grayscale: HF refuses 2-D arrays; ours equals HF's answer for the (H, W, 1) array
    assert_same(ours(base[..., 0]), hf_run(hf, base[..., :1], do_convert_rgb=True))


def test_unit_float_inputs_warn_about_hfs_double_rescale(ours, hf):
    a = smooth(64, 96).astype(np.float32) / 255
    with pytest.warns(UserWarning, match="rescaled twice"):
        out = ours(a)
    assert_same(out, hf_run(hf, a))
    assert out["pixel_values"].max() < -0.99  # as in HF: the pixels end up near -1
    assert_same(ViltImageProcessor(do_rescale=False)(a), hf_run(hf, a, do_rescale=False))


def test_channel_layout_override(ours):
    a = noise(3, 5, 3)  # (3, 5, 3): HF's rule reads it as CHW (3 channels of 5x3)
    chw = ours(a)
    hwc = ours(a, input_data_format="channels_last")
    assert chw["pixel_values"].shape != hwc["pixel_values"].shape
    assert_same(hwc, ours(Image.fromarray(a)))


def test_files_match_hf(ours, hf, tmp_path):
    base = smooth(240, 320, seed=5)
    modes = _modes(base)
    files = {
        "rgb.jpg": (Image.fromarray(base), {"quality": 90}),
        "gray.jpg": (modes["L"], {}),
        "cmyk.jpg": (modes["CMYK"], {}),
        "rgb.png": (Image.fromarray(base), {}),
        "rgba.png": (modes["RGBA"], {}),
        "p.png": (modes["P"], {}),
        "p_trans.png": (modes["P+transparency"], {}),
        "rgb_trans.png": (modes["RGB+transparency"], {}),
        "la.png": (modes["LA"], {}),
        "i16.png": (modes["I;16"], {}),
        "bilevel.png": (modes["1"], {}),
        "anim.gif": (modes["P"], {"save_all": True, "append_images": [Image.fromarray(base[::-1]).convert("P")]}),
        "multi.tiff": (Image.fromarray(base), {"save_all": True, "append_images": [Image.fromarray(base[::-1])]}),
    }
    for fname, (im, kw) in files.items():
        path = tmp_path / fname
        im.save(path, **kw)
        ref = hf_run(hf, str(path), do_convert_rgb=True)
        assert_same(ours(path), ref)  # a Path
        assert_same(ours(str(path)), ref)  # a str
        assert_same(ours(path.read_bytes()), ref)  # the encoded bytes
    # HF's own default on RGB files (load_image converts to RGB already)
    assert_same(ours(tmp_path / "rgb.jpg"), hf_run(hf, str(tmp_path / "rgb.jpg")))


@pytest.mark.parametrize("orientation", [2, 3, 4, 5, 6, 7, 8])
def test_exif_rotated_jpegs_match_hf(ours, hf, tmp_path, orientation):
    """HF applies EXIF orientation to files (load_image), not to PIL images passed in: so do we."""
    base = smooth(120, 200, seed=orientation)
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(base).save(path, exif=exif, quality=95)
    out = ours(path)
    assert_same(out, hf_run(hf, str(path), do_convert_rgb=True))
    transposed = orientation in (5, 6, 7, 8)
    h, w = out["pixel_values"].shape[2:]
    assert (h > w) == transposed  # the 200x120 landscape becomes portrait when rotated by 90 degrees
    with Image.open(path) as im:  # a PIL image: no EXIF rotation, in HF and here
        assert_same(ours(im), hf_run(hf, im, do_convert_rgb=True))
        assert ours(im)["pixel_values"].shape[2] < ours(im)["pixel_values"].shape[3]


def test_mixed_batch_padding_matches_hf(ours, hf, tmp_path):
    path = tmp_path / "x.png"
    Image.fromarray(smooth(500, 90, seed=9)).save(path)
    batch = [Image.fromarray(smooth(300, 451)), noise(40, 40), Image.fromarray(smooth(200, 3000, seed=2)),
             Image.fromarray(smooth(640, 480, seed=3)).convert("L"), str(path), noise(3000, 200, seed=4)]
    out = ours(batch)
    ref = hf_run(hf, batch, do_convert_rgb=True)
    assert_same(out, ref)
    pv, mask = out["pixel_values"], out["pixel_mask"]
    assert pv.shape[0] == len(batch) and mask.shape == (len(batch),) + pv.shape[2:]
    for b in range(len(batch)):
        h, w = ours(batch[b])["pixel_values"].shape[2:]
        assert mask[b, :h, :w].all() and mask[b].sum() == h * w
        assert not pv[b][:, mask[b] == 0].any()  # zeros in the padding
    # a list of lists is flattened, as HF does (NLVR2 pairs)
    assert_same(ours([batch[:2], batch[2:4]]), hf_run(hf, [batch[:2], batch[2:4]], do_convert_rgb=True))
    # threads give the same answer
    assert_same(ViltImageProcessor(num_threads=3)(batch), ref)


@pytest.mark.parametrize("settings", [
    {"do_resize": False}, {"do_rescale": False}, {"do_normalize": False}, {"do_rescale": False, "do_normalize": False},
    {"size": {"shortest_edge": 224}, "size_divisor": 16}, {"resample": 2}, {"resample": 0}, {"resample": 1},
    {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}, {"rescale_factor": 1 / 127.5},
    {"image_mean": 0.3, "image_std": 0.7}, {"size": 800},
])
def test_other_settings_match_hf(hf, settings):
    ours = ViltImageProcessor(**settings)
    ref = ViltImageProcessorPil(**{"image_mean": [0.5] * 3, "image_std": [0.5] * 3, **settings})
    batch = [Image.fromarray(smooth(300, 451)), noise(100, 61), Image.fromarray(noise(64, 64)).convert("LA")]
    if settings.get("do_resize") is False:
        batch.append(smooth(100, 61).astype(np.float32) / 255)
        batch.append(smooth(70, 80).astype(np.float64))
    assert_same(ours(batch), hf_run(ref, batch, do_convert_rgb=True))


def test_unpadded_output(hf):
    ours = ViltImageProcessor(do_pad=False)
    same = [noise(300, 451), noise(300, 452, seed=1)]  # both resize to 384x576
    out = ours(same)
    assert "pixel_mask" not in out
    assert_same(out, hf_run(hf, same, do_pad=False))
    with pytest.raises(InputError, match="do_pad=False"):
        ours([noise(300, 451), noise(40, 40)])
    lists = ours([noise(300, 451), noise(40, 40)], return_tensors=None)["pixel_values"]
    assert [a.shape for a in lists] == [(3, 384, 576), (3, 384, 384)]
    padded = ViltImageProcessor()([noise(300, 451), noise(40, 40)], return_tensors=None)
    assert len(padded["pixel_values"]) == len(padded["pixel_mask"]) == 2


# ------------------------------------------------------------------------------------ config files

def test_reads_hfs_saved_config_and_hf_reads_ours(tmp_path):
    hf_folder, our_folder = tmp_path / "hf", tmp_path / "ours"
    ViltImageProcessorPil(image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4], size={"shortest_edge": 320},
                          resample=2, size_divisor=16).save_pretrained(hf_folder)
    ours = ViltImageProcessor.from_pretrained(hf_folder)
    assert ours.size == {"shortest_edge": 320} and ours.resample == 2 and ours.size_divisor == 16
    assert ours.image_mean == [0.4, 0.5, 0.6]
    ours.save_pretrained(our_folder)
    back = ViltImageProcessorPil.from_pretrained(our_folder)
    img = [Image.fromarray(smooth(300, 451)), Image.fromarray(noise(50, 700)).convert("P")]
    assert_same(ours(img), hf_run(back, img))  # our file turns on do_convert_rgb for HF too
    assert_same(ViltImageProcessor.from_pretrained(our_folder)(img), hf_run(back, img))
    assert ViltImageProcessor.from_pretrained(our_folder / "preprocessor_config.json").to_dict() == ours.to_dict()


def test_legacy_and_default_configs(tmp_path, hf):
    legacy = {"do_normalize": True, "do_resize": True, "feature_extractor_type": "ViltFeatureExtractor",
              "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3, "size": 384,
              "size_divisor": 32, "max_size": 1333, "pad_and_return_pixel_mask": True}
    (tmp_path / "preprocessor_config.json").write_text(json.dumps(legacy))
    ours = ViltImageProcessor.from_pretrained(tmp_path)
    ref = ViltImageProcessorPil.from_pretrained(tmp_path)
    img = Image.fromarray(smooth(300, 451))
    assert_same(ours(img), hf_run(ref, img))
    assert ours.extra["feature_extractor_type"] == "ViltFeatureExtractor"  # kept on save
    empty = tmp_path / "empty"
    empty.mkdir()
    for p in (ViltImageProcessor.from_pretrained(empty), ViltImageProcessor(),
              ViltImageProcessor.from_pretrained("dandelin/vilt-b32-finetuned-vqa")):
        assert_same(p(img), hf_run(hf, img))
    assert ViltImageProcessor.from_pretrained(empty, size=200).size == {"shortest_edge": 200}


def test_bad_configs(tmp_path):
    with pytest.raises(ArtifactError, match="no folder"):
        ViltImageProcessor.from_pretrained(tmp_path / "missing")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        ViltImageProcessor.from_pretrained(bad)
    for cfg, match in (({"size": {"height": 384, "width": 384}}, "shortest_edge"),
                       ({"image_mean": [0.5, 0.5]}, "image_mean"), ({"image_std": [0.5, 0.0, 0.5]}, "image_std"),
                       ({"resample": 9}, "resample"),
                       ({"size_divisor": 0}, "size_divisor"), ({"do_pad": "yes"}, "do_pad"), ([1, 2], "JSON object"),
                       ({"image_processor_type": "CLIPImageProcessor"}, "not a ViLT")):
        (bad / "preprocessor_config.json").write_text(json.dumps(cfg))
        with pytest.raises(ConfigError, match=match):
            ViltImageProcessor.from_pretrained(bad)
    assert ViltImageProcessor(resample="bilinear").resample == 2


# ------------------------------------------------------------------------------------- bad inputs

def test_bad_files_are_input_errors(ours, tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG")
    buf = io.BytesIO()
    Image.fromarray(smooth(200, 300)).save(buf, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    cases = [(text, "not an image file"), (truncated, "truncated or corrupt"),
             (tmp_path / "missing.jpg", "no such file"), (tmp_path, "directory"), (empty, "not an image file"),
             ("https://example.com/cat.jpg", "URL"),
             (b"\x89PNG garbage", "not an image file"), ("data:image/png;base64,@@@", "base64")]
    for bad, match in cases:
        with pytest.raises(InputError, match=match) as e:
            ours(bad)
        assert "images" in str(e.value)
        if isinstance(bad, Path):
            assert bad.name in str(e.value)
    with pytest.raises(InputError, match=r"images\[1\].*cut.jpg"):  # the batch position is named
        ours([Image.fromarray(noise(50, 50)), truncated])
    with Image.open(truncated) as lazy:  # a lazily opened PIL image that fails to decode
        with pytest.raises(InputError, match="truncated or corrupt"):
            ours(lazy)


def test_huge_images_are_refused_before_decoding(ours, tmp_path):
    big = tmp_path / "big.png"  # 12000 x 12000 = 144M pixels: over MAX_PIXELS, past Pillow's warning
    big.write_bytes(png_bytes(12000, 12000))
    huge = tmp_path / "huge.png"  # 50000 x 50000 = 2.5G pixels: past Pillow's decompression-bomb error
    huge.write_bytes(png_bytes(50000, 50000, full=False))
    assert big.stat().st_size < 100_000
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning escapes
        for path in (big, huge):
            with pytest.raises(InputError, match=path.name) as e:
                ours(path)
            assert "pixels" in str(e.value)
        with pytest.raises(InputError, match="limit"):
            imgs.load_image(big, "big")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # our own Image.open here
        lazy = Image.open(big)
    with lazy:  # a lazily opened PIL image: refused before its pixels are read
        with pytest.raises(InputError, match="144,000,000 pixels"):
            ours(lazy)
        assert lazy._im is None  # still not decoded
    # the limit is adjustable, per processor and module-wide
    with pytest.raises(InputError, match="limit of 1,000"):
        ViltImageProcessor(max_pixels=1000)(noise(40, 40))
    old = imgs.MAX_PIXELS
    try:
        imgs.MAX_PIXELS = 1500
        with pytest.raises(InputError, match="limit of 1,500"):
            ours(noise(40, 40))
    finally:
        imgs.MAX_PIXELS = old
    ours(noise(40, 40))


def test_huge_image_refusal_allocates_nothing(tmp_path):
    """In a fresh interpreter: refusing a 144M-pixel PNG must not decode it (>= 144 MB as 8-bit)."""
    big = tmp_path / "big.png"
    big.write_bytes(png_bytes(12000, 12000))
    code = (
        "import resource, sys\n"
        "from vlexport.families.vilt.image_processor import ViltImageProcessor\n"
        "from vlexport.errors import InputError\n"
        "p = ViltImageProcessor()\n"
        "p(__import__('numpy').zeros((64, 64, 3), 'uint8'))\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "for _ in range(3):\n"
        "    try:\n"
        "        p(sys.argv[1]); print('LOADED')\n"
        "    except InputError as e:\n"
        "        pass\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print((after - before) // 1024)\n"  # KiB on Linux -> MiB
    )
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code, str(big)], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "LOADED" not in r.stdout
    grew_mib = int(r.stdout.split()[-1])
    assert grew_mib < 40, f"peak RSS grew by {grew_mib} MiB while refusing the image"


def test_too_small_images_are_input_errors(ours):
    with pytest.raises(InputError, match=r"resizes to 608x0.*32-pixel patch"):
        ours(noise(20, 3000))  # 3000 wide, 20 tall: the short side ends below one patch
    with pytest.raises(InputError, match="smaller than one 32-pixel patch"):
        ViltImageProcessor(do_resize=False)(noise(20, 20))
    ViltImageProcessor(do_resize=False)(noise(32, 40))
    with pytest.raises(InputError, match="at least 1"):
        ours(np.zeros((0, 10, 3), np.uint8))
    with pytest.raises(InputError, match="at least 16"):
        imgs.load_image(noise(10, 40), "tiny", min_size=16)


def test_bad_arrays_are_input_errors(ours):
    nan = smooth(50, 50).astype(np.float32)
    nan[3, 4, 1] = np.nan
    inf = smooth(50, 50).astype(np.float64) / 255
    inf[0, 0, 0] = np.inf
    cases = [
        (noise(50, 60, 2), "channel"), (noise(50, 60, 5), "channel"), (np.zeros((5, 50, 60), np.uint8), "channel"),
        (np.zeros((50, 60, 3), bool), "not an image array"), (np.zeros((50, 60, 3), complex), "not an image array"),
        (np.array([["a"]]), "not an image array"), (np.zeros(50, np.uint8), "dimensions"),
        (np.zeros((1, 2, 50, 60, 3), np.uint8), "dimensions"), (nan, "NaN"), (inf, "infinity"),
        (smooth(50, 50).astype(np.float32) - 100.5, r"\[0, 1\]"), (smooth(50, 50).astype(np.uint16) * 300, "0..255"),
        (np.full((50, 50, 4), 2.5), r"\[0, 1\]"), (None, "not an image"), (42, "not an image"),
        ({"a": 1}, "not an image"),
    ]
    for bad, match in cases:
        with pytest.raises(InputError, match=match) as e:
            ours(bad)
        assert str(e.value).startswith("images")
    with pytest.raises(InputError, match=r"images\[2\]"):
        ours([noise(50, 50), noise(60, 60), noise(50, 60, 2)])
    with pytest.raises(InputError, match="no images"):
        ours([])
    with pytest.raises(InputError, match="return_tensors"):
        ours(noise(50, 50), return_tensors="pt")
    closed = Image.fromarray(noise(50, 50))
    closed.close()
    with pytest.raises(InputError):
        ours(closed)


# ------------------------------------------------------------------------------------------ misc

def test_no_torch_import():
    code = ("import sys\n"
            "import vlexport.processing.images, vlexport.families.vilt.image_processor as m\n"
            "m.ViltImageProcessor()(__import__('numpy').zeros((64, 80, 3), 'uint8'))\n"
            "bad = [k for k in ('torch', 'transformers', 'torchvision') if k in sys.modules]\n"
            "print('IMPORTED', bad) if bad else print('OK')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK", r.stdout


def test_thread_safe(ours):
    batches = [[noise(100 + 7 * i, 150 + 11 * i, seed=i), Image.fromarray(smooth(80, 300, seed=i)).convert("L")]
               for i in range(6)]
    expected = [ours(b)["pixel_values"] for b in batches]
    results, errors = {}, []

    def work(i):
        try:
            for _ in range(3):
                results[i] = ours(batches[i])["pixel_values"]
        except Exception as e:  # pragma: no cover
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(batches))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for i, e in enumerate(expected):
        np.testing.assert_array_equal(results[i], e)


def test_load_image_helper():
    """The generic loader any family can reuse: RGB PIL images from every kind of input."""
    base = smooth(30, 40)
    for x in (base, base[..., 0], Image.fromarray(base).convert("P"), base.astype(np.float32) / 255,
              np.dstack([base, np.full((30, 40), 255, np.uint8)])):
        im = imgs.load_image(x, "x")
        assert im.mode == "RGB" and im.size == (40, 30)
    opaque = np.dstack([base, np.full((30, 40), 255, np.uint8)])
    np.testing.assert_array_equal(np.asarray(imgs.load_image(opaque)), base)  # opaque alpha composites to itself
    out, mask = imgs.pad_batch([np.ones((3, 2, 5), np.float32), np.ones((3, 4, 1), np.float32)])
    assert out.shape == (2, 3, 4, 5) and mask.dtype == np.int64 and mask.sum() == 10 + 4


def test_zz_max_difference_over_all_comparisons():
    """Runs last: the largest |ours - HF| of pixel_values seen by the comparisons above (printed with -s)."""
    if not DIFFS:
        pytest.skip("no comparison ran in this session (test selection)")
    print(f"\n{len(DIFFS)} comparisons with HF, max |pixel_values diff| = {max(DIFFS):.3g}")
    assert max(DIFFS) <= TOL
