"""The captioner at run time: HF's `generate()` on the "encoder" and "decoder" graphs, numpy only.

    model = vlexport.load("engines/tiny-captioner")
    ids = model.generate(pixel_values=model.processor(images=photo)["pixel_values"], num_beams=4)
    model.processor.batch_decode(ids, skip_special_tokens=True)
    model.caption([photo1, photo2])              # processor + generate + decode

The encoder graph runs once per call and gives every layer's cross-attention keys/values; the
decoder graph then runs once per generated token with the KV cache (vlexport.runtime.generation.
LayerKVCache: preallocated layer-major buffers of max_length slots, written in place, each layer's
view fed to the graph as is; beam search reorders rows).
The cache capacity must lie within the artifact's "past" range (`--max-past-len` at build time).
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ArtifactError, InputError
from vlexport.runtime.generation import GenerationSettings, LayerKVCache, beam_search, greedy_or_sample
from vlexport.runtime.pipelines import Pipeline
from vlexport.specs import cache_names


def check_decoder_inputs(names: list, layers: int, where) -> None:
    """The decoder graph must take one cache tensor per layer (the layout this runtime feeds)."""
    if "past_keys" in names:
        raise ArtifactError(f"{where}: its decoder graph takes the whole cache as one stacked input (past_keys), "
                            "the layout of vlexport builds before per-layer cache inputs; rebuild the artifact "
                            "with this version")
    expected = ["input_ids", "position_ids", "cache_mask", *cache_names(layers, "past"), *cache_names(layers, "cross")]
    if list(names) != expected:
        raise ArtifactError(f"{where}: the decoder graph's inputs ({', '.join(names[:5])}, ...: {len(names)}) are "
                            f"not the {len(expected)} a {layers}-layer captioner's decoder takes "
                            f"({', '.join(expected[:5])}, ...)")


class EncoderDecoderPipeline(Pipeline):
    def __init__(self, artifact, backends, family, chosen_because=""):
        super().__init__(artifact, backends, family, chosen_because)
        self.require_graphs("generate", "encoder", "decoder")
        self._cfg = family.config_from_dict(artifact.config)
        self._layers = self._cfg.decoder.n_layer
        check_decoder_inputs([spec.name for spec in artifact.inputs("decoder")], self._layers, artifact.path)

    def generation_defaults(self) -> dict:
        """config.json's generation ids, then the artifact's generation_config.json (as HF)."""
        from vlexport.runtime.generation import read_generation_config

        c = self._cfg
        d = {"decoder_start_token_id": c.start_id, "eos_token_id": c.eos_id, "pad_token_id": c.pad_id}
        d.update({k: v for k, v in read_generation_config(self.artifact.path).items() if v is not None})
        return d

    @property
    def cache_dtype(self):
        """The KV cache buffers' dtype: the decoder graph's (float16 for the fp16 graphs: GraphSpec.fp16_io)."""
        return np.dtype(getattr(self.backends["decoder"], "input_types", {}).get("past_key.0", np.float32))

    def encode(self, pixel_values) -> dict:
        return self.run_graph("encoder", self.prepare({"pixel_values": pixel_values}, "encoder"))

    def generate(self, pixel_values=None, streamer=None, **kwargs) -> np.ndarray:
        """Token ids (batch, length), the decoder start token first, as transformers' generate().
        kwargs: max_length, max_new_tokens, min_length, num_beams, do_sample, temperature, top_k, top_p,
        seed, no_repeat_ngram_size, length_penalty, early_stopping, eos/pad/decoder_start_token_id.
        streamer: called with each step's new tokens (batch,) (greedy and sampling)."""
        if pixel_values is None:
            raise InputError("generate() needs pixel_values (use model.processor(images=...))")
        s = GenerationSettings.resolve(self.generation_defaults(), kwargs)
        enc = self.encode(pixel_values)
        B = enc["cross_key.0"].shape[0]
        nb = s.num_beams
        if streamer is not None and nb > 1:
            raise InputError("streaming works with greedy decoding and sampling, not beam search")
        total = s.total_length(1)
        past = self._axes["past"]
        if not past.min <= total <= past.max:
            raise InputError(f"generating up to {total} tokens needs a KV cache of {total} positions; this artifact "
                             f"was built for {past.min}..{past.max} (rebuild with --max-past-len {total})")
        L = self._layers
        # each image's cross keys/values, once per beam row (beams of one image share them)
        cross = {n: np.repeat(enc[n], nb, axis=0) if nb > 1 else enc[n] for n in cache_names(L, "cross")}
        _, nh, _, hs = cross["cross_key.0"].shape
        cache = LayerKVCache(L, B * nb, nh, total, hs, dtype=self.cache_dtype)
        filled = np.ones((B * nb, 1), np.int64)  # every row's new token fills its slot (finished rows: pad, as HF)
        checked = []

        def step(input_ids, position_ids):
            feeds = {"input_ids": input_ids, "position_ids": np.ascontiguousarray(position_ids),
                     "cache_mask": cache.mask, **cross}
            for i in range(L):  # layer i's views of the layer-major buffers: read in place, no copy
                feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = cache.keys[i], cache.values[i]
            if not checked:  # the first step is checked against the specs; later ones have the same layout
                feeds = self.prepare(feeds, "decoder")
                checked.append(True)
            out = self.run_graph("decoder", feeds)
            cache.write([out[f"new_key.{i}"] for i in range(L)], [out[f"new_value.{i}"] for i in range(L)], filled)
            return out["logits"]

        def reorder(rows):
            cache.reorder(rows)

        prompt = np.full((B * nb, 1), s.decoder_start_token_id, np.int64)
        if nb > 1:
            return beam_search(step, reorder, prompt, s)
        return greedy_or_sample(step, prompt, s, streamer=streamer)

    def __call__(self, pixel_values=None, **kwargs):
        return self.generate(pixel_values=pixel_values, **kwargs)

    def caption(self, images, **kwargs) -> list[str]:
        """Images (PIL, arrays, paths) -> generated texts."""
        px = self.processor(images=images)["pixel_values"]
        return self.processor.batch_decode(self.generate(pixel_values=px, **kwargs), skip_special_tokens=True)
