"""Export description of the dual encoder (plain data; no torch): two graphs, "vision" and "text".

    vision: pixel_values (batch, C, S, S)                       -> image_embeds (batch, projection_dim)
    text:   input_ids, attention_mask[, token_type_ids] (batch, text) -> text_embeds (batch, projection_dim)

S is the vision tower's image_size (fixed: the processor resizes/crops to it). token_type_ids exist
only for towers whose tokenizer gives them (BERT; not RoBERTa). The text axis defaults to at most
128 tokens (zero-shot labels and queries are short; widen with --max-text-len up to the tower's
positions), the batch to 32 (embedding runs call in batches of 32).
Both outputs are projected, unnormalized features; the runtime derives HF's forward outputs.
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ConfigError, UnknownModelError
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec, merge_axes

FAMILY = "vision_text_dual_encoder"
TASKS = {"VisionTextDualEncoderModel": "zero-shot-image-classification"}
DEFAULT_TEXT_MAX = 128


def default_axes(config) -> dict[str, AxisRange]:
    longest = config.text_config.max_text_length
    text_max = min(DEFAULT_TEXT_MAX, longest)
    return {"batch": AxisRange(1, 1, 32), "text": AxisRange(2, min(16, text_max), text_max)}


def describe(architecture: str, config, axes: dict | None = None) -> ModelSpec:
    if architecture not in TASKS:
        raise UnknownModelError(f"unknown dual-encoder architecture '{architecture}'; known: {sorted(TASKS)}")
    v, t, P = config.vision_config, config.text_config, config.projection_dim
    ids = dict(dtype="int64")
    vision = GraphSpec(
        "vision",
        [InputSpec("pixel_values", ("batch", v.num_channels, v.image_size, v.image_size), dtype="float32",
                   doc="normalized images (the processor resizes and crops to image_size)")],
        [OutputSpec("image_embeds", ("batch", P))],
        make_inputs=lambda sizes, rng, pad=True: {"pixel_values": rng.uniform(
            -1, 1, size=(sizes["batch"], v.num_channels, v.image_size, v.image_size)).astype(np.float32)},
        make_real_inputs=_real_images, tolerance=1e-4)
    text_inputs = [
        InputSpec("input_ids", ("batch", "text"), low=0, high=t.vocab_size, doc="token ids", **ids),
        InputSpec("attention_mask", ("batch", "text"), low=0, high=2, default=1, doc="1 for real tokens", **ids),
    ]
    if t.has_token_type_ids:
        text_inputs.append(InputSpec("token_type_ids", ("batch", "text"), low=0, high=t.type_vocab_size, default=0,
                                     doc="segment ids", **ids))
    # int8: trained text towers (all-MiniLM-L6-v2) lose most at the FFN input projection, whose LayerNorm
    # outputs hold BERT's outlier features: it stays fp32 (worst per-row cosine on real sentences 0.9899
    # -> 0.9954). The build validates on random tokens, where a trained tower's int8 error peaks (2-token
    # texts: 0.989), so its gate there is 0.98; real-text figures are the MiniLM test's.
    text = GraphSpec("text", text_inputs, [OutputSpec("text_embeds", ("batch", P))],
                     make_inputs=lambda sizes, rng, pad=True: _text_inputs(t, sizes, rng, pad), tolerance=1e-4,
                     make_real_inputs=lambda sizes, rng, pad, proc: _real_texts(t, sizes, rng, pad, proc),
                     int8_cosine=0.98, int8_keep_fp32_weights=((t.hidden_size, t.intermediate_size),))

    ranges = default_axes(config)
    ranges = merge_axes(ranges, axes, architecture)
    if ranges["text"].max > t.max_text_length:
        raise ConfigError(f"text length up to {ranges['text'].max} was asked for, but this text tower takes at "
                          f"most {t.max_text_length} tokens")
    return ModelSpec(family=FAMILY, architecture=architecture, task=TASKS[architecture], graphs=[vision, text],
                     axes=ranges, pipeline="dual_encoder",
                     notes="graph outputs are projected, unnormalized features (HF's get_*_features)")


def _text_inputs(t, sizes, rng, pad):
    """Right-padded random texts: the padding holds the pad token (RoBERTa's positions read it)."""
    B, T = sizes["batch"], sizes["text"]
    real = rng.integers(min(2, T), T + 1, size=B) if pad else np.full(B, T)
    real[0] = T
    mask = (np.arange(T) < real[:, None]).astype(np.int64)
    ids = rng.integers(0, t.vocab_size - 1, size=(B, T), dtype=np.int64)
    ids[ids >= t.pad_token_id] += 1  # real tokens are never the pad token
    ids = np.where(mask == 1, ids, t.pad_token_id)
    feeds = {"input_ids": ids, "attention_mask": mask}
    if t.has_token_type_ids:
        feeds["token_type_ids"] = np.zeros((B, T), np.int64)
    return feeds


def _real_images(sizes, rng, pad, processor):
    """Random crops of real photographs through the image processor (resize, crop, normalize)."""
    from vlexport import calibration

    return {"pixel_values": processor(images=calibration.photo_crops(rng, sizes["batch"]))["pixel_values"]}


def _real_texts(t, sizes, rng, pad, processor):
    """Corpus captions and questions through the tokenizer, padded (or cut) to the case's length."""
    from vlexport import calibration

    feeds = _text_inputs(t, sizes, rng, pad)
    enc = processor(text=calibration.sample_texts(rng, sizes["batch"]), padding="max_length", truncation=True,
                    max_length=sizes["text"])
    for name in feeds:
        if name in enc:
            feeds[name] = np.asarray(enc[name], np.int64)
    feeds["input_ids"] = np.minimum(feeds["input_ids"], t.vocab_size - 1)
    return feeds
