"""`vlexport.load(path)`: an artifact as an HF-style model (`outputs.logits`) with its processor.

Inputs: numpy arrays, Python lists, or anything with DLPack (torch/CuPy tensors) - never a torch
import here. One backend per graph; `backend="auto"` picks TensorRT for a graph when the artifact
has an engine for it that fits the installed TensorRT and GPU, else ONNX Runtime, and records why.
"""

from __future__ import annotations

import logging

from vlexport import families
from vlexport.artifact import Artifact
from vlexport.errors import ArtifactError, ConfigError, VlexportError
from vlexport.runtime.backends import backend_class
from vlexport.runtime.pipelines import pipeline_class

log = logging.getLogger("vlexport")
PRECISIONS = ("fp32", "fp16", "int8", "int4")


def _auto(artifact: Artifact, graph: str, precision: str) -> tuple[str, str]:
    """backend="auto" for one graph: TensorRT when its engine exists and can run here, else ORT."""
    if precision not in artifact.engine_precisions(graph):
        return "onnxruntime", f"the artifact has no {precision} TensorRT engine; using ONNX Runtime"
    ok, why = backend_class("tensorrt").availability()
    if not ok:
        return "onnxruntime", f"TensorRT not usable here ({why}); using ONNX Runtime"
    from vlexport.tensorrt.engine import engine_compatibility

    ok, why = engine_compatibility(artifact.engine_entry(graph, precision))
    if not ok:
        return "onnxruntime", f"the TensorRT engine does not fit this machine ({why}); using ONNX Runtime"
    return "tensorrt", f"a {precision} TensorRT engine is in the artifact and fits this TensorRT and GPU"


def load(path, backend: str = "auto", precision: str = "fp32", verify: bool = True,
         allow_engine_host_code: bool = False, graphs=None, **options):
    """Load a built artifact folder as its pipeline (see vlexport.runtime.pipelines).

    backend: "auto" | "onnxruntime" | "tensorrt" | "torch"; precision: "fp32" | "fp16" | "int8" | "int4"
    ("int4": the weight-only int4 graphs where the artifact has them, e.g. a Llama decoder; fp32 for the rest).
    allow_engine_host_code: run version-compatible TensorRT engines, which embed host code; only for
    artifacts you trust (off by default; a manifest can never turn it on).
    graphs: load only these graphs (a server endpoint that runs one graph); the result is then the
    generic Pipeline (prepare + run_graph), not the family's.
    options: backend options (intra_op_num_threads, allow_spinning, providers, output_device, reference).
    """
    artifact = Artifact(path, verify=verify)
    precision = {"float32": "fp32", "float16": "fp16"}.get(precision, precision)
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    family = families.get(artifact.family)
    cls = pipeline_class(artifact.pipeline, family)
    names = artifact.graph_names
    if graphs is not None:
        unknown = sorted(set(graphs) - set(names))
        if unknown:
            raise ConfigError(f"graphs {unknown} are not in the artifact; it has {names}")
        if set(graphs) != set(names):
            from vlexport.runtime.pipelines import Pipeline

            cls, names = Pipeline, [g for g in names if g in graphs]
    backends, reasons = {}, []
    try:
        for graph in names:
            prec, have = precision, artifact.precisions(graph)
            if precision == "int4" and "int4" not in have:
                refused = ((artifact.manifest.get("graphs", {}).get(graph) or {}).get("validation", {})
                           .get("int4") or {}).get("refused")
                if refused:  # the build tried and the gate refused it: never a silent fp32 in its place
                    raise ArtifactError(f"graph '{graph}' of '{artifact.path}' has no int4 graph: {refused}; "
                                        f"load it with precision='fp32' or 'fp16'")
                prec = "fp32"  # int4 is weight-only for the big MatMuls of written graphs; the rest stays fp32
            elif precision not in have and have == ["int4"]:
                prec = "int4"  # a graph too large for fp32 here (a streamed 7B decoder) exists only in int4
            name, why = (_auto(artifact, graph, prec) if backend == "auto" else (backend, "asked for"))
            impl = backend_class(name)
            kw = dict(options)
            if name == "tensorrt":
                kw["allow_engine_host_code"] = allow_engine_host_code
            try:
                backends[graph] = impl(artifact, graph, prec, **kw)
            except VlexportError as exc:
                if backend != "auto" or name != "tensorrt":
                    raise
                why = f"the TensorRT engine could not be loaded ({exc}); using ONNX Runtime"
                backends[graph] = backend_class("onnxruntime")(artifact, graph, prec, **options)
            if prec != precision:
                why += f" ({prec}: the artifact has no {precision} graph for it)"
            reasons.append(why if len(names) == 1 else f"{graph}: {why}")
    except BaseException:
        for b in backends.values():
            b.close()
        raise
    why = "; ".join(reasons)
    if backend == "auto":
        log.info("vlexport.load: %s", why)
    return cls(artifact, backends, family, why)
