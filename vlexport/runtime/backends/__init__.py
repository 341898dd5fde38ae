"""Backends behind one interface (see base.Backend). Each module imports its engine lazily."""

BACKENDS = {
    "onnxruntime": "vlexport.runtime.backends.onnxruntime:OnnxRuntimeBackend",
    "tensorrt": "vlexport.runtime.backends.tensorrt:TensorRTBackend",
    "torch": "vlexport.runtime.backends.torch:TorchBackend",
}


def backend_class(name: str):
    import importlib

    from vlexport.errors import UnknownModelError

    if name not in BACKENDS:
        raise UnknownModelError(f"unknown backend '{name}'; choose one of {sorted(BACKENDS)} or 'auto'")
    module, cls = BACKENDS[name].split(":")
    return getattr(importlib.import_module(module), cls)
