"""From a hub id, a local folder or an embedded default to a ready (eval-mode) reference model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from vlexport.errors import UnknownModelError
from vlexport.hub import model_config
from vlexport.models import visual_bert
from vlexport.models.loading import load_into, read_state_dict


@dataclass
class Loaded:
    model: torch.nn.Module
    config: "visual_bert.VisualBertConfig"
    architecture: str
    source: str  # what the user passed
    model_dir: Path | None  # the folder weights came from (None for random weights)
    weights: str  # "checkpoint" | "random" | "tiny"


def _architecture(cfg_dict: dict, override: str | None) -> str:
    if override:
        from vlexport.export.visual_bert import ARCHITECTURES

        arch = ARCHITECTURES.get(override, override)  # a task name or an architecture name
    else:
        archs = cfg_dict.get("architectures") or ["VisualBertModel"]
        arch = archs[0]
    if arch not in visual_bert.ARCHITECTURES:
        raise UnknownModelError(f"unknown architecture or task '{arch}'; vlexport supports "
                                f"{sorted(visual_bert.ARCHITECTURES)}")
    if cfg_dict.get("model_type", "visual_bert") != "visual_bert":
        raise UnknownModelError(f"model_type '{cfg_dict.get('model_type')}' is not supported yet (visual_bert is)")
    return arch


def init_random(model: torch.nn.Module, seed: int = 0, std: float = 0.02) -> torch.nn.Module:
    """Deterministic random weights with non-trivial biases and LayerNorm weights (graph tools
    would otherwise fold away zero biases and unit scales, hiding bugs)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm.weight" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(std * torch.randn(p.shape, generator=g))
    return model.eval()


def build_random(cfg_dict: dict, architecture: str | None = None, seed: int = 0):
    arch = _architecture(cfg_dict, architecture)
    config = visual_bert.VisualBertConfig.from_dict(cfg_dict)
    return init_random(visual_bert.ARCHITECTURES[arch](config), seed), config, arch


def from_pretrained(path_or_id: str, architecture: str | None = None, random_weights: bool = False,
                    revision: str | None = None) -> Loaded:
    """Load a reference model. `random_weights=True` with a known public id builds its full-size
    configuration offline; the tiny built-in model (`tiny-visualbert-vqa`) always does."""
    cfg, folder, weights = model_config(path_or_id, random_weights, revision)
    if weights != "checkpoint":
        model, config, arch = build_random(cfg, architecture)
        return Loaded(model, config, arch, path_or_id, None, weights)
    arch = _architecture(cfg, architecture)
    config = visual_bert.VisualBertConfig.from_dict(cfg)
    model = visual_bert.ARCHITECTURES[arch](config)
    tied = {}
    if config.tie_word_embeddings and hasattr(model, "cls") and hasattr(model.cls, "predictions"):
        tied["cls.predictions.decoder.weight"] = "visual_bert.embeddings.word_embeddings.weight"
    load_into(model, read_state_dict(folder), base_prefix="visual_bert.", tied=tied, source=str(folder))
    return Loaded(model.eval(), config, arch, path_or_id, folder, "checkpoint")
