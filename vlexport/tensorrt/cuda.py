"""The little CUDA the TensorRT backend needs: device queries, memory, copies, one stream.

Backed by NVIDIA's `cuda-python` (`cuda.bindings.runtime`, or the older `cuda.cudart` name), which
the `gpu` extra installs; when that is missing, by Polygraphy's ctypes loader of libcudart
(`polygraphy.cuda`). No torch. Everything is imported lazily: importing this module is free.

Also here: reading device pointers out of DLPack / `__cuda_array_interface__` objects (torch,
CuPy, ...) without importing their library, and `DeviceArray`, a minimal owned device buffer that
exposes `__cuda_array_interface__` so `torch.as_tensor(a, device="cuda")` or `cupy.asarray(a)`
can take it without a copy.
"""

from __future__ import annotations

import ctypes
import threading

import numpy as np

from vlexport.errors import InputError, MissingDependencyError

# DLPack device types (dlpack.h)
_DL_CPU, _DL_CUDA, _DL_CUDA_HOST, _DL_CUDA_MANAGED = 1, 2, 3, 13
# DLPack dtype codes
_DL_INT, _DL_UINT, _DL_FLOAT, _DL_BOOL = 0, 1, 2, 6

_H2D, _D2H, _D2D = 1, 2, 3  # cudaMemcpyKind values (stable across CUDA versions)
_ATTR_CC_MAJOR, _ATTR_CC_MINOR = 75, 76  # cudaDevAttrComputeCapabilityMajor/Minor


class CudaError(RuntimeError):
    pass


class _CudaPython:
    """cuda-python: every call returns (err, *results)."""

    name = "cuda-python"

    def __init__(self, rt):
        self.rt = rt

    def _check(self, result, what):
        err, *rest = result if isinstance(result, tuple) else (result,)
        if int(err) != 0:
            msg = self.rt.cudaGetErrorString(err)
            msg = msg[1] if isinstance(msg, tuple) else msg
            msg = msg.decode() if isinstance(msg, bytes) else str(msg)
            raise CudaError(f"{what} failed: CUDA error {int(err)} ({msg})")
        return rest[0] if len(rest) == 1 else rest

    def device_count(self) -> int:
        return int(self._check(self.rt.cudaGetDeviceCount(), "cudaGetDeviceCount"))

    def current_device(self) -> int:
        return int(self._check(self.rt.cudaGetDevice(), "cudaGetDevice"))

    def device_name(self, dev: int) -> str:
        prop = self._check(self.rt.cudaGetDeviceProperties(dev), "cudaGetDeviceProperties")
        name = prop.name
        return (name.split(b"\0", 1)[0].decode() if isinstance(name, bytes) else str(name)).strip()

    def compute_capability(self, dev: int) -> tuple[int, int]:
        attr = self.rt.cudaDeviceAttr
        major = self._check(self.rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMajor, dev), "cudaDeviceGetAttribute")
        minor = self._check(self.rt.cudaDeviceGetAttribute(attr.cudaDevAttrComputeCapabilityMinor, dev), "cudaDeviceGetAttribute")
        return int(major), int(minor)

    def malloc(self, nbytes: int) -> int:
        return int(self._check(self.rt.cudaMalloc(nbytes), f"cudaMalloc({nbytes})"))

    def free(self, ptr: int):
        self._check(self.rt.cudaFree(ptr), "cudaFree")

    def memcpy_async(self, dst: int, src: int, nbytes: int, kind: int, stream: int):
        self._check(self.rt.cudaMemcpyAsync(dst, src, nbytes, self.rt.cudaMemcpyKind(kind), stream), "cudaMemcpyAsync")

    def stream_create(self) -> int:
        s = self._check(self.rt.cudaStreamCreateWithFlags(self.rt.cudaStreamNonBlocking), "cudaStreamCreateWithFlags")
        return int(s)

    def stream_synchronize(self, stream: int):
        self._check(self.rt.cudaStreamSynchronize(stream), "cudaStreamSynchronize")

    def stream_destroy(self, stream: int):
        self._check(self.rt.cudaStreamDestroy(stream), "cudaStreamDestroy")

    def event_create(self) -> int:
        return int(self._check(self.rt.cudaEventCreate(), "cudaEventCreate"))

    def event_record(self, event: int, stream: int):
        self._check(self.rt.cudaEventRecord(event, stream), "cudaEventRecord")

    def event_elapsed_ms(self, start: int, end: int) -> float:
        """Device time between two recorded events (waits for `end`)."""
        self._check(self.rt.cudaEventSynchronize(end), "cudaEventSynchronize")
        return float(self._check(self.rt.cudaEventElapsedTime(start, end), "cudaEventElapsedTime"))

    def event_destroy(self, event: int):
        self._check(self.rt.cudaEventDestroy(event), "cudaEventDestroy")


