"""Mixed-precision (fp16) graph for TensorRT's strongly typed networks and for GPU ORT.

TensorRT 11 takes precision from the graph's tensor types, so this graph is the precision
contract: MatMul/Gemm/elementwise in fp16; LayerNormalization, Softmax and reductions in fp32
(LayerNorm eps 1e-12 underflows in fp16, Softmax/ReduceSum overflow); fp32 graph inputs and
outputs (keep_io_types). Constants that fp16 cannot hold (such as finfo(float32).min in the
region-to-phrase head's output mask) keep their node, and everything downstream of it, in fp32.
Converter: onnxruntime.transformers.float16 (onnxconverter-common produced a graph that failed
to load in REFERENCE.md's trials).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlexport.export.simplify import _save

KEEP_FP32_OPS = ["LayerNormalization", "Softmax", "ReduceSum", "ReduceMean", "ReduceMax", "Pow", "Sqrt",
                 "Range", "CumSum"]
FP16_MAX = 65504.0


def _nodes_needing_fp32(model) -> list[str]:
    """Nodes fed by a float constant outside fp16's range, and all their descendants."""
    import onnx
    from onnx import numpy_helper

    huge = set()
    for init in model.graph.initializer:
        if init.data_type == onnx.TensorProto.FLOAT and init.data_location != onnx.TensorProto.EXTERNAL:
            arr = numpy_helper.to_array(init)
            if arr.size and np.abs(arr).max() > FP16_MAX:
                huge.add(init.name)
    for node in model.graph.node:
        if node.op_type == "Constant":
            for attr in node.attribute:
                if attr.name == "value" and attr.t.data_type == onnx.TensorProto.FLOAT:
                    arr = numpy_helper.to_array(attr.t)
                    if arr.size and np.abs(arr).max() > FP16_MAX:
                        huge.update(node.output)
    blocked, frontier = [], set(huge)
    for node in model.graph.node:  # graph nodes are topologically sorted
        if frontier.intersection(node.input):
            blocked.append(node.name)
            frontier.update(node.output)
    return blocked


def convert_fp16(src: Path, dst: Path) -> dict:
    """Write the mixed-precision graph. Returns facts for the manifest."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):  # the converter blocks by node name
        if not node.name:
            node.name = f"node_{i}"
    blocked = _nodes_needing_fp32(model)
    fp16 = convert_float_to_float16(model, keep_io_types=True, op_block_list=KEEP_FP32_OPS,
                                    node_block_list=blocked, disable_shape_infer=model.ByteSize() > 2**31 - 1)
    _save(fp16, Path(dst))
    n16 = sum(1 for t in fp16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return {"converter": "onnxruntime.transformers.float16", "fp32_ops": KEEP_FP32_OPS,
            "fp32_nodes_for_range": blocked, "fp16_initializers": n16, "io_types": "float32"}
