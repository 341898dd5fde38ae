"""The layer-by-layer Llama decoder writer (vlexport.towers.llama_onnx) and its numpy reference.

Oracle: tiny random transformers LlamaForCausalLM models (every weight perturbed, norms included),
run with HF's own attention_mask / position_ids / DynamicCache: a left-padded prefill, then one
decode step fed with the keys/values the graph returned. The int4 graphs are checked twice: against
the fp32 graph (quantization error, bounded) and against the numpy reference on the int4-rounded
weights (the packing layout, tight).
"""

from __future__ import annotations

import gc
import weakref
from collections import Counter

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from vlexport.errors import CheckpointError, ConfigError
from vlexport.towers.llama_numpy import (LlamaDims, dequantized, random_llama_weights, reference_decoder,
                                         tensor_names)
from vlexport.towers.llama_onnx import write_llama_decoder

TINY = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=300, rms_norm_eps=1e-5, max_position_embeddings=64)
VARIANTS = {"gqa": {}, "bias-mha": dict(num_key_value_heads=4, attention_bias=True, mlp_bias=True)}
B, T, CAPACITY = 2, 5, 8
ATTENTION_MASK = np.array([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])  # row 0 left-padded


class Tiny:
    """A random HF model, its weights as a `weights` callable and its fp32 graph."""

    def __init__(self, overrides: dict, folder):
        from transformers import LlamaConfig, LlamaForCausalLM

        torch.manual_seed(0)
        self.hf = LlamaForCausalLM(LlamaConfig(**{**TINY, **overrides}, attn_implementation="eager")).eval()
        g = torch.Generator().manual_seed(1)
        with torch.no_grad():  # fresh norms are 1 and biases 0: make every tensor count
            for p in self.hf.parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=g))
        self.config = self.hf.config.to_dict()
        self.state = {k: v.detach().numpy().copy() for k, v in self.hf.state_dict().items()}
        self.inv_freq = self.hf.model.rotary_emb.inv_freq.numpy().copy()
        self.dims = LlamaDims.from_config(self.config)
        self.folder = folder
        self.fp32 = self.write("fp32")

    def weights(self, name):
        return self.state[name]

    def write(self, quant, **kw):
        path = self.folder / f"decoder-{quant}-{len(list(self.folder.iterdir()))}.onnx"
        write_llama_decoder(path, self.config, self.weights, inv_freq=self.inv_freq, quant=quant, **kw)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def tiny(request, tmp_path_factory):
    return Tiny(VARIANTS[request.param], tmp_path_factory.mktemp(f"llama-{request.param}"))


def run(session, feeds) -> dict:
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feeds)))


