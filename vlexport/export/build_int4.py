"""The build's int4 steps: the int4 weight-only graph of a written graph (quantized, gated by the
accuracy-aware search of vlexport.export.int4_search, validated against fp32 and against the rounded
numpy reference), and a graph too large for PyTorch here, written layer by layer with streamed weights."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from vlexport.artifact import onnx_entry
from vlexport.export.build_common import (input_kind, moved_note, ort_runner, precision_note, real_inputs,
                                          scalar_facts)
from vlexport.progress import Stages

if TYPE_CHECKING:
    from vlexport.export.build import BuildOptions

# an int4 graph against the numpy reference on the same int4-rounded weights differs only by kernel
# arithmetic: MatMulNBits quantizes activations to int8 at accuracy level 4 (worst row 0.9967 measured on
# the tiny random VipLlava; a weight-layout bug gives ~0)
INT4_EXACT_COSINE = 0.99
INT4_EXACT_SAMPLES = 10  # the numpy reference is slow at full width; the shape grid comes on top


def int4_graph(graph, module, stage: Path, manifest: dict, axes, fp32, opts: BuildOptions, st: Stages,
               processor=None, runners=None):
    """The int4 weight-only graph of a written graph, validated twice: against the fp32 graph (the quantization
    error: gated like int8 on checkpoint weights, with the fewest projections moved to 8 bits that pass it:
    vlexport.export.int4_search; reported only on random weights, whose quantization error says nothing
    about a trained model's), and against the model's numpy reference on the same rounded weights (the
    graph itself: gated tight). Both on realistic inputs where the graph has a maker for them."""
    from vlexport.export.int4_search import BLOCK, FAST_BLOCK, quantize_int4_gated
    from vlexport.export.validate import int4_gate, memoized_outputs, precision_cases, validate_precision

    entry, stem = manifest["graphs"][graph.name], graph.file_stem
    seen = entry["trace_sizes"]
    real = real_inputs(graph, processor, runners)
    gate = int4_gate(manifest["source"]["weights"], graph.int8_cosine)
    n, n_exact = (len(precision_cases(axes, k, seen)) for k in (opts.int8_samples, INT4_EXACT_SAMPLES))
    path = stage / f"{stem}.int4.onnx"

    fp32_outputs = memoized_outputs(fp32)  # every candidate of the search meets the same inputs

    def validate(p, seed=0):
        return validate_precision(fp32_outputs, ort_runner(p, opts.threads), graph, axes,
                                  f"the int4 '{graph.name}' graph", n_samples=opts.int8_samples, seen=seen,
                                  make_inputs=real, seed=seed, **gate)

    with st.stage(f"Writing '{graph.name}' with int4 weight-only MatMuls (MatMulNBits) and validating against "
                  f"fp32 on {n} {input_kind(real)} inputs (projections moved to 8 bits or fp32 if it misses the gate)"):
        def sample():  # the ranking's inputs: made only when plain int4 misses (a decoder's run the fp32 graphs)
            rng = np.random.default_rng(7)
            return [(real or graph.make_inputs)(sizes, rng, pad) for sizes, pad in precision_cases(axes, 6, seen)]

        pinned = opts.int4_block_size
        facts, rep, search = quantize_int4_gated(module, stage / f"{stem}.onnx", path, validate, sample,
                                                 threads=opts.threads, note=lambda m: st.note(m, "yellow"),
                                                 block=pinned or BLOCK, fast_block=None if pinned else FAST_BLOCK)
    if rep is None:
        entry["validation"]["int4"] = {"passed": False, "refused": search["refused"], "search": search}
        st.note(f"int4 not built for '{graph.name}': {search['refused']}", "yellow")
        st.total -= 1
        return
    eight, wide = ([g["member"] for g in search[k]] for k in ("eight_bit", "fp32"))
    entry["onnx"]["int4"] = onnx_entry(stage, f"{stem}.int4.onnx", **scalar_facts(facts))
    entry["onnx"]["int4"]["search"] = search
    int4 = ort_runner(path, opts.threads)
    with st.stage(f"Validating '{graph.name}' int4 against its rounded reference on {n_exact} inputs",
                  steps=n_exact) as adv:
        ref = module.numpy_reference(quantized=True, eight_bit=eight, fp32=wide, block_size=facts["block_size"])
        exact = validate_precision(ref, int4, graph, axes,
                                   f"the int4 '{graph.name}' graph (vs its int4-rounded weights)",
                                   n_samples=INT4_EXACT_SAMPLES, seen=seen, progress=adv, min_cosine=INT4_EXACT_COSINE,
                                   min_top1=None, make_inputs=real)
    rep["rounded_reference"] = {k: exact[k] for k in ("min_cosine", "cases", "passed")}
    rep["held_out"] = search["held_out"]
    entry["validation"]["int4"] = rep
    kept = "".join(moved_note(search[k], label) for k, label in (("eight_bit", "at 8 bits"), ("fp32", "kept fp32")))
    st.note(f"int4 (block {facts['block_size']}) vs its int4-rounded reference: worst per-row cosine "
            f"{exact['min_cosine']:.6f}; " + precision_note("quantization error (int4 vs fp32)", rep) + kept)


def build_streamed(graph, module, stage: Path, manifest: dict, opts: BuildOptions, st: Stages):
    """A graph whose weights never fit in PyTorch here (a 7B decoder: 27 GB in fp32): the model writes it
    layer by layer with weight-only MatMulNBits, streaming its weights, and it is validated on a few small
    shapes against the model's numpy reference (which streams the same weights). There is no fp32 graph to
    rank projections against, so the search is over whole graphs, the fewest bits first: int4 at block 128
    (faster at decode), int4 at block 32, every projection at 8 bits (block 32); the first that passes the
    gate is kept (checkpoint weights; on random weights the gate only reports, so the first is)."""
    from vlexport.export.int4_search import BLOCK, FAST_BLOCK
    from vlexport.export.onnx_export import name_output_axes
    from vlexport.errors import ValidationError
    from vlexport.export.validate import int4_gate, memoized_outputs, validate_streamed

    entry, stem = manifest["graphs"][graph.name], graph.file_stem
    path = stage / f"{stem}.int4.onnx"
    gate = int4_gate(manifest["source"]["weights"], graph.int8_cosine)  # random weights: reported only
    pinned = opts.int4_block_size
    candidates = [(4, pinned), (8, pinned)] if pinned else [(4, FAST_BLOCK), (4, BLOCK), (8, BLOCK)]
    fp32_reference = memoized_outputs(module.numpy_reference())  # a pass over every weight: once, not per candidate
    trials = []
    for bits, size in candidates:
        what = f"int4, block {size}" if bits == 4 else f"every projection at 8 bits, block {size}"
        with st.stage(f"Writing '{graph.name}' layer by layer with weight-only MatMulNBits ({what}; weights "
                      f"streamed)"):
            facts = module.write_onnx(path, quant="int4" if bits == 4 else "int8", block_size=size)
            name_output_axes(path, graph)
        quantized = ort_runner(path, opts.threads)
        with st.stage(f"Validating '{graph.name}' ({what}) against the numpy reference on a few small shapes"):
            try:  # the kernel's int8 activations round per block too: at 128 even the rounded reference may miss
                exact = validate_streamed(module.numpy_reference(quantized=True, block_size=size, bits=bits),
                                          quantized, graph, f"the '{graph.name}' graph ({what}; vs its rounded "
                                          f"weights)", min_cosine=INT4_EXACT_COSINE)
                rep = validate_streamed(fp32_reference, quantized, graph,
                                        f"the '{graph.name}' graph ({what})", min_cosine=gate["min_cosine"])
                trials.append({"bits": bits, "block_size": size, "passed": True, "min_cosine": rep["min_cosine"]})
                break
            except ValidationError as exc:
                trials.append({"bits": bits, "block_size": size, "passed": False,
                               "min_cosine": (getattr(exc, "report", None) or {}).get("min_cosine"),
                               "why": str(exc).split(": ", 1)[-1][:200]})
                if (bits, size) == candidates[-1]:  # nothing else to fall back to: say so
                    raise ValidationError(
                        f"{exc}. This decoder is too large for PyTorch here, so a weight-only quantized graph is "
                        f"the only form the build writes it in (tried: int4 and 8 bits); build it on a machine "
                        f"where it fits in fp32 (then --int4 searches for projections to keep at 8 bits or "
                        f"fp32)") from None
                st.note(f"{what} misses the gate ({trials[-1]['why'][:120]}); trying the next", "yellow")
                st.total += 2
    entry["onnx"]["int4"] = onnx_entry(stage, f"{stem}.int4.onnx", **scalar_facts(facts))
    entry["exporter"], entry["trace_sizes"] = facts["exporter"], {}
    entry["streamed"] = True
    rep["rounded_reference"] = {k: exact[k] for k in ("min_cosine", "cases", "passed")}
    rep["trials"] = trials
    entry["validation"]["int4"] = rep
    st.note(f"{what} vs its rounded reference: worst per-row cosine {exact['min_cosine']:.6f}; "
            + precision_note("quantization error (vs fp32 weights)", rep))
    st.total -= 2  # no simplify, no fp32 validation for this graph
