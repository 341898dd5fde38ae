"""The torch-free ViT / DeiT / CLIP image processors against transformers' PIL backend (the oracle).

Each comparison builds both processors from the same preprocessor_config.json (ours with
`image_processor_from_pretrained`, HF's with `AutoImageProcessor.from_pretrained`, which gives the
`...Pil` classes here: no torchvision) and requires identical shapes and max |pixel_values diff|
<= 1e-5 (in practice 0: bit for bit). Inputs: real photographs (skimage.data, matplotlib's
grace_hopper.jpg; skipped with the reason when missing), synthetic images of many sizes and aspect
ratios (1x1, 1xN, smaller than the crop, very wide), every PIL mode, numpy arrays, files, an
EXIF-rotated JPEG. HF's ViT and DeiT leave `do_convert_rgb` unset and then raise on non-RGB inputs:
HF is called with `do_convert_rgb=True` (ours converts by default; see the module docstring), and
RGB inputs are also compared against HF's own default.
"""

from __future__ import annotations

import io
import json
import os
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.processing import vit_images as vi
from vlexport.processing.vit_images import (
    IMAGE_PROCESSORS, BeitImageProcessor, CLIPImageProcessor, DeiTImageProcessor, ViTImageProcessor,
    image_processor_from_pretrained)

transformers = pytest.importorskip("transformers")
from transformers import AutoImageProcessor  # noqa: E402
from transformers import image_transforms as hf_tf  # noqa: E402
from transformers.models.beit.image_processing_pil_beit import BeitImageProcessorPil  # noqa: E402
from transformers.image_utils import get_image_size_for_max_height_width  # noqa: E402
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402
from transformers.models.deit.image_processing_pil_deit import DeiTImageProcessorPil  # noqa: E402
from transformers.models.vit.image_processing_pil_vit import ViTImageProcessorPil  # noqa: E402

transformers.logging.set_verbosity_error()  # HF logs "channel dimension is ambiguous" for 1xN arrays
TOL = 1e-5
WORST: dict[str, list[float]] = {}  # processor class -> every comparison's max |diff|, reported last
REPO = Path(__file__).resolve().parents[1]
HF_CLASSES = {"ViTImageProcessor": ViTImageProcessorPil, "DeiTImageProcessor": DeiTImageProcessorPil,
              "CLIPImageProcessor": CLIPImageProcessorPil, "BeitImageProcessor": BeitImageProcessorPil}
IMAGENET_DEFAULT = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
CLIP_STATS = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}

CONFIGS = {  # name -> preprocessor_config.json
    "vit": {"image_processor_type": "ViTImageProcessor"},  # the class defaults
    "deit": {"feature_extractor_type": "DeiTFeatureExtractor", "crop_size": 224, "do_center_crop": True,
             "do_normalize": True, "do_resize": True, "resample": 3, "size": 256, **IMAGENET_DEFAULT},  # facebook/deit
    "clip": {"feature_extractor_type": "CLIPFeatureExtractor", "crop_size": 224, "do_center_crop": True,
             "do_normalize": True, "do_resize": True, "resample": 3, "size": 224, **CLIP_STATS},  # openai/clip-*
    "vit-384": {"image_processor_type": "ViTImageProcessor", "size": {"height": 384, "width": 384}, "resample": 3,
                "do_center_crop": False, **IMAGENET_DEFAULT},  # TrOCR-like
    "clip-pad": {"image_processor_type": "CLIPImageProcessorFast", "size": {"shortest_edge": 200},
                 "crop_size": {"height": 225, "width": 251}, "resample": 2, "image_mean": 0.4, "image_std": 0.3},
    # microsoft/beit-base-patch16-224 as transformers' conversion script saves it (224 bilinear, no crop)
    "beit": {"feature_extractor_type": "BeitFeatureExtractor", "crop_size": 224, "do_center_crop": False,
             "do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
             "reduce_labels": False, "resample": 2, "size": 224},
    "deit-nocrop": {"image_processor_type": "DeiTImageProcessorPil", "size": [200, 300], "do_center_crop": False,
                    "do_rescale": False, "processor_class": "SomeProcessor"},
}


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """name -> (ours, HF's), both read from the same folder."""
    cache = {}

    def get(name):
        if name not in cache:
            folder = tmp_path_factory.mktemp(name)
            (folder / "preprocessor_config.json").write_text(json.dumps(CONFIGS[name]))
            cache[name] = (image_processor_from_pretrained(folder), AutoImageProcessor.from_pretrained(folder))
        return cache[name]
    return get


