"""The PyTorch reference behind the runtime interface: for parity checks and debugging.

The artifact holds graphs, not PyTorch weights, so the reference is rebuilt from the manifest's
source: the model folder the build read, or the same deterministic random weights.
"""

from __future__ import annotations

import numpy as np

from vlexport._deps import require
from vlexport.errors import ArtifactError
from vlexport.runtime.backends.base import Backend


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, artifact, precision: str = "fp32", intra_op_num_threads: int | None = None, **_):
        super().__init__(artifact, "fp32")
        torch = require("torch", "the torch backend")
        from vlexport.models.factory import build_random, from_pretrained

        if intra_op_num_threads:
            torch.set_num_threads(intra_op_num_threads)
        src = artifact.manifest["source"]
        if src["weights"] in ("random", "tiny"):
            self.model, _, _ = build_random(artifact.config, artifact.architecture, seed=src.get("seed", 0))
        else:
            folder = src.get("model_dir")
            try:
                self.model = from_pretrained(folder or src["model"], artifact.architecture,
                                             revision=src.get("revision")).model
            except Exception as exc:
                raise ArtifactError(f"the torch backend rebuilds the model from its source '{folder}', which "
                                    f"failed: {exc}") from None
        self._torch = torch

    def run(self, feeds: dict) -> dict:
        with self._torch.no_grad():
            out = self.model(**{k: self._torch.from_numpy(np.ascontiguousarray(v)) for k, v in feeds.items()})
        return {k: v.numpy() for k, v in out.items() if v is not None}
