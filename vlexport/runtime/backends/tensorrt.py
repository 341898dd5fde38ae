"""TensorRT backend: runs the artifact's fp16 engine (model.fp16.plan) on the GPU. No torch.

Load once: check the engine against the installed TensorRT and the GPU (manifest first, so a
mismatch gives a clear ArtifactError instead of a deserialization failure), deserialize, create
one execution context and one CUDA stream. Per call: pick the optimization profile that contains
the input shapes, set the input shapes, point every I/O tensor at device memory (buffers are
allocated once and grown only when a larger shape comes), execute_async_v3, synchronize.

Inputs: numpy arrays (copied to the device), or CUDA tensors from any library that speaks DLPack
or `__cuda_array_interface__` (torch.cuda, CuPy, ...): used in place, with no copy, when
contiguous and of the engine's dtype. Outputs: numpy, or with output_device="cuda" one
`vlexport.tensorrt.cuda.DeviceArray` per output (`__cuda_array_interface__`, zero-copy into
torch.as_tensor(..., device="cuda") or cupy.asarray), freshly allocated per call.

Thread safety: one lock per backend instance serializes calls on its context and buffers; open
several backends (one per thread) for concurrent execution on the GPU.
"""

from __future__ import annotations

import threading

import numpy as np

from vlexport.errors import ArtifactError, ConfigError, InputError
from vlexport.runtime.backends.base import Backend


def _shape_of(x) -> tuple:
    shape = getattr(x, "shape", None)
    if shape is None and hasattr(x, "__cuda_array_interface__"):
        shape = x.__cuda_array_interface__["shape"]
    if shape is None:
        shape = np.shape(x)
    return tuple(int(d) for d in shape)


