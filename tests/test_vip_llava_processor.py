"""VipLlavaProcessor (torch-free) against transformers 5's LlavaProcessor, the oracle, no mocks.

- pixel_values: vlexport's CLIP processor configured as llava-hf/vip-llava-7b-hf's
  preprocessor_config.json (and the built-in default, which must be the same) against HF's
  CLIPImageProcessorPil: real photographs (skimage.data), synthetic images of several sizes and
  aspect ratios, PIL modes L / RGBA / P / LA / CMYK, an EXIF-rotated JPEG file; within 1e-5.
- input_ids / attention_mask: our processor and HF's LlavaProcessor read the same folder (the
  committed tiny Llama-style tokenizer, vip-llava's image and processor configs: 576 tokens per
  image) in each way transformers 5 loads a Llama tokenizer: a `vipllava` config.json beside it
  (transformers forces TokenizersBackend, the tokenizer.json as it is), LlamaTokenizer with
  legacy false / true (transformers rebuilds the pipeline as Metaspace), a Metaspace-shaped json,
  and PreTrainedTokenizerFast(tokenizer_file=...) built by hand; single and batched prompts built
  with PROMPT, HF padding on the left.
- batch_decode on generated-looking ids, with and without skip_special_tokens.
- save_pretrained / from_pretrained round trips (ours, and HF reading our folder, and ours reading
  HF's transformers-5 save format), the errors, and the tiny tokenizer's reproducibility.

No real Llama-2 / SentencePiece tokenizer.json exists offline in this environment (site-packages and
caches were searched: only MiniLM's WordPiece), so the real vocabulary is not tested here; the tiny
tokenizer has the same pipeline as Llama-2's hub file.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlexport.errors import ConfigError, InputError
from vlexport.families.vip_llava import processor as vp
from vlexport.families.vip_llava.processor import PROMPT, VipLlavaProcessor, tiny_token_ids

transformers = pytest.importorskip("transformers")
from transformers import AutoProcessor, LlavaProcessor, PreTrainedTokenizerFast  # noqa: E402
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil  # noqa: E402

transformers.logging.set_verbosity_error()
REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "vlexport" / "data" / "make_tiny_llama_tokenizer.py"
TOL = 1e-5
VIP_IMAGE_CONFIG = {  # llava-hf/vip-llava-7b-hf's preprocessor_config.json
    "crop_size": {"height": 336, "width": 336}, "do_center_crop": True, "do_convert_rgb": True, "do_normalize": True,
    "do_rescale": True, "do_resize": True, "image_mean": [0.48145466, 0.4578275, 0.40821073],
    "image_processor_type": "CLIPImageProcessor", "image_std": [0.26862954, 0.26130258, 0.27577711],
    "processor_class": "LlavaProcessor", "resample": 3, "rescale_factor": 0.00392156862745098,
    "size": {"shortest_edge": 336}}
VIP_PROCESSOR_CONFIG = {"image_token": "<image>", "num_additional_image_tokens": 1, "patch_size": 14,
                        "processor_class": "LlavaProcessor", "vision_feature_select_strategy": "default"}
VIP_TOKENIZER_CONFIG = {"tokenizer_class": "LlamaTokenizer", "add_bos_token": True, "add_eos_token": False,
                        "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>",
                        "padding_side": "left", "clean_up_tokenization_spaces": False, "model_max_length": 4096}
QUESTIONS = ["What is in the red box?", "Describe the object inside the green ellipse in detail.",
             "  leading and trailing spaces  ", "naïve café, 日本 😀 ünïcödé?",
             "Count: 1, 22, 333.\nNew line\tTab",
             "Zebra giraffe platypus xylophone", "", "What's the <pad> and </s> doing here?"]


# ----------------------------------------------------------------------------------- inputs

def photos():
    import skimage.data as data

    return [(name, getattr(data, name)()) for name in ("astronaut", "chelsea", "coffee", "rocket")]


def smooth(h, w, seed=0):
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    r = np.random.RandomState(seed).rand(3)
    img = np.stack([255 * x / max(w - 1, 1) * r[0], 255 * y / max(h - 1, 1),
                    255 * np.exp(-((x - w / 2) ** 2 + (y - h / 2) ** 2) / (0.1 * (h * w + 1)))], -1)
    return np.clip(img, 0, 255).astype(np.uint8)


def synthetic():
    out = [(f"{h}x{w}", smooth(h, w, seed=h + w)) for h, w in
           ((336, 336), (480, 640), (640, 480), (100, 50), (20, 700), (1000, 337), (17, 17), (1, 1))]
    base = Image.fromarray(smooth(200, 300, seed=3))
    alpha = np.linspace(0, 255, 200 * 300).reshape(200, 300).astype(np.uint8)
    out += [("L", base.convert("L")), ("P", base.convert("P")), ("CMYK", base.convert("CMYK")),
            ("RGBA", Image.fromarray(np.dstack([np.asarray(base), alpha]))),
            ("LA", Image.fromarray(np.dstack([np.asarray(base.convert("L")), alpha])))]
    return out


@pytest.fixture(scope="module")
def exif_jpeg(tmp_path_factory):
    path = tmp_path_factory.mktemp("exif") / "rotated.jpg"
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display: 300x200 stored, 200x300 shown
    Image.fromarray(smooth(200, 300, seed=9)).save(path, exif=exif, quality=95)
    return path


def hf_clip(size=336):
    cfg = {k: v for k, v in VIP_IMAGE_CONFIG.items() if k not in ("image_processor_type", "processor_class")}
    if size != 336:
        cfg.update(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    return CLIPImageProcessorPil(**cfg)


def assert_pixels(ours, theirs):
    theirs = np.asarray(theirs)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape, (ours.shape, theirs.shape)
    assert float(np.abs(ours - theirs).max()) <= TOL


# ---------------------------------------------------------------------------------- folders

def _folder(root, name, *, tokenizer_config=VIP_TOKENIZER_CONFIG, model_type="vipllava", json_shape="llama2",
            processor_config=VIP_PROCESSOR_CONFIG, image_config=VIP_IMAGE_CONFIG):
    """A VipLlava-like folder: the tiny tokenizer (in Llama-2's hub shape or transformers 5's Metaspace
    shape), vip-llava's image and processor configs, and a config.json of that model type."""
    folder = root / name
    folder.mkdir()
    tok = json.loads(vp.TINY_TOKENIZER.read_text(encoding="utf-8"))
    if json_shape == "metaspace":  # what transformers 5's LlamaTokenizer.save_pretrained writes
        tok["normalizer"] = None
        tok["pre_tokenizer"] = {"type": "Metaspace", "replacement": "▁", "prepend_scheme": "first", "split": False}
    (folder / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps(tokenizer_config))
    if image_config is not None:
        (folder / "preprocessor_config.json").write_text(json.dumps(image_config))
    if processor_config is not None:
        (folder / "processor_config.json").write_text(json.dumps(processor_config))
    if model_type is not None:
        (folder / "config.json").write_text(json.dumps({"model_type": model_type}))
    return folder


