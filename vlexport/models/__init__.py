"""The reference PyTorch models of every family, by their transformers class names.

Attributes are imported on first use, so `import vlexport.models` needs no torch;
`vlexport.models.<HF class name>` imports it then (from its family folder).
`from_pretrained(path_or_id)` picks the family and head from config.json.
"""

from __future__ import annotations

import importlib


def __getattr__(name):
    from vlexport import families
    from vlexport._deps import require

    if name in ("from_pretrained", "build_random"):
        require("torch", f"vlexport.models.{name}")
        return getattr(importlib.import_module("vlexport.reference"), name)
    for fam in families.all_families():
        if name in fam.architectures:
            return fam.model_class(name)
        config_class = getattr(fam.config_from_dict, "__self__", None)  # Config.from_dict -> Config
        if getattr(config_class, "__name__", None) == name:
            return config_class
    raise AttributeError(f"module 'vlexport.models' has no attribute '{name}'")


def __dir__():
    from vlexport import families

    return sorted({"from_pretrained", "build_random", *(a for f in families.all_families() for a in f.architectures)})
