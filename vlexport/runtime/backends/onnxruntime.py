"""ONNX Runtime backend: one InferenceSession per artifact graph, reused for every call.

Providers by what is installed: TensorRT EP (fp16 graph, engine cache in the artifact) > CUDA >
CPU. On CUDA, inputs and outputs go through I/O binding; device tensors that expose
`__cuda_array_interface__` (torch, CuPy) are bound by pointer, without a host round trip.
"""

from __future__ import annotations

import numpy as np

from vlexport._deps import require
from vlexport.errors import ArtifactError, InputError
from vlexport.runtime.backends.base import Backend

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32}


def make_session(path, threads: int | None = None, providers=None, optimization: str = "all",
                 allow_spinning: bool | None = None):
    """An InferenceSession with our defaults; a graph that does not load is an ArtifactError.

    allow_spinning=False stops idle intra-op threads from busy-waiting after a call: slightly
    slower alone, much faster when other thread pools (torch, other sessions) share the cores."""
    ort = require("onnxruntime", "running ONNX graphs")
    so = ort.SessionOptions()
    so.graph_optimization_level = {"all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
                                   "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
                                   "none": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}[optimization]
    if threads:
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
    so.log_severity_level = 3
    if allow_spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    try:
        return ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ArtifactError(f"ONNX Runtime cannot load '{path}': {str(exc).splitlines()[0][:300]} "
                            f"(corrupted or incomplete file? rebuild the artifact)") from None


def choose_providers(precision: str, artifact=None) -> list:
    ort = require("onnxruntime", "running ONNX graphs")
    available = ort.get_available_providers()
    chosen = []
    if "TensorrtExecutionProvider" in available and precision == "fp16" and artifact is not None:
        from vlexport.tensorrt.ort_provider import tensorrt_provider_options

        chosen.append(tensorrt_provider_options(artifact, artifact.path / "ort-trt-cache"))
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    chosen.append("CPUExecutionProvider")
    return chosen


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, artifact, precision: str = "fp32", providers=None, intra_op_num_threads: int | None = None,
                 allow_spinning: bool | None = None, **_):
        super().__init__(artifact, precision)
        path = artifact.graph(precision)
        self.session = make_session(path, intra_op_num_threads, providers or choose_providers(precision, artifact),
                                    allow_spinning=allow_spinning)
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        self.input_types = {i.name: ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self.output_names = [o.name for o in self.session.get_outputs()]

    @classmethod
    def availability(cls):
        try:
            require("onnxruntime", "the onnxruntime backend")
        except ImportError as exc:
            return False, str(exc)
        return True, ""

    def run(self, feeds: dict) -> dict:
        if self.device == "cpu":
            outs = self.session.run(self.output_names, feeds)
            return dict(zip(self.output_names, outs))
        return self._run_bound(feeds)

    def _run_bound(self, feeds):
        """GPU path: I/O binding, device pointers for CUDA tensors, outputs copied to host."""
        binding = self.session.io_binding()
        for name, x in feeds.items():
            cai = getattr(x, "__cuda_array_interface__", None)
            if cai is not None:
                want = self.input_types[name]
                if np.dtype(cai["typestr"]) != want:
                    raise InputError(f"input '{name}' is a CUDA tensor of {cai['typestr']}; expected {np.dtype(want)}")
                binding.bind_input(name, "cuda", 0, want, list(cai["shape"]), cai["data"][0])
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(x))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))

    def describe(self):
        return f"onnxruntime {self.precision} on {', '.join(self.providers)}"