FOLDERS = {  # name -> _folder options; every way transformers 5 reads a Llama tokenizer for this processor
    "vipllava": {},  # vip-llava's layout: AutoTokenizer forces TokenizersBackend (json as it is)
    "llama-legacy-false": {"model_type": None, "tokenizer_config": {**VIP_TOKENIZER_CONFIG, "legacy": False}},
    "llama-legacy-true": {"model_type": None, "tokenizer_config": {**VIP_TOKENIZER_CONFIG, "legacy": True}},
    "llama-defaults": {"model_type": None, "tokenizer_config": {"tokenizer_class": "LlamaTokenizerFast",
                                                                "pad_token": "<pad>"}},
    "metaspace-json": {"json_shape": "metaspace"},
    "metaspace-llama": {"json_shape": "metaspace", "model_type": None},
    "metaspace-legacy-true": {"json_shape": "metaspace", "model_type": None,
                              "tokenizer_config": {**VIP_TOKENIZER_CONFIG, "legacy": True}},
    "llama-no-prefix-space": {"model_type": None,
                              "tokenizer_config": {**VIP_TOKENIZER_CONFIG, "add_prefix_space": False}},
}


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("vipllava")
    cache = {}

    def get(name):
        if name not in cache:
            folder = _folder(root, name, **FOLDERS[name])
            cache[name] = (folder, VipLlavaProcessor.from_pretrained(folder), AutoProcessor.from_pretrained(folder))
        return cache[name]
    return get


