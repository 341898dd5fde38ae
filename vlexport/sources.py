"""Where a model comes from: a local folder, the Hugging Face hub (through its cache), or
vlexport's embedded defaults (the families' public configs for `--random-weights`, and their tiny
built-in models)."""

from __future__ import annotations

import os
from pathlib import Path

from vlexport.errors import HubError, UnknownModelError

# What a model folder may hold that vlexport uses.
WANTED_FILES = ["config.json", "*.safetensors", "*.safetensors.index.json", "pytorch_model*.bin",
                "pytorch_model.bin.index.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                "special_tokens_map.json", "preprocessor_config.json", "config.yaml"]


def is_local(path_or_id: str) -> bool:
    return Path(path_or_id).expanduser().exists() or path_or_id.startswith((".", "/", "~"))


def resolve_model_dir(path_or_id: str, revision: str | None = None) -> Path:
    """A local folder as is; otherwise download (or find in the HF cache) the hub repo's files.

    Honours HF_HUB_OFFLINE and the HF cache. When the hub cannot be reached and nothing is
    cached, raises HubError saying so and suggesting a local folder.
    """
    p = Path(path_or_id).expanduser()
    if p.is_dir():
        if not (p / "config.json").is_file() and not (p / "config.yaml").is_file():
            raise UnknownModelError(f"model folder '{p}' has no config.json")
        return p
    if p.exists():
        raise UnknownModelError(f"'{path_or_id}' is a file; --model expects a folder with config.json and weights")
    if is_local(path_or_id):
        raise UnknownModelError(f"model folder '{path_or_id}' does not exist")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import (HFValidationError, LocalEntryNotFoundError, RepositoryNotFoundError,
                                            RevisionNotFoundError)
    except ImportError as exc:  # pragma: no cover - a core dependency
        raise HubError("downloading from the hub needs huggingface_hub: pip install huggingface_hub") from exc
    offline = os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes")
    try:
        return Path(snapshot_download(path_or_id, revision=revision, allow_patterns=WANTED_FILES,
                                      local_files_only=offline, etag_timeout=10))
    except HFValidationError:  # e.g. "runs/vqa/final": a local path that is not there, not a hub id
        raise UnknownModelError(f"model folder '{path_or_id}' does not exist (and it is not a valid hub id)") from None
    except (RepositoryNotFoundError, RevisionNotFoundError) as exc:
        raise UnknownModelError(f"'{path_or_id}' is not a model on the hub (or is private): {exc}") from None
    except (LocalEntryNotFoundError, OSError) as exc:
        why = "HF_HUB_OFFLINE is set" if offline else "the hub could not be reached"
        raise HubError(
            f"cannot get '{path_or_id}': {why} and it is not in the local cache "
            f"({type(exc).__name__}). Pass a local folder with config.json and weights "
            f"(--model ./my-model), or build a public configuration with --random-weights."
        ) from None


def model_config(path_or_id: str, random_weights: bool = False, revision: str | None = None):
    """(config.json as a dict, the folder weights come from or None, "checkpoint"|"random"|"tiny").

    Built-in tiny models and known public ids with random_weights need no network; other ids do.
    """
    import json

    from vlexport import families

    hit = families.embedded(path_or_id)
    if hit is not None and (hit[2] == "tiny" or random_weights):
        return hit[1], None, hit[2]
    try:
        folder = resolve_model_dir(path_or_id, revision)
    except HubError as exc:
        if not random_weights:
            raise
        raise UnknownModelError(
            f"'{path_or_id}' is not a public checkpoint vlexport knows offline (known: "
            f"{', '.join(families.known_ids())}), and its config could not be fetched: {exc}"
        ) from None
    if not (folder / "config.json").is_file():
        cfg = folder_config(folder)
        return cfg, (None if random_weights else folder), ("random" if random_weights else "checkpoint")
    try:
        cfg = json.loads((folder / "config.json").read_text())
    except ValueError as exc:
        raise UnknownModelError(f"{folder / 'config.json'} is not valid JSON: {exc}") from None
    if not isinstance(cfg, dict):
        raise UnknownModelError(f"{folder / 'config.json'} does not hold a JSON object")
    return cfg, (None if random_weights else folder), ("random" if random_weights else "checkpoint")


def folder_config(folder: Path) -> dict:
    """The config of a folder without config.json, from the first family that reads it (e.g. a
    detector checkpoint's config.yaml)."""
    from vlexport import families

    for fam in families.all_families():
        if fam.folder_config is not None:
            cfg = fam.folder_config(folder)
            if cfg is not None:
                return cfg
    raise UnknownModelError(f"model folder '{folder}' has no config.json (and no other config vlexport reads)")


def family_of(cfg: dict, architecture: str | None = None):
    """The family that reads this config: by model_type, else by the (override or first) architecture."""
    from vlexport import families

    if cfg.get("model_type"):
        return families.for_model_type(cfg["model_type"])
    arch = architecture or (cfg.get("architectures") or [None])[0]
    if arch:
        return families.for_architecture(arch)
    raise UnknownModelError("config.json has neither 'model_type' nor 'architectures': cannot tell the model family")
