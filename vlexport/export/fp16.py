"""Mixed-precision (fp16) graph for TensorRT's strongly typed networks and for GPU ORT.

TensorRT 11 takes precision from the graph's tensor types, so this graph is the precision
contract: MatMul/Gemm/elementwise in fp16; LayerNormalization, Softmax and reductions in fp32
(LayerNorm eps 1e-12 underflows in fp16, Softmax/ReduceSum overflow); fp32 graph inputs and
outputs (keep_io_types), except those a description names in `fp16_io` (a KV cache). Constants that fp16 cannot hold (such as finfo(float32).min in the
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


def convert_fp16(src: Path, dst: Path, keep_fp32_ops=(), fp16_io=()) -> dict:
    """Write the mixed-precision graph (`keep_fp32_ops`: the graph description's extra fp32 op
    types, on top of KEEP_FP32_OPS; `fp16_io`: graph inputs/outputs that become float16, e.g. a KV
    cache the runtime then keeps in fp16 buffers; every other input/output stays float32).
    Returns facts for the manifest."""
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    for i, node in enumerate(model.graph.node):  # the converter blocks by node name
        if not node.name:
            node.name = f"node_{i}"
    blocked = _nodes_needing_fp32(model)
    ops = list(dict.fromkeys([*KEEP_FP32_OPS, *keep_fp32_ops]))
    io = [t.name for t in (*model.graph.input, *model.graph.output)]
    keep_io = [n for n in io if n not in set(fp16_io)] if fp16_io else True
    fp16 = convert_float_to_float16(model, keep_io_types=keep_io, op_block_list=ops,
                                    node_block_list=blocked, disable_shape_infer=model.ByteSize() > 2**31 - 1)
    removed = _drop_fp16_round_trips(fp16, set(ops), set(blocked))
    _toposort(fp16.graph)  # the converter appends its output casts last; checkers and parsers want order
    del fp16.graph.value_info[:]  # stale fp32 annotations conflict with the new types; the checker re-infers
    _save(fp16, Path(dst))
    onnx.checker.check_model(str(dst), full_check=True)
    n16 = sum(1 for t in fp16.graph.initializer if t.data_type == onnx.TensorProto.FLOAT16)
    return {"converter": "onnxruntime.transformers.float16", "fp32_ops": ops,
            "fp32_nodes_for_range": blocked, "fp16_initializers": n16,
            "io_types": {"float16": sorted(fp16_io)} if fp16_io else "float32",
            "fp16_round_trips_removed": removed}


def _drop_fp16_round_trips(model, block_ops: set, block_nodes: set) -> int:
    """The converter wraps every blocked (fp32) node in casts, so fp32 -> fp32 edges between blocked
    nodes, and from a blocked node to an fp32 graph output, pass through fp16: x -> Cast(fp16) ->
    Cast(fp32). That rounds, and turns finfo(float32).min (the region-to-phrase mask) into -inf.
    Bypass each such Cast(fp32) so its consumers read the fp32 value itself; drop casts left unused.
    Returns the number of Cast(fp32) nodes bypassed."""
    import onnx

    g = model.graph
    producer = {o: n for n in g.node for o in n.output}
    graph_outputs = {o.name for o in g.output}

    def cast_to(node):
        return next((a.i for a in node.attribute if a.name == "to"), None) if node.op_type == "Cast" else None

    def fp32_source(name):  # the fp32 value behind an fp16 cast of a blocked node's output
        c1 = producer.get(name)
        if c1 is None or cast_to(c1) != onnx.TensorProto.FLOAT16:
            return None
        src = producer.get(c1.input[0])
        return c1.input[0] if src is not None and (src.op_type in block_ops or src.name in block_nodes) else None

    rename, drop = {}, set()
    for c2 in g.node:
        if cast_to(c2) != onnx.TensorProto.FLOAT:
            continue
        x = fp32_source(c2.input[0])
        if x is None:
            continue
        if c2.output[0] in graph_outputs:
            if x in graph_outputs or any(v == x for v in rename.values()):
                continue  # one value feeding two outputs: keep the cast
            rename[x] = c2.output[0]  # the producer writes the graph output directly
        else:
            rename[c2.output[0]] = x
        drop.add(id(c2))
    if not drop:
        return 0

    def resolve(v):
        while v in rename:
            v = rename[v]
        return v

    for n in g.node:
        n.input[:] = [resolve(v) for v in n.input]
        n.output[:] = [resolve(v) for v in n.output]
    kept = [n for n in g.node if id(n) not in drop]
    used = {v for n in kept for v in n.input} | graph_outputs
    kept = [n for n in kept if not (n.op_type == "Cast" and all(o not in used for o in n.output))]
    gone = set(rename) | {o for n in g.node for o in n.output}
    del g.node[:]
    g.node.extend(kept)
    gone -= {o for n in kept for o in n.output}
    infos = [vi for vi in g.value_info if vi.name not in gone and vi.name not in graph_outputs]
    del g.value_info[:]
    g.value_info.extend(infos)
    return len(drop)


def _toposort(g):
    """Reorder g.node so every node comes after the producers of its inputs (Kahn's algorithm)."""
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    pending, ordered = list(g.node), []
    while pending:
        rest = []
        for n in pending:
            if all(v in ready for v in n.input):
                ordered.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ValueError(f"fp16 graph has a cycle or a dangling input at node '{rest[0].name}'")
        pending = rest
    del g.node[:]
    g.node.extend(ordered)
