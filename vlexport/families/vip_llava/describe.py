"""Export description of VipLlava (plain data; no torch): graphs "vision", "embed" and "decoder".

    vision:  pixel_values (images, 3, S, S) -> image_features (images, patches, H)
    embed:   input_ids (batch, text) -> inputs_embeds (batch, text, H)
    decoder: inputs_embeds (batch, text, H), attention_mask / position_ids (batch, text),
             cache_mask (batch, past), past_key.{i} / past_value.{i} (batch, kv_heads, past, head)
             -> logits (batch, 1, vocab) of the last position (all a generation step needs, as HF's
             logits_to_keep=1), new_key.{i} / new_value.{i} (batch, kv_heads, text, head)

"past" is the cache's capacity (the runtime allocates it once per generate() call: prompt + new
tokens; cache_mask marks the filled slots), "text" the tokens of one call: the whole prompt (576
image tokens per image included) in the first, one token per step after it. One cache input per
layer, so the runtime hands ORT views of its buffers without copying the cache every step.
In the fp16 graphs the cache tensors are float16 at the graph boundary (GraphSpec.fp16_io).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ConfigError, UnknownModelError
from vlexport.specs import AxisRange, GraphSpec, InputSpec, ModelSpec, OutputSpec, cache_names, merge_axes

FAMILY = "vip_llava"
TASKS = {"VipLlavaForConditionalGeneration": "image-text-to-text"}


def default_axes(config) -> dict[str, AxisRange]:
    n_pos, N = config.text_config.max_position_embeddings, config.image_seq_length
    text = min(n_pos, N + 256)  # one image and a question, in the first call
    past = min(n_pos, N + 512)  # ... and the answer
    return {"images": AxisRange(1, 1, 8), "batch": AxisRange(1, 1, 8), "text": AxisRange(1, min(N + 32, text), text),
            "past": AxisRange(1, min(N + 64, past), past)}


def describe(architecture: str, config, axes: dict | None = None) -> ModelSpec:
    if architecture not in TASKS:
        raise UnknownModelError(f"unknown VipLlava architecture '{architecture}'; known: {sorted(TASKS)}")
    v, t = config.vision_config, config.text_config
    H, V, L = t.hidden_size, t.vocab_size, t.num_hidden_layers
    S, N = v.image_size, config.image_seq_length
    vision = GraphSpec(
        "vision",
        [InputSpec("pixel_values", ("images", v.num_channels, S, S), dtype="float32",
                   doc="CLIP-normalized images (the processor resizes and crops to image_size)")],
        [OutputSpec("image_features", ("images", N, H))],
        make_inputs=lambda sizes, rng, pad=True: {"pixel_values": rng.uniform(
            -1.8, 2.1, size=(sizes["images"], v.num_channels, S, S)).astype(np.float32)})
    embed = GraphSpec(
        "embed",
        [InputSpec("input_ids", ("batch", "text"), dtype="int64", low=0, high=V, doc="token ids")],
        [OutputSpec("inputs_embeds", ("batch", "text", H))],
        make_inputs=lambda sizes, rng, pad=True: {"input_ids": rng.integers(
            0, V, size=(sizes["batch"], sizes["text"]), dtype=np.int64)})
    cache = ("batch", t.kv_heads, "past", t.head_size)
    new = ("batch", t.kv_heads, "text", t.head_size)
    ids = dict(dtype="int64")
    decoder = GraphSpec(
        "decoder",
        [InputSpec("inputs_embeds", ("batch", "text", H), dtype="float32", doc="the new tokens' embeddings"),
         InputSpec("attention_mask", ("batch", "text"), low=0, high=2, doc="1 for real new tokens, 0 for padding",
                   **ids),
         InputSpec("position_ids", ("batch", "text"), low=0, high=t.max_position_embeddings, **ids),
         InputSpec("cache_mask", ("batch", "past"), low=0, high=2, doc="1 for the filled cache slots", **ids),
         *[InputSpec(n, cache, dtype="float32") for n in cache_names(L, "past")]],
        [OutputSpec("logits", ("batch", 1, V), classes=True),
         *[OutputSpec(n, new, row_axes=(1, 3)) for n in cache_names(L, "new")]],  # cache rows: per token, all heads
        make_inputs=lambda sizes, rng, pad=True: _decoder_inputs(t, sizes, rng, pad),
        make_real_inputs=lambda sizes, rng, pad, proc, run: _real_decoder_inputs(t, sizes, rng, pad, proc, run),
        real_inputs_use=("embed", "decoder"), fp16_io=tuple(cache_names(L, "past") + cache_names(L, "new")))
    ranges = merge_axes(default_axes(config), axes, architecture)
    if ranges["past"].max > t.max_position_embeddings:
        raise ConfigError(f"a cache of {ranges['past'].max} positions was asked for; the decoder has "
                          f"{t.max_position_embeddings} (max_position_embeddings)")
    return ModelSpec(family=FAMILY, architecture=architecture, task=TASKS[architecture],
                     graphs=[vision, embed, decoder], axes=ranges, pipeline="chat")


def _decoder_inputs(t, sizes, rng, pad):
    """A generation call: the first k cache slots filled (k random), then the new tokens (the first rows
    left-padded when `pad`), positions counting the real tokens."""
    B, T, P = sizes["batch"], sizes["text"], sizes["past"]
    filled = rng.integers(0, P + 1, size=B) if pad else np.full(B, P)
    cache_mask = (np.arange(P) < filled[:, None]).astype(np.int64)
    lead = rng.integers(0, T, size=B) if pad else np.zeros(B, np.int64)  # left padding of the new tokens
    lead[0] = 0  # one row unpadded
    attention_mask = (np.arange(T)[None] >= lead[:, None]).astype(np.int64)
    positions = filled[:, None] + np.cumsum(attention_mask, axis=1) - 1
    positions = np.clip(np.where(attention_mask == 1, positions, 0), 0, t.max_position_embeddings - 1)
    feeds = {"inputs_embeds": rng.normal(0, 1, size=(B, T, t.hidden_size)).astype(np.float32),
             "attention_mask": attention_mask, "position_ids": positions.astype(np.int64), "cache_mask": cache_mask}
    shape = (B, t.kv_heads, P, t.head_size)
    for name in cache_names(t.num_hidden_layers, "past"):
        feeds[name] = (rng.normal(0, 1, size=shape) * cache_mask[:, None, :, None]).astype(np.float32)
    return feeds


def _real_decoder_inputs(t, sizes, rng, pad, processor, run):
    """A generation call on real text: each row is corpus text through the tokenizer and the fp32 "embed"
    graph; its first k tokens (k random, as the random maker's filled slots) are already in the cache,
    their keys/values computed by the fp32 "decoder" graph itself (one prefill call), and the next tokens
    are this call's (the first rows left-padded with the pad token's embedding when `pad`). Random
    embeddings and caches put a trained decoder far off its inputs: its activations there say little about
    its int4/fp16 error on real prompts. (Image-feature positions are not included: random vision towers
    in the tests, and a trained one's features are projected into the same embedding space.)"""
    from vlexport import calibration

    B, T, P = sizes["batch"], sizes["text"], sizes["past"]
    feeds = _decoder_inputs(t, sizes, rng, pad)  # the mask/position layout of the random maker
    filled = feeds["cache_mask"].sum(axis=1)
    rows = []
    for _ in range(B):  # corpus sentences joined until the row holds a full prefix and a full call
        ids: list = []
        while len(ids) < P + T:
            text = " ".join(calibration.sample_texts(rng, 4))
            ids += processor.tokenizer([text], padding=False, return_tensors=None)["input_ids"][0]
        rows.append(ids[:P + T])
    ids = np.minimum(np.asarray(rows, np.int64), t.vocab_size - 1)
    pad_id = t.pad_token_id if t.pad_token_id is not None and 0 <= t.pad_token_id < t.vocab_size else 0
    mask = feeds["attention_mask"]
    new_ids = np.take_along_axis(ids, filled[:, None] + np.arange(T)[None], axis=1)
    new_ids = np.where(mask == 1, new_ids, pad_id)  # left padding holds the pad token, as the processor's
    # real tokens in this call: positions continue after the cache's (the random maker's cumsum on its mask)
    feeds["inputs_embeds"] = run("embed", {"input_ids": new_ids})["inputs_embeds"].astype(np.float32)
    k = int(filled.max())
    shape = (B, t.kv_heads, P, t.head_size)
    for name in cache_names(t.num_hidden_layers, "past"):
        feeds[name] = np.zeros(shape, np.float32)
    if k:
        prefix_mask = (np.arange(k)[None] < filled[:, None]).astype(np.int64)  # right-padded prefix
        prefill = {"inputs_embeds": run("embed", {"input_ids": np.where(prefix_mask == 1, ids[:, :k], pad_id)})[
            "inputs_embeds"].astype(np.float32), "attention_mask": prefix_mask,
            "position_ids": np.clip(np.arange(k)[None].repeat(B, 0), 0, t.max_position_embeddings - 1),
            "cache_mask": np.zeros((B, 1), np.int64)}
        for name in cache_names(t.num_hidden_layers, "past"):
            prefill[name] = np.zeros((B, t.kv_heads, 1, t.head_size), np.float32)
        out = run("decoder", prefill)
        for name in cache_names(t.num_hidden_layers, "past"):
            kv = out[name.replace("past_", "new_")]
            feeds[name][:, :, :k] = kv * prefix_mask[:, None, :, None]  # slots past a row's prefix: masked
    return feeds
