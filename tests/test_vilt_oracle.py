"""Our ViLT against `transformers` (the oracle): perturbed random HF models saved by save_pretrained
(safetensors), loaded by vlexport through `from_pretrained(folder)`, equal outputs within 1e-5.

What is compared, and why not everything: HF's `visual_embed` shuffles the valid image patches
with torch.multinomial (max_image_length=-1) and, when the images of a batch differ in size, pads
each example with randomly drawn masked patches up to the batch's largest valid count. Ours keeps
every patch in row-major order and masks the padded ones. Attention is permutation-equivariant and
masked keys get zero weight, so these are equal within 1e-5: the text rows and the image [CLS] row of
last_hidden_state, the pooler output and every head's logits. The image-patch rows are compared as
SETS: every valid patch row of ours matches an HF valid patch row and vice versa, and the counts are
equal (HF's mask of which of its rows are valid comes from re-running its visual_embed under the
same seed). Masked padded-patch rows are not compared (HF draws them at random, with repeats).

The ViLT family is not registered in vlexport yet: this module registers it (module fixture) so
the generic loader finds it, and unregisters it afterwards.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from oracle import assert_same_outputs, perturb_, run_hf, run_ours, save_hf_model, to_torch, write_checkpoint
from vilt_kit import HF_CLASSES, NLVR2, TASKS, hf_config, make_feeds, make_hf_model
from vlexport import families
from vlexport.errors import ConfigError
from vlexport.families.vilt import model as vm
from vlexport.families.vilt.config import ViltConfig

ATOL = 1e-5

# (name, batch, text, image sizes (h, w) cycled over the batch's images, pad text, canvas)
CASES = [
    ("b1-square", 1, 6, [(64, 64)], False, None),
    ("b2-mixed", 2, 8, [(64, 96), (48, 64)], True, None),
    ("b3-nonsquare", 3, 9, [(96, 48), (64, 64), (32, 80)], True, None),
    ("b4-mixed-tiny", 4, 11, [(128, 64), (64, 128), (80, 48), (16, 16)], True, None),  # a one-patch image
    # padded to a size that is no multiple of the patch (the processor never does; users may)
    ("b2-non-multiple", 2, 5, [(72, 88), (50, 40)], True, (72, 88)),
]


@pytest.fixture(scope="module")
def vilt_family():
    """Register the (not yet built-in) ViLT family for this module; unregister afterwards."""
    already = "vilt" in families.names()
    if not already:
        families.register(families.Family(
            name="vilt", model_types=("vilt",), architectures=dict(TASKS), config_from_dict=ViltConfig.from_dict,
            describe=lambda *a, **k: None, model_module="vlexport.families.vilt.model",
            load_processor=lambda *a: None, base_prefix="vilt.",
            head_prefixes=("mlm_score.", "classifier.", "rank_output.")))
    yield families.get("vilt")
    if not already:
        families.unregister("vilt")


@pytest.fixture(scope="module")
def checkpoint(vilt_family, tmp_path_factory):
    """checkpoint(arch) -> (HF model, folder written by save_pretrained), made once per module."""
    cache = {}

    def get(arch):
        if arch not in cache:
            model = make_hf_model(arch)
            folder = save_hf_model(model, tmp_path_factory.mktemp(f"hf-{arch}"), safe=True)
            assert (folder / "model.safetensors").is_file()
            cache[arch] = (model, folder)
        return cache[arch]

    return get


INPUTS = ("input_ids", "attention_mask", "token_type_ids", "pixel_values", "pixel_mask")


class Positional(torch.nn.Module):
    """Our model called with positional inputs, returning its outputs as a tuple (for the exporters)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask):
        return tuple(self.model(input_ids, attention_mask, token_type_ids, pixel_values, pixel_mask).values())


def _load_both(arch, folder):
    """Ours by class (`<Class>.from_pretrained`) and through the generic loader (head from config.json)."""
    from vlexport.reference import from_pretrained

    by_class = getattr(vm, arch).from_pretrained(str(folder))
    loaded = from_pretrained(str(folder))
    assert loaded.architecture == arch and type(loaded.model).__name__ == arch == type(by_class).__name__
    assert loaded.weights == "checkpoint" and not loaded.model.training and not by_class.training
    return {"class": by_class, "loader": loaded.model}


def _hf_image_mask(hf_model, feeds, seed):
    """The 0/1 mask of HF's image rows ([CLS] + sampled patches) for a forward run under `seed`."""
    torch.manual_seed(seed)
    t = to_torch(feeds)
    with torch.no_grad():
        _, mask, _ = hf_model.embeddings.visual_embed(t["pixel_values"], t["pixel_mask"],
                                                      max_image_length=hf_model.config.max_image_length)
    return mask


