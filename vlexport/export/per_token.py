"""Per-token int8 activations for ONNX Runtime's dynamic quantizer, as a rewrite of the fp32 graph.

ORT's dynamic int8 (DynamicQuantizeLinear + MatMulInteger) gives each MatMul's input one uint8 range per
call: a trained transformer's outlier channels and outlier tokens ([CLS], separators) stretch that range,
and every other value loses its resolution (a trained MiniLM text side: worst-row cosine 0.941 vs fp32).
The usual W8A8 remedy is per-token activation scales plus SmoothQuant's channel smoothing; ORT has neither
for dynamic quantization, so this module writes them as plain ONNX ops around each quantizable MatMul:

    x (.., K)  --Mul(1/s)-->  xs  --ReduceMax|.|-->  r (.., 1)      s: per input channel, from calibration
    xs / r  --MatMul(diag(s) W)-->  y'  --Mul(r)-->  y               r: per token, at run time

Every row of xs / r then has max |.| = 1, so the one range DynamicQuantizeLinear picks fits every token;
smoothing (alpha 0.5: s_j = max|x_j|^0.5 / max|W_j|^0.5, one s per input shared by its MatMuls) moves the
channel outliers into the per-channel-quantized weights. The rewritten fp32 graph computes the same
function (to rounding); it is the input of `quantize_int8`, which then quantizes the normalized MatMuls.
Measured with a trained MiniLM text side (AMD EPYC, 85 corpus questions; benchmarks/run_int8_tradeoff.py):
worst-row cosine 0.941 -> 0.992, top-1 0.976 -> 1.000, at 1.42x (B=1) and 1.77x (B=32) fp32's speed,
where plain int8 gives 1.92x and 2.24x and the accurate block-wise kernel about 1.0x.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

ALPHA = 0.5  # SmoothQuant's migration strength (0: no smoothing)


def per_token_graph(src: Path, dst: Path, feeds_list, alpha: float = ALPHA, threads: int | None = None,
                    exclude=(), tokens: bool = True) -> dict:
    """Write `src` with per-token (and smoothed) inputs to every constant-weight MatMul to `dst`; the channel
    ranges come from running `src` on `feeds_list`. Returns {"matmuls", "inputs", "alpha"}. Gemm nodes are
    left as they are (their bias would be scaled with the output), and so are MatMuls sharing a weight and
    those named in `exclude`. tokens=False: the smoothing alone (SmoothQuant before plain dynamic int8; measured
    in benchmarks/run_int8_tradeoff.py, not enough on its own)."""
    import onnx
    from onnx import helper, numpy_helper

    from vlexport.export.int8_search import candidates, capture_inputs

    model = onnx.load(str(src), load_external_data=True)
    nodes = candidates(model, op_types=("MatMul",), exclude=exclude)
    uses = {}
    for nd in nodes:
        uses[nd["weight"]] = uses.get(nd["weight"], 0) + 1
    nodes = [nd for nd in nodes if uses[nd["weight"]] == 1]  # a shared (tied) weight cannot take two scalings
    # capture_inputs gets its own copy: it saves its probe with external data, which moves the weights of the
    # model it is given into that (temporary) file
    acts = capture_inputs(onnx.load(str(src), load_external_data=True), nodes, feeds_list, threads)
    inits = {t.name: t for t in model.graph.initializer}
    by_name = {n.name: n for n in model.graph.node}
    groups: dict[str, list] = {}
    for nd in nodes:
        groups.setdefault(nd["input"], []).append(nd)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=17)
    after: dict[str, list] = {}  # tensor -> the new nodes that go right after its producer
    for x, nds in groups.items():
        weights = {nd["weight"]: numpy_helper.to_array(inits[nd["weight"]]).astype(np.float32) for nd in nds}
        xmax = np.max([np.abs(a.reshape(-1, a.shape[-1])).max(0) for a in acts[nds[0]["name"]]], axis=0)
        wmax = np.max([np.abs(weights[nd["weight"]]).max(1) for nd in nds], axis=0)  # per input channel (K,)
        s = (np.maximum(xmax, 1e-5) ** alpha / np.maximum(wmax, 1e-5) ** (1 - alpha)).astype(np.float32)
        for nd in nds:
            scaled = weights[nd["weight"]] * s[:, None]  # diag(s) W: the rows of the input channels
            inits[nd["weight"]].CopyFrom(numpy_helper.from_array(scaled, nd["weight"]))
        model.graph.initializer.append(numpy_helper.from_array(1.0 / s, f"{x}.per_token.inv_s"))
        rmax = (helper.make_node("ReduceMax", [f"{x}.per_token.abs", "per_token.last_axis"], [f"{x}.per_token.r0"],
                                 name=f"{x}.per_token.rmax", keepdims=1) if opset >= 18 else
                helper.make_node("ReduceMax", [f"{x}.per_token.abs"], [f"{x}.per_token.r0"],
                                 name=f"{x}.per_token.rmax", keepdims=1, axes=[-1]))
        smooth = helper.make_node("Mul", [x, f"{x}.per_token.inv_s"], [f"{x}.per_token.s"],
                                  name=f"{x}.per_token.smooth")
        if not tokens:
            after[x] = [smooth]
            for nd in nds:
                by_name[nd["name"]].input[0] = f"{x}.per_token.s"
            continue
        after[x] = [
            smooth,
            helper.make_node("Abs", [f"{x}.per_token.s"], [f"{x}.per_token.abs"], name=f"{x}.per_token.abs_op"),
            rmax,
            # an all-zero row (padding) keeps r > 0: 0 / r stays 0
            helper.make_node("Max", [f"{x}.per_token.r0", "per_token.tiny"], [f"{x}.per_token.r"],
                             name=f"{x}.per_token.clip"),
            helper.make_node("Div", [f"{x}.per_token.s", f"{x}.per_token.r"], [f"{x}.per_token.n"],
                             name=f"{x}.per_token.norm")]
        for nd in nds:
            node = by_name[nd["name"]]
            out = node.output[0]
            node.input[0], node.output[0] = f"{x}.per_token.n", f"{out}.per_token.unscaled"
            after[f"{out}.per_token.unscaled"] = [helper.make_node(
                "Mul", [f"{out}.per_token.unscaled", f"{x}.per_token.r"], [out],
                name=f"{nd['name']}.per_token.rescale")]
    model.graph.initializer.extend([numpy_helper.from_array(np.array([-1], np.int64), "per_token.last_axis"),
                                    numpy_helper.from_array(np.array(1e-30, np.float32), "per_token.tiny")])
    graph_inputs = {i.name for i in model.graph.input}
    order = [n for x in after if x in graph_inputs for n in after[x]]
    for node in model.graph.node:  # each new node right after the producer of its input: topological order kept
        order.append(node)
        for o in node.output:
            order += after.get(o, [])
    del model.graph.node[:]
    model.graph.node.extend(order)
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    large = model.ByteSize() > 1_900_000_000
    onnx.save(model, str(dst), save_as_external_data=large, all_tensors_to_one_file=True,
              location=dst.name + ".data")
    return {"matmuls": len(nodes), "inputs": len(groups), "alpha": alpha}