class _Ctypes:
    """libcudart through ctypes, found and loaded by polygraphy.cuda."""

    name = "polygraphy.cuda (libcudart)"

    def __init__(self, lib):
        self.lib = lib

    def _check(self, status, what):
        if status != 0:
            self.lib.cudaGetErrorString.restype = ctypes.c_char_p
            msg = self.lib.cudaGetErrorString(ctypes.c_int(status))
            raise CudaError(f"{what} failed: CUDA error {status} ({(msg or b'').decode()})")

    def device_count(self) -> int:
        n = ctypes.c_int(0)
        self._check(self.lib.cudaGetDeviceCount(ctypes.byref(n)), "cudaGetDeviceCount")
        return n.value

    def current_device(self) -> int:
        n = ctypes.c_int(0)
        self._check(self.lib.cudaGetDevice(ctypes.byref(n)), "cudaGetDevice")
        return n.value

    def device_name(self, dev: int) -> str:
        # cudaDeviceProp starts with `char name[256]` in every CUDA version; the buffer is generous.
        buf = ctypes.create_string_buffer(16384)
        fn = getattr(self.lib, "cudaGetDeviceProperties_v2", None) or self.lib.cudaGetDeviceProperties
        self._check(fn(buf, ctypes.c_int(dev)), "cudaGetDeviceProperties")
        return buf.raw[:256].split(b"\0", 1)[0].decode(errors="replace").strip()

    def compute_capability(self, dev: int) -> tuple[int, int]:
        out = []
        for attr in (_ATTR_CC_MAJOR, _ATTR_CC_MINOR):
            v = ctypes.c_int(0)
            self._check(self.lib.cudaDeviceGetAttribute(ctypes.byref(v), ctypes.c_int(attr), ctypes.c_int(dev)),
                        "cudaDeviceGetAttribute")
            out.append(v.value)
        return out[0], out[1]

    def malloc(self, nbytes: int) -> int:
        ptr = ctypes.c_void_p()
        self._check(self.lib.cudaMalloc(ctypes.byref(ptr), ctypes.c_size_t(nbytes)), f"cudaMalloc({nbytes})")
        return int(ptr.value or 0)

    def free(self, ptr: int):
        self._check(self.lib.cudaFree(ctypes.c_void_p(ptr)), "cudaFree")

    def memcpy_async(self, dst, src, nbytes, kind, stream):
        self._check(self.lib.cudaMemcpyAsync(ctypes.c_void_p(dst), ctypes.c_void_p(src), ctypes.c_size_t(nbytes),
                                             ctypes.c_int(kind), ctypes.c_void_p(stream)), "cudaMemcpyAsync")

    def stream_create(self) -> int:
        s = ctypes.c_void_p()
        self._check(self.lib.cudaStreamCreateWithFlags(ctypes.byref(s), ctypes.c_uint(1)), "cudaStreamCreateWithFlags")
        return int(s.value or 0)

    def stream_synchronize(self, stream):
        self._check(self.lib.cudaStreamSynchronize(ctypes.c_void_p(stream)), "cudaStreamSynchronize")

    def stream_destroy(self, stream):
        self._check(self.lib.cudaStreamDestroy(ctypes.c_void_p(stream)), "cudaStreamDestroy")

    def event_create(self) -> int:
        e = ctypes.c_void_p()
        self._check(self.lib.cudaEventCreate(ctypes.byref(e)), "cudaEventCreate")
        return int(e.value or 0)

    def event_record(self, event, stream):
        self._check(self.lib.cudaEventRecord(ctypes.c_void_p(event), ctypes.c_void_p(stream)), "cudaEventRecord")

    def event_elapsed_ms(self, start, end) -> float:
        self._check(self.lib.cudaEventSynchronize(ctypes.c_void_p(end)), "cudaEventSynchronize")
        ms = ctypes.c_float(0.0)
        self._check(self.lib.cudaEventElapsedTime(ctypes.byref(ms), ctypes.c_void_p(start), ctypes.c_void_p(end)),
                    "cudaEventElapsedTime")
        return float(ms.value)

    def event_destroy(self, event):
        self._check(self.lib.cudaEventDestroy(ctypes.c_void_p(event)), "cudaEventDestroy")


_RUNTIME = None
_RUNTIME_ERROR: str | None = None
_LOCK = threading.Lock()


