"""fp16 TensorRT engines from the mixed-precision ONNX graph (TensorRT 10.12+ / 11 API only).

Precision lives in the graph: the fp16 ONNX file is already mixed precision (LayerNorm, Softmax
and reductions in fp32, fp32 inputs/outputs), and the network is *strongly typed*, so TensorRT
keeps exactly those types. No precision builder flags are used (TensorRT 11 removed them all),
and no per-layer precision is set. On TensorRT 10.x the network is created with the
STRONGLY_TYPED creation flag; on 11.x strong typing is always on and that flag is deprecated
and ignored, so none is passed.

Build: Builder -> create_network -> OnnxParser.parse_from_file -> builder config (workspace pool
limit, one optimization profile per range set, a persistent timing cache, optional
VERSION_COMPATIBLE / hardware compatibility level / REFIT) -> build_serialized_network ->
the plan written atomically. The manifest entry records the TensorRT version, the GPU and its
compute capability, the profiles and options, so the runtime can refuse an engine it cannot
load with a message that says why (`engine_compatibility`).
"""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

from vlexport._deps import require as _require
from vlexport.errors import ArtifactError, ConfigError, MissingDependencyError
from vlexport.fsutil import write_atomic
from vlexport.tensorrt.profiles import profile_ranges_text, profiles_from_manifest, profiles_to_json

ENGINE_FILE = "model.fp16.plan"  # of the graph named "model"; others: <graph>.fp16.plan
MIN_TENSORRT = (10, 12)
HARDWARE_LEVELS = {None: "NONE", "ampere+": "AMPERE_PLUS", "same_cc": "SAME_COMPUTE_CAPABILITY"}
_log = logging.getLogger("vlexport.tensorrt")


class EngineBuildError(ArtifactError):
    """TensorRT could not parse the graph or build the engine."""


# --------------------------------------------------------------------------- versions, GPU

def parse_version(v) -> tuple[int, ...]:
    """'10.12.0.36' -> (10, 12, 0, 36); non-numeric tails are dropped ('11.0.0.post1' -> (11, 0, 0))."""
    out = []
    for part in str(v).split("."):
        m = re.match(r"\d+", part)
        if not m:
            break
        out.append(int(m.group()))
    return tuple(out)


def _pad(v: tuple, n: int = 4) -> tuple:
    return tuple(v) + (0,) * (n - len(v))


def import_tensorrt(feature: str = "building TensorRT engines"):
    """`import tensorrt`, or MissingDependencyError; also refuses versions older than 10.12."""
    trt = _require("tensorrt", feature)
    ver = parse_version(getattr(trt, "__version__", "0"))
    if ver[:2] < MIN_TENSORRT:
        raise MissingDependencyError(
            f"{feature} needs TensorRT >= {'.'.join(map(str, MIN_TENSORRT))} (strongly typed networks, "
            f"name-based I/O); this machine has {trt.__version__}: pip install -U 'tensorrt>=10.12'")
    return trt


def tensorrt_version() -> str | None:
    """The installed TensorRT version, or None when it is not installed."""
    try:
        import tensorrt as trt
    except ImportError:
        return None
    return str(getattr(trt, "__version__", "unknown"))


def tensorrt_status(feature: str = "the TensorRT backend") -> tuple[bool, str]:
    """(TensorRT and a CUDA GPU are usable here, reason if not). Never raises."""
    try:
        import_tensorrt(feature)
    except MissingDependencyError as exc:
        return False, str(exc)
    except Exception as exc:  # a broken install (missing libnvinfer, ...)
        return False, f"the 'tensorrt' package failed to import: {exc}"
    from vlexport.tensorrt.cuda import gpu_status

    return gpu_status()


def gpu_info(device: int | None = None) -> dict:
    """{"index", "name", "compute_capability"} of the CUDA device (lazy cuda-python/polygraphy)."""
    from vlexport.tensorrt.cuda import gpu_info as _info

    return _info(device)


