"""Reading HF checkpoints into our modules: files, key names, and strict key checks.

`.bin` files are read with torch.load(weights_only=True): tensors only, no pickled code runs; a
file that holds anything else is refused as unsafe (one line, never torch's hint to turn the
safety off). A model part too large to hold (a 7B decoder) is read one tensor at a time instead
(`LazyTensors`), while its graph is written.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlexport.errors import CheckpointError

WEIGHT_FILES = ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                "pytorch_model.bin.index.json"]


def find_weights(folder: Path) -> list[Path]:
    """The weight files of a model folder (several for a sharded checkpoint)."""
    for name in WEIGHT_FILES:
        f = folder / name
        if f.is_file():
            if name.endswith(".index.json"):
                try:
                    shards = sorted(set(json.loads(f.read_text())["weight_map"].values()))
                except (ValueError, KeyError) as exc:
                    raise CheckpointError(f"{f} is not a valid shard index ({exc})") from None
                missing = [s for s in shards if not (folder / s).is_file()]
                if missing:
                    raise CheckpointError(f"{f} names shard files that are missing: {missing}")
                return [folder / s for s in shards]
            return [f]
    raise CheckpointError(f"no weights in '{folder}': expected one of {WEIGHT_FILES}")


def _read_bin(f: Path, mmap: bool = False) -> dict:
    import pickle
    import warnings

    import torch

    try:
        with warnings.catch_warnings():
            # torch warns (two lines on stderr) about a plain pickle's protocol before refusing it; the
            # refusal below is the one line the user needs
            warnings.filterwarnings("ignore", message=r"Detected pickle protocol", category=UserWarning)
            part = torch.load(f, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError:
        raise CheckpointError(f"{f} was refused as unsafe: it holds pickled objects other than tensors, "
                              f"and vlexport never runs code from a checkpoint. Convert it to "
                              f"safetensors with a tool you trust") from None
    if not isinstance(part, dict):
        raise CheckpointError(f"{f} holds a {type(part).__name__}, not a state dict")
    return part


def read_state_dict(folder: Path, keep=None) -> dict:
    """The tensors of a checkpoint folder, as float32/int CPU tensors: all of them, or those whose key
    `keep(key)` accepts (a safetensors file then reads only those; a .bin file is memory-mapped)."""
    state = {}
    for f in find_weights(Path(folder)):
        try:
            if f.suffix == ".safetensors":
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as fh:
                    part = {k: fh.get_tensor(k) for k in fh.keys() if keep is None or keep(k)}
            else:
                part = _read_bin(f, mmap=keep is not None)
                part = {k: v for k, v in part.items() if keep is None or keep(k)}
        except CheckpointError:
            raise
        except Exception as exc:  # truncated/corrupted files surface as many exception types
            raise CheckpointError(f"cannot read weights file {f}: {type(exc).__name__}: {exc}") from None
        state.update(part)
    return {k: (v.float() if v.is_floating_point() else v) for k, v in state.items()}


class LazyTensors:
    """The tensors of a checkpoint folder whose key `keep(key)` accepts, read one at a time when asked:
    for a model too large to hold (a 7B decoder is 27 GB in fp32) whose graph is written tensor by tensor.
    safetensors files are memory-mapped and read per tensor; .bin files are memory-mapped by torch.load
    (`mmap=True`: the zip format torch has written since 1.6). `shape(key)` reads no data."""

    def __init__(self, folder: Path, keep):
        self.folder, self._where, self._bins = Path(folder), {}, {}
        for f in find_weights(self.folder):
            try:
                if f.suffix == ".safetensors":
                    from safetensors import safe_open

                    with safe_open(str(f), framework="pt") as fh:
                        for k in fh.keys():
                            if keep(k):
                                self._where[k] = (f, tuple(fh.get_slice(k).get_shape()))
                else:
                    part = _read_bin(f, mmap=True)
                    self._bins[f] = part
                    self._where.update({k: (f, tuple(v.shape)) for k, v in part.items() if keep(k)})
            except CheckpointError:
                raise
            except Exception as exc:  # truncated/corrupted files, or a .bin torch cannot memory-map
                raise CheckpointError(f"cannot read weights file {f}: {type(exc).__name__}: {exc}") from None

    def keys(self) -> list[str]:
        return list(self._where)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def shape(self, key: str) -> tuple:
        return self._where[key][1]

    def get(self, key: str):
        """The tensor `key` as a float32 numpy array (KeyError when the checkpoint has none)."""
        f, _ = self._where[key]
        try:
            if f in self._bins:
                t = self._bins[f][key]
            else:
                from safetensors import safe_open

                with safe_open(str(f), framework="pt") as fh:
                    t = fh.get_tensor(key)
            return t.float().numpy()
        except Exception as exc:  # a file truncated or changed since it was opened
            raise CheckpointError(f"cannot read '{key}' from {f}: {type(exc).__name__}: {exc}") from None


_RENAMES = [(re.compile(r"\.gamma$"), ".weight"), (re.compile(r"\.beta$"), ".bias")]


def normalize_keys(state: dict, expected: set[str], base_prefix: str, head_prefixes=()) -> dict:
    """Map checkpoint keys onto our module's keys.

    Accepts: keys with or without the base prefix (e.g. `bert.`), TF-style gamma/beta names,
    and drops `position_ids` buffers. When loading the bare base model from a checkpoint with a
    head, the head's keys (`head_prefixes`) are dropped, as HF's `BaseModel.from_pretrained(head_ckpt)`.
    """
    ours_prefixed = any(k.startswith(base_prefix) for k in expected)
    out = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        for pattern, repl in _RENAMES:
            key = pattern.sub(repl, key)
        if ours_prefixed and not key.startswith(base_prefix) and base_prefix + key in expected:
            key = base_prefix + key
        elif not ours_prefixed and key.startswith(base_prefix):
            key = key[len(base_prefix):]
        elif not ours_prefixed and head_prefixes and key.startswith(tuple(head_prefixes)):
            continue  # a head's weights, not wanted by the base model
        out[key] = value
    return out


def load_into(model, state: dict, base_prefix: str, tied: dict[str, str] | None = None, source="checkpoint",
              head_prefixes=()):
    """Strictly load `state` into `model`; missing/unexpected keys raise CheckpointError listing them.

    tied: {our key: key it is tied to} that a checkpoint may omit (HF drops tied weights on save).
    aliases the model declares (`model.checkpoint_aliases()`: {checkpoint key: our key}) are folded in first.
    """
    expected = set(model.state_dict().keys())
    state = normalize_keys(state, expected, base_prefix, head_prefixes)
    ignored = getattr(model, "checkpoint_ignored", None)  # keys a model says are constants, not weights
    if ignored is not None:
        state = {k: v for k, v in state.items() if k in expected or not ignored(k)}
    # keys a checkpoint may hold under another name (the model says which), e.g. HF ties BERT's
    # decoder bias to predictions.bias: old checkpoints store both, new ones one of them
    for alias, key in getattr(model, "checkpoint_aliases", dict)().items():
        if alias in state and alias not in expected:
            state.setdefault(key, state.pop(alias))
    tied = tied or {}
    for key, source in tied.items():
        # Both tied tensors stored with different values: like transformers, keep both (untie), rather
        # than let the later key overwrite the shared parameter (that would corrupt the embeddings).
        if key in state and source in state and not _same(state[key], state[source]):
            _untie(model, key)
    missing = sorted(k for k in expected - state.keys() if k not in tied)
    unexpected = sorted(state.keys() - expected)
    if missing or unexpected:
        def show(keys):
            return ", ".join(keys[:12]) + (f" ... ({len(keys)} in all)" if len(keys) > 12 else "")
        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + "; ".join(parts))
    own = model.state_dict()
    for key, value in state.items():
        if tuple(value.shape) != tuple(own[key].shape):
            raise CheckpointError(f"{source}: '{key}' has shape {tuple(value.shape)}, the config implies "
                                  f"{tuple(own[key].shape)}")
    model.load_state_dict(state, strict=False)  # strictness checked above; tied keys may be absent
    return model


def _same(a, b) -> bool:
    import torch

    return a.shape == b.shape and torch.equal(a.float(), b.float())


def _untie(model, key: str):
    """Give the parameter `key` its own storage (it shares another parameter's now)."""
    import torch

    module_path, _, name = key.rpartition(".")
    module = model.get_submodule(module_path)
    setattr(module, name, torch.nn.Parameter(getattr(module, name).detach().clone()))
    if hasattr(getattr(model, "config", None), "tie_word_embeddings"):
        model.config.tie_word_embeddings = False