def runtime():
    """The CUDA runtime adapter, or MissingDependencyError saying what to install."""
    global _RUNTIME, _RUNTIME_ERROR
    with _LOCK:
        if _RUNTIME is not None:
            return _RUNTIME
        if _RUNTIME_ERROR is None:
            tried = []
            try:
                from cuda.bindings import runtime as rt  # cuda-python >= 12.6
                _RUNTIME = _CudaPython(rt)
            except ImportError as exc:
                tried.append(f"cuda.bindings ({exc})")
                try:
                    from cuda import cudart as rt  # older cuda-python
                    _RUNTIME = _CudaPython(rt)
                except ImportError as exc2:
                    tried.append(f"cuda.cudart ({exc2})")
            if _RUNTIME is None:
                try:
                    import polygraphy.cuda as pcuda
                    from polygraphy.logger import G_LOGGER

                    with G_LOGGER.verbosity(G_LOGGER.CRITICAL + 10):  # its 'library not found' warnings
                        _RUNTIME = _Ctypes(pcuda.wrapper().handle)
                except Exception as exc:  # ImportError, or PolygraphyException when libcudart is absent
                    tried.append(f"polygraphy.cuda ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})")
            if _RUNTIME is None:
                _RUNTIME_ERROR = ("the TensorRT backend needs CUDA bindings: pip install 'cuda-python' "
                                  "(or: pip install 'vlexport[gpu]'); tried " + "; ".join(tried))
        if _RUNTIME is None:
            raise MissingDependencyError(_RUNTIME_ERROR)
        return _RUNTIME


def gpu_status() -> tuple[bool, str]:
    """(a CUDA GPU is usable, reason if not). Never raises."""
    try:
        rt = runtime()
    except MissingDependencyError as exc:
        return False, str(exc)
    try:
        n = rt.device_count()
    except Exception as exc:
        return False, f"no CUDA GPU is visible ({exc})"
    if n < 1:
        return False, "no CUDA GPU is visible (cudaGetDeviceCount returned 0)"
    return True, ""


def gpu_info(device: int | None = None) -> dict:
    """{"index", "name", "compute_capability": "8.6"} of the current (or given) CUDA device."""
    rt = runtime()
    dev = rt.current_device() if device is None else int(device)
    major, minor = rt.compute_capability(dev)
    return {"index": dev, "name": rt.device_name(dev), "compute_capability": f"{major}.{minor}"}


# --------------------------------------------------------------------------- device memory

class Buffer:
    """A device allocation that grows on demand and is kept between calls."""

    def __init__(self):
        self.ptr = 0
        self.nbytes = 0

    def ensure(self, nbytes: int) -> int:
        nbytes = max(int(nbytes), 256)  # never hand TensorRT a null pointer, even for empty tensors
        if nbytes > self.nbytes:
            rt = runtime()
            if self.ptr:
                rt.free(self.ptr)
                self.ptr, self.nbytes = 0, 0
            self.ptr = rt.malloc(nbytes)
            self.nbytes = nbytes
        return self.ptr

    def free(self):
        if self.ptr:
            try:
                runtime().free(self.ptr)
            finally:
                self.ptr, self.nbytes = 0, 0


class DeviceArray:
    """An owned, contiguous device array: `__cuda_array_interface__` (v3) for zero-copy hand-off
    (torch.as_tensor(a, device="cuda"), cupy.asarray(a), numba), `.numpy()` to copy it home.
    The memory is freed when the object is garbage-collected (keep it alive while a consumer uses it)."""

    def __init__(self, shape, dtype):
        self.shape = tuple(int(s) for s in shape)
        self.dtype = np.dtype(dtype)
        self.nbytes = int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize
        self._buf = Buffer()
        self.ptr = self._buf.ensure(self.nbytes)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self.shape, "typestr": self.dtype.str, "data": (self.ptr, False),
                "version": 3, "strides": None, "stream": None}

    def numpy(self, stream: int = 0) -> np.ndarray:
        return _to_host(self.ptr, self.shape, self.dtype, stream)

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def __repr__(self):
        return f"DeviceArray(shape={self.shape}, dtype={self.dtype}, ptr=0x{self.ptr:x})"

    def __del__(self):
        try:
            self._buf.free()
        except Exception:
            pass


# --------------------------------------------------------------------------- foreign device tensors

class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


class _DLManagedTensor(ctypes.Structure):
    _fields_ = [("dl_tensor", _DLTensor), ("manager_ctx", ctypes.c_void_p), ("deleter", ctypes.c_void_p)]


_DL_CODES = {_DL_INT: "i", _DL_UINT: "u", _DL_FLOAT: "f", _DL_BOOL: "b"}


class DeviceTensor:
    """A view of someone else's CUDA memory: pointer, shape, dtype, contiguity. `keepalive` holds
    whatever must stay referenced (the DLPack capsule, the source object) until the work is done."""

    def __init__(self, ptr, shape, dtype, contiguous, keepalive, device_id=0, strides=None):
        self.ptr, self.shape, self.dtype = int(ptr), tuple(shape), np.dtype(dtype)
        self.contiguous, self.keepalive, self.device_id = contiguous, keepalive, device_id
        self.strides = None if strides is None else tuple(int(s) for s in strides)  # in elements

    @property
    def nbytes(self):
        return int(np.prod(self.shape, dtype=np.int64)) * self.dtype.itemsize


