"""The Llama decoder in plain numpy, streamed layer by layer: the reference the ONNX writer
(towers/llama_onnx.py) is checked against, at any size, without torch.

    LlamaDims             the fields of an HF Llama config dict that the math reads, checked
    tensor_names(dims)    every HF LlamaForCausalLM key the decoder needs, in the order it uses them
    random_llama_weights  a `weights(name) -> array` callable with deterministic random tensors
    quantize_nbits /      MatMulNBits' block-wise int4/int8 packing (ORT's own C++ helper) and its
    dequantize_nbits      exact inverse in numpy
    dequantized(weights)  the same callable with every projection rounded through int4/int8
    reference_decoder     one step of the graph contract (prefill or decode) computed in numpy

A `weights` callable returns one float32 tensor by its HF key and is asked once per tensor, so a
caller can stream from safetensors or generate on the fly: at 7B nothing here holds more than one
layer's weights (fp32 7B is 27 GB and does not fit a 24 GB machine).

The contract (the same one the ONNX graph has): new token t of row b attends to cache slot j iff
cache_mask[b, j] == 1 and to new token s iff s <= t and attention_mask[b, s] == 1; keys are ordered
[cache slots..., new tokens...]; masked scores are replaced by MASK_VALUE (finite, and replaced
rather than added to, so visible scores stay exact and a row that sees nothing is exactly uniform,
never NaN). Outputs: logits and each layer's new keys (after RoPE) and values.
"""

from __future__ import annotations

import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from vlexport.errors import CheckpointError, ConfigError

# vlexport.layers.MASK_VALUE; repeated because that module imports torch and this one must not.
MASK_VALUE = -10000.0

_PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
         "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


@dataclass(frozen=True)
class LlamaDims:
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    eps: float
    vocab: int
    attention_bias: bool
    mlp_bias: bool

    @classmethod
    def from_config(cls, config: dict) -> "LlamaDims":
        if not isinstance(config, dict):
            raise ConfigError(f"the Llama config must be a dict, got {type(config).__name__}")
        need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        missing = [k for k in need if k not in config]
        if missing:
            raise ConfigError(f"the Llama config lacks {missing}")
        for k in need + ("num_key_value_heads", "head_dim"):
            v = config.get(k)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ConfigError(f"Llama config {k} must be a positive integer, got {v!r}")
        hidden, heads = config["hidden_size"], config["num_attention_heads"]
        kv_heads = config.get("num_key_value_heads") or heads  # HF: None means multi-head attention
        head_dim = config.get("head_dim")
        if head_dim is None:
            if hidden % heads:
                raise ConfigError(f"Llama config hidden_size {hidden} is not divisible by num_attention_heads "
                                  f"{heads} (and no head_dim is given)")
            head_dim = hidden // heads
        if head_dim % 2:
            raise ConfigError(f"Llama head_dim {head_dim} must be even (RoPE rotates halves)")
        if heads % kv_heads:
            raise ConfigError(f"Llama num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")
        act = config.get("hidden_act", "silu")
        if act != "silu":
            raise ConfigError(f"Llama hidden_act {act!r} is not supported (only 'silu')")
        return cls(hidden, config["intermediate_size"], config["num_hidden_layers"], heads, kv_heads, head_dim,
                   float(config.get("rms_norm_eps", 1e-6)), config["vocab_size"],
                   bool(config.get("attention_bias", False)), bool(config.get("mlp_bias", False)))

    def shape(self, name: str) -> tuple:
        """The HF shape of tensor `name` (Linear weights are (out, in)); KeyError if not a key of this model."""
        H, I, D = self.hidden, self.intermediate, self.head_dim
        if name in ("model.norm.weight",):
            return (H,)
        if name == "lm_head.weight":
            return (self.vocab, H)
        parts = name.split(".")
        if len(parts) >= 4 and parts[:2] == ["model", "layers"] and parts[2].isdigit() \
                and int(parts[2]) < self.layers:
            rest = ".".join(parts[3:])
            out_in = {"self_attn.q_proj": (self.heads * D, H), "self_attn.k_proj": (self.kv_heads * D, H),
                      "self_attn.v_proj": (self.kv_heads * D, H), "self_attn.o_proj": (H, self.heads * D),
                      "mlp.gate_proj": (I, H), "mlp.up_proj": (I, H), "mlp.down_proj": (H, I)}
            if rest in ("input_layernorm.weight", "post_attention_layernorm.weight"):
                return (H,)
            stem, _, kind = rest.rpartition(".")
            if stem in out_in and kind == "weight":
                return out_in[stem]
            biased = self.attention_bias if stem.startswith("self_attn") else self.mlp_bias
            if stem in out_in and kind == "bias" and biased:
                return out_in[stem][:1]
        raise KeyError(f"{name!r} is not a tensor of this Llama decoder")

    def bias(self, proj: str) -> bool:
        return self.attention_bias if proj.startswith("self_attn") else self.mlp_bias


