"""Write a Llama decoder (HF LlamaForCausalLM math) as one ONNX graph, layer by layer, streaming
the weights to an external data file: no torch, no tracing, and never more than one fp32 tensor
in memory (plus the packed parts of a fused q/k/v or gate/up), so a 7B decoder (27 GB in fp32)
is written on a 24 GB machine in ~1.1 GB.

The graph "decoder" runs one step over a preallocated KV cache (prefill: T prompt tokens; decode:
T = 1). Inputs and outputs, with dynamic dims "batch", "text" and "past":

    inputs_embeds   float32 (batch, text, hidden)   the new tokens' embeddings
    attention_mask  int64 (batch, text)             1 = real new token, 0 = padding
    position_ids    int64 (batch, text)
    cache_mask      int64 (batch, past)             1 = filled cache slot
    past_key.{i}    float32 (batch, kv_heads, past, head_dim)  cache buffers (keys after RoPE)
    past_value.{i}  (same shape)                               unfilled slots arbitrary (masked)
    ->
    logits          float32 (batch, 1, vocab): the last position's (what a generation step needs)
    new_key.{i}     float32 (batch, kv_heads, text, head_dim)  the new tokens' keys (after RoPE)
    new_value.{i}   (same shape)                               the runtime writes them into its buffers

New token t attends to cache slot j iff cache_mask[b, j] == 1 and to new token s iff s <= t and
attention_mask[b, s] == 1; masked scores are replaced by MASK_VALUE (-1e4) before the softmax. The keys
are ordered [cache slots..., new tokens...]: the graph scores the cache and the new keys in two
MatMuls and concatenates the (small) score tensors instead of the keys, so a decode step never
copies the cache (at 7B with 640 slots that would be ~0.7 GB of extra traffic per token).

Per layer: RMSNorm -> q/k/v projections -> heads -> RoPE (rotate_half) -> grouped-query attention
(kv heads broadcast over a 5-D MatMul, no repeat_kv copy) -> o_proj -> residual -> RMSNorm ->
down(silu(gate) * up) -> residual; then model.norm and lm_head. The rotary tables (with the 1/sqrt(D)
score scaling folded into the query's copy) and the masks are computed once and shared by all layers.

Projections: quant="fp32" stores W.T and uses MatMul (standard ops only: portable to TensorRT);
"int4"/"int8" use com.microsoft.MatMulNBits (weight-only, block-wise along K, packed by ORT's own
helper) for every projection and lm_head. q/k/v and gate/up, which share their input, run as one
MatMul each over their outputs side by side, then a Split (initializers
`model.layers.{i}.self_attn.qkv_proj.*`, `model.layers.{i}.mlp.gate_up_proj.*`; the others keep
their HF names, with `.weight` = W.T or `.weight_Q` / `.weight_scales` / `.weight_zero_points`).
accuracy_level=4 lets ORT's CPU kernel quantize the activations to int8 per block (VNNI): ~2x
faster than fp32 compute at M=1, for ~0.5% more error per projection (the default; 0 = fp32 compute).
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

from vlexport.errors import ConfigError
from vlexport.towers.llama_numpy import (MASK_VALUE, LlamaDims, fetch, projection_names, quantize_nbits, tensor_names,
                                         transposed)

QUANT_BITS = {"fp32": None, "int4": 4, "int8": 8}
_ALIGN = 4096  # big tensors start on page boundaries in the data file (a loader may map them)


class _GraphWriter:
    """Collects nodes and initializers; every weight goes straight to the data file."""

    def __init__(self, data_path: str, dims: LlamaDims, weights, quant: str, block_size: int,
                 accuracy_level: int, symmetric: bool, progress, eight_bit=(), fp32=()):
        self.dims, self.weights, self.quant, self.bits = dims, weights, quant, QUANT_BITS[quant]
        self.eight_bit, self.fp32 = frozenset(eight_bit), frozenset(fp32)
        self.block_size, self.accuracy_level, self.symmetric = block_size, accuracy_level, symmetric
        self.data_path, self.data = data_path, open(data_path, "wb")
        self.nodes, self.initializers = [], []
        self.progress, self.done, self.total = progress, 0, len(tensor_names(dims))
        self.weight_bytes = 0  # bytes of tensors in the data file (padding excluded)
        self.projection_bytes = 0  # of those, what the projections read per token (blobs + scales + zero points)
        self._count = 0

    # -- building blocks ---------------------------------------------------------------------
    def op(self, op_type: str, inputs, out: str | None = None, domain: str | None = None, **attrs) -> str:
        self._count += 1
        out = out or f"{op_type.lower()}_{self._count}"
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=f"{op_type}_{self._count}",
                                           domain=domain, **attrs))
        return out

    def ops(self, op_type: str, inputs, n: int, **attrs) -> list:
        self._count += 1
        outs = [f"{op_type.lower()}_{self._count}_{j}" for j in range(n)]
        self.nodes.append(helper.make_node(op_type, list(inputs), outs, name=f"{op_type}_{self._count}", **attrs))
        return outs

    def const(self, value, dtype=np.int64) -> str:
        """A small constant kept inside the .onnx file (shapes, axes, scalars)."""
        self._count += 1
        name = f"const_{self._count}"
        self.initializers.append(onnx.numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def external(self, name: str, array: np.ndarray) -> str:
        """Append one tensor to the data file and reference it from the graph; the caller drops the array."""
        array = np.ascontiguousarray(array)
        align = _ALIGN if array.nbytes >= _ALIGN else 64  # small tensors (norms, biases) pack tighter
        offset = self.data.tell()
        if offset % align:
            self.data.write(b"\0" * (align - offset % align))
            offset += align - offset % align
        self.data.write(memoryview(array).cast("B"))
        t = TensorProto(name=name, dims=array.shape, data_type=helper.np_dtype_to_tensor_dtype(array.dtype))
        t.data_location = TensorProto.EXTERNAL
        for key, value in (("location", os.path.basename(self.data_path)), ("offset", str(offset)),
                           ("length", str(array.nbytes))):
            t.external_data.add(key=key, value=value)
        self.initializers.append(t)
        self.weight_bytes += array.nbytes
        return name

    def weight(self, name: str) -> np.ndarray:
        t = fetch(self.weights, name, self.dims)
        self.done += 1
        if self.progress is not None:
            self.progress(self.done, self.total, name)
        return t

    # -- layers -----------------------------------------------------------------------------
    def linear(self, x: str, projs: list, name: str | None = None, out: str | None = None) -> list:
        """x @ W.T (+ b) for the HF Linears `projs` ("model.layers.0.self_attn.q_proj", "lm_head") that
        share the input x: one MatMul over their outputs side by side (initializers `name`), then a
        Split. Fewer, bigger kernels: with q/k/v and gate/up fused, an int4 decode step at the 7B shape
        took a ~15% shorter median time (interleaved A/B on a busy 2-core VM; the best steps were equal).
        The weights are still fetched one at a time; only the quantized (or transposed) parts wait."""
        parts, biases, sizes = [], [], []
        # a fused group is quantized as one: fp32 (a plain MatMul) when any of its projections is named in
        # fp32, else 8-bit when any is named in eight_bit
        bits = self.bits
        if bits and self.fp32.intersection(projs):
            bits = None
        elif bits and self.eight_bit.intersection(projs):
            bits = 8
        for proj in projs:
            w = self.weight(proj + ".weight")
            sizes.append(w.shape[0])
            K = w.shape[1]
            if bits is None:
                parts.append(transposed(w))
            else:
                parts.append(quantize_nbits(w, bits, self.block_size, self.symmetric))
            del w  # the fp32 tensor goes before the next is asked for
            if proj != "lm_head" and self.dims.bias(proj.split(".", 3)[3]):
                biases.append(self.weight(proj + ".bias"))
        name, N = name or projs[0], sum(sizes)
        mm_out = out if len(projs) == 1 and not biases else None
        if bits is None:
            weight = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=1)  # (K, N)
            y = self.op("MatMul", [x, self.external(name + ".weight", weight)], out=mm_out)
            self.projection_bytes += weight.nbytes
        else:
            # MatMulNBits stores B by output column: stacking the parts along N is concatenation
            packed, scales, zero_points = (None if parts[0][j] is None else np.concatenate([q[j] for q in parts])
                                           for j in range(3))
            inputs = [x, self.external(name + ".weight_Q", packed), self.external(name + ".weight_scales", scales)]
            if zero_points is not None:
                inputs.append(self.external(name + ".weight_zero_points", zero_points))
            self.projection_bytes += packed.nbytes + scales.nbytes + (0 if zero_points is None else zero_points.nbytes)
            y = self.op("MatMulNBits", inputs, out=mm_out, domain="com.microsoft", K=K, N=N, bits=bits,
                        block_size=self.block_size, accuracy_level=self.accuracy_level)
        del parts
        if biases:
            y = self.op("Add", [y, self.external(name + ".bias", np.concatenate(biases))],
                        out=out if len(projs) == 1 else None)
        return [y] if len(projs) == 1 else self.ops("Split", [y, self.const(sizes)], len(projs), axis=-1)

    def rms_norm(self, x: str, name: str) -> str:
        # HF: x * rsqrt(mean(x^2) + eps) * weight, in fp32 (no RMSNormalization op before opset 23).
        # Pow(x, 2) rather than Mul(x, x): ORT fuses this exact pattern into SimplifiedLayerNormalization
        mean_square = self.op("ReduceMean", [self.op("Pow", [x, self.const(2.0, np.float32)])], axes=[-1], keepdims=1)
        rms = self.op("Sqrt", [self.op("Add", [mean_square, self.const(self.dims.eps, np.float32)])])
        return self.op("Mul", [self.op("Div", [x, rms]), self.external(name, self.weight(name))])

    def rope(self, x: str, cos: str, sin: str, out: str | None = None) -> str:
        # HF's rotate_half: (x1, x2) -> (-x2, x1) on the two halves of head_dim
        half = self.dims.head_dim // 2
        x1, x2 = self.ops("Split", [x, self.const([half, half])], 2, axis=-1)
        rotated = self.op("Concat", [self.op("Neg", [x2]), x1], axis=-1)
        return self.op("Add", [self.op("Mul", [x, cos]), self.op("Mul", [rotated, sin])], out=out)

    def heads(self, x: str, n: int, out: str | None = None) -> str:  # (B, T, n*D) -> (B, n, T, D)
        return self.op("Transpose", [self.op("Reshape", [x, self.const([0, 0, n, self.dims.head_dim])])],
                       out=out, perm=[0, 2, 1, 3])

    def layer(self, i: int, h: str, s: dict) -> str:
        d, p = self.dims, f"model.layers.{i}."
        rep = d.heads // d.kv_heads
        x = self.rms_norm(h, p + "input_layernorm.weight")
        q, k, v = self.linear(x, [p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"],
                              name=p + "self_attn.qkv_proj")
        q = self.rope(self.heads(q, d.heads), s["cos_q"], s["sin_q"])
        k = self.rope(self.heads(k, d.kv_heads), s["cos"], s["sin"], out=f"new_key.{i}")
        v = self.heads(v, d.kv_heads, out=f"new_value.{i}")
        past_k, past_v = f"past_key.{i}", f"past_value.{i}"
        if rep > 1:
            # grouped-query attention: query head j uses kv head j // rep. Group the query heads as
            # (B, kv_heads, rep, T, D) and give the keys/values a size-1 rep axis; MatMul broadcasts
            # them, so the cache is never repeated in memory (HF's repeat_kv copies it)
            q = self.op("Reshape", [q, self.const([0, d.kv_heads, rep, -1, d.head_dim])])
            past_k, past_v, k, v = (self.op("Unsqueeze", [t, self.const([2])]) for t in (past_k, past_v, k, v))
        key_t = [0, 1, 3, 2] if rep == 1 else [0, 1, 2, 4, 3]

        def scores(keys, seen):
            # masked scores are replaced (Where), not shifted: visible scores stay exact and a row that
            # sees nothing (a pad token) is exactly uniform, as in the PyTorch reference
            raw = self.op("MatMul", [q, self.op("Transpose", [keys], perm=key_t)])
            return self.op("Where", [seen, raw, s["masked"]])

        scores_cache, scores_new = scores(past_k, s["seen_cache"]), scores(k, s["seen_new"])
        probs = self.op("Softmax", [self.op("Concat", [scores_cache, scores_new], axis=-1)], axis=-1)
        probs_cache, probs_new = self.ops("Split", [probs, s["split_past_text"]], 2, axis=-1)
        ctx = self.op("Add", [self.op("MatMul", [probs_cache, past_v]), self.op("MatMul", [probs_new, v])])
        if rep > 1:
            ctx = self.op("Reshape", [ctx, self.const([0, d.heads, -1, d.head_dim])])
        ctx = self.op("Reshape", [self.op("Transpose", [ctx], perm=[0, 2, 1, 3]),
                                  self.const([0, 0, d.heads * d.head_dim])])
        h = self.op("Add", [h, self.linear(ctx, [p + "self_attn.o_proj"])[0]])

        x = self.rms_norm(h, p + "post_attention_layernorm.weight")
        gate, up = self.linear(x, [p + "mlp.gate_proj", p + "mlp.up_proj"], name=p + "mlp.gate_up_proj")
        act = self.op("Mul", [self.op("Mul", [gate, self.op("Sigmoid", [gate])]), up])  # silu(gate) * up
        return self.op("Add", [h, self.linear(act, [p + "mlp.down_proj"])[0]])

    def shared(self, inv_freq: np.ndarray) -> dict:
        """What every layer reads: rotary tables (B, 1, T, D) and the key-visibility masks, computed once."""
        d, s = self.dims, {}
        freqs = self.op("Mul", [self.op("Unsqueeze", [self.op("Cast", ["position_ids"], to=TensorProto.FLOAT),
                                                      self.const([2])]),
                                self.const(inv_freq, np.float32)])  # (B, T, D/2)
        emb = self.op("Unsqueeze", [self.op("Concat", [freqs, freqs], axis=-1), self.const([1])])
        s["cos"], s["sin"] = self.op("Cos", [emb]), self.op("Sin", [emb])
        scaling = self.const(d.head_dim ** -0.5, np.float32)  # HF scales the scores; scaling q is the same
        s["cos_q"], s["sin_q"] = self.op("Mul", [s["cos"], scaling]), self.op("Mul", [s["sin"], scaling])

        shape = self.op("Shape", ["inputs_embeds"])
        text = self.op("Gather", [shape, self.const(1)])  # scalar T
        past = self.op("Gather", [self.op("Shape", ["cache_mask"]), self.const(1)])
        s["split_past_text"] = self.op("Concat", [self.op("Unsqueeze", [t, self.const([0])]) for t in (past, text)],
                                       axis=0)
        idx = self.op("Range", [self.const(0), text, self.const(1)])
        causal = self.op("LessOrEqual", [self.op("Unsqueeze", [idx, self.const([0])]),
                                         self.op("Unsqueeze", [idx, self.const([1])])])  # [t, s] = s <= t
        # a 4-D mask (B, 1, T|1, S) for plain attention, 5-D (B, 1, 1, T|1, S) for grouped heads
        axes = [1, 2] if d.heads == d.kv_heads else [1, 2, 3]
        real = self.op("Unsqueeze", [self.op("Cast", ["attention_mask"], to=TensorProto.BOOL), self.const(axes)])
        filled = self.op("Unsqueeze", [self.op("Cast", ["cache_mask"], to=TensorProto.BOOL), self.const(axes)])
        s["masked"] = self.const(MASK_VALUE, np.float32)
        s["seen_new"] = self.op("And", [causal, real])  # (B, 1, T, T)
        s["seen_cache"] = filled  # (B, 1, 1, P): the same for every t
        return s


def write_llama_decoder(path, config: dict, weights, *, inv_freq: np.ndarray, quant: str = "fp32",
                        block_size: int = 32, accuracy_level: int = 4, symmetric: bool = False,
                        eight_bit=(), fp32=(), progress=None) -> dict:
    """Write the decoder graph to `path` and its weights to `<path>.data` beside it.

    weights(name) -> one float32 tensor by its HF LlamaForCausalLM key, asked once per tensor;
    inv_freq (head_dim/2,) are the RoPE frequencies (scaling variants are the caller's);
    quant "fp32" | "int4" | "int8" (weight-only MatMulNBits with `block_size`, `symmetric` or with
    zero points, `accuracy_level` 0 = fp32 compute, 4 = int8 compute; int8 weights need 4 on CPU);
    eight_bit: projections ("lm_head", "model.layers.3.mlp.down_proj", ...) an int4 graph keeps at 8 bits
    (a fused group, q/k/v or gate/up, follows any of its members); fp32: projections it keeps as plain
    fp32 MatMuls (the same; fp32 wins over eight_bit);
    progress(done, total, name) is called after each tensor is fetched.
    Returns facts: quant, sizes in bytes, seconds, peak RSS (of the process so far) in MiB."""
    start = time.perf_counter()
    dims = LlamaDims.from_config(config)
    if quant not in QUANT_BITS:
        raise ConfigError(f"quant must be one of {sorted(QUANT_BITS)}, got {quant!r}")
    if QUANT_BITS[quant] and (block_size < 16 or block_size & (block_size - 1)):
        raise ConfigError(f"block_size must be a power of two >= 16 (MatMulNBits), got {block_size}")
    if accuracy_level not in (0, 1, 2, 3, 4):
        raise ConfigError(f"accuracy_level must be 0..4, got {accuracy_level}")
    inv_freq = np.asarray(inv_freq, dtype=np.float32)
    if inv_freq.shape != (dims.head_dim // 2,):
        raise ConfigError(f"inv_freq must have shape ({dims.head_dim // 2},) for head_dim {dims.head_dim}, "
                          f"got {inv_freq.shape}")
    path = os.fspath(path)
    for arg, names in (("eight_bit", eight_bit), ("fp32", fp32)):
        unknown = sorted(set(names) - set(projection_names(dims)))
        if unknown:
            raise ConfigError(f"{arg} names projections this decoder does not have: {unknown[:4]}")
    g = _GraphWriter(path + ".data", dims, weights, quant, block_size, accuracy_level, symmetric, progress, eight_bit,
                     fp32)
    try:
        s = g.shared(inv_freq)
        h = "inputs_embeds"
        for i in range(dims.layers):
            h = g.layer(i, h, s)
        # logits of the last position only (all a generation step needs; HF's logits_to_keep=1): a prefill
        # of 600 tokens would otherwise spend a quarter of a 2-layer model's time on the vocabulary matmul
        last = g.op("Slice", [h, g.const([-1]), g.const([2 ** 62]), g.const([1])])
        g.linear(g.rms_norm(last, "model.norm.weight"), ["lm_head"], out="logits")
    finally:
        g.data.close()

    D, kvh, L = dims.head_dim, dims.kv_heads, dims.layers
    f32, i64 = TensorProto.FLOAT, TensorProto.INT64
    inputs = [helper.make_tensor_value_info("inputs_embeds", f32, ["batch", "text", dims.hidden]),
              helper.make_tensor_value_info("attention_mask", i64, ["batch", "text"]),
              helper.make_tensor_value_info("position_ids", i64, ["batch", "text"]),
              helper.make_tensor_value_info("cache_mask", i64, ["batch", "past"])]
    outputs = [helper.make_tensor_value_info("logits", f32, ["batch", 1, dims.vocab])]
    for i in range(L):
        for kv in ("key", "value"):
            inputs.append(helper.make_tensor_value_info(f"past_{kv}.{i}", f32, ["batch", kvh, "past", D]))
            outputs.append(helper.make_tensor_value_info(f"new_{kv}.{i}", f32, ["batch", kvh, "text", D]))
    graph = helper.make_graph(g.nodes, "decoder", inputs, outputs, g.initializers)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid("com.microsoft", 1)] if QUANT_BITS[quant] else [])
    model = helper.make_model(graph, opset_imports=opsets, producer_name="vlexport.towers.llama_onnx")
    model.ir_version = 8  # opset 17's IR version: what ORT 1.14+ and TensorRT 8.6+ read
    if g.done != g.total:  # every key of tensor_names() is fetched exactly once by construction
        raise AssertionError(f"fetched {g.done} tensors, expected {g.total}")
    # the initializers already point at the data file, so onnx.save writes only the small graph
    onnx.save(model, path)
    return {"quant": quant, "bits": QUANT_BITS[quant], "block_size": block_size if QUANT_BITS[quant] else None,
            "accuracy_level": accuracy_level if QUANT_BITS[quant] else None,
            "symmetric": symmetric if QUANT_BITS[quant] else None,
            "eight_bit": sorted(eight_bit) if QUANT_BITS[quant] == 4 else [],
            "fp32": sorted(fp32) if QUANT_BITS[quant] else [],
            "tensors": g.total, "nodes": len(g.nodes), "weight_bytes": g.weight_bytes,
            "projection_bytes": g.projection_bytes, "data_file_bytes": os.path.getsize(path + ".data"),
            "onnx_bytes": os.path.getsize(path), "data_path": path + ".data",
            "seconds": round(time.perf_counter() - start, 3),
            "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)}
