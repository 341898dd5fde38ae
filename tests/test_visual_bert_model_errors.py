"""Bad inputs to our eager models raise InputError naming the input and the numbers involved."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oracle import run_ours, to_torch
from visual_bert_kit import HF_CLASSES, SMALL
from vlexport.errors import ConfigError, InputError
from vlexport.families.visual_bert.describe import describe
from vlexport import reference as factory
from vlexport.families.visual_bert.config import VisualBertConfig
from vlexport.families.visual_bert.model import VisualBertForQuestionAnswering, VisualBertModel

CFG = {**SMALL, "model_type": "visual_bert"}  # vocab 99, visual dim 12, max positions 40
MC, R2P, QA = "VisualBertForMultipleChoice", "VisualBertForRegionToPhraseAlignment", "VisualBertForQuestionAnswering"


@pytest.fixture(scope="module")
def models():
    return {arch: factory.build_random(CFG, arch)[0] for arch in HF_CLASSES}


def _feeds(arch, batch=2, text=6, visual=5, align=False):
    spec = describe(arch, VisualBertConfig.from_dict(CFG), with_alignment=align).graphs[0]
    sizes = {"batch": batch, "text": text, "visual": visual, "choices": 3, "phrases": 4, "align": 2}
    return to_torch(spec.make_inputs(sizes, np.random.default_rng(0), pad=True))


def _call(model, feeds):
    with torch.no_grad():
        return model(**feeds)


def _raises(model, feeds, *fragments):
    with pytest.raises(InputError) as e:
        _call(model, feeds)
    msg = str(e.value)
    for f in fragments:
        assert f in msg, f"{f!r} not in message: {msg}"
    return msg


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_valid_inputs_run(arch, models):
    out = run_ours(models[arch], {k: v.numpy() for k, v in _feeds(arch).items()})
    assert out and all(torch.isfinite(v[v.abs() < 1e30]).all() for v in out.values())


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_batch_mismatch(arch, models):
    feeds = _feeds(arch)
    other = _feeds(arch, batch=3)
    feeds["visual_embeds"] = other["visual_embeds"]
    _raises(models[arch], feeds, "'visual_embeds'", "batch=3", "'input_ids'", "batch=2")


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_wrong_visual_embedding_dim(arch, models):
    feeds = _feeds(arch)
    shape = (*feeds["visual_embeds"].shape[:-1], 2048)
    feeds["visual_embeds"] = torch.zeros(shape)
    _raises(models[arch], feeds, "'visual_embeds'", "2048", "12")


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_text_longer_than_positions(arch, models):
    _raises(models[arch], _feeds(arch, text=41), "'input_ids'", "41", "max_position_embeddings", "40")


@pytest.mark.parametrize("arch", HF_CLASSES)
@pytest.mark.parametrize("bad", [99, 1000, -1])
def test_token_ids_outside_vocabulary(arch, bad, models):
    feeds = _feeds(arch)
    feeds["input_ids"].view(-1)[3] = bad
    _raises(models[arch], feeds, "'input_ids'", str(bad), "0" if bad < 0 else "99")


def test_token_type_and_mask_values(models):
    feeds = _feeds(QA)
    feeds["token_type_ids"][0, 1] = 2
    _raises(models[QA], feeds, "'token_type_ids'", "2")
    feeds = _feeds(QA)
    feeds["visual_attention_mask"][1, 0] = 5
    _raises(models[QA], feeds, "'visual_attention_mask'", "5", "2")


def test_alignment_outside_text(models):
    arch = "VisualBertModel"
    feeds = _feeds(arch, text=6, align=True)
    feeds["image_text_alignment"][0, 0, 0] = 6
    _raises(models[arch], feeds, "'image_text_alignment'", "6")


def test_qa_needs_attention_mask(models):
    feeds = _feeds(QA)
    del feeds["attention_mask"]
    _raises(models[QA], feeds, "'attention_mask'", "question answering")


def test_r2p_needs_region_to_phrase_position(models):
    feeds = _feeds(R2P)
    del feeds["region_to_phrase_position"]
    _raises(models[R2P], feeds, "'region_to_phrase_position'")


def test_r2p_position_beyond_sequence(models):
    feeds = _feeds(R2P, text=6, visual=5)
    feeds["region_to_phrase_position"][1, 2] = 11
    _raises(models[R2P], feeds, "'region_to_phrase_position'", "11")


def test_missing_visual_embeds(models):
    feeds = _feeds("VisualBertModel")
    del feeds["visual_embeds"]
    _raises(models["VisualBertModel"], feeds, "'visual_embeds'")


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_float_input_ids(arch, models):
    feeds = _feeds(arch)
    feeds["input_ids"] = feeds["input_ids"].float()
    _raises(models[arch], feeds, "'input_ids'", "int64", "float32")


def test_wrong_rank(models):
    feeds = _feeds(QA)
    feeds["visual_embeds"] = feeds["visual_embeds"][0]
    _raises(models[QA], feeds, "'visual_embeds'", "3 dims", "(5, 12)")
    feeds = _feeds(MC)
    feeds["input_ids"] = feeds["input_ids"][:, 0]  # (B, T): the choices axis is missing
    _raises(models[MC], feeds, "'input_ids'", "3 dims")


def test_mc_choices_mismatch(models):
    feeds = _feeds(MC)
    feeds["visual_embeds"] = feeds["visual_embeds"][:, :2]
    _raises(models[MC], feeds, "'visual_embeds'", "choices=2", "choices=3")


def test_bypass_transformer_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="bypass_transformer"):
        VisualBertConfig.from_dict({**CFG, "bypass_transformer": True})
    with pytest.raises(ConfigError, match="bypass_transformer"):
        VisualBertModel(VisualBertConfig(bypass_transformer=True))
    with pytest.raises(ConfigError, match="bypass_transformer"):
        VisualBertForQuestionAnswering(VisualBertConfig(bypass_transformer=True))
    (tmp_path / "config.json").write_text(json.dumps({**CFG, "bypass_transformer": True,
                                                      "architectures": [QA]}))
    with pytest.raises(ConfigError, match="bypass_transformer"):
        factory.from_pretrained(str(tmp_path))
    with pytest.raises(ConfigError, match="bypass_transformer"):
        factory.from_pretrained(str(tmp_path), random_weights=True)


def test_bad_config_values():
    with pytest.raises(ConfigError, match="hidden_size 30.*num_attention_heads 4"):
        VisualBertConfig.from_dict({**CFG, "hidden_size": 30})
    with pytest.raises(ConfigError, match="hidden_act 'swishy'"):
        VisualBertConfig.from_dict({**CFG, "hidden_act": "swishy"})


def test_checks_are_skipped_while_exporting(models):
    """The eager checks must not break tracing (they only run outside export)."""
    model = models[QA]
    feeds = _feeds(QA)
    traced = torch.jit.trace(model, example_kwarg_inputs=feeds, strict=False)
    ref = _call(model, feeds)["logits"]
    out = traced(**feeds)
    out = out["logits"] if isinstance(out, dict) else out[0]
    torch.testing.assert_close(out, ref)


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_unknown_keyword_inputs_are_refused(arch, models):
    """A typo or an HF-only input we do not implement must not be silently ignored."""
    feeds = _feeds(arch)
    _raises(models[arch], {**feeds, "visual_attention_masks": feeds["input_ids"]}, "'visual_attention_masks'")
    _raises(models[arch], {**feeds, "position_ids": torch.zeros_like(feeds["input_ids"])}, "'position_ids'")
    # harmless HF arguments are accepted
    ref = _call(models[arch], feeds)
    out = _call(models[arch], {**feeds, "return_dict": True, "output_attentions": False, "labels": None})
    for k in ref:
        torch.testing.assert_close(out[k], ref[k])