def layer_tensor_names(dims: LlamaDims, i: int) -> list:
    """Layer i's keys in the order the decoder uses them (the writer and the reference agree on it)."""
    p = f"model.layers.{i}."
    names = [p + "input_layernorm.weight"]
    for proj in _PROJ:
        if proj == "mlp.gate_proj":
            names.append(p + "post_attention_layernorm.weight")
        names.append(p + proj + ".weight")
        if dims.bias(proj):
            names.append(p + proj + ".bias")
    return names


def tensor_names(dims: LlamaDims) -> list:
    layers = [n for i in range(dims.layers) for n in layer_tensor_names(dims, i)]
    return layers + ["model.norm.weight", "lm_head.weight"]


def fetch(weights, name: str, dims: LlamaDims) -> np.ndarray:
    """weights(name) as float32 of the expected shape, or a CheckpointError naming the tensor."""
    try:
        t = weights(name)
    except KeyError:
        raise CheckpointError(f"the weights have no tensor {name!r} (an HF LlamaForCausalLM key)") from None
    if t is None:
        raise CheckpointError(f"the weights returned None for {name!r}")
    t = np.asarray(t, dtype=np.float32)
    if t.shape != dims.shape(name):
        raise CheckpointError(f"weight {name!r} has shape {t.shape}, the config says {dims.shape(name)}")
    return t


def random_llama_weights(config: dict, seed: int = 0):
    """weights(name) -> a deterministic random float32 tensor: projections N(0, 0.02), biases
    N(0, 0.02), norm weights 1 + N(0, 0.05). The generator is seeded from (seed, crc32(name), row
    chunk), so a tensor is the same whenever and in whatever order it is asked for, and the two
    halves of a big matrix are drawn in two threads (numpy's generators release the GIL)."""
    dims = LlamaDims.from_config(config)
    chunk_rows = 2048

    def weights(name: str) -> np.ndarray:
        shape = dims.shape(name)  # KeyError for an unknown or disabled tensor
        key = zlib.crc32(name.encode())
        out = np.empty(shape, dtype=np.float32)
        rows = out.reshape(shape[0], -1)
        starts = range(0, shape[0], chunk_rows)

        def fill(start):
            rng = np.random.default_rng([seed, key, start])
            block = rows[start:start + chunk_rows]
            rng.standard_normal(out=block, dtype=np.float32)
            block *= 0.05 if name.endswith("norm.weight") else 0.02

        with ThreadPoolExecutor(2) as pool:
            list(pool.map(fill, starts))
        if name.endswith("norm.weight"):
            out += 1.0
        return out

    return weights


# --- MatMulNBits packing ------------------------------------------------------------------------

