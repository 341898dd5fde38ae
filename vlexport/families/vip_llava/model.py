"""VipLlava in plain PyTorch, written for export.

Reads top to bottom: the CLIP vision tower (vlexport.towers.vit) run up to the deepest feature layer
-> the chosen hidden states, [CLS] dropped, concatenated -> the projector (LayerNorm, Linear, act,
Linear) -> image features, one per patch, in the Llama decoder's width. The prompt's `<image>`
tokens (one per patch) are embedded and then replaced by those features, in order; the Llama
decoder (vlexport.towers.llama) runs over a preallocated KV cache.

Names are transformers 5's (`model.vision_tower`, `model.multi_modal_projector`,
`model.language_model`, `lm_head`); the public checkpoints' transformers-4 layout
(`vision_tower.vision_model.*`, `language_model.model.*`, `language_model.lm_head`) loads through
checkpoint_aliases().

Three graphs, driven by the "chat" pipeline (vlexport.families.vip_llava.pipeline):
    vision:  pixel_values (images, 3, S, S) -> image_features (images, patches, H)
    embed:   input_ids (batch, text) -> inputs_embeds (batch, text, H)   (the token lookup)
    decoder: inputs_embeds, attention_mask, position_ids, cache_mask, past keys/values per layer
             -> logits, the new keys/values per layer
The merge of image features at `<image>` positions is a numpy assignment in the runtime (one
boolean-mask write: nothing a graph would do faster). The decoder graph is written layer by layer
(vlexport.towers.llama_onnx) rather than traced, so a 7B decoder never has to exist in PyTorch:
above STREAM_ABOVE parameters the model holds no decoder layers at all and the writer streams the
decoder's weights into the graph's external data one tensor at a time: from the checkpoint folder
(vlexport.weights.LazyTensors; PyTorch loads only the vision tower, the projector and the token
embeddings), or deterministic random ones (numpy) for `--random-weights`.
"""

from __future__ import annotations

import torch
from torch import nn

from vlexport.families.vip_llava.config import VipLlavaConfig
from vlexport.layers import ACTIVATIONS, Pretrained
from vlexport.outputs import ModelOutput
from vlexport.towers.llama import LlamaModel
from vlexport.towers.vit import VisionTower

# decoders above this many parameters (8 GB in fp32) are never built in PyTorch
STREAM_ABOVE = 2_000_000_000


class VipLlavaMultiModalProjector(nn.Module):
    def __init__(self, c: VipLlavaConfig):
        super().__init__()
        width = len(c.vision_feature_layers) * c.vision_config.hidden_size
        self.projector_layernorm = nn.LayerNorm(width, eps=c.projector_layernorm_eps)
        self.linear_1 = nn.Linear(width, c.text_config.hidden_size)
        self.linear_2 = nn.Linear(c.text_config.hidden_size, c.text_config.hidden_size)
        self.act = ACTIVATIONS[c.projector_hidden_act]

    def forward(self, x):
        return self.linear_2(self.act(self.linear_1(self.projector_layernorm(x))))


class VipLlavaModel(nn.Module):
    def __init__(self, c: VipLlavaConfig, streamed: bool):
        super().__init__()
        self.vision_tower = VisionTower(c.vision_config)
        self.multi_modal_projector = VipLlavaMultiModalProjector(c)
        self.language_model = LlamaModel(c.text_config, layers=not streamed)


