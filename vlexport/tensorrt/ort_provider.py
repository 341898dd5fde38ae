"""ONNX Runtime's TensorRT execution provider, configured from an artifact's manifest.

Used by the ONNX Runtime backend when "TensorrtExecutionProvider" is among
onnxruntime.get_available_providers(). The fp16 precision comes from the fp16 (mixed-precision)
graph itself: `trt_fp16_enable` is deliberately left unset, because ORT creates a *strongly
typed* TensorRT network only when neither trt_fp16_enable nor trt_int8_enable is set
(microsoft/onnxruntime PR #24298); with it set ORT builds a weakly typed network that may run
the fp32 islands (LayerNorm, Softmax) in fp16, and on TensorRT 11 the weak-typing flag it maps to
no longer exists.

Explicit profiles: ORT takes "name:AxBxC,name2:..." strings; repeating an input name starts the
next profile ("input_ids:1x2,mask:1x2,input_ids:2x2,mask:2x2" = two profiles), so the same
latency/throughput profiles as the native engine (see profiles.py) are passed for every input.
ORT needs shapes for every dynamic input once any is given.

Engine cache: ORT names its cached engines after the model's file name and graph structure, not
its weights, so each fp16 graph gets its own folder (keyed by the graph's SHA-256 from the
manifest): a rebuilt artifact never picks up a stale engine. The timing cache is shared.
"""

from __future__ import annotations

from pathlib import Path

from vlexport.errors import ArtifactError
from vlexport.tensorrt.profiles import build_profiles

PROVIDER = "TensorrtExecutionProvider"


def default_cache_dir() -> Path:
    from vlexport.tensorrt.engine import default_timing_cache_path

    return default_timing_cache_path().parent / "ort-trt"


def profile_shapes_option(profiles, which: str) -> str:
    """The trt_profile_{min,opt,max}_shapes value: 'name:1x2x3,name2:...', profile after profile."""
    k = {"min": 0, "opt": 1, "max": 2}[which]
    return ",".join(f"{name}:{'x'.join(str(int(d)) for d in shapes[k])}"
                    for p in profiles for name, shapes in p.items())


def _manifest(artifact) -> dict:
    return artifact if isinstance(artifact, dict) else artifact.manifest


def _graph_key(manifest: dict, graph: str, precision: str) -> str:
    entry = manifest.get("graphs", {}).get(graph, {}).get("onnx", {}).get(precision)
    if not entry:
        have = sorted(manifest.get("graphs", {}).get(graph, {}).get("onnx", {}))
        raise ArtifactError(f"the artifact has no {precision} graph for '{graph}' for the TensorRT execution provider; "
                            f"it has {have or 'none'}")
    digest = manifest.get("files", {}).get(entry["file"], {}).get("sha256")
    return (digest or Path(entry["file"]).stem)[:16]


def tensorrt_provider_options(artifact, cache_dir=None, precision: str = "fp16", input_names=None,
                              profile_strategy: str = "auto", workspace_gb: float | None = None,
                              device_id: int = 0, graph: str = "model") -> tuple[str, dict]:
    """(provider name, options) for onnxruntime.InferenceSession(providers=[...]).

    artifact: an Artifact or its manifest dict. cache_dir: where engines and the timing cache go
    (default ~/.cache/vlexport/ort-trt; never inside the artifact, which stays read-only).
    input_names: restrict the profiles to the graph's actual inputs (default: every manifest input
    of `graph`). Values are strings, as ORT parses them.
    """
    manifest = _manifest(artifact)
    cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    engine_dir = cache_dir / _graph_key(manifest, graph, precision)
    inputs = manifest["graphs"][graph]["inputs"]
    if input_names is not None:
        wanted = set(input_names)
        inputs = [i for i in inputs if i["name"] in wanted]
    used = {t for i in inputs for d in i["dims"] if isinstance(d, str) for t in d.split("+")}
    profiles = build_profiles(inputs, {k: v for k, v in manifest["axes"].items() if k in used}, profile_strategy)
    options = {
        "device_id": str(int(device_id)),
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": str(engine_dir),
        "trt_engine_cache_prefix": "vlexport",
        "trt_timing_cache_enable": "1",
        "trt_timing_cache_path": str(cache_dir),
        "trt_profile_min_shapes": profile_shapes_option(profiles, "min"),
        "trt_profile_opt_shapes": profile_shapes_option(profiles, "opt"),
        "trt_profile_max_shapes": profile_shapes_option(profiles, "max"),
    }
    if workspace_gb:
        options["trt_max_workspace_size"] = str(int(float(workspace_gb) * (1 << 30)))
    try:
        ensure_cache_dirs(options)
    except OSError:  # read-only location: ORT then fails with its own message when it writes
        pass
    return PROVIDER, options


def ensure_cache_dirs(options: dict) -> None:
    """Create the folders named in the options, parents included."""
    for key in ("trt_engine_cache_path", "trt_timing_cache_path"):
        if options.get(key):
            Path(options[key]).mkdir(parents=True, exist_ok=True)
