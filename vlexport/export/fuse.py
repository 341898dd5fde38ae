"""ONNX Runtime's fused kernels for dynamo-exported graphs: attention and BiasGelu.

ORT's own transformer optimizer did not match our dynamo graphs' attention, and its BERT fusion assumes
right-only padding (REFERENCE.md §3: VisualBERT's [text | regions] mask gave wrong logits). onnxscript's
rewriter (`onnxscript.rewriter.ort_fusions`) is written for dynamo graphs: it matches scaled-dot-product
attention with an additive mask as `MultiHeadAttention` taking the mask as an attention bias (any padding
layout), residual Add + LayerNorm as `SkipLayerNormalization`, and Add + erf-GELU as `BiasGelu`. The
SkipLayerNormalization nodes are then turned back into Add + LayerNormalization: on CPU that kernel measured
2-8x slower than the pair (vlexport.runtime.backends.onnxruntime.SLOW_CPU_FUSIONS).

The fused graph is ONNX Runtime's only (com.microsoft ops: TensorRT cannot parse them); the artifact keeps
the plain fp32 graph for everything else (fp16 conversion, quantization, TensorRT). The build validates the
fused graph against PyTorch on the same shape grid as the plain one and keeps it only when it is faster.
"""

from __future__ import annotations

import collections
import time
from pathlib import Path

from vlexport._deps import require
from vlexport.export.onnx_export import EXTERNAL_DATA_THRESHOLD

FUSED_OPS = ("MultiHeadAttention", "Attention", "SkipLayerNormalization", "BiasGelu", "FastGelu", "Gelu")


def fuse_for_ort(src: Path, dst: Path) -> dict:
    """Write `src` with ORT's fused ops to `dst`. Returns {"fusions": {rule: count}, "ops": {fused op: count},
    "seconds", "onnxscript"}; "ops" is empty when nothing matched (then `dst` is still written)."""
    require("onnxscript", "fusing graphs for ONNX Runtime")
    import onnx_ir as ir
    import onnxscript
    from onnxscript.rewriter.ort_fusions import optimize_for_ort

    src, dst = Path(src), Path(dst)
    t0 = time.perf_counter()
    model = ir.load(str(src))
    model, stats = optimize_for_ort(model)
    stats["skip_layer_normalization_undone"] = unfuse_skip_layernorm(model)
    tensors = [v.const_value for v in model.graph.initializers.values() if v.const_value is not None]
    # Weights that came from an external file must be written to one of dst's own: saved "as is" they would
    # keep naming src's data file, which does not exist beside dst.
    large = (sum(t.nbytes for t in tensors) > EXTERNAL_DATA_THRESHOLD
             or any(isinstance(t, ir.ExternalTensor) for t in tensors))
    dst.parent.mkdir(parents=True, exist_ok=True)
    ir.save(model, str(dst), external_data=(dst.name + ".data") if large else None)
    ops = collections.Counter(n.op_type for n in model.graph.all_nodes() if n.op_type in FUSED_OPS)
    return {"fusions": {k: int(v) for k, v in stats.items() if v}, "ops": dict(ops),
            "seconds": round(time.perf_counter() - t0, 2), "onnxscript": onnxscript.__version__}


def unfuse_skip_layernorm(model) -> int:
    """Turn onnxscript's SkipLayerNormalization back into Add (+ the bias Add) + LayerNormalization, in place
    (its CPU kernel is the slower: vlexport.runtime.backends.onnxruntime.SLOW_CPU_FUSIONS); returns how many.
    A node whose mean / inv_std_var outputs are used, or whose outputs are graph outputs, is left as it is."""
    import onnx_ir as ir
    from onnx_ir.convenience import replace_all_uses_with

    graph_outputs, count = set(map(id, model.graph.outputs)), 0
    for node in list(model.graph):
        if node.op_type != "SkipLayerNormalization" or node.domain != "com.microsoft":
            continue
        outs = list(node.outputs)
        if any(len(list(o.uses())) for o in outs[1:3]) or any(id(o) in graph_outputs for o in outs):
            continue
        x, skip, gamma, beta, bias = (list(node.inputs) + [None] * 5)[:5]
        eps = node.attributes["epsilon"].value if "epsilon" in node.attributes else 1e-12
        new = [ir.node("Add", [x, skip])]
        if bias is not None:  # ORT's input_skip_bias_sum is input + skip + bias
            new.append(ir.node("Add", [new[-1].outputs[0], bias]))
        total = new[-1].outputs[0]
        new.append(ir.node("LayerNormalization", [total, gamma] + ([beta] if beta is not None else []),
                           attributes={"axis": -1, "epsilon": float(eps)}))
        for i, n in enumerate(new):  # names the saved graph can hold (unique: the fused node's own name)
            n.name = f"{node.name}_unfused_{i}"
            n.outputs[0].name = f"{outs[0].name}_unfused_{i}"
        model.graph.insert_before(node, new)
        replace_all_uses_with(outs[0], new[-1].outputs[0])
        if len(outs) > 3:
            replace_all_uses_with(outs[3], total)
        model.graph.remove(node, safe=True)
        count += 1
    return count