class VipLlavaForConditionalGeneration(Pretrained, nn.Module):
    def __init__(self, config: VipLlavaConfig):
        super().__init__()
        self.config = config
        self.streamed = config.text_config.num_parameters() > STREAM_ABOVE
        self.model = VipLlavaModel(config, self.streamed)
        if not self.streamed:
            self.lm_head = nn.Linear(config.text_config.hidden_size, config.vocab_size, bias=False)
            if self.tied_weights():  # one parameter, as HF's tie_weights(): a checkpoint stores it once
                self.lm_head.weight = self.model.language_model.embed_tokens.weight

    # ---- loading
    def tied_weights(self) -> dict:
        if self.config.tie_word_embeddings or self.config.text_config.tie_word_embeddings:
            return {"lm_head.weight": "model.language_model.embed_tokens.weight"}
        return {}

    def checkpoint_aliases(self) -> dict:
        """{checkpoint key: our key}: CLIP's names for the vision tower (with or without `vision_model.`),
        and the transformers-4 layout of the public checkpoints."""
        out = {}
        for clip, ours in self.model.vision_tower.checkpoint_aliases().items():
            for prefix in ("model.vision_tower.", "vision_tower."):
                out[prefix + clip] = "model.vision_tower." + ours
        for key in self.state_dict():
            if key.startswith("model.language_model."):
                out["language_model.model." + key[len("model.language_model."):]] = key
            elif key.startswith("model.multi_modal_projector."):
                out[key[len("model."):]] = key
        out["language_model.lm_head.weight"] = "lm_head.weight"
        return out

    def streamed_keys(self):
        """For a streamed decoder, the predicate of the checkpoint keys PyTorch does not load (the decoder's
        layers, final norm and lm_head, in either layout): vlexport.reference reads them lazily and hands
        them to attach_streamed. None otherwise: everything loads into PyTorch."""
        return (lambda key: _decoder_name(key) is not None) if self.streamed else None

    def attach_streamed(self, tensors, source: str):
        """Stream the decoder from `tensors` (vlexport.weights.LazyTensors of the streamed keys). Checked here,
        before any graph is written, as strictly as load_into checks the rest: every tensor the decoder needs,
        none it does not know, each of the config's shape (the shapes come from the files' headers)."""
        from vlexport.errors import CheckpointError
        from vlexport.towers.llama_numpy import LlamaDims, tensor_names

        dims = LlamaDims.from_config(self.config.text_config.to_dict())
        names, unexpected, problems = {}, [], []
        for key in tensors.keys():
            name = _decoder_name(key)
            if name == "":  # a constant some checkpoints stored (rotary inv_freq), computed from the config
                continue
            try:
                want = dims.shape(name)
            except KeyError:
                unexpected.append(key)
                continue
            if tuple(tensors.shape(key)) != want:
                problems.append(f"'{key}' has shape {tuple(tensors.shape(key))}, the config implies {want}")
            names[name] = key
        optional = {"lm_head.weight"} if self.tied_weights() else set()
        missing = [n for n in tensor_names(dims) if n not in names and n not in optional]
        for what, keys in (("unexpected keys", unexpected), ("missing decoder tensors", missing)):
            if keys:
                more = f" ... ({len(keys)} in all)" if len(keys) > 8 else ""
                problems.insert(0, f"{what}: {', '.join(keys[:8])}{more}")
        if problems:
            raise CheckpointError(f"{source} does not match the config's Llama decoder: " + "; ".join(problems))
        self._streamed = (tensors, names)

    def decoder_weights(self):
        """name -> float32 array in HF LlamaForCausalLM's keys (`model.layers.0...`, `lm_head.weight`):
        what the decoder-graph writer reads. From this model's tensors, or, for a streamed decoder, one
        tensor at a time from the checkpoint folder (attach_streamed) or random (`--random-weights`)."""
        if self.streamed and getattr(self, "_streamed", None):
            tensors, names = self._streamed
            embed = self.model.language_model.embed_tokens.weight

            def streamed(name):  # a KeyError names an unknown tensor (llama_numpy.fetch reports it)
                if name == "lm_head.weight" and name not in names:  # tied: the embeddings PyTorch holds
                    return embed.detach().float().numpy()
                return tensors.get(names[name])

            return streamed
        if self.streamed:
            from vlexport.towers.llama_numpy import random_llama_weights

            return random_llama_weights(self.config.text_config.to_dict(), seed=0)
        lm = self.model.language_model

        def get(name):
            t = self.lm_head.weight if name == "lm_head.weight" else lm.get_parameter(name[len("model."):])
            return t.detach().float().numpy()

        return get

    def num_parameters(self) -> int:
        """PyTorch's parameters plus, for a streamed decoder, the ones only the written graph holds."""
        n = sum(p.numel() for p in self.parameters())
        if self.streamed:
            c = self.config.text_config
            n += c.num_parameters() - c.vocab_size * c.hidden_size  # the embeddings are in PyTorch already
        return n

    def graph_modules(self) -> dict:
        return {"vision": _VisionGraph(self), "embed": _EmbedGraph(self), "decoder": _DecoderGraph(self)}

    # ---- the pieces
    def image_features(self, pixel_values):
        """(images, 3, S, S) -> (images, patches, H): the feature layers' states, CLS dropped, projected."""
        tower = self.model.vision_tower
        h = tower.pre_layrnorm(tower.embeddings(pixel_values))  # hidden state 0
        states = [h]
        for layer in tower.encoder.layer[:self.config.vision_layers_needed]:
            h = layer(h)
            states.append(h)
        feats = torch.cat([states[i][:, 1:] for i in self.config.hidden_state_indices], dim=-1)  # (n, N, k * Hv)
        return self.model.multi_modal_projector(feats)

    def merge(self, input_ids, inputs_embeds, image_features):
        """Put the image features at the `<image>` positions, in reading order (HF's masked_scatter)."""
        mask = input_ids == self.config.image_token_index
        n = int(mask.sum())
        if n != image_features.shape[0] * image_features.shape[1]:
            from vlexport.errors import InputError

            raise InputError(f"the prompt holds {n} image tokens but {image_features.shape[0]} image(s) give "
                             f"{image_features.shape[0] * image_features.shape[1]} features "
                             f"({image_features.shape[1]} per image)")
        out = inputs_embeds.clone()
        out[mask] = image_features.reshape(-1, image_features.shape[-1]).to(out.dtype)
        return out

    def decode(self, inputs_embeds, attention_mask, position_ids, cache_mask, past_keys, past_values,
               last_only: bool = False):
        """-> logits (B, T, V), or (B, 1, V) for the last position only (the decoder graph's: generation needs
        no more), and the new keys / values per layer."""
        h, k, v = self.model.language_model.decode(inputs_embeds, attention_mask, position_ids, cache_mask,
                                                   past_keys, past_values)
        return self.lm_head(h[:, -1:] if last_only else h), k, v

    def forward(self, input_ids, pixel_values=None, attention_mask=None, position_ids=None, **extra):
        """HF's forward without a cache: logits (B, T, V) for every position."""
        used = sorted(k for k, v in extra.items() if k not in ("return_dict", "use_cache") and v is not None)
        if used:
            from vlexport.errors import InputError

            raise InputError(f"unexpected input(s) {used}: vlexport's VipLlavaForConditionalGeneration takes "
                             f"input_ids, pixel_values, attention_mask and position_ids")
        if self.streamed:
            from vlexport.errors import ConfigError

            raise ConfigError("this decoder is too large for PyTorch here; it exists only as the written ONNX graph")
        embeds = self.model.language_model.embed_tokens(input_ids)
        if pixel_values is not None:
            embeds = self.merge(input_ids, embeds, self.image_features(pixel_values))
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        if position_ids is None:  # HF's generate(): count the real tokens (left padding)
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
        cache_mask, pk, pv = self.model.language_model.empty_cache(input_ids.shape[0], embeds.dtype)
        logits, _, _ = self.decode(embeds, attention_mask, position_ids, cache_mask, pk, pv)
        return ModelOutput(logits=logits)