def hf_call(hf, text, images=None):
    out = hf(text=text, images=images, padding=True, return_tensors="np")
    return {k: np.asarray(v) for k, v in out.items()}


def assert_same_call(ours, hf, text, images=None):
    a = ours(text=text, images=images)
    b = hf_call(hf, text, images)
    assert set(a) == set(b), (set(a), set(b))
    for key in ("input_ids", "attention_mask"):
        assert a[key].dtype == np.int64
        np.testing.assert_array_equal(a[key], b[key], err_msg=key)
    if "pixel_values" in b:
        assert_pixels(a["pixel_values"], b["pixel_values"])
    return a


# ------------------------------------------------------------------------------ image pixels

@pytest.mark.parametrize("source", ["folder", "default"])
def test_pixels_match_hf_clip_on_photographs_and_synthetic_images(tmp_path, source, exif_jpeg):
    if source == "folder":
        (tmp_path / "preprocessor_config.json").write_text(json.dumps(VIP_IMAGE_CONFIG))
    ours = vp._image_processor(tmp_path, {})  # the folder's config, or the built-in vip-llava default
    settings = {k: v for k, v in ours.to_dict().items() if k != "processor_class"}  # kept as an extra key
    assert settings == vp.vip_llava_image_processor().to_dict()
    hf = hf_clip()
    images = photos() + synthetic()
    for name, im in images:
        assert_pixels(ours(im)["pixel_values"], hf(im, return_tensors="np")["pixel_values"]), name
    batch = [im for _, im in images]
    assert_pixels(ours(batch)["pixel_values"], hf(batch, return_tensors="np")["pixel_values"])
    # a file with EXIF orientation: both rotate it on loading (HF's load_image)
    assert_pixels(ours(str(exif_jpeg))["pixel_values"],
                  hf(hf.fetch_images([str(exif_jpeg)]), return_tensors="np")["pixel_values"])


# ----------------------------------------------------------------------- tokens and expansion

@pytest.mark.parametrize("name", list(FOLDERS))
def test_ids_match_hf_llava_processor(folders, name):
    folder, ours, hf = folders(name)
    as_is = ("vipllava", "metaspace-json")  # a vipllava config.json beside the tokenizer
    expected_class = "TokenizersBackend" if name in as_is else "LlamaTokenizer"
    assert type(hf.tokenizer).__name__ == expected_class  # the HF path this folder exercises
    assert ours.image_seq_length == 576 and ours.image_token_id == hf.image_token_id == 1000
    photo = dict(photos())
    a = assert_same_call(ours, hf, PROMPT.format(QUESTIONS[0]), photo["astronaut"])
    assert a["input_ids"].shape[0] == 1 and int((a["input_ids"] == 1000).sum()) == 576
    assert a["input_ids"][0, 0] == ours.bos_token_id == 1
    prompts = [ours.prompt(q) for q in QUESTIONS]
    assert prompts == [PROMPT.format(q) for q in QUESTIONS]
    images = [photo["chelsea"], photo["coffee"], photo["rocket"]] + [im for _, im in synthetic()[:5]]
    a = assert_same_call(ours, hf, prompts, images)  # a batch of 8 prompts of different lengths, left padded
    assert (a["attention_mask"][:, -1] == 1).all() and (a["attention_mask"] == 0).any()
    assert (a["input_ids"][a["attention_mask"] == 0] == ours.pad_token_id).all()
    # two images in one prompt, none in another, text right after the image tokens
    two = ["USER: <image><image>\nCompare them. ASSISTANT:", "No image here at all.", "<image>x <image> y"]
    assert_same_call(ours, hf, two, [photo["rocket"], photo["coffee"], photo["chelsea"], photo["astronaut"]])
    assert_same_call(ours, hf, ["text only, no image", "two"])  # no images at all: no pixel_values
    assert_same_call(ours, hf, "one text only")