def quantize_nbits(w: np.ndarray, bits: int = 4, block_size: int = 32, symmetric: bool = False):
    """HF Linear weight (N=out, K=in) -> MatMulNBits' (packed (N, blocks, block_size*bits/8) uint8,
    scales (N, blocks) float32, zero_points (N, ceil(blocks*bits/8)) uint8 or None when symmetric).
    Blocks run along K inside each output column of B = w.T; ORT's own C++ helper does the packing,
    so the layout is exactly what the kernel reads."""
    from onnxruntime.capi._pybind_state import quantize_matmul_4bits, quantize_matmul_8bits

    N, K = w.shape
    blocks = -(-K // block_size)
    per_byte = 8 // bits
    helper = {4: quantize_matmul_4bits, 8: quantize_matmul_8bits}[bits]
    parts = []
    # output columns are independent: pack 4096 at a time, so the transposed copy stays small
    # (lm_head at 7B would be another 0.5 GB in one piece)
    for r in range(0, N, 4096):
        n = min(4096, N - r)
        b = transposed(w[r:r + n])  # (K, n) row-major, as the helper wants
        if blocks * block_size != K:  # the helper reads whole blocks: pad K with zeros (ORT's quantizer does too)
            b = np.pad(b, ((0, blocks * block_size - K), (0, 0)))
        part = (np.zeros((n, blocks, block_size // per_byte), dtype=np.uint8), np.zeros((n, blocks), dtype=np.float32),
                np.zeros((n, -(-blocks // per_byte)), dtype=np.uint8))
        helper(part[0], b, part[1], part[2], block_size, n, K, symmetric)
        parts.append(part)
    packed, scales, zero_points = (np.concatenate([p[j] for p in parts]) for j in range(3))
    return packed, scales, (None if symmetric else zero_points)


def dequantize_nbits(packed, scales, zero_points, K: int, bits: int = 4) -> np.ndarray:
    """The exact inverse of quantize_nbits' rounding: (N, K) float32 = (q - zero_point) * scale.
    4-bit values sit two per byte, the low nibble first; symmetric means zero point 2**(bits-1)."""
    N, blocks, _ = packed.shape
    if bits == 4:
        q = np.stack([packed & 15, packed >> 4], axis=-1).reshape(N, blocks, -1)
    else:
        q = packed
    if zero_points is None:
        z = np.float32(2 ** (bits - 1))
    else:
        zp = np.stack([zero_points & 15, zero_points >> 4], axis=-1).reshape(N, -1) if bits == 4 else zero_points
        z = zp[:, :blocks, None].astype(np.float32)
    return ((q.astype(np.float32) - z) * scales[:, :, None]).reshape(N, -1)[:, :K]


def is_projection(name: str) -> bool:
    """True for the Linear weights the quantized graphs store as MatMulNBits (lm_head included)."""
    return name == "lm_head.weight" or (name.endswith("_proj.weight") and name.startswith("model.layers."))


def projection_names(dims: LlamaDims) -> list:
    """The projections a quantized graph stores as MatMulNBits, by HF module name ("lm_head" last)."""
    return [n[:-len(".weight")] for n in tensor_names(dims) if is_projection(n)]


def fused_group(name: str) -> tuple:
    """The projections the graph writer fuses with `name` into one MatMul (q/k/v; gate/up; else itself)."""
    for group in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")):
        for member in group:
            if name.endswith("." + member):
                prefix = name[:-len(member)]
                return tuple(prefix + m for m in group)
    return (name,)


def projection_groups(dims: LlamaDims) -> list:
    """[(the fused MatMul's name in the graph, [its HF weight keys])]: q/k/v as "<layer>.self_attn.qkv_proj",
    gate/up as "<layer>.mlp.gate_up_proj", the rest alone; in graph order, "lm_head" last."""
    out, seen = [], set()
    for name in projection_names(dims):
        group = fused_group(name)
        if group[0] in seen:
            continue
        seen.add(group[0])
        label = {3: group[0].replace("q_proj", "qkv_proj"), 2: group[0].replace("gate_proj", "gate_up_proj")}.get(
            len(group), name)
        out.append((label, [g + ".weight" for g in group]))
    return out


def dequantized(weights, block_size: int = 32, bits: int = 4, symmetric: bool = False, eight_bit=(), fp32=()):
    """`weights` with every projection replaced by its int4/int8-rounded value (norms and biases
    unchanged): the reference on these weights is what a quantized graph should compute, so graph
    bugs show apart from quantization error. eight_bit: projections rounded to 8 bits (with their
    fused group, as the writer does); fp32: projections left unrounded (the same)."""
    wide = {m for n in eight_bit for m in fused_group(n)}
    exact = {m for n in fp32 for m in fused_group(n)}

    def rounded(name: str) -> np.ndarray:
        t = np.asarray(weights(name), dtype=np.float32)
        if not is_projection(name) or name[:-len(".weight")] in exact:
            return t
        b = 8 if name[:-len(".weight")] in wide else bits
        return dequantize_nbits(*quantize_nbits(t, b, block_size, symmetric), t.shape[1], b)

    return rounded


def transposed(w: np.ndarray) -> np.ndarray:
    """w.T as a C-contiguous copy, by row bands (a cache-friendlier copy than one big w.T)."""
    out = np.empty(w.shape[::-1], dtype=np.float32)
    for r in range(0, w.shape[0], 512):
        out[:, r:r + 512] = w[r:r + 512].T
    return out


# --- the reference -------------------------------------------------------------------------------

def rotary_tables(position_ids: np.ndarray, inv_freq: np.ndarray):
    """HF's cos/sin (B, T, head_dim): freqs = position * inv_freq, emb = concat(freqs, freqs)."""
    freqs = position_ids.astype(np.float32)[..., None] * inv_freq.astype(np.float32)
    emb = np.concatenate([freqs, freqs], axis=-1)
    return np.cos(emb), np.sin(emb)


def _rope(x, cos, sin):  # x (B, heads, T, D); HF's rotate_half: (x1, x2) -> (-x2, x1)
    half = x.shape[-1] // 2
    rotated = np.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _rms_norm(x, w, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + np.float32(eps)) * w


def _softmax(s):
    e = np.exp(s - s.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def reference_decoder(config: dict, weights, inv_freq: np.ndarray, feeds: dict) -> dict:
    """The graph contract in numpy: feeds (the graph's input names) -> {output name: array}.
    Weights are fetched one layer at a time through `weights`, each tensor once."""
    dims = LlamaDims.from_config(config)
    h = np.asarray(feeds["inputs_embeds"], dtype=np.float32)
    B, T, _ = h.shape
    D, kvh, rep = dims.head_dim, dims.kv_heads, dims.heads // dims.kv_heads
    cos, sin = (t[:, None] for t in rotary_tables(np.asarray(feeds["position_ids"]), inv_freq))  # (B, 1, T, D)

    # (B, 1, T, P + T) visibility of the keys [cache slots..., new tokens...]
    cache_ok = np.asarray(feeds["cache_mask"]).astype(bool)[:, None, None, :]
    P = cache_ok.shape[-1]
    real = np.asarray(feeds["attention_mask"]).astype(bool)[:, None, None, :]
    new_ok = np.tril(np.ones((T, T), dtype=bool))[None, None] & real
    ok = np.concatenate([np.broadcast_to(cache_ok, (B, 1, T, P)), new_ok], axis=-1)
    seen = ok[:, :, None]  # (B, 1, 1, T, S): kv-head groups; masked scores are replaced, not shifted

    out = {}
    for i in range(dims.layers):
        w = {n.split(".", 3)[3]: fetch(weights, n, dims) for n in layer_tensor_names(dims, i)}

        def linear(x, proj):
            y = x @ w[proj + ".weight"].T
            return y + w[proj + ".bias"] if proj + ".bias" in w else y

        def heads(t, n):  # (B, T, n*D) -> (B, n, T, D)
            return t.reshape(B, T, n, D).transpose(0, 2, 1, 3)

        x = _rms_norm(h, w["input_layernorm.weight"], dims.eps)
        q = _rope(heads(linear(x, "self_attn.q_proj"), dims.heads), cos, sin)
        k = _rope(heads(linear(x, "self_attn.k_proj"), kvh), cos, sin)
        v = heads(linear(x, "self_attn.v_proj"), kvh)
        out[f"new_key.{i}"], out[f"new_value.{i}"] = k, v
        keys = np.concatenate([np.asarray(feeds[f"past_key.{i}"], dtype=np.float32), k], axis=2)  # (B, kvh, S, D)
        values = np.concatenate([np.asarray(feeds[f"past_value.{i}"], dtype=np.float32), v], axis=2)
        # grouped-query attention: query head j uses kv head j // rep (HF's repeat_kv)
        qg = q.reshape(B, kvh, rep, T, D)
        scores = np.where(seen, qg @ keys[:, :, None].swapaxes(-1, -2) / np.float32(np.sqrt(D)),
                          np.float32(MASK_VALUE))  # (B, kvh, rep, T, S)
        ctx = (_softmax(scores) @ values[:, :, None]).reshape(B, dims.heads, T, D)
        h = h + linear(ctx.transpose(0, 2, 1, 3).reshape(B, T, dims.heads * D), "self_attn.o_proj")

        x = _rms_norm(h, w["post_attention_layernorm.weight"], dims.eps)
        gate = linear(x, "mlp.gate_proj")
        with np.errstate(over="ignore"):  # exp(-gate) -> inf for gate << 0: silu is then exactly 0
            silu = gate / (1 + np.exp(-gate))
        h = h + linear(silu * linear(x, "mlp.up_proj"), "mlp.down_proj")
        w.clear()  # one layer's weights in memory at a time

    h = _rms_norm(h[:, -1:], fetch(weights, "model.norm.weight", dims), dims.eps)  # the last position's logits
    out["logits"] = h @ fetch(weights, "lm_head.weight", dims).T
    return out
