"""ONNX Runtime's fused kernels for dynamo-exported graphs: attention, SkipLayerNormalization, BiasGelu.

ORT's own transformer optimizer did not match our dynamo graphs' attention, and its BERT fusion assumes
right-only padding (REFERENCE.md §3: VisualBERT's [text | regions] mask gave wrong logits). onnxscript's
rewriter (`onnxscript.rewriter.ort_fusions`) is written for dynamo graphs: it matches scaled-dot-product
attention with an additive mask as `MultiHeadAttention` taking the mask as an attention bias (any padding
layout), residual Add + LayerNorm as `SkipLayerNormalization`, and Add + erf-GELU as `BiasGelu`.

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