def hf_run(proc, images, convert=True, **kw):
    images = [str(x) if isinstance(x, Path) else x for x in images] if isinstance(images, list) else (
        str(images) if isinstance(images, Path) else images)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return proc(images, return_tensors="np", **({"do_convert_rgb": True} if convert else {}), **kw)


def assert_same(a, b, key):
    pa, pb = a["pixel_values"], np.asarray(b["pixel_values"])
    assert pa.dtype == np.float32 and pa.shape == pb.shape, (pa.shape, pb.shape)
    diff = float(np.abs(pa - pb.astype(np.float32)).max())
    WORST.setdefault(key, []).append(diff)
    assert diff <= TOL, diff


def check(ours, hf, images, convert=True, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # our double-rescale warning for [0, 1] floats
        out = ours(images)
    assert_same(out, hf_run(hf, images, convert, **kw), type(ours).__name__)
    return out


def noise(h, w, c=3, seed=0):
    return np.random.RandomState(seed).randint(0, 256, (h, w, c) if c else (h, w), dtype=np.uint8)


def smooth(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.random.RandomState(seed).rand(3)
    img = np.stack([255 * x / max(w - 1, 1) * r[0], 255 * y / max(h - 1, 1),
                    255 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (0.1 * (h * w + 1)))], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def photos():
    out = []
    try:
        import skimage.data as data

        for name in ("astronaut", "coffee", "chelsea", "rocket", "camera"):
            try:
                out.append((name, getattr(data, name)()))
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
    return out or [pytest.param(None, None, marks=pytest.mark.skip(
        reason="no photographs: install scikit-image (skimage.data) or matplotlib (grace_hopper.jpg)"))]


def modes(base):
    rgb = Image.fromarray(base)
    alpha = np.linspace(0, 255, base.shape[0] * base.shape[1]).reshape(base.shape[:2]).astype(np.uint8)
    rgba = np.dstack([base, alpha])
    p_trans = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
    p_trans.info["transparency"] = 5
    return {"L": rgb.convert("L"), "1": rgb.convert("1"), "RGBA": Image.fromarray(rgba), "P": rgb.convert("P"),
            "P+transparency": p_trans, "LA": Image.fromarray(np.ascontiguousarray(rgba[..., [0, 3]])),
            "I;16": Image.fromarray(base[..., 0].astype(np.uint16) * 257), "I": rgb.convert("I"),
            "F": rgb.convert("F"), "CMYK": rgb.convert("CMYK"), "YCbCr": rgb.convert("YCbCr"),
            "RGBX": rgb.convert("RGBX")}


def png_header(width, height):
    """A PNG of that size with no pixel data: refused (or not) from its header alone."""
    def chunk(tag, body):
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body) & 0xFFFFFFFF)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0))
            + chunk(b"IDAT", b"") + chunk(b"IEND", b""))


# ------------------------------------------------------------------------------------ size rules

