"""The one interface every backend implements (Polygraphy's runner split: load once, run many)."""

from __future__ import annotations

from typing import Any

import numpy as np


class Backend:
    """Runs one artifact graph/engine. Constructed once (loads the graph), called many times.

    run(feeds) takes {input name: numpy array, or a DLPack-capable device tensor where the backend
    supports it} already checked against the artifact's input specs, and returns
    {output name: numpy array} (or device arrays when the backend was built with
    output_device="cuda"). Implementations must be safe to call from several threads.
    """

    name = "base"
    device = "cpu"

    def __init__(self, artifact, precision: str = "fp32", **options: Any):
        self.artifact = artifact
        self.precision = precision

    def run(self, feeds: dict) -> dict[str, np.ndarray]:  # pragma: no cover - interface
        raise NotImplementedError

    @classmethod
    def availability(cls) -> tuple[bool, str]:
        """(usable here, reason if not): used by backend="auto" to choose and to explain the choice."""
        return True, ""

    def describe(self) -> str:
        return f"{self.name} ({self.precision}, {self.device})"