def network_flags(trt) -> int:
    """Creation flags for a strongly typed network on TensorRT 10.x; 0 on 11+ (always strongly typed)."""
    if parse_version(trt.__version__)[:1] >= (11,):
        return 0
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if flag is None:  # pragma: no cover - every 10.x has it
        raise MissingDependencyError(f"TensorRT {trt.__version__} has no strongly typed networks; install tensorrt>=10.12")
    return 1 << int(flag)


def default_timing_cache_path() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "vlexport" / "trt-timing.cache"


def _make_logger(trt, log, verbose: bool):
    """A trt.ILogger that keeps errors (for exception messages) and forwards warnings to `log`."""

    class _Logger(trt.ILogger):
        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity <= trt.ILogger.Severity.ERROR:
                self.errors.append(str(msg))
            limit = trt.ILogger.Severity.INFO if verbose else trt.ILogger.Severity.WARNING
            if severity <= limit and log is not None:
                log(f"[TensorRT] {msg}")

    return _Logger()


# --------------------------------------------------------------------------- build

def build_engine(onnx_path, out_path, profiles, workspace_gb: float | None = None, timing_cache=None,
                 version_compatible: bool = False, hardware_compatibility: str | None = None,
                 refittable: bool = False, builder_optimization_level: int | None = None,
                 log=None, verbose: bool = False) -> dict:
    """Build a TensorRT engine from a (mixed-precision) ONNX file; return its manifest entry.

    profiles: list of {input name: (min_shape, opt_shape, max_shape)} (see profiles.py).
    timing_cache: None -> the persistent default (~/.cache/vlexport/trt-timing.cache), a path, or
      False to build without one. hardware_compatibility: None | "ampere+" | "same_cc".
    The engine is written atomically to `out_path`; the entry's file hash is relative to its folder.
    """
    if hardware_compatibility not in HARDWARE_LEVELS:
        raise ConfigError(f"hardware_compatibility must be one of {list(HARDWARE_LEVELS)}, got {hardware_compatibility!r}")
    if not profiles:
        raise ConfigError("a TensorRT build needs at least one optimization profile")
    onnx_path, out_path = Path(onnx_path), Path(out_path)
    if not onnx_path.is_file():
        raise ArtifactError(f"ONNX graph '{onnx_path}' does not exist")
    log = log if log is not None else _log.info
    trt = import_tensorrt()
    gpu = gpu_info()
    if hardware_compatibility == "ampere+" and parse_version(gpu["compute_capability"]) < (8, 0):
        raise ConfigError(f"hardware_compatibility='ampere+' needs an Ampere or newer GPU to build on; "
                          f"this one is {gpu['name']} (compute capability {gpu['compute_capability']})")

    logger = _make_logger(trt, log, verbose)
    builder = trt.Builder(logger)
    network = builder.create_network(network_flags(trt))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)] or logger.errors
        raise EngineBuildError(f"TensorRT could not parse '{onnx_path.name}' ({len(errors)} error(s)):\n  "
                               + "\n  ".join(errors[:20]))

    config = builder.create_builder_config()
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(float(workspace_gb) * (1 << 30)))
    if builder_optimization_level is not None:
        config.builder_optimization_level = int(builder_optimization_level)

    inputs = [network.get_input(i) for i in range(network.num_inputs)]
    for k, prof in enumerate(profiles):
        profile = builder.create_optimization_profile()
        for t in inputs:
            dynamic = any(int(d) < 0 for d in t.shape)
            if t.name in prof:
                lo, opt, hi = (tuple(int(v) for v in s) for s in prof[t.name])
                if len(lo) != len(t.shape):
                    raise ConfigError(f"profile {k}: input '{t.name}' has rank {len(t.shape)} in the graph "
                                      f"{tuple(t.shape)}, the profile gives {lo}")
                profile.set_shape(t.name, lo, opt, hi)
            elif dynamic:
                raise ConfigError(f"profile {k} has no shapes for the graph's dynamic input '{t.name}' "
                                  f"{tuple(t.shape)}; the manifest inputs and the graph disagree")
        config.add_optimization_profile(profile)

    if version_compatible:
        config.set_flag(trt.BuilderFlag.VERSION_COMPATIBLE)
    if refittable:
        config.set_flag(trt.BuilderFlag.REFIT)
    if hardware_compatibility is not None:
        config.hardware_compatibility_level = getattr(trt.HardwareCompatibilityLevel, HARDWARE_LEVELS[hardware_compatibility])

    cache_path = None
    if timing_cache is not False:
        cache_path = Path(timing_cache) if timing_cache else default_timing_cache_path()
        blob = b""
        if cache_path.is_file():
            blob = cache_path.read_bytes()
        try:
            cache = config.create_timing_cache(blob)
            accepted = config.set_timing_cache(cache, ignore_mismatch=False)
        except Exception:  # a truncated or foreign file
            accepted = False
        if not accepted:
            log(f"timing cache {cache_path} was made for another device or TensorRT version; starting a fresh one")
            cache = config.create_timing_cache(b"")
            config.set_timing_cache(cache, ignore_mismatch=False)

    log(f"building TensorRT {trt.__version__} engine on {gpu['name']} (sm {gpu['compute_capability']}): "
        + profile_ranges_text(profiles))
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    seconds = time.perf_counter() - t0
    if serialized is None:
        detail = "\n  ".join(logger.errors[-20:]) or "(TensorRT logged no error; rerun with verbose=True)"
        raise EngineBuildError(f"TensorRT failed to build an engine from '{onnx_path.name}':\n  {detail}")
    write_atomic(out_path, serialized)
    if cache_path is not None:
        try:
            write_atomic(cache_path, config.get_timing_cache().serialize())
        except OSError as exc:  # a read-only home must not fail the build
            log(f"could not save the timing cache to {cache_path}: {exc}")

    options = {"workspace_gb": workspace_gb, "version_compatible": bool(version_compatible),
               "hardware_compatibility": hardware_compatibility, "refittable": bool(refittable),
               "builder_optimization_level": builder_optimization_level,
               "timing_cache": cache_path is not None, "strongly_typed": True}
    return {"file": out_path.name, "bytes": out_path.stat().st_size, "tensorrt_version": str(trt.__version__),
            "gpu": gpu["name"], "compute_capability": gpu["compute_capability"], "source_graph": onnx_path.name,
            "profiles": profiles_to_json(profiles), "options": options, "build_seconds": round(seconds, 2)}