def prefill_feeds(tiny: Tiny, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    d = tiny.dims
    feeds = {"inputs_embeds": rng.standard_normal((B, T, d.hidden)).astype(np.float32),
             "attention_mask": ATTENTION_MASK,
             "position_ids": np.clip(ATTENTION_MASK.cumsum(1) - 1, 0, None),  # HF's for left padding
             "cache_mask": np.zeros((B, CAPACITY), np.int64)}
    for i in range(d.layers):  # the buffers start as garbage: every slot is masked
        for kv in ("key", "value"):
            feeds[f"past_{kv}.{i}"] = rng.standard_normal((B, d.kv_heads, CAPACITY, d.head_dim)).astype(np.float32)
    return feeds


def decode_feeds(tiny: Tiny, prefill: dict, out: dict, seed=1) -> dict:
    """The runtime's side of the contract: write the returned keys/values into the buffers."""
    rng = np.random.default_rng(seed)
    feeds = {k: v.copy() for k, v in prefill.items()}
    for i in range(tiny.dims.layers):
        feeds[f"past_key.{i}"][:, :, :T] = out[f"new_key.{i}"]
        feeds[f"past_value.{i}"][:, :, :T] = out[f"new_value.{i}"]
    feeds["cache_mask"][:, :T] = ATTENTION_MASK  # padded slots stay empty
    feeds["inputs_embeds"] = rng.standard_normal((B, 1, tiny.dims.hidden)).astype(np.float32)
    feeds["attention_mask"] = np.ones((B, 1), np.int64)
    feeds["position_ids"] = ATTENTION_MASK.sum(1, keepdims=True)
    return feeds


def hf_steps(tiny: Tiny, prefill: dict, decode: dict):
    """HF's logits and cache after the prefill and after the decode step."""
    from transformers import DynamicCache

    cache = DynamicCache(config=tiny.hf.config)
    with torch.no_grad():
        first = tiny.hf(inputs_embeds=torch.from_numpy(prefill["inputs_embeds"]),
                        attention_mask=torch.from_numpy(ATTENTION_MASK),
                        position_ids=torch.from_numpy(prefill["position_ids"]), past_key_values=cache, use_cache=True)
        keys = [layer.keys.clone() for layer in cache.layers]
        values = [layer.values.clone() for layer in cache.layers]
        both = np.concatenate([ATTENTION_MASK, np.ones((B, 1), np.int64)], 1)
        second = tiny.hf(inputs_embeds=torch.from_numpy(decode["inputs_embeds"]), attention_mask=torch.from_numpy(both),
                         position_ids=torch.from_numpy(decode["position_ids"]), past_key_values=cache, use_cache=True)
    return first.logits.numpy(), keys, values, second.logits.numpy(), cache


def test_fp32_graph_matches_transformers_prefill_and_decode(tiny):
    prefill = prefill_feeds(tiny)
    out1 = run(tiny.fp32, prefill)
    decode = decode_feeds(tiny, prefill, out1)
    out2 = run(tiny.fp32, decode)
    hf_logits1, hf_keys, hf_values, hf_logits2, cache = hf_steps(tiny, prefill, decode)

    real = ATTENTION_MASK.astype(bool)  # padded rows' outputs are never read
    np.testing.assert_allclose(out1["logits"][:, 0], hf_logits1[:, -1], atol=1e-4, rtol=0)  # the last position's
    np.testing.assert_allclose(out2["logits"], hf_logits2, atol=1e-4, rtol=0)
    for i in range(tiny.dims.layers):
        for b in range(B):
            cols = np.flatnonzero(real[b])
            np.testing.assert_allclose(out1[f"new_key.{i}"][b][:, cols], hf_keys[i][b][:, cols].numpy(), atol=1e-5)
            np.testing.assert_allclose(out1[f"new_value.{i}"][b][:, cols], hf_values[i][b][:, cols].numpy(), atol=1e-5)
        np.testing.assert_allclose(out2[f"new_key.{i}"], cache.layers[i].keys[:, :, T:].numpy(), atol=1e-5)
        np.testing.assert_allclose(out2[f"new_value.{i}"], cache.layers[i].values[:, :, T:].numpy(), atol=1e-5)


def test_numpy_reference_matches_the_graph(tiny):
    prefill = prefill_feeds(tiny)
    out1 = run(tiny.fp32, prefill)
    decode = decode_feeds(tiny, prefill, out1)
    for feeds, out in ((prefill, out1), (decode, run(tiny.fp32, decode))):
        ref = reference_decoder(tiny.config, tiny.weights, tiny.inv_freq, feeds)
        assert sorted(ref) == sorted(out)
        for name in out:  # padded rows included: both are uniform over the keys there
            np.testing.assert_allclose(out[name], ref[name], atol=1e-4, rtol=0, err_msg=name)


def test_empty_cache_axis_is_accepted(tiny):
    """past = 0 (no cache buffers at all) is the same prefill as a cache with every slot masked."""
    feeds = prefill_feeds(tiny)
    empty = dict(feeds, cache_mask=np.zeros((B, 0), np.int64))
    for i in range(tiny.dims.layers):
        for kv in ("key", "value"):
            empty[f"past_{kv}.{i}"] = feeds[f"past_{kv}.{i}"][:, :, :0].copy()
    np.testing.assert_allclose(run(tiny.fp32, empty)["logits"], run(tiny.fp32, feeds)["logits"], atol=1e-5)


def _worst_row_cosine(a, b):
    a, b = a.reshape(-1, a.shape[-1]), b.reshape(-1, b.shape[-1])
    return float(np.min((a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)))


INT4_MIN_COSINE = 0.98  # measured 0.994-0.996 on these tiny random models (hidden 64: 2 blocks per column)


@pytest.mark.parametrize("block_size, accuracy_level, symmetric", [(32, 4, False), (32, 0, True), (64, 0, False)])
def test_int4_graph_close_to_fp32_and_exact_on_rounded_weights(tiny, block_size, accuracy_level, symmetric):
    """block 64 over intermediate 96: down_proj's last block is partial (padded by the packer)."""
    int4 = tiny.write("int4", block_size=block_size, accuracy_level=accuracy_level, symmetric=symmetric)
    prefill = prefill_feeds(tiny)
    q1, f1 = run(int4, prefill), run(tiny.fp32, prefill)
    decode = decode_feeds(tiny, prefill, q1)
    q2, f2 = run(int4, decode), run(tiny.fp32, decode)
    cosine = min(_worst_row_cosine(q1["logits"], f1["logits"]), _worst_row_cosine(q2["logits"], f2["logits"]))
    print(f"int4 block {block_size} acc {accuracy_level} sym {symmetric}: worst row cosine vs fp32 {cosine:.5f}")
    assert cosine > INT4_MIN_COSINE

    # the same graph against numpy on the int4-rounded weights: only the kernel's arithmetic differs.
    # accuracy_level 0 computes in fp32 (tight); 4 rounds the activations to int8 per block (~1%).
    rounded = dequantized(tiny.weights, block_size, bits=4, symmetric=symmetric)
    atol = 1e-4 if accuracy_level == 0 else 2e-2
    for feeds, out in ((prefill, q1), (decode, q2)):
        ref = reference_decoder(tiny.config, rounded, tiny.inv_freq, feeds)
        for name in ("logits", "new_key.1", "new_value.1"):
            np.testing.assert_allclose(out[name], ref[name], atol=atol, rtol=0, err_msg=name)


def test_int8_graph_exact_on_rounded_weights(tiny):
    int8 = tiny.write("int8", block_size=32, accuracy_level=4)
    feeds = prefill_feeds(tiny)
    out = run(int8, feeds)
    ref = reference_decoder(tiny.config, dequantized(tiny.weights, 32, bits=8), tiny.inv_freq, feeds)
    np.testing.assert_allclose(out["logits"], ref["logits"], atol=2e-2, rtol=0)
    assert _worst_row_cosine(out["logits"], run(tiny.fp32, feeds)["logits"]) > 0.999


def test_int4_graph_with_projections_at_8_bits_and_fp32(tiny):
    """The accuracy-aware int4 search's unit: named projections (a fused group follows any member) at 8 bits
    or as plain fp32 MatMuls, the rest int4; the graph computes exactly the reference on weights rounded
    the same way (accuracy_level 0: fp32 compute, so only the rounding differs)."""
    eight, wide = ["lm_head", "model.layers.0.self_attn.k_proj"], ["model.layers.1.mlp.up_proj"]
    path = tiny.folder / "mixed.onnx"
    facts = write_llama_decoder(path, tiny.config, tiny.weights, inv_freq=tiny.inv_freq, quant="int4",
                                accuracy_level=0, eight_bit=eight, fp32=wide)
    assert facts["eight_bit"] == sorted(eight) and facts["fp32"] == wide
    nodes = onnx.load(str(path), load_external_data=False).graph.node
    bits = {n.input[1].rsplit(".", 1)[0]: next(a.i for a in n.attribute if a.name == "bits")
            for n in nodes if n.op_type == "MatMulNBits"}
    assert bits["lm_head"] == 8 and bits["model.layers.0.self_attn.qkv_proj"] == 8  # k_proj took q and v along
    assert bits["model.layers.1.self_attn.qkv_proj"] == 4 and bits["model.layers.0.mlp.gate_up_proj"] == 4
    assert "model.layers.1.mlp.gate_up_proj" not in bits  # up_proj took gate_proj along, as one fp32 MatMul
    assert any(n.op_type == "MatMul" and n.input[1] == "model.layers.1.mlp.gate_up_proj.weight" for n in nodes)

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    feeds = prefill_feeds(tiny)
    out = run(session, feeds)
    ref = reference_decoder(tiny.config, dequantized(tiny.weights, 32, bits=4, eight_bit=eight, fp32=wide),
                            tiny.inv_freq, feeds)
    plain = reference_decoder(tiny.config, dequantized(tiny.weights, 32, bits=4), tiny.inv_freq, feeds)
    for name in ("logits", "new_key.0", "new_value.1"):
        np.testing.assert_allclose(out[name], ref[name], atol=1e-4, rtol=0, err_msg=name)
    assert np.abs(out["logits"] - plain["logits"]).max() > 1e-3  # the overrides did change the graph

    with pytest.raises(ConfigError, match="fp32 names projections this decoder does not have"):
        write_llama_decoder(tiny.folder / "bad.onnx", tiny.config, tiny.weights, inv_freq=tiny.inv_freq,
                            quant="int4", fp32=["model.layers.9.mlp.up_proj"])


@pytest.mark.parametrize("quant", ["fp32", "int4"])
def test_weights_are_streamed_once_each(tmp_path, quant):
    """Each tensor is asked for exactly once, in layer order, and every matrix is dropped before the
    next tensor is asked for (a fused q/k/v keeps only its small quantized/transposed parts and biases)."""
    config = dict(TINY, attention_bias=True, mlp_bias=True)
    dims = LlamaDims.from_config(config)
    source = random_llama_weights(config, seed=3)
    calls, alive = [], []

    def weights(name):
        gc.collect()
        alive.append(sum(r() is not None and r().ndim == 2 for r in refs))
        calls.append(name)
        t = source(name)
        refs.append(weakref.ref(t))
        return t

    refs = []
    path = tmp_path / "decoder.onnx"
    # gc.collect() after every tensor would scan the whole test session's heap each time (a second or
    # more late in a run); frozen, the older objects are left out and only what the writer made is scanned
    gc.freeze()
    try:
        facts = write_llama_decoder(path, config, weights, inv_freq=np.ones(8, np.float32), quant=quant)
    finally:
        gc.unfreeze()
    assert calls == tensor_names(dims)
    assert set(Counter(calls).values()) == {1}
    assert max(alive) == 0, "a fetched matrix was still held when the next tensor was asked for"

    data = tmp_path / "decoder.onnx.data"
    assert data.is_file() and data.stat().st_size >= facts["weight_bytes"] > 0
    assert path.stat().st_size < 1_000_000 and facts["onnx_bytes"] == path.stat().st_size
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    external = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    assert {e.key: e.value for e in external[0].external_data}["location"] == "decoder.onnx.data"
    assert all(not t.raw_data for t in external)
    lengths = [int({e.key: e.value for e in t.external_data}["length"]) for t in external]
    assert sum(lengths) == facts["weight_bytes"]  # every weight lives in the data file
    inline = [t for t in model.graph.initializer if t.data_location != onnx.TensorProto.EXTERNAL]
    assert all(len(t.raw_data) < 1024 for t in inline)  # only shapes, axes and scalars stay inside
    dims_of = {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
               for v in list(model.graph.input) + list(model.graph.output)}
    assert dims_of["inputs_embeds"] == ["batch", "text", 64] and dims_of["cache_mask"] == ["batch", "past"]
    assert dims_of["past_key.1"] == ["batch", 2, "past", 16] and dims_of["new_value.0"] == ["batch", 2, "text", 16]
    assert dims_of["logits"] == ["batch", 1, 300]  # the last position's
    ops = Counter(n.op_type for n in model.graph.node)
    # per layer: q/k/v fused, o, gate/up fused, down; then lm_head
    assert ops["MatMulNBits" if quant == "int4" else "MatMul"] >= 4 * 2 + 1
    assert ops["MatMulNBits"] == (4 * 2 + 1 if quant == "int4" else 0)
    assert {n.domain for n in model.graph.node} <= ({"", "com.microsoft"} if quant == "int4" else {""})


def test_random_weights_are_deterministic_per_name():
    w = random_llama_weights(TINY, seed=5)
    a = w("model.layers.1.mlp.up_proj.weight")
    w("model.norm.weight")
    np.testing.assert_array_equal(a, random_llama_weights(TINY, seed=5)("model.layers.1.mlp.up_proj.weight"))
    assert not np.array_equal(a, random_llama_weights(TINY, seed=6)("model.layers.1.mlp.up_proj.weight"))
    assert a.shape == (96, 64) and a.dtype == np.float32 and 0.015 < a.std() < 0.025
    assert abs(float(w("model.layers.0.input_layernorm.weight").mean()) - 1) < 0.05
    with pytest.raises(KeyError, match="q_proj.bias"):
        w("model.layers.0.self_attn.q_proj.bias")  # no attention_bias in this config


def test_bad_config_and_weights_are_named(tmp_path):
    inv = np.ones(8, np.float32)
    with pytest.raises(ConfigError, match="hidden_size 60 is not divisible by num_attention_heads 8"):
        write_llama_decoder(tmp_path / "a.onnx", dict(TINY, hidden_size=60, num_attention_heads=8), None, inv_freq=inv)
    with pytest.raises(ConfigError, match="num_key_value_heads 3"):
        write_llama_decoder(tmp_path / "a.onnx", dict(TINY, num_key_value_heads=3), None, inv_freq=inv)
    with pytest.raises(ConfigError, match="quant"):
        write_llama_decoder(tmp_path / "a.onnx", TINY, None, inv_freq=inv, quant="int3")
    with pytest.raises(ConfigError, match="inv_freq"):
        write_llama_decoder(tmp_path / "a.onnx", TINY, None, inv_freq=np.ones(16, np.float32))
    with pytest.raises(ConfigError, match="lacks"):
        write_llama_decoder(tmp_path / "a.onnx", {"hidden_size": 64}, None, inv_freq=inv)

    source = random_llama_weights(TINY)
    missing = "model.layers.1.mlp.down_proj.weight"
    state = {n: source(n) for n in tensor_names(LlamaDims.from_config(TINY)) if n != missing}
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        write_llama_decoder(tmp_path / "b.onnx", TINY, state.__getitem__, inv_freq=inv, quant="int4")
    with pytest.raises(CheckpointError, match=missing.replace(".", r"\.")):
        reference_decoder(TINY, state.__getitem__, inv, prefill_feeds_for(TINY))
    state[missing] = np.zeros((96, 64), np.float32)  # transposed
    with pytest.raises(CheckpointError, match=r"down_proj.weight' has shape \(96, 64\), the config says \(64, 96\)"):
        write_llama_decoder(tmp_path / "c.onnx", TINY, state.__getitem__, inv_freq=inv)


def prefill_feeds_for(config):
    d = LlamaDims.from_config(config)
    feeds = {"inputs_embeds": np.zeros((1, 2, d.hidden), np.float32), "attention_mask": np.ones((1, 2), np.int64),
             "position_ids": np.arange(2)[None], "cache_mask": np.zeros((1, 1), np.int64)}
    for i in range(d.layers):
        feeds[f"past_key.{i}"] = feeds[f"past_value.{i}"] = np.zeros((1, d.kv_heads, 1, d.head_dim), np.float32)
    return feeds


def test_writer_and_reference_do_not_import_torch():
    import subprocess
    import sys

    code = ("import sys, vlexport.towers.llama_onnx, vlexport.towers.llama_numpy; "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
