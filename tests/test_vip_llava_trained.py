"""VipLlava with trained Llama weights (SmolLM2-135M-Instruct as its language model; the CLIP tower and
projector small and random), built with fp16 and int4 and gated on realistic inputs: corpus text through
the processor's tokenizer, a real prefix's keys and values from the fp32 graphs.

What trained weights show that random ones hide: fp32 rounding noise of a 30-layer stream exceeds a fixed
atol (the fp32 check then judges against float64), a tied lm_head (the checkpoint has none), and int4 that
loses a quarter of the next-token agreement. The int4 search's outcome on this model is recorded, not
assumed: it is refused, and loading precision="int4" then says so. 8-bit weights run with int8 activations
miss the per-token cache gate at layers 3-6; half the projections kept fp32 by their simulated error still
miss it; kept fp32 upstream of the failing outputs (the first layers) they meet it, but the next-token
top-1 agreement then misses on held-out inputs (near-tied next tokens flip)."""

from __future__ import annotations

import io
import json

import pytest

import smollm_kit

pytestmark = pytest.mark.skipif(smollm_kit.gguf_folder() is None, reason=smollm_kit.SKIP_REASON)

PROMPT = "The capital of France is"
NEW = 6


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from vlexport.export.build import build
    from vlexport.specs import AxisRange

    llm = smollm_kit.smollm2_folder(tmp_path_factory.mktemp("smollm2"))
    folder = smollm_kit.vipllava_smollm2(llm, tmp_path_factory.mktemp("vipllava-smollm2"))
    out = build(str(folder), tmp_path_factory.mktemp("art") / "smol", fp16=True, int4=True, progress=False,
                axes={"images": AxisRange(1, 1, 2), "batch": AxisRange(1, 1, 2), "text": AxisRange(1, 16, 32),
                      "past": AxisRange(1, 32, 64)}, fp16_samples=8, int8_samples=8)
    manifest = json.loads((out / "manifest.json").read_text())
    return folder, out, manifest


def test_fp32_decoder_passes_against_pytorch(trained):
    rep = trained[2]["graphs"]["decoder"]["validation"]["fp32"]
    assert rep["passed"]
    floor = rep.get("noise_floor")
    if floor and floor["worst"]["output"]:  # cases past atol were judged against float64, and within its rule
        w = floor["worst"]
        assert w["graph_rel"] <= floor["factor"] * w["torch_fp32_rel"] + 1e-4


def test_fp16_decoder_meets_its_gate_on_realistic_inputs(trained):
    rep = trained[2]["graphs"]["decoder"]["validation"]["fp16"]
    assert rep["passed"] and rep["inputs"] == "realistic"
    assert rep["min_cosine"] >= 0.999
    assert rep["outputs"]["logits"]["top1"] >= 0.98


def test_int4_is_refused_with_its_trials_in_the_manifest(trained):
    import vlexport
    from vlexport.errors import ArtifactError

    _, out, manifest = trained
    entry = manifest["graphs"]["decoder"]
    v = entry["validation"]["int4"]
    assert "int4" not in entry["onnx"] and not list(out.glob("decoder.int4.onnx*"))
    assert not v["passed"] and "misses the gate" in v["refused"]
    assert v["search"]["trials"][0]["block_size"] == 128 and not v["search"]["trials"][0]["passed"]  # fast block first
    trials = v["search"]["trials"][1:]
    assert all(t["block_size"] == 32 for t in trials)  # then the search, at the finer block
    tiers = [t["tier"] for t in trials]
    assert tiers[:4] == ["int4", "8-bit weights", "fp32", "8-bit + fp32"]  # each wider tier's widest graph missed
    assert v["search"]["ranked"][0]["rel_error"] > 0.05  # the simulated error found projections worth moving
    # the upstream ranking mends what the error ranking could not (the early layers' cache: 0.981 -> 0.997 with
    # the same 60 projections fp32); what still misses is the next-token agreement on a few dozen tokens
    upstream = [t for t in trials if t["tier"] == "8-bit + upstream fp32" and t["min_cosine"] is not None]
    assert max(t["min_cosine"] for t in upstream) > trials[3]["min_cosine"] + 0.01
    assert all(t["fp32"] <= 60 for t in trials)  # never more than half of the 121 projections in fp32
    # a graph that passed the build's set was checked on held-out sets, and missed one (int4 is refused). Which
    # trial passes the build's set depends on the CPU's int8 kernels (on an AVX-512 VNNI EPYC 28 upstream fp32
    # passed it and missed a held-out set; on an AVX2-only one none passed it)
    held_out = v["search"]["held_out"]
    assert bool(held_out) == any(t["passed"] for t in trials)
    assert all(not h["passed"] for h in held_out)  # refused: every held-out set it was checked on missed
    with pytest.raises(ArtifactError, match="has no int4 graph: int4 misses the gate"):
        vlexport.load(out, precision="int4")
    from rich.console import Console

    from vlexport.report import manifest_tables

    console = Console(width=200, record=True, file=io.StringIO())
    for t in manifest_tables(manifest):
        console.print(t)
    text = console.export_text()
    assert "graph 'decoder': int4 trials (refused: int4 misses the gate" in text  # `vlexport inspect` shows why


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_greedy_continuation_equals_transformers(trained, precision):
    import vlexport
    from transformers import AutoTokenizer

    folder, out, _ = trained
    theirs = smollm_kit.greedy_tokens(folder, PROMPT, NEW)
    ids = AutoTokenizer.from_pretrained(folder)(PROMPT, return_tensors="np")["input_ids"]
    model = vlexport.load(out, precision=precision)
    ours = model.generate(input_ids=ids, max_new_tokens=NEW)[0, ids.shape[1]:].tolist()
    text = AutoTokenizer.from_pretrained(folder).decode(theirs)
    assert "Paris" in text  # the trained weights came through
    assert ours == theirs, (ours, theirs)
