"""A native Triton model repository from an artifact (`vlexport triton-repo PATH --out REPO`).

    REPO/
      vlexport-triton-repo.json           what was written from what (Triton ignores files at the root)
      <name>/config.pbtxt, 1/model.onnx   each graph: Triton's own onnxruntime_onnx backend
                                          (or tensorrt_plan, 1/model.plan, where the artifact has an engine)
      <name>_<endpoint>/config.pbtxt      each processor endpoint (text / image bytes in): a Python-backend
      <name>_<endpoint>/1/model.py          model that runs the vlexport pipeline on its own copy of the
      <name>_<endpoint>/1/artifact/         artifact (hard links where the filesystem allows)

Multi-graph and generative artifacts (two towers, encoder + KV-cached decoder) are served whole by
their Python-backend endpoints (the control flow between graphs, the cache and the processor live
there); their graphs are also in the repository as native models for users who orchestrate
themselves. `vlexport serve` writes the same layout in "serve" mode, where every model, graphs
included, is a Python-backend model (PyTriton's tritonserver has no ONNX Runtime backend) that
reads the artifact in place.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from vlexport.errors import ArtifactError, ConfigError
from vlexport.serving.endpoints import TRITON_TYPES, Endpoint, endpoints_for, select
from vlexport.serving.pbtxt import Enum, dumps, map_entries

MARKER = "vlexport-triton-repo.json"
MODEL_PY = Path(__file__).with_name("triton_model.py")


def model_name(base: str, endpoint: Endpoint) -> str:
    return base if endpoint.name == "model" else f"{base}_{endpoint.name}"


def safe_name(text: str) -> str:
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")
    if not name:
        raise ConfigError(f"cannot make a Triton model name from {text!r}; pass --name")
    return name


def _tensors(tensors, inputs: bool, native: bool) -> list[dict]:
    out = []
    for t in tensors:
        d = {"name": t.name, "data_type": Enum(TRITON_TYPES[t.dtype]), "dims": list(t.dims)}
        if inputs and t.optional and not native:  # a native ONNX graph needs every input it declares
            d["optional"] = True
        out.append(d)
    return out


def model_config(name: str, endpoint: Endpoint, *, platform: str, max_batch: int | None = None,
                 delay_us: int | None = 500, instances: int = 1, gpu: bool = False,
                 parameters: dict | None = None) -> dict:
    """The ModelConfig (as a dict for pbtxt.dumps) of one endpoint. platform: "python",
    "onnxruntime_onnx" or "tensorrt_plan". delay_us None: no dynamic batching."""
    native = platform != "python"
    mb = endpoint.max_batch if max_batch is None else min(max_batch, endpoint.max_batch)
    cfg = {"name": name}
    if native:
        cfg["platform"] = platform
    else:
        cfg["backend"] = "python"
    cfg["max_batch_size"] = mb
    cfg["input"] = _tensors(endpoint.inputs, True, native)
    cfg["output"] = _tensors(endpoint.outputs, False, native)
    if delay_us is not None and mb > 1:
        cfg["dynamic_batching"] = {"max_queue_delay_microseconds": int(delay_us)}
    group = {"count": int(instances), "kind": Enum("KIND_GPU" if gpu else "KIND_CPU")}
    if platform == "tensorrt_plan":
        group["profile"] = ["0"]  # the engine's one optimization profile covers the built ranges
    cfg["instance_group"] = [group]
    if parameters:
        cfg["parameters"] = map_entries(parameters)
    return cfg


def _link_or_copy(src: Path, dst: Path):
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # no extra disk for a 5 GB decoder when REPO is on the artifact's filesystem
    except OSError:
        shutil.copy2(src, dst)


def copy_artifact(artifact, dest: Path):
    """The artifact's listed files (hash-checked) and its manifest into dest."""
    for rel in artifact.manifest["files"]:
        _link_or_copy(artifact.file(rel), dest / rel)
    _link_or_copy(artifact.path / "manifest.json", dest / "manifest.json")


def _check_repo_folder(final: Path):
    final = Path(final)
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        raise ArtifactError(f"--out '{final}' exists and is not a folder")
    if final.is_dir() and any(final.iterdir()) and not (final / MARKER).is_file():
        raise ArtifactError(f"--out '{final}' exists and is not a model repository vlexport wrote; vlexport replaces "
                            f"only what it wrote. Choose another --out")


