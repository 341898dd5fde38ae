"""HF `transformers` eager runners of the dual encoder's two graphs, with our weights (the benchmark's
usual baseline; `Family.hf_graphs` points here).

    fns = graphs(our_reference_model, artifact.config)
    fns["vision"](pixel_values=t)   -> {"image_embeds": VisionTextDualEncoderModel.get_image_features(...).pooler_output}
    fns["text"](input_ids=..., attention_mask=..., token_type_ids=...) -> {"text_embeds": get_text_features(...).pooler_output}

`transformers.VisionTextDualEncoderModel` is built from the artifact's config
(`VisionTextDualEncoderConfig`) and given our state dict, key for key: ViT/DeiT and BERT/RoBERTa towers use HF's
checkpoint names already, CLIP-vision towers through `checkpoint_aliases()` inverted. Every HF
parameter must come from us and every one of ours must be used (`position_ids` buffers excepted).
"""

from __future__ import annotations

_DROP = ("architectures", "extra", "model_type")


def _tower(d: dict) -> dict:
    # our tower dicts carry our own defaults as explicit None (e.g. pooler_output_size): let HF's apply
    return {k: v for k, v in dict(d).items() if v is not None and k != "extra"}


def hf_config(config_dict: dict):
    import transformers

    kw = {k: v for k, v in config_dict.items() if k not in _DROP and k not in ("vision_config", "text_config")}
    return transformers.VisionTextDualEncoderConfig(vision_config=_tower(config_dict["vision_config"]),
                                                    text_config=_tower(config_dict["text_config"]), **kw)


def hf_model(ours, config_dict: dict):
    """transformers' VisionTextDualEncoderModel holding exactly our weights (eval mode).

    Our keys are HF's checkpoint names (CLIP-vision towers: after `checkpoint_aliases()` inverted), so
    `from_pretrained(None, config=..., state_dict=...)` loads them through transformers' own key
    conversions (transformers 5 renames some towers' modules, e.g. ViT's attention.attention.query ->
    attention.q_proj); its loading report must show nothing missing, unexpected or mismatched."""
    import torch
    import transformers

    cls = transformers.VisionTextDualEncoderModel
    cfg = hf_config(config_dict)
    state = ours.state_dict()
    inverse: dict[str, list[str]] = {}
    for ckpt, mine in (ours.checkpoint_aliases() if hasattr(ours, "checkpoint_aliases") else {}).items():
        inverse.setdefault(mine, []).append(ckpt)
    if inverse:  # a key may have several checkpoint spellings: take the one this model has
        with torch.device("meta"):
            theirs = set(cls(cfg).state_dict())
        state = {next((n for n in inverse[k] if n in theirs), inverse[k][0]) if k in inverse else k: v
                 for k, v in state.items()}
    bars = transformers.utils.logging.is_progress_bar_enabled()
    transformers.utils.logging.disable_progress_bar()
    try:
        model, info = cls.from_pretrained(None, config=cfg, state_dict=state, output_loading_info=True)
    finally:
        if bars:
            transformers.utils.logging.enable_progress_bar()
    missing = [k for k in info.get("missing_keys", []) if not k.endswith("position_ids")]
    bad = {"HF keys without a tensor of ours": sorted(missing)[:5],
           "our keys HF does not take": sorted(info.get("unexpected_keys", []))[:5],
           "shape mismatches": list(info.get("mismatched_keys", []))[:5], "errors": info.get("error_msgs", [])[:3]}
    if any(bad.values()):
        raise ValueError("our dual-encoder state dict does not load into transformers' VisionTextDualEncoderModel: "
                         + "; ".join(f"{k} {v}" for k, v in bad.items() if v))
    return model.float().eval()


def graphs(ours, config_dict: dict) -> dict:
    """{graph name: callable(**torch feeds) -> {output name: tensor}}, HF eager on our weights."""
    model = hf_model(ours, config_dict)

    def vision(pixel_values):
        return {"image_embeds": model.get_image_features(pixel_values=pixel_values).pooler_output}

    def text(input_ids, attention_mask=None, token_type_ids=None):
        out = model.get_text_features(input_ids=input_ids, attention_mask=attention_mask,
                                      token_type_ids=token_type_ids)
        return {"text_embeds": out.pooler_output}

    vision.model = text.model = model
    return {"vision": vision, "text": text}
