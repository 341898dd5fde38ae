"""The model families vlexport knows, each one folder `vlexport/families/<name>/`.

A family folder holds its reference PyTorch model (`model.py`), its config dataclass
(`config.py`, torch-free), its export description (`describe.py`), its processor, and an
`__init__.py` whose `FAMILY = Family(...)` says where each piece is. Generic code (CLI, build,
validation, runtime, bench, loading) reaches a family only through this registry, timm-style:

    from vlexport import families
    fam = families.for_architecture("VisualBertForQuestionAnswering")
    spec = fam.describe("VisualBertForQuestionAnswering", fam.config_from_dict(cfg))

The built-in families are the `BUILTIN` table below (imported on first use: no global state is
changed at import time). `register(family)` adds another one at run time (a plugin, or a test's
toy family); `unregister(name)` removes it again.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Callable

from vlexport.errors import UnknownModelError

# family name -> module whose FAMILY attribute describes it
BUILTIN = {
    "visual_bert": "vlexport.families.visual_bert",
    "vilt": "vlexport.families.vilt",
    "vision_text_dual_encoder": "vlexport.families.vision_text_dual_encoder",
    "vision_encoder_decoder": "vlexport.families.vision_encoder_decoder",
    "vip_llava": "vlexport.families.vip_llava",
    "frcnn": "vlexport.families.frcnn",
}


@dataclass(frozen=True)
class Option:
    """A family build option, offered on the command line as --<name> (booleans only for now)."""

    name: str  # e.g. "with_alignment" -> --with-alignment
    help: str


@dataclass(frozen=True)
class PredictCommand:
    """What `vlexport predict PATH ...` does for a family's artifacts: its extra arguments (argparse
    `add_argument(*flags, **kwargs)` pairs) and "module:function" run(model, args) -> exit code."""

    arguments: tuple = ()
    run: str = ""

    def load(self):
        module, fn = self.run.split(":")
        return getattr(importlib.import_module(module), fn)


@dataclass(frozen=True)
class Compose:
    """`vlexport build` from parts instead of one --model (e.g. --vision-model A --text-model B): the
    flags (argparse pairs; dests are the values passed on) and "module:function"(values: dict,
    random_weights: bool, revision) -> (config dict, display name, load() -> vlexport.reference.Loaded)."""

    arguments: tuple = ()
    run: str = ""

    def dests(self) -> list[str]:
        return [flags[0].lstrip("-").replace("-", "_") for flags, _ in self.arguments]

    def load(self):
        module, fn = self.run.split(":")
        return getattr(importlib.import_module(module), fn)


@dataclass(frozen=True)
class Companion:
    """Another model whose artifact produces this family's inputs (e.g. the region detector whose
    features VisualBERT reads). `vlexport build --<name> ID` builds it into the artifact's subfolder
    <name>/ (so the artifact still names only files inside its folder, and they are hashed with it);
    the family's processor and `predict` find it there. check: "module:function"(config, companion
    artifact) that raises ConfigError when the two do not fit (e.g. feature widths)."""

    name: str
    help: str
    check: str = ""

    def run_check(self, config, artifact) -> None:
        if self.check:
            module, fn = self.check.split(":")
            getattr(importlib.import_module(module), fn)(config, artifact)


@dataclass(frozen=True)
class Family:
    name: str
    model_types: tuple[str, ...]  # config.json "model_type" values this family reads
    architectures: dict[str, str]  # HF class name -> task name
    config_from_dict: Callable[[dict], Any]  # torch-free config object with .to_dict()
    describe: Callable[..., Any]  # (architecture, config, axes=None, **options) -> ModelSpec
    model_module: str  # module holding the PyTorch classes, named as in transformers
    # (model/artifact folder or None, weights kind, the config dataclass or None) -> processor
    load_processor: Callable[..., Any]
    checkpoints: dict[str, dict] = field(default_factory=dict)  # public ids -> config (for --random-weights)
    tiny: dict[str, Callable[[], dict]] = field(default_factory=dict)  # built-in tiny models: id -> config
    base_prefix: str = ""  # HF base-model prefix in state dicts, e.g. "visual_bert."
    head_prefixes: tuple[str, ...] = ()  # head keys dropped when loading the bare base model
    options: tuple[Option, ...] = ()
    predict: Any = None  # a PredictCommand (CLI arguments + function), see vlexport.cli
    flops: Callable | None = None  # (config, architecture, sizes) -> FLOPs of one forward pass
    pipelines: dict[str, str] = field(default_factory=dict)  # runtime pipelines it adds: name -> "module:Class"
    compose: Compose | None = None  # building from parts (see Compose)
    # "module:function"(our reference model, config dict) -> {graph name: callable(**torch feeds) -> {output
    # name: tensor}}: HF transformers eager on our weights, per graph (the benchmark's baseline for families
    # whose graphs are not one transformers class's forward; "" = the transformers class of the architecture)
    hf_graphs: str = ""
    # "module:function"(artifact) -> [vlexport.serving.endpoints.Endpoint]: the processor endpoints
    # `vlexport serve` / `triton-repo` offer beside the raw graphs (text and image bytes in)
    serve: str = ""
    # (folder) -> config dict or None: a checkpoint folder without config.json (e.g. a detector's
    # config.yaml); the loader asks each family in turn
    folder_config: Callable | None = None
    companion: Companion | None = None  # a model built beside it into a subfolder (see Companion)
    commands: str = ""  # "module:function"(argparse subparsers): `vlexport` subcommands the family adds
    label_files: tuple = ()  # files in a checkpoint folder that name its labels (vlexport.labels)
    doc: str = ""

    @property
    def tasks(self) -> dict[str, str]:
        """task name -> architecture"""
        return {task: arch for arch, task in self.architectures.items()}

    def architecture_for(self, name: str) -> str:
        """An architecture or task name -> the architecture; UnknownModelError otherwise."""
        if name in self.architectures:
            return name
        if name in self.tasks:
            return self.tasks[name]
        raise UnknownModelError(f"unknown architecture or task '{name}' for {self.name}; known: "
                                f"{sorted(self.architectures)} (tasks {sorted(self.tasks)})")

    def model_class(self, architecture: str):
        from vlexport._deps import require

        require("torch", f"the {architecture} reference model")
        return getattr(importlib.import_module(self.model_module), architecture)


_registered: dict[str, Family] = {}
_loaded: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family (e.g. a plugin or a test's toy family). Its names must not clash with others'."""
    for other in all_families():
        if other.name == family.name:
            raise ValueError(f"a family named '{family.name}' is already registered")
        clash = set(other.architectures) & set(family.architectures)
        if clash:
            raise ValueError(f"architectures {sorted(clash)} already belong to family '{other.name}'")
    _registered[family.name] = family
    return family


