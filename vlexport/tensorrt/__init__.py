"""TensorRT: fp16 engines from the mixed-precision ONNX graph, and what the runtime needs to run them.

profiles.py   optimization profiles from the artifact's axis ranges (pure Python)
engine.py     build_engine / maybe_build_engine / engine_compatibility (TensorRT imported lazily)
cuda.py       device queries, memory and streams via cuda-python or polygraphy.cuda (lazy)
ort_provider  ONNX Runtime TensorRT execution provider options from a manifest

Importing this package imports neither TensorRT nor any CUDA library.
"""

from vlexport.tensorrt.engine import (
    ENGINE_FILE,
    EngineBuildError,
    build_engine,
    check_compatibility,
    engine_compatibility,
    maybe_build_engine,
    require_compatible,
    tensorrt_status,
)
from vlexport.tensorrt.ort_provider import tensorrt_provider_options
from vlexport.tensorrt.profiles import build_profiles, profiles_from_manifest, select_profile

__all__ = [
    "ENGINE_FILE", "EngineBuildError", "build_engine", "check_compatibility", "engine_compatibility",
    "maybe_build_engine", "require_compatible", "tensorrt_status", "tensorrt_provider_options",
    "build_profiles", "profiles_from_manifest", "select_profile",
]
