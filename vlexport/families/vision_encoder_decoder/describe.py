"""Export description of VisionEncoderDecoder (plain data; no torch): graphs "encoder" and "decoder".

    encoder: pixel_values (batch, C, S, S) -> encoder_hidden_states (batch, N, H),
             cross_key.{i} / cross_value.{i} (batch, heads, N, head) per decoder layer
    decoder: input_ids, position_ids (batch, text); cache_mask (batch, past);
             past_key.{i} / past_value.{i} (batch, heads, past, head); cross_key.{i} / cross_value.{i}
             -> logits (batch, text, vocab), new_key.{i} / new_value.{i} (batch, heads, text, head)

"past" is the cache's capacity (the runtime allocates it once per generate() call, max_length
slots; cache_mask marks the filled ones), "text" the tokens fed in one call (1 per generation step).
N is fixed by the encoder's image size. One input per layer and tensor, so the runtime hands the backend
views of its cache buffers: a stacked (batch, layers, ...) cache made ONNX Runtime split (copy) all of it
every step, 18% of the fp32 step at B=8 on full-size vit-gpt2. In the fp16 graphs the cache tensors (past/new/cross keys and
values) are float16 at the graph boundary too, so the runtime keeps its cache buffers in fp16 (half
the memory, no per-step conversion); logits stay float32.
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ConfigError, UnknownModelError
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec, cache_names, merge_axes

FAMILY = "vision_encoder_decoder"
TASKS = {"VisionEncoderDecoderModel": "image-to-text"}


def default_axes(config) -> dict[str, AxisRange]:
    n = config.decoder.n_positions
    # batch counts decoder rows: images x beams (8 images with 4 beams)
    return {"batch": AxisRange(1, 1, 32), "text": AxisRange(1, 1, min(64, n)),
            "past": AxisRange(1, min(32, n), min(256, n))}


def describe(architecture: str, config, axes: dict | None = None) -> ModelSpec:
    if architecture not in TASKS:
        raise UnknownModelError(f"unknown vision-encoder-decoder architecture '{architecture}'; known: {sorted(TASKS)}")
    e, d = config.encoder, config.decoder
    N = e.num_patches + e.extra_tokens
    L, nh, hs, V = d.n_layer, d.n_head, d.head_size, d.vocab_size
    cross = ("batch", nh, N, hs)
    encoder = GraphSpec(
        "encoder",
        [InputSpec("pixel_values", ("batch", e.num_channels, e.image_size, e.image_size), dtype="float32",
                   doc="normalized images (the processor resizes to image_size)")],
        [OutputSpec("encoder_hidden_states", ("batch", N, d.hidden_size)),
         *[OutputSpec(n, cross) for n in cache_names(L, "cross")]],
        make_inputs=lambda sizes, rng, pad=True: {"pixel_values": rng.uniform(
            -1, 1, size=(sizes["batch"], e.num_channels, e.image_size, e.image_size)).astype(np.float32)},
        fp16_io=tuple(cache_names(L, "cross")))  # the fp16 graphs hand the cache over in fp16
    ids = dict(dtype="int64")
    cache = ("batch", nh, "past", hs)
    decoder = GraphSpec(
        "decoder",
        [InputSpec("input_ids", ("batch", "text"), low=0, high=V, doc="the new token(s)", **ids),
         InputSpec("position_ids", ("batch", "text"), low=0, high=d.n_positions, doc="their positions", **ids),
         InputSpec("cache_mask", ("batch", "past"), low=0, high=2, doc="1 for the filled cache slots", **ids),
         *[InputSpec(n, cache, dtype="float32", doc="a layer's self-attention keys/values, every slot")
           for n in cache_names(L, "past")],
         *[InputSpec(n, cross, dtype="float32", doc="from the encoder graph") for n in cache_names(L, "cross")]],
        [OutputSpec("logits", ("batch", "text", V), classes=True),
         *[OutputSpec(n, ("batch", nh, "text", hs)) for n in cache_names(L, "new")]],
        make_inputs=lambda sizes, rng, pad=True: _decoder_inputs(config, N, sizes, rng, pad),
        fp16_io=tuple(cache_names(L, "past") + cache_names(L, "cross") + cache_names(L, "new")),
        # the vocabulary projection (GPT-2's: 768 x 50257, 154 MB, tied to the token embedding) is a quarter of
        # an int8 decode step when kept fp32: it is tried in int8 too, and the gate decides
        int8_quantize_heads=True)
    ranges = default_axes(config)
    ranges = merge_axes(ranges, axes, architecture)
    if ranges["past"].max > d.n_positions:
        raise ConfigError(f"a cache of {ranges['past'].max} positions was asked for; the decoder has "
                          f"{d.n_positions} (n_positions)")
    return ModelSpec(family=FAMILY, architecture=architecture, task=TASKS[architecture], graphs=[encoder, decoder],
                     axes=ranges, pipeline="generate")


def _decoder_inputs(config, N, sizes, rng, pad):
    """A generation step: the first k slots of the cache filled (k random), the new tokens after them."""
    d = config.decoder
    B, T, P = sizes["batch"], sizes["text"], sizes["past"]
    L, nh, hs = d.n_layer, d.n_head, d.head_size
    filled = rng.integers(0, P + 1, size=B) if pad else np.full(B, P)
    filled = np.minimum(filled, d.n_positions - T)
    mask = (np.arange(P) < filled[:, None]).astype(np.int64)
    feeds = {"input_ids": rng.integers(0, d.vocab_size, size=(B, T), dtype=np.int64),
             "position_ids": (filled[:, None] + np.arange(T)[None]).astype(np.int64), "cache_mask": mask}
    for name in cache_names(L, "past"):
        feeds[name] = (rng.normal(0, 1, size=(B, nh, P, hs)) * mask[:, None, :, None]).astype(np.float32)
    for name in cache_names(L, "cross"):
        feeds[name] = rng.normal(0, 1, size=(B, nh, N, hs)).astype(np.float32)
    return feeds