def unregister(name: str) -> None:
    _registered.pop(name, None)


def get(name: str) -> Family:
    if name in _registered:
        return _registered[name]
    if name in BUILTIN:
        if name not in _loaded:
            _loaded[name] = importlib.import_module(BUILTIN[name]).FAMILY
        return _loaded[name]
    raise UnknownModelError(f"unknown model family '{name}'; vlexport knows {sorted(names())}")


def names() -> list[str]:
    return list(BUILTIN) + [n for n in _registered if n not in BUILTIN]


def all_families() -> list[Family]:
    return [get(n) for n in names()]


def for_model_type(model_type: str) -> Family:
    for fam in all_families():
        if model_type in fam.model_types:
            return fam
    known = sorted(t for f in all_families() for t in f.model_types)
    raise UnknownModelError(f"model_type '{model_type}' is not supported; vlexport supports {known}")


def for_architecture(name: str) -> Family:
    """The family of an architecture (or task) name."""
    for fam in all_families():
        if name in fam.architectures:
            return fam
    for fam in all_families():
        if name in fam.tasks:
            return fam
    raise UnknownModelError(f"unknown architecture or task '{name}'; vlexport supports "
                            f"{sorted(a for f in all_families() for a in f.architectures)}")


def embedded(model_id: str) -> tuple[Family, dict, str] | None:
    """(family, config dict, "tiny" | "random") for a built-in tiny id or a known public id."""
    for fam in all_families():
        if model_id in fam.tiny:
            return fam, fam.tiny[model_id](), "tiny"
    for fam in all_families():
        if model_id in fam.checkpoints:
            return fam, dict(fam.checkpoints[model_id]), "random"
    return None


def known_ids() -> list[str]:
    return sorted({i for f in all_families() for i in (*f.tiny, *f.checkpoints)})


def describe_artifact(artifact):
    """The ModelSpec of a built artifact, rebuilt from its manifest (the one way to do so): the
    family's own description of the recorded architecture, config and options, with the artifact's
    axis ranges. Needs no torch."""
    fam = get(artifact.family)
    config = fam.config_from_dict(artifact.config)
    spec = fam.describe(artifact.architecture, config, axes=artifact.axes, **artifact.options)
    return spec