def test_size_rules_match_hf():
    rng = np.random.RandomState(0)
    sizes = [(1, 1), (1, 5000), (5000, 1), (224, 224), (223, 225), (480, 640), (17, 2500)]
    sizes += [tuple(int(v) for v in rng.randint(1, 4000, 2)) for _ in range(300)]
    for h, w in sizes:
        chw = np.zeros((1, h, w), np.uint8)
        for s in (224, 256, 336, 1):
            assert vi.resize_output_size(h, w, {"shortest_edge": s}) == hf_tf.get_resize_output_image_size(
                chw, s, default_to_square=False, input_data_format="channels_first"), (h, w, s)
            for longest in (s + 1, 2 * s, 1333):
                assert vi.resize_output_size(h, w, {"shortest_edge": s, "longest_edge": longest}) == \
                    hf_tf.get_size_with_aspect_ratio((h, w), s, longest), (h, w, s, longest)
            assert vi.resize_output_size(h, w, {"max_height": s, "max_width": 2 * s}) == \
                get_image_size_for_max_height_width((h, w), s, 2 * s)
    idx = np.arange(1, 1 + 3 * 40 * 50, dtype=np.int64).reshape(3, 40, 50)  # distinct values: placement shows
    for h, w in ((40, 50), (7, 9), (1, 50), (40, 1), (39, 49), (12, 33)):
        for ch, cw in ((20, 30), (21, 31), (40, 50), (41, 51), (64, 64), (1, 1), (10, 60)):
            ref = hf_tf.center_crop(idx[:, :h, :w], (ch, cw), input_data_format="channels_first")
            sr, sc, dr, dc, padded = vi.crop_window(h, w, ch, cw)
            ours = np.zeros((3, ch, cw), np.int64)
            ours[:, dr, dc] = idx[:, :h, :w][:, sr, sc]
            np.testing.assert_array_equal(ours, ref, err_msg=str((h, w, ch, cw)))
            assert padded == (ch > h or cw > w)


# ---------------------------------------------------------------------------------- the oracle

@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("name,photo", photos())
def test_photographs_match_hf(pair, config, name, photo):
    ours, hf = pair(config)
    im = Image.open(photo) if isinstance(photo, Path) else Image.fromarray(photo)
    check(ours, hf, im)
    if im.mode == "RGB":  # HF's own default (ViT/DeiT: no RGB conversion) agrees on RGB images
        check(ours, hf, im, convert=False)
    check(ours, hf, photo if isinstance(photo, Path) or photo.ndim == 3 else photo[..., None])


SIZES = [(1, 1), (1, 400), (400, 1), (2, 3), (5, 7), (1, 224), (100, 150), (223, 224), (224, 224), (256, 256),
         (3000, 150), (120, 4000), (17, 2500), (333, 517), (1000, 999), (640, 480)]


@pytest.mark.parametrize("config", list(CONFIGS))
def test_synthetic_sizes_match_hf(pair, config):
    ours, hf = pair(config)
    for seed, (h, w) in enumerate(SIZES):
        images = [Image.fromarray(noise(h, w, seed=seed)), Image.fromarray(smooth(h, w, seed=seed))]
        check(ours, hf, images)


@pytest.mark.parametrize("config", ["vit", "deit", "clip", "clip-pad", "deit-nocrop", "beit"])
def test_pil_modes_match_hf(pair, config):
    ours, hf = pair(config)
    for mode, im in modes(smooth(300, 451, seed=3)).items():
        check(ours, hf, im)
    batch = list(modes(smooth(90, 60, seed=4)).values())
    check(ours, hf, batch)  # a mixed batch of every mode


@pytest.mark.parametrize("config", ["vit", "clip", "clip-pad", "deit-nocrop"])
def test_numpy_inputs_match_hf(pair, config):
    ours, hf = pair(config)
    base = smooth(211, 317)
    rgba = np.dstack([base, noise(211, 317, 0, seed=1)])
    cases = [base, np.ascontiguousarray(base.transpose(2, 0, 1)), base[..., :1], rgba, base[::2, ::3],
             base.astype(np.float32), base.astype(np.float64), base.astype(np.uint16), base.astype(np.int32),
             rgba.astype(np.float64) / 255, base.astype(np.float32) / 255, base.astype(np.float16) / 255,
             np.ascontiguousarray(rgba.transpose(2, 0, 1)), noise(1, 300), noise(300, 2)]
    for a in cases:
        check(ours, hf, a)
    check(ours, hf, np.stack([base, base[::-1]]))  # a 4-D array is a batch, as in HF
    out = ours(base[..., 0])  # HW: grayscale here, refused by HF; equals HF's answer for (H, W, 1)
    assert_same(out, hf_run(hf, base[..., :1]), type(ours).__name__)