class TensorRTBackend(Backend):
    name = "tensorrt"
    device = "cuda"

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        from vlexport.tensorrt.engine import tensorrt_status

        return tensorrt_status()

    def __init__(self, artifact, graph: str = "model", precision: str = "fp16", output_device: str = "cpu",
                 allow_engine_host_code: bool = False, **options):
        super().__init__(artifact, graph, precision)
        if output_device not in ("cpu", "cuda"):
            raise ConfigError(f"output_device must be 'cpu' or 'cuda', got {output_device!r}")
        from vlexport.tensorrt import cuda
        from vlexport.tensorrt.engine import import_tensorrt, require_compatible
        from vlexport.tensorrt.profiles import profiles_from_json

        self._cuda = cuda
        self.output_device = output_device
        self._closed = True
        self._lock = threading.Lock()
        self._buffers = {}
        trt = import_tensorrt("the TensorRT backend")
        entry = artifact.engine_entry(graph, precision)
        require_compatible(entry, where=f"'{artifact.path}'")
        host_code = bool(entry.get("options", {}).get("version_compatible"))
        if host_code and not allow_engine_host_code:
            raise ArtifactError(f"the TensorRT engine of '{artifact.path}' is version-compatible: it embeds "
                                f"TensorRT's lean runtime (host code), which vlexport runs only when the caller opts "
                                f"in: vlexport.load(..., allow_engine_host_code=True) for an artifact you trust")
        path = artifact.engine_file(graph, precision)  # checks the recorded SHA-256
        self._rt = cuda.runtime()

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        if host_code:  # the caller opted in (checked above); never because the manifest says so
            self._runtime.engine_host_code_allowed = True
        self._engine = self._runtime.deserialize_cuda_engine(path.read_bytes())
        if self._engine is None:
            raise ArtifactError(f"TensorRT {trt.__version__} could not deserialize '{path}'; rebuild the engine "
                                f"on this machine (vlexport build ... --fp16)")
        self._context = self._engine.create_execution_context()
        if self._context is None:
            raise ArtifactError(f"TensorRT could not create an execution context for '{path}' (out of GPU memory?)")
        self._stream = self._rt.stream_create()
        # CUDA events around execute_async_v3: device time of the engine alone (host<->device copies
        # excluded), reported by `vlexport bench` beside wall time (copies included).
        self._events = (self._rt.event_create(), self._rt.event_create())
        self.last_device_ms: float | None = None
        self._closed = False

        names = [self._engine.get_tensor_name(i) for i in range(self._engine.num_io_tensors)]
        is_input = {n: self._engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self._inputs = [n for n in names if is_input[n]]
        self._outputs = [n for n in names if not is_input[n]]
        self._dtypes = {n: np.dtype(trt.nptype(self._engine.get_tensor_dtype(n))) for n in names}
        self._buffers = {n: cuda.Buffer() for n in names}
        try:
            self._profiles = [
                {n: tuple(tuple(int(v) for v in s) for s in self._engine.get_tensor_profile_shape(n, k))
                 for n in self._inputs}
                for k in range(self._engine.num_optimization_profiles)]
        except Exception:  # fall back to what the build recorded
            self._profiles = profiles_from_json(entry["profiles"])
        self._dims = {i.name: tuple(i.dims) for i in artifact.inputs(graph)}
        self._active_profile = 0
        self._gpu = entry.get("gpu")
        self._trt_version = trt.__version__

    # ------------------------------------------------------------------ run

    def _stage_input(self, name, x, keep):
        """(pointer, shape) for one input, copying to our buffer only when needed."""
        cuda, want = self._cuda, self._dtypes[name]
        if cuda.is_device_tensor(x):
            t = cuda.device_tensor(x, self._stream)
            keep.append(t.keepalive)
            if t.contiguous and t.dtype == want and t.nbytes > 0:
                return t.ptr, t.shape
            # strided, another dtype, or empty: compact/convert through the host (correct, not fast)
            x = cuda.to_host_strided(x, self._stream) if not t.contiguous else cuda.copy_device_to_host(t, self._stream)
        a = np.ascontiguousarray(cuda.to_host(x), dtype=want)
        keep.append(a)
        ptr = self._buffers[name].ensure(a.nbytes)
        if a.nbytes:
            self._rt.memcpy_async(ptr, a.ctypes.data, a.nbytes, cuda.H2D, self._stream)
        return ptr, a.shape

    def run(self, feeds: dict, keep_on_device: bool = False) -> dict:
        from vlexport.tensorrt.profiles import select_profile

        unknown = [k for k, v in feeds.items() if v is not None and k not in self._dtypes]
        if unknown:
            raise InputError(f"unexpected input(s) {unknown}; this engine takes {self._inputs}")
        missing = [n for n in self._inputs if feeds.get(n) is None]
        if missing:
            raise InputError(f"missing input(s) {missing}: the TensorRT engine needs every one of {self._inputs}")
        shapes = {n: _shape_of(feeds[n]) for n in self._inputs}
        index = select_profile(self._profiles, shapes, self._dims)

        with self._lock:
            if self._closed:
                raise RuntimeError("this TensorRT backend was closed")
            ctx, rt, cuda = self._context, self._rt, self._cuda
            if index != self._active_profile:
                if not ctx.set_optimization_profile_async(index, self._stream):
                    raise RuntimeError(f"TensorRT refused to switch to optimization profile {index}")
                self._active_profile = index
            keep: list = []
            for name in self._inputs:
                ptr, shape = self._stage_input(name, feeds[name], keep)
                if not ctx.set_input_shape(name, tuple(int(d) for d in shape)):
                    raise InputError(f"TensorRT rejected shape {tuple(shape)} for input '{name}' "
                                     f"(profile {index}: {self._profiles[index].get(name)})")
                ctx.set_tensor_address(name, ptr)
            results, pending = {}, []
            for name in self._outputs:
                shape = tuple(int(d) for d in ctx.get_tensor_shape(name))
                if any(d < 0 for d in shape):
                    raise RuntimeError(f"TensorRT could not infer the shape of output '{name}' ({shape})")
                dtype = self._dtypes[name]
                if self.output_device == "cuda" or keep_on_device:
                    arr = cuda.DeviceArray(shape, dtype)
                    ctx.set_tensor_address(name, arr.ptr)
                    results[name] = arr
                else:
                    host = np.empty(shape, dtype)
                    ptr = self._buffers[name].ensure(host.nbytes)
                    ctx.set_tensor_address(name, ptr)
                    results[name] = host
                    pending.append((host, ptr))
            rt.event_record(self._events[0], self._stream)
            if not ctx.execute_async_v3(self._stream):
                rt.stream_synchronize(self._stream)
                raise RuntimeError("TensorRT execution failed (execute_async_v3 returned False); see the TensorRT log")
            rt.event_record(self._events[1], self._stream)
            for host, ptr in pending:
                if host.nbytes:
                    rt.memcpy_async(host.ctypes.data, ptr, host.nbytes, cuda.D2H, self._stream)
            rt.stream_synchronize(self._stream)
            self.last_device_ms = rt.event_elapsed_ms(*self._events)
            del keep
        if self.output_device == "cpu" and not keep_on_device:
            results = {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in results.items()}
        return results

    # ------------------------------------------------------------------ lifetime

    def close(self):
        """Free the device buffers, the stream and the engine. Idempotent."""
        lock = getattr(self, "_lock", None)
        if lock is None or getattr(self, "_closed", True):
            return
        with lock:
            if self._closed:
                return
            self._closed = True
            try:
                self._rt.stream_synchronize(self._stream)
            except Exception:
                pass
            for b in self._buffers.values():
                try:
                    b.free()
                except Exception:
                    pass
            try:
                for event in getattr(self, "_events", ()):
                    self._rt.event_destroy(event)
                self._rt.stream_destroy(self._stream)
            except Exception:
                pass
            self._context = None
            self._engine = None

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass

    def describe(self) -> str:
        gpu = f", {self._gpu}" if getattr(self, "_gpu", None) else ""
        return f"tensorrt ({self.precision}, cuda{gpu}, TensorRT {getattr(self, '_trt_version', '?')})"

    @property
    def profiles(self):
        return list(self._profiles)
