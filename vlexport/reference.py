"""From a hub id, a local folder or an embedded default to a ready (eval-mode) reference model.

Family-agnostic: the family comes from config.json's model_type (or the architecture), the class
from the family's model module, and the weights load by HF state-dict keys with strict checks.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vlexport.sources import family_of, model_config
from vlexport.weights import LazyTensors, load_into, read_state_dict


@dataclass
class Loaded:
    model: torch.nn.Module
    config: object  # the family's config dataclass
    architecture: str
    family: object  # vlexport.families.Family
    source: str  # what the user passed
    model_dir: Path | None  # the folder weights came from (None for random weights)
    weights: str  # "checkpoint" | "random" | "tiny"
    processor: object = None  # set when the model was composed from parts (else the family loads it)
    random_parts: tuple = ()  # parameters a composed checkpoint model did not get from any checkpoint


def _architecture(family, cfg_dict: dict, override: str | None) -> str:
    if override:
        return family.architecture_for(override)
    archs = cfg_dict.get("architectures") or [next(iter(family.architectures))]
    return family.architecture_for(archs[0])


def resolve_architecture(cfg_dict: dict, override: str | None = None):
    """(family, architecture) for a config dict and an optional architecture/task override."""
    family = family_of(cfg_dict, override)
    return family, _architecture(family, cfg_dict, override)


def init_random(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Deterministic random weights with non-trivial biases and norm weights (graph tools would
    otherwise fold away zero biases and unit scales, hiding bugs)."""
    g = torch.Generator().manual_seed(seed)
    if hasattr(model, "random_init"):  # a model whose depth needs scaled weights (e.g. a 100-layer ResNet)
        return model.random_init(g).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name or "layernorm.weight" in name or name.endswith("norm.weight"):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model.eval()


def build_random(cfg_dict: dict, architecture: str | None = None, seed: int = 0):
    """(model with deterministic random weights, config, architecture)."""
    family, arch = resolve_architecture(cfg_dict, architecture)
    config = family.config_from_dict(cfg_dict)
    return init_random(family.model_class(arch)(config), seed), config, arch


def from_pretrained(path_or_id: str, architecture: str | None = None, random_weights: bool = False,
                    revision: str | None = None) -> Loaded:
    """Load a reference model. `random_weights=True` with a known public id builds its full-size
    configuration offline; the built-in tiny models always do."""
    cfg, folder, weights = model_config(path_or_id, random_weights, revision)
    family, arch = resolve_architecture(cfg, architecture)
    if weights != "checkpoint":
        model, config, arch = build_random(cfg, arch)
        return Loaded(model, config, arch, family, path_or_id, None, weights)
    config = family.config_from_dict(cfg)
    model = family.model_class(arch)(config)
    tied = getattr(model, "tied_weights", dict)()
    # a model part too large for PyTorch here (a 7B decoder) is read from the folder tensor by tensor when its
    # graph is written: the model says which checkpoint keys those are (a predicate, or None), and PyTorch
    # never loads them
    streams = getattr(model, "streamed_keys", lambda: None)()
    keep = (lambda k: not streams(k)) if streams else None
    load_into(model, read_state_dict(folder, keep=keep), base_prefix=family.base_prefix, tied=tied,
              source=str(folder), head_prefixes=family.head_prefixes)
    if streams:
        model.attach_streamed(LazyTensors(folder, keep=streams), source=str(folder))
    return Loaded(model.eval(), config, arch, family, path_or_id, folder, "checkpoint")