def test_unit_floats_are_rescaled_twice_as_in_hf(pair):
    ours, hf = pair("vit")
    a = smooth(64, 96).astype(np.float32) / 255
    with pytest.warns(UserWarning, match="rescaled twice"):
        out = ours(a)
    assert_same(out, hf_run(hf, a), "ViTImageProcessor")
    assert out["pixel_values"].max() < -0.99  # as in HF: the pixels end up near -1


@pytest.mark.parametrize("config", ["deit", "clip", "vit-384"])
def test_files_match_hf(pair, tmp_path, config):
    ours, hf = pair(config)
    base = smooth(240, 320, seed=5)
    m = modes(base)
    files = {"rgb.jpg": (Image.fromarray(base), {"quality": 90}), "gray.jpg": (m["L"], {}),
             "cmyk.jpg": (m["CMYK"], {}), "rgba.png": (m["RGBA"], {}), "p_trans.png": (m["P+transparency"], {}),
             "la.png": (m["LA"], {}), "i16.png": (m["I;16"], {}), "bilevel.png": (m["1"], {}),
             "anim.gif": (m["P"], {"save_all": True, "append_images": [Image.fromarray(base[::-1]).convert("P")]})}
    for fname, (im, kw) in files.items():
        path = tmp_path / fname
        im.save(path, **kw)
        ref = hf_run(hf, str(path))
        for x in (path, str(path), path.read_bytes()):  # a Path, a str, the encoded bytes
            assert_same(ours(x), ref, type(ours).__name__)
    assert_same(ours(tmp_path / "rgb.jpg"), hf_run(hf, str(tmp_path / "rgb.jpg"), convert=False),
                type(ours).__name__)
    batch = [tmp_path / "rgb.jpg", Image.fromarray(noise(50, 700)), str(tmp_path / "la.png"), noise(30, 40)]
    check(ours, hf, batch)  # a mixed batch of kinds


@pytest.mark.parametrize("config", ["vit", "clip"])
def test_exif_rotated_jpeg_matches_hf(pair, tmp_path, config):
    """HF applies EXIF orientation to files (load_image), not to PIL images passed in: so do we."""
    ours, hf = pair(config)
    base = smooth(120, 300, seed=1)  # landscape; a crop of the rotated one differs from the unrotated one
    for orientation in (3, 6, 8):
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.jpg"
        Image.fromarray(base).save(path, exif=exif, quality=95)
        rotated = check(ours, hf, path)["pixel_values"]
        with Image.open(path) as im:
            plain = check(ours, hf, im)["pixel_values"]
        assert rotated.shape == plain.shape and not np.array_equal(rotated, plain)


@pytest.mark.parametrize("cls,settings", [
    ("DeiTImageProcessor", {"do_resize": False}),  # crop pads small images
    ("CLIPImageProcessor", {"do_resize": False, "crop_size": {"height": 64, "width": 120}}),
    ("CLIPImageProcessor", {"do_rescale": False}), ("CLIPImageProcessor", {"do_normalize": False}),
    ("ViTImageProcessor", {"do_rescale": False, "do_normalize": False}),
    ("ViTImageProcessor", {"resample": 0}), ("ViTImageProcessor", {"resample": 1}),
    ("ViTImageProcessor", {"resample": 4}), ("ViTImageProcessor", {"resample": 5}),
    ("ViTImageProcessor", {"size": 160, "do_center_crop": True, "crop_size": [100, 120]}),
    ("ViTImageProcessor", {"size": 300, "default_to_square": False, "do_center_crop": True, "crop_size": 256}),
    ("CLIPImageProcessor", {"size": {"shortest_edge": 180, "longest_edge": 260}, "crop_size": 200}),
    ("CLIPImageProcessor", {"size": {"max_height": 150, "max_width": 260}, "crop_size": [140, 90]}),
    ("CLIPImageProcessor", {"rescale_factor": 1 / 127.5, "image_mean": 1.0, "image_std": 1.0}),
    ("CLIPImageProcessor", {"use_square_size": True, "size": {"shortest_edge": 300}}),  # HF: 224x224 anyway
])
def test_other_settings_match_hf(cls, settings, tmp_path):
    folder = tmp_path / "cfg"
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": cls, **settings}))
    ours, hf = image_processor_from_pretrained(folder), HF_CLASSES[cls].from_pretrained(folder)
    batch = [Image.fromarray(smooth(300, 451)), noise(100, 61), Image.fromarray(noise(64, 64)).convert("LA"),
             noise(9, 700), noise(40, 40)]
    if settings.get("do_resize") is False:
        batch += [smooth(100, 61).astype(np.float32) / 255, smooth(70, 80).astype(np.float64), noise(5, 300).astype(
            np.uint16), smooth(30, 500).astype(np.float16) / 255]
    check(ours, hf, batch)