def _our_patch_mask(feeds, patch):
    """Which of our Hp*Wp patch rows are valid, from the pixel mask as HF computes it (nearest)."""
    m = torch.from_numpy(feeds["pixel_mask"])[:, None].float()
    H, W = m.shape[-2:]
    return torch.nn.functional.interpolate(m, size=(H // patch, W // patch)).flatten(1) > 0


def assert_same_patch_rows(ours, theirs, our_valid, their_valid, atol=ATOL, what=""):
    """Per example: the valid image-patch rows of ours and HF's are the same set of vectors."""
    worst = 0.0
    for b in range(ours.shape[0]):
        a, h = ours[b][our_valid[b]], theirs[b][their_valid[b]]
        assert a.shape[0] == h.shape[0] > 0, f"{what} example {b}: {a.shape[0]} valid patches vs HF {h.shape[0]}"
        dist = (a[:, None, :] - h[None, :, :]).abs().amax(-1)  # (ours, HF) max-abs distance
        ours_to_hf, hf_to_ours = dist.min(1).values.max().item(), dist.min(0).values.max().item()
        assert ours_to_hf <= atol and hf_to_ours <= atol, f"{what} example {b}: patch rows differ " \
            f"(ours->HF {ours_to_hf:.3g}, HF->ours {hf_to_ours:.3g})"
        assert (dist <= atol).sum(1).eq(1).all(), f"{what} example {b}: a patch row of ours matches several HF rows"
        worst = max(worst, ours_to_hf, hf_to_ours)
    return worst


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("arch", HF_CLASSES)
def test_head_matches_transformers(arch, case, checkpoint):
    name, batch, text, sizes, pad, canvas = case
    hf, folder = checkpoint(arch)
    config = json.loads((folder / "config.json").read_text())
    rng = np.random.default_rng(sum(map(ord, arch + name)))
    feeds = make_feeds(arch, config, batch, text, sizes, rng, pad_text=pad, canvas=canvas)
    if batch > 1:  # the batch really pads its images (and its text when asked)
        assert (feeds["pixel_mask"] == 0).any() and (not pad or (feeds["attention_mask"] == 0).any())
    seed = 1234
    torch.manual_seed(seed)
    theirs = run_hf(hf, feeds)
    for how, model in _load_both(arch, folder).items():
        ours = run_ours(model, feeds)
        what = f"{arch} {name} via {how}"
        if arch != "ViltModel":
            assert set(assert_same_outputs(ours, theirs, ATOL, what)) == {"logits"}
            continue
        # text rows and the image [CLS] row sit at the same places; the patch rows are compared as sets
        keep = text + 1
        assert ours["last_hidden_state"].shape[1] == keep + _our_patch_mask(feeds, config["patch_size"]).shape[1]
        def fixed(out):
            return {"last_hidden_state": out["last_hidden_state"][:, :keep], "pooler_output": out["pooler_output"]}

        assert_same_outputs(fixed(ours), fixed(theirs), ATOL, what)
        their_valid = _hf_image_mask(hf, feeds, seed)[:, 1:].bool()
        assert their_valid.shape[1] == theirs["last_hidden_state"].shape[1] - keep
        assert_same_patch_rows(ours["last_hidden_state"][:, keep:], theirs["last_hidden_state"][:, keep:],
                               _our_patch_mask(feeds, config["patch_size"]), their_valid, ATOL, what)


def test_optional_inputs_default_like_transformers(checkpoint):
    """Without attention_mask, token_type_ids and pixel_mask: defaults as in HF (ones, zeros, ones)."""
    for arch in ("ViltForQuestionAnswering", NLVR2):
        hf, folder = checkpoint(arch)
        config = json.loads((folder / "config.json").read_text())
        feeds = make_feeds(arch, config, 2, 6, [(64, 96)], np.random.default_rng(5), pad_text=False)
        feeds = {k: feeds[k] for k in ("input_ids", "pixel_values")}
        ours = getattr(vm, arch).from_pretrained(str(folder))
        assert_same_outputs(run_ours(ours, feeds), run_hf(hf, feeds), ATOL, arch)


def test_position_grid_is_resized_per_image(checkpoint):
    """The same image alone and padded beside a larger one gives the same answer: its position grid
    is resized to its own valid patch rectangle, not to the padded canvas."""
    hf, folder = checkpoint("ViltForQuestionAnswering")
    ours = vm.ViltForQuestionAnswering.from_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    feeds = make_feeds("ViltForQuestionAnswering", config, 2, 6, [(48, 32), (96, 112)], np.random.default_rng(2),
                       pad_text=False)
    alone = {k: v[:1] for k, v in feeds.items()}
    alone["pixel_values"] = alone["pixel_values"][..., :48, :32]
    alone["pixel_mask"] = alone["pixel_mask"][..., :48, :32]
    both = run_ours(ours, feeds)["logits"]
    torch.testing.assert_close(both[:1], run_ours(ours, alone)["logits"], atol=ATOL, rtol=0)
    # and the grid matters: with the position grid zeroed the answer changes
    with torch.no_grad():
        ours.vilt.embeddings.position_embeddings[:, 1:] = 0
    assert (run_ours(ours, alone)["logits"] - both[:1]).abs().max() > 1e-3


def test_base_model_loads_from_a_head_checkpoint(checkpoint):
    """ViltModel.from_pretrained(QA folder) drops the head (as HF's base-class loading does)."""
    hf, folder = checkpoint("ViltForQuestionAnswering")
    base = vm.ViltModel.from_pretrained(str(folder))
    feeds = make_feeds("ViltModel", {"vocab_size": 99}, 2, 5, [(64, 64), (32, 48)], np.random.default_rng(3))
    with torch.no_grad():
        theirs = hf.vilt(**to_torch(feeds)).pooler_output
    torch.testing.assert_close(run_ours(base, feeds)["pooler_output"], theirs, atol=ATOL, rtol=0)


def test_masked_lm_ties_or_keeps_its_own_decoder(checkpoint, tmp_path):
    """save_pretrained drops the tied decoder weight: ours ties it. An original/4.x checkpoint stores
    its own (here different) decoder weight, and its bias as `mlm_score.bias`: ours unties and uses it."""
    arch = "ViltForMaskedLM"
    hf, folder = checkpoint(arch)
    tied = vm.ViltForMaskedLM.from_pretrained(str(folder))
    word = tied.vilt.embeddings.text_embeddings.word_embeddings.weight
    assert tied.mlm_score.decoder.weight.data_ptr() == word.data_ptr()

    untied = make_hf_model(arch, seed=3)
    with torch.no_grad():
        untied.mlm_score.decoder.weight = torch.nn.Parameter(torch.randn(untied.mlm_score.decoder.weight.shape))
    state = dict(untied.state_dict())
    state["mlm_score.bias"] = state.pop("mlm_score.decoder.bias")  # the 4.x name
    cfg = {**json.loads((folder / "config.json").read_text()), "tie_word_embeddings": False}
    write_checkpoint(tmp_path / "own", cfg, state)
    ours = vm.ViltForMaskedLM.from_pretrained(str(tmp_path / "own"))
    own = ours.mlm_score.decoder.weight
    assert own.data_ptr() != ours.vilt.embeddings.text_embeddings.word_embeddings.weight.data_ptr()
    torch.testing.assert_close(own, untied.mlm_score.decoder.weight)
    feeds = make_feeds(arch, cfg, 2, 7, [(64, 48), (32, 64)], np.random.default_rng(4))
    assert_same_outputs(run_ours(ours, feeds), run_hf(untied, feeds), ATOL, "MLM own decoder")


def test_onnx_export_dynamic_and_matches_at_unseen_sizes(checkpoint, tmp_path):
    """torch.onnx.export(dynamo=True) with dynamic batch/text/height/width (height and width as
    multiples of the patch): onnxruntime matches our PyTorch model at sizes it was not traced with."""
    import onnxruntime as ort

    arch = "ViltForQuestionAnswering"
    hf, folder = checkpoint(arch)
    ours = vm.ViltForQuestionAnswering.from_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    p = config["patch_size"]
    names = list(INPUTS)
    Dim = torch.export.Dim
    batch, text, hp, wp = Dim("batch", min=1, max=8), Dim("text", min=1, max=40), Dim("hp", min=1, max=20), \
        Dim("wp", min=1, max=20)
    bt, img, msk = {0: batch, 1: text}, {0: batch, 2: p * hp, 3: p * wp}, {0: batch, 1: p * hp, 2: p * wp}
    trace = make_feeds(arch, config, 2, 5, [(64, 96), (48, 64)], np.random.default_rng(0))
    path = tmp_path / "vilt_qa.onnx"
    with torch.no_grad():
        torch.onnx.export(Positional(ours.eval()), tuple(to_torch(trace)[n] for n in names), str(path),
                          input_names=names, output_names=["logits"], dynamic_shapes=(bt, bt, bt, img, msk),
                          dynamo=True, verbose=False)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for batch_, text_, sizes in ((3, 9, [(128, 48), (96, 32), (16, 16)]), (1, 2, [(16, 160)]),
                                 (4, 13, [(80, 80), (32, 112), (64, 16), (48, 48)])):
        feeds = make_feeds(arch, config, batch_, text_, sizes, np.random.default_rng(batch_))
        onnx_logits = torch.from_numpy(session.run(None, feeds)[0])
        torch.testing.assert_close(onnx_logits, run_ours(ours, feeds)["logits"], atol=1e-4, rtol=0)
        torch.testing.assert_close(onnx_logits, run_hf(hf, feeds)["logits"], atol=1e-4, rtol=0)


@pytest.mark.parametrize("arch", ["ViltModel", NLVR2])
def test_traces_with_dynamic_shapes(arch, checkpoint):
    """torch.export with dynamic batch, text, height and width: no data-dependent guard. The base
    model (every output, the patch rows included) and NLVR2 (images folded into the batch); the QA
    head goes through the ONNX export above, the other heads are a linear layer or two on top."""
    p = hf_config("ViltModel").patch_size
    Dim = torch.export.Dim
    _, folder = checkpoint(arch)
    model = getattr(vm, arch).from_pretrained(str(folder))
    config = json.loads((folder / "config.json").read_text())
    feeds = to_torch(make_feeds(arch, config, 2, 5, [(64, 96), (48, 64)], np.random.default_rng(0)))
    batch, text, hp, wp = Dim("batch", max=8), Dim("text", max=40), Dim("hp", max=20), Dim("wp", max=20)
    lead = 2 if arch == NLVR2 else 1  # NLVR2's images axis is fixed (the classifier reads num_images * H)
    shapes = {"input_ids": {0: batch, 1: text}, "attention_mask": {0: batch, 1: text},
              "token_type_ids": {0: batch, 1: text}, "pixel_values": {0: batch, lead + 1: p * hp, lead + 2: p * wp},
              "pixel_mask": {0: batch, lead: p * hp, lead + 1: p * wp}}
    ep = torch.export.export(Positional(model), tuple(feeds[n] for n in INPUTS),
                             dynamic_shapes=tuple(shapes[n] for n in INPUTS))
    other = make_feeds(arch, config, 3, 8, [(32, 112), (80, 48)], np.random.default_rng(1))
    got = ep.module()(*(torch.from_numpy(other[n]) for n in INPUTS))
    want = run_ours(model, other)
    assert len(got) == len(want)
    for g, (k, w) in zip(got, want.items()):
        torch.testing.assert_close(g, w, atol=1e-5, rtol=0, msg=lambda m: f"{arch} {k}: {m}")


def test_config_round_trip_and_errors(vilt_family, tmp_path):
    d = hf_config(NLVR2).to_dict()
    cfg = ViltConfig.from_dict(d)
    assert cfg.num_images == 2 and cfg.modality_type_vocab_size == 3 and cfg.grid_size == 4
    again = cfg.to_dict()
    assert again["initializer_range"] == d["initializer_range"] and again["model_type"] == "vilt"
    assert ViltConfig.from_dict(again) == cfg
    with pytest.raises(ConfigError, match="max_image_length=200 is not supported"):
        ViltConfig.from_dict({**d, "max_image_length": 200})
    with pytest.raises(ConfigError, match="hidden_size 30 is not a multiple of num_attention_heads 4"):
        ViltConfig.from_dict({**d, "hidden_size": 30})
    with pytest.raises(ConfigError, match="num_images >= 1"):
        vm.ViltForImagesAndTextClassification(ViltConfig.from_dict({**d, "num_images": -1}))
    # through the loader: a folder whose config.json asks for patch sampling is refused up front
    write_checkpoint(tmp_path / "m", {**d, "max_image_length": 40, "architectures": ["ViltForQuestionAnswering"]}, {})
    with pytest.raises(ConfigError, match="max_image_length"):
        vm.ViltForQuestionAnswering.from_pretrained(str(tmp_path / "m"))


@pytest.mark.slow
def test_full_size_question_answering(vilt_family, tmp_path):
    """BERT-base ViLT-VQA shape (patch 32, 384 grid, 3129 labels): the public checkpoint's size."""
    import transformers

    cfg = transformers.ViltConfig(num_labels=3129)
    torch.manual_seed(0)
    hf = perturb_(transformers.ViltForQuestionAnswering(cfg), seed=0).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        hf.vilt.embeddings.position_embeddings.normal_(0, 0.02, generator=g)
        hf.vilt.embeddings.cls_token.normal_(0, 0.02, generator=g)
    save_hf_model(hf, tmp_path, safe=True)
    ours = vm.ViltForQuestionAnswering.from_pretrained(str(tmp_path))
    assert ours.config.hidden_size == 768 and ours.config.num_hidden_layers == 12 and ours.config.num_labels == 3129
    # two COCO-like images as the processor sizes them (short side 384), padded to 384 x 576
    feeds = make_feeds("ViltForQuestionAnswering", cfg.to_dict(), 2, 12, [(384, 576), (384, 512)],
                       np.random.default_rng(0))
    assert_same_outputs(run_ours(ours, feeds), run_hf(hf, feeds), ATOL, "base VQA")
