"""Shared fixtures: random `transformers` models saved once per session.

`hf_checkpoint(architecture, fmt="safetensors", seed=0, **config_overrides)` (the architecture's
family kit, `<family>_kit.make_hf_model`, makes the model) returns an
`HFCheckpoint(model, folder, config)`: the HF model in eval mode and the folder it was saved to
(save_pretrained; `fmt="bin"` writes a classic `pytorch_model.bin`). Folders are shared across
tests: copy one (`copy_checkpoint`) before editing its files.
"""

from __future__ import annotations

import importlib
import shutil
from typing import NamedTuple

import pytest

from oracle import save_hf_model
from vlexport import families


def make_hf_model(architecture: str, seed: int = 0, **overrides):
    kit = importlib.import_module(f"{families.for_architecture(architecture).name}_kit")
    return kit.make_hf_model(architecture, seed, **overrides)


class HFCheckpoint(NamedTuple):
    model: object  # the transformers model, eval mode
    folder: object  # pathlib.Path
    config: dict  # the saved config.json


@pytest.fixture(scope="session")
def hf_checkpoint(tmp_path_factory):
    import json

    cache: dict = {}

    def get(architecture: str, fmt: str = "safetensors", seed: int = 0, **overrides) -> HFCheckpoint:
        assert fmt in ("safetensors", "bin"), fmt
        key = (architecture, fmt, seed, tuple(sorted(overrides.items())))
        if key not in cache:
            model = make_hf_model(architecture, seed, **overrides)
            folder = tmp_path_factory.mktemp(f"hf-{architecture}-{fmt}")
            save_hf_model(model, folder, safe=fmt == "safetensors")
            cache[key] = HFCheckpoint(model, folder, json.loads((folder / "config.json").read_text()))
        return cache[key]

    return get


@pytest.fixture
def copy_checkpoint(tmp_path):
    """copy_checkpoint(folder) -> a private copy of a saved model folder, safe to edit."""
    count = iter(range(1000))

    def copy(folder):
        dest = tmp_path / f"copy{next(count)}"
        shutil.copytree(folder, dest)
        return dest

    return copy