# --------------------------------------------------------------------------- compatibility

def check_compatibility(entry: dict, trt_version: str | None, compute_capability: str | None,
                        gpu_name: str | None = None) -> tuple[bool, str]:
    """Can an engine with this manifest entry load with `trt_version` on a GPU of `compute_capability`?

    Pure (no TensorRT, no GPU): the rules of TensorRT's engine compatibility docs.
    * default engines load only in the exact TensorRT version that built them;
    * version-compatible engines load in that version or any later one;
    * hardware: default and "same_cc" need the same compute capability; "ampere+" needs >= 8.0.
    """
    built = entry.get("tensorrt_version")
    if not built:
        return False, "the manifest records no TensorRT version for this engine"
    if trt_version is None:
        return False, "the 'tensorrt' package is not installed"
    opts = entry.get("options", {})
    have, made = parse_version(trt_version), parse_version(built)
    if opts.get("version_compatible"):
        if _pad(have) < _pad(made):
            return False, (f"the engine was built (version-compatible) with TensorRT {built}; it needs TensorRT "
                           f">= {built}, and this machine has {trt_version}")
    elif _pad(have) != _pad(made):
        return False, (f"the engine was built with TensorRT {built} and this machine has {trt_version}; "
                       f"an engine loads only in the TensorRT version that built it (unless built version-compatible)")
    if compute_capability is None:
        return False, "no CUDA GPU is visible"
    cc, built_cc = parse_version(compute_capability), parse_version(entry.get("compute_capability", ""))
    where = f"{gpu_name} (compute capability {compute_capability})" if gpu_name else f"compute capability {compute_capability}"
    made_on = f"{entry.get('gpu', 'a GPU')} (compute capability {entry.get('compute_capability', '?')})"
    level = opts.get("hardware_compatibility")
    if level == "ampere+":
        if cc[:2] < (8, 0):
            return False, f"the engine was built for Ampere or newer GPUs (compute capability >= 8.0); this GPU is {where}"
    elif cc[:2] != built_cc[:2]:
        return False, f"the engine was built on {made_on}; this GPU is {where}"
    return True, ""


