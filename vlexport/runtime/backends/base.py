"""The one interface every backend implements (Polygraphy's runner split: load once, run many)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Backend:
    """Runs one graph of an artifact (an ONNX graph or a TensorRT engine). Constructed once (loads
    the graph), called many times.

    run(feeds, keep_on_device=False) takes {input name: numpy array, or a device value the backend
    accepts (a DLPack/CUDA-array-interface tensor; for ONNX Runtime also an OrtValue)} already
    checked against the graph's input specs, and returns {output name: numpy array}; with
    keep_on_device=True the outputs stay where the backend computed them (OrtValues, TensorRT
    DeviceArrays) so a pipeline can feed them to the next graph without a host round trip.
    Implementations must be safe to call from several threads.
    """

    name = "base"
    device = "cpu"

    def __init__(self, artifact, graph: str = "model", precision: str = "fp32", **options: Any):
        self.artifact = artifact
        self.graph = graph
        self.precision = precision

    def run(self, feeds: dict, keep_on_device: bool = False) -> dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here, reason if not): used by backend="auto" to choose and to explain the choice."""
        return True, ""

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, {self.device})"

    def close(self) -> None:
        pass
