"""Graph simplification: onnxsim first, onnxslim as the fallback, the raw graph if both fail.

Every dynamic axis must stay symbolic: a simplifier that pins a dim to a number is rejected.
The caller times the candidates on ONNX Runtime and keeps the faster one (onnxsim can turn
MatMul+Add into Reshape/Gemm/Reshape on dynamo graphs and defeat ORT's fusions).
"""

from __future__ import annotations

from pathlib import Path

from vlexport.export.onnx_export import EXTERNAL_DATA_THRESHOLD


def _io_dims(model) -> dict:
    return {v.name: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]
            for v in list(model.graph.input) + list(model.graph.output)}


def _save(model, path: Path):
    import onnx

    big = model.ByteSize() > EXTERNAL_DATA_THRESHOLD if not _has_external(model) else True
    if big:
        onnx.save(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                  location=path.name + ".data", size_threshold=1024)
    else:
        onnx.save(model, str(path))


def _has_external(model) -> bool:
    import onnx

    return any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)


def simplify(src: Path, dst: Path) -> tuple[str, str]:
    """Write a simplified copy of `src` to `dst`. Returns (tool used, one-line message).

    tool is "onnxsim", "onnxslim" or "none" (then nothing is written and the message says why).
    """
    import onnx

    src, dst = Path(src), Path(dst)
    original = onnx.load(str(src))  # with weights: simplifiers fold constants
    want = _io_dims(original)
    reasons = []
    for tool in ("onnxsim", "onnxslim"):
        try:
            if tool == "onnxsim":
                import onnxsim

                model, ok = onnxsim.simplify(original, check_n=0)  # our validation grid checks numerics
                if not ok:
                    raise RuntimeError("onnxsim reported the simplified model as unchecked")
            else:
                import onnxslim

                model = onnxslim.slim(original)
        except Exception as exc:  # ImportError or a failure inside the tool: fall back
            reasons.append(f"{tool}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            continue
        if _io_dims(model) != want:
            reasons.append(f"{tool}: changed input/output shapes (a dynamic axis was pinned)")
            continue
        del original  # halve the peak before writing
        _save(model, dst)
        return tool, f"simplified with {tool}"
    return "none", "simplification skipped (" + "; ".join(reasons) + ")"