def engine_compatibility(entry: dict) -> tuple[bool, str]:
    """`check_compatibility` against the installed TensorRT and the current GPU."""
    version = tensorrt_version()
    if version is None:
        return False, "the 'tensorrt' package is not installed"
    try:
        gpu = gpu_info()
    except Exception as exc:
        return False, f"no CUDA GPU is usable ({exc})"
    return check_compatibility(entry, version, gpu["compute_capability"], gpu["name"])


def require_compatible(entry: dict, where: str = "this artifact") -> None:
    """ArtifactError with a rebuild hint unless the engine can load here."""
    ok, reason = engine_compatibility(entry)
    if not ok:
        raise ArtifactError(f"the TensorRT engine of {where} cannot run here: {reason}. Rebuild it on this machine "
                            f"(vlexport build ... --fp16), or use backend='onnxruntime'")


# --------------------------------------------------------------------------- called by the build

def maybe_build_engine(artifact_dir, manifest: dict, graph: str = "model", require: bool = False,
                       options: dict | None = None):
    """Build the fp16 engine of one graph into `artifact_dir` when TensorRT and a GPU are here.

    Returns (entry, message): entry is the graph's engines["fp16"] entry, or None with a
    one-line reason when the engine was skipped. With require=True (`--require-engine`), a missing
    package raises MissingDependencyError and a missing GPU, graph or failed build ArtifactError.
    options: build_engine keywords (workspace_gb, timing_cache, version_compatible,
    hardware_compatibility, refittable, builder_optimization_level, log, verbose) plus
    profile_strategy ("auto" | "single").
    """
    options = dict(options or {})
    strategy = options.pop("profile_strategy", "auto")
    artifact_dir = Path(artifact_dir)

    def skip(reason, exc_type=ArtifactError):
        if require:
            raise exc_type(f"--require-engine: {reason}")
        return None, f"TensorRT engine skipped: {reason}"

    try:
        import_tensorrt()
    except MissingDependencyError as exc:
        if tensorrt_version() is None:
            if require:
                raise
            return None, "TensorRT engine skipped: the 'tensorrt' package is not installed (pip install 'vlexport[gpu]')"
        return skip(str(exc), MissingDependencyError)
    except Exception as exc:
        return skip(f"the 'tensorrt' package failed to import ({exc})")
    from vlexport.tensorrt.cuda import gpu_status

    ok, reason = gpu_status()
    if not ok:
        return skip(reason, MissingDependencyError if "pip install" in reason else ArtifactError)
    fp16 = manifest.get("graphs", {}).get(graph, {}).get("onnx", {}).get("fp16")
    if not fp16:
        return skip(f"the artifact has no fp16 graph for '{graph}' to build it from")
    onnx_path = artifact_dir / fp16["file"]
    profiles = profiles_from_manifest(manifest, graph, strategy)
    engine_file = ENGINE_FILE if graph == "model" else f"{graph}.fp16.plan"
    try:
        entry = build_engine(onnx_path, artifact_dir / engine_file, profiles, **options)
    except EngineBuildError as exc:
        if require:
            raise
        return None, f"TensorRT engine skipped: the build failed ({str(exc).splitlines()[0]})"
    entry["profile_strategy"] = strategy
    mib = entry["bytes"] / (1 << 20)
    return entry, (f"TensorRT engine built: {engine_file} ({mib:.1f} MiB, TensorRT {entry['tensorrt_version']}, "
                   f"{entry['gpu']}, {len(profiles)} profile(s), {entry['build_seconds']:.0f} s)")
