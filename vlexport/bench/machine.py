"""What machine a benchmark ran on, and how fast it multiplies matrices.

`machine_info()` records CPU model, cores, threads used, memory, OS, library versions and GPUs.
`gemm_peak_gflops()` measures this machine's fp32 matmul rate in the same process (best of several
runs), with every GEMM library the backends use: torch (MKL/oneDNN), numpy (OpenBLAS) and
onnxruntime's MLAS (a one-node MatMul graph). The libraries differ a lot on some CPUs (on the AMD
Zen 5 of the machine the published figures come from, MLAS reaches ~2x what MKL does), so the
peak reported is the best of them: "fraction of peak" then compares against what this machine can
really do, not against a slow library. The harness measures it in a fresh subprocess
(`isolated=True`), so thread pools left by earlier work in the process (OpenMP, OpenBLAS) cannot
lower it. Other processes on the machine still can: compare peaks only from quiet runs.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time

# BERT-base GEMM shapes at 1792 tokens (batch 32 x (20 text + 36 visual)): QKV/out, FFN up, FFN down.
BERT_SHAPES = ((1792, 768, 768), (1792, 768, 3072), (1792, 3072, 768))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The SIMD flags that decide GEMM speed (avx2, avx512f, avx512_vnni, amx...)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    keep = ("avx", "avx2", "fma", "f16c", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni",
                            "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8", "amx_tile")
                    return [k for k in keep if k in flags]
    except OSError:
        pass
    return []


def gpus() -> list[dict]:
    """NVIDIA GPUs seen by nvidia-smi (name, memory, driver); [] when none."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return []
    if out.returncode != 0:
        return []
    rows = []
    for line in out.stdout.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) >= 3:
            rows.append({"name": parts[0], "memory": parts[1], "driver": parts[2]})
    return rows


def machine_info(threads: int | None = None) -> dict:
    info = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "cpu": cpu_model(),
        "cpu_flags": cpu_flags(),
        "logical_cores": os.cpu_count(),
        "threads_used": threads,
        "os": platform.platform(),
        "python": platform.python_version(),
    }
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gb"] = round(psutil.virtual_memory().total / 2**30, 1)
        try:
            info["affinity_cores"] = len(psutil.Process().cpu_affinity())
        except (AttributeError, OSError):
            pass
    except ImportError:
        pass
    from vlexport import __version__

    from vlexport._deps import package_versions

    info["versions"] = {"vlexport": __version__, **package_versions(
        ("numpy", "torch", "onnx", "onnxruntime", "onnxruntime-gpu", "transformers", "tensorrt"))}
    try:
        import onnxruntime as ort

        info["onnxruntime_providers"] = ort.get_available_providers()
    except ImportError:
        pass
    info["gpus"] = gpus()
    return info


# ------------------------------------------------------------------------------------- GEMM peak
def _best(fn, repeats: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _torch_gemm(shape, threads, repeats):
    import torch

    m, k, n = shape
    old = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        a, b = torch.randn(m, k), torch.randn(k, n)
        with torch.inference_mode():
            return _best(lambda: a @ b, repeats)
    finally:
        torch.set_num_threads(old)


def _numpy_gemm(shape, threads, repeats):
    import numpy as np

    m, k, n = shape
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((m, k), dtype=np.float32), rng.standard_normal((k, n), dtype=np.float32)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return _best(lambda: a @ b, repeats)  # numpy's own thread count
    with threadpool_limits(threads):
        return _best(lambda: a @ b, repeats)


def _ort_gemm(shape, threads, repeats):
    import numpy as np
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    m, k, n = shape
    rng = np.random.default_rng(0)
    w = rng.standard_normal((k, n), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "gemm",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [m, n])], [numpy_helper.from_array(w, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    x = rng.standard_normal((m, k), dtype=np.float32)
    return _best(lambda: sess.run(None, {"x": x}), repeats)


_LIBS = {"torch": ("torch", _torch_gemm), "numpy": ("numpy", _numpy_gemm), "onnxruntime": ("onnxruntime", _ort_gemm)}


def gemm_peak_gflops(threads: int = 2, n: int | None = 2048, shapes=BERT_SHAPES, repeats: int = 5,
                     libraries=("onnxruntime", "torch", "numpy"), isolated: bool = False) -> dict:
    """Measured fp32 GEMM rate (GFLOP/s, best of `repeats`) per library and shape.

    Shapes: the BERT-base GEMMs (`shapes`, (M, K, N)) plus a square n x n x n one (n=None: none).
    Order matters on small machines: OpenBLAS (numpy) and OpenMP (torch) workers keep spinning
    for a while after a call and slow whatever runs next, so ORT goes first and numpy last.
    Returns {"peak": best over everything, "peak_library": ..., "peak_shape": ...,
    "by_library": {lib: best GFLOP/s}, "runs": [{library, shape, gflops}], "threads": threads}.
    """
    if isolated:  # a fresh interpreter: no thread pools from earlier work in this process
        import json
        import sys

        code = ("import json,sys; from vlexport.bench.machine import gemm_peak_gflops as g; "
                f"print(json.dumps(g({threads}, {n!r}, {tuple(tuple(s) for s in shapes)!r}, {repeats}, {tuple(libraries)!r})))")
        env = {**os.environ, "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY", "PASSIVE")}
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
        if out.returncode == 0:
            res = json.loads(out.stdout.strip().splitlines()[-1])
            res["isolated"] = True
            return res
    from vlexport._deps import available

    all_shapes = list(shapes) + ([(n, n, n)] if n else [])
    runs = []
    for lib in libraries:
        module, fn = _LIBS[lib]
        if not available(module):
            continue
        for shape in all_shapes:
            try:
                t = fn(tuple(int(s) for s in shape), threads, repeats)
            except Exception as exc:  # a library that fails here should not sink the benchmark
                runs.append({"library": lib, "shape": list(shape), "error": f"{type(exc).__name__}: {exc}"})
                continue
            m, k, nn = shape
            runs.append({"library": lib, "shape": list(shape), "gflops": 2.0 * m * k * nn / t / 1e9})
    time.sleep(0.3)  # let BLAS worker threads that spin after a call go idle before anything else runs
    ok = [r for r in runs if "gflops" in r]
    by_lib = {}
    for r in ok:
        by_lib[r["library"]] = max(by_lib.get(r["library"], 0.0), r["gflops"])
    best = max(ok, key=lambda r: r["gflops"]) if ok else None
    return {"threads": threads, "peak": best["gflops"] if best else None,
            "peak_library": best["library"] if best else None, "peak_shape": best["shape"] if best else None,
            "by_library": by_lib, "runs": runs}
