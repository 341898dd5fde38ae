"""The accuracy-aware int4 search (vlexport.export.int4_search) on a small random Llama decoder written by
our own writer and run by ONNX Runtime: a gate plain int4 misses but 8-bit weights meet is met with the
fewest projections moved (most harmful first) and the graph on disk is the chosen one; a gate nothing short
of fp32 meets is refused, leaving no file behind. The gate here is the worst per-row logits cosine against
the fp32 graph, set between what plain int4 and all-8-bit measure on this model."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest

from vlexport.errors import ValidationError
from vlexport.specs import AxisRange
from vlexport.export.int4_search import (FAST_BLOCK, failing_outputs, int8_blocks, quantize_int4_gated,
                                         simulated_errors, upstream_groups, upstream_ranking)
from vlexport.towers.llama_numpy import LlamaDims, projection_groups, random_llama_weights
from vlexport.towers.llama_onnx import write_llama_decoder

CONFIG = dict(hidden_size=128, intermediate_size=192, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, vocab_size=256, rms_norm_eps=1e-5, max_position_embeddings=64)


class Decoder:
    """What the search asks of a model: write_onnx with eight_bit/fp32, projections(), weights()."""

    def __init__(self):
        self.dims = LlamaDims.from_config(CONFIG)
        self.w = random_llama_weights(CONFIG, seed=3)
        self.inv_freq = 1.0 / 10000 ** (np.arange(0, self.dims.head_dim, 2) / self.dims.head_dim)
        self.writes = []

    def write_onnx(self, path, quant="fp32", eight_bit=(), fp32=(), block_size=32):
        self.writes.append((tuple(eight_bit), tuple(fp32)) + ((block_size,) if block_size != 32 else ()))
        return write_llama_decoder(path, CONFIG, self.w, inv_freq=self.inv_freq, quant=quant, eight_bit=eight_bit,
                                   fp32=fp32, block_size=block_size)

    def projections(self):
        return projection_groups(self.dims)

    def weights(self):
        return self.w


def feeds(seed: int) -> dict:
    rng = np.random.default_rng(seed)
    d, B, T = LlamaDims.from_config(CONFIG), 2, 6
    out = {"inputs_embeds": rng.standard_normal((B, T, d.hidden)).astype(np.float32),
           "attention_mask": np.ones((B, T), np.int64), "position_ids": np.tile(np.arange(T), (B, 1)),
           "cache_mask": np.zeros((B, 0), np.int64)}
    for i in range(d.layers):
        for kv in ("key", "value"):
            out[f"past_{kv}.{i}"] = np.zeros((B, d.kv_heads, 0, d.head_dim), np.float32)
    return out


FEEDS = [feeds(s) for s in range(4)]


def logits(path) -> list:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return [s.run(["logits"], f)[0][:, 0] for f in FEEDS]


def worst_cosine(a, b) -> float:
    return min(float(np.min((x * y).sum(1) / np.linalg.norm(x, axis=1) / np.linalg.norm(y, axis=1)))
               for x, y in zip(a, b))


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int4-search")
    model = Decoder()
    model.write_onnx(folder / "fp32.onnx")
    exact = logits(folder / "fp32.onnx")
    model.write_onnx(folder / "plain.onnx", quant="int4")
    model.write_onnx(folder / "all8.onnx", quant="int4", eight_bit=[m for _, ks in model.projections()
                                                                      for m in (ks[0][:-len(".weight")],)])
    plain, all8 = worst_cosine(logits(folder / "plain.onnx"), exact), worst_cosine(logits(folder / "all8.onnx"), exact)
    assert plain < all8 - 1e-4, (plain, all8)  # the model must leave room for a search
    return folder, exact, plain, all8


def gate(exact, threshold):
    def validate(path, seed=0):
        c = worst_cosine(logits(path), exact)
        if c < threshold:
            exc = ValidationError(f"the int4 graph: worst per-row cosine of 'logits' {c:.6f} < {threshold:.6f}")
            exc.report = {"min_cosine": c}
            raise exc
        return {"min_cosine": c, "passed": True}
    return validate


def test_simulated_errors_rank_every_group_and_include_activation_rounding(setup):
    folder, *_ = setup
    model = Decoder()
    errors = simulated_errors(folder / "fp32.onnx", model.projections(), model.weights(), FEEDS[:2], bits=(4, 8))
    assert sorted(errors[4]) == sorted(errors[8]) == sorted(g for g, _ in model.projections())
    assert all(0.01 < e < 0.5 for e in errors[4].values()), errors  # int4 on N(0, 0.02) weights: a few percent
    assert all(errors[8][g] < errors[4][g] / 3 for g in errors[4])  # 8-bit weights: the int8 activations remain
    x = np.random.default_rng(0).standard_normal((3, 70)).astype(np.float32)
    x[0, 5] = 400.0  # an outlier channel coarsens its block's int8 grid, and only that block's
    r = int8_blocks(x)
    assert np.abs(r[0, :32] - x[0, :32]).max() > 0.5 and np.abs(r[0, 32:] - x[0, 32:]).max() < 0.05
    assert np.allclose(r[1:], x[1:], atol=0.05)


def test_a_gate_between_int4_and_8_bits_moves_the_fewest_projections(setup, tmp_path):
    folder, exact, plain, all8 = setup
    threshold = plain + 0.7 * (all8 - plain)
    model = Decoder()
    notes = []
    facts, report, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx",
                                              gate(exact, threshold), FEEDS[:2], note=notes.append,
                                              fast_block=None)
    k = len(info["eight_bit"])
    assert report["passed"] and 1 <= k < len(model.projections()) and not info["fp32"]
    assert [g["name"] for g in info["eight_bit"]] == [r["name"] for r in info["ranked"][:k]]  # most harmful first
    assert facts["eight_bit"] == sorted(g["member"] for g in info["eight_bit"])
    # the file left on disk is the chosen graph (not the last trial's) and passes the gate
    assert worst_cosine(logits(tmp_path / "int4.onnx"), exact) >= threshold
    assert model.writes[-1] == (tuple(g["member"] for g in info["eight_bit"]), ())
    # one projection fewer was tried and missed (the plain int4 row is "0 at 8 bits")
    assert any(t["eight_bit"] == k - 1 and not t["passed"] for t in info["trials"] if t["tier"] != "fp32")
    assert any("plain int4 misses" in n for n in notes)


def test_a_gate_only_fp32_meets_is_refused_and_leaves_no_file(setup, tmp_path):
    folder, exact, _, _ = setup
    model = Decoder()
    facts, report, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx",
                                              gate(exact, 1.0 - 1e-12), FEEDS[:2], note=lambda m: None,
                                              fast_block=None)
    assert report is None and facts == {} and "misses the gate" in info["refused"]
    tiers = [t["tier"] for t in info["trials"]]
    # each tier's widest graph, once (the upstream tier first runs all-8-bit: its ranking needs the failing outputs)
    assert tiers == ["int4", "8-bit weights", "fp32", "8-bit + fp32"] + ["8-bit + upstream fp32"] * 2
    assert not info["held_out"]  # nothing was chosen, so nothing was checked on held-out inputs
    assert max(t["fp32"] for t in info["trials"]) == len(model.projections()) // 2  # never more than half fp32
    assert not (tmp_path / "int4.onnx").exists() and not (tmp_path / "int4.onnx.data").exists()


def test_a_gate_only_fp32_outliers_meet_keeps_8_bits_and_the_fewest_fp32(setup, tmp_path):
    """The third tier: every projection at 8 bits misses, half of them kept fp32 beside int4 misses, 8 bits
    with a few fp32 passes (what a trained model whose activations have outlier channels needs)."""
    folder, exact, plain, all8 = setup
    model = Decoder()
    half = len(model.projections()) // 2

    def gate_on_structure(path, seed=0):  # the gate of a model like that: needs 8-bit weights and fp32 outliers
        import onnx

        nodes = onnx.load(str(path), load_external_data=False).graph.node
        nbits = [next(a.i for a in n.attribute if a.name == "bits") for n in nodes if n.op_type == "MatMulNBits"]
        fp32 = sum(n.op_type == "MatMul" and n.input[1].endswith(".weight") for n in nodes)
        c = worst_cosine(logits(path), exact)
        if 4 in nbits or fp32 < 2:
            exc = ValidationError(f"the int4 graph: worst per-row cosine of 'logits' {c:.6f} (a 4-bit or "
                                  f"{fp32}-fp32 graph)")
            exc.report = {"min_cosine": c}
            raise exc
        return {"min_cosine": c, "passed": True}

    facts, report, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx",
                                              gate_on_structure, FEEDS[:2], note=lambda m: None,
                                              fast_block=None)
    assert report["passed"] and len(info["fp32"]) == 2 and len(info["eight_bit"]) == len(model.projections()) - 2
    ranked8 = sorted(info["ranked"], key=lambda r: r["rel_error_8bit"], reverse=True)
    assert [g["name"] for g in info["fp32"]] == [r["name"] for r in ranked8[:2]]  # by their 8-bit error
    assert facts["fp32"] == sorted(g["member"] for g in info["fp32"])
    gate_on_structure(tmp_path / "int4.onnx")  # the file on disk is the chosen graph
    assert [t["tier"] for t in info["trials"][:3]] == ["int4", "8-bit weights", "fp32"]
    assert not any(t["passed"] for t in info["trials"][:3]) and info["trials"][2]["fp32"] == half


def test_upstream_groups_follow_the_graph_and_rank_the_earliest_first(setup):
    """Layer i's cache is fed by layers < i and layer i's qkv only; the logits by every projection. Failing
    outputs come from a real validation report; the ranking puts what feeds them all first, in graph order."""
    from vlexport.export.validate import validate_precision

    folder, *_ = setup
    groups = Decoder().projections()
    names = [g for g, _ in groups]
    cones = upstream_groups(folder / "fp32.onnx", groups)
    layer = [[g for g in names if g.startswith(f"model.layers.{i}.")] for i in range(3)]
    assert cones["new_key.0"] == cones["new_value.0"] == {"model.layers.0.self_attn.qkv_proj"}
    assert cones["new_value.2"] == set(layer[0] + layer[1]) | {"model.layers.2.self_attn.qkv_proj"}
    assert cones["logits"] == set(names)

    class Graph:  # what validate_precision asks of a graph description: its outputs and an input maker
        outputs = [type("O", (), {"name": n, "classes": n == "logits", "masked_below": None, "row_axes": None})()
                   for n in cones]

        @staticmethod
        def make_inputs(sizes, rng, pad):
            return feeds(int(rng.integers(1000)))

    exact = ort.InferenceSession(str(folder / "fp32.onnx"), providers=["CPUExecutionProvider"])
    plain = ort.InferenceSession(str(folder / "plain.onnx"), providers=["CPUExecutionProvider"])
    names_out = [o.name for o in exact.get_outputs()]

    def run(sess):
        return lambda f: dict(zip(names_out, sess.run(names_out, f)))

    with pytest.raises(ValidationError) as err:  # int4 on random weights: far from a 0.9999 cosine
        validate_precision(run(exact), run(plain), Graph, {"batch": AxisRange(2, 2, 2)}, "plain", n_samples=3,
                           min_cosine=0.9999)
    report = err.value.report
    failing = failing_outputs(report, cones)
    assert failing and set(failing) <= set(cones)
    assert all(report["outputs"][o]["cosine_min"] < 0.9999 or o == "logits" for o in failing)
    ranked = upstream_ranking(names, cones, ["new_value.1", "logits"])
    assert ranked[:5] == layer[0] + ["model.layers.1.self_attn.qkv_proj"]  # they feed both, earliest first
    assert set(ranked) == set(names)  # the logits are fed by every projection
    assert upstream_ranking(names, cones, ["new_key.0"]) == ["model.layers.0.self_attn.qkv_proj"]
    assert failing_outputs(None, cones) == list(cones)  # no per-output figures: every output counts


def test_a_choice_that_misses_a_held_out_set_is_searched_again_with_it(setup, tmp_path):
    """The build's set passes with k projections at 8 bits; a held-out set asks for more: the search runs again
    with both sets required, and the graph left is the one that passes both."""
    folder, exact, plain, all8 = setup
    loose = plain + 0.1 * (all8 - plain)
    _, alone, alone_info = quantize_int4_gated(Decoder(), folder / "fp32.onnx", tmp_path / "int4.onnx",
                                               gate(exact, loose), FEEDS[:2], note=lambda m: None,
                                               fast_block=None)
    strict = (alone["min_cosine"] + all8) / 2  # what the build's set alone chose misses this; all 8-bit meets it
    model, sets = Decoder(), []

    def validate(path, seed=0):
        sets.append(seed)
        return gate(exact, loose if seed == 0 else strict)(path)

    facts, report, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx", validate,
                                              FEEDS[:2], note=lambda m: None, fast_block=None)
    first, second = info["held_out"][:2]
    assert first["seed"] == 1 and not first["passed"] and second["seed"] == 2 and second["passed"]
    assert worst_cosine(logits(tmp_path / "int4.onnx"), exact) >= strict  # the graph on disk passes both
    assert len(info["eight_bit"]) > len(alone_info["eight_bit"])  # more moved than the build's set alone asked for
    assert any(t["validation_sets"] == 2 for t in info["trials"])  # trials of the second search ran on both sets
    assert 1 in sets[sets.index(1) + 1:]  # candidates of the second search were checked on set 1 too


def _blocks(path) -> set:
    import onnx

    nodes = onnx.load(str(path), load_external_data=False).graph.node
    return {next(a.i for a in n.attribute if a.name == "block_size") for n in nodes if n.op_type == "MatMulNBits"}


def test_the_fast_block_is_kept_when_it_passes_the_gate_and_a_held_out_set(setup, tmp_path):
    folder, exact, plain, _ = setup
    model, sets = Decoder(), []

    def validate(path, seed=0):
        sets.append(seed)
        return gate(exact, plain - 0.05)(path)  # loose enough for the coarse block

    facts, report, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx", validate,
                                              FEEDS[:2], note=lambda m: None)
    assert facts["block_size"] == FAST_BLOCK == 128 and _blocks(tmp_path / "int4.onnx") == {128}
    assert [(t["tier"], t["block_size"], t["passed"]) for t in info["trials"]] == [("int4", 128, True)]
    assert sets == [0, 1] and info["held_out"][0]["passed"]  # checked on a held-out set too
    assert model.writes == [((), (), 128)]  # one graph written: no ranking, no block-32 graph


def test_a_fast_block_that_misses_falls_back_to_the_fine_block_and_its_search(setup, tmp_path):
    """A gate the coarse block cannot meet (as outlier activations make it on trained weights): plain int4 at
    block 32 is tried next, and kept when it passes; a fast block that passes only the build's set (not a
    held-out one) is not kept either."""
    folder, exact, plain, _ = setup

    def coarse_misses(held_out_only):
        def validate(path, seed=0):
            c = worst_cosine(logits(path), exact)
            if 128 in _blocks(path) and (seed > 0 or not held_out_only):
                exc = ValidationError(f"the int4 graph: worst per-row cosine of 'logits' {c:.6f} (block 128)")
                exc.report = {"min_cosine": c}
                raise exc
            return {"min_cosine": c, "passed": True}
        return validate

    for held_out_only in (False, True):
        notes, model = [], Decoder()
        facts, report, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx",
                                                  coarse_misses(held_out_only), FEEDS[:2], note=notes.append)
        assert facts["block_size"] == 32 and _blocks(tmp_path / "int4.onnx") == {32} and report["passed"]
        assert [(t["block_size"], t["passed"]) for t in info["trials"]] == [(128, held_out_only), (32, True)]
        assert any("plain int4 at block 128 misses" in n for n in notes)
        assert not info["eight_bit"] and not info["fp32"]  # plain int4 at block 32 passed: nothing moved
        assert [h["passed"] for h in info["held_out"]] == ([False] if held_out_only else [])


def test_a_pinned_block_is_the_only_one_written(setup, tmp_path):
    folder, exact, plain, _ = setup
    model = Decoder()
    facts, _, info = quantize_int4_gated(model, folder / "fp32.onnx", tmp_path / "int4.onnx",
                                         gate(exact, plain - 0.05), FEEDS[:2], note=lambda m: None, block=64,
                                         fast_block=None)
    assert facts["block_size"] == 64 and _blocks(tmp_path / "int4.onnx") == {64}
    assert [t["block_size"] for t in info["trials"]] == [64] and model.writes == [((), (), 64)]
