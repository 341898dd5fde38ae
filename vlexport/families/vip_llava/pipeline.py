"""VipLlava at run time: HF's `generate()` on the "vision", "embed" and "decoder" graphs, numpy only.

    model = vlexport.load("engines/tiny-vipllava")
    inputs = model.processor(text=model.processor.prompt("What is in the red box?"), images=photo)
    ids = model.generate(**inputs, max_new_tokens=32)         # prompt + answer ids, as HF
    model.processor.batch_decode(ids[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
    model.chat(photo, "What is in the red box?", draw="box:40,40,200,180")   # all of it, one string

The first decoder call (prefill) takes the whole prompt: its tokens embedded by the "embed" graph
and the `<image>` positions overwritten with the "vision" graph's features (one numpy boolean-mask
assignment, in reading order as HF's masked_scatter). Every later call takes one token per row.
Keys and values live in a preallocated layer-major cache (vlexport.runtime.generation.LayerKVCache)
whose per-layer views are the decoder's past inputs, read in place. Positions count the real tokens
of each row (left-padded batches), as HF's generate() derives them from the attention mask.
"""

from __future__ import annotations

import numpy as np

from vlexport.errors import ArtifactError, InputError
from vlexport.runtime.generation import GenerationSettings, LayerKVCache, beam_search, greedy_or_sample
from vlexport.runtime.pipelines import Pipeline, to_array

GRAPHS = {"vision", "embed", "decoder"}


