"""Shared oracle helpers (no family in here): random `transformers` models saved to disk - the
numerical truth our models are tested against - and comparing their outputs with ours.

Family-specific pieces (small configs, input makers) live in `<family>_kit.py` beside this file;
test files import helpers from these modules, never from each other.
"""

from __future__ import annotations

import torch


def perturb_(model, seed=0):
    """Fresh HF models have zero biases and unit LayerNorm weights; make every parameter count."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "LayerNorm" in name:
                p.add_(0.1 * torch.randn(p.shape, generator=g))
    return model


def save_hf_model(model, folder, safe: bool = True):
    model.save_pretrained(folder, safe_serialization=safe) if _accepts_safe(model) else model.save_pretrained(folder)
    if not safe:
        # transformers 5 always writes safetensors; write the classic .bin ourselves from its state dict
        import os

        state = {k: v.contiguous() for k, v in model.state_dict().items()}
        for f in os.listdir(folder):
            if f.endswith(".safetensors") or f.endswith(".safetensors.index.json"):
                os.remove(os.path.join(folder, f))
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    return folder


def _accepts_safe(model):
    import inspect

    return "safe_serialization" in inspect.signature(model.save_pretrained).parameters


# ----------------------------------------------------------------------------- running and comparing

def to_torch(feeds: dict) -> dict:
    """numpy feeds (TaskSpec.make_inputs) -> torch tensors."""
    return {k: torch.from_numpy(v) for k, v in feeds.items()}


def run_hf(model, feeds: dict, fields=None) -> dict:
    """HF outputs as {field: tensor} (the given fields, or every tensor field HF returns)."""
    with torch.no_grad():
        out = model(**to_torch(feeds), return_dict=True)
    keys = fields if fields is not None else [k for k in out.keys() if isinstance(out[k], torch.Tensor)]
    return {k: out[k] for k in keys if k in out and out[k] is not None}


def run_ours(model, feeds: dict) -> dict:
    with torch.no_grad():
        out = model(**to_torch(feeds))
    return {k: v for k, v in out.items() if v is not None}


def assert_same_outputs(ours: dict, theirs: dict, atol: float = 1e-5, what: str = ""):
    """Every field both have is equal within atol; at least one field is compared."""
    common = [k for k in ours if k in theirs]
    assert common, f"{what}: no common output fields (ours {sorted(ours)}, HF {sorted(theirs)})"
    for k in common:
        a, b = ours[k], theirs[k]
        assert tuple(a.shape) == tuple(b.shape), f"{what} {k}: shape {tuple(a.shape)} vs HF {tuple(b.shape)}"
        assert a.dtype == b.dtype, f"{what} {k}: dtype {a.dtype} vs HF {b.dtype}"
        assert torch.isfinite(b).any(), f"{what} {k}: HF output has no finite value"
        # R2P masks regions with finfo(float32).min: both sides must hold exactly that value there
        finite = torch.isfinite(a) & (a.abs() < 1e30)
        assert torch.equal(finite, torch.isfinite(b) & (b.abs() < 1e30)), f"{what} {k}: masked positions differ"
        assert torch.equal(a[~finite], b[~finite]), f"{what} {k}: masked values differ"
        diff = (a[finite] - b[finite]).abs().max().item() if finite.any() else 0.0
        assert diff <= atol, f"{what} {k}: max abs diff {diff:.3g} > {atol}"
    return common


# ----------------------------------------------------------------------------- checkpoint layouts

def to_torch_outputs(outputs) -> dict:
    """Runtime outputs (numpy) -> torch tensors, for assert_same_outputs against HF."""
    import numpy as np

    return {k: torch.from_numpy(np.asarray(v)) for k, v in outputs.items()}


def write_sharded_bin(state: dict, folder, n_shards: int = 3):
    """A classic sharded `.bin` checkpoint: pytorch_model-0000i-of-0000n.bin + pytorch_model.bin.index.json."""
    import json
    import os

    keys = list(state)
    per = -(-len(keys) // n_shards)
    weight_map = {}
    for i in range(n_shards):
        name = f"pytorch_model-{i + 1:05d}-of-{n_shards:05d}.bin"
        part = {k: state[k].contiguous() for k in keys[i * per:(i + 1) * per]}
        torch.save(part, os.path.join(folder, name))
        weight_map.update({k: name for k in part})
    index = {"metadata": {"total_size": sum(v.numel() * v.element_size() for v in state.values())},
             "weight_map": weight_map}
    with open(os.path.join(folder, "pytorch_model.bin.index.json"), "w") as f:
        json.dump(index, f)
    return folder


def write_checkpoint(folder, config: dict, state: dict, safe: bool = True):
    """A model folder from a config dict and a state dict (for hand-edited checkpoints)."""
    import json
    import os

    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    state = {k: v.detach().clone().contiguous() for k, v in state.items()}  # no shared storage (safetensors)
    if safe:
        from safetensors.torch import save_file

        save_file(state, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    else:
        torch.save(state, os.path.join(folder, "pytorch_model.bin"))
    return folder


# ----------------------------------------------------------------------------- artifact folders

def file_hashes(folder) -> dict:
    """{path relative to `folder`: SHA-256} of every file under it."""
    from pathlib import Path

    from vlexport.fsutil import sha256

    return {str(p.relative_to(folder)): sha256(p) for p in sorted(Path(folder).rglob("*")) if p.is_file()}


def drop_precisions(folder, graph: str, precisions) -> None:
    """Make an artifact copy look built without `precisions` for `graph`: their manifest entries,
    validation reports and files taken out (the manifest itself is not hashed)."""
    import json
    from pathlib import Path

    path = Path(folder) / "manifest.json"
    m = json.loads(path.read_text())
    for prec in precisions:
        entry = m["graphs"][graph]["onnx"].pop(prec)
        for rel in [entry["file"], *entry.get("data", [])]:
            (Path(folder) / rel).unlink()
            del m["files"][rel]
        m["graphs"][graph]["validation"].pop(prec, None)
    path.write_text(json.dumps(m))