def test_unstacked_sizes():
    """Without a crop or a fixed size the outputs differ in size: HF cannot stack them, nor can we."""
    ours, hf = CLIPImageProcessor(do_center_crop=False), CLIPImageProcessorPil(do_center_crop=False)
    batch = [noise(300, 451), noise(40, 40)]
    with pytest.raises(InputError, match="return_tensors=None"):
        ours(batch)
    lists = ours(batch, return_tensors=None)["pixel_values"]
    ref = hf(batch, do_convert_rgb=True)["pixel_values"]
    assert [a.shape for a in lists] == [(3, 224, 336), (3, 224, 224)]
    for a, b in zip(lists, ref):
        assert_same({"pixel_values": a}, {"pixel_values": b}, "CLIPImageProcessor")


def test_return_tensors_pt():
    torch = pytest.importorskip("torch")
    x = [noise(50, 60), noise(70, 20)]
    out = CLIPImageProcessor()(x, return_tensors="pt")["pixel_values"]
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32
    np.testing.assert_array_equal(out.numpy(), CLIPImageProcessor()(x)["pixel_values"])


# ------------------------------------------------------------------------------------ config files

@pytest.mark.parametrize("config", list(CONFIGS))
def test_save_pretrained_round_trips_through_hf(pair, tmp_path, config):
    ours, _ = pair(config)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "preprocessor_config.json").read_text())
    kind = vi.hf_class_name(CONFIGS[config])
    assert saved["image_processor_type"] == kind
    back = AutoImageProcessor.from_pretrained(tmp_path)
    assert type(back) is HF_CLASSES[kind]
    assert dict(back.size) == ours.size and int(back.resample) == ours.resample
    assert bool(back.do_center_crop) == ours.do_center_crop and back.do_convert_rgb is True
    if ours.do_center_crop:
        assert dict(back.crop_size) == ours.crop_size
    for k in ("do_resize", "do_rescale", "rescale_factor", "do_normalize"):
        assert getattr(back, k) == getattr(ours, k), k
    assert list(back.image_mean) == ours.image_mean and list(back.image_std) == ours.image_std
    img = [Image.fromarray(smooth(300, 451)), Image.fromarray(noise(50, 700)).convert("P")]
    check(ours, back, img, convert=False)  # our file turns RGB conversion on for HF too
    again = image_processor_from_pretrained(tmp_path)
    assert type(again) is type(ours) and again.to_dict() == ours.to_dict()
    if "processor_class" in CONFIGS[config]:
        assert saved["processor_class"] == "SomeProcessor"  # keys we do not read are kept


@pytest.mark.parametrize("kind", list(HF_CLASSES))
def test_reads_hfs_saved_configs(tmp_path, kind):
    hf = HF_CLASSES[kind](size={"height": 320, "width": 288}, resample=1, crop_size={"height": 200, "width": 210},
                          do_center_crop=True, image_mean=[0.4, 0.5, 0.6], image_std=[0.2, 0.3, 0.4])
    hf.save_pretrained(tmp_path)
    ours = image_processor_from_pretrained(tmp_path)
    assert type(ours).__name__ == kind and ours.size == {"height": 320, "width": 288}
    assert ours.crop_size == {"height": 200, "width": 210} and ours.resample == 1
    check(ours, hf, [Image.fromarray(smooth(300, 451)), noise(10, 500)])
    defaults = HF_CLASSES[kind]()
    check(IMAGE_PROCESSORS[kind](), defaults, [Image.fromarray(smooth(200, 100)), noise(150, 150)])