def _c_contiguous(shape, strides_elems) -> bool:
    if strides_elems is None:
        return True
    expect = 1
    for n, s in zip(reversed(shape), reversed(strides_elems)):
        if n != 1 and s != expect:
            return False
        expect *= n
    return True


def is_device_tensor(x) -> bool:
    """True for objects that live in CUDA memory (DLPack device CUDA, or __cuda_array_interface__)."""
    if isinstance(x, np.ndarray):
        return False
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            return int(dev()[0]) in (_DL_CUDA, _DL_CUDA_MANAGED)
        except Exception:
            return False
    return hasattr(x, "__cuda_array_interface__")


def to_host(x) -> np.ndarray:
    """A numpy array from a numpy array, a host DLPack tensor (e.g. a CPU torch tensor) or anything array-like."""
    if isinstance(x, np.ndarray):
        return x
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        try:
            if int(x.__dlpack_device__()[0]) in (_DL_CPU, _DL_CUDA_HOST):
                return np.from_dlpack(x)
        except (TypeError, BufferError, RuntimeError):
            pass
    return np.asarray(x)


def _from_capsule(capsule, name: bytes) -> DeviceTensor:
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype = ctypes.c_void_p
    get.argtypes = [ctypes.py_object, ctypes.c_char_p]
    addr = get(capsule, name)
    t = _DLManagedTensor.from_address(addr).dl_tensor
    shape = tuple(t.shape[i] for i in range(t.ndim))
    strides = None if not t.strides else tuple(t.strides[i] for i in range(t.ndim))
    code = _DL_CODES.get(t.dtype.code)
    if code is None or t.dtype.lanes != 1:
        raise InputError(f"unsupported DLPack dtype (code {t.dtype.code}, bits {t.dtype.bits}, lanes {t.dtype.lanes})")
    dtype = np.dtype(np.bool_) if code == "b" else np.dtype(f"{code}{t.dtype.bits // 8}")
    return DeviceTensor((t.data or 0) + t.byte_offset, shape, dtype, _c_contiguous(shape, strides),
                        capsule, t.device.device_id, strides)


def device_tensor(x, stream: int) -> DeviceTensor:
    """Read a CUDA tensor's pointer without copying. DLPack first (the producer orders its pending
    work before `stream`), then __cuda_array_interface__ (its stream, if any, is synchronized)."""
    if hasattr(x, "__dlpack__") and hasattr(x, "__dlpack_device__"):
        try:
            capsule = x.__dlpack__(stream=stream)
        except TypeError:
            capsule = x.__dlpack__()
        dt = _from_capsule(capsule, b"dltensor")
        dt.keepalive = (capsule, x)
        return dt
    cai = x.__cuda_array_interface__
    shape = tuple(int(s) for s in cai["shape"])
    dtype = np.dtype(cai["typestr"])
    strides = cai.get("strides")
    strides_elems = None if strides is None else tuple(int(s) // dtype.itemsize for s in strides)
    if cai.get("stream") not in (None, 0):
        runtime().stream_synchronize(int(cai["stream"]))  # 1, 2: the legacy / per-thread default streams
    return DeviceTensor(cai["data"][0] or 0, shape, dtype, _c_contiguous(shape, strides_elems), x,
                        strides=strides_elems)


def to_host_strided(x, stream: int = 0) -> np.ndarray:
    """A contiguous host copy of a (possibly strided, even negatively) CUDA tensor: the span of
    device memory it covers is copied, then viewed with its strides and compacted on the host."""
    t = device_tensor(x, stream)
    if t.strides is None or t.contiguous:
        return copy_device_to_host(t, stream)
    item = t.dtype.itemsize
    offsets = [(n - 1) * s for n, s in zip(t.shape, t.strides)]
    lo = sum(o for o in offsets if o < 0)
    hi = sum(o for o in offsets if o > 0)
    span = _to_host(t.ptr + lo * item, (hi - lo + 1,), t.dtype, stream)
    view = np.lib.stride_tricks.as_strided(span[-lo:], shape=t.shape, strides=[s * item for s in t.strides])
    return np.ascontiguousarray(view)


def copy_device_to_host(t: DeviceTensor, stream: int) -> np.ndarray:
    return _to_host(t.ptr, t.shape, t.dtype, stream)


def _to_host(ptr: int, shape, dtype, stream: int) -> np.ndarray:
    """A new host array filled from device memory at `ptr` (synchronous on `stream`)."""
    out = np.empty(shape, dtype)
    if out.nbytes:
        rt = runtime()
        rt.memcpy_async(out.ctypes.data, ptr, out.nbytes, _D2H, stream)
        rt.stream_synchronize(stream)
    return out


H2D, D2H, D2D = _H2D, _D2H, _D2D
