"""The PyTorch reference behind the runtime interface: for parity checks and debugging.

The artifact holds graphs, not PyTorch weights, so the reference is rebuilt: tiny and random-weight
artifacts from their embedded config and seed; checkpoint artifacts from the `reference=` folder or
hub id the caller passes (an artifact may not make vlexport read files outside its own folder, so
the manifest's record of where the weights came from is shown, never followed).
"""

from __future__ import annotations

import numpy as np

from vlexport._deps import require
from vlexport.errors import ArtifactError
from vlexport.runtime.backends.base import Backend


def reference_model(artifact, reference: str | None = None):
    """Our PyTorch model with the artifact's weights (see the module docstring)."""
    require("torch", "the torch backend")
    from vlexport.reference import build_random, from_pretrained

    src = artifact.manifest.get("source") or {}
    if src.get("weights") in ("random", "tiny") and reference is None:
        model, _, _ = build_random(artifact.config, artifact.architecture, seed=int(src.get("seed", 0)))
        return model
    if reference is None:
        raise ArtifactError(f"the torch backend rebuilds the model from its checkpoint: pass "
                            f"reference='<folder or hub id>' (the artifact was built from {src.get('model')!r}; "
                            f"an artifact may not make vlexport read files outside its folder)")
    return from_pretrained(str(reference), artifact.architecture, revision=src.get("revision")).model


def graph_modules(model, graph_names) -> dict:
    """{graph name: module} - the model's own split (`graph_modules()`), or the model for one graph."""
    if hasattr(model, "graph_modules"):
        return model.graph_modules()
    if len(graph_names) != 1:
        raise ArtifactError(f"{type(model).__name__} has no graph_modules() for the graphs {graph_names}")
    return {graph_names[0]: model}


def _writable(v):
    """A contiguous, writable array (torch.from_numpy warns on read-only memory)."""
    v = np.ascontiguousarray(v)
    return v if v.flags.writeable else v.copy()


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, artifact, graph: str = "model", precision: str = "fp32", intra_op_num_threads: int | None = None,
                 reference: str | None = None, model=None, **_):
        super().__init__(artifact, graph, "fp32")
        torch = require("torch", "the torch backend")
        if intra_op_num_threads:  # only when asked: a process-global setting
            torch.set_num_threads(intra_op_num_threads)
        self.model = model if model is not None else reference_model(artifact, reference)
        self.module = graph_modules(self.model, artifact.graph_names)[graph]
        self._torch = torch

    def run(self, feeds: dict, keep_on_device: bool = False) -> dict:
        with self._torch.no_grad():
            out = self.module(**{k: self._torch.from_numpy(_writable(v)) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items() if v is not None}
