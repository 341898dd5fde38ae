"""Dynamic int8 quantization of an fp32 ONNX graph for CPU inference (ONNX Runtime).

Weights of MatMul/Gemm become int8 (symmetric, per output channel); activations are quantized
on the fly per call (`DynamicQuantizeLinear` + `MatMulInteger`/`DynamicQuantizeMatMul`), so no
calibration data is needed. Embedding gathers, LayerNorm, Softmax and GELU stay fp32.

Choices, measured on a full-size BERT-base VQA model (random weights, 2 CPU threads, AVX512-VNNI):
- per-channel weights: better agreement with fp32 than per-tensor at the same speed;
- only MatMul/Gemm: quantizing Gather (the word-embedding table) saves file size but not time;
- `reduce_range` (7-bit weights, [-64, 64]) chosen by the build machine (`saturating_cpu()`; `--int8-portable`
  forces it, for artifacts that may run on any CPU; the runtime refuses an 8-bit graph on a CPU that
  saturates, `int8_cpu_mismatch`): on x86 CPUs
  without VNNI, ONNX Runtime's u8 x s8 kernel sums pairs of products in 16 bits (vpmaddubsw) and
  saturates: measured on an AVX2-only AMD EPYC, errors of 6.4 on outputs of ~14 with full-range
  weights, none (2e-6 from the exact int8 product) with reduce_range. On VNNI and ARM it stays off
  (it costs accuracy for nothing there). The manifest records which was used.
  Per-token graphs (vlexport.export.per_token) where signed 8-bit weights would saturate get unsigned
  8-bit ones instead (`unsigned_weights`: u8 x u8 never saturates): smoothing scales some weight rows up,
  and 7 bits lose the rest (worst row 0.925 vs 0.983 with u8 weights, AVX2-only EPYC, trained MiniLM).
- the output layers (the classifier: a MatMul/Gemm producing a graph output) stay fp32
  (`keep_output_layers`): their error lands unaveraged on the logits, and they are ~0.1% of
  the work at batch 1 for VQA (768 x 3129 on one token);
- no `quant_pre_process`: ORT's own session optimizer already fuses what matters, and the
  pre-processing pass (symbolic shape inference on a dynamo graph) adds minutes for no gain.

Accurate int8 for the sensitive nodes (`accurate_nodes`, chosen by vlexport.export.int8_search): a trained
model's LayerNorm/GELU outputs carry outlier channels and tokens, and one activation range per call for the
whole batch costs those MatMuls most of their accuracy. They become `MatMulNBits` with 8-bit weights
(symmetric, blocks of 128 along K) at accuracy level 4, where ONNX Runtime quantizes the activations per row
and per block: on a trained MiniLM-size VisualBERT worst-row cosine 0.997 vs 0.968 for the dynamic kernel,
at ~1.4x fp32's speed instead of ~2x (measured in `benchmarks/run_int8_tradeoff.py`).
Tried and not kept (same model, same inputs): `reduce_range` (0.951, worse), per-tensor weights (0.888),
SmoothQuant-style smoothing with alpha 0.5/0.7 (a Mul per activation, weights rescaled: 0.943/0.949 with no node kept, a
little better than plain once the top nodes are accurate; not worth a Mul per activation).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from vlexport._deps import require
from vlexport.errors import ArtifactError

DEFAULT_OPS = ("MatMul", "Gemm")


def _size(folder: Path, main: str) -> int:
    return sum(p.stat().st_size for p in folder.iterdir()
               if p.name == main or (p.name.startswith(main) and p.name.endswith((".data", ".weights"))))


def output_layers(model, op_types=DEFAULT_OPS) -> list[str]:
    """Names of the MatMul/Gemm nodes that compute a graph output (directly or through one Add):
    the classifier heads. Their error goes straight into the logits, and they cost little."""
    outputs = {o.name for o in model.graph.output}
    producer = {o: n for n in model.graph.node for o in n.output}
    names = []
    for out in outputs:
        node = producer.get(out)
        if node is not None and node.op_type == "Add":
            node = next((producer[i] for i in node.input if i in producer and producer[i].op_type in op_types), node)
        if node is not None and node.op_type in op_types:
            names.append(node.name)
    return names


def fold_transposed_weights(model, op_types=DEFAULT_OPS) -> list[str]:
    """Give each MatMul whose weight arrives through a Transpose of a 2-D initializer (a head tied to the token
    embedding: `MatMul(x, Transpose(wte))`) a transposed copy of its own, so the quantizer, which takes only
    constant weights, can quantize it; the embedding's Gather keeps the original. Returns the nodes changed."""
    from onnx import numpy_helper

    inits = {t.name: t for t in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    made, changed = {}, []
    for node in model.graph.node:
        if node.op_type not in op_types or len(node.input) < 2:
            continue
        t = producer.get(node.input[1])
        if t is None or t.op_type != "Transpose" or t.input[0] not in inits or len(inits[t.input[0]].dims) != 2:
            continue
        perm = next((list(a.ints) for a in t.attribute if a.name == "perm"), [1, 0])
        if perm != [1, 0]:
            continue
        name = made.get(t.input[0])
        if name is None:
            name = made[t.input[0]] = f"{t.input[0]}.transposed"
            w = numpy_helper.to_array(inits[t.input[0]], base_dir="")
            model.graph.initializer.append(numpy_helper.from_array(w.T.copy(), name))
        node.input[1] = name
        changed.append(node.name)
    used = {i for n in model.graph.node for i in n.input} | {o.name for o in model.graph.output}
    dead = [n for n in model.graph.node if n.op_type == "Transpose" and not any(o in used for o in n.output)]
    for n in dead:
        model.graph.node.remove(n)
    return changed


def not_2d_weights(model, op_types=DEFAULT_OPS) -> list[str]:
    """MatMul nodes whose constant operand is not a 2-D weight (e.g. a per-image position grid, a (C, 12, 12)
    table interpolated per image): ORT's per-channel int8 MatMul supports only 2-D weights, so they
    stay fp32 (they are tiny)."""
    inits = {t.name: len(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type in op_types and any(i in inits and inits[i] != 2 for i in n.input[1:2])]


def weights_of_shapes(model, shapes, op_types=DEFAULT_OPS) -> list[str]:
    """MatMul/Gemm nodes whose constant weight has one of `shapes` (a description's int8 policy, e.g. a
    text tower's FFN input projection (hidden, intermediate), whose LayerNorm-output activations carry
    the outliers that per-tensor activation quantization handles worst)."""
    wanted = {tuple(s) for s in shapes}
    inits = {t.name: tuple(t.dims) for t in model.graph.initializer}
    return [n.name for n in model.graph.node
            if n.op_type in op_types and any(inits.get(i) in wanted for i in n.input[1:2])]


def saturating_cpu(flags: str | None = None, machine: str | None = None) -> bool:
    """True on x86 CPUs without VNNI (AVX-512 VNNI, AVX-VNNI or AMX), whose u8 x s8 dot products saturate.
    flags / machine: a /proc/cpuinfo text and a `platform.machine()` name (default: this machine's)."""
    import platform

    machine = (machine or platform.machine()).lower()
    if machine not in ("x86_64", "amd64", "i686", "x86"):
        return False
    if flags is None:
        try:
            flags = open("/proc/cpuinfo").read()
        except OSError:
            return False
    return not any(f in flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))


def int8_cpu_mismatch(int8_entry: dict, flags: str | None = None, machine: str | None = None) -> str | None:
    """Why an int8 graph (its manifest entry) must not run on this CPU, or None when it may.

    A graph quantized with full 8-bit weights (reduce_range off: built on a CPU with VNNI or on ARM) gives wrong
    answers on an x86 CPU without VNNI: there ONNX Runtime sums pairs of u8 x s8 products in 16 bits and they
    saturate. Measured on an AVX2-only AMD EPYC, trained MiniLM VisualBERT, per-token int8 graph: worst-row
    cosine 0.990 with 7-bit weights, 0.928 with 8-bit ones. Its build-time gate does not hold here."""
    if (int8_entry.get("reduce_range", True) or int8_entry.get("weight_type") == "QUInt8"  # u8 x u8: no saturation
            or not saturating_cpu(flags, machine)):
        return None
    return ("its int8 graph has full 8-bit weights (quantized with reduce_range off, for CPUs with VNNI), and this "
            "CPU has no VNNI (avx512_vnni, avx_vnni or amx_int8): ONNX Runtime's int8 kernel saturates here and "
            "the answers would be wrong (the accuracy gate it passed at build time does not hold on this CPU); "
            "rebuild it with --int8-portable (weights right on every CPU) or on this machine, or load "
            "it with precision='fp32'")


def int8_weights(int8_entry: dict) -> str:
    """The kind of an int8 graph's weights (its manifest entry), and the CPUs it runs right on."""
    if int8_entry.get("weight_type") == "QUInt8":
        return "unsigned 8-bit weights (u8 x u8): any CPU"
    if int8_entry.get("reduce_range"):
        return "7-bit weights: any CPU"
    return "8-bit weights: x86 CPUs with VNNI, or ARM (refused on x86 without VNNI)"


def quantize_int8(fp32_onnx: Path, out_onnx: Path, *, per_channel: bool = True, reduce_range: bool | None = None,
                  unsigned_weights: bool = False,
                  op_types=DEFAULT_OPS, keep_output_layers: bool = True, nodes_to_exclude=None,
                  keep_weight_shapes=(), accurate_nodes=()) -> dict:
    """Write a dynamically quantized int8 copy of `fp32_onnx` to `out_onnx`; return what was done.

    The input may keep its weights in external data files next to it (they are loaded from its
    folder). The output is a single file when under 2 GB, else it gets `<name>.data` beside it.
    unsigned_weights: QUInt8 weights (asymmetric, per channel) for a u8 x u8 kernel, which never saturates:
    the per-token graph's weights where signed 8-bit ones would saturate (7-bit ones lose the smoothed rows).
    Returns {"quantizer", "per_channel", "reduce_range", "weight_type", "op_types", "nodes_quantized",
    "nodes_total_matmul", "bytes", "fp32_bytes", "seconds"}.
    """
    onnx = require("onnx", "int8 quantization")
    require("onnxruntime", "int8 quantization")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    fp32_onnx, out_onnx = Path(fp32_onnx), Path(out_onnx)
    if not fp32_onnx.is_file():
        raise ArtifactError(f"cannot quantize '{fp32_onnx}': no such ONNX file")
    t0 = time.perf_counter()
    if unsigned_weights:  # u8 x u8 kernels widen to 16 bits before they add: full 8-bit weights on every CPU
        reduce_range = False
    elif reduce_range is None:
        reduce_range = saturating_cpu()
    model = onnx.load(str(fp32_onnx), load_external_data=True)  # external data from the graph's folder
    n_matmul = sum(1 for n in model.graph.node if n.op_type in op_types)
    if accurate_nodes:
        model = blockwise_int8(model, accurate_nodes)
    untied = [] if keep_output_layers else fold_transposed_weights(model, op_types)
    exclude = (list(nodes_to_exclude or []) + (output_layers(model, op_types) if keep_output_layers else [])
               + not_2d_weights(model, op_types) + weights_of_shapes(model, keep_weight_shapes, op_types))
    # onnxruntime's quantizer may first rewrite a Gemm as MatMul + Add, naming the MatMul "<gemm>_MatMul":
    # a Gemm kept fp32 by name must be excluded under that name too (seen with onnxruntime 1.32)
    gemms = {n.name for n in model.graph.node if n.op_type == "Gemm"}
    exclude = list(dict.fromkeys(exclude + [f"{n}_MatMul" for n in exclude if n in gemms]))
    large = model.ByteSize() > 1_900_000_000 if hasattr(model, "ByteSize") else False
    out_onnx.parent.mkdir(parents=True, exist_ok=True)
    # The quantizer logs a pre-processing hint on the root logger; it does not apply to these graphs
    # (shape inference already ran at export), so keep the build's output clean.
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        quantize_dynamic(model, out_onnx, op_types_to_quantize=list(op_types), per_channel=per_channel,
                         reduce_range=reduce_range,
                         weight_type=QuantType.QUInt8 if unsigned_weights else QuantType.QInt8,
                         nodes_to_exclude=exclude, use_external_data_format=large,
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)
    del model
    q = onnx.load(str(out_onnx), load_external_data=False)
    quant_ops = {"MatMulInteger", "DynamicQuantizeMatMul", "QGemm", "MatMulIntegerToFloat", "QLinearMatMul",
                 "MatMulNBits"}
    n_quant = sum(1 for n in q.graph.node if n.op_type in quant_ops)
    n_accurate = sum(1 for n in q.graph.node if n.op_type == "MatMulNBits")
    return {
        "quantizer": "onnxruntime.quantization.quantize_dynamic",
        "weight_type": "QUInt8" if unsigned_weights else "QInt8", "per_channel": per_channel,
        "reduce_range": reduce_range,
        "op_types": list(op_types), "nodes_quantized": n_quant, "nodes_total_matmul": n_matmul,
        "kept_fp32": exclude, "accurate_int8": list(accurate_nodes), "untied_heads": untied,
        "nodes_accurate_int8": n_accurate,
        "bytes": _size(out_onnx.parent, out_onnx.name), "fp32_bytes": _size(fp32_onnx.parent, fp32_onnx.name),
        "seconds": round(time.perf_counter() - t0, 2),
        "onnxruntime": __import__("onnxruntime").__version__,
    }


ACCURATE_BLOCK = 128  # 32 is a little more accurate and as slow as fp32 here; 128 keeps ~1.4x fp32's speed


def blockwise_int8(model, nodes, block_size: int = ACCURATE_BLOCK):
    """`model` with the MatMuls named in `nodes` as MatMulNBits: 8-bit symmetric weights in blocks along K,
    activations quantized per row and block at run time (accuracy level 4). Returns the new ModelProto."""
    from onnxruntime.quantization import matmul_nbits_quantizer as mq

    config = mq.DefaultWeightOnlyQuantConfig(block_size=block_size, is_symmetric=True, accuracy_level=4, bits=8,
                                             op_types_to_quantize=("MatMul",))
    wanted = set(nodes)
    # the quantizer takes every MatMul of op_types_to_quantize (nodes_to_include only adds to them)
    others = [n.name for n in model.graph.node if n.op_type == "MatMul" and n.name not in wanted]
    quantizer = mq.MatMulNBitsQuantizer(model, bits=8, block_size=block_size, is_symmetric=True, accuracy_level=4,
                                        nodes_to_exclude=others, algo_config=config,
                                        op_types_to_quantize=("MatMul",))
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer logs every node at INFO
    try:
        quantizer.process()
    finally:
        root.setLevel(level)
    return quantizer.model.model