class VipLlavaPipeline(Pipeline):
    def __init__(self, artifact, backends, family, chosen_because=""):
        super().__init__(artifact, backends, family, chosen_because)
        if set(backends) != GRAPHS:
            raise ArtifactError(f"the chat pipeline runs the graphs {sorted(GRAPHS)}; '{artifact.path}' has "
                                f"{sorted(backends)}")
        self._cfg = family.config_from_dict(artifact.config)

    def generation_defaults(self) -> dict:
        """The text config's eos / pad ids, then the artifact's generation_config.json (as HF)."""
        from vlexport.runtime.generation import read_generation_config

        d = {"eos_token_id": self._cfg.eos_id, "pad_token_id": self._cfg.pad_id}
        d.update({k: v for k, v in read_generation_config(self.artifact.path).items() if v is not None})
        return d

    @property
    def cache_dtype(self):
        """float16 for the fp16 decoder graph (its cache inputs are float16: GraphSpec.fp16_io)."""
        return np.dtype(getattr(self.backends["decoder"], "input_types", {}).get("past_key.0", np.float32))

    # ---- the pieces, each one graph
    def get_image_features(self, pixel_values) -> np.ndarray:
        """(images, 3, S, S) -> (images, patches, H) projected image features."""
        return self.run_graph("vision", self.prepare({"pixel_values": pixel_values}, "vision"))["image_features"]

    def embed(self, input_ids) -> np.ndarray:
        return self.run_graph("embed", self.prepare({"input_ids": input_ids}, "embed"))["inputs_embeds"]

    def prompt_embeds(self, input_ids, pixel_values=None) -> np.ndarray:
        """The prompt's embeddings with the image features at the `<image>` positions."""
        embeds = self.embed(input_ids).copy()
        image = np.asarray(input_ids) == self._cfg.image_token_index
        n = int(image.sum())
        if pixel_values is None:
            if n:
                raise InputError(f"input_ids hold {n} <image> tokens but no pixel_values were given")
            return embeds
        feats = self.get_image_features(pixel_values)
        if n != feats.shape[0] * feats.shape[1]:
            raise InputError(f"input_ids hold {n} <image> tokens but pixel_values hold {feats.shape[0]} image(s) of "
                             f"{feats.shape[1]} tokens each ({feats.shape[0] * feats.shape[1]}): use the processor, "
                             f"which expands every <image> to {feats.shape[1]} tokens")
        embeds[image] = feats.reshape(-1, feats.shape[-1])
        return embeds

    # ---- generation
    def generate(self, input_ids=None, attention_mask=None, pixel_values=None, streamer=None, **kwargs) -> np.ndarray:
        """Token ids (batch, prompt + new), as transformers' generate() for decoder-only models.
        kwargs: max_length, max_new_tokens, min_length, num_beams, do_sample, temperature, top_k, top_p,
        seed, no_repeat_ngram_size, length_penalty, early_stopping, eos_token_id, pad_token_id.
        streamer: called with each step's new tokens (batch,) (greedy and sampling)."""
        if input_ids is None:
            raise InputError("generate() needs input_ids (use model.processor(text=..., images=...))")
        kwargs.pop("return_dict_in_generate", None)
        ids = np.asarray(to_array("input_ids", input_ids))
        if ids.ndim != 2 or ids.dtype.kind not in "iu":
            raise InputError(f"input_ids must be a (batch, length) integer array, got {ids.dtype} {ids.shape}")
        ids = ids.astype(np.int64)
        B, P = ids.shape
        mask = np.ones_like(ids) if attention_mask is None else np.asarray(to_array("attention_mask", attention_mask))
        if mask.shape != ids.shape:
            raise InputError(f"attention_mask has shape {mask.shape}; expected input_ids' {ids.shape}")
        mask = mask.astype(np.int64)
        s = GenerationSettings.resolve(self.generation_defaults(), kwargs)
        nb = s.num_beams
        if streamer is not None and nb > 1:
            raise InputError("streaming works with greedy decoding and sampling, not beam search")
        total = s.total_length(P)
        past = self._axes["past"]
        if not past.min <= total <= past.max:
            raise InputError(f"a prompt of {P} tokens plus the new ones needs a KV cache of {total} positions; this "
                             f"artifact was built for {past.min}..{past.max} (rebuild with --max-past-len {total})")
        embeds = self.prompt_embeds(ids, pixel_values)
        if nb > 1:  # beams of one prompt are adjacent rows, as HF expands them
            ids, mask, embeds = (np.repeat(a, nb, axis=0) for a in (ids, mask, embeds))
        c = self._cfg.text_config
        R = B * nb
        cache = LayerKVCache(c.num_hidden_layers, R, c.kv_heads, total, c.head_size, dtype=self.cache_dtype)
        state = {"next_pos": np.maximum(mask.sum(axis=1), 1), "first": True}
        L = c.num_hidden_layers

        def step(input_ids, _positions):
            if state["first"]:  # the prefill: the whole prompt, positions counting its real tokens
                x, new_mask = embeds, mask
                positions = np.where(mask == 1, np.cumsum(mask, axis=1) - 1, 0)
            else:
                x, new_mask = self.embed(input_ids), np.ones_like(input_ids)
                positions = state["next_pos"][:, None].copy()
                state["next_pos"] = state["next_pos"] + 1
            feeds = {"inputs_embeds": x, "attention_mask": new_mask, "position_ids": positions.astype(np.int64),
                     "cache_mask": cache.mask}
            for i in range(L):
                feeds[f"past_key.{i}"], feeds[f"past_value.{i}"] = cache.keys[i], cache.values[i]
            if state["first"]:  # checked against the specs once; later calls have the same layout
                feeds = self.prepare(feeds, "decoder")
                state["first"] = False
            out = self.run_graph("decoder", feeds)
            cache.write([out[f"new_key.{i}"] for i in range(L)], [out[f"new_value.{i}"] for i in range(L)], new_mask)
            return out["logits"]

        def reorder(rows):
            cache.reorder(rows)
            state["next_pos"] = state["next_pos"][rows]

        if nb > 1:
            return beam_search(step, reorder, ids, s)
        return greedy_or_sample(step, ids, s, streamer=streamer)

    def __call__(self, input_ids=None, attention_mask=None, pixel_values=None, **kwargs):
        return self.generate(input_ids=input_ids, attention_mask=attention_mask, pixel_values=pixel_values, **kwargs)

    def chat(self, image, question: str, draw=None, color: str = "red", template: str | None = None, streamer=None,
             **kwargs) -> str:
        """One image (PIL, array or path) and a question -> the answer, in the checkpoint's prompt format
        (or `template`, with {} for the question and an <image> placeholder).
        draw: visual prompt spec(s) drawn on the image first ("box:x0,y0,x1,y1", see draw.py).
        streamer: called with the answer so far (a string) after every new token."""
        proc = self.processor
        if draw:
            from vlexport.families.vip_llava.draw import draw_visual_prompt, load_image

            image = draw_visual_prompt(load_image(image), draw, color=color)
        if not isinstance(question, str) or not question.strip():
            raise InputError(f"the question must be a non-empty string, got {question!r}")
        text = template.format(question) if template is not None else proc.prompt(question)
        if "max_new_tokens" not in kwargs and "max_length" not in kwargs:  # HF's max_length 20 < any image prompt
            kwargs["max_new_tokens"] = self.generation_defaults().get("max_new_tokens") or 32
        inputs = proc(text=text, images=image)
        P = inputs["input_ids"].shape[1]
        tokens = []

        def on_tokens(new):
            tokens.append(int(new[0]))
            streamer(proc.decode(tokens, skip_special_tokens=True))

        ids = self.generate(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"],
                            pixel_values=inputs["pixel_values"], streamer=on_tokens if streamer else None, **kwargs)
        return proc.batch_decode(ids[:, P:], skip_special_tokens=True)[0].strip()
