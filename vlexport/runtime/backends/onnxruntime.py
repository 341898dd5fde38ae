"""ONNX Runtime backend: one InferenceSession per artifact graph, reused for every call.

Providers by what is installed: TensorRT EP (fp16 graph; engine cache in ~/.cache/vlexport, never
inside the artifact) > CUDA > CPU. On CUDA, inputs and outputs go through I/O binding; device
tensors (`__cuda_array_interface__` or DLPack: torch, CuPy) are bound by pointer on their own
device, after their producer's stream is synchronized; non-contiguous ones are copied to the host
first (ORT binds dense buffers only). OrtValues from another session pass straight through, so a
pipeline's graphs can hand outputs to each other without a numpy round trip (`keep_on_device`).
`InferenceSession.run` is thread-safe; each call makes its own I/O binding.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from vlexport._deps import require
from vlexport.errors import ArtifactError, InputError
from vlexport.runtime.backends.base import Backend

ORT_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
             "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


# ORT's own graph optimizations that make a CPU session slower (measured; make_session disables them):
# SkipLayerNormFusion's kernel is 2-8x slower than the Add + LayerNormalization it replaces on ORT 1.32
# (AMD EPYC with AVX-512, 2 threads: 1792x384 1.68 vs 0.21 ms, 1792x768 3.50 vs 0.62 ms, 56x768 0.110 vs
# 0.027 ms); trained-MiniLM VisualBERT at B=32: 144.5 vs 160.8 ms per call, in one process)
SLOW_CPU_FUSIONS = ("SkipLayerNormFusion",)


def make_session(path, threads: int | None = None, providers=None, optimization: str = "all",
                 allow_spinning: bool | None = None, optimized_model: Path | None = None):
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
    if optimized_model is not None:  # the graph ORT runs after its optimizations, written for inspection
        so.optimized_model_filepath = str(optimized_model)
    if allow_spinning is not None:
        so.add_session_config_entry("session.intra_op.allow_spinning", "1" if allow_spinning else "0")
    providers = providers or ["CPUExecutionProvider"]
    cpu_only = all((p[0] if isinstance(p, tuple) else p) == "CPUExecutionProvider" for p in providers)
    try:  # ORT's fusions that measured slower on CPU are left out there (a GPU's kernels are others)
        return ort.InferenceSession(str(path), so, providers=providers,
                                    disabled_optimizers=list(SLOW_CPU_FUSIONS) if cpu_only else None)
    except Exception as exc:  # onnxruntime raises its own exception types for bad files
        raise ArtifactError(f"ONNX Runtime cannot load '{path}': {str(exc).splitlines()[0][:300]} "
                            f"(corrupted or incomplete file? rebuild the artifact)") from None


def choose_providers(precision: str, artifact=None, graph: str = "model") -> list:
    ort = require("onnxruntime", "running ONNX graphs")
    available = ort.get_available_providers()
    chosen = []
    if "TensorrtExecutionProvider" in available and precision == "fp16" and artifact is not None:
        from vlexport.tensorrt.ort_provider import tensorrt_provider_options

        chosen.append(tensorrt_provider_options(artifact, graph=graph))
    if "CUDAExecutionProvider" in available:
        chosen.append("CUDAExecutionProvider")
    chosen.append("CPUExecutionProvider")
    return chosen


def fp16_inputs(session) -> dict:
    """{input name: np.float16} for the float16 inputs of a session (an fp16 graph's KV cache)."""
    return {i.name: np.float16 for i in session.get_inputs() if i.type == "tensor(float16)"}


def cast_feeds(feeds: dict, fp16: dict) -> dict:
    """Feeds with the graph's float16 inputs cast from other float arrays (a no-op for most graphs)."""
    if not fp16:
        return feeds
    return {k: (v.astype(np.float16) if k in fp16 and isinstance(v, np.ndarray) and v.dtype != np.float16 else v)
            for k, v in feeds.items()}


def _is_ortvalue(x) -> bool:
    return type(x).__name__ == "OrtValue" and hasattr(x, "device_name")


class OnnxRuntimeBackend(Backend):
    name = "onnxruntime"

    def __init__(self, artifact, graph: str = "model", precision: str = "fp32", providers=None,
                 intra_op_num_threads: int | None = None, allow_spinning: bool | None = None, fused: bool | None = None,
                 **_):
        super().__init__(artifact, graph, precision)
        providers = providers or choose_providers(precision, artifact, graph)
        if precision == "int8":  # dynamic int8 runs on the CPU kernels
            from vlexport.export.quantize import int8_cpu_mismatch

            why = int8_cpu_mismatch(artifact.onnx_entry(graph, "int8"))
            if why:  # never a silently saturated answer: the build's gate would not hold
                raise ArtifactError(f"graph '{graph}' of '{artifact.path}' cannot run in int8 on this CPU: {why}")
        # the fused fp32 graph (com.microsoft ops) where the build kept one, except for TensorRT's provider
        self.fused = (artifact.has_variant(graph, precision, "ort_fused") and fused is not False
                      and providers[0] != "TensorrtExecutionProvider")
        path = artifact.onnx_file(graph, precision, "ort_fused" if self.fused else None)
        self.session = make_session(path, intra_op_num_threads, providers, allow_spinning=allow_spinning)
        self.providers = self.session.get_providers()
        self.device = "cuda" if self.providers[0] in ("CUDAExecutionProvider", "TensorrtExecutionProvider") else "cpu"
        self.input_types = {i.name: ORT_TYPES.get(i.type, np.float32) for i in self.session.get_inputs()}
        self._fp16_inputs = fp16_inputs(self.session)
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._ort = require("onnxruntime", "running ONNX graphs")

    @classmethod
    def availability(cls):
        try:
            require("onnxruntime", "the onnxruntime backend")
        except ImportError as exc:
            return False, str(exc)
        return True, ""

    def run(self, feeds: dict, keep_on_device: bool = False) -> dict:
        if self.device == "cpu":
            if keep_on_device or any(_is_ortvalue(v) for v in feeds.values()):
                values = {k: v if _is_ortvalue(v) else self._ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(v))
                          for k, v in feeds.items()}
                outs = self.session.run_with_ort_values(self.output_names, values)
                if keep_on_device:
                    return dict(zip(self.output_names, outs))
                return {n: o.numpy() for n, o in zip(self.output_names, outs)}
            outs = self.session.run(self.output_names, cast_feeds(feeds, self._fp16_inputs))
            return dict(zip(self.output_names, outs))
        return self._run_bound(feeds, keep_on_device)

    def _run_bound(self, feeds, keep_on_device=False):
        """GPU path: I/O binding; CUDA tensors bound by pointer (see the module docstring)."""
        from vlexport.tensorrt import cuda

        binding = self.session.io_binding()
        keep = []
        for name, x in feeds.items():
            want = self.input_types[name]
            if _is_ortvalue(x):
                binding.bind_ortvalue_input(name, x)
            elif cuda.is_device_tensor(x):
                t = cuda.device_tensor(x, stream=0)  # syncs the producer's stream (CAI) or orders it (DLPack)
                keep.append(t.keepalive)
                if t.dtype != want:
                    raise InputError(f"input '{name}' is a CUDA tensor of {t.dtype}; expected {np.dtype(want)}")
                if not t.contiguous or t.nbytes == 0:
                    binding.bind_cpu_input(name, np.ascontiguousarray(cuda.to_host_strided(x), dtype=want))
                else:
                    binding.bind_input(name, "cuda", int(t.device_id), want, list(t.shape), t.ptr)
            else:
                binding.bind_cpu_input(name, np.ascontiguousarray(x, dtype=want))
        for name in self.output_names:
            binding.bind_output(name, "cuda")
        self.session.run_with_iobinding(binding)
        del keep
        if keep_on_device:
            return dict(zip(self.output_names, binding.get_outputs()))
        return dict(zip(self.output_names, binding.copy_outputs_to_cpu()))

    def describe(self):
        return (f"onnxruntime {self.precision}{' (fused graph)' if self.fused else ''} on "
                f"{', '.join(self.providers)}")
