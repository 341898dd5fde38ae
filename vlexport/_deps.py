"""Lazy imports of heavy optional packages, with an error that names the missing piece."""

import importlib

from vlexport.errors import MissingDependencyError

# module name -> (pip requirement, vlexport extra that brings it)
_WHERE = {
    "torch": ("torch", "export"),
    "onnx": ("onnx", "export"),
    "onnxsim": ("onnxsim", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxslim": ("onnxslim", "export"),
    "onnxruntime": ("onnxruntime", "cpu"),
    "tensorrt": ("tensorrt>=10.12", "gpu"),
    "transformers": ("transformers", "test"),
    "matplotlib": ("matplotlib", "bench"),
    "psutil": ("psutil", "bench"),
    "PIL": ("Pillow", "test"),
}


def require(module: str, feature: str):
    """Import `module` or raise MissingDependencyError saying which feature needs it and how to get it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        pip_name, extra = _WHERE.get(module, (module, None))
        hint = f"pip install '{pip_name}'" + (f" (or: pip install 'vlexport[{extra}]')" if extra else "")
        if module == "torch":
            hint = "pip install torch  (CPU-only: pip install torch --index-url https://download.pytorch.org/whl/cpu)"
        raise MissingDependencyError(f"{feature} needs the '{module}' package, which is not installed: {hint}") from exc


def available(module: str) -> bool:
    try:
        importlib.import_module(module)
        return True
    except ImportError:
        return False


def package_versions(names) -> dict:
    """{distribution name: version} of those installed (for manifests and benchmark records)."""
    import importlib.metadata

    out = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out
