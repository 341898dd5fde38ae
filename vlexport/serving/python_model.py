"""The body of every Triton Python-backend model vlexport writes: one endpoint of one artifact.

Kept out of the copied `model.py` so it is importable (and tested) without Triton: `execute` takes
the requests as dicts of numpy arrays and returns, per request, outputs or the exception to report.
"""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

from vlexport.errors import VlexportError

log = logging.getLogger("vlexport.serve")


class EndpointModel:
    def __init__(self, params: dict, version_dir: Path, name: str = ""):
        import vlexport
        from vlexport.artifact import Artifact
        from vlexport.serving.endpoints import endpoints_for, select

        path = Path(params["artifact"])
        if not path.is_absolute():
            path = Path(version_dir) / path
        artifact = Artifact(path)
        (self.endpoint,) = select(endpoints_for(artifact), [params["endpoint"]])
        options = {}
        if params.get("intra_op_num_threads"):
            options["intra_op_num_threads"] = int(params["intra_op_num_threads"])
        graphs = self.endpoint.graphs or None
        self.pipeline = vlexport.load(path, backend=params.get("backend", "auto"),
                                      precision=params.get("precision", "fp32"), graphs=graphs, **options)
        self.name = name or self.endpoint.name
        log.info("%s: %s", self.name, self.pipeline.describe())

    def execute(self, requests: list[dict]) -> list:
        from vlexport.serving.endpoints import execute

        results = execute(self.pipeline, self.endpoint, requests)
        for r in results:
            if isinstance(r, BaseException) and not isinstance(r, VlexportError):
                log.error("%s: internal error\n%s", self.name, "".join(traceback.format_exception(r)))
        return results

    @staticmethod
    def is_user_error(exc: BaseException) -> bool:
        return isinstance(exc, VlexportError)

    def message(self, exc: BaseException) -> str:
        """The text a client sees: our own errors as they are (they name the input), others tagged."""
        if isinstance(exc, VlexportError):
            return f"{self.name}: {exc}"
        return f"{self.name}: internal error ({type(exc).__name__}: {exc}); the server log has the traceback"

    def close(self):
        self.pipeline.close()