def test_tiny_matches_hf_llava_processor_with_pretrained_tokenizer_fast():
    """The brief's oracle: LlavaProcessor(CLIPImageProcessor, PreTrainedTokenizerFast(tokenizer_file=...),
    patch_size, "default") at the tiny model's 28 px / 14 px patches: 4 tokens per image."""
    ours = VipLlavaProcessor.tiny(image_size=28, patch_size=14)
    tok = PreTrainedTokenizerFast(tokenizer_file=str(vp.TINY_TOKENIZER), bos_token="<s>", eos_token="</s>",
                                  unk_token="<unk>", pad_token="<pad>", padding_side="left")
    hf = LlavaProcessor(image_processor=hf_clip(28), tokenizer=tok, patch_size=14,
                        vision_feature_select_strategy="default", num_additional_image_tokens=1)
    assert ours.image_seq_length == 4 == (28 // 14) ** 2
    ims = [im for _, im in photos()]
    assert_same_call(ours, hf, [ours.prompt(q) for q in QUESTIONS[:4]], ims)
    assert_same_call(ours, hf, ours.prompt("What is it?"), ims[0])
    for key in ("pad_token_id", "eos_token_id", "bos_token_id"):
        assert getattr(ours, key) == getattr(tok, key), key
    assert ours.vocab_size == len(tok) == 1002
    # other image sizes / patch sizes, as the tiny model config may choose
    for size, patch in ((32, 8), (30, 14), (56, 14)):
        ours = VipLlavaProcessor.tiny(image_size=size, patch_size=patch)
        hf = LlavaProcessor(image_processor=hf_clip(size), tokenizer=tok, patch_size=patch,
                            vision_feature_select_strategy="default", num_additional_image_tokens=1)
        assert ours.image_seq_length == (size // patch) ** 2
        assert_same_call(ours, hf, ["<image> a", "b <image>"], ims[:2])


def test_padding_side_and_options(folders):
    _, ours, hf = folders("vipllava")
    texts = ["short", "a much longer text with many more words in it"]
    left = ours(text=texts)
    right = ours(text=texts, padding_side="right")
    hf.tokenizer.padding_side = "right"
    try:
        np.testing.assert_array_equal(right["input_ids"], hf_call(hf, texts)["input_ids"])
    finally:
        hf.tokenizer.padding_side = "left"
    assert left["attention_mask"][0, 0] == 0 and right["attention_mask"][0, -1] == 0
    ours.padding_side = "right"
    try:
        np.testing.assert_array_equal(ours(text=texts)["input_ids"], right["input_ids"])
    finally:
        ours.padding_side = "left"
    lists = ours(text=texts, padding=False, return_tensors=None)
    assert [len(r) for r in lists["input_ids"]] == [int(m.sum()) for m in left["attention_mask"]]
    fixed = ours(text=texts, padding="max_length", max_length=40)
    assert fixed["input_ids"].shape == (2, 40)
    with pytest.raises(InputError, match="different lengths"):
        ours(text=texts, padding=False)
    with pytest.raises(ConfigError, match="padding_side"):
        ours.padding_side = "middle"


def test_image_tokens_from_config_without_patch_size(tmp_path):
    folder = _folder(tmp_path, "nopatch", processor_config=None)
    assert VipLlavaProcessor.from_pretrained(folder).image_seq_length == 576  # the default

    class Cfg:
        image_seq_length = 9

    ours = VipLlavaProcessor.from_pretrained(folder, Cfg())
    out = ours(text="a <image> b", images=np.zeros((40, 50, 3), np.uint8))
    assert int((out["input_ids"] == ours.image_token_id).sum()) == 9
    assert VipLlavaProcessor.from_pretrained(folder, {"image_seq_length": 16}).image_seq_length == 16
    ours.save_pretrained(tmp_path / "saved")
    assert VipLlavaProcessor.from_pretrained(tmp_path / "saved").image_seq_length == 9


# -------------------------------------------------------------------------------- decoding

@pytest.mark.parametrize("name", ["vipllava", "llama-legacy-false", "llama-legacy-true", "llama-no-prefix-space"])
def test_batch_decode_matches_hf(folders, name):
    _, ours, hf = folders(name)
    rng = np.random.default_rng(0)
    prompt = ours(text=ours.prompt("What colour is the box?"), images=np.zeros((20, 20, 3), np.uint8))["input_ids"][0]
    rows = [prompt.tolist() + rng.integers(3, 1000, size=12).tolist() + [2]]  # prompt, answer, </s>
    rows += [rng.integers(0, 1002, size=n).tolist() for n in (1, 5, 17, 40)]  # bytes, specials, <image>, <pad>
    rows += [[1001] * 3 + [1, 369, 705, 2], [3 + 0xC3, 3 + 0xA9, 300, 3 + 0xF0], [], [1000, 1000, 321, 13, 292]]
    for skip in (False, True):
        assert ours.batch_decode(rows, skip_special_tokens=skip) == hf.batch_decode(rows, skip_special_tokens=skip)
        assert [ours.decode(r, skip_special_tokens=skip) for r in rows] == \
            [hf.decode(r, skip_special_tokens=skip) for r in rows]
    arr = np.array([r[:5] for r in rows if len(r) >= 5])
    assert ours.batch_decode(arr) == hf.batch_decode(arr)
    assert ours.batch_decode(rows) == hf.batch_decode(rows)  # HF's default: special tokens kept


# --------------------------------------------------------------------------- save and load

def test_round_trip_tiny(tmp_path):
    ours = VipLlavaProcessor.tiny(image_size=28, patch_size=14)
    ours.save_pretrained(tmp_path)
    back = VipLlavaProcessor.from_pretrained(tmp_path)
    texts = [ours.prompt(q) for q in QUESTIONS]
    ims = [im for _, im in photos()] + [im for _, im in synthetic()[:4]]
    a, b = ours(text=texts, images=ims), back(text=texts, images=ims)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert (back.image_seq_length, back.padding_side, back.vocab_size) == (4, "left", 1002)
    assert back.image_processor.to_dict() == ours.image_processor.to_dict()
    # HF's AutoProcessor reads the saved folder to the same numbers
    hf = AutoProcessor.from_pretrained(tmp_path)
    assert_same_call(back, hf, texts, ims)
    # and with a vipllava config.json beside it (an artifact folder): the same again
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vipllava"}))
    assert_same_call(VipLlavaProcessor.from_pretrained(tmp_path), AutoProcessor.from_pretrained(tmp_path), texts, ims)


@pytest.mark.parametrize("name", ["vipllava", "llama-legacy-true", "metaspace-llama"])
def test_round_trip_folders(folders, tmp_path, name):
    _, ours, hf = folders(name)
    ours.save_pretrained(tmp_path)
    back = VipLlavaProcessor.from_pretrained(tmp_path)
    texts = [ours.prompt(q) for q in QUESTIONS[:5]]
    ims = [im for _, im in photos()][:1] * 5
    a = assert_same_call(back, hf, texts, ims)
    np.testing.assert_array_equal(a["input_ids"], ours(text=texts, images=ims)["input_ids"])
    assert_same_call(back, AutoProcessor.from_pretrained(tmp_path), texts, ims)  # HF reading our save


def test_reads_transformers5_save_format(folders, tmp_path):
    """transformers 5 saves the image processor inside processor_config.json (no preprocessor_config.json)."""
    _, _, hf = folders("vipllava")
    hf.save_pretrained(tmp_path)
    assert not (tmp_path / "preprocessor_config.json").exists()
    assert "image_processor" in json.loads((tmp_path / "processor_config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "vipllava"}))
    ours = VipLlavaProcessor.from_pretrained(tmp_path)
    assert ours.image_processor.to_dict() == vp.vip_llava_image_processor().to_dict()
    assert_same_call(ours, AutoProcessor.from_pretrained(tmp_path), [ours.prompt(q) for q in QUESTIONS[:3]],
                     [im for _, im in photos()][:3])


# ---------------------------------------------------------------------------------- errors

@pytest.mark.filterwarnings("ignore:Token indices sequence length")
def test_errors_name_what_was_expected():
    p = VipLlavaProcessor.tiny()
    im = np.zeros((30, 30, 3), np.uint8)
    with pytest.raises(InputError, match=r"holds 1 <image> placeholder\(s\) but 2 image\(s\)"):
        p(text=p.prompt("q"), images=[im, im])
    with pytest.raises(InputError, match=r"holds 3 <image> placeholder\(s\) \(per text: \[2, 1\]\) but 1 image"):
        p(text=["<image><image>", "<image>"], images=im)
    with pytest.raises(InputError, match=r"holds 1 <image> placeholder\(s\) but 0 image"):
        p(text=p.prompt("q"))
    with pytest.raises(InputError, match=r"holds 0 <image> placeholder\(s\) but 1 image.*put <image>"):
        p(text="no placeholder", images=im)
    with pytest.raises(InputError, match="text is required"):
        p(images=im)
    with pytest.raises(InputError, match="text must be a str or a list of str, got a int"):
        p(text=5)
    with pytest.raises(InputError, match=r"holding \['int', 'str'\]"):
        p(text=["a", 3])
    with pytest.raises(InputError, match="empty list"):
        p(text=[])
    with pytest.raises(InputError, match="images is empty"):
        p(text="x", images=[])
    with pytest.raises(InputError, match="is not an image"):
        p(text="<image>", images=object())
    with pytest.raises(InputError, match="return_tensors"):
        p(text="x", return_tensors="tf")
    with pytest.raises(InputError, match="padding must be"):
        p(text="x", padding="sideways")
    with pytest.raises(InputError, match="padding_side"):
        p(text="x", padding_side="up")
    with pytest.raises(InputError, match="question must be a str"):
        p.prompt(3)
    with pytest.raises(InputError, match="non-negative int token ids"):
        p.decode([1, -5])
    with pytest.raises(InputError, match="non-negative int token ids"):
        p.batch_decode([[1, "a"]])
    with pytest.raises(InputError, match="batch of token id sequences"):
        p.batch_decode(7)
    p.tokenizer.model_max_length = 10
    try:
        with pytest.raises(InputError, match=r"text\[0\] is \d+ tokens long .* model_max_length of 10"):
            p(text=p.prompt("a question"), images=im)
    finally:
        p.tokenizer.model_max_length = int(1e30)


def test_config_errors(tmp_path):
    from vlexport.processing.text import TextProcessor

    tiny = VipLlavaProcessor.tiny()
    with pytest.raises(ConfigError, match="not one token"):
        VipLlavaProcessor(tiny.image_processor, tiny.tokenizer, image_token="<img>")
    with pytest.raises(ConfigError, match="TextProcessor"):
        VipLlavaProcessor(tiny.image_processor, "tokenizer.json")
    with pytest.raises(ConfigError, match="0 image tokens"):
        VipLlavaProcessor(tiny.image_processor, tiny.tokenizer, patch_size=20, vision_feature_select_strategy="default")
    with pytest.raises(ConfigError, match="patch_size"):
        VipLlavaProcessor.tiny(image_size=28, patch_size=0)
    nopad = TextProcessor(vp.TINY_TOKENIZER, bos_token="<s>")
    p = VipLlavaProcessor(tiny.image_processor, nopad, image_seq_length=4)
    with pytest.raises(InputError, match="needs a pad token"):
        p(text=["a", "bb"])
    assert p(text="a", padding=False)["input_ids"].tolist() == [[1, nopad.tokenizer.token_to_id("▁a")]]
    with pytest.raises(Exception, match="not a folder"):
        VipLlavaProcessor.from_pretrained(tmp_path / "missing")


# ------------------------------------------------------------------------- the tiny tokenizer

def test_tiny_tokenizer_is_reproducible_and_llama_shaped():
    text = vp.TINY_TOKENIZER.read_text(encoding="utf-8")
    assert len(text.encode()) < 150_000
    sys.path.insert(0, str(SCRIPT.parent))
    try:
        import make_tiny_llama_tokenizer as make
    finally:
        sys.path.remove(str(SCRIPT.parent))
    assert make.to_json() == text  # trained again here: byte for byte the committed file
    env = {**os.environ, "PYTHONHASHSEED": "12345"}  # another process, another hash seed
    run = subprocess.run([sys.executable, str(SCRIPT), "--check"], capture_output=True, text=True, env=env, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    d = json.loads(text)
    vocab = d["model"]["vocab"]
    assert [vocab["<unk>"], vocab["<s>"], vocab["</s>"], vocab["<0x00>"], vocab["<0xFF>"]] == [0, 1, 2, 3, 258]
    assert d["model"]["byte_fallback"] and d["model"]["fuse_unk"] and d["model"]["unk_token"] == "<unk>"
    assert [n["type"] for n in d["normalizer"]["normalizers"]] == ["Prepend", "Replace"] and d["pre_tokenizer"] is None
    assert [x["type"] for x in d["decoder"]["decoders"]] == ["Replace", "ByteFallback", "Fuse", "Strip"]
    added = {t["content"]: (t["id"], t["special"]) for t in d["added_tokens"]}
    assert added == {"<unk>": (0, True), "<s>": (1, True), "</s>": (2, True), "<image>": (1000, True),
                     "<pad>": (1001, True)}
    assert tiny_token_ids() == {"vocab_size": 1002, "image_token_index": 1000, "pad_token_id": 1001,
                                "bos_token_id": 1, "eos_token_id": 2}


def test_return_tensors_none_and_pt():
    p = VipLlavaProcessor.tiny()
    im = np.zeros((30, 30, 3), np.uint8)
    lists = p(text=["<image> a", "b"], images=im, return_tensors=None)
    arrays = p(text=["<image> a", "b"], images=im)
    assert lists["input_ids"] == arrays["input_ids"].tolist()
    assert isinstance(lists["pixel_values"], list) and lists["pixel_values"][0].shape == (3, 28, 28)
    torch = pytest.importorskip("torch")
    pt = p(text=["<image> a", "b"], images=im, return_tensors="pt")
    assert pt["input_ids"].dtype == torch.int64 and pt["pixel_values"].dtype == torch.float32


def test_random_weights_build_has_an_image_only_processor(tmp_path):
    """--random-weights builds carry no Llama-2 vocabulary: images still work, text says what is missing."""
    from vlexport import families
    from vlexport.errors import ConfigError

    proc = families.get("vip_llava").load_processor(None, "random")
    out = proc(images=np.zeros((40, 50, 3), np.uint8))
    assert out["pixel_values"].shape == (1, 3, 336, 336)
    for call in (lambda: proc(text="<image>\nhi", images=np.zeros((4, 4, 3), np.uint8)), lambda: proc.prompt("hi"),
                 lambda: proc.batch_decode([[1, 2]])):
        with pytest.raises(ConfigError, match="no tokenizer.json"):
            call()
    proc.save_pretrained(tmp_path)
    again = families.get("vip_llava").load_processor(tmp_path, "artifact")
    assert again.tokenizer is None and np.array_equal(again(images=np.zeros((40, 50, 3), np.uint8))["pixel_values"],
                                                      out["pixel_values"])
