"""vlexport: vision-language transformers to ONNX, fp16 and TensorRT, with a thin HF-style runtime.

`import vlexport` pulls in nothing heavy: torch, onnx, onnxruntime, TensorRT and transformers are
imported inside the functions that need them (see `vlexport._deps.require`).
"""

__version__ = "0.1.0"

# Artifacts record the layout version they were written with; the runtime refuses other majors.
ARTIFACT_FORMAT_VERSION = 2


def load(path, backend="auto", precision="fp32", **kwargs):
    """Load a built artifact folder (see `vlexport build`) as an HF-style model with `.processor`.

    backend: "auto" | "onnxruntime" | "tensorrt" | "torch";  precision: "fp32" | "fp16" | "int8".
    See `vlexport.runtime.load.load` for the options.
    """
    from vlexport.runtime.load import load as _load

    return _load(path, backend=backend, precision=precision, **kwargs)


__all__ = ["__version__", "load", "ARTIFACT_FORMAT_VERSION"]