def plan(artifact, *, mode: str, name: str | None = None, endpoints=None, precision: str = "fp32",
         platform: str = "auto", max_batch: int | None = None, delay_us: int | None = 500,
         instances: int = 1, backend: str = "auto", threads: int | None = None) -> list[dict]:
    """What a repository holds, one dict per model: name, endpoint, platform, config (ModelConfig
    dict) and the files it needs. mode "deploy": graphs as native models; "serve": all Python."""
    if mode not in ("deploy", "serve"):
        raise ConfigError(f"mode must be 'deploy' or 'serve', got {mode!r}")
    if platform not in ("auto", "onnx", "tensorrt"):
        raise ConfigError(f"--platform must be auto, onnx or tensorrt, got {platform!r}")
    base = safe_name(name or artifact.path.name)
    chosen = select(endpoints_for(artifact), endpoints)
    out = []
    for ep in chosen:
        entry = {"name": model_name(base, ep), "endpoint": ep.name, "kind": ep.kind}
        graph = ep.extra.get("graph")
        if mode == "deploy" and graph is not None:
            prec = precision if precision in artifact.precisions(graph) else artifact.precisions(graph)[0]
            use_trt = platform == "tensorrt" or (platform == "auto" and "fp16" in artifact.engine_precisions(graph)
                                                 and precision in ("fp16", "fp32"))
            if platform == "tensorrt" and not artifact.engine_precisions(graph):
                raise ArtifactError(f"--platform tensorrt: the artifact has no TensorRT engine for graph '{graph}' "
                                    f"(build with --fp16 on a machine with TensorRT and a GPU)")
            if use_trt:
                entry.update(platform="tensorrt_plan", files={"model.plan": artifact.engine_entry(graph, "fp16")["file"]})
            else:
                onnx = artifact.onnx_entry(graph, prec)
                entry.update(platform="onnxruntime_onnx", precision=prec,
                             files={"model.onnx": onnx["file"], **{d: d for d in onnx.get("data", [])}})
            entry["config"] = model_config(entry["name"], ep, platform=entry["platform"], max_batch=max_batch,
                                           delay_us=delay_us, instances=instances, gpu=use_trt)
        else:
            params = {"endpoint": ep.name, "artifact": "artifact" if mode == "deploy" else str(artifact.path),
                      "precision": precision, "backend": backend}
            if threads:
                params["intra_op_num_threads"] = threads
            entry.update(platform="python", config=model_config(entry["name"], ep, platform="python",
                                                                 max_batch=max_batch, delay_us=delay_us,
                                                                 instances=instances, parameters=params))
        out.append(entry)
    return out


def write_models(artifact, models: list[dict], folder: Path, mode: str) -> None:
    """plan()'s models into `folder`: config.pbtxt and version folder 1 each."""
    for m in models:
        version = folder / m["name"] / "1"
        version.mkdir(parents=True)
        (folder / m["name"] / "config.pbtxt").write_text(dumps(m["config"]) + "\n")
        if m["platform"] == "python":
            shutil.copy2(MODEL_PY, version / "model.py")
            if mode == "deploy":
                copy_artifact(artifact, version / "artifact")
        else:
            for dst, rel in m["files"].items():
                _link_or_copy(artifact.file(rel), version / dst)


def write(artifact, out: Path, **options) -> list[dict]:
    """Write the repository atomically (staged beside `out`, then renamed); returns plan()'s models."""
    from vlexport.fsutil import staging_dir

    mode = options.setdefault("mode", "deploy")
    models = plan(artifact, **options)
    with staging_dir(Path(out), check=_check_repo_folder) as tmp:
        write_models(artifact, models, tmp, mode)
        summary = {"vlexport_repository": 1, "artifact": str(artifact.path), "mode": mode,
                   "models": [{k: m[k] for k in ("name", "endpoint", "kind", "platform")} for m in models]}
        (tmp / MARKER).write_text(json.dumps(summary, indent=2) + "\n")
    return models


def models_table(models: list[dict], title: str, second: str = "platform"):
    """A rich Table of plan()'s models (what `serve` and `triton-repo` print)."""
    from rich.table import Table

    table = Table(title=title)
    for col in ("model", second, "inputs", "outputs", "max batch"):
        table.add_column(col, overflow="fold")
    for m in models:
        cfg = m["config"]
        table.add_row(m["name"], m[second], ", ".join(t["name"] for t in cfg["input"]),
                      ", ".join(t["name"] for t in cfg["output"]), str(cfg["max_batch_size"]))
    return table
