"""Triton Python-backend model (copied as `<model>/1/model.py` by vlexport; not imported by vlexport).

All the work is in `vlexport.serving.python_model.EndpointModel`; this file only moves tensors between
Triton and it. The Python environment Triton runs it in needs vlexport installed
(`pip install "vlexport[cpu]"`, or `[gpu]` for TensorRT); the model's `parameters` in config.pbtxt
name the artifact (relative to this folder) and the endpoint.
"""

import json
from pathlib import Path

import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        from vlexport.serving.python_model import EndpointModel

        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in (config.get("parameters") or {}).items()}
        here = Path(args["model_repository"]) / args["model_version"]
        self.model = EndpointModel(params, here, name=config["name"])

    def execute(self, requests):
        feeds = [{t.name(): t.as_numpy() for t in r.inputs()} for r in requests]
        responses = []
        for result in self.model.execute(feeds):
            if isinstance(result, BaseException):
                responses.append(pb_utils.InferenceResponse(error=self._error(result)))
            else:
                responses.append(pb_utils.InferenceResponse([pb_utils.Tensor(k, v) for k, v in result.items()]))
        return responses

    def _error(self, exc):
        """A bad request is INVALID_ARG (HTTP 400); anything else Triton's default, INTERNAL (500)."""
        code = getattr(pb_utils.TritonError, "INVALID_ARG", None) if self.model.is_user_error(exc) else None
        if code is None:
            return pb_utils.TritonError(self.model.message(exc))
        return pb_utils.TritonError(self.model.message(exc), code)

    def finalize(self):
        self.model.close()