def test_dispatch(tmp_path):
    def folder_with(d, name):
        f = tmp_path / name
        f.mkdir()
        (f / "preprocessor_config.json").write_text(json.dumps(d))
        return f

    for kind, cls in (("ViTImageProcessor", ViTImageProcessor), ("ViTImageProcessorPil", ViTImageProcessor),
                      ("DeiTImageProcessorFast", DeiTImageProcessor), ("CLIPImageProcessor", CLIPImageProcessor)):
        assert type(image_processor_from_pretrained(folder_with({"image_processor_type": kind}, kind))) is cls
    legacy = folder_with({"feature_extractor_type": "CLIPFeatureExtractor", "size": 224}, "legacy")
    assert type(image_processor_from_pretrained(legacy)) is CLIPImageProcessor
    assert image_processor_from_pretrained(legacy).size == {"shortest_edge": 224}  # CLIP: an int is the short side
    untyped = folder_with({"size": 300}, "untyped")
    assert image_processor_from_pretrained(untyped).size == {"height": 300, "width": 300}
    assert image_processor_from_pretrained(untyped, default="CLIPImageProcessor").size == {"shortest_edge": 300}
    empty = tmp_path / "empty"
    empty.mkdir()
    for default, cls in (("ViTImageProcessor", ViTImageProcessor), ("DeiTImageProcessorPil", DeiTImageProcessor)):
        p = image_processor_from_pretrained(empty, default=default)
        assert type(p) is cls and p.to_dict() == cls().to_dict()
    assert image_processor_from_pretrained(empty, max_pixels=10).max_pixels == 10
    file = folder_with({"image_processor_type": "ConvNextImageProcessor"}, "convnext") / "preprocessor_config.json"
    with pytest.raises(ConfigError, match=r"convnext/preprocessor_config.json.*ConvNextImageProcessor"):
        image_processor_from_pretrained(file.parent)
    with pytest.raises(ConfigError, match="ConvNextImageProcessor"):
        image_processor_from_pretrained(file)  # the file itself
    beit = image_processor_from_pretrained(folder_with({"image_processor_type": "BeitImageProcessor",
                                                        "do_reduce_labels": True}, "beit"))
    assert type(beit) is BeitImageProcessor and beit.resample == 3 and beit.extra == {"do_reduce_labels": True}
    with pytest.raises(ArtifactError, match="no folder"):
        image_processor_from_pretrained(tmp_path / "missing")
    with pytest.raises(ConfigError, match="default must be one of"):
        image_processor_from_pretrained(empty, default="Nope")
    with pytest.raises(ConfigError, match="not 'ViTImageProcessor'"):
        ViTImageProcessor.from_pretrained(legacy)
    assert ViTImageProcessor.from_pretrained(untyped).size == {"height": 300, "width": 300}


def test_bad_configs(tmp_path):
    (tmp_path / "preprocessor_config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="preprocessor_config.json"):
        image_processor_from_pretrained(tmp_path)
    for cfg, match in (
            ({"size": {"longest_edge": 300}}, "size must have the keys"),
            ({"size": {"height": 0, "width": 5}}, "positive"),
            ({"size": 224.0}, "size must be"), ({"size": [224]}, "size must be"),
            ({"do_center_crop": True, "crop_size": {"shortest_edge": 224}}, "crop_size must have"),
            ({"do_center_crop": True}, "crop_size is not set"), ({"image_mean": [0.5, 0.5]}, "image_mean"),
            ({"image_std": [0.5, 0.0, 0.5]}, "image_std"), ({"image_mean": ["a", 1, 2]}, "image_mean"),
            ({"resample": 9}, "resample"), ({"do_resize": "yes"}, "do_resize"),
            ({"rescale_factor": float("nan")}, "rescale_factor"), ({"do_convert_rgb": 1}, "do_convert_rgb"),
            ({"do_pad": True, "pad_size": {"height": 300, "width": 300}}, "do_pad"), ([1, 2], "JSON object")):
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(cfg))
        with pytest.raises(ConfigError, match=match) as e:
            image_processor_from_pretrained(tmp_path)
        assert "preprocessor_config.json" in str(e.value)
    assert ViTImageProcessor(resample="bicubic").resample == 3
    with pytest.raises(ConfigError, match="num_threads"):
        CLIPImageProcessor(num_threads=0)