class _VisionGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, pixel_values):
        return {"image_features": self.model.image_features(pixel_values)}


class _EmbedGraph(nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids):
        return {"inputs_embeds": self.model.model.language_model.embed_tokens(input_ids)}


class _DecoderGraph(nn.Module):
    """The decoder graph's reference (PyTorch, when the model holds the decoder) and its writer."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.layers = model.config.text_config.num_hidden_layers
        self.streamed = model.streamed  # no PyTorch decoder: the build writes it in int4 only

    def forward(self, inputs_embeds, attention_mask, position_ids, cache_mask, **cache):
        past_k = [cache[f"past_key.{i}"] for i in range(self.layers)]
        past_v = [cache[f"past_value.{i}"] for i in range(self.layers)]
        logits, k, v = self.model.decode(inputs_embeds, attention_mask, position_ids, cache_mask, past_k, past_v,
                                         last_only=True)
        out = {"logits": logits}
        for i in range(self.layers):
            out[f"new_key.{i}"], out[f"new_value.{i}"] = k[i], v[i]
        return out

    def write_onnx(self, path, quant: str = "fp32", progress=None, eight_bit=(), fp32=(), block_size: int = 32) -> dict:
        from vlexport.towers.llama_onnx import write_llama_decoder

        c = self.model.config.text_config
        facts = write_llama_decoder(path, c.to_dict(), self.model.decoder_weights(), inv_freq=c.inv_freq(),
                                    quant=quant, progress=progress, eight_bit=eight_bit, fp32=fp32,
                                    block_size=block_size)
        return {"exporter": "vlexport.towers.llama_onnx (written layer by layer)", **(facts or {})}

    def projections(self) -> list:
        """The decoder's projections a quantized graph stores as MatMulNBits, by fused group (the unit
        write_onnx's eight_bit moves to 8 bits, fp32 to fp32): [(group name, [HF weight keys])]."""
        from vlexport.towers.llama_numpy import LlamaDims, projection_groups

        return projection_groups(LlamaDims.from_config(self.model.config.text_config.to_dict()))

    def weights(self):
        """name -> float32 array by HF LlamaForCausalLM key (the tensors write_onnx reads)."""
        return self.model.decoder_weights()

    def numpy_reference(self, quantized: bool = False, eight_bit=(), fp32=(), block_size: int = 32, bits: int = 4):
        """feeds -> outputs in numpy, streaming the weights (the reference of a decoder PyTorch never holds);
        quantized: on the `bits`-rounded weights a quantized graph holds (its exactness, apart from rounding),
        blocks of block_size, the projections in eight_bit rounded to 8 bits, those in fp32 left as they are."""
        from vlexport.towers.llama_numpy import dequantized, reference_decoder

        c = self.model.config.text_config
        weights = self.model.decoder_weights()
        if quantized:
            weights = dequantized(weights, block_size=block_size, bits=bits, eight_bit=eight_bit, fp32=fp32)
            if not self.streamed:  # rounded once, not per call (a streamed decoder has no room for a copy)
                weights = _memoized(weights)
        return lambda feeds: reference_decoder(c.to_dict(), weights, c.inv_freq(), feeds)


def _decoder_name(key: str) -> str | None:
    """The HF LlamaForCausalLM key the decoder writer uses for checkpoint key `key` (transformers 5's
    `model.language_model.*` / `lm_head.weight`, or the public checkpoints' transformers-4
    `language_model.model.*` / `language_model.lm_head.weight`); "" for a stored rotary constant; None
    for keys outside the decoder (the vision tower, the projector, the token embeddings)."""
    for prefix in ("model.language_model.", "language_model.model."):
        if key.startswith(prefix):
            rest = key[len(prefix):]
            if rest.startswith("embed_tokens."):
                return None
            return "" if rest.endswith("rotary_emb.inv_freq") else "model." + rest
    return "lm_head.weight" if key in ("lm_head.weight", "language_model.lm_head.weight") else None


def _memoized(weights):
    cache = {}
    return lambda name: cache[name] if name in cache else cache.setdefault(name, weights(name))
