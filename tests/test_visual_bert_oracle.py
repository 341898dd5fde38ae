"""Our VisualBERT against `transformers` (the oracle): random perturbed HF models, saved by
save_pretrained as safetensors and as `.bin`, loaded by vlexport, equal outputs within 1e-5."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vlexport.models as vm
from oracle import assert_same_outputs, perturb_, run_hf, run_ours, save_hf_model
from visual_bert_kit import HF_CLASSES
from vlexport import reference as factory
from vlexport.families.visual_bert.config import VisualBertConfig
from vlexport.families.visual_bert.describe import describe


def _graph(arch, config, with_alignment=False):
    return describe(arch, config, with_alignment=with_alignment).graphs[0]

ATOL = 1e-5

# (name, sizes, pad, with image_text_alignment)
CASES = [
    ("b1-nopad", dict(batch=1, text=7, visual=5), False, False),
    ("b3-pad", dict(batch=3, text=9, visual=6), True, False),
    ("b2-pad-align", dict(batch=2, text=8, visual=4, align=3), True, True),
    ("b1-nopad-align", dict(batch=1, text=5, visual=3, align=2), False, True),
    ("b4-long-pad", dict(batch=4, text=23, visual=17), True, False),
]


def _sizes(arch, sizes):
    sizes = dict(sizes)
    if arch == "VisualBertForMultipleChoice":
        sizes["choices"] = 3
    if arch == "VisualBertForRegionToPhraseAlignment":
        sizes["phrases"] = 4
    return sizes


def _load_both(arch, folder):
    """Our model through the class (`vlexport.models.<Class>.from_pretrained`) and through the factory
    (head chosen from config.json `architectures`)."""
    by_class = getattr(vm, arch).from_pretrained(str(folder))
    loaded = factory.from_pretrained(str(folder))
    assert loaded.architecture == arch
    assert type(loaded.model).__name__ == arch and type(by_class).__name__ == arch
    assert loaded.weights == "checkpoint" and not loaded.model.training and not by_class.training
    return {"class": by_class, "factory": loaded.model}


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("arch", HF_CLASSES)
def test_head_matches_transformers(arch, fmt, case, hf_checkpoint):
    name, sizes, pad, align = case
    if align and arch == "VisualBertForMultipleChoice":
        pytest.skip("transformers' VisualBertForMultipleChoice does not fold image_text_alignment to "
                    "(batch*choices, ...), so HF itself cannot run it: no oracle")
    hf = hf_checkpoint(arch, fmt)
    spec = _graph(arch, VisualBertConfig.from_dict(hf.config), with_alignment=align)
    seed = sum(map(ord, arch + name))
    rng = np.random.default_rng(seed)
    feeds = spec.make_inputs(_sizes(arch, sizes), rng, pad=pad)
    # make_inputs gives visual token type 1 (the default) everywhere: mix in 0s so the input counts
    feeds["visual_token_type_ids"] = (rng.random(feeds["visual_token_type_ids"].shape) < 0.7).astype(np.int64)
    if pad:  # the case really pads somewhere (else it tests nothing more than the no-pad case)
        assert (feeds["attention_mask"] == 0).any() or (feeds["visual_attention_mask"] == 0).any()
    theirs = run_hf(hf.model, feeds)
    for how, model in _load_both(arch, hf.folder).items():
        compared = assert_same_outputs(run_ours(model, feeds), theirs, ATOL, f"{arch} {fmt} {name} via {how}")
        expected = {"VisualBertModel": {"last_hidden_state", "pooler_output"},
                    "VisualBertForPreTraining": {"prediction_logits", "seq_relationship_logits"}}.get(arch, {"logits"})
        assert set(compared) == expected


@pytest.mark.parametrize("arch", HF_CLASSES)
def test_optional_inputs_default_like_transformers(arch, hf_checkpoint):
    """Only the inputs a head needs: masks and segment ids default as in HF (visual token type 1)."""
    hf = hf_checkpoint(arch)
    spec = _graph(arch, VisualBertConfig.from_dict(hf.config))
    feeds = spec.make_inputs(_sizes(arch, dict(batch=2, text=6, visual=4)), np.random.default_rng(1), pad=False)
    keep = {"input_ids", "visual_embeds"}
    if arch == "VisualBertForQuestionAnswering":
        keep.add("attention_mask")  # needed to find the answer token
    if arch == "VisualBertForRegionToPhraseAlignment":
        keep |= {"attention_mask", "visual_attention_mask", "region_to_phrase_position"}  # HF reads their sizes
    feeds = {k: v for k, v in feeds.items() if k in keep}
    ours = getattr(vm, arch).from_pretrained(str(hf.folder))
    assert_same_outputs(run_ours(ours, feeds), run_hf(hf.model, feeds), ATOL, arch)


def test_region_to_phrase_padding_positions_and_masked_regions(hf_checkpoint):
    """-1 phrase positions read position 0; masked regions get HF's finfo.min logits exactly."""
    arch = "VisualBertForRegionToPhraseAlignment"
    hf = hf_checkpoint(arch)
    spec = _graph(arch, VisualBertConfig.from_dict(hf.config))
    feeds = spec.make_inputs(dict(batch=2, text=6, visual=5, phrases=4), np.random.default_rng(3), pad=True)
    feeds["region_to_phrase_position"][:] = [[-1, 0, 3, 9], [-1, -1, 10, 2]]
    feeds["visual_attention_mask"][:] = [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    ours = run_ours(getattr(vm, arch).from_pretrained(str(hf.folder)), feeds)
    assert_same_outputs(ours, run_hf(hf.model, feeds), ATOL, arch)
    logits = ours["logits"]
    assert (logits[0, :, 3:] == torch.finfo(torch.float32).min).all()
    torch.testing.assert_close(logits[0, 0], logits[0, 1])  # -1 reads position 0
    torch.testing.assert_close(logits[1, 0], logits[1, 1])  # both -1 -> position 0


@pytest.mark.slow
def test_full_size_question_answering(tmp_path):
    """BERT-base VisualBERT-VQA shape (visual_embedding_dim 2048, 3129 labels): the real checkpoint's size."""
    import transformers

    cfg = transformers.VisualBertConfig(visual_embedding_dim=2048, num_labels=3129)
    torch.manual_seed(0)
    hf = perturb_(transformers.VisualBertForQuestionAnswering(cfg), seed=0).eval()
    save_hf_model(hf, tmp_path, safe=True)
    ours = vm.VisualBertForQuestionAnswering.from_pretrained(str(tmp_path))
    assert ours.config.hidden_size == 768 and ours.config.num_hidden_layers == 12
    assert ours.config.num_labels == 3129 and ours.config.visual_embedding_dim == 2048
    spec = _graph("VisualBertForQuestionAnswering", ours.config)
    rng = np.random.default_rng(0)
    for sizes, pad in ((dict(batch=1, text=20, visual=36), False), (dict(batch=3, text=14, visual=10), True)):
        feeds = spec.make_inputs(sizes, rng, pad=pad)
        assert_same_outputs(run_ours(ours, feeds), run_hf(hf, feeds), ATOL, f"base QA {sizes} pad={pad}")