# ------------------------------------------------------------------------------------- bad inputs

def test_bad_inputs_are_input_errors(tmp_path):
    ours = CLIPImageProcessor()
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a JPEG")
    buf = io.BytesIO()
    Image.fromarray(smooth(200, 300)).save(buf, "JPEG")
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    big = tmp_path / "big.png"
    big.write_bytes(png_header(12000, 12000))  # 144M pixels: over MAX_PIXELS, refused from the header
    nan = smooth(50, 50).astype(np.float32)
    nan[3, 4, 1] = np.nan
    cases = [(text, "not an image file"), (truncated, "truncated or corrupt"),
             (str(tmp_path / "missing.jpg"), "no such file"), (tmp_path, "directory"), (big, "144,000,000 pixels"),
             (noise(50, 60, 2), "channel"), (noise(50, 60, 5), "channel"), (np.zeros((5, 50, 60), np.uint8), "channel"),
             (np.zeros((50, 60, 3), bool), "not an image"), (nan, "NaN"), (np.full((50, 50, 3), np.inf), "infinity"),
             (smooth(50, 50).astype(np.float32) - 100.5, r"\[0, 1\]"),
             (smooth(50, 50).astype(np.uint16) * 300, "0..255"), (np.zeros(50, np.uint8), "dimensions"),
             (None, "not an image"), (42, "not an image"),
             # 5000 tall, 1 wide: CLIP's shortest-edge rule would make it 224 x 1,120,000
             (noise(1, 5000, seed=2).transpose(1, 0, 2), "250,880,000 pixels")]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no DecompressionBombWarning or other warning escapes
        for i, (bad, match) in enumerate(cases):
            with pytest.raises(InputError, match=match) as e:
                ours(bad)
            assert str(e.value).startswith("images")
            with pytest.raises(InputError, match=r"images\[3\]"):  # the batch position is named
                ours([noise(50, 50), noise(60, 60), Image.fromarray(noise(30, 40)), bad])
    with pytest.raises(InputError, match=r"images\[1\].*cut.jpg"):
        ours([noise(50, 50), truncated])
    with pytest.raises(InputError, match="do_convert_rgb=False"):
        ViTImageProcessor(do_convert_rgb=False)(Image.fromarray(noise(30, 30)).convert("L"))
    with pytest.raises(InputError, match="limit of 1,000"):
        ViTImageProcessor(max_pixels=1000)(noise(40, 40))
    with pytest.raises(InputError, match="no images"):
        ours([])
    with pytest.raises(InputError, match="return_tensors"):
        ours(noise(50, 50), return_tensors="tf")


def test_no_torch_import():
    code = ("import sys\n"
            "from vlexport.processing.vit_images import IMAGE_PROCESSORS\n"
            "for c in IMAGE_PROCESSORS.values(): c()(__import__('numpy').zeros((64, 80, 3), 'uint8'))\n"
            "bad = [k for k in ('torch', 'transformers', 'torchvision') if k in sys.modules]\n"
            "print('IMPORTED', bad) if bad else print('OK')\n")
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "OK", r.stdout


def test_threads_give_the_same_answer():
    batch = [noise(100 + 7 * i, 150 + 11 * i, seed=i) for i in range(5)]
    batch.append(Image.fromarray(smooth(80, 300)).convert("L"))
    np.testing.assert_array_equal(CLIPImageProcessor(num_threads=3)(batch)["pixel_values"],
                                  CLIPImageProcessor()(batch)["pixel_values"])


def test_zz_worst_difference_per_processor():
    """Runs last: the largest |ours - HF| seen per processor (printed with -s)."""
    if not WORST:
        pytest.skip("no comparison ran in this session (test selection)")
    for key, diffs in sorted(WORST.items()):
        print(f"\n{key}: {len(diffs)} comparisons with HF, max |pixel_values diff| = {max(diffs):.3g}")
        assert max(diffs) <= TOL
