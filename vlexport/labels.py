"""Class names for a classifier head from a file: `vlexport build --labels FILE`, or a file the
family knows to look for in the checkpoint folder (`Family.label_files`, e.g. LXMERT's
`trainval_label2ans.json` beside a VisualBERT VQA checkpoint, whose config.json has only LABEL_n).

A label file is JSON: a list of names (index = label id), or an object {"id": name}. It must name
every label of the head exactly once by id; names are short printable strings. The artifact's
config.json then holds the names, and its manifest says where they came from (`labels_from`: the
file name and its sha256; "config.json" when the checkpoint's own names were kept).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from vlexport.errors import ConfigError
from vlexport.fsutil import sha256

MAX_BYTES = 16 << 20
MAX_NAME = 200
_PLACEHOLDER = re.compile(r"^LABEL_\d+$")


def placeholders(id2label: dict | None) -> bool:
    """True when a config's label names are transformers' defaults (LABEL_0, LABEL_1, ...)."""
    return bool(id2label) and all(_PLACEHOLDER.match(str(v)) for v in id2label.values())


def read_label_file(path, num_labels: int) -> dict[int, str]:
    path = Path(path)
    what = f"label file '{path}'"
    if not path.is_file():
        raise ConfigError(f"{what} does not exist")
    if path.stat().st_size > MAX_BYTES:
        raise ConfigError(f"{what} is {path.stat().st_size >> 20} MiB; a label file is a JSON list of names")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{what} is not valid JSON: {exc}") from None
    if isinstance(data, list):
        pairs = list(enumerate(data))
    elif isinstance(data, dict):
        try:
            pairs = [(int(k), v) for k, v in data.items()]
        except ValueError:
            raise ConfigError(f"{what}: an object's keys must be label ids (\"0\", \"1\", ...)") from None
    else:
        raise ConfigError(f"{what} holds a {type(data).__name__}; expected a list of names or an {{id: name}} object")
    names = {}
    for i, name in pairs:
        # (LXMERT's answer 0 is the empty answer "": names may be empty)
        if not isinstance(name, str) or len(name) > MAX_NAME or not name.isprintable():
            raise ConfigError(f"{what}: label {i} is {name!r}; expected a printable name of at most {MAX_NAME} "
                              f"characters")
        names[i] = name
    if sorted(names) != list(range(num_labels)):
        raise ConfigError(f"{what} names {len(names)} labels (ids {min(names, default=0)}..{max(names, default=-1)}); "
                          f"this head has {num_labels} (ids 0..{num_labels - 1})")
    return names


def apply_labels(config, family, model_dir, labels_file=None) -> dict:
    """Put names from --labels FILE (always) or from a family label file in the checkpoint folder (only
    over placeholder names) into config.id2label; returns the manifest's `labels_from` record."""
    current = getattr(config, "id2label", None)
    if not current:
        if labels_file:
            raise ConfigError("--labels applies to classification heads; this model has no id2label")
        return {}
    path = Path(labels_file) if labels_file else None
    if path is None and model_dir is not None and placeholders(current):
        path = next((Path(model_dir) / n for n in family.label_files if (Path(model_dir) / n).is_file()), None)
    if path is None:
        return {"source": "config.json" if not placeholders(current) else "placeholders (LABEL_n)"}
    config.id2label = read_label_file(path, len(current))
    config.num_labels = len(config.id2label)
    return {"source": path.name, "sha256": sha256(path)}
